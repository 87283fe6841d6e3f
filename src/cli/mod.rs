//! The `volbridge` command line: `serve` and `csp serve` run servers; every other command is
//! a client of the daemon's admin API (or, for `csp check`, of any CSP).

pub mod args;
mod client;
mod csp;
mod output;
mod volumes;

pub use args::Cli;

use crate::error::{Error, ErrorKind};
use args::{BackendCommand, Command};
use client::AdminClient;
use volbridge_proto::admin::{BackendInfo, DaemonStatus};

/// The exit code of each error kind: scripts can tell "not found" from "try again".
pub fn exit_code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Internal => 1,
        ErrorKind::InvalidArgument | ErrorKind::OutOfRange => 2,
        ErrorKind::NotFound => 3,
        ErrorKind::AlreadyExists => 4,
        ErrorKind::FailedPrecondition => 5,
        ErrorKind::Aborted => 6,
        ErrorKind::Unavailable => 7,
        ErrorKind::DeadlineExceeded => 8,
        ErrorKind::ResourceExhausted => 9,
        ErrorKind::Unimplemented => 10,
    }
}

/// Prints an error as one line that says what to do, and gives the exit code.
pub fn report(e: &Error) -> u8 {
    eprintln!("volbridge: {}", e.message);
    exit_code(e.kind)
}

/// Runs a client command (everything but `serve` and `csp serve`).
pub async fn run_client(cli: Cli) -> Result<(), Error> {
    let format = cli.output;
    match cli.command {
        Command::Serve(_) => unreachable!("serve runs in its own runtime"),
        Command::Csp { command } => csp::run(command, format).await,
        Command::Volume { command } => {
            volumes::volume(&AdminClient::new(&cli.socket)?, command, format).await
        }
        Command::Snapshot { command } => {
            volumes::snapshot(&AdminClient::new(&cli.socket)?, command, format).await
        }
        Command::Backend {
            command: BackendCommand::Ls,
        } => {
            let list: Vec<BackendInfo> = AdminClient::new(&cli.socket)?
                .get("/v1/backends", &[])
                .await?;
            output::backends(format, &list);
            Ok(())
        }
        Command::Status => {
            let s: DaemonStatus = AdminClient::new(&cli.socket)?
                .get("/v1/status", &[])
                .await?;
            match format {
                output::Format::Json => output::json(&s),
                output::Format::Table => {
                    let mut rows = vec![
                        vec!["version".into(), s.version.clone()],
                        vec!["state dir".into(), s.state_dir.clone()],
                        vec!["default backend".into(), s.default_backend.clone()],
                        vec!["pending intents".into(), s.pending_intents.to_string()],
                    ];
                    rows.extend(
                        s.reconciled
                            .iter()
                            .map(|a| vec!["reconciled".into(), a.clone()]),
                    );
                    output::table(&["FIELD", "VALUE"], &rows);
                }
            }
            Ok(())
        }
    }
}
