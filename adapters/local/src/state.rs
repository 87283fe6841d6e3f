//! The live, indexed view of [`Tables`] that request handlers validate against.

use crate::model::{Change, SnapshotGroupRec, SnapshotRec, Tables, VolumeGroupRec, VolumeRec};
use std::borrow::Borrow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use volbridge_proto::csp::{Host, BACKGROUND_COMPLETED, BACKGROUND_STATUS, CLONE_SNAPSHOT_PREFIX};

type Index = HashMap<String, BTreeSet<String>>;

/// A volume record in the name index: hashed and compared by its name, so the index holds
/// one pointer per volume and no copy of either the name or the id.
#[derive(Debug)]
struct ByName(Arc<VolumeRec>);

impl Hash for ByName {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.0.name.as_str().hash(h)
    }
}
impl PartialEq for ByName {
    fn eq(&self, other: &Self) -> bool {
        self.0.name == other.0.name
    }
}
impl Eq for ByName {}
impl Borrow<str> for ByName {
    fn borrow(&self) -> &str {
        &self.0.name
    }
}

#[derive(Debug, Default)]
pub struct State {
    pub t: Tables,
    vol_by_name: HashSet<ByName>,
    snaps_by_name: Index,
    snaps_of_volume: Index,
    clones_of_snapshot: Index,
    vg_by_name: HashMap<String, String>,
    sg_by_name: HashMap<String, String>,
    members_of_vg: Index,
    sgs_of_vg: Index,
    /// The volumes' sizes added up (thin provisioning, see `provision`).
    provisioned: u64,
}

fn add(ix: &mut Index, key: &str, id: &str) {
    if !key.is_empty() {
        ix.entry(key.to_owned()).or_default().insert(id.to_owned());
    }
}

fn del(ix: &mut Index, key: &str, id: &str) {
    if let Some(set) = ix.get_mut(key) {
        set.remove(id);
        if set.is_empty() {
            ix.remove(key);
        }
    }
}

fn list<'a>(ix: &'a Index, key: &str) -> impl Iterator<Item = &'a String> {
    ix.get(key).into_iter().flatten()
}

impl State {
    pub fn new(t: Tables) -> State {
        let mut s = State::default();
        for v in t.volumes.values() {
            s.index_volume(v);
        }
        s.vol_by_name.shrink_to_fit();
        for v in t.snapshots.values() {
            s.index_snapshot(v);
        }
        for g in t.volume_groups.values() {
            s.vg_by_name.insert(g.name.clone(), g.id.clone());
        }
        for g in t.snapshot_groups.values() {
            s.index_sg(g);
        }
        s.t = t;
        s
    }

    fn index_volume(&mut self, v: &Arc<VolumeRec>) {
        self.provisioned += v.size;
        self.vol_by_name.replace(ByName(v.clone()));
        add(&mut self.clones_of_snapshot, &v.base_snapshot_id, &v.id);
        add(&mut self.members_of_vg, &v.volume_group_id, &v.id);
    }
    fn unindex_volume(&mut self, v: &VolumeRec) {
        self.provisioned = self.provisioned.saturating_sub(v.size);
        if self
            .vol_by_name
            .get(v.name.as_str())
            .is_some_and(|n| n.0.id == v.id)
        {
            self.vol_by_name.remove(v.name.as_str());
        }
        del(&mut self.clones_of_snapshot, &v.base_snapshot_id, &v.id);
        del(&mut self.members_of_vg, &v.volume_group_id, &v.id);
    }
    fn index_snapshot(&mut self, s: &SnapshotRec) {
        // A hidden snapshot's name is free again; it stays indexed by volume (its copy may
        // still read the volume) but `snapshots_of` leaves it out.
        if !s.hidden {
            add(&mut self.snaps_by_name, &s.name, &s.id);
        }
        add(&mut self.snaps_of_volume, &s.volume_id, &s.id);
    }
    fn unindex_snapshot(&mut self, s: &SnapshotRec) {
        del(&mut self.snaps_by_name, &s.name, &s.id);
        del(&mut self.snaps_of_volume, &s.volume_id, &s.id);
    }
    fn index_sg(&mut self, g: &SnapshotGroupRec) {
        self.sg_by_name.insert(g.name.clone(), g.id.clone());
        add(&mut self.sgs_of_vg, &g.volume_group_id, &g.id);
    }
    fn unindex_sg(&mut self, g: &SnapshotGroupRec) {
        if self.sg_by_name.get(&g.name) == Some(&g.id) {
            self.sg_by_name.remove(&g.name);
        }
        del(&mut self.sgs_of_vg, &g.volume_group_id, &g.id);
    }

