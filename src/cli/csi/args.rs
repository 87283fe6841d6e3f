//! The clap definitions of `volbridge csi …`.

use clap::{Args, Subcommand, ValueEnum};
use std::collections::BTreeMap;
use std::time::Duration;

/// `volbridge csi [--endpoint E] [--timeout T] <service> <rpc> …`
#[derive(Debug, Args)]
pub struct CsiArgs {
    /// The plugin's endpoint: unix:///path/csi.sock, /path/csi.sock or tcp://ip:port.
    #[arg(long, global = true, env = "CSI_ENDPOINT", value_name = "ENDPOINT")]
    pub endpoint: Option<String>,
    /// Time limit of each call: 30s, 2m, 1h…
    #[arg(long, global = true, default_value = "60s", value_parser = parse_timeout)]
    pub timeout: Duration,
    #[command(subcommand)]
    pub command: CsiCommand,
}

#[derive(Debug, Subcommand)]
pub enum CsiCommand {
    /// Identity service: plugin name and version, capabilities, readiness.
    Identity {
        #[command(subcommand)]
        command: IdentityCommand,
    },
    /// Controller service: volumes, snapshots, attachments, capacity.
    Controller {
        #[command(subcommand)]
        command: ControllerCommand,
    },
    /// Node service: stage, publish, stats and expansion on this machine.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// GroupController service: group snapshots.
    #[command(alias = "group-controller")]
    Group {
        #[command(subcommand)]
        command: GroupCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// GetPluginInfo: driver name, vendor version, manifest.
    #[command(alias = "plugin-info")]
    Info,
    /// GetPluginCapabilities.
    #[command(aliases = ["capabilities", "plugin-capabilities"])]
    Caps,
    /// Probe: is the plugin ready?
    Probe,
}

#[derive(Debug, Subcommand)]
pub enum ControllerCommand {
    /// CreateVolume.
    #[command(alias = "create-volume")]
    Create(CreateArgs),
    /// DeleteVolume. An id the plugin does not know is success in CSI; this client lists
    /// the volumes first and says when no volume had the id (nothing was deleted).
    #[command(alias = "delete-volume")]
    Delete {
        volume_id: String,
        #[command(flatten)]
        secrets: SecretArgs,
    },
    /// ControllerPublishVolume: make a volume available to a node.
    #[command(alias = "publish-volume")]
    Publish(ControllerPublishArgs),
    /// ControllerUnpublishVolume.
    #[command(alias = "unpublish-volume")]
    Unpublish(ControllerUnpublishArgs),
    /// ListVolumes, one page (or every page with --all).
    #[command(aliases = ["ls", "list-volumes"])]
    List(ListArgs),
    /// ControllerGetVolume.
    #[command(alias = "get-volume")]
    Get { volume_id: String },
    /// ValidateVolumeCapabilities.
    #[command(alias = "validate-volume-capabilities")]
    Validate(ValidateArgs),
    /// GetCapacity.
    #[command(alias = "get-capacity")]
    Capacity(CapacityArgs),
    /// ControllerGetCapabilities.
    #[command(aliases = ["capabilities", "get-capabilities"])]
    Caps,
    /// CreateSnapshot.
    #[command(alias = "create-snapshot")]
    Snapshot(SnapshotArgs),
    /// DeleteSnapshot (an unknown id is not an error).
    DeleteSnapshot {
        snapshot_id: String,
        #[command(flatten)]
        secrets: SecretArgs,
    },
    /// ListSnapshots, one page (or every page with --all).
    ListSnapshots(ListSnapshotsArgs),
    /// ControllerExpandVolume.
    #[command(alias = "expand-volume")]
    Expand(ControllerExpandArgs),
    /// ControllerModifyVolume: the mutable parameters to change (keys left out keep their
    /// values; one key the volume cannot take refuses them all).
    #[command(alias = "modify-volume")]
    Modify {
        volume_id: String,
        /// Mutable parameter, repeatable: --param key=value.
        #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_kv)]
        params: Vec<(String, String)>,
        #[command(flatten)]
        secrets: SecretArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// NodeStageVolume.
    #[command(alias = "stage-volume")]
    Stage(StageArgs),
    /// NodeUnstageVolume.
    #[command(alias = "unstage-volume")]
    Unstage {
        volume_id: String,
        #[arg(long, value_name = "PATH")]
        staging_path: String,
    },
    /// NodePublishVolume.
    #[command(alias = "publish-volume")]
    Publish(NodePublishArgs),
    /// NodeUnpublishVolume.
    #[command(alias = "unpublish-volume")]
    Unpublish {
        volume_id: String,
        #[arg(long, value_name = "PATH")]
        target_path: String,
    },
    /// NodeGetVolumeStats.
    #[command(alias = "get-volume-stats")]
    Stats {
        volume_id: String,
        /// A path where the volume is staged or published.
        #[arg(long, value_name = "PATH")]
        path: String,
        #[arg(long, value_name = "PATH")]
        staging_path: Option<String>,
    },
    /// NodeExpandVolume.
    #[command(alias = "expand-volume")]
    Expand(NodeExpandArgs),
    /// NodeGetInfo: node id, volume limit, topology.
    #[command(alias = "get-info")]
    Info,
    /// NodeGetCapabilities.
    #[command(aliases = ["capabilities", "get-capabilities"])]
    Caps,
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// GroupControllerGetCapabilities.
    #[command(aliases = ["capabilities", "get-capabilities"])]
    Caps,
    /// CreateVolumeGroupSnapshot.
    #[command(alias = "create-snapshot")]
    Snapshot {
        name: String,
        /// Source volume id, repeatable.
        #[arg(long = "source", value_name = "VOLUME_ID", required = true)]
        sources: Vec<String>,
        /// Plugin parameter, repeatable: --param key=value.
        #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_kv)]
        params: Vec<(String, String)>,
        #[command(flatten)]
        secrets: SecretArgs,
    },
    /// DeleteVolumeGroupSnapshot (an unknown id is not an error).
    #[command(alias = "delete-snapshot")]
    Delete {
        group_snapshot_id: String,
        /// Member snapshot id, repeatable.
        #[arg(long = "snapshot-id", value_name = "SNAPSHOT_ID")]
        snapshot_ids: Vec<String>,
        #[command(flatten)]
        secrets: SecretArgs,
    },
    /// GetVolumeGroupSnapshot.
    #[command(alias = "get-snapshot")]
    Get {
        group_snapshot_id: String,
        /// Member snapshot id, repeatable.
        #[arg(long = "snapshot-id", value_name = "SNAPSHOT_ID")]
        snapshot_ids: Vec<String>,
        #[command(flatten)]
        secrets: SecretArgs,
    },
}

/// `--secret key=value`, repeatable. Values are never printed: see [`SecretArg`].
#[derive(Debug, Clone, Default, Args)]
pub struct SecretArgs {
    /// Secret for the plugin, repeatable: --secret key=value (never printed).
    #[arg(long = "secret", value_name = "KEY=VALUE")]
    pub secrets: Vec<SecretArg>,
}

/// One `--secret` as typed. It is split only when the request is built, so that no parse
/// error (which clap would print with the text) can show it; `Debug` shows the key alone.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretArg(pub String);

impl From<String> for SecretArg {
    fn from(text: String) -> Self {
        SecretArg(text)
    }
}

impl std::fmt::Debug for SecretArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.split_once('=') {
            Some((key, _)) => write!(f, "{key:?}=<redacted>"),
            None => f.write_str("<redacted>"),
        }
    }
}

