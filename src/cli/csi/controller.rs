//! `volbridge csi controller …`: the Controller service.

use super::args::{
    flatten, CapacityArgs, ControllerCommand, ControllerExpandArgs, ControllerPublishArgs,
    ControllerUnpublishArgs, CreateArgs, ListArgs, ListSnapshotsArgs, SnapshotArgs, ValidateArgs,
};
use super::call::Conn;
use super::convert::{self, map, secrets};
use super::render::{self, Block, Reply};
use crate::error::{Error, Result};
use serde_json::{json, Value};
use volbridge_proto::csi as pb;

pub fn create_request(a: &CreateArgs) -> Result<pb::CreateVolumeRequest> {
    let requirements =
        (!a.requisite.is_empty() || !a.preferred.is_empty()).then(|| pb::TopologyRequirement {
            requisite: a.requisite.iter().map(convert::topology).collect(),
            preferred: a.preferred.iter().map(convert::topology).collect(),
        });
    Ok(pb::CreateVolumeRequest {
        name: a.name.clone(),
        capacity_range: convert::capacity_range(a.size.as_deref(), a.limit.as_deref())?,
        volume_capabilities: vec![convert::capability(&a.capability)],
        parameters: map("--param", &a.params)?,
        secrets: secrets(&a.secrets.secrets)?,
        volume_content_source: convert::content_source(
            a.from_snapshot.as_deref(),
            a.from_volume.as_deref(),
        ),
        accessibility_requirements: requirements,
        mutable_parameters: map("--mutable-param", &a.mutable_params)?,
    })
}

pub fn publish_request(a: &ControllerPublishArgs) -> Result<pb::ControllerPublishVolumeRequest> {
    Ok(pb::ControllerPublishVolumeRequest {
        volume_id: a.volume_id.clone(),
        node_id: a.node_id.clone(),
        volume_capability: Some(convert::capability(&a.capability)),
        readonly: a.read_only,
        secrets: secrets(&a.secrets.secrets)?,
        volume_context: map("--volume-context", &flatten(&a.volume_context))?,
    })
}

pub fn unpublish_request(
    a: &ControllerUnpublishArgs,
) -> Result<pb::ControllerUnpublishVolumeRequest> {
    Ok(pb::ControllerUnpublishVolumeRequest {
        volume_id: a.volume_id.clone(),
        node_id: a.node_id.clone().unwrap_or_default(),
        secrets: secrets(&a.secrets.secrets)?,
    })
}

pub fn validate_request(a: &ValidateArgs) -> Result<pb::ValidateVolumeCapabilitiesRequest> {
    Ok(pb::ValidateVolumeCapabilitiesRequest {
        volume_id: a.volume_id.clone(),
        volume_context: map("--volume-context", &flatten(&a.volume_context))?,
        volume_capabilities: vec![convert::capability(&a.capability)],
        parameters: map("--param", &a.params)?,
        secrets: secrets(&a.secrets.secrets)?,
        mutable_parameters: Default::default(),
    })
}

pub fn capacity_request(a: &CapacityArgs) -> Result<pb::GetCapacityRequest> {
    Ok(pb::GetCapacityRequest {
        volume_capabilities: vec![],
        parameters: map("--param", &a.params)?,
        accessible_topology: a.topology.as_ref().map(convert::topology),
    })
}

pub fn snapshot_request(a: &SnapshotArgs) -> Result<pb::CreateSnapshotRequest> {
    Ok(pb::CreateSnapshotRequest {
        source_volume_id: a.source.clone(),
        name: a.name.clone(),
        secrets: secrets(&a.secrets.secrets)?,
        parameters: map("--param", &a.params)?,
    })
}

pub fn list_snapshots_request(a: &ListSnapshotsArgs) -> Result<pb::ListSnapshotsRequest> {
    Ok(pb::ListSnapshotsRequest {
        max_entries: a.page.max_entries,
        starting_token: a.page.starting_token.clone().unwrap_or_default(),
        source_volume_id: a.source.clone().unwrap_or_default(),
        snapshot_id: a.snapshot_id.clone().unwrap_or_default(),
        secrets: secrets(&a.secrets.secrets)?,
    })
}

