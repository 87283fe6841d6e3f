//! The daemon's configuration: a TOML file (default `/etc/volbridge/volbridge.toml` when it
//! exists), overridden by flags and environment. Every key has a default, so `volbridge
//! serve` needs nothing on a fresh machine.

use crate::error::{Error, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub const DEFAULT_CONFIG_FILE: &str = "/etc/volbridge/volbridge.toml";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/volbridge";
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/volbridge/volbridge.sock";
/// Name of the embedded local CSP among the backends.
pub const LOCAL_BACKEND: &str = "local";
pub const DEFAULT_CSI_DRIVER: &str = "csi.volbridge.io";

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub state_dir: PathBuf,
    pub admin_socket: PathBuf,
    /// Backend used when a request names none.
    pub default_backend: String,
    /// Size of volumes created without one (`1Gi`).
    pub default_volume_size: String,
    pub log: LogConfig,
    pub local_csp: LocalCspSection,
    pub limits: Limits,
    pub node: NodeSection,
    pub csi: CsiSection,
    /// Named CSP backends: string maps as in csp-api.md §1.1 (`backend`, `username`,
    /// `password`, `serviceName`, `servicePort`, …).
    pub backends: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter (`info`, `volbridge=debug`); `RUST_LOG` wins when set.
    pub level: String,
    /// `text` or `json`.
    pub format: String,
}

#[derive(Debug, Clone, Deserialize)]
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
}

#[derive(Debug, Clone, Deserialize)]
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

#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CsiSection {
    /// `unix:///path/csi.sock` (or a plain absolute path); none: CSI is not served.
    pub endpoint: Option<String>,
    /// `all`, `controller` or `node`.
    pub mode: String,
    pub driver_name: String,
    /// What NodeGetInfo reports and ControllerPublishVolume enforces per node; 0: no limit.
    pub max_volumes_per_node: i64,
}

impl Default for CsiSection {
    fn default() -> Self {
        CsiSection {
            endpoint: None,
            mode: "all".into(),
            driver_name: DEFAULT_CSI_DRIVER.into(),
            max_volumes_per_node: 0,
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
            log: LogConfig::default(),
            local_csp: LocalCspSection::default(),
            limits: Limits::default(),
            node: NodeSection::default(),
            csi: CsiSection::default(),
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
        if self.csi.max_volumes_per_node < 0 {
            return Err(Error::invalid(
                "csi.max_volumes_per_node",
                "must be 0 (no limit) or more",
            ));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_all_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert_eq!(c.default_backend, "local");
        assert!(c.local_csp.enabled);
        assert_eq!(c.csp_data_dir(), PathBuf::from("/var/lib/volbridge/csp"));
    }

    #[test]
    fn csi_section() {
        let c =
            Config::parse("[csi]\nendpoint = \"unix:///run/csi.sock\"\nmode = \"node\"\n").unwrap();
        assert_eq!(c.csi.endpoint.as_deref(), Some("unix:///run/csi.sock"));
        assert_eq!(c.csi.driver_name, DEFAULT_CSI_DRIVER);
        for bad in [
            "[csi]\nmode = \"both\"",
            "[csi]\nendpoint = \"relative.sock\"",
            "[csi]\ndriver_name = \"-bad-\"",
            "[csi]\nmax_volumes_per_node = -1",
        ] {
            assert!(Config::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn backends_and_errors() {
        let c = Config::parse(
            r#"
            default_backend = "array1"
            [backends.array1]
            backend = "10.0.0.5"
            username = "admin"
            password = "pw"
            "#,
        )
        .unwrap();
        assert_eq!(c.backends["array1"]["username"], "admin");
        for bad in [
            "typo_key = 1",
            "default_backend = \"nope\"",
            "default_volume_size = \"12Zi\"",
            "[local_csp]\nlisten = \"0.0.0.0:80\"",
            "[backends.local]\nbackend = \"x\"",
            "[node]\nprotocols = [\"smb\"]",
            "[node]\nlocal_roots = [\"rel\"]",
            "[node]\ntool_timeout_seconds = 0",
        ] {
            assert!(Config::parse(bad).is_err(), "{bad}");
        }
    }
}