/// The flags that make one `VolumeCapability`.
#[derive(Debug, Clone, Default, Args)]
pub struct CapabilityArgs {
    /// Raw block access instead of a mounted filesystem.
    #[arg(long, conflicts_with_all = ["fs_type", "mount_flags", "mount_group"])]
    pub block: bool,
    /// Filesystem of a mount volume (default: the plugin's choice).
    #[arg(long, value_name = "FS")]
    pub fs_type: Option<String>,
    /// Mount flag, repeatable: --mount-flag noatime.
    #[arg(long = "mount-flag", value_name = "FLAG")]
    pub mount_flags: Vec<String>,
    /// Group id that should own the mounted volume.
    #[arg(long, value_name = "GID")]
    pub mount_group: Option<String>,
    /// Access mode [default: single-node-writer].
    #[arg(long, value_enum, value_name = "MODE")]
    pub access_mode: Option<AccessModeArg>,
}

/// The CSI access modes, by their kebab-case names (the proto names work too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AccessModeArg {
    #[value(alias = "SINGLE_NODE_WRITER")]
    SingleNodeWriter,
    #[value(alias = "SINGLE_NODE_READER_ONLY")]
    SingleNodeReaderOnly,
    #[value(alias = "MULTI_NODE_READER_ONLY")]
    MultiNodeReaderOnly,
    #[value(alias = "MULTI_NODE_SINGLE_WRITER")]
    MultiNodeSingleWriter,
    #[value(alias = "MULTI_NODE_MULTI_WRITER")]
    MultiNodeMultiWriter,
    #[value(alias = "SINGLE_NODE_SINGLE_WRITER")]
    SingleNodeSingleWriter,
    #[value(alias = "SINGLE_NODE_MULTI_WRITER")]
    SingleNodeMultiWriter,
}

