//! The durable node state store: one JSON document per record under the state dir, written
//! atomically (temp file, fsync, rename, fsync dir) so a crash leaves the old or the new
//! record, never a torn one. Keys are mapped to file names without trusting them.

use crate::error::{Error, Result};
use serde::{de::DeserializeOwned, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

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
                // Leftover temp files of an interrupted write: the record itself is intact.
                if name.starts_with('.') && name.ends_with(".tmp") {
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
    let tmp = dir.join(format!(".{name}.tmp"));
    let target = dir.join(name);
    let result = (|| -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, &target)?;
        File::open(dir)?.sync_all()
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::internal(format!("cannot write {}: {e}", target.display()))
    })
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::internal(format!("cannot sync {}: {e}", dir.display())))
}

/// Safe keys are used as they are; anything else is hex-encoded behind `x-`, so no key can
/// name another directory, a hidden file or a temp file.
fn file_name(key: &str) -> String {
    let safe = !key.is_empty()
        && key.len() <= 200
        && !key.starts_with(['.', 'x'])
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if safe {
        format!("{key}.json")
    } else {
        let hex: String = key.bytes().map(|b| format!("{b:02x}")).collect();
        format!("x-{hex}.json")
    }
}

fn key_from_file(stem: &str) -> Option<String> {
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
        let listed = store.list::<u32>("intents").unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed[1].1.is_err());
        assert!(!root.join("intents/.c.json.tmp").exists());
        fs::remove_dir_all(&root).unwrap();
    }
}
