//! `volbridge csi node …`: the Node service.

use super::args::{flatten, NodeCommand, NodeExpandArgs, NodePublishArgs, StageArgs};
use super::call::Conn;
use super::convert::{self, map, secrets};
use super::render::{self, Block, Reply};
use crate::error::Result;
use serde_json::{json, Value};
use volbridge_proto::csi as pb;

pub fn stage_request(a: &StageArgs) -> Result<pb::NodeStageVolumeRequest> {
    Ok(pb::NodeStageVolumeRequest {
        volume_id: a.volume_id.clone(),
        publish_context: map("--publish-context", &flatten(&a.publish_context))?,
        staging_target_path: a.staging_path.clone(),
        volume_capability: Some(convert::capability(&a.capability)),
        secrets: secrets(&a.secrets.secrets)?,
        volume_context: map("--volume-context", &flatten(&a.volume_context))?,
    })
}

pub fn publish_request(a: &NodePublishArgs) -> Result<pb::NodePublishVolumeRequest> {
    Ok(pb::NodePublishVolumeRequest {
        volume_id: a.volume_id.clone(),
        publish_context: map("--publish-context", &flatten(&a.publish_context))?,
        staging_target_path: a.staging_path.clone().unwrap_or_default(),
        target_path: a.target_path.clone(),
        volume_capability: Some(convert::capability(&a.capability)),
        readonly: a.read_only,
        secrets: secrets(&a.secrets.secrets)?,
        volume_context: map("--volume-context", &flatten(&a.volume_context))?,
    })
}

pub fn expand_request(a: &NodeExpandArgs) -> Result<pb::NodeExpandVolumeRequest> {
    Ok(pb::NodeExpandVolumeRequest {
        volume_id: a.volume_id.clone(),
        volume_path: a.path.clone(),
        capacity_range: convert::capacity_range(a.size.as_deref(), a.limit.as_deref())?,
        staging_target_path: a.staging_path.clone().unwrap_or_default(),
        volume_capability: convert::optional_capability(&a.capability),
        secrets: secrets(&a.secrets.secrets)?,
    })
}

