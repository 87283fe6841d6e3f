//! The Docker Volume Plugin front end (docker-volume-plugin.md): HTTP/1.1 on a unix socket
//! (or TCP), `POST /Plugin.Activate` and `POST /VolumeDriver.*`, turned into engine calls.
//! Engine error kinds become `Err` text in one place (`errors`); the mount-ID table lives
//! in the engine (`engine::mount_table`). No storage logic here.

mod errors;
mod handlers;
mod listing;
pub mod options;

pub use errors::{err_text, MAX_ERR};

use crate::engine::Engine;
use crate::error::{Error, Result};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::task::TaskTracker;
use volbridge_local_csp::refusals::{with_header_limit, RefusalBodies};
use volbridge_local_csp::to_the_end::{finish, run_to_the_end, FINISH_LIMIT};

/// The directory Docker looks for legacy plugin sockets in (compiled into Docker).
pub const PLUGINS_DIR: &str = "/run/docker/plugins";
/// Where spec and json discovery files go.
pub const SPEC_DIR: &str = "/etc/docker/plugins";
/// The managed plugin's `PropagatedMount`: mount points must lie under it.
pub const PROPAGATED_MOUNT: &str = "/mnt/volbridge";
pub const DEFAULT_DRIVER_NAME: &str = "volbridge";

/// How Docker finds the plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A socket Docker finds by name (`/run/docker/plugins/<name>.sock`), or in managed
    /// mode the plugin's socket inside its own namespace.
    Socket(PathBuf),
    /// A socket elsewhere, announced by `<spec_dir>/<name>.spec`.
    Spec { socket: PathBuf, spec_dir: PathBuf },
    /// Plain HTTP on TCP, announced by `<spec_dir>/<name>.json`.
    Tcp { addr: SocketAddr, spec_dir: PathBuf },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A host process (systemd unit): the legacy plugin protocol.
    Legacy,
    /// A managed (v2) plugin: Docker starts it; mount points lie under `PropagatedMount`.
    Managed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `local` for the embedded local CSP, `global` for CSPs reached over the network.
    Auto,
    Local,
    Global,
}