pub fn expand_request(a: &ControllerExpandArgs) -> Result<pb::ControllerExpandVolumeRequest> {
    Ok(pb::ControllerExpandVolumeRequest {
        volume_id: a.volume_id.clone(),
        capacity_range: convert::capacity_range(Some(&a.size), a.limit.as_deref())?,
        secrets: secrets(&a.secrets.secrets)?,
        volume_capability: convert::optional_capability(&a.capability),
    })
}

/// Pages through a list: `fetch(token)` returns the entries of one page and its
/// next_token. With `all`, follows next_token to the end; a token that comes back twice
/// ends the walk with an error rather than a loop.
pub(super) async fn pages<T, F, Fut>(
    rpc: &str,
    page: &ListArgs,
    mut fetch: F,
) -> Result<(Vec<T>, String)>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, String)>>,
{
    let mut token = page.starting_token.clone().unwrap_or_default();
    let mut all = Vec::new();
    let mut seen = std::collections::HashSet::new();
    loop {
        let (entries, next) = fetch(token).await?;
        all.extend(entries);
        if !page.all || next.is_empty() {
            return Ok((all, next));
        }
        if !seen.insert(next.clone()) {
            return Err(Error::internal(format!(
                "{rpc}: the plugin returned next_token '{next}' twice; stopping"
            )));
        }
        token = next;
    }
}

