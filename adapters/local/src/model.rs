//! Durable records and the changes the journal carries.
//!
//! Every change is a whole-object put or a delete by id. That keeps replay idempotent: a
//! journal replayed on top of a state file that already contains some of its records ends
//! in the same state, which is what makes compaction safe without a generation counter.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use volbridge_proto::csp::{Config, Host};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeRec {
    pub id: String,
    pub name: String,
    pub size: u64,
    #[serde(default)]
    pub description: Option<String>,
    /// Empty for volumes that are not clones.
    #[serde(default)]
    pub base_snapshot_id: String,
    #[serde(default)]
    pub parent_volume_id: String,
    /// Empty when the volume is in no group.
    #[serde(default)]
    pub volume_group_id: String,
    #[serde(default)]
    pub config: Config,
    /// Host uuids holding a grant (publish).
    #[serde(default)]
    pub hosts: BTreeSet<String>,
    #[serde(default)]
    pub creation_time: i64,
}

impl VolumeRec {
    /// Made from a snapshot, or from a volume in one step (then only the parent is set).
    pub fn is_clone(&self) -> bool {
        !self.base_snapshot_id.is_empty() || !self.parent_volume_id.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotRec {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub volume_id: String,
    #[serde(default)]
    pub volume_name: String,
    pub size: u64,
    #[serde(default)]
    pub creation_time: i64,
    /// False while the background copy that fills the snapshot runs.
    #[serde(default)]
    pub ready: bool,
    #[serde(default)]
    pub config: Config,
    /// The snapshot group this snapshot belongs to, empty if none.
    #[serde(default)]
    pub group_id: String,
    /// Deleted through the API (S4 answered 204, the API no longer shows it) while clone
    /// copies still read its image: the clones keep their data source (B39a). The record
    /// and the image go when the last of those copies ends.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hidden: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeGroupRec {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub creation_time: i64,
    #[serde(default)]
    pub config: Config,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotGroupRec {
    pub id: String,
    pub name: String,
    pub volume_group_id: String,
    #[serde(default)]
    pub creation_time: i64,
    #[serde(default)]
    pub config: Config,
    #[serde(default)]
    pub snapshot_ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    PutVolume(VolumeRec),
    /// `retain`: the image moves to `retained/` instead of being removed; the id is kept in
    /// [`Tables::retained`] so that recovery finishes an interrupted move.
    DeleteVolume {
        id: String,
        #[serde(default)]
        retain: bool,
    },
    PutSnapshot(SnapshotRec),
    DeleteSnapshot(String),
    PutHost(Host),
    DeleteHost(String),
    PutVolumeGroup(VolumeGroupRec),
    DeleteVolumeGroup(String),
    PutSnapshotGroup(SnapshotGroupRec),
    DeleteSnapshotGroup(String),
    /// Recovery found the retained image in place; forget the id.
    ForgetRetained(String),
}

/// Everything that is persisted. Keys are ids (hosts: uuid).
///
/// Volume records are shared (`Arc`): the name index, a listing in flight and the copy a
/// compaction writes out hold the same record instead of copies of it. Cloning the tables
/// is therefore cheap for the table that grows (tens of thousands of volumes).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tables {
    #[serde(default)]
    pub volumes: BTreeMap<String, Arc<VolumeRec>>,
    #[serde(default)]
    pub snapshots: BTreeMap<String, SnapshotRec>,
    #[serde(default)]
    pub hosts: BTreeMap<String, Host>,
    #[serde(default)]
    pub volume_groups: BTreeMap<String, VolumeGroupRec>,
    #[serde(default)]
    pub snapshot_groups: BTreeMap<String, SnapshotGroupRec>,
    #[serde(default)]
    pub retained: BTreeSet<String>,
}

impl Tables {
    pub fn apply(&mut self, change: Change) {
        match change {
            Change::PutVolume(v) => {
                self.volumes.insert(v.id.clone(), Arc::new(v));
            }
            Change::DeleteVolume { id, retain } => {
                self.volumes.remove(&id);
                if retain {
                    self.retained.insert(id);
                }
            }
            Change::PutSnapshot(s) => {
                self.snapshots.insert(s.id.clone(), s);
            }
            Change::DeleteSnapshot(id) => {
                self.snapshots.remove(&id);
            }
            Change::PutHost(h) => {
                if let Some(uuid) = h.uuid.clone() {
                    self.hosts.insert(uuid, h);
                }
            }
            Change::DeleteHost(uuid) => {
                self.hosts.remove(&uuid);
            }
            Change::PutVolumeGroup(g) => {
                self.volume_groups.insert(g.id.clone(), g);
            }
            Change::DeleteVolumeGroup(id) => {
                self.volume_groups.remove(&id);
            }
            Change::PutSnapshotGroup(g) => {
                self.snapshot_groups.insert(g.id.clone(), g);
            }
            Change::DeleteSnapshotGroup(id) => {
                self.snapshot_groups.remove(&id);
            }
            Change::ForgetRetained(id) => {
                self.retained.remove(&id);
            }
        }
    }
}

/// Reads a boolean config value that may be a JSON bool or a `"true"`/`"false"` string.
pub fn config_bool(config: &Config, key: &str) -> Result<Option<bool>, String> {
    match config.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Bool(b)) => Ok(Some(*b)),
        Some(serde_json::Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(Some(true)),
            "false" => Ok(Some(false)),
            _ => Err(format!("config '{key}' must be true or false, not '{s}'")),
        },
        Some(other) => Err(format!("config '{key}' must be true or false, not {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol(id: &str, size: u64) -> VolumeRec {
        VolumeRec {
            id: id.into(),
            name: format!("n-{id}"),
            size,
            description: None,
            base_snapshot_id: String::new(),
            parent_volume_id: String::new(),
            volume_group_id: String::new(),
            config: Config::new(),
            hosts: BTreeSet::new(),
            creation_time: 1,
        }
    }

    #[test]
    fn replay_over_a_newer_state_is_idempotent() {
        let changes = vec![
            Change::PutVolume(vol("a", 512)),
            Change::PutVolume(vol("b", 512)),
            Change::PutVolume(vol("a", 1024)),
            Change::DeleteVolume {
                id: "b".into(),
                retain: true,
            },
        ];
        let mut fresh = Tables::default();
        for c in changes.clone() {
            fresh.apply(c);
        }
        let mut again = fresh.clone();
        for c in changes {
            again.apply(c);
        }
        assert_eq!(fresh, again);
        assert_eq!(fresh.volumes["a"].size, 1024);
        assert!(fresh.retained.contains("b"));
    }

    #[test]
    fn config_bools_accept_strings() {
        let mut c = Config::new();
        c.insert("x".into(), "TRUE".into());
        c.insert("y".into(), false.into());
        c.insert("z".into(), "maybe".into());
        assert_eq!(config_bool(&c, "x"), Ok(Some(true)));
        assert_eq!(config_bool(&c, "y"), Ok(Some(false)));
        assert!(config_bool(&c, "z").is_err());
        assert_eq!(config_bool(&c, "w"), Ok(None));
    }
}