impl Scope {
    pub fn parse(s: &str) -> Result<Scope> {
        match s {
            "auto" => Ok(Scope::Auto),
            "local" => Ok(Scope::Local),
            "global" => Ok(Scope::Global),
            other => Err(Error::invalid(
                "docker.scope",
                format!("'{other}' is not one of auto, local, global"),
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DockerConfig {
    pub driver_name: String,
    pub listen: Listen,
    pub mode: Mode,
    pub scope: Scope,
    /// How long a volume stays mounted after its last Unmount.
    pub unstage_delay: Duration,
    /// Per-volume mount points (default `<state dir>/mounts`; managed: `/mnt/volbridge`).
    pub mount_base: Option<PathBuf>,
    /// One budget for every call; `None`: Docker's deadlines less a margin (Create and
    /// Mount 110 s, the others 50 s).
    pub call_budget: Option<Duration>,
    /// Group of the unix socket (a name from `/etc/group` or a numeric gid); `None`: the
    /// daemon's own group (root's when run as root). Mode is 0660 either way.
    pub socket_group: Option<String>,
}

impl DockerConfig {
    /// Refuses settings Docker could not work with.
    pub fn validate(&self) -> Result<()> {
        crate::engine::names::validate_name("docker.driver_name", &self.driver_name)?;
        if self.mode == Mode::Managed {
            let base = self
                .mount_base
                .clone()
                .unwrap_or_else(|| PathBuf::from(PROPAGATED_MOUNT));
            if !base.starts_with(PROPAGATED_MOUNT) {
                return Err(Error::invalid(
                    "docker.mount_base",
                    format!(
                        "{} is not under the plugin's PropagatedMount {PROPAGATED_MOUNT}: Docker could not see the mounts",
                        base.display()
                    ),
                ));
            }
        }
        if let Some(base) = &self.mount_base {
            crate::host::paths::validate_target("docker.mount_base", &base.display().to_string())?;
        }
        if let Some(group) = &self.socket_group {
            if matches!(self.listen, Listen::Tcp { .. }) {
                return Err(Error::invalid(
                    "docker.socket_group",
                    "the tcp listen mode has no socket file to give a group; remove socket_group or use the socket or spec listen mode",
                ));
            }
            check_group(group)?;
        }
        Ok(())
    }

    /// The mount base the engine uses.
    pub fn effective_mount_base(&self) -> Option<PathBuf> {
        match (self.mode, &self.mount_base) {
            (_, Some(b)) => Some(b.clone()),
            (Mode::Managed, None) => Some(PathBuf::from(PROPAGATED_MOUNT)),
            (Mode::Legacy, None) => None,
        }
    }

    /// The default legacy socket of a driver name.
    pub fn default_socket(driver_name: &str) -> PathBuf {
        Path::new(PLUGINS_DIR).join(format!("{driver_name}.sock"))
    }
}

/// The handlers' shared state.
#[derive(Clone)]
pub struct Docker {
    pub engine: Arc<Engine>,
    pub config: Arc<DockerConfig>,
    /// Opens once the start-up reconciliation has run; node calls wait for it.
    pub ready: tokio::sync::watch::Receiver<bool>,
    /// The default backend's volumes made by other front ends, for List.
    listing: Arc<listing::Listing>,
    /// Every request's work and the work that outlives its budget; waited for at stop.
    tasks: TaskTracker,
}

impl Docker {
    pub fn new(
        engine: Arc<Engine>,
        config: DockerConfig,
        ready: tokio::sync::watch::Receiver<bool>,
    ) -> Docker {
        Docker {
            engine,
            config: Arc::new(config),
            ready,
            listing: Arc::default(),
            tasks: TaskTracker::new(),
        }
    }

    /// The answer to Capabilities: constant for the life of the process.
    pub fn scope(&self) -> &'static str {
        match self.config.scope {
            Scope::Local => "local",
            Scope::Global => "global",
            Scope::Auto => {
                if self.engine.is_embedded(None).unwrap_or(true) {
                    "local"
                } else {
                    "global"
                }
            }
        }
    }
}

/// A bound listener and the files to remove when it closes (or is dropped unserved, when
/// the daemon fails to start).
pub struct Bound {
    listener: Listener,
    owned_files: OwnedFiles,
    pub shown: String,
}

/// The socket file and discovery file this process made; removed on drop.
struct OwnedFiles(Vec<PathBuf>);

impl Drop for OwnedFiles {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = std::fs::remove_file(f);
        }
    }
}

enum Listener {
    Unix(tokio::net::UnixListener),
    Tcp(tokio::net::TcpListener),
}

/// Binds the Docker endpoint (before any slow start-up work, so that Docker can connect at
/// once; calls queue until the router serves). A stale socket is replaced, a live one
/// refused; in `spec` and `tcp` modes a same-named socket in `/run/docker/plugins` (which
/// would shadow the file) is refused too. Discovery files are written atomically.
pub fn bind(config: &DockerConfig) -> Result<Bound> {
    let name = &config.driver_name;
    let shadow = DockerConfig::default_socket(name);
    let check_shadow = || -> Result<()> {
        if std::fs::symlink_metadata(&shadow).is_ok() {
            return Err(Error::precondition(format!(
                "{} exists and would shadow the plugin's discovery file; remove it or use the socket listen mode",
                shadow.display()
            )));
        }
        Ok(())
    };
    let group = config.socket_group.as_deref();
    match &config.listen {
        Listen::Socket(path) => {
            let listener = bind_unix(path, group)?;
            Ok(Bound {
                listener: Listener::Unix(listener),
                owned_files: OwnedFiles(vec![path.clone()]),
                shown: format!("unix://{}", path.display()),
            })
        }
        Listen::Spec { socket, spec_dir } => {
            check_shadow()?;
            let listener = bind_unix(socket, group)?;
            let spec = spec_dir.join(format!("{name}.spec"));
            let text = format!("unix://{}\n", socket.display());
            write_discovery(spec_dir, &spec, &text).inspect_err(|_| {
                let _ = std::fs::remove_file(socket);
            })?;
            Ok(Bound {
                listener: Listener::Unix(listener),
                owned_files: OwnedFiles(vec![socket.clone(), spec]),
                shown: format!("unix://{}", socket.display()),
            })
        }
        Listen::Tcp { addr, spec_dir } => {
            check_shadow()?;
            let std_listener = std::net::TcpListener::bind(addr)
                .map_err(|e| Error::internal(format!("cannot listen on {addr}: {e}")))?;
            std_listener
                .set_nonblocking(true)
                .map_err(|e| Error::internal(format!("cannot listen on {addr}: {e}")))?;
            let local = std_listener
                .local_addr()
                .map_err(|e| Error::internal(format!("cannot listen on {addr}: {e}")))?;
            let listener = tokio::net::TcpListener::from_std(std_listener)
                .map_err(|e| Error::internal(format!("cannot listen on {addr}: {e}")))?;
            let json = spec_dir.join(format!("{name}.json"));
            let body = serde_json::json!({"Name": name, "Addr": format!("tcp://{local}")});
            write_discovery(spec_dir, &json, &format!("{body}\n"))?;
            Ok(Bound {
                listener: Listener::Tcp(listener),
                owned_files: OwnedFiles(vec![json]),
                shown: format!("tcp://{local}"),
            })
        }
    }
}

fn bind_unix(path: &Path, group: Option<&str>) -> Result<tokio::net::UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(Error::precondition(format!(
                "{} exists and is not a socket; remove it or choose another --docker-socket",
                path.display()
            )));
        }
    }
    // Resolved before binding: an unknown group leaves no socket behind.
    let gid = group.map(resolve_group).transpose()?;
    // 0660, parent created, stale socket replaced, live one refused.
    let listener = crate::frontend::api::bind(path)?;
    if let Some(gid) = gid {
        // The socket is 0660 root:root until here: narrower, never wider, than asked for.
        let owned = rustix::fs::chown(path, None, Some(rustix::fs::Gid::from_raw(gid)));
        if let Err(e) = owned {
            let _ = std::fs::remove_file(path);
            return Err(Error::internal(format!(
                "cannot give {} the group {gid}: {e}",
                path.display()
            )));
        }
    }
    Ok(listener)
}

