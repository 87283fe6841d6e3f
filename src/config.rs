//! The daemon's configuration: a TOML file (default `/etc/volbridge/volbridge.toml` when it
//! exists), overridden by flags and environment. Every key has a default, so `volbridge
//! serve` needs nothing on a fresh machine.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use volbridge_base::redact::is_secret_key;
use volbridge_local_csp::PoolChoice;

pub const DEFAULT_CONFIG_FILE: &str = "/etc/volbridge/volbridge.toml";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/volbridge";
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/volbridge/volbridge.sock";
/// Name of the embedded local CSP among the backends.
pub const LOCAL_BACKEND: &str = "local";
pub const DEFAULT_CSI_DRIVER: &str = "csi.volbridge.io";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub state_dir: PathBuf,
    pub admin_socket: PathBuf,
    /// Backend used when a request names none.
    pub default_backend: String,
    /// Size of volumes created without one (`1Gi`).
    pub default_volume_size: String,
    /// A TCP address serving `/metrics`, `/healthz` and `/readyz` (nothing else) for
    /// Prometheus and kubelet probes; off by default.
    pub metrics_listen: Option<SocketAddr>,
    pub log: LogConfig,
    pub local_csp: LocalCspSection,
    pub limits: Limits,
    pub node: NodeSection,
    pub csi: CsiSection,
    pub docker: DockerSection,
    /// Named CSP backends: string maps as in csp-api.md §1.1 (`backend`, `username`,
    /// `password`, `serviceName`, `servicePort`, …).
    pub backends: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter (`info`, `volbridge=debug`); `RUST_LOG` wins when set.
    pub level: String,
    /// `text` or `json`.
    pub format: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalCspSection {
    pub enabled: bool,
    /// Default: `<state_dir>/csp`.
    pub data_dir: Option<PathBuf>,
    /// Loopback address; port 0 picks a free one at each start.
    pub listen: SocketAddr,
    pub username: String,
    /// Default: generated on first start and kept in `<state_dir>/local-csp.password` (0600).
    pub password: Option<String>,
    /// Where volume images live: `auto` (the data dir when its filesystem reflinks, else an
    /// xfs or btrfs image pool under it), `dir`, `xfs-image` or `btrfs-image`.
    pub pool: PoolChoice,
    /// How many times its capacity the pool's volumes may promise (0: no limit).
    pub overcommit: f64,
    /// The size an image pool starts at; it grows on demand.
    pub pool_initial_size: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Concurrent CSP calls per backend.
    pub max_inflight_per_backend: usize,
    /// How long CLI/Docker/Flex callers wait for a busy volume.
    pub guard_wait_seconds: u64,
    /// How long they wait for a clone or snapshot copy.
    pub copy_wait_seconds: u64,
    /// Runtime worker threads (0: one per core, at most 4).
    pub worker_threads: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSection {
    /// Limit for each external tool (mkfs, e2fsck, resize2fs, iscsiadm, nvme).
    pub tool_timeout_seconds: u64,
    /// Directories `local` volumes may be attached from, besides the embedded CSP's data
    /// dir (a shared filesystem where a standalone local CSP keeps its files).
    pub local_roots: Vec<PathBuf>,
    /// How often the reconciler compares records with the kernel.
    pub reconcile_seconds: u64,
    /// Access protocols this node is expected to use (`volbridge doctor` checks their
    /// tools): `local`, `iscsi`, `nvmetcp`, `fc`.
    pub protocols: Vec<String>,
}

/// The CSI gRPC front end; off unless an endpoint is given.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CsiSection {
    /// `unix:///path/csi.sock` (or a plain absolute path); none: CSI is not served.
    pub endpoint: Option<String>,
    /// `all`, `controller` or `node`.
    pub mode: String,
    pub driver_name: String,
    /// What NodeGetInfo reports and ControllerPublishVolume enforces per node; 0: no limit.
    pub max_volumes_per_node: i64,
    /// `generic` (Kubernetes and any CO that follows the spec) or `swarm` (Docker Swarm
    /// cluster volumes: the rules of `frontend::csi::orchestrator`).
    pub orchestrator: String,
}

