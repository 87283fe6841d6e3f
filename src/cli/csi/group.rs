//! `volbridge csi group …`: the GroupController service.

use super::args::GroupCommand;
use super::call::Conn;
use super::convert::{map, secrets};
use super::render::{self, Reply};
use crate::error::{Error, Result};
use volbridge_proto::csi as pb;

pub async fn run(conn: &Conn, command: GroupCommand) -> Result<Reply> {
    let mut g = conn.group();
    match command {
        GroupCommand::Caps => {
            use pb::group_controller_service_capability::{rpc::Type as Rpc, Type};
            let r = conn
                .call(
                    "GroupControllerGetCapabilities",
                    pb::GroupControllerGetCapabilitiesRequest {},
                    |r| async move { g.group_controller_get_capabilities(r).await },
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
        GroupCommand::Snapshot {
            name,
            sources,
            params,
            secrets,
        } => {
            let req = pb::CreateVolumeGroupSnapshotRequest {
                name,
                source_volume_ids: sources,
                secrets: self::secrets(&secrets.secrets)?,
                parameters: map("--param", &params)?,
            };
            let r = conn
                .call("CreateVolumeGroupSnapshot", req, |r| async move {
                    g.create_volume_group_snapshot(r).await
                })
                .await?;
            group_reply("CreateVolumeGroupSnapshot", r.group_snapshot)
        }
        GroupCommand::Delete {
            group_snapshot_id,
            snapshot_ids,
            secrets,
        } => {
            let req = pb::DeleteVolumeGroupSnapshotRequest {
                group_snapshot_id: group_snapshot_id.clone(),
                snapshot_ids,
                secrets: self::secrets(&secrets.secrets)?,
            };
            conn.call("DeleteVolumeGroupSnapshot", req, |r| async move {
                g.delete_volume_group_snapshot(r).await
            })
            .await?;
            Ok(Reply::done(format!(
                "deleted group snapshot {group_snapshot_id}"
            )))
        }
        GroupCommand::Get {
            group_snapshot_id,
            snapshot_ids,
            secrets,
        } => {
            let req = pb::GetVolumeGroupSnapshotRequest {
                group_snapshot_id,
                snapshot_ids,
                secrets: self::secrets(&secrets.secrets)?,
            };
            let r = conn
                .call("GetVolumeGroupSnapshot", req, |r| async move {
                    g.get_volume_group_snapshot(r).await
                })
                .await?;
            group_reply("GetVolumeGroupSnapshot", r.group_snapshot)
        }
    }
}

fn group_reply(rpc: &str, g: Option<pb::VolumeGroupSnapshot>) -> Result<Reply> {
    let g = g.ok_or_else(|| Error::internal(format!("{rpc}: the reply has no group_snapshot")))?;
    Ok(Reply::new(
        render::group_snapshot(&g),
        render::group_snapshot_blocks(&g),
    ))
}
