//! Thin provisioning: volumes promise more than the pool holds, up to a limit the operator
//! sets (`overcommit` × the pool's capacity). A create past it is refused up front with a
//! sentence, instead of a write failing with ENOSPC inside a filesystem later.

use crate::errors::{ApiError, ApiResult};
use crate::shared::Shared;
use crate::state::State;
use volbridge_proto::csp::INSUFFICIENT_SPACE;
use volbridge_proto::units::human;

/// The most the volumes' sizes may add up to, `None` without a limit.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    limit: Option<u64>,
    capacity: u64,
    ratio: f64,
}

impl Limit {
    /// Reads the pool's capacity now (a statvfs or two); call it outside the store lock.
    pub fn of(sh: &Shared) -> ApiResult<Limit> {
        let ratio = sh.cfg.overcommit;
        if ratio <= 0.0 {
            return Ok(Limit {
                limit: None,
                capacity: 0,
                ratio,
            });
        }
        let space = sh
            .pool
            .space()
            .map_err(|e| ApiError::io("reading the pool's capacity", &e))?;
        Ok(Limit {
            limit: Some((space.total as f64 * ratio) as u64),
            capacity: space.total,
            ratio,
        })
    }

    pub fn bytes(&self) -> Option<u64> {
        self.limit
    }

    /// Refuses adding `more` bytes of volume size to what `s` has provisioned when that
    /// passes the limit. `what` names the request ("volume 'db' (10Gi)").
    pub fn check(&self, s: &State, what: &str, more: u64) -> ApiResult<()> {
        let Some(limit) = self.limit else {
            return Ok(());
        };
        let after = s.provisioned().saturating_add(more);
        if after <= limit {
            return Ok(());
        }
        Err(ApiError::internal(format!(
            "{INSUFFICIENT_SPACE}: {what} would bring the volumes' sizes to {}, past this CSP's limit of {} \
             ({}x its {} pool); delete volumes, give the pool more disk, or raise the local CSP's overcommit",
            human(after),
            human(limit),
            self.ratio,
            human(self.capacity)
        )))
    }
}
