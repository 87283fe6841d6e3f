//! `volbridge docker refs|release`: the Docker front end's mount references, and the way
//! out when Docker never sent an Unmount (a crashed dockerd, a lost reply).

use super::client::{segment, AdminClient};
use super::output::{self, Format};
use crate::error::Result;
use clap::Subcommand;
use volbridge_proto::admin::{DockerRefs, DockerReleaseInfo, ReleaseRequest};

#[derive(Debug, Subcommand)]
pub enum DockerCommand {
    /// Show the Docker volumes and their mount IDs on this node.
    Refs {
        /// One volume (default: all).
        volume: Option<String>,
    },
    /// Drop mount references Docker never released, and unmount the volume once none is
    /// left. Refused while a container still has the volume mounted, unless --force.
    Release {
        volume: String,
        /// Drop only this mount ID.
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        force: bool,
    },
}

pub async fn run(client: &AdminClient, command: DockerCommand, format: Format) -> Result<()> {
    match command {
        DockerCommand::Refs { volume } => {
            let mut all: Vec<DockerRefs> = client.get("/v1/docker/volumes", &[]).await?;
            if let Some(v) = &volume {
                all.retain(|r| &r.name == v);
                if all.is_empty() {
                    return Err(crate::Error::not_found(format!(
                        "Docker knows no volume '{v}' on this node"
                    )));
                }
            }
            match format {
                Format::Json => output::json(&all),
                Format::Table => {
                    let mut rows = Vec::new();
                    for r in &all {
                        let ids = if r.refs.is_empty() {
                            "-".to_owned()
                        } else {
                            r.refs
                                .iter()
                                .map(|(id, n)| format!("{}×{n}", &id[..id.len().min(12)]))
                                .collect::<Vec<_>>()
                                .join(" ")
                        };
                        rows.push(vec![
                            r.name.clone(),
                            r.state.clone(),
                            r.refs
                                .values()
                                .map(|n| u64::from(*n))
                                .sum::<u64>()
                                .to_string(),
                            ids,
                            r.mountpoint.clone().unwrap_or_default(),
                        ]);
                    }
                    output::table(
                        &["VOLUME", "STATE", "REFS", "MOUNT IDS", "MOUNTPOINT"],
                        &rows,
                    );
                }
            }
            Ok(())
        }
        DockerCommand::Release { volume, id, force } => {
            let path = format!("/v1/docker/volumes/{}/release", segment(&volume));
            let done: DockerReleaseInfo = client
                .post(&path, &[], &ReleaseRequest { id, force })
                .await?;
            match format {
                Format::Json => output::json(&done),
                Format::Table => {
                    let tail = if done.unmounted {
                        "; unmounted and detached"
                    } else if done.remaining > 0 {
                        "; still mounted for the remaining references"
                    } else {
                        ""
                    };
                    println!(
                        "{}: dropped {} reference(s), {} left{tail}",
                        done.volume, done.dropped, done.remaining
                    );
                }
            }
            Ok(())
        }
    }
}
