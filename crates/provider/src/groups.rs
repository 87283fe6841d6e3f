//! Volume groups (G1–G4), snapshot groups (P1–P4), replication partners (R1), capacity (X1).

use std::collections::BTreeMap;

use http::{Method, StatusCode};
use serde_json::Value;
use volbridge_proto::csp::{
    Capacity, MutableConfig, ReplicationPartner, SnapshotGroup, VolumeGroup,
};

use super::client::{CspClient, Op};
use super::volumes::params_to_config;
use volbridge_base::error::{Error, Result};

fn nonempty<'a>(field: &str, v: &'a str) -> Result<&'a str> {
    if v.is_empty() {
        Err(Error::invalid(field, "must not be empty"))
    } else {
        Ok(v)
    }
}

impl CspClient {
    /// G2; a CSP answers an existing name with the existing group.
    pub async fn create_volume_group(
        &self,
        name: &str,
        description: Option<&str>,
        config: &BTreeMap<String, String>,
    ) -> Result<VolumeGroup> {
        let name = nonempty("name", name)?;
        let (config, described) = params_to_config(config, |v| Value::String(v.clone()));
        let description = description.map(str::to_owned).or(match described {
            Some(Value::String(s)) => Some(s),
            _ => None,
        });
        let body = VolumeGroup {
            name: Some(name.to_owned()),
            description,
            config: Some(config),
            ..VolumeGroup::default()
        };
        self.send_json(
            Method::POST,
            &["volume_groups"],
            &body,
            Op::Other,
            "volume group",
        )
        .await
    }

    /// G1 `?name=`; the answer may be an object or an array (D10); 404 or `[]` → `None`.
    pub async fn find_volume_group(&self, name: &str) -> Result<Option<VolumeGroup>> {
        let name = nonempty("name", name)?;
        self.lookup(
            &["volume_groups"],
            &[("name", name)],
            name,
            |g: &VolumeGroup| g.name.as_deref(),
            "volume group",
        )
        .await
    }

    /// G3; 404 → NotFound.
    pub async fn get_volume_group(&self, id: &str) -> Result<VolumeGroup> {
        let id = nonempty("volumeGroupId", id)?;
        self.get_opt(&["volume_groups", id], "volume group")
            .await?
            .ok_or_else(|| Error::not_found(format!("volume group {id} not found")))
    }

    /// G4; gone counts as deleted, members → FailedPrecondition.
    pub async fn delete_volume_group(&self, id: &str) -> Result<()> {
        let id = nonempty("volumeGroupId", id)?;
        self.delete_gone_ok(&["volume_groups", id]).await
    }

    /// P2: one snapshot per member volume; a name taken by another group → AlreadyExists.
    pub async fn create_snapshot_group(
        &self,
        name: &str,
        volume_group_id: &str,
    ) -> Result<SnapshotGroup> {
        let body = SnapshotGroup {
            name: Some(nonempty("name", name)?.to_owned()),
            volume_group_id: Some(nonempty("volumeGroupId", volume_group_id)?.to_owned()),
            ..SnapshotGroup::default()
        };
        self.send_json(
            Method::POST,
            &["snapshot_groups"],
            &body,
            Op::Create,
            "snapshot group",
        )
        .await
    }

    /// P1; a group that has none, or that does not exist, lists nothing (a CSP may answer
    /// 404 for an unknown group; ours answers `[]`).
    pub async fn list_snapshot_groups(&self, volume_group_id: &str) -> Result<Vec<SnapshotGroup>> {
        let vg = nonempty("volumeGroupId", volume_group_id)?;
        self.list_filtered(
            &["snapshot_groups"],
            &[("volume_group_id", vg)],
            "snapshot group list",
        )
        .await
    }

    /// P3; 404 → NotFound.
    pub async fn get_snapshot_group(&self, id: &str) -> Result<SnapshotGroup> {
        let id = nonempty("snapshotGroupId", id)?;
        self.get_opt(&["snapshot_groups", id], "snapshot group")
            .await?
            .ok_or_else(|| Error::not_found(format!("snapshot group {id} not found")))
    }

    /// P4 (member snapshots go with it); gone counts as deleted.
    pub async fn delete_snapshot_group(&self, id: &str) -> Result<()> {
        let id = nonempty("snapshotGroupId", id)?;
        self.delete_gone_ok(&["snapshot_groups", id]).await
    }

    /// R1 without a name filter.
    pub async fn replication_partners(&self) -> Result<Vec<ReplicationPartner>> {
        self.list(&["replication_partners"], &[], "replication partner list")
            .await
    }

    /// X1 (ext); a CSP without it (404, 405, 501) → `None` (capacity unknown).
    pub async fn capacity(&self) -> Result<Option<Capacity>> {
        let reply = self.call(Method::GET, &["capacity"], &[], None).await?;
        if matches!(reply.status.as_u16(), 404 | 405 | 501) {
            return Ok(None);
        }
        let reply = self.check(reply, Op::Other)?;
        self.decode(&reply, "capacity").map(Some)
    }

    /// Whether the CSP names a volbridge extension in `GET /capacity` (`extensions`). Asked
    /// each time: a CSP may be upgraded or replaced behind the same URL, and one that does
    /// not list an extension is never sent its requests.
    pub async fn lists_extension(&self, name: &str) -> Result<bool> {
        Ok(self
            .capacity()
            .await?
            .is_some_and(|c| c.extensions.iter().any(|e| e == name)))
    }

    /// `GET /mutable_config` (ext): the volume config keys this CSP lets a PUT change with
    /// effect; `None` from a CSP that does not serve it.
    pub async fn mutable_config(&self) -> Result<Option<MutableConfig>> {
        let reply = self
            .call(Method::GET, &["mutable_config"], &[], None)
            .await?;
        if matches!(reply.status.as_u16(), 404 | 405 | 501) {
            return Ok(None);
        }
        let reply = self.check(reply, Op::Other)?;
        self.decode(&reply, "mutable config").map(Some)
    }

    async fn delete_gone_ok(&self, segments: &[&str]) -> Result<()> {
        let reply = self.call(Method::DELETE, segments, &[], None).await?;
        match reply.status {
            StatusCode::NOT_FOUND => Ok(()),
            _ => self.check(reply, Op::Other).map(drop),
        }
    }
}