pub async fn run(conn: &Conn, command: NodeCommand) -> Result<Reply> {
    let mut n = conn.node();
    match command {
        NodeCommand::Stage(a) => {
            let req = stage_request(&a)?;
            conn.call("NodeStageVolume", req, |r| async move {
                n.node_stage_volume(r).await
            })
            .await?;
            Ok(Reply::done(format!(
                "staged volume {} at {}",
                a.volume_id, a.staging_path
            )))
        }
        NodeCommand::Unstage {
            volume_id,
            staging_path,
        } => {
            let req = pb::NodeUnstageVolumeRequest {
                volume_id: volume_id.clone(),
                staging_target_path: staging_path.clone(),
            };
            conn.call("NodeUnstageVolume", req, |r| async move {
                n.node_unstage_volume(r).await
            })
            .await?;
            Ok(Reply::done(format!(
                "unstaged volume {volume_id} from {staging_path}"
            )))
        }
        NodeCommand::Publish(a) => {
            let req = publish_request(&a)?;
            conn.call("NodePublishVolume", req, |r| async move {
                n.node_publish_volume(r).await
            })
            .await?;
            Ok(Reply::done(format!(
                "published volume {} at {}",
                a.volume_id, a.target_path
            )))
        }
        NodeCommand::Unpublish {
            volume_id,
            target_path,
        } => {
            let req = pb::NodeUnpublishVolumeRequest {
                volume_id: volume_id.clone(),
                target_path: target_path.clone(),
            };
            conn.call("NodeUnpublishVolume", req, |r| async move {
                n.node_unpublish_volume(r).await
            })
            .await?;
            Ok(Reply::done(format!(
                "unpublished volume {volume_id} from {target_path}"
            )))
        }
        NodeCommand::Stats {
            volume_id,
            path,
            staging_path,
        } => {
            let req = pb::NodeGetVolumeStatsRequest {
                volume_id,
                volume_path: path,
                staging_target_path: staging_path.unwrap_or_default(),
            };
            let r = conn
                .call("NodeGetVolumeStats", req, |r| async move {
                    n.node_get_volume_stats(r).await
                })
                .await?;
            Ok(stats_reply(&r))
        }
        NodeCommand::Expand(a) => {
            let req = expand_request(&a)?;
            let r = conn
                .call("NodeExpandVolume", req, |r| async move {
                    n.node_expand_volume(r).await
                })
                .await?;
            Ok(Reply::new(
                json!({ "capacity_bytes": r.capacity_bytes }),
                vec![Block::Fields(vec![
                    ("volume_id".into(), a.volume_id.clone()),
                    ("capacity".into(), render::bytes_text(r.capacity_bytes)),
                ])],
            ))
        }
        NodeCommand::Info => {
            let r = conn
                .call("NodeGetInfo", pb::NodeGetInfoRequest {}, |r| async move {
                    n.node_get_info(r).await
                })
                .await?;
            let limit = match r.max_volumes_per_node {
                0 => "no limit".to_owned(),
                n => n.to_string(),
            };
            let topology = r
                .accessible_topology
                .as_ref()
                .map_or_else(|| "-".to_owned(), render::topology_text);
            Ok(Reply::new(
                json!({
                    "node_id": r.node_id,
                    "max_volumes_per_node": r.max_volumes_per_node,
                    "accessible_topology": r.accessible_topology.as_ref().map_or(Value::Null, render::topology),
                }),
                vec![Block::Fields(vec![
                    ("node_id".into(), r.node_id.clone()),
                    ("max_volumes_per_node".into(), limit),
                    ("topology".into(), topology),
                ])],
            ))
        }
        NodeCommand::Caps => {
            use pb::node_service_capability::{rpc::Type as Rpc, Type};
            let r = conn
                .call(
                    "NodeGetCapabilities",
                    pb::NodeGetCapabilitiesRequest {},
                    |r| async move { n.node_get_capabilities(r).await },
                )
                .await?;
            let items = r
                .capabilities
                .iter()
                .map(|c| {
                    let Some(Type::Rpc(r)) = &c.r#type else {
                        return render::rpc_capability(None, |t: Rpc| t.as_str_name());
                    };
                    render::rpc_capability(Some(r.r#type), |t: Rpc| t.as_str_name())
                })
                .collect();
            Ok(render::capabilities(items, &["CAPABILITY"]))
        }
    }
}

/// `{"usage": [{"unit": "BYTES", "total", "available", "used"}…], "volume_condition": …}`
pub fn stats_reply(r: &pb::NodeGetVolumeStatsResponse) -> Reply {
    use pb::volume_usage::Unit;
    let usage: Vec<Value> = r
        .usage
        .iter()
        .map(|u| {
            json!({
                "unit": render::enum_json(u.unit, |x: Unit| x.as_str_name()),
                "total": u.total,
                "available": u.available,
                "used": u.used,
            })
        })
        .collect();
    let rows: Vec<Vec<String>> = r
        .usage
        .iter()
        .map(|u| {
            let bytes = u.unit == Unit::Bytes as i32;
            let show = |n: i64| {
                if bytes {
                    render::bytes_text(n)
                } else {
                    n.to_string()
                }
            };
            vec![
                render::enum_text(u.unit, |x: Unit| x.as_str_name()),
                show(u.total),
                show(u.available),
                show(u.used),
            ]
        })
        .collect();
    Reply::new(
        json!({
            "usage": usage,
            "volume_condition": render::condition(r.volume_condition.as_ref()),
        }),
        vec![
            Block::Table(vec!["UNIT", "TOTAL", "AVAILABLE", "USED"], rows),
            Block::Line(format!(
                "condition: {}",
                render::condition_text(r.volume_condition.as_ref())
            )),
        ],
    )
}
