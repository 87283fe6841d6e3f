//! The `volbridge` command line: `serve` and `csp serve` run servers; every other command is
//! a client of the daemon's admin API (or, for `csp check`, of any CSP).

pub mod args;
mod client;
pub mod csi;
mod csp;
pub mod docker;
pub mod flex;
mod node;
mod output;
mod progress;
pub use output::Format;
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

/// `volbridge completion SHELL`: the script on stdout (a reader that stops early, as
/// `| head` does, is no error).
pub fn completion(shell: args::CompletionShell) -> Result<(), Error> {
    use clap::CommandFactory;
    use clap_complete::Shell;
    use std::io::Write;
    let shell = match shell {
        args::CompletionShell::Bash => Shell::Bash,
        args::CompletionShell::Zsh => Shell::Zsh,
        args::CompletionShell::Fish => Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "volbridge", &mut script);
    match std::io::stdout().lock().write_all(&script) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::internal(format!(
            "cannot write the completion script: {e}"
        ))),
        _ => Ok(()),
    }
}

/// `volbridge man --dir DIR`: a page per command, named as `man` finds them
/// (`volbridge.1`, `volbridge-volume-mount.1`); prints what it wrote.
pub fn man(dir: &std::path::Path) -> Result<(), Error> {
    use clap::CommandFactory;
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::precondition(format!("cannot make {}: {e}", dir.display())))?;
    let cmd = Cli::command().version(crate::build_info::VERSION);
    clap_mangen::generate_to(cmd, dir).map_err(|e| {
        Error::precondition(format!(
            "cannot write the man pages into {}: {e}",
            dir.display()
        ))
    })?;
    let mut pages: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| Error::internal(format!("cannot list {}: {e}", dir.display())))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("volbridge") && n.ends_with(".1"))
        .collect();
    pages.sort();
    println!(
        "wrote {} man pages into {} (volbridge.1 and one per subcommand)",
        pages.len(),
        dir.display()
    );
    Ok(())
}

/// `volbridge doctor`: checks the protocols of the config (or `local`), prints a table, and
/// fails (exit 5) when something required is missing.
fn doctor(config: Option<&std::path::Path>, format: output::Format) -> Result<(), Error> {
    use crate::host::doctor::{self, Status};
    let config = crate::config::Config::load(config)?;
    let is_root = rustix::process::geteuid().is_root();
    let mut checks = doctor::run(&crate::host::RealHost, &config.node.protocols, is_root);
    if config.local_csp.enabled {
        checks.push(pool_check(&config));
    }
    match format {
        output::Format::Json => output::json(&checks),
        output::Format::Table => {
            let rows: Vec<Vec<String>> = checks
                .iter()
                .map(|c| {
                    let s = match c.status {
                        Status::Ok => "ok",
                        Status::Warn => "warn",
                        Status::Fail => "FAIL",
                    };
                    vec![c.name.clone(), s.into(), c.detail.clone()]
                })
                .collect();
            output::table(&["CHECK", "STATUS", "DETAIL"], &rows);
        }
    }
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    if failed > 0 {
        return Err(Error::precondition(format!(
            "{failed} required check(s) failed; install what the table names"
        )));
    }
    Ok(())
}

/// Which pool the embedded local CSP uses (or would make) for its data dir, and why.
fn pool_check(config: &crate::config::Config) -> crate::host::doctor::Check {
    use crate::host::doctor::{Check, Status};
    let data_dir = config.csp_data_dir();
    let (status, detail) = match volbridge_local_csp::preview_pool(&data_dir, config.local_csp.pool)
    {
        Ok((mode, true, reason)) => (
            Status::Ok,
            format!("{mode}, reflink: {reason} ({})", data_dir.display()),
        ),
        Ok((mode, false, reason)) => (
            Status::Warn,
            format!(
                "{mode}, snapshots and clones copy data: {reason} ({})",
                data_dir.display()
            ),
        ),
        Err(e) => (Status::Fail, e.to_string()),
    };
    Check {
        name: "local CSP pool".into(),
        status,
        detail,
    }
}

/// Runs a client command (everything but `serve` and `csp serve`).
pub async fn run_client(cli: Cli) -> Result<(), Error> {
    let format = cli.output;
    match cli.command {
        Command::Serve(_)
        | Command::Config { .. }
        | Command::Completion { .. }
        | Command::Man { .. } => {
            unreachable!("serve, config, completion and man run without the admin API")
        }
        Command::Csp { command } => csp::run(command, format).await,
        Command::Csi(args) => csi::run(args, format).await,
        Command::Flex { command } => flex::run(command, format),
        Command::Volume { command } => {
            let client = AdminClient::new(&cli.socket)?;
            match node::volume(&client, command, format).await? {
                Some(other) => volumes::volume(&client, other, format).await,
                None => Ok(()),
            }
        }
        Command::Docker { command } => {
            docker::run(&AdminClient::new(&cli.socket)?, command, format).await
        }
        Command::Node => node::node(&AdminClient::new(&cli.socket)?, format).await,
        Command::Reconcile => node::reconcile(&AdminClient::new(&cli.socket)?, format).await,
        Command::Doctor { config } => doctor(config.as_deref(), format),
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
