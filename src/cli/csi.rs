//! `volbridge csi …`: a client for any CSI endpoint, in the spirit of `csc` (rexray/gocsi).
//! Operators drive a CSI driver by hand with it: every RPC of Identity, Controller, Node
//! and GroupController, one subcommand each.
//!
//! Each call has a time limit (`--timeout`); a gRPC error becomes the crate's error with
//! the matching kind (so the exit code tells NotFound from Unavailable) and the message
//! `"<RPC>: <code>: <message>"`. `--secret` values never appear in output, error text or
//! debug logs. With `-O json` each reply is one JSON object: field names as in the proto,
//! enum values by their proto names, int64 as numbers, timestamps as RFC 3339, every field
//! present (an unset message is `null`; of a oneof, only the member that is set); replies
//! that hold one message (CreateVolume, CreateSnapshot, the group snapshot calls) print
//! that message itself; empty replies print `{}`.

pub mod args;
mod call;
mod controller;
mod convert;
mod group;
mod node;
mod render;
#[cfg(test)]
mod server_tests;
#[cfg(test)]
mod tests;

pub use args::CsiArgs;
pub use render::{Block, Reply};

use super::output::Format;
use crate::error::Result;
use args::{CsiCommand, IdentityCommand};
use call::Conn;
use render::enum_json;
use serde_json::json;
use volbridge_proto::csi as pb;

/// Runs one `volbridge csi` command and prints its reply.
pub async fn run(args: CsiArgs, format: Format) -> Result<()> {
    execute(args).await?.print(format);
    Ok(())
}

/// Runs one `volbridge csi` command and returns its reply, unprinted.
pub async fn execute(args: CsiArgs) -> Result<Reply> {
    let conn = Conn::open(args.endpoint.as_deref(), args.timeout)?;
    match args.command {
        CsiCommand::Identity { command } => identity(&conn, command).await,
        CsiCommand::Controller { command } => controller::run(&conn, command).await,
        CsiCommand::Node { command } => node::run(&conn, command).await,
        CsiCommand::Group { command } => group::run(&conn, command).await,
    }
}

async fn identity(conn: &Conn, command: IdentityCommand) -> Result<Reply> {
    let mut c = conn.identity();
    match command {
        // {"name", "vendor_version", "manifest": {...}}
        IdentityCommand::Info => {
            let r = conn
                .call(
                    "GetPluginInfo",
                    pb::GetPluginInfoRequest {},
                    |r| async move { c.get_plugin_info(r).await },
                )
                .await?;
            let mut rows = vec![
                ("name".to_owned(), r.name.clone()),
                ("vendor_version".to_owned(), r.vendor_version.clone()),
            ];
            let mut manifest: Vec<_> = r.manifest.iter().collect();
            manifest.sort();
            rows.extend(
                manifest
                    .into_iter()
                    .map(|(k, v)| (format!("manifest.{k}"), v.clone())),
            );
            Ok(Reply::new(
                json!({
                    "name": r.name,
                    "vendor_version": r.vendor_version,
                    "manifest": render::map(&r.manifest),
                }),
                vec![Block::Fields(rows)],
            ))
        }
        // {"capabilities": [{"service": {"type": "CONTROLLER_SERVICE"}},
        //                   {"volume_expansion": {"type": "ONLINE"}}, …]}
        IdentityCommand::Caps => {
            use pb::plugin_capability::{service, volume_expansion, Type};
            let r = conn
                .call(
                    "GetPluginCapabilities",
                    pb::GetPluginCapabilitiesRequest {},
                    |r| async move { c.get_plugin_capabilities(r).await },
                )
                .await?;
            let items = r
                .capabilities
                .iter()
                .map(|cap| match &cap.r#type {
                    Some(Type::Service(s)) => {
                        let name = |t: service::Type| t.as_str_name();
                        (
                            json!({ "service": { "type": enum_json(s.r#type, name) } }),
                            vec!["service".into(), render::enum_text(s.r#type, name)],
                        )
                    }
                    Some(Type::VolumeExpansion(e)) => {
                        let name = |t: volume_expansion::Type| t.as_str_name();
                        (
                            json!({ "volume_expansion": { "type": enum_json(e.r#type, name) } }),
                            vec!["volume_expansion".into(), render::enum_text(e.r#type, name)],
                        )
                    }
                    None => (json!({}), vec!["-".into(), "-".into()]),
                })
                .collect();
            Ok(render::capabilities(items, &["KIND", "TYPE"]))
        }
        // {"ready": bool}; an unset `ready` means ready (CSI spec).
        IdentityCommand::Probe => {
            let r = conn
                .call(
                    "Probe",
                    pb::ProbeRequest {},
                    |r| async move { c.probe(r).await },
                )
                .await?;
            let ready = r.ready.unwrap_or(true);
            Ok(Reply::new(
                json!({ "ready": ready }),
                vec![Block::Line(
                    if ready { "ready" } else { "not ready" }.into(),
                )],
            ))
        }
    }
}