/// `docker.socket_group` as written: a numeric gid, or a group name (letters, digits,
/// `_`, `.`, `-`, an optional trailing `$`), at most 64 bytes.
fn check_group(group: &str) -> Result<()> {
    let invalid = |why: String| Err(Error::invalid("docker.socket_group", why));
    if group.is_empty() {
        return invalid("is empty; give a group name or a numeric gid, or leave it unset".into());
    }
    if group.bytes().all(|b| b.is_ascii_digit()) {
        return match group.parse::<u32>() {
            Ok(gid) if gid != u32::MAX => Ok(()),
            _ => invalid(format!("gid {group} is out of range")),
        };
    }
    let name = group.strip_suffix('$').unwrap_or(group);
    let shown: String = group
        .chars()
        .take(64)
        .collect::<String>()
        .escape_debug()
        .to_string();
    if group.len() > 64
        || name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        || name.starts_with('-')
    {
        return invalid(format!(
            "\"{shown}\" is neither a group name nor a numeric gid"
        ));
    }
    Ok(())
}

/// The gid of `docker.socket_group`: digits are the gid itself (it need not be listed);
/// a name is looked up in `/etc/group`, as Docker does for its own socket's group.
fn resolve_group(group: &str) -> Result<u32> {
    check_group(group)?;
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let text = std::fs::read_to_string(GROUP_FILE).map_err(|e| {
        Error::invalid(
            "docker.socket_group",
            format!("cannot read {GROUP_FILE} to find group \"{group}\": {e}; give a numeric gid instead"),
        )
    })?;
    gid_in_group_file(&text, group).ok_or_else(|| {
        Error::invalid(
            "docker.socket_group",
            format!("no group \"{group}\" in {GROUP_FILE}; create it (groupadd {group}) or give a numeric gid"),
        )
    })
}