    pub fn apply(&mut self, change: Change) {
        // The name index points at the record the tables hold: index it after the change.
        let put_volume = match &change {
            Change::PutVolume(v) => Some(v.id.clone()),
            _ => None,
        };
        match &change {
            Change::PutVolume(v) => {
                if let Some(old) = self.t.volumes.get(&v.id).cloned() {
                    self.unindex_volume(&old);
                }
            }
            Change::DeleteVolume { id, .. } => {
                if let Some(old) = self.t.volumes.get(id).cloned() {
                    self.unindex_volume(&old);
                }
            }
            Change::PutSnapshot(s) => {
                if let Some(old) = self.t.snapshots.get(&s.id).cloned() {
                    self.unindex_snapshot(&old);
                }
                self.index_snapshot(s);
            }
            Change::DeleteSnapshot(id) => {
                if let Some(old) = self.t.snapshots.get(id).cloned() {
                    self.unindex_snapshot(&old);
                }
            }
            Change::PutVolumeGroup(g) => {
                if let Some(old) = self.t.volume_groups.get(&g.id) {
                    if self.vg_by_name.get(&old.name) == Some(&old.id) {
                        let name = old.name.clone();
                        self.vg_by_name.remove(&name);
                    }
                }
                self.vg_by_name.insert(g.name.clone(), g.id.clone());
            }
            Change::DeleteVolumeGroup(id) => {
                if let Some(old) = self.t.volume_groups.get(id) {
                    if self.vg_by_name.get(&old.name) == Some(id) {
                        let name = old.name.clone();
                        self.vg_by_name.remove(&name);
                    }
                }
            }
            Change::PutSnapshotGroup(g) => {
                if let Some(old) = self.t.snapshot_groups.get(&g.id).cloned() {
                    self.unindex_sg(&old);
                }
                self.index_sg(g);
            }
            Change::DeleteSnapshotGroup(id) => {
                if let Some(old) = self.t.snapshot_groups.get(id).cloned() {
                    self.unindex_sg(&old);
                }
            }
            Change::PutHost(_) | Change::DeleteHost(_) | Change::ForgetRetained(_) => {}
        }
        self.t.apply(change);
        if let Some(v) = put_volume.and_then(|id| self.t.volumes.get(&id).cloned()) {
            self.index_volume(&v);
        }
    }

    /// The volumes' sizes added up.
    pub fn provisioned(&self) -> u64 {
        self.provisioned
    }

