//! `volbridge volume …` and `volbridge snapshot …`.

use super::args::{SnapshotCommand, VolumeCommand};
use super::client::{segment, AdminClient};
use super::output::{self, Format};
use super::progress::{self, Watched};
use crate::error::Result;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use volbridge_proto::admin::{
    SnapshotCreateRequest, SnapshotInfo, VolumeCreateRequest, VolumeExpandRequest, VolumeInfo,
};
use volbridge_proto::options;

fn backend_query(backend: &Option<String>) -> Vec<(&'static str, &str)> {
    vec![("backend", backend.as_deref().unwrap_or(""))]
}

/// `-o key=value` of `volume create|clone`: the CSP settings of the one option table
/// (`thick`, `destroyOnDelete`), the first format's (`fsType`, `mkfsOptions`, `fsOwner`,
/// `fsMode`) and `csp.<name>`, into the volume's config as Docker puts them; anything else
/// is refused with the nearest name or the flag that does it (docs/vocabulary.md).
fn csp_options(pairs: Vec<(String, String)>) -> Result<BTreeMap<String, String>> {
    let parsed = options::parse(
        options::FrontEnd::Cli,
        pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    )
    .map_err(|e| crate::Error::invalid_option(format!("-o: {e}")))?;
    Ok(parsed.volume_config())
}

/// `rm A B C`: each name is tried; a refusal is printed and the others still go. The exit
/// code is the first refusal's (3 for a name that does not exist).
async fn remove_each(
    client: &AdminClient,
    format: Format,
    kind: &str,
    names: &[String],
    backend: &Option<String>,
) -> Result<()> {
    let mut failed: Vec<crate::Error> = Vec::new();
    for name in names {
        let path = format!("/v1/{kind}s/{}", segment(name));
        match client.delete(&path, &backend_query(backend)).await {
            Ok(()) => removed(format, kind, name),
            Err(e) if names.len() == 1 => return Err(e),
            Err(e) => {
                eprintln!("volbridge: {}", e.message);
                failed.push(e);
            }
        }
    }
    match failed.first() {
        None => Ok(()),
        Some(first) => Err(crate::Error::new(
            first.kind,
            format!("{} of {} {kind}s not removed", failed.len(), names.len()),
        )),
    }
}

fn removed(format: Format, kind: &str, name: &str) {
    match format {
        Format::Json => output::json(&json!({ "name": name, "kind": kind, "removed": true })),
        Format::Table => println!("removed {kind} {name}"),
    }
}

pub async fn volume(client: &AdminClient, command: VolumeCommand, format: Format) -> Result<()> {
    match command {
        VolumeCommand::Create {
            name,
            size,
            options,
            description,
            backend,
        } => {
            let req = VolumeCreateRequest {
                name,
                size: size.map(Value::String),
                backend: backend.backend,
                description,
                options: csp_options(options)?,
                ..Default::default()
            };
            let v: VolumeInfo = client.post("/v1/volumes", &[], &req).await?;
            output::volume(format, &v);
        }
        VolumeCommand::Clone {
            name,
            from_snapshot,
            from_volume,
            size,
            options,
            backend,
        } => {
            let source = from_snapshot.as_deref().map(|s| format!("snapshot '{s}'"));
            let source = source.or_else(|| from_volume.as_deref().map(|v| format!("volume '{v}'")));
            let title = format!("cloning '{name}' from {}", source.unwrap_or_default());
            let req = VolumeCreateRequest {
                name,
                size: size.map(Value::String),
                backend: backend.backend,
                options: csp_options(options)?,
                from_snapshot,
                from_volume,
                ..Default::default()
            };
            let watched = Watched::Clone {
                name: &req.name,
                from_volume: req.from_volume.as_deref(),
                backend: req.backend.as_deref(),
            };
            let v: VolumeInfo = progress::watch(
                client,
                format,
                &title,
                watched,
                client.post("/v1/volumes", &[], &req),
            )
            .await?;
            output::volume(format, &v);
        }
        VolumeCommand::Ls { backend } => {
            let list: Vec<VolumeInfo> = client
                .get("/v1/volumes", &backend_query(&backend.backend))
                .await?;
            output::volumes(format, &list);
        }
        VolumeCommand::Inspect { name, backend } => {
            let path = format!("/v1/volumes/{}", segment(&name));
            let v: VolumeInfo = client.get(&path, &backend_query(&backend.backend)).await?;
            output::volume(format, &v);
        }
        VolumeCommand::Expand {
            name,
            size,
            backend,
        } => {
            let path = format!("/v1/volumes/{}/expand", segment(&name));
            let title = format!("expanding '{name}' to {size}");
            let req = VolumeExpandRequest {
                size: Value::String(size),
            };
            let query = backend_query(&backend.backend);
            let v: VolumeInfo = progress::watch(
                client,
                format,
                &title,
                Watched::Opaque,
                client.post(&path, &query, &req),
            )
            .await?;
            output::volume(format, &v);
        }
        VolumeCommand::Rm { names, backend } => {
            remove_each(client, format, "volume", &names, &backend.backend).await?;
        }
        // Node subcommands are handled in `node.rs` before this match.
        VolumeCommand::Mount { .. }
        | VolumeCommand::Unmount { .. }
        | VolumeCommand::Attach { .. }
        | VolumeCommand::Detach { .. }
        | VolumeCommand::Stats { .. } => {
            return Err(crate::Error::internal(
                "node command reached the volume handler",
            ))
        }
    }
    Ok(())
}

pub async fn snapshot(
    client: &AdminClient,
    command: SnapshotCommand,
    format: Format,
) -> Result<()> {
    match command {
        SnapshotCommand::Create {
            name,
            volume,
            description,
            backend,
        } => {
            let title = format!("snapshotting '{volume}' as '{name}'");
            let req = SnapshotCreateRequest {
                name,
                volume,
                backend: backend.backend,
                description,
            };
            let watched = Watched::Snapshot {
                name: &req.name,
                backend: req.backend.as_deref(),
            };
            let s: SnapshotInfo = progress::watch(
                client,
                format,
                &title,
                watched,
                client.post("/v1/snapshots", &[], &req),
            )
            .await?;
            output::snapshot(format, &s);
        }
        SnapshotCommand::Ls { volume, backend } => {
            let mut query = backend_query(&backend.backend);
            query.push(("volume", volume.as_deref().unwrap_or("")));
            let list: Vec<SnapshotInfo> = client.get("/v1/snapshots", &query).await?;
            output::snapshots(format, &list);
        }
        SnapshotCommand::Inspect { name, backend } => {
            let path = format!("/v1/snapshots/{}", segment(&name));
            let s: SnapshotInfo = client.get(&path, &backend_query(&backend.backend)).await?;
            output::snapshot(format, &s);
        }
        SnapshotCommand::Rm { names, backend } => {
            remove_each(client, format, "snapshot", &names, &backend.backend).await?;
        }
    }
    Ok(())
}