/// A topology segment set: `--requisite-topology zone=a,rack=r1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyArg(pub BTreeMap<String, String>);

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The volume's name (the idempotency key).
    pub name: String,
    /// Required capacity: bytes or 1Gi, 500Mi, 10G…
    #[arg(long, value_name = "SIZE")]
    pub size: Option<String>,
    /// Capacity limit.
    #[arg(long, value_name = "SIZE")]
    pub limit: Option<String>,
    /// Plugin parameter (StorageClass parameter), repeatable: --param key=value.
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_kv)]
    pub params: Vec<(String, String)>,
    /// Parameter that ControllerModifyVolume may change later, repeatable.
    #[arg(long = "mutable-param", value_name = "KEY=VALUE", value_parser = parse_kv)]
    pub mutable_params: Vec<(String, String)>,
    #[command(flatten)]
    pub secrets: SecretArgs,
    /// Create from this snapshot.
    #[arg(long, value_name = "SNAPSHOT_ID", conflicts_with = "from_volume")]
    pub from_snapshot: Option<String>,
    /// Clone this volume.
    #[arg(long, value_name = "VOLUME_ID")]
    pub from_volume: Option<String>,
    #[command(flatten)]
    pub capability: CapabilityArgs,
    /// Topology the volume must be accessible from, repeatable: key=value[,key=value].
    #[arg(long = "requisite-topology", value_name = "SEGMENTS", value_parser = parse_topology)]
    pub requisite: Vec<TopologyArg>,
    /// Topology preferred for the volume, in order, repeatable: key=value[,key=value].
    #[arg(long = "preferred-topology", value_name = "SEGMENTS", value_parser = parse_topology)]
    pub preferred: Vec<TopologyArg>,
}

#[derive(Debug, Args)]
pub struct ControllerPublishArgs {
    pub volume_id: String,
    #[arg(long, value_name = "NODE_ID")]
    pub node_id: String,
    #[arg(long)]
    pub read_only: bool,
    /// Volume context (as CreateVolume returned it), repeatable: key=value[,key=value…].
    #[arg(long = "volume-context", value_name = "KEY=VALUE", value_parser = parse_pairs)]
    pub volume_context: Vec<Pairs>,
    #[command(flatten)]
    pub capability: CapabilityArgs,
    #[command(flatten)]
    pub secrets: SecretArgs,
}

