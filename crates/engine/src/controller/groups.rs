//! Volume groups and snapshot groups: crash-consistent snapshots of several volumes at one
//! point in time (CSI group snapshots stand on these).

use crate::model::Snapshot;
use crate::names::validate_name;
use crate::{Engine, Wait};
use std::collections::BTreeMap;
use volbridge_base::error::{Error, Object, Result};
use volbridge_provider::VolumeEdit;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeGroup {
    pub name: String,
    pub id: String,
    pub backend: String,
    pub members: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotGroup {
    pub name: String,
    pub id: String,
    pub backend: String,
    pub volume_group_id: String,
    pub snapshots: Vec<Snapshot>,
}

fn group_of(backend: &str, g: &volbridge_provider::VolumeGroup) -> VolumeGroup {
    let mut members: Vec<String> = g
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| v.name.clone())
        .collect();
    members.sort();
    VolumeGroup {
        name: g.name.clone().unwrap_or_default(),
        id: g.id.clone().unwrap_or_default(),
        backend: backend.to_owned(),
        members,
    }
}

fn snapshot_group_of(backend: &str, sg: &volbridge_provider::SnapshotGroup) -> SnapshotGroup {
    SnapshotGroup {
        name: sg.name.clone().unwrap_or_default(),
        id: sg.id.clone().unwrap_or_default(),
        backend: backend.to_owned(),
        volume_group_id: sg.volume_group_id.clone().unwrap_or_default(),
        snapshots: sg
            .snapshots
            .iter()
            .flatten()
            .map(|s| Snapshot::from_csp(backend, s))
            .collect(),
    }
}

impl Engine {
    /// Creates (or finds) a volume group and makes `volumes` its members.
    pub async fn create_volume_group(
        &self,
        name: &str,
        volumes: &[String],
        backend: Option<&str>,
        wait: Wait,
    ) -> Result<VolumeGroup> {
        validate_name("name", name)?;
        for v in volumes {
            validate_name("volumes", v)?;
        }
        let backend = self.backends.resolve(backend)?;
        let _guard = self
            .guard(&backend.name, &format!("group:{name}"), wait)
            .await?;
        let client = &backend.client;
        let group = match client.find_volume_group(name).await? {
            Some(g) => g,
            None => {
                client
                    .create_volume_group(name, None, &BTreeMap::new())
                    .await?
            }
        };
        let group_id = group.id.clone().unwrap_or_default();
        for v in volumes {
            let volume = client.find_volume(v).await?.ok_or_else(|| {
                Error::not_found(format!("volume '{v}' does not exist"))
                    .about(Object::Volume(v.to_string()))
            })?;
            if volume.group_id() != Some(group_id.as_str()) {
                let edit = VolumeEdit {
                    volume_group_id: Some(Some(group_id.clone())),
                    ..VolumeEdit::default()
                };
                client
                    .edit_volume(volume.id.as_deref().unwrap_or_default(), &edit)
                    .await?;
            }
        }
        Ok(group_of(
            &backend.name,
            &client.get_volume_group(&group_id).await?,
        ))
    }

    /// Deletes a volume group after releasing its members; a missing group is done.
    pub async fn delete_volume_group(
        &self,
        name: &str,
        backend: Option<&str>,
        wait: Wait,
    ) -> Result<()> {
        validate_name("name", name)?;
        let backend = self.backends.resolve(backend)?;
        let _guard = self
            .guard(&backend.name, &format!("group:{name}"), wait)
            .await?;
        let client = &backend.client;
        let Some(group) = client.find_volume_group(name).await? else {
            return Ok(());
        };
        for member in group.volumes.iter().flatten() {
            let leave = VolumeEdit {
                volume_group_id: Some(None),
                ..VolumeEdit::default()
            };
            client
                .edit_volume(member.id.as_deref().unwrap_or_default(), &leave)
                .await?;
        }
        client
            .delete_volume_group(group.id.as_deref().unwrap_or_default())
            .await
    }

    /// Snapshots every member of a volume group at one point in time.
    pub async fn create_snapshot_group(
        &self,
        name: &str,
        group: &str,
        backend: Option<&str>,
        wait: Wait,
    ) -> Result<SnapshotGroup> {
        validate_name("name", name)?;
        validate_name("group", group)?;
        let backend = self.backends.resolve(backend)?;
        let _guard = self
            .guard(&backend.name, &format!("group:{group}"), wait)
            .await?;
        let client = &backend.client;
        let vg = client
            .find_volume_group(group)
            .await?
            .ok_or_else(|| Error::not_found(format!("volume group '{group}' does not exist")))?;
        self.flush_staged(&backend.name, None).await;
        let sg = client
            .create_snapshot_group(name, vg.id.as_deref().unwrap_or_default())
            .await?;
        let mut snapshots = Vec::new();
        for s in sg.snapshots.iter().flatten() {
            let s = Snapshot::from_csp(&backend.name, s);
            snapshots.push(match wait {
                Wait::No | Wait::Until(_) => s,
                Wait::Bounded => self.wait_ready(&backend.name, client, s).await?,
            });
        }
        Ok(SnapshotGroup {
            name: sg.name.clone().unwrap_or_default(),
            id: sg.id.clone().unwrap_or_default(),
            backend: backend.name.clone(),
            volume_group_id: sg.volume_group_id.clone().unwrap_or_default(),
            snapshots,
        })
    }

    /// A volume group by name, if it exists.
    pub async fn find_volume_group(
        &self,
        name: &str,
        backend: Option<&str>,
    ) -> Result<Option<VolumeGroup>> {
        validate_name("name", name)?;
        let backend = self.backends.resolve(backend)?;
        let found = backend.client.find_volume_group(name).await?;
        Ok(found.map(|g| group_of(&backend.name, &g)))
    }

    /// A snapshot group by name, if it exists. Groups made through the engine share their
    /// volume group's name, so only that group's snapshot groups are looked at.
    pub async fn find_snapshot_group(
        &self,
        name: &str,
        backend: Option<&str>,
    ) -> Result<Option<SnapshotGroup>> {
        validate_name("name", name)?;
        let resolved = self.backends.resolve(backend)?;
        let Some(vg) = resolved.client.find_volume_group(name).await? else {
            return Ok(None);
        };
        let listed = resolved
            .client
            .list_snapshot_groups(vg.id.as_deref().unwrap_or_default())
            .await?;
        Ok(listed
            .iter()
            .find(|g| g.name.as_deref() == Some(name))
            .map(|g| snapshot_group_of(&resolved.name, g)))
    }

    /// A snapshot group by CSP id, with its member snapshots.
    pub async fn get_snapshot_group(
        &self,
        id: &str,
        backend: Option<&str>,
    ) -> Result<SnapshotGroup> {
        let backend = self.backends.resolve(backend)?;
        let sg = backend.client.get_snapshot_group(id).await?;
        Ok(snapshot_group_of(&backend.name, &sg))
    }

    /// Deletes a snapshot group by id with its member snapshots; a missing one is done.
    pub async fn delete_snapshot_group(&self, id: &str, backend: Option<&str>) -> Result<()> {
        let backend = self.backends.resolve(backend)?;
        backend.client.delete_snapshot_group(id).await
    }
}
