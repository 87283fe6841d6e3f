//! CSI replies as JSON (field names as in the proto, enum values by their proto names,
//! 64-bit integers as numbers, timestamps as RFC 3339, every field present: an unset
//! message is `null`) and as human tables.

use crate::cli::output::{self, Format};
use crate::engine::size::human;
use serde_json::{json, Map as JsonMap, Value};
use std::collections::{BTreeMap, HashMap};
use volbridge_proto::csi as pb;

/// One reply, ready for either output format.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub json: Value,
    pub human: Vec<Block>,
    /// A warning for people, printed on stderr in either format (JSON stays the reply).
    pub warning: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// FIELD / VALUE rows.
    Fields(Vec<(String, String)>),
    /// A table with its header.
    Table(Vec<&'static str>, Vec<Vec<String>>),
    /// A sentence.
    Line(String),
}

impl Reply {
    pub fn new(json: Value, human: Vec<Block>) -> Reply {
        Reply {
            json,
            human,
            warning: None,
        }
    }

    /// An empty CSI reply: `{}` in JSON, a sentence for people.
    pub fn done(sentence: impl Into<String>) -> Reply {
        Reply::new(json!({}), vec![Block::Line(sentence.into())])
    }

    /// The same reply with a warning for people.
    pub fn warn(mut self, warning: impl Into<String>) -> Reply {
        self.warning = Some(warning.into());
        self
    }

    pub fn print(&self, format: Format) {
        if let Some(w) = &self.warning {
            eprintln!("volbridge: warning: {w}");
        }
        match format {
            Format::Json => output::json(&self.json),
            Format::Table => {
                for block in &self.human {
                    match block {
                        Block::Fields(rows) => {
                            let rows: Vec<Vec<String>> = rows
                                .iter()
                                .map(|(k, v)| vec![k.clone(), v.clone()])
                                .collect();
                            output::table(&["FIELD", "VALUE"], &rows);
                        }
                        Block::Table(header, rows) => output::table(header, rows),
                        Block::Line(line) => println!("{line}"),
                    }
                }
            }
        }
    }
}

/// An enum field by its proto name; a value this client does not know stays a number.
pub fn enum_json<E: TryFrom<i32>>(value: i32, name: impl Fn(E) -> &'static str) -> Value {
    E::try_from(value).map_or_else(|_| json!(value), |e| json!(name(e)))
}

pub fn enum_text<E: TryFrom<i32>>(value: i32, name: impl Fn(E) -> &'static str) -> String {
    E::try_from(value).map_or_else(|_| value.to_string(), |e| name(e).to_owned())
}

pub fn map(m: &HashMap<String, String>) -> Value {
    json!(m.iter().collect::<BTreeMap<_, _>>())
}

/// Map entries as `prefix.key` rows, sorted.
fn map_rows(prefix: &str, m: &HashMap<String, String>) -> Vec<(String, String)> {
    m.iter()
        .collect::<BTreeMap<_, _>>()
        .into_iter()
        .map(|(k, v)| (format!("{prefix}.{k}"), v.clone()))
        .collect()
}

pub fn timestamp(t: Option<&prost_types::Timestamp>) -> Value {
    timestamp_text(t).map_or(Value::Null, Value::String)
}

fn timestamp_text(t: Option<&prost_types::Timestamp>) -> Option<String> {
    let t = t?;
    let nanos = u32::try_from(t.nanos).ok().filter(|n| *n < 1_000_000_000)?;
    let secs = u64::try_from(t.seconds).ok()?;
    let time = std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos);
    Some(humantime::format_rfc3339(time).to_string())
}

/// Bytes for people: `1Gi (1073741824)`; zero means unknown in CSI.
pub fn bytes_text(n: i64) -> String {
    match u64::try_from(n) {
        Ok(0) => "unknown".into(),
        Ok(b) => format!("{} ({b})", human(b)),
        Err(_) => n.to_string(),
    }
}

pub fn topology(t: &pb::Topology) -> Value {
    json!({ "segments": map(&t.segments) })
}