#[derive(Debug, Args)]
pub struct ControllerUnpublishArgs {
    pub volume_id: String,
    #[arg(long, value_name = "NODE_ID", required_unless_present = "all_nodes")]
    pub node_id: Option<String>,
    /// Unpublish from every node (sends an empty node id).
    #[arg(long, conflicts_with = "node_id")]
    pub all_nodes: bool,
    #[command(flatten)]
    pub secrets: SecretArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Page size (0: the plugin's choice).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i32).range(0..))]
    pub max_entries: i32,
    /// Token of the page to start from (next_token of the previous page).
    #[arg(long, value_name = "TOKEN")]
    pub starting_token: Option<String>,
    /// Follow next_token until the last page and print every entry.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct ListSnapshotsArgs {
    /// Only the snapshots of this volume.
    #[arg(long = "source", value_name = "VOLUME_ID")]
    pub source: Option<String>,
    /// Only this snapshot.
    #[arg(long, value_name = "SNAPSHOT_ID")]
    pub snapshot_id: Option<String>,
    #[command(flatten)]
    pub page: ListArgs,
    #[command(flatten)]
    pub secrets: SecretArgs,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    pub volume_id: String,
    /// Volume context, repeatable: key=value[,key=value…].
    #[arg(long = "volume-context", value_name = "KEY=VALUE", value_parser = parse_pairs)]
    pub volume_context: Vec<Pairs>,
    /// Parameter the volume was created with, repeatable: key=value.
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_kv)]
    pub params: Vec<(String, String)>,
    #[command(flatten)]
    pub capability: CapabilityArgs,
    #[command(flatten)]
    pub secrets: SecretArgs,
}

#[derive(Debug, Args)]
pub struct CapacityArgs {
    /// Plugin parameter, repeatable: --param key=value.
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_kv)]
    pub params: Vec<(String, String)>,
    /// Only capacity accessible from this topology: key=value[,key=value].
    #[arg(long, value_name = "SEGMENTS", value_parser = parse_topology)]
    pub topology: Option<TopologyArg>,
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// The snapshot's name (the idempotency key).
    pub name: String,
    #[arg(long = "source", value_name = "VOLUME_ID")]
    pub source: String,
    /// Plugin parameter (VolumeSnapshotClass parameter), repeatable: key=value.
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_kv)]
    pub params: Vec<(String, String)>,
    #[command(flatten)]
    pub secrets: SecretArgs,
}

#[derive(Debug, Args)]
pub struct ControllerExpandArgs {
    pub volume_id: String,
    /// New required capacity.
    #[arg(long, value_name = "SIZE")]
    pub size: String,
    /// Capacity limit.
    #[arg(long, value_name = "SIZE")]
    pub limit: Option<String>,
    /// Capability flags are sent only when one is given.
    #[command(flatten)]
    pub capability: CapabilityArgs,
    #[command(flatten)]
    pub secrets: SecretArgs,
}

#[derive(Debug, Args)]
pub struct StageArgs {
    pub volume_id: String,
    #[arg(long, value_name = "PATH")]
    pub staging_path: String,
    /// Publish context (from ControllerPublishVolume), repeatable: key=value[,key=value…]
    /// (csc's form; a comma not followed by `key=` stays in the value, `\,` is a comma).
    #[arg(long = "publish-context", value_name = "KEY=VALUE", value_parser = parse_pairs)]
    pub publish_context: Vec<Pairs>,
    /// Volume context (from CreateVolume), repeatable: key=value[,key=value…].
    #[arg(long = "volume-context", value_name = "KEY=VALUE", value_parser = parse_pairs)]
    pub volume_context: Vec<Pairs>,
    #[command(flatten)]
    pub capability: CapabilityArgs,
    #[command(flatten)]
    pub secrets: SecretArgs,
}

