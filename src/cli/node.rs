//! `volbridge volume mount|unmount|attach|detach|stats`, `volbridge node` and
//! `volbridge reconcile`: this machine's side of volumes.

use super::args::VolumeCommand;
use super::client::{segment, AdminClient};
use super::output::{self, Format};
use crate::engine::size::human;
use crate::error::Result;
use volbridge_proto::admin::{
    AttachRequest, MountInfo, MountRequest, NodeInfo, ReconcileInfo, UnmountInfo, UnmountRequest,
    VolumeStatsInfo,
};

/// Runs a node subcommand of `volume`; `Err(command)` hands back the others.
pub async fn volume(
    client: &AdminClient,
    command: VolumeCommand,
    format: Format,
) -> Result<Option<VolumeCommand>> {
    match command {
        VolumeCommand::Mount {
            name,
            path,
            read_only,
            block,
            fs_type,
            mount_options,
            backend,
        } => {
            let req = MountRequest {
                path,
                backend: backend.backend,
                read_only,
                block,
                fs_type,
                mount_options,
            };
            let path = format!("/v1/volumes/{}/mount", segment(&name));
            let m: MountInfo = client.post(&path, &[], &req).await?;
            mounted(format, &m);
        }
        VolumeCommand::Unmount {
            name,
            path,
            backend,
        } => {
            let req = UnmountRequest {
                path: path.clone(),
                backend: backend.backend,
            };
            let url = format!("/v1/volumes/{}/unmount", segment(&name));
            let u: UnmountInfo = client.post(&url, &[], &req).await?;
            match format {
                Format::Json => output::json(&u),
                Format::Table if u.unmounted => println!("unmounted {name} from {path}"),
                Format::Table => println!("{name} was not mounted at {path}"),
            }
        }
        VolumeCommand::Attach {
            name,
            read_only,
            backend,
        } => {
            let req = AttachRequest {
                backend: backend.backend,
                read_only,
            };
            let url = format!("/v1/volumes/{}/attach", segment(&name));
            let m: MountInfo = client.post(&url, &[], &req).await?;
            match format {
                Format::Json => output::json(&m),
                Format::Table => println!("attached {} as {}", m.volume, m.device),
            }
        }
        VolumeCommand::Detach { name, backend } => {
            let req = AttachRequest {
                backend: backend.backend,
                read_only: false,
            };
            let url = format!("/v1/volumes/{}/detach", segment(&name));
            let v: serde_json::Value = client.post(&url, &[], &req).await?;
            match format {
                Format::Json => output::json(&v),
                Format::Table => println!("detached {name}"),
            }
        }
        VolumeCommand::Stats {
            name,
            path,
            backend,
        } => {
            let url = format!("/v1/volumes/{}/stats", segment(&name));
            let mut query = vec![("backend", backend.backend.as_deref().unwrap_or(""))];
            if let Some(p) = path.as_deref() {
                query.push(("path", p));
            }
            let s: VolumeStatsInfo = client.get(&url, &query).await?;
            stats(format, &s);
        }
        other => return Ok(Some(other)),
    }
    Ok(None)
}

fn mounted(format: Format, m: &MountInfo) {
    match format {
        Format::Json => output::json(m),
        Format::Table => {
            let what = match (&m.fs_type, m.formatted) {
                (Some(fs), true) => format!(" (formatted {fs})"),
                (Some(fs), false) => format!(" ({fs})"),
                (None, _) => " (block device)".to_owned(),
            };
            let ro = if m.read_only { ", read-only" } else { "" };
            println!(
                "mounted {} at {} from {}{what}{ro}",
                m.volume, m.path, m.device
            );
        }
    }
}

fn stats(format: Format, s: &VolumeStatsInfo) {
    if format == Format::Json {
        return output::json(s);
    }
    let opt = |v: Option<u64>, f: fn(u64) -> String| v.map(f).unwrap_or_else(|| "-".into());
    let mut rows = vec![
        vec!["volume".into(), s.volume.clone()],
        vec!["path".into(), s.path.clone()],
        vec![
            "condition".into(),
            if s.healthy {
                "healthy".into()
            } else {
                format!("abnormal: {}", s.message)
            },
        ],
        vec!["size".into(), opt(s.total_bytes, human)],
    ];
    if s.used_bytes.is_some() {
        rows.push(vec!["used".into(), opt(s.used_bytes, human)]);
        rows.push(vec!["available".into(), opt(s.available_bytes, human)]);
        rows.push(vec![
            "inodes used/total".into(),
            format!(
                "{}/{}",
                opt(s.used_inodes, |v| v.to_string()),
                opt(s.total_inodes, |v| v.to_string())
            ),
        ]);
    }
    output::table(&["FIELD", "VALUE"], &rows);
}

pub async fn node(client: &AdminClient, format: Format) -> Result<()> {
    let n: NodeInfo = client.get("/v1/node", &[]).await?;
    if format == Format::Json {
        output::json(&n);
        return Ok(());
    }
    println!("node {} ({})", n.hostname, n.uuid);
    let rows: Vec<Vec<String>> = n
        .volumes
        .iter()
        .map(|v| {
            vec![
                v.volume.clone(),
                v.backend.clone(),
                v.access_protocol.clone(),
                if v.block {
                    "block".into()
                } else {
                    v.fs_type.clone().unwrap_or_default()
                },
                v.phase.clone(),
                if v.published_at.is_empty() {
                    "-".into()
                } else {
                    v.published_at.join(",")
                },
            ]
        })
        .collect();
    output::table(
        &["VOLUME", "BACKEND", "PROTOCOL", "FS", "PHASE", "MOUNTED AT"],
        &rows,
    );
    Ok(())
}

pub async fn reconcile(client: &AdminClient, format: Format) -> Result<()> {
    let r: ReconcileInfo = client
        .post("/v1/reconcile", &[], &serde_json::json!({}))
        .await?;
    match format {
        Format::Json => output::json(&r),
        Format::Table if r.actions.is_empty() => println!("nothing to do"),
        Format::Table => {
            for a in &r.actions {
                println!("{a}");
            }
        }
    }
    Ok(())
}
