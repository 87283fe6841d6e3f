//! The Docker Volume Plugin front end (docker-volume-plugin.md): HTTP/1.1 on a unix socket
//! (or TCP), `POST /Plugin.Activate` and `POST /VolumeDriver.*`, turned into engine calls.
//! Engine error kinds become `Err` text in one place (`errors`); the mount-ID table lives
//! in the engine (`engine::docker_mounts`). No storage logic here.

mod errors;
mod handlers;
pub mod options;

pub use errors::{err_text, MAX_ERR};

use crate::engine::Engine;
use crate::error::{Error, Result};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

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
    match &config.listen {
        Listen::Socket(path) => {
            let listener = bind_unix(path)?;
            Ok(Bound {
                listener: Listener::Unix(listener),
                owned_files: OwnedFiles(vec![path.clone()]),
                shown: format!("unix://{}", path.display()),
            })
        }
        Listen::Spec { socket, spec_dir } => {
            check_shadow()?;
            let listener = bind_unix(socket)?;
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

fn bind_unix(path: &Path) -> Result<tokio::net::UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(Error::precondition(format!(
                "{} exists and is not a socket; remove it or choose another --docker-socket",
                path.display()
            )));
        }
    }
    // 0660, parent created, stale socket replaced, live one refused.
    crate::frontend::api::bind(path)
}

/// Temp file + rename in the same directory.
fn write_discovery(dir: &Path, path: &Path, text: &str) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::internal(format!("cannot create {}: {e}", dir.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::internal(format!("cannot write {}: {e}", path.display()))
        })
}

/// Serves Docker on a bound endpoint until `stop` resolves; removes the socket and
/// discovery files it made when it ends.
pub fn serve(
    docker: Docker,
    bound: Bound,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let router = handlers::router(docker);
    let Bound {
        listener,
        owned_files,
        shown,
    } = bound;
    tokio::spawn(async move {
        let result = match listener {
            Listener::Unix(l) => axum::serve(l, router).with_graceful_shutdown(stop).await,
            Listener::Tcp(l) => axum::serve(l, router).with_graceful_shutdown(stop).await,
        };
        if let Err(e) = result {
            tracing::error!(endpoint = %shown, error = %e, "Docker endpoint failed");
        }
        drop(owned_files);
    })
}