pub fn topology_text(t: &pb::Topology) -> String {
    t.segments
        .iter()
        .collect::<BTreeMap<_, _>>()
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn content_source(s: Option<&pb::VolumeContentSource>) -> Value {
    use pb::volume_content_source::Type;
    match s.and_then(|s| s.r#type.as_ref()) {
        Some(Type::Snapshot(s)) => json!({ "snapshot": { "snapshot_id": s.snapshot_id } }),
        Some(Type::Volume(v)) => json!({ "volume": { "volume_id": v.volume_id } }),
        None if s.is_some() => json!({}),
        None => Value::Null,
    }
}

fn content_source_text(s: Option<&pb::VolumeContentSource>) -> Option<String> {
    use pb::volume_content_source::Type;
    match s?.r#type.as_ref()? {
        Type::Snapshot(s) => Some(format!("snapshot {}", s.snapshot_id)),
        Type::Volume(v) => Some(format!("volume {}", v.volume_id)),
    }
}

/// `{"capacity_bytes", "volume_id", "volume_context", "content_source", "accessible_topology"}`
pub fn volume(v: &pb::Volume) -> Value {
    json!({
        "capacity_bytes": v.capacity_bytes,
        "volume_id": v.volume_id,
        "volume_context": map(&v.volume_context),
        "content_source": content_source(v.content_source.as_ref()),
        "accessible_topology": v.accessible_topology.iter().map(topology).collect::<Vec<_>>(),
    })
}

pub fn volume_rows(v: &pb::Volume) -> Vec<(String, String)> {
    let mut rows = vec![
        ("volume_id".to_owned(), v.volume_id.clone()),
        ("capacity".to_owned(), bytes_text(v.capacity_bytes)),
    ];
    if let Some(s) = content_source_text(v.content_source.as_ref()) {
        rows.push(("source".into(), s));
    }
    for t in &v.accessible_topology {
        rows.push(("topology".into(), topology_text(t)));
    }
    rows.extend(map_rows("context", &v.volume_context));
    rows
}

pub fn condition(c: Option<&pb::VolumeCondition>) -> Value {
    c.map_or(
        Value::Null,
        |c| json!({ "abnormal": c.abnormal, "message": c.message }),
    )
}

pub fn condition_text(c: Option<&pb::VolumeCondition>) -> String {
    match c {
        None => "-".into(),
        Some(c) if !c.abnormal && c.message.is_empty() => "normal".into(),
        Some(c) if !c.abnormal => format!("normal: {}", c.message),
        Some(c) if c.message.is_empty() => "ABNORMAL".into(),
        Some(c) => format!("ABNORMAL: {}", c.message),
    }
}

/// `{"published_node_ids": [...], "volume_condition": {...}|null}`: the status of
/// ListVolumes entries and of ControllerGetVolume (two proto messages, one shape).
pub fn volume_status(published: &[String], c: Option<&pb::VolumeCondition>) -> Value {
    json!({ "published_node_ids": published, "volume_condition": condition(c) })
}

/// `{"size_bytes", "snapshot_id", "source_volume_id", "creation_time", "ready_to_use",
/// "group_snapshot_id"}`
pub fn snapshot(s: &pb::Snapshot) -> Value {
    json!({
        "size_bytes": s.size_bytes,
        "snapshot_id": s.snapshot_id,
        "source_volume_id": s.source_volume_id,
        "creation_time": timestamp(s.creation_time.as_ref()),
        "ready_to_use": s.ready_to_use,
        "group_snapshot_id": s.group_snapshot_id,
    })
}

pub const SNAPSHOT_HEADER: [&str; 6] =
    ["SNAPSHOT_ID", "SOURCE", "SIZE", "READY", "CREATED", "GROUP"];

pub fn snapshot_row(s: &pb::Snapshot) -> Vec<String> {
    vec![
        s.snapshot_id.clone(),
        s.source_volume_id.clone(),
        bytes_text(s.size_bytes),
        yes_no(s.ready_to_use),
        timestamp_text(s.creation_time.as_ref()).unwrap_or_else(|| "-".into()),
        dash(&s.group_snapshot_id),
    ]
}

