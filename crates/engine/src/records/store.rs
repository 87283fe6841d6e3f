//! The durable node state store: one JSON document per record under the state dir, written
//! atomically (temp file, fsync, rename, fsync dir) so a crash leaves the old or the new
//! record, never a torn one. Keys are mapped to file names without trusting them.

use serde::{de::DeserializeOwned, Serialize};
use std::fs::{self, File};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use volbridge_base::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct StateStore {
    root: PathBuf,
}

impl StateStore {
    /// Opens (creating with mode 0700) the state dir.
    pub fn open(root: impl Into<PathBuf>) -> Result<StateStore> {
        let root = root.into();
        create_private_dir(&root)?;
        Ok(StateStore { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn collection(&self, kind: &str) -> Result<PathBuf> {
        debug_assert!(kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'));
        let dir = self.root.join(kind);
        create_private_dir(&dir)?;
        Ok(dir)
    }

    /// Writes `value` as record `key` of collection `kind`, durably.
    pub fn put<T: Serialize>(&self, kind: &str, key: &str, value: &T) -> Result<()> {
        let dir = self.collection(kind)?;
        let bytes = serde_json::to_vec_pretty(value)
            .map_err(|e| Error::internal(format!("cannot encode {kind} record: {e}")))?;
        write_atomic(&dir, &file_name(key), &bytes)
    }

    /// Writes a record atomically but without waiting for the disk: it survives the
    /// process (a `kill -9`), not necessarily a power loss. For records of a step in
    /// progress, whose kernel-side state a power loss wipes anyway (mounts, loop devices).
    pub fn put_volatile<T: Serialize>(&self, kind: &str, key: &str, value: &T) -> Result<()> {
        let dir = self.collection(kind)?;
        let bytes = serde_json::to_vec_pretty(value)
            .map_err(|e| Error::internal(format!("cannot encode {kind} record: {e}")))?;
        write_renamed(&dir, &file_name(key), &bytes, false)
    }

    /// Removes a record without syncing the directory (see [`Self::put_volatile`]).
    pub fn remove_volatile(&self, kind: &str, key: &str) -> Result<()> {
        match fs::remove_file(self.root.join(kind).join(file_name(key))) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub fn get<T: DeserializeOwned>(&self, kind: &str, key: &str) -> Result<Option<T>> {
        let path = self.root.join(kind).join(file_name(key));
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::internal(format!("{} is damaged: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes a record durably; removing a missing record is success.
    pub fn remove(&self, kind: &str, key: &str) -> Result<()> {
        let dir = self.root.join(kind);
        match fs::remove_file(dir.join(file_name(key))) {
            Ok(()) => sync_dir(&dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every record of a collection with its key; damaged records are reported, not skipped.
    pub fn list<T: DeserializeOwned>(&self, kind: &str) -> Result<Vec<(String, Result<T>)>> {
        let dir = self.root.join(kind);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".json") else {
                // Leftover temp files of an interrupted write (the record itself is intact).
                // Only old ones: a young one belongs to a write in flight, which renames it
                // a moment later.
                if name.starts_with('.') && name.ends_with(".tmp") && is_stale(&entry) {
                    let _ = fs::remove_file(entry.path());
                }
                continue;
            };
            let Some(key) = key_from_file(stem) else {
                continue;
            };
            let value = fs::read(entry.path()).map_err(Error::from).and_then(|b| {
                serde_json::from_slice(&b).map_err(|e| {
                    Error::internal(format!("{} is damaged: {e}", entry.path().display()))
                })
            });
            out.push((key, value));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

/// A temp file no write can still own: older than any write takes.
fn is_stale(entry: &fs::DirEntry) -> bool {
    entry
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > std::time::Duration::from_secs(60))
}

/// Creates a directory (and parents) readable only by its owner.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::internal(format!("cannot create {}: {e}", dir.display())))
}

/// Writes `name` in `dir` atomically and durably, mode 0600.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    write_renamed(dir, name, bytes, true)
}

/// The record files are replaced as `volbridge_base::fs` replaces any file (a hidden temp
/// file, renamed over the record); stale temp files are swept when a collection is listed.
fn write_renamed(dir: &Path, name: &str, bytes: &[u8], durable: bool) -> Result<()> {
    let target = dir.join(name);
    let written = if durable {
        volbridge_base::fs::write_atomic(&target, bytes)
    } else {
        volbridge_base::fs::write_atomic_volatile(&target, bytes)
    };
    written.map_err(|e| Error::internal(format!("cannot write {}: {e}", target.display())))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::internal(format!("cannot sync {}: {e}", dir.display())))
}

/// Safe keys are used as they are; anything else is hex-encoded behind `x-`, so no key can
/// name another directory, a hidden file or a temp file. Keys too long for a file name
/// (kubelet target paths) become `h-<sha256>`: their records must carry the key inside.
fn file_name(key: &str) -> String {
    let safe = !key.is_empty()
        && key.len() <= 200
        && !key.starts_with(['.', 'x', 'h'])
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    let hashed =
        key.len() == 66 && key.starts_with("h-") && key[2..].bytes().all(|b| b.is_ascii_hexdigit());
    if safe || hashed {
        format!("{key}.json")
    } else if key.len() <= 100 {
        let hex: String = key.bytes().map(|b| format!("{b:02x}")).collect();
        format!("x-{hex}.json")
    } else {
        format!("h-{}.json", super::sha256_hex(key))
    }
}

fn key_from_file(stem: &str) -> Option<String> {
    if stem.starts_with("h-") {
        // A hashed name is its own key: `file_name` maps it back to itself.
        return Some(stem.to_owned());
    }
    match stem.strip_prefix("x-") {
        Some(hex) => {
            if hex.len() % 2 != 0 {
                return None;
            }
            let bytes: Option<Vec<u8>> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
                .collect();
            String::from_utf8(bytes?).ok()
        }
        None => Some(stem.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp_root(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vb-store-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn long_keys_are_hashed_and_listed_by_their_file_name() {
        let store = StateStore::open(temp_root("long")).unwrap();
        let long = format!(
            "/var/lib/kubelet/pods/{}/volumes/kubernetes.io~csi/pvc-x/mount",
            "a".repeat(200)
        );
        store.put("publishes", &long, &"v").unwrap();
        assert_eq!(
            store.get::<String>("publishes", &long).unwrap().as_deref(),
            Some("v")
        );
        let listed = store.list::<String>("publishes").unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].0.starts_with("h-"));
        store.remove_volatile("publishes", &listed[0].0).unwrap();
        assert!(store.get::<String>("publishes", &long).unwrap().is_none());
        store.put_volatile("publishes", "h", &"short").unwrap();
        assert_eq!(store.list::<String>("publishes").unwrap()[0].0, "h");
    }

    #[test]
    fn round_trip_with_hostile_keys() {
        let root = temp_root("keys");
        let store = StateStore::open(&root).unwrap();
        for key in [
            "plain-key_1.2",
            "../../etc/passwd",
            "/abs",
            ".hidden",
            "x-looks-encoded",
            "ünï",
        ] {
            store.put("records", key, &key.to_owned()).unwrap();
            assert_eq!(
                store.get::<String>("records", key).unwrap().as_deref(),
                Some(key)
            );
        }
        let listed: Vec<String> = store
            .list::<String>("records")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(listed.len(), 6);
        for entry in fs::read_dir(root.join("records")).unwrap() {
            let p = entry.unwrap().path();
            assert_eq!(p.parent().unwrap(), root.join("records"));
            assert_eq!(p.metadata().unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert!(!root.join("etc").exists());
        store.remove("records", "../../etc/passwd").unwrap();
        store.remove("records", "never-there").unwrap();
        assert_eq!(
            store.get::<String>("records", "../../etc/passwd").unwrap(),
            None
        );
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn damaged_records_are_reported_and_temp_files_dropped() {
        let root = temp_root("damaged");
        let store = StateStore::open(&root).unwrap();
        store.put("intents", "a", &1u32).unwrap();
        fs::write(root.join("intents/b.json"), b"{torn").unwrap();
        fs::write(root.join("intents/.c.json.tmp"), b"half").unwrap();
        fs::write(root.join("intents/.d.json.tmp"), b"in flight").unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        fs::File::options()
            .write(true)
            .open(root.join("intents/.c.json.tmp"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let listed = store.list::<u32>("intents").unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed[1].1.is_err());
        assert!(
            !root.join("intents/.c.json.tmp").exists(),
            "a leftover goes"
        );
        assert!(
            root.join("intents/.d.json.tmp").exists(),
            "a young temp file may be a write in flight: it stays"
        );
        fs::remove_dir_all(&root).unwrap();
    }
}