pub async fn run(conn: &Conn, command: ControllerCommand) -> Result<Reply> {
    let c = conn.controller();
    match command {
        ControllerCommand::Create(a) => {
            let req = create_request(&a)?;
            let mut c = c;
            let r = conn
                .call(
                    "CreateVolume",
                    req,
                    |r| async move { c.create_volume(r).await },
                )
                .await?;
            let v = r
                .volume
                .ok_or_else(|| Error::internal("CreateVolume: the reply has no volume"))?;
            Ok(Reply::new(
                render::volume(&v),
                vec![Block::Fields(render::volume_rows(&v))],
            ))
        }
        ControllerCommand::Delete { volume_id, secrets } => {
            let req = pb::DeleteVolumeRequest {
                volume_id: volume_id.clone(),
                secrets: self::secrets(&secrets.secrets)?,
            };
            // DeleteVolume of an id the plugin does not know is success (CSI spec), so the
            // reply alone cannot tell a deletion from a wrong id: look at the list first.
            let listed = listed(conn, &volume_id).await;
            let mut c = c.clone();
            conn.call(
                "DeleteVolume",
                req,
                |r| async move { c.delete_volume(r).await },
            )
            .await?;
            Ok(match listed {
                Listed::Yes => Reply::done(format!("deleted volume {volume_id}")),
                Listed::Unknown => Reply::done(format!(
                    "DeleteVolume of volume id {volume_id} succeeded (the plugin cannot list \
                     volumes, so whether it had one by this id is not known)"
                )),
                Listed::No(count) => Reply::done(format!(
                    "no volume has id '{volume_id}': nothing was deleted"
                ))
                .warn(format!(
                    "DeleteVolume answered success, as CSI does for an id it does not know, \
                     but none of the {count} volume(s) ListVolumes lists has id \
                     '{volume_id}'. A volume's id is the plugin's and need not be the name it \
                     was created with: `volbridge csi controller list` shows the ids \
                     (CreateVolume's reply has it as volume_id)"
                )),
            })
        }
        ControllerCommand::Publish(a) => {
            let req = publish_request(&a)?;
            let mut c = c;
            let r = conn
                .call("ControllerPublishVolume", req, |r| async move {
                    c.controller_publish_volume(r).await
                })
                .await?;
            let mut rows = vec![("volume_id".to_owned(), a.volume_id.clone())];
            rows.push(("node_id".into(), a.node_id.clone()));
            rows.extend(
                r.publish_context
                    .iter()
                    .collect::<std::collections::BTreeMap<_, _>>()
                    .into_iter()
                    .map(|(k, v)| (format!("publish_context.{k}"), v.clone())),
            );
            Ok(Reply::new(
                json!({ "publish_context": render::map(&r.publish_context) }),
                vec![Block::Fields(rows)],
            ))
        }
        ControllerCommand::Unpublish(a) => {
            let req = unpublish_request(&a)?;
            let mut c = c;
            conn.call("ControllerUnpublishVolume", req, |r| async move {
                c.controller_unpublish_volume(r).await
            })
            .await?;
            let from = a
                .node_id
                .map_or_else(|| "every node".to_owned(), |n| format!("node {n}"));
            Ok(Reply::done(format!(
                "unpublished volume {} from {from}",
                a.volume_id
            )))
        }
        ControllerCommand::List(page) => {
            let (entries, next) = volume_pages(conn, &page).await?;
            Ok(list_volumes_reply(&entries, &next))
        }
        ControllerCommand::Get { volume_id } => {
            let req = pb::ControllerGetVolumeRequest { volume_id };
            let mut c = c;
            let r = conn
                .call("ControllerGetVolume", req, |r| async move {
                    c.controller_get_volume(r).await
                })
                .await?;
            let volume = r.volume.as_ref();
            let status = r.status.as_ref();
            let published = status
                .map(|s| s.published_node_ids.as_slice())
                .unwrap_or(&[]);
            let condition = status.and_then(|s| s.volume_condition.as_ref());
            let mut rows = volume.map(render::volume_rows).unwrap_or_default();
            rows.push(("published_nodes".into(), render::dash(&published.join(","))));
            rows.push(("condition".into(), render::condition_text(condition)));
            Ok(Reply::new(
                json!({
                    "volume": volume.map_or(Value::Null, render::volume),
                    "status": status.map_or(Value::Null, |_| render::volume_status(published, condition)),
                }),
                vec![Block::Fields(rows)],
            ))
        }
        ControllerCommand::Validate(a) => {
            let req = validate_request(&a)?;
            let mut c = c;
            let r = conn
                .call("ValidateVolumeCapabilities", req, |r| async move {
                    c.validate_volume_capabilities(r).await
                })
                .await?;
            Ok(validate_reply(&r))
        }
        ControllerCommand::Capacity(a) => {
            let req = capacity_request(&a)?;
            let mut c = c;
            let r = conn
                .call(
                    "GetCapacity",
                    req,
                    |r| async move { c.get_capacity(r).await },
                )
                .await?;
            let opt = |v: Option<i64>| v.map_or_else(|| "-".to_owned(), render::bytes_text);
            Ok(Reply::new(
                json!({
                    "available_capacity": r.available_capacity,
                    "maximum_volume_size": r.maximum_volume_size,
                    "minimum_volume_size": r.minimum_volume_size,
                }),
                vec![Block::Fields(vec![
                    ("available".into(), render::bytes_text(r.available_capacity)),
                    ("maximum_volume_size".into(), opt(r.maximum_volume_size)),
                    ("minimum_volume_size".into(), opt(r.minimum_volume_size)),
                ])],
            ))
        }
        ControllerCommand::Caps => {
            let mut c = c;
            let r = conn
                .call(
                    "ControllerGetCapabilities",
                    pb::ControllerGetCapabilitiesRequest {},
                    |r| async move { c.controller_get_capabilities(r).await },
                )
                .await?;
            Ok(caps_reply(&r.capabilities))
        }
        ControllerCommand::Snapshot(a) => {
            let req = snapshot_request(&a)?;
            let mut c = c;
            let r = conn
                .call("CreateSnapshot", req, |r| async move {
                    c.create_snapshot(r).await
                })
                .await?;
            let s = r
                .snapshot
                .ok_or_else(|| Error::internal("CreateSnapshot: the reply has no snapshot"))?;
            Ok(Reply::new(
                render::snapshot(&s),
                vec![Block::Table(
                    render::SNAPSHOT_HEADER.to_vec(),
                    vec![render::snapshot_row(&s)],
                )],
            ))
        }
        ControllerCommand::DeleteSnapshot {
            snapshot_id,
            secrets,
        } => {
            let req = pb::DeleteSnapshotRequest {
                snapshot_id: snapshot_id.clone(),
                secrets: self::secrets(&secrets.secrets)?,
            };
            let mut c = c;
            conn.call("DeleteSnapshot", req, |r| async move {
                c.delete_snapshot(r).await
            })
            .await?;
            Ok(Reply::done(format!("deleted snapshot {snapshot_id}")))
        }
        ControllerCommand::ListSnapshots(a) => {
            let first = list_snapshots_request(&a)?;
            let (entries, next) = pages("ListSnapshots", &a.page, |token| {
                let mut c = c.clone();
                let req = pb::ListSnapshotsRequest {
                    starting_token: token,
                    ..first.clone()
                };
                async move {
                    let r = conn
                        .call("ListSnapshots", req, |r| async move {
                            c.list_snapshots(r).await
                        })
                        .await?;
                    Ok((r.entries, r.next_token))
                }
            })
            .await?;
            let snaps: Vec<Option<&pb::Snapshot>> =
                entries.iter().map(|e| e.snapshot.as_ref()).collect();
            let mut human = vec![Block::Table(
                render::SNAPSHOT_HEADER.to_vec(),
                snaps
                    .iter()
                    .flatten()
                    .map(|s| render::snapshot_row(s))
                    .collect(),
            )];
            if !next.is_empty() {
                human.push(Block::Line(format!("next token: {next}")));
            }
            Ok(Reply::new(
                json!({
                    "entries": snaps.iter().map(|s| json!({
                        "snapshot": s.map_or(Value::Null, render::snapshot),
                    })).collect::<Vec<_>>(),
                    "next_token": next,
                }),
                human,
            ))
        }
        ControllerCommand::Expand(a) => {
            let req = expand_request(&a)?;
            let mut c = c;
            let r = conn
                .call("ControllerExpandVolume", req, |r| async move {
                    c.controller_expand_volume(r).await
                })
                .await?;
            Ok(Reply::new(
                json!({
                    "capacity_bytes": r.capacity_bytes,
                    "node_expansion_required": r.node_expansion_required,
                }),
                vec![Block::Fields(vec![
                    ("volume_id".into(), a.volume_id.clone()),
                    ("capacity".into(), render::bytes_text(r.capacity_bytes)),
                    (
                        "node_expansion_required".into(),
                        render::yes_no(r.node_expansion_required),
                    ),
                ])],
            ))
        }
        ControllerCommand::Modify {
            volume_id,
            params,
            secrets,
        } => {
            let req = pb::ControllerModifyVolumeRequest {
                volume_id: volume_id.clone(),
                secrets: self::secrets(&secrets.secrets)?,
                mutable_parameters: map("--param", &params)?,
            };
            let mut c = c;
            conn.call("ControllerModifyVolume", req, |r| async move {
                c.controller_modify_volume(r).await
            })
            .await?;
            Ok(Reply::done(format!("modified volume {volume_id}")))
        }
    }
}