/// The Docker volume plugin front end; off unless enabled (`--docker`, `--docker-socket`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DockerSection {
    pub enabled: bool,
    /// The name users pass to `docker volume create -d`.
    pub driver_name: String,
    /// `socket` (Docker finds `/run/docker/plugins/<name>.sock`), `spec` (a socket
    /// elsewhere, announced by `<spec_dir>/<name>.spec`) or `tcp` (`<name>.json`).
    pub listen: String,
    /// Default: `/run/docker/plugins/<driver_name>.sock`.
    pub socket: Option<PathBuf>,
    /// Group of the socket (mode 0660): a name from `/etc/group` or a numeric gid; unset:
    /// the daemon's own group (root's).
    pub socket_group: Option<String>,
    pub tcp_addr: Option<SocketAddr>,
    pub spec_dir: PathBuf,
    /// `legacy` (a host process) or `managed` (inside a Docker managed plugin).
    pub mode: String,
    /// `auto` (local for the embedded CSP, global for remote CSPs), `local` or `global`.
    pub scope: String,
    /// How long a volume stays mounted after its last Unmount (copy-up + start reuse it).
    pub unstage_delay_seconds: u64,
    /// Per-volume mount points; default `<state_dir>/mounts` (managed: `/mnt/volbridge`).
    pub mount_base: Option<PathBuf>,
    /// One budget for every call in seconds; 0: 110 s for Create/Mount, 50 s for the
    /// others (managed: 25 s, or `VOLBRIDGE_CALL_BUDGET`).
    pub call_budget_seconds: u64,
}

impl Default for DockerSection {
    fn default() -> Self {
        DockerSection {
            enabled: false,
            driver_name: "volbridge".into(),
            listen: "socket".into(),
            socket: None,
            socket_group: None,
            tcp_addr: None,
            spec_dir: "/etc/docker/plugins".into(),
            mode: "legacy".into(),
            scope: "auto".into(),
            unstage_delay_seconds: 5,
            mount_base: None,
            call_budget_seconds: 0,
        }
    }
}

impl DockerSection {
    /// The front end's settings; refuses combinations Docker could not use.
    pub fn to_frontend(&self) -> Result<crate::frontend::docker::DockerConfig> {
        use crate::frontend::docker::{DockerConfig, Listen, Mode, Scope};
        let mode = match self.mode.as_str() {
            "legacy" => Mode::Legacy,
            "managed" => Mode::Managed,
            other => {
                return Err(Error::invalid(
                    "docker.mode",
                    format!("'{other}' is not one of legacy, managed"),
                ))
            }
        };
        let socket = self
            .socket
            .clone()
            .unwrap_or_else(|| DockerConfig::default_socket(&self.driver_name));
        if !socket.is_absolute() {
            return Err(Error::invalid(
                "docker.socket",
                format!("'{}' is not an absolute path", socket.display()),
            ));
        }
        let listen = match self.listen.as_str() {
            "socket" => Listen::Socket(socket),
            "spec" => Listen::Spec {
                socket,
                spec_dir: self.spec_dir.clone(),
            },
            "tcp" => Listen::Tcp {
                addr: self.tcp_addr.ok_or_else(|| {
                    Error::invalid("docker.tcp_addr", "the tcp listen mode needs an address")
                })?,
                spec_dir: self.spec_dir.clone(),
            },
            other => {
                return Err(Error::invalid(
                    "docker.listen",
                    format!("'{other}' is not one of socket, spec, tcp"),
                ))
            }
        };
        let from_env = std::env::var("VOLBRIDGE_CALL_BUDGET")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|v| *v > 0);
        let budget = match (self.call_budget_seconds, from_env) {
            (0, None) => None,
            (0, Some(e)) => Some(e),
            (s, _) => Some(s),
        };
        let config = DockerConfig {
            driver_name: self.driver_name.clone(),
            listen,
            mode,
            scope: Scope::parse(&self.scope)?,
            unstage_delay: std::time::Duration::from_secs(self.unstage_delay_seconds),
            mount_base: self.mount_base.clone(),
            call_budget: budget.map(std::time::Duration::from_secs),
            socket_group: self.socket_group.clone(),
        };
        config.validate()?;
        Ok(config)
    }
}