const GROUP_FILE: &str = "/etc/group";

/// The gid of `name` in group(5) text (`name:password:gid:members`).
fn gid_in_group_file(text: &str, name: &str) -> Option<u32> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let mut fields = line.split(':');
            (fields.next()? == name)
                .then(|| fields.nth(1)?.trim().parse::<u32>().ok())
                .flatten()
        })
        .filter(|gid| *gid != u32::MAX)
}

/// Replaced durably (`volbridge_base::fs`), readable by all as Docker's own files are.
fn write_discovery(dir: &Path, path: &Path, text: &str) -> Result<()> {
    std::fs::create_dir_all(dir)
        .and_then(|()| volbridge_base::fs::write_atomic_mode(path, text.as_bytes(), 0o644))
        .map_err(|e| Error::internal(format!("cannot write {}: {e}", path.display())))
}

/// Serves Docker on a bound endpoint until `stop` resolves; removes the socket and
/// discovery files it made when it ends.
pub fn serve(
    docker: Docker,
    bound: Bound,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let tasks = docker.tasks.clone();
    let router = with_header_limit(
        run_to_the_end(
            handlers::router(docker),
            tasks.clone(),
            errors::refusal_body,
        ),
        errors::refusal_body,
    );
    let Bound {
        listener,
        owned_files,
        shown,
    } = bound;
    tokio::spawn(async move {
        let result = match listener {
            Listener::Unix(l) => {
                let l = RefusalBodies::new(l, errors::refusal_body);
                axum::serve(l, router).with_graceful_shutdown(stop).await
            }
            Listener::Tcp(l) => {
                let l = RefusalBodies::new(l, errors::refusal_body);
                axum::serve(l, router).with_graceful_shutdown(stop).await
            }
        };
        if let Err(e) = result {
            tracing::error!(endpoint = %shown, error = %e, "Docker endpoint failed");
        }
        finish(&tasks, FINISH_LIMIT, "Docker endpoint").await;
        drop(owned_files);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_groups() {
        for good in ["docker", "0", "999", "svc_docker", "a.b-c", "machine$"] {
            assert!(check_group(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "4294967295",
            "99999999999",
            "-x",
            "a b",
            "a:b",
            "../x",
            "$",
        ] {
            let e = check_group(bad).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("docker.socket_group"), "{bad}");
        }
        let file = "# comment\nroot:x:0:\ndocker:x:998:alice,bob\nbroken:x:notanumber:\n";
        assert_eq!(gid_in_group_file(file, "docker"), Some(998));
        assert_eq!(gid_in_group_file(file, "root"), Some(0));
        assert_eq!(gid_in_group_file(file, "dock"), None);
        assert_eq!(gid_in_group_file(file, "broken"), None);
        assert_eq!(resolve_group("4242").unwrap(), 4242);
        let e = resolve_group("no-such-group-vb").unwrap_err();
        assert!(
            e.message
                .contains("no group \"no-such-group-vb\" in /etc/group"),
            "{}",
            e.message
        );
    }

    #[test]
    fn tcp_has_no_socket_group() {
        let config = DockerConfig {
            driver_name: DEFAULT_DRIVER_NAME.into(),
            listen: Listen::Tcp {
                addr: "127.0.0.1:0".parse().unwrap(),
                spec_dir: SPEC_DIR.into(),
            },
            mode: Mode::Legacy,
            scope: Scope::Auto,
            unstage_delay: Duration::ZERO,
            mount_base: None,
            call_budget: None,
            socket_group: Some("docker".into()),
        };
        let e = config.validate().unwrap_err();
        assert_eq!(e.field.as_deref(), Some("docker.socket_group"));
    }
}