    pub fn volume(&self, id: &str) -> Option<&VolumeRec> {
        self.t.volumes.get(id).map(|v| &**v)
    }
    pub fn volume_by_name(&self, name: &str) -> Option<&VolumeRec> {
        self.vol_by_name.get(name).map(|v| &*v.0)
    }
    /// A snapshot the API shows (not a hidden one).
    pub fn snapshot(&self, id: &str) -> Option<&SnapshotRec> {
        self.t.snapshots.get(id).filter(|s| !s.hidden)
    }
    /// A snapshot record, hidden or not: what copies read.
    pub fn snapshot_any(&self, id: &str) -> Option<&SnapshotRec> {
        self.t.snapshots.get(id)
    }
    /// Every snapshot the API shows.
    pub fn visible_snapshots(&self) -> impl Iterator<Item = &SnapshotRec> {
        self.t.snapshots.values().filter(|s| !s.hidden)
    }
    pub fn snapshots_named<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a SnapshotRec> {
        list(&self.snaps_by_name, name).filter_map(|id| self.t.snapshots.get(id))
    }
    /// The snapshots of a volume the API shows.
    pub fn snapshots_of<'a>(&'a self, volume_id: &str) -> impl Iterator<Item = &'a SnapshotRec> {
        list(&self.snaps_of_volume, volume_id)
            .filter_map(|id| self.t.snapshots.get(id))
            .filter(|s| !s.hidden)
    }
    pub fn clones_of<'a>(&'a self, snapshot_id: &str) -> impl Iterator<Item = &'a VolumeRec> {
        list(&self.clones_of_snapshot, snapshot_id).filter_map(|id| self.volume(id))
    }
    pub fn host(&self, uuid: &str) -> Option<&Host> {
        self.t.hosts.get(uuid)
    }
    pub fn volume_group(&self, id: &str) -> Option<&VolumeGroupRec> {
        self.t.volume_groups.get(id)
    }
    pub fn volume_group_by_name(&self, name: &str) -> Option<&VolumeGroupRec> {
        self.vg_by_name
            .get(name)
            .and_then(|id| self.t.volume_groups.get(id))
    }
    pub fn members_of<'a>(&'a self, group_id: &str) -> impl Iterator<Item = &'a VolumeRec> {
        list(&self.members_of_vg, group_id).filter_map(|id| self.volume(id))
    }
    pub fn snapshot_group(&self, id: &str) -> Option<&SnapshotGroupRec> {
        self.t.snapshot_groups.get(id)
    }
    pub fn snapshot_group_by_name(&self, name: &str) -> Option<&SnapshotGroupRec> {
        self.sg_by_name
            .get(name)
            .and_then(|id| self.t.snapshot_groups.get(id))
    }
    pub fn snapshot_groups_of<'a>(
        &'a self,
        group_id: &str,
    ) -> impl Iterator<Item = &'a SnapshotGroupRec> {
        list(&self.sgs_of_vg, group_id).filter_map(|id| self.t.snapshot_groups.get(id))
    }

    /// Clones whose background copy from this snapshot has not finished, `except` one.
    pub fn copies_from(&self, snapshot_id: &str, except: &str) -> usize {
        self.clones_of(snapshot_id)
            .filter(|v| v.id != except && copy_running(v))
            .count()
    }

    /// S3 `in_use`: true only while S4 would be refused. This CSP refuses none: a running
    /// copy is cancelled, and clones being copied from the snapshot keep its image
    /// (docs/copy-semantics.md rule 2).
    pub fn snapshot_in_use(&self, _s: &SnapshotRec) -> bool {
        false
    }

    /// Whether a snapshot of this volume (hidden ones included) is still being copied: its
    /// data is read live from the volume.
    pub fn snapshot_copy_running(&self, volume_id: &str) -> bool {
        list(&self.snaps_of_volume, volume_id)
            .filter_map(|id| self.t.snapshots.get(id))
            .any(|s| !s.ready)
    }

    /// The changes that delete snapshot `id` for the API (S4, P4): removed at once, or
    /// hidden while clone copies still read it. Returns whether the image may go now.
    pub fn delete_snapshot_changes(&self, id: &str, changes: &mut Vec<Change>) -> bool {
        let Some(snap) = self.t.snapshots.get(id) else {
            return false;
        };
        if let Some(g) = self.snapshot_group(&snap.group_id) {
            let mut g = g.clone();
            g.snapshot_ids.retain(|m| m != id);
            changes.push(Change::PutSnapshotGroup(g));
        }
        if self.copies_from(id, "") > 0 {
            let mut hidden = snap.clone();
            hidden.hidden = true;
            hidden.group_id = String::new();
            changes.push(Change::PutSnapshot(hidden));
            false
        } else {
            changes.push(Change::DeleteSnapshot(id.to_owned()));
            true
        }
    }

    /// The temporary snapshot B16 made for exactly this clone (name prefix
    /// `snap-for-clone-`, description = the clone's name, no group, no other clone): once
    /// the clone is complete nobody needs it, and it goes in the same commit
    /// (docs/copy-semantics.md rule 3).
    pub fn temporary_source_of(&self, clone: &VolumeRec) -> Option<String> {
        let snap = self.t.snapshots.get(&clone.base_snapshot_id)?;
        let made_for_it = snap.name.starts_with(CLONE_SNAPSHOT_PREFIX)
            && snap.description.as_deref() == Some(clone.name.as_str())
            && snap.group_id.is_empty()
            && self.clones_of(&snap.id).all(|c| c.id == clone.id);
        made_for_it.then(|| snap.id.clone())
    }

    /// A hidden snapshot that no running copy reads any more once clone `ending` stops
    /// copying from it: its record may go (the caller removes the image after).
    pub fn hidden_source_done(&self, snapshot_id: &str, ending: &str) -> Option<String> {
        let snap = self.t.snapshots.get(snapshot_id)?;
        (snap.hidden && self.copies_from(snapshot_id, ending) == 0).then(|| snap.id.clone())
    }
}

/// The volume's background status, if any.
pub fn background_status(v: &VolumeRec) -> Option<&str> {
    v.config.get(BACKGROUND_STATUS).and_then(|s| s.as_str())
}

/// A clone whose data copy has not completed (running, or failed).
pub fn unusable(v: &VolumeRec) -> bool {
    background_status(v).is_some_and(|s| s != BACKGROUND_COMPLETED)
}

/// A clone whose data copy is still running.
pub fn copy_running(v: &VolumeRec) -> bool {
    unusable(v) && !background_status(v).is_some_and(|s| s.starts_with("Failed"))
}
