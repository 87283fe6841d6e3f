//! `/etc/volbridge/flex.toml`: the driver's own configuration, read by every command (`init`
//! included) without contacting the daemon. A missing file means all defaults; a malformed
//! one is a `Failure` that names the file, so a typo does not silently change the mode.

use crate::errors::Failure;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_CONFIG: &str = "/etc/volbridge/flex.toml";
pub const DEFAULT_SOCKET: &str = "/run/volbridge/volbridge.sock";
pub const DEFAULT_LOG: &str = "/var/log/volbridge/flex.log";
/// Attachable mode: where `attach` pins a volume on this node (one bind mount per PV name).
pub const DEFAULT_ATTACH_DIR: &str = "/run/volbridge/flex/attached";

/// Overrides the config file path (tests, unusual layouts).
pub const ENV_CONFIG: &str = "VOLBRIDGE_FLEX_CONFIG";
/// Overrides the admin socket path (the same variable the CLI reads).
pub const ENV_SOCKET: &str = "VOLBRIDGE_SOCKET";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Non-attachable (default): attach, format and mount inside `mount`.
    Mount,
    /// Attachable: attach / waitforattach / mountdevice, detach by PV name.
    Attach,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsGroup {
    /// kubelet applies the pod's fsGroup (recursively) after `mount`.
    Kubelet,
    /// volbridge gives the volume root the gid and `g+rwxs` at mount, read-write only.
    Volbridge,
    Off,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budgets {
    pub connect: Duration,
    pub mount: Duration,
    pub mountdevice: Duration,
    pub attach: Duration,
    pub detach: Duration,
    pub expandvolume: Duration,
    pub expandfs: Duration,
    pub unmount: Duration,
    pub unmountdevice: Duration,
    pub isattached: Duration,
    pub waitforattach: Duration,
}

impl Budgets {
    /// How long a command waits for the daemon's answer (not counting the connect).
    pub fn of(&self, command: &str) -> Duration {
        match command {
            "mount" => self.mount,
            "mountdevice" => self.mountdevice,
            "attach" => self.attach,
            "detach" => self.detach,
            "expandvolume" => self.expandvolume,
            "expandfs" => self.expandfs,
            "unmount" => self.unmount,
            "unmountdevice" => self.unmountdevice,
            "isattached" => self.isattached,
            "waitforattach" => self.waitforattach,
            _ => self.mount,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file read (it may not exist).
    pub path: PathBuf,
    pub mode: Mode,
    pub fs_group: FsGroup,
    pub socket: PathBuf,
    pub log_file: PathBuf,
    pub debug: bool,
    /// This node's Kubernetes Node name (attachable mode); default: the daemon's hostname.
    pub node_name: Option<String>,
    pub attach_dir: PathBuf,
    pub budgets: Budgets,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct File {
    mode: Option<String>,
    /// Shorthand for `mode = "attach"` (`attach = true`) or `"mount"` (`false`).
    attach: Option<bool>,
    fs_group: Option<String>,
    socket: Option<PathBuf>,
    log_file: Option<PathBuf>,
    log_level: Option<String>,
    node_name: Option<String>,
    attach_dir: Option<PathBuf>,
    budgets: BudgetFile,
}

/// Seconds; per command, or for the groups of spec §9 (`mount` also sets `mountdevice`,
/// `attach`, `detach`, `expandvolume`, `expandfs` unless they are given; `unmount` also sets
/// `unmountdevice`).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct BudgetFile {
    connect: Option<u64>,
    mount: Option<u64>,
    mountdevice: Option<u64>,
    attach: Option<u64>,
    detach: Option<u64>,
    expandvolume: Option<u64>,
    expandfs: Option<u64>,
    unmount: Option<u64>,
    unmountdevice: Option<u64>,
    isattached: Option<u64>,
    waitforattach: Option<u64>,
}

impl Config {
    /// The config file named by `VOLBRIDGE_FLEX_CONFIG`, or the default one.
    pub fn load() -> Result<Config, Failure> {
        let path = std::env::var_os(ENV_CONFIG)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                return Err(Failure::new(
                    "invalid config",
                    format!("cannot read {}: {e}", path.display()),
                ))
            }
        };
        let socket_env = std::env::var_os(ENV_SOCKET)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from);
        Config::parse(&path, &text, socket_env)
    }

    /// After a failed [`Config::load`]: the `log_file` of the config file if it still reads
    /// as TOML with an absolute `log_file` (a bad `mode` should not move the log).
    pub fn fallback_log_file() -> Option<PathBuf> {
        let path = std::env::var_os(ENV_CONFIG)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
        let text = std::fs::read_to_string(path).ok()?;
        let table: toml::Table = toml::from_str(&text).ok()?;
        let log = PathBuf::from(table.get("log_file")?.as_str()?);
        log.is_absolute().then_some(log)
    }

    pub fn parse(path: &Path, text: &str, socket_env: Option<PathBuf>) -> Result<Config, Failure> {
        let bad = |detail: String| {
            Failure::new("invalid config", format!("{}: {detail}", path.display()))
        };
        let file: File = toml::from_str(text).map_err(|e| bad(one_line(&e.to_string())))?;
        let mode = match (file.mode.as_deref(), file.attach) {
            (None | Some("mount"), None | Some(false)) => Mode::Mount,
            (None | Some("attach"), Some(true)) | (Some("attach"), None) => Mode::Attach,
            (Some(m @ ("mount" | "attach")), Some(a)) => {
                return Err(bad(format!("mode = \"{m}\" contradicts attach = {a}")))
            }
            (Some(other), _) => {
                return Err(bad(format!(
                    "mode = \"{other}\": use \"mount\" (non-attachable, the default) or \"attach\""
                )))
            }
        };
        let fs_group = match file.fs_group.as_deref() {
            None | Some("kubelet") => FsGroup::Kubelet,
            Some("volbridge") => FsGroup::Volbridge,
            Some("off") => FsGroup::Off,
            Some(other) => {
                return Err(bad(format!(
                    "fs_group = \"{other}\": use \"kubelet\", \"volbridge\" or \"off\""
                )))
            }
        };
        let debug = match file.log_level.as_deref() {
            None | Some("info") | Some("warn") | Some("error") => false,
            Some("debug") | Some("trace") => true,
            Some(other) => {
                return Err(bad(format!(
                    "log_level = \"{other}\": use \"info\" or \"debug\""
                )))
            }
        };
        for (key, p) in [
            ("socket", &file.socket),
            ("log_file", &file.log_file),
            ("attach_dir", &file.attach_dir),
        ] {
            if let Some(p) = p {
                if !p.is_absolute() {
                    return Err(bad(format!(
                        "{key} = \"{}\" must be an absolute path",
                        p.display()
                    )));
                }
            }
        }
        let node_name = file.node_name.filter(|n| !n.trim().is_empty());
        let b = &file.budgets;
        let secs = |key: &str, v: Option<u64>, default: u64| -> Result<Duration, Failure> {
            match v {
                Some(0) => Err(bad(format!("budgets.{key} must be at least 1 second"))),
                Some(s) => Ok(Duration::from_secs(s)),
                None => Ok(Duration::from_secs(default)),
            }
        };
        let mount = b.mount.unwrap_or(300);
        let unmount = b.unmount.unwrap_or(120);
        let budgets = Budgets {
            connect: secs("connect", b.connect, 10)?,
            mount: secs("mount", b.mount, 300)?,
            mountdevice: secs("mountdevice", b.mountdevice, mount)?,
            attach: secs("attach", b.attach, mount)?,
            detach: secs("detach", b.detach, mount)?,
            expandvolume: secs("expandvolume", b.expandvolume, mount)?,
            expandfs: secs("expandfs", b.expandfs, mount)?,
            unmount: secs("unmount", b.unmount, 120)?,
            unmountdevice: secs("unmountdevice", b.unmountdevice, unmount)?,
            isattached: secs("isattached", b.isattached, 30)?,
            waitforattach: secs("waitforattach", b.waitforattach, 540)?,
        };
        if budgets.waitforattach >= Duration::from_secs(600) {
            return Err(bad(
                "budgets.waitforattach must stay below kubelet's 600 s kill".to_owned(),
            ));
        }
        Ok(Config {
            path: path.to_path_buf(),
            mode,
            fs_group,
            socket: socket_env
                .or(file.socket)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
            log_file: file.log_file.unwrap_or_else(|| PathBuf::from(DEFAULT_LOG)),
            debug,
            node_name,
            attach_dir: file
                .attach_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_ATTACH_DIR)),
            budgets,
        })
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, Failure> {
        Config::parse(Path::new("/etc/volbridge/flex.toml"), text, None)
    }

    #[test]
    fn an_empty_file_is_all_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.mode, Mode::Mount);
        assert_eq!(c.fs_group, FsGroup::Kubelet);
        assert_eq!(c.socket, Path::new(DEFAULT_SOCKET));
        assert_eq!(c.log_file, Path::new(DEFAULT_LOG));
        assert_eq!(c.budgets.connect, Duration::from_secs(10));
        assert_eq!(c.budgets.of("mount"), Duration::from_secs(300));
        assert_eq!(c.budgets.of("unmountdevice"), Duration::from_secs(120));
        assert_eq!(c.budgets.of("isattached"), Duration::from_secs(30));
        assert_eq!(c.budgets.of("waitforattach"), Duration::from_secs(540));
    }

    #[test]
    fn mode_and_its_shorthand() {
        assert_eq!(parse("mode = \"attach\"").unwrap().mode, Mode::Attach);
        assert_eq!(parse("attach = true").unwrap().mode, Mode::Attach);
        assert_eq!(parse("attach = false").unwrap().mode, Mode::Mount);
        let e = parse("mode = \"mount\"\nattach = true").unwrap_err();
        assert!(e.message().contains("contradicts"), "{}", e.message());
        let e = parse("mode = \"attached\"").unwrap_err();
        assert!(e
            .message()
            .starts_with("volbridge: invalid config: /etc/volbridge/flex.toml: mode"));
    }

    #[test]
    fn env_socket_wins_and_group_budgets_spread() {
        let c = Config::parse(
            Path::new("/x.toml"),
            "socket = \"/run/a.sock\"\n[budgets]\nmount = 7\nunmount = 3\nattach = 9\n",
            Some(PathBuf::from("/run/b.sock")),
        )
        .unwrap();
        assert_eq!(c.socket, Path::new("/run/b.sock"));
        assert_eq!(c.budgets.of("mountdevice"), Duration::from_secs(7));
        assert_eq!(c.budgets.of("attach"), Duration::from_secs(9));
        assert_eq!(c.budgets.of("unmountdevice"), Duration::from_secs(3));
    }

    #[test]
    fn typos_and_bad_values_are_refused() {
        for text in [
            "mdoe = \"attach\"",
            "fs_group = \"pod\"",
            "log_file = \"relative.log\"",
            "[budgets]\nmount = 0",
            "[budgets]\nwaitforattach = 600",
            "not toml at all [",
        ] {
            let e = parse(text).unwrap_err();
            assert!(
                e.message().starts_with("volbridge: invalid config: "),
                "{text}: {}",
                e.message()
            );
        }
    }
}