/// ListVolumes from `page` on (every page with `--all`): the entries and the next token.
async fn volume_pages(
    conn: &Conn,
    page: &ListArgs,
) -> Result<(Vec<pb::list_volumes_response::Entry>, String)> {
    pages("ListVolumes", page, |token| {
        let mut c = conn.controller();
        let req = pb::ListVolumesRequest {
            max_entries: page.max_entries,
            starting_token: token,
        };
        async move {
            let r = conn
                .call(
                    "ListVolumes",
                    req,
                    |r| async move { c.list_volumes(r).await },
                )
                .await?;
            Ok((r.entries, r.next_token))
        }
    })
    .await
}

/// Whether a ListVolumes walk (every page) holds a volume id.
enum Listed {
    Yes,
    /// Not among this many listed volumes.
    No(usize),
    /// The plugin cannot list volumes, or the list failed.
    Unknown,
}

async fn listed(conn: &Conn, volume_id: &str) -> Listed {
    use pb::controller_service_capability::{rpc::Type as Rpc, Type};
    let mut c = conn.controller();
    let caps = conn
        .call(
            "ControllerGetCapabilities",
            pb::ControllerGetCapabilitiesRequest {},
            |r| async move { c.controller_get_capabilities(r).await },
        )
        .await;
    let can_list = caps.is_ok_and(|r| {
        r.capabilities.iter().any(|cap| {
            matches!(&cap.r#type, Some(Type::Rpc(rpc)) if rpc.r#type == Rpc::ListVolumes as i32)
        })
    });
    if !can_list {
        return Listed::Unknown;
    }
    let page = ListArgs {
        max_entries: 0,
        starting_token: None,
        all: true,
    };
    match volume_pages(conn, &page).await {
        Ok((entries, _)) => {
            let found = entries
                .iter()
                .any(|e| e.volume.as_ref().is_some_and(|v| v.volume_id == volume_id));
            if found {
                Listed::Yes
            } else {
                Listed::No(entries.len())
            }
        }
        Err(_) => Listed::Unknown,
    }
}

/// `{"entries": [{"volume": {...}, "status": {...}|null}], "next_token": "..."}`
pub fn list_volumes_reply(entries: &[pb::list_volumes_response::Entry], next: &str) -> Reply {
    let json_entries: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({
                "volume": e.volume.as_ref().map_or(Value::Null, render::volume),
                "status": e.status.as_ref().map_or(Value::Null, |s| {
                    render::volume_status(&s.published_node_ids, s.volume_condition.as_ref())
                }),
            })
        })
        .collect();
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let v = e.volume.as_ref();
            let s = e.status.as_ref();
            vec![
                v.map_or_else(String::new, |v| v.volume_id.clone()),
                v.map_or_else(|| "-".into(), |v| render::bytes_text(v.capacity_bytes)),
                s.map_or_else(
                    || "-".into(),
                    |s| render::dash(&s.published_node_ids.join(",")),
                ),
                render::condition_text(s.and_then(|s| s.volume_condition.as_ref())),
            ]
        })
        .collect();
    let mut human = vec![Block::Table(
        vec!["VOLUME_ID", "CAPACITY", "PUBLISHED_NODES", "CONDITION"],
        rows,
    )];
    if !next.is_empty() {
        human.push(Block::Line(format!("next token: {next}")));
    }
    Reply::new(
        json!({ "entries": json_entries, "next_token": next }),
        human,
    )
}

