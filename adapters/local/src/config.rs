//! Configuration of the embedded CSP and its generated password.

use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::pool::PoolChoice;

/// Default token lifetime (csp-api.md A7).
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(1800);

#[derive(Clone)]
pub struct LocalCspConfig {
    pub data_dir: PathBuf,
    pub username: String,
    pub password: String,
    pub token_ttl: Duration,
    /// Where images live (`auto` by default; see [`crate::pool`]).
    pub pool: PoolChoice,
    /// The most the volumes' sizes may add up to, as a multiple of the pool's capacity
    /// (thin provisioning); a create beyond it is refused as out of space. 0: no limit.
    pub overcommit: f64,
    /// The size an image pool starts at (it grows on demand, never past what the host's
    /// filesystem can back).
    pub pool_initial_size: u64,
    /// Volumes served over the network (iSCSI through LIO, NVMe/TCP through nvmet); empty:
    /// only `local`, and the kernel's target configuration is never touched.
    pub export: crate::export::ExportConfig,
}

/// An image pool starts at 16 GiB (less on a host with less room).
pub const DEFAULT_POOL_INITIAL_SIZE: u64 = 16 << 30;

/// Default over-commit: volumes may promise a hundred times the pool's capacity (a 1 TiB
/// thin volume on a small disk is ordinary; a petabyte is a typo).
pub const DEFAULT_OVERCOMMIT: f64 = 100.0;

impl LocalCspConfig {
    pub fn new(
        data_dir: impl Into<PathBuf>,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        LocalCspConfig {
            data_dir: data_dir.into(),
            username: username.into(),
            password: password.into(),
            token_ttl: DEFAULT_TOKEN_TTL,
            pool: PoolChoice::Auto,
            overcommit: DEFAULT_OVERCOMMIT,
            pool_initial_size: DEFAULT_POOL_INITIAL_SIZE,
            export: crate::export::ExportConfig {
                configfs: PathBuf::from("/sys/kernel/config"),
                ..Default::default()
            },
        }
    }
}

impl std::fmt::Debug for LocalCspConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCspConfig")
            .field("data_dir", &self.data_dir)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("token_ttl", &self.token_ttl)
            .field("pool", &self.pool)
            .field("overcommit", &self.overcommit)
            .field("pool_initial_size", &self.pool_initial_size)
            .field("export", &self.export)
            .finish()
    }
}

/// Reads the password from `path`, or generates a random one (32 hex chars) and writes it
/// atomically with mode 0600 (parent dirs created 0700).
pub fn load_or_generate_password(path: &Path) -> io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&parent)?;
    let password = crate::ids::random_hex(16);
    crate::files::write_atomic(path, format!("{password}\n").as_bytes())?;
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn password_is_generated_once_with_private_modes() {
        let root = std::env::temp_dir().join(format!("vb-pw-{}", crate::ids::new_id()));
        let path = root.join("a/b/csp-password");
        let p1 = load_or_generate_password(&path).unwrap();
        assert_eq!(p1.len(), 32);
        assert!(p1.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(load_or_generate_password(&path).unwrap(), p1);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(root.join("a/b"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
        assert_eq!(std::fs::read_dir(root.join("a/b")).unwrap().count(), 1);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn debug_hides_the_password() {
        let c = LocalCspConfig::new("/x", "admin", "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(c.token_ttl, DEFAULT_TOKEN_TTL);
    }
}
