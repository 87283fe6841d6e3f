//! Transports, one per access protocol: each makes a volume's block device appear on this
//! host, finds it again by its identity (never by a stored `/dev` name), and removes it.

mod fc;
mod iscsi;
mod local;
mod multipath;
mod nvme;
mod scsi;
mod sysfs;
#[cfg(test)]
mod tests_support;

pub use fc::FcTransport;
pub use iscsi::IscsiTransport;
pub use local::LocalTransport;
pub use nvme::NvmeTransport;

use super::Host;
use crate::PublishContext;
use std::path::PathBuf;
use std::time::Duration;
use volbridge_base::error::{Error, Result};

/// Node-side settings the transports need.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Canonical directories whose files `local` volumes may be attached from (csp-api.md
    /// §8.3): by default the embedded CSP's data dir.
    pub local_roots: Vec<PathBuf>,
    /// How long to wait for a device to appear after login/connect/rescan.
    pub device_wait: Duration,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            local_roots: Vec::new(),
            device_wait: Duration::from_secs(30),
        }
    }
}

pub trait Transport: Send + Sync {
    /// Makes the device appear (idempotent) and returns its current path.
    fn attach(&self, host: &dyn Host, ctx: &PublishContext) -> Result<PathBuf>;
    /// The device's current path, found by its identity; `None` when it is not present.
    fn find(&self, host: &dyn Host, ctx: &PublishContext) -> Result<Option<PathBuf>>;
    /// Removes the device from this host; a device that is not present is success.
    fn detach(&self, host: &dyn Host, ctx: &PublishContext) -> Result<()>;
    /// Whether the volume is provably all zeros without reading the device (a sparse file
    /// with no data), so a fresh attach can skip the blkid probe. `false` = probe.
    fn known_blank(&self, _host: &dyn Host, _ctx: &PublishContext) -> Result<bool> {
        Ok(false)
    }
}

/// The transport for a publish context's `accessProtocol`.
pub fn for_context(ctx: &PublishContext, config: &TransportConfig) -> Result<Box<dyn Transport>> {
    match ctx.access_protocol.as_str() {
        "local" => Ok(Box::new(LocalTransport::new(config.local_roots.clone()))),
        "iscsi" => Ok(Box::new(IscsiTransport::new(config.device_wait))),
        "nvmetcp" => Ok(Box::new(NvmeTransport::new(config.device_wait))),
        "fc" => Ok(Box::new(FcTransport::new(config.device_wait))),
        other => Err(Error::new(
            volbridge_base::ErrorKind::Unimplemented,
            format!("access protocol '{other}' is not supported on this node"),
        )),
    }
}
