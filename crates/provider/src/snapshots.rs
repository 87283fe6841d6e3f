//! Snapshot endpoints (S1–S4) with the create (B13) and delete (B36) flows.

use std::collections::BTreeMap;

use http::{Method, StatusCode};
use serde_json::Value;
use volbridge_proto::csp::Snapshot;

use super::client::{CspClient, Op};
use super::volumes::params_to_config;
use volbridge_base::error::{Error, ErrorKind, Result};

/// A snapshot to create.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SnapshotCreate {
    pub name: String,
    pub volume_id: String,
    pub description: Option<String>,
    /// Snapshot-class parameters, camelCase; sent as snake_case `config`.
    pub params: BTreeMap<String, String>,
}

fn nonempty<'a>(field: &str, v: &'a str) -> Result<&'a str> {
    if v.is_empty() {
        Err(Error::invalid(field, "must not be empty"))
    } else {
        Ok(v)
    }
}

impl CspClient {
    /// S1; `volume_id` = `None` lists every snapshot (D3). A volume filter that matches
    /// nothing lists nothing: `[]`, and also a vendor's 404 for an unknown volume (§3 S1).
    pub async fn list_snapshots(&self, volume_id: Option<&str>) -> Result<Vec<Snapshot>> {
        let query: Vec<(&str, &str)> = volume_id.map(|v| ("volume_id", v)).into_iter().collect();
        self.list_filtered(&["snapshots"], &query, "snapshot list")
            .await
    }

    /// S1 `?name=` (B1, B6), optionally on one volume; 404 or `[]` → `None`.
    pub async fn find_snapshot(
        &self,
        name: &str,
        volume_id: Option<&str>,
    ) -> Result<Option<Snapshot>> {
        let name = nonempty("name", name)?;
        let mut query = vec![("name", name)];
        if let Some(v) = volume_id {
            query.push(("volume_id", v));
        }
        let found = self
            .lookup(
                &["snapshots"],
                &query,
                name,
                |s: &Snapshot| s.name.as_deref(),
                "snapshot",
            )
            .await?;
        // A CSP that ignores the volume filter must not hand out another volume's snapshot.
        Ok(found.filter(|s| match (volume_id, s.volume_id.as_deref()) {
            (Some(want), Some(have)) => want == have,
            _ => true,
        }))
    }

    /// S3; 404 → NotFound.
    pub async fn get_snapshot(&self, id: &str) -> Result<Snapshot> {
        self.get_snapshot_opt(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("snapshot {id} not found")))
    }

    pub async fn get_snapshot_opt(&self, id: &str) -> Result<Option<Snapshot>> {
        let id = nonempty("snapshotId", id)?;
        self.get_opt(&["snapshots", id], "snapshot").await
    }

    /// B13: reuse by (name, volume), refuse a name used on another volume, else S2. The
    /// answer is returned as is: `ready_to_use` may still be false.
    pub async fn create_snapshot(&self, req: &SnapshotCreate) -> Result<Snapshot> {
        let name = nonempty("name", &req.name)?;
        let volume_id = nonempty("volumeId", &req.volume_id)?;
        if let Some(s) = self.find_snapshot(name, Some(volume_id)).await? {
            return Ok(s);
        }
        let elsewhere = match self.find_snapshot(name, None).await {
            Ok(found) => found,
            // A CSP that insists on volume_id answers 400 here: that means "unknown".
            Err(e) if e.is(ErrorKind::InvalidArgument) => None,
            Err(e) => return Err(e),
        };
        if let Some(s) = elsewhere {
            match s.volume_id.as_deref() {
                Some(v) if v == volume_id => return Ok(s),
                other => {
                    return Err(Error::new(
                        ErrorKind::AlreadyExists,
                        format!(
                            "snapshot {name} already exists on volume {}",
                            other.unwrap_or("?")
                        ),
                    ))
                }
            }
        }
        let (config, described) = params_to_config(&req.params, |v| Value::String(v.clone()));
        let description = req.description.clone().or(match described {
            Some(Value::String(s)) => Some(s),
            _ => None,
        });
        let body = Snapshot {
            name: Some(name.to_owned()),
            volume_id: Some(volume_id.to_owned()),
            description,
            config: Some(config),
            ..Snapshot::default()
        };
        match self
            .send_json(Method::POST, &["snapshots"], &body, Op::Create, "snapshot")
            .await
        {
            // S2 answers 400 for an unknown source; callers want to know it is gone.
            Err(e) if e.is(ErrorKind::InvalidArgument) => {
                if self.get_volume_opt(volume_id).await?.is_none() {
                    Err(Error::not_found(format!(
                        "source volume {volume_id} not found"
                    )))
                } else {
                    Err(e)
                }
            }
            other => other,
        }
    }

    /// B36: gone counts as deleted; a snapshot in use is a precondition failure.
    pub async fn delete_snapshot(&self, id: &str) -> Result<()> {
        let Some(s) = self.get_snapshot_opt(id).await? else {
            return Ok(());
        };
        if s.in_use == Some(true) {
            return Err(Error::precondition(format!(
                "snapshot {id} is in use (it has dependent clones or a copy is running)"
            )));
        }
        let reply = self
            .call(Method::DELETE, &["snapshots", id], &[], None)
            .await?;
        match reply.status {
            StatusCode::NOT_FOUND => Ok(()),
            _ => self.check(reply, Op::Other).map(drop),
        }
    }
}
