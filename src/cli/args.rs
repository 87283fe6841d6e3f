//! The command line, as clap definitions.

use super::output::Format;
use crate::config::DEFAULT_ADMIN_SOCKET;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use volbridge_local_csp::PoolChoice;

#[derive(Debug, Parser)]
#[command(
    name = "volbridge",
    version,
    long_version = crate::build_info::long_version(),
    about = "One storage engine, every orchestrator",
    propagate_version = true
)]
pub struct Cli {
    /// The daemon's admin socket.
    #[arg(long, global = true, env = "VOLBRIDGE_SOCKET", default_value = DEFAULT_ADMIN_SOCKET)]
    pub socket: PathBuf,
    /// Output format.
    #[arg(long, short = 'O', global = true, value_enum, default_value = "table")]
    pub output: Format,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the configuration `volbridge serve` would run with (the same file, flags and
    /// environment; defaults filled in), secrets masked. TOML, or JSON with `-O json`.
    Show(ServeArgs),
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: engine, embedded local CSP, admin API.
    Serve(ServeArgs),
    /// The daemon's configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Serve or check a Container Storage Provider.
    Csp {
        #[command(subcommand)]
        command: CspCommand,
    },
    /// Create, list, inspect, expand, clone and remove volumes.
    Volume {
        #[command(subcommand)]
        command: VolumeCommand,
    },
    /// Create, list, inspect and remove snapshots.
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
    /// Show the configured CSP backends.
    Backend {
        #[command(subcommand)]
        command: BackendCommand,
    },
    /// Show the daemon's version, state dir and last reconciliation.
    Status,
    /// Volumes attached and mounted on this machine.
    Node,
    /// Run a reconciliation pass now and show what it did.
    Reconcile,
    /// Check this machine's prerequisites (loop devices, mkfs tools, initiators); changes
    /// nothing.
    Doctor {
        #[arg(long, env = "VOLBRIDGE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Docker volume plugin: mount references, and releasing those Docker never released.
    Docker {
        #[command(subcommand)]
        command: super::docker::DockerCommand,
    },
    /// Call any CSI plugin by hand: identity, controller, node and group RPCs.
    Csi(super::csi::CsiArgs),
    /// The FlexVolume driver for legacy kubelets: `flex install`.
    Flex {
        #[command(subcommand)]
        command: super::flex::FlexCommand,
    },
    /// Print a shell completion script: bash, zsh or fish (see README, "Install").
    Completion {
        #[arg(value_enum)]
        shell: CompletionShell,
    },
    /// Write the man pages (volbridge.1 and one per subcommand, volbridge-volume-mount.1…)
    /// into a directory, e.g. /usr/local/share/man/man1.
    Man {
        /// Where to write the pages (made when missing).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

/// The shells `volbridge completion` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Config file (TOML); default /etc/volbridge/volbridge.toml when it exists.
    #[arg(long, env = "VOLBRIDGE_CONFIG")]
    pub config: Option<PathBuf>,
    /// State directory (node records, intents, embedded CSP data).
    #[arg(long, env = "VOLBRIDGE_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Admin API socket to listen on.
    #[arg(long, env = "VOLBRIDGE_ADMIN_SOCKET")]
    pub admin_socket: Option<PathBuf>,
    /// Data directory of the embedded local CSP (default <state-dir>/csp).
    #[arg(long)]
    pub csp_data_dir: Option<PathBuf>,
    /// Loopback address of the embedded local CSP (port 0: any free port).
    #[arg(long)]
    pub csp_listen: Option<SocketAddr>,
    /// Where the embedded local CSP keeps volume images: auto, dir, xfs-image, btrfs-image.
    #[arg(long, value_parser = parse_pool)]
    pub csp_pool: Option<PoolChoice>,
    /// Do not run the embedded local CSP.
    #[arg(long)]
    pub no_local_csp: bool,
    /// Log filter (`info`, `debug`, `volbridge=trace`); RUST_LOG wins.
    #[arg(long)]
    pub log_level: Option<String>,
    /// Log as JSON lines.
    #[arg(long)]
    pub log_json: bool,
    /// Serve CSI on this endpoint (`unix:///var/lib/kubelet/plugins/csi.volbridge.io/csi.sock`).
    #[arg(long, env = "CSI_ENDPOINT")]
    pub csi_endpoint: Option<String>,
    /// Which CSI services to serve besides Identity: `all`, `controller` or `node`.
    #[arg(long, value_parser = ["all", "controller", "node"])]
    pub csi_mode: Option<String>,
    /// CSI driver name (default csi.volbridge.io).
    #[arg(long)]
    pub csi_driver_name: Option<String>,
    /// Volumes this node accepts (NodeGetInfo, ControllerPublishVolume); 0: no limit.
    #[arg(long)]
    pub csi_max_volumes_per_node: Option<i64>,
    /// The CO calling CSI: `generic` (Kubernetes, Nomad, any spec-following CO) or `swarm`
    /// (Docker Swarm cluster volumes; see docs/swarm.md).
    #[arg(long, value_parser = ["generic", "swarm"])]
    pub csi_orchestrator: Option<String>,
    /// Also serve /metrics, /healthz and /readyz on this TCP address (e.g. 0.0.0.0:9808).
    #[arg(long, env = "VOLBRIDGE_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub docker: DockerServeArgs,
}

/// The Docker volume plugin front end (`[docker]` in the config file).
#[derive(Debug, Args, Default)]
pub struct DockerServeArgs {
    /// Serve the Docker volume plugin on /run/docker/plugins/volbridge.sock.
    #[arg(long)]
    pub docker: bool,
    /// Serve the Docker volume plugin on this socket (implies --docker).
    #[arg(long, env = "VOLBRIDGE_DOCKER_SOCKET")]
    pub docker_socket: Option<PathBuf>,
    /// Group of the Docker socket (mode 0660): a name from /etc/group or a numeric gid
    /// (default: the daemon's own group).
    #[arg(long, value_name = "GROUP")]
    pub docker_socket_group: Option<String>,
    /// `legacy` (host process) or `managed` (inside a Docker managed plugin; implies --docker).
    #[arg(long, value_parser = ["legacy", "managed"])]
    pub docker_mode: Option<String>,
    /// Capabilities scope: `auto`, `local` or `global`.
    #[arg(long, value_parser = ["auto", "local", "global"])]
    pub docker_scope: Option<String>,
    /// How Docker finds the plugin: `socket`, `spec` or `tcp` (implies --docker).
    #[arg(long, value_parser = ["socket", "spec", "tcp"])]
    pub docker_listen: Option<String>,
    /// Driver name (`docker volume create -d NAME`; default volbridge).
    #[arg(long)]
    pub docker_driver_name: Option<String>,
    /// Seconds a volume stays mounted after its last Unmount (default 5).
    #[arg(long)]
    pub docker_unstage_delay: Option<u64>,
    /// Directory of the per-volume mount points Docker is given.
    #[arg(long)]
    pub docker_mount_base: Option<PathBuf>,
    /// Directory of `.spec`/`.json` discovery files (default /etc/docker/plugins).
    #[arg(long)]
    pub docker_spec_dir: Option<PathBuf>,
}

impl DockerServeArgs {
    /// Applies the flags over the config file's `[docker]` section.
    pub fn apply(&self, d: &mut crate::config::DockerSection) {
        if self.docker
            || self.docker_socket.is_some()
            || self.docker_mode.is_some()
            || self.docker_listen.is_some()
        {
            d.enabled = true;
        }
        if let Some(s) = &self.docker_socket {
            d.socket = Some(s.clone());
        }
        if let Some(g) = &self.docker_socket_group {
            d.socket_group = Some(g.clone());
        }
        if let Some(m) = &self.docker_mode {
            d.mode = m.clone();
        }
        if let Some(s) = &self.docker_scope {
            d.scope = s.clone();
        }
        if let Some(l) = &self.docker_listen {
            d.listen = l.clone();
        }
        if let Some(n) = &self.docker_driver_name {
            d.driver_name = n.clone();
        }
        if let Some(s) = self.docker_unstage_delay {
            d.unstage_delay_seconds = s;
        }
        if let Some(b) = &self.docker_mount_base {
            d.mount_base = Some(b.clone());
        }
        if let Some(s) = &self.docker_spec_dir {
            d.spec_dir = s.clone();
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum CspCommand {
    /// Run the local CSP alone (file-backed volumes over the CSP REST API).
    Serve {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[arg(long, default_value = "volbridge")]
        username: String,
        /// Default: generated on first start, kept in <data-dir>/password (0600).
        #[arg(long, env = "VOLBRIDGE_CSP_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// Where volume images live: auto (the data dir when it reflinks, else an image
        /// pool under it), dir, xfs-image, btrfs-image.
        #[arg(long, default_value = "auto", value_parser = parse_pool)]
        pool: PoolChoice,
        /// How many times the pool's capacity the volumes may promise (0: no limit).
        #[arg(long, default_value_t = volbridge_local_csp::DEFAULT_OVERCOMMIT)]
        overcommit: f64,
        /// Serve volumes created with access_protocol iscsi through the kernel's LIO target,
        /// on this portal (ADDRESS or ADDRESS:PORT, port 3260 by default; repeat for more
        /// paths). The address is what nodes are told to connect to.
        #[arg(long = "iscsi-portal", value_name = "ADDRESS[:PORT]", value_parser = parse_iscsi_portal)]
        iscsi_portals: Vec<SocketAddr>,
        /// Serve volumes created with access_protocol nvmetcp through the kernel's nvmet
        /// target, listening here (port 4420 by default; repeat for more paths).
        #[arg(long = "nvme-address", value_name = "ADDRESS[:PORT]", value_parser = parse_nvme_address)]
        nvme_addresses: Vec<SocketAddr>,
        /// CHAP user every iSCSI initiator must log in with (with --chap-password).
        #[arg(long, requires = "chap_password")]
        chap_user: Option<String>,
        #[arg(
            long,
            env = "VOLBRIDGE_CHAP_PASSWORD",
            hide_env_values = true,
            requires = "chap_user"
        )]
        chap_password: Option<String>,
    },
    /// Run the conformance checklist against any CSP.
    Check {
        /// Base URL of the CSP, without /containers/v1 (`http://host:8080`, `https://array/csp`).
        url: String,
        #[arg(long)]
        username: String,
        #[arg(long, env = "VOLBRIDGE_CSP_PASSWORD", hide_env_values = true)]
        password: String,
        /// Array address to send in service mode.
        #[arg(long)]
        array_ip: Option<String>,
        /// Access protocol to publish with (`local` for volbridge's own CSP).
        #[arg(long, default_value = "iscsi")]
        protocol: String,
        /// Keep what the checks created.
        #[arg(long)]
        keep: bool,
        /// Do not verify the CSP's TLS certificate.
        #[arg(long)]
        insecure: bool,
    },
}

#[derive(Debug, Args)]
pub struct BackendArg {
    /// Backend to use (default: the daemon's default backend).
    #[arg(long, short = 'b')]
    pub backend: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume (a second create with the same name and size is a no-op).
    Create {
        name: String,
        /// Size: bytes or a whole number of Ki, Mi, Gi, Ti, Pi (1Gi, 500Mi).
        #[arg(long, short = 's')]
        size: Option<String>,
        /// CSP setting, repeatable: -o thick=true, -o destroyOnDelete=false, or a
        /// backend's own setting as -o csp.NAME=VALUE.
        #[arg(long = "opt", short = 'o', value_name = "KEY=VALUE", value_parser = parse_key_value)]
        options: Vec<(String, String)>,
        #[arg(long, short = 'd')]
        description: Option<String>,
        #[command(flatten)]
        backend: BackendArg,
    },
    /// List volumes.
    #[command(alias = "list")]
    Ls {
        #[command(flatten)]
        backend: BackendArg,
    },
    /// Show one volume.
    Inspect {
        name: String,
        #[command(flatten)]
        backend: BackendArg,
    },
    /// Remove volumes. A name that does not exist fails (exit code 3); the other names
    /// are still removed.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        backend: BackendArg,
    },
    /// Grow a volume, and its filesystem when it is mounted or attached here (online, or
    /// offline when the kernel refuses: the result says which). Volumes do not shrink.
    Expand {
        name: String,
        #[arg(long, short = 's')]
        size: String,
        #[command(flatten)]
        backend: BackendArg,
    },
    /// Create a volume from a snapshot or from another volume.
    Clone {
        name: String,
        #[arg(
            long,
            conflicts_with = "from_volume",
            required_unless_present = "from_volume"
        )]
        from_snapshot: Option<String>,
        #[arg(long)]
        from_volume: Option<String>,
        /// Size of the clone (default: the source's).
        #[arg(long, short = 's')]
        size: Option<String>,
        /// CSP setting, repeatable: as for `volume create`.
        #[arg(long = "opt", short = 'o', value_name = "KEY=VALUE", value_parser = parse_key_value)]
        options: Vec<(String, String)>,
        #[command(flatten)]
        backend: BackendArg,
    },
    /// Mount a volume at a directory on this machine (attach, format if blank, mount).
    /// More mounts of the same volume share its attachment: read-only ones may join a
    /// read-write volume, not the reverse; --block only while nothing mounts its filesystem.
    Mount {
        name: String,
        /// Absolute directory; with --block, the file the device node is bound onto.
        path: String,
        /// Mount read-only (a volume mounted read-write elsewhere gets a read-only view).
        #[arg(long)]
        read_only: bool,
        /// Publish the raw block device instead of a filesystem.
        #[arg(long)]
        block: bool,
        /// Filesystem made on a blank volume: ext4 (default), xfs or btrfs.
        #[arg(long, default_value = "")]
        fs_type: String,
        /// Mount option (repeatable, or comma-separated): noatime, discard, …
        #[arg(long = "mount-option", short = 'm')]
        mount_options: Vec<String>,
        #[command(flatten)]
        backend: BackendArg,
    },
    /// Unmount a volume from a path; the last unmount detaches it.
    Unmount {
        name: String,
        path: String,
        #[command(flatten)]
        backend: BackendArg,
    },
    /// Attach a volume's block device to this machine and keep it attached.
    Attach {
        name: String,
        #[arg(long)]
        read_only: bool,
        #[command(flatten)]
        backend: BackendArg,
    },
    /// Detach a volume attached with `volume attach` (refused while mounted).
    Detach {
        name: String,
        #[command(flatten)]
        backend: BackendArg,
    },
    /// Usage of a volume mounted or attached on this machine.
    Stats {
        name: String,
        /// A mount path of the volume (default: where it is mounted).
        path: Option<String>,
        #[command(flatten)]
        backend: BackendArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Snapshot a volume.
    Create {
        name: String,
        #[arg(long, short = 'v')]
        volume: String,
        #[arg(long, short = 'd')]
        description: Option<String>,
        #[command(flatten)]
        backend: BackendArg,
    },
    /// List snapshots, of one volume or all.
    #[command(alias = "list")]
    Ls {
        #[arg(long, short = 'v')]
        volume: Option<String>,
        #[command(flatten)]
        backend: BackendArg,
    },
    /// Show one snapshot.
    Inspect {
        name: String,
        #[command(flatten)]
        backend: BackendArg,
    },
    /// Remove snapshots. A name that does not exist fails (exit code 3); the other names
    /// are still removed.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        backend: BackendArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum BackendCommand {
    /// List backends with reachability and free space.
    #[command(alias = "list")]
    Ls,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("'{s}' is not KEY=VALUE")),
    }
}

fn parse_pool(s: &str) -> Result<PoolChoice, String> {
    s.parse()
}

fn parse_iscsi_portal(s: &str) -> std::result::Result<SocketAddr, String> {
    crate::config::export_address(s, volbridge_local_csp::ISCSI_PORT)
}

fn parse_nvme_address(s: &str) -> std::result::Result<SocketAddr, String> {
    crate::config::export_address(s, volbridge_local_csp::NVME_PORT)
}
