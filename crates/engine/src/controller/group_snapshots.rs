//! A group snapshot as one operation: a volume group made for it (named as the group
//! snapshot), then a snapshot group of it. Two CSP steps, so an intent record is written
//! first: after a crash between them the reconciler removes the volume group the operation
//! made, and a retry of the request starts clean. Deleting goes the same way round.

use super::groups::SnapshotGroup;
use crate::names::validate_name;
use crate::records::intent::{self, Intent};
use crate::{Engine, Wait};
use std::collections::BTreeSet;
use volbridge_base::{Error, ErrorKind, Object, Result};

impl Engine {
    /// Snapshots `members` together as group snapshot `name`, or answers the one an earlier
    /// identical request made (another member set is AlreadyExists).
    pub async fn create_group_snapshot(
        &self,
        name: &str,
        members: &[String],
        backend: Option<&str>,
    ) -> Result<SnapshotGroup> {
        validate_name("name", name)?;
        let resolved = self.backends.resolve(backend)?;
        let _op = self
            .guard(&resolved.name, &format!("group-snapshot:{name}"), Wait::No)
            .await?;
        for v in members {
            let found = match validate_name("source_volume_ids", v) {
                Ok(()) => self.get_volume(v, backend).await,
                Err(_) => Err(Error::not_found("")),
            };
            found.map_err(|e| match e.kind {
                ErrorKind::NotFound => Error::not_found(format!("volume '{v}' does not exist"))
                    .about(Object::Volume(v.to_string())),
                _ => e,
            })?;
        }
        let wanted: BTreeSet<&String> = members.iter().collect();
        let existing = self.find_volume_group(name, backend).await?;
        if let Some(g) = &existing {
            let have: BTreeSet<&String> = g.members.iter().collect();
            if have != wanted {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("group snapshot '{name}' exists for volumes {:?}", g.members),
                ));
            }
        }
        let key = intent::new_key();
        self.store.put(
            intent::COLLECTION,
            &key,
            &Intent::CreateGroupSnapshot {
                backend: resolved.name.clone(),
                name: name.to_owned(),
                made_volume_group: existing.is_none(),
            },
        )?;
        let members: Vec<String> = wanted.into_iter().cloned().collect();
        let made = async {
            self.create_volume_group(name, &members, backend, Wait::No)
                .await?;
            self.create_snapshot_group(name, name, backend, Wait::No)
                .await
        }
        .await;
        match made {
            Ok(group) => {
                self.store.remove(intent::COLLECTION, &key)?;
                Ok(group)
            }
            // The record stays: the reconciler removes what was made, or finds it complete.
            Err(e) => Err(e),
        }
    }

    /// Deletes a group snapshot with its member snapshots and the volume group made for it;
    /// an unknown id is done already.
    pub async fn delete_group_snapshot(&self, id: &str, backend: Option<&str>) -> Result<()> {
        let group = match self.get_snapshot_group(id, backend).await {
            Ok(g) => g,
            Err(e) if matches!(e.kind, ErrorKind::NotFound | ErrorKind::InvalidArgument) => {
                return Ok(())
            }
            Err(e) => return Err(e),
        };
        let resolved = self.backends.resolve(backend)?;
        let _op = self
            .guard(
                &resolved.name,
                &format!("group-snapshot:{}", group.name),
                Wait::No,
            )
            .await?;
        let key = intent::new_key();
        let record = Intent::DeleteGroupSnapshot {
            backend: resolved.name.clone(),
            name: group.name.clone(),
            id: group.id.clone(),
        };
        self.store.put(intent::COLLECTION, &key, &record)?;
        self.delete_group_snapshot_steps(&resolved.name, &group.name, &group.id)
            .await?;
        self.store.remove(intent::COLLECTION, &key)
    }

    async fn delete_group_snapshot_steps(&self, backend: &str, name: &str, id: &str) -> Result<()> {
        match self.delete_snapshot_group(id, Some(backend)).await {
            Err(e) if e.kind != ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        // The volume group was made for this group snapshot; it goes with it. Volumes keep
        // their data either way, so a refusal only leaves an empty grouping behind.
        if let Err(e) = self
            .delete_volume_group(name, Some(backend), Wait::No)
            .await
        {
            tracing::warn!(group = %name, error = %e.message, "volume group kept");
        }
        Ok(())
    }

    /// Replays an interrupted create: complete if the snapshot group exists, else the
    /// volume group the operation made is removed (its members leave it first).
    pub(crate) async fn replay_create_group_snapshot(
        &self,
        backend: &str,
        name: &str,
        made_volume_group: bool,
    ) -> Result<String> {
        if self
            .find_snapshot_group(name, Some(backend))
            .await?
            .is_some()
        {
            return Ok("it had completed".into());
        }
        if made_volume_group {
            self.delete_volume_group(name, Some(backend), Wait::No)
                .await?;
            return Ok("rolled back: removed the volume group made for it".into());
        }
        Ok("rolled back: nothing was made".into())
    }

    pub(crate) async fn replay_delete_group_snapshot(
        &self,
        backend: &str,
        name: &str,
        id: &str,
    ) -> Result<String> {
        self.delete_group_snapshot_steps(backend, name, id).await?;
        Ok("finished".into())
    }
}