impl Default for CsiSection {
    fn default() -> Self {
        CsiSection {
            endpoint: None,
            mode: "all".into(),
            driver_name: DEFAULT_CSI_DRIVER.into(),
            max_volumes_per_node: 0,
            orchestrator: "generic".into(),
        }
    }
}

impl Default for NodeSection {
    fn default() -> Self {
        NodeSection {
            tool_timeout_seconds: 120,
            local_roots: Vec::new(),
            reconcile_seconds: 60,
            protocols: vec!["local".into()],
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            state_dir: DEFAULT_STATE_DIR.into(),
            admin_socket: DEFAULT_ADMIN_SOCKET.into(),
            default_backend: LOCAL_BACKEND.into(),
            default_volume_size: "1Gi".into(),
            metrics_listen: None,
            log: LogConfig::default(),
            local_csp: LocalCspSection::default(),
            limits: Limits::default(),
            node: NodeSection::default(),
            csi: CsiSection::default(),
            docker: DockerSection::default(),
            backends: BTreeMap::new(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

impl Default for LocalCspSection {
    fn default() -> Self {
        LocalCspSection {
            enabled: true,
            data_dir: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            username: "volbridge".into(),
            password: None,
            pool: PoolChoice::Auto,
            overcommit: volbridge_local_csp::DEFAULT_OVERCOMMIT,
            pool_initial_size: "16Gi".into(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_inflight_per_backend: 64,
            guard_wait_seconds: 30,
            copy_wait_seconds: 300,
            worker_threads: 0,
        }
    }
}

impl Config {
    /// Reads `path`, or the default file when it exists, or the defaults.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let (path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Config::parse(&text).map_err(|e| e.context(path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                Ok(Config::default())
            }
            Err(e) => Err(Error::invalid(
                "config",
                format!("cannot read {}: {e}", path.display()),
            )),
        }
    }

    pub fn parse(text: &str) -> Result<Config> {
        let config: Config =
            toml::from_str(text).map_err(|e| Error::invalid("config", e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<()> {
        crate::engine::size::parse_size("default_volume_size", &self.default_volume_size)?;
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(Error::invalid("log.format", "must be 'text' or 'json'"));
        }
        if self.local_csp.enabled && !self.local_csp.listen.ip().is_loopback() {
            return Err(Error::invalid(
                "local_csp.listen",
                "the embedded CSP serves plain HTTP and must listen on a loopback address",
            ));
        }
        crate::engine::size::parse_size(
            "local_csp.pool_initial_size",
            &self.local_csp.pool_initial_size,
        )?;
        if !(self.local_csp.overcommit >= 0.0 && self.local_csp.overcommit.is_finite()) {
            return Err(Error::invalid(
                "local_csp.overcommit",
                "must be a number of times the pool's capacity, 0 or more (0: no limit)",
            ));
        }
        if self.limits.max_inflight_per_backend == 0 {
            return Err(Error::invalid(
                "limits.max_inflight_per_backend",
                "must be at least 1",
            ));
        }
        if self.node.tool_timeout_seconds == 0 || self.node.reconcile_seconds == 0 {
            return Err(Error::invalid(
                "node",
                "tool_timeout_seconds and reconcile_seconds must be at least 1",
            ));
        }
        for p in &self.node.protocols {
            if !matches!(p.as_str(), "local" | "iscsi" | "nvmetcp" | "fc") {
                return Err(Error::invalid(
                    "node.protocols",
                    format!("'{p}' is not one of local, iscsi, nvmetcp, fc"),
                ));
            }
        }
        for root in &self.node.local_roots {
            if !root.is_absolute() {
                return Err(Error::invalid(
                    "node.local_roots",
                    format!("'{}' is not an absolute path", root.display()),
                ));
            }
        }
        if !matches!(self.csi.mode.as_str(), "all" | "controller" | "node") {
            return Err(Error::invalid(
                "csi.mode",
                format!("'{}' is not one of all, controller, node", self.csi.mode),
            ));
        }
        if let Some(e) = &self.csi.endpoint {
            crate::frontend::csi::Endpoint::parse(e)?;
        }
        crate::frontend::csi::validate_driver_name(&self.csi.driver_name)?;
        crate::frontend::csi::Orchestrator::parse(&self.csi.orchestrator)?;
        if self.csi.max_volumes_per_node < 0 {
            return Err(Error::invalid(
                "csi.max_volumes_per_node",
                "must be 0 (no limit) or more",
            ));
        }
        if self.docker.enabled {
            self.docker.to_frontend()?;
        }
        for name in self.backends.keys() {
            crate::engine::names::validate_name("backends", name)?;
            if name == LOCAL_BACKEND && self.local_csp.enabled {
                return Err(Error::invalid(
                    "backends",
                    "'local' is the embedded CSP; give your backend another name",
                ));
            }
        }
        let known = self.backends.contains_key(&self.default_backend)
            || (self.local_csp.enabled && self.default_backend == LOCAL_BACKEND);
        if !known {
            return Err(Error::invalid(
                "default_backend",
                format!("'{}' is not a configured backend", self.default_backend),
            ));
        }
        Ok(())
    }

    pub fn csp_data_dir(&self) -> PathBuf {
        self.local_csp
            .data_dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("csp"))
    }
}

/// An export address as users write it: `ADDRESS` (the protocol's port) or
/// `ADDRESS:PORT`, IPv6 in brackets. A wildcard address cannot be told to nodes.
pub fn export_address(s: &str, default_port: u16) -> std::result::Result<SocketAddr, String> {
    let s = s.trim();
    let addr = s
        .parse::<SocketAddr>()
        .or_else(|_| {
            s.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .map(|ip| SocketAddr::new(ip, default_port))
        })
        .map_err(|_| format!("'{s}' is not an IP address, with or without :PORT"))?;
    if addr.ip().is_unspecified() {
        return Err(format!(
            "'{s}' is a wildcard; give the address nodes connect to (it is what publish tells them)"
        ));
    }
    if addr.port() == 0 {
        return Err(format!("'{s}': port 0 cannot be told to nodes"));
    }
    Ok(addr)
}

/// Values whose key names a secret (`volbridge_base::redact::is_secret_key`) print masked.
fn mask(value: &mut toml::Value) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                if is_secret_key(k) && !matches!(v, toml::Value::Table(_)) {
                    *v = toml::Value::String("********".into());
                } else {
                    mask(v);
                }
            }
        }
        toml::Value::Array(items) => items.iter_mut().for_each(mask),
        _ => {}
    }
}

impl Config {
    /// The configuration as a TOML value with every secret masked.
    fn masked(&self) -> Result<toml::Value> {
        let mut value = toml::Value::try_from(self)
            .map_err(|e| Error::internal(format!("cannot render the configuration: {e}")))?;
        mask(&mut value);
        Ok(value)
    }

    /// `volbridge config show`: a file `volbridge serve --config` would accept.
    pub fn shown_toml(&self) -> Result<String> {
        toml::to_string(&self.masked()?)
            .map_err(|e| Error::internal(format!("cannot render the configuration: {e}")))
    }

    pub fn shown_json(&self) -> Result<String> {
        let mut text = serde_json::to_string_pretty(&self.masked()?)
            .map_err(|e| Error::internal(format!("cannot render the configuration: {e}")))?;
        text.push('\n');
        Ok(text)
    }
}

#[cfg(test)]
mod tests;