/// `{"confirmed": {"volume_context", "volume_capabilities", "parameters",
/// "mutable_parameters"}|null, "message": "..."}`
fn validate_reply(r: &pb::ValidateVolumeCapabilitiesResponse) -> Reply {
    let confirmed = r.confirmed.as_ref().map_or(Value::Null, |c| {
        json!({
            "volume_context": render::map(&c.volume_context),
            "volume_capabilities": c.volume_capabilities.iter().map(render::capability).collect::<Vec<_>>(),
            "parameters": render::map(&c.parameters),
            "mutable_parameters": render::map(&c.mutable_parameters),
        })
    });
    let mut rows = vec![(
        "confirmed".to_owned(),
        render::yes_no(r.confirmed.is_some()),
    )];
    if let Some(c) = &r.confirmed {
        rows.extend(
            c.volume_capabilities
                .iter()
                .map(|cap| ("capability".to_owned(), render::capability_text(cap))),
        );
    }
    if !r.message.is_empty() {
        rows.push(("message".into(), r.message.clone()));
    }
    Reply::new(
        json!({ "confirmed": confirmed, "message": r.message }),
        vec![Block::Fields(rows)],
    )
}

/// `{"capabilities": [{"rpc": {"type": "CREATE_DELETE_VOLUME"}}, …]}`
fn caps_reply(caps: &[pb::ControllerServiceCapability]) -> Reply {
    use pb::controller_service_capability::{rpc::Type as Rpc, Type};
    let items = caps
        .iter()
        .map(|c| {
            let Some(Type::Rpc(r)) = &c.r#type else {
                return render::rpc_capability(None, |t: Rpc| t.as_str_name());
            };
            render::rpc_capability(Some(r.r#type), |t: Rpc| t.as_str_name())
        })
        .collect();
    render::capabilities(items, &["CAPABILITY"])
}