/// `{"group_snapshot_id", "snapshots": [...], "creation_time", "ready_to_use"}`
pub fn group_snapshot(g: &pb::VolumeGroupSnapshot) -> Value {
    json!({
        "group_snapshot_id": g.group_snapshot_id,
        "snapshots": g.snapshots.iter().map(snapshot).collect::<Vec<_>>(),
        "creation_time": timestamp(g.creation_time.as_ref()),
        "ready_to_use": g.ready_to_use,
    })
}

pub fn group_snapshot_blocks(g: &pb::VolumeGroupSnapshot) -> Vec<Block> {
    vec![
        Block::Fields(vec![
            ("group_snapshot_id".into(), g.group_snapshot_id.clone()),
            ("ready_to_use".into(), yes_no(g.ready_to_use)),
            (
                "creation_time".into(),
                timestamp_text(g.creation_time.as_ref()).unwrap_or_else(|| "-".into()),
            ),
        ]),
        Block::Table(
            SNAPSHOT_HEADER.to_vec(),
            g.snapshots.iter().map(snapshot_row).collect(),
        ),
    ]
}

/// `{"block": {}}` or `{"mount": {"fs_type", "mount_flags", "volume_mount_group"}}`, with
/// `"access_mode": {"mode": "SINGLE_NODE_WRITER"}`.
pub fn capability(c: &pb::VolumeCapability) -> Value {
    use pb::volume_capability::{access_mode::Mode, AccessType};
    let mut out = JsonMap::new();
    match &c.access_type {
        Some(AccessType::Block(_)) => {
            out.insert("block".into(), json!({}));
        }
        Some(AccessType::Mount(m)) => {
            out.insert(
                "mount".into(),
                json!({
                    "fs_type": m.fs_type,
                    "mount_flags": m.mount_flags,
                    "volume_mount_group": m.volume_mount_group,
                }),
            );
        }
        None => {}
    }
    out.insert(
        "access_mode".into(),
        c.access_mode.as_ref().map_or(
            Value::Null,
            |a| json!({ "mode": enum_json(a.mode, |m: Mode| m.as_str_name()) }),
        ),
    );
    Value::Object(out)
}

pub fn capability_text(c: &pb::VolumeCapability) -> String {
    use pb::volume_capability::{access_mode::Mode, AccessType};
    let access = match &c.access_type {
        Some(AccessType::Block(_)) => "block".to_owned(),
        Some(AccessType::Mount(m)) => {
            let mut s = format!(
                "mount {}",
                if m.fs_type.is_empty() {
                    "-"
                } else {
                    &m.fs_type
                }
            );
            if !m.mount_flags.is_empty() {
                s.push_str(&format!(" -o {}", m.mount_flags.join(",")));
            }
            s
        }
        None => "-".to_owned(),
    };
    let mode = c.access_mode.as_ref().map_or_else(
        || "-".to_owned(),
        |a| enum_text(a.mode, |m: Mode| m.as_str_name()),
    );
    format!("{access}, {mode}")
}

/// A list of capabilities as `{"capabilities": [<item>…]}` and a table with one row each.
pub fn capabilities(items: Vec<(Value, Vec<String>)>, header: &[&'static str]) -> Reply {
    let (json, rows): (Vec<Value>, Vec<Vec<String>>) = items.into_iter().unzip();
    Reply::new(
        json!({ "capabilities": json }),
        vec![Block::Table(header.to_vec(), rows)],
    )
}

/// Controller, node and group capabilities: `{"rpc": {"type": "NAME"}}`, one column.
pub fn rpc_capability<E: TryFrom<i32>>(
    rpc_type: Option<i32>,
    name: impl Fn(E) -> &'static str + Copy,
) -> (Value, Vec<String>) {
    match rpc_type {
        Some(t) => (
            json!({ "rpc": { "type": enum_json(t, name) } }),
            vec![enum_text(t, name)],
        ),
        None => (json!({}), vec!["-".to_owned()]),
    }
}

pub fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

pub fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_owned()
    } else {
        s.to_owned()
    }
}