#[derive(Debug, Args)]
pub struct NodePublishArgs {
    pub volume_id: String,
    #[arg(long, value_name = "PATH")]
    pub target_path: String,
    #[arg(long, value_name = "PATH")]
    pub staging_path: Option<String>,
    #[arg(long)]
    pub read_only: bool,
    /// Publish context (from ControllerPublishVolume), repeatable: key=value[,key=value…]
    /// (csc's form; a comma not followed by `key=` stays in the value, `\,` is a comma).
    #[arg(long = "publish-context", value_name = "KEY=VALUE", value_parser = parse_pairs)]
    pub publish_context: Vec<Pairs>,
    /// Volume context (from CreateVolume), repeatable: key=value[,key=value…].
    #[arg(long = "volume-context", value_name = "KEY=VALUE", value_parser = parse_pairs)]
    pub volume_context: Vec<Pairs>,
    #[command(flatten)]
    pub capability: CapabilityArgs,
    #[command(flatten)]
    pub secrets: SecretArgs,
}

#[derive(Debug, Args)]
pub struct NodeExpandArgs {
    pub volume_id: String,
    /// Where the volume is published (or staged).
    #[arg(long, value_name = "PATH")]
    pub path: String,
    #[arg(long, value_name = "PATH")]
    pub staging_path: Option<String>,
    /// New required capacity.
    #[arg(long, value_name = "SIZE")]
    pub size: Option<String>,
    /// Capacity limit.
    #[arg(long, value_name = "SIZE")]
    pub limit: Option<String>,
    /// Capability flags are sent only when one is given.
    #[command(flatten)]
    pub capability: CapabilityArgs,
    #[command(flatten)]
    pub secrets: SecretArgs,
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| format!("{e}; write 30s, 2m, 1h…"))?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

/// `key=value`: the key is trimmed and must not be empty; the value is kept as typed (it may
/// hold `=` or be empty).
pub fn parse_kv(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        Some(_) => Err(format!("'{text}' has an empty key; write KEY=VALUE")),
        None => Err(format!("'{text}' is not KEY=VALUE")),
    }
}

/// The pairs of one `--publish-context` or `--volume-context` flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pairs(pub Vec<(String, String)>);

/// Every pair of repeated list flags, in order.
pub fn flatten(lists: &[Pairs]) -> Vec<(String, String)> {
    lists.iter().flat_map(|p| p.0.iter().cloned()).collect()
}

/// `key=value[,key=value…]`, as csc takes a context (`--pub-context k=v,k2=v2`), while
/// one pair per flag keeps working. A comma splits only where a `key=` follows it, so a
/// list value (`targetNames=iqn.a,iqn.b`, `discoveryIps=10.0.0.1,10.0.0.2`) stays whole;
/// `\,` is a comma that never splits (`fsCreateOptions=-E a=1\,b=2`).
pub fn parse_pairs(text: &str) -> Result<Pairs, String> {
    let mut pieces: Vec<String> = vec![String::new()];
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&',') => {
                chars.next();
                pieces.last_mut().expect("one piece").push(',');
            }
            ',' => pieces.push(String::new()),
            other => pieces.last_mut().expect("one piece").push(other),
        }
    }
    // Rejoin the pieces that do not start with `key=`: they continue the value before them.
    let mut pairs: Vec<String> = Vec::new();
    for piece in pieces {
        match pairs.last_mut() {
            Some(last) if !starts_with_key(&piece) => {
                last.push(',');
                last.push_str(&piece);
            }
            _ => pairs.push(piece),
        }
    }
    pairs
        .iter()
        .map(|p| parse_kv(p))
        .collect::<Result<Vec<_>, _>>()
        .map(Pairs)
}

/// Whether `text` starts with `key=`: a key of letters, digits, `_ . - /` (CSI context
/// keys such as `targetNames` or `csi.storage.k8s.io/pod.name`).
fn starts_with_key(text: &str) -> bool {
    match text.split_once('=') {
        Some((key, _)) => {
            !key.is_empty()
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'/'))
        }
        None => false,
    }
}

/// `key=value[,key=value…]`, each key once.
pub fn parse_topology(text: &str) -> Result<TopologyArg, String> {
    let mut segments = BTreeMap::new();
    for part in text.split(',') {
        let (k, v) = parse_kv(part.trim())?;
        if segments.insert(k.clone(), v).is_some() {
            return Err(format!("'{text}' names segment '{k}' twice"));
        }
    }
    Ok(TopologyArg(segments))
}
