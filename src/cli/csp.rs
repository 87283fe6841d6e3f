//! `volbridge csp serve` (the local CSP alone) and `volbridge csp check` (any CSP).

use super::args::CspCommand;
use super::output::{self, Format};
use crate::conformance::{self, CheckOptions};
use crate::error::{Error, ErrorKind, Result};
use std::time::Duration;
use volbridge_local_csp::{load_or_generate_password, ExportChap, LocalCsp, LocalCspConfig};

pub async fn run(command: CspCommand, format: Format) -> Result<()> {
    match command {
        CspCommand::Serve {
            data_dir,
            listen,
            username,
            password,
            pool,
            overcommit,
            iscsi_portals,
            nvme_addresses,
            chap_user,
            chap_password,
        } => {
            let password = match password {
                Some(p) => p,
                None => {
                    let file = data_dir.join("password");
                    let p = load_or_generate_password(&file).map_err(|e| {
                        Error::internal(format!(
                            "cannot keep the password in {}: {e}",
                            file.display()
                        ))
                    })?;
                    eprintln!(
                        "volbridge: the password for '{username}' is in {}",
                        file.display()
                    );
                    p
                }
            };
            if !listen.ip().is_loopback() {
                tracing::warn!(%listen, "the local CSP serves plain HTTP; put it behind TLS before exposing it");
            }
            let dir = data_dir.clone();
            if !(overcommit >= 0.0 && overcommit.is_finite()) {
                return Err(Error::invalid(
                    "--overcommit",
                    "must be a number of times the pool's capacity, 0 or more (0: no limit)",
                ));
            }
            let exports: Vec<String> = iscsi_portals
                .iter()
                .map(|p| format!("iscsi at {p}"))
                .chain(nvme_addresses.iter().map(|a| format!("nvmetcp at {a}")))
                .collect();
            let csp = tokio::task::spawn_blocking(move || {
                let mut config = LocalCspConfig::new(dir, username, password);
                config.pool = pool;
                config.overcommit = overcommit;
                config.export.iscsi_portals = iscsi_portals;
                config.export.nvme_addresses = nvme_addresses;
                config.export.chap = chap_user
                    .zip(chap_password)
                    .map(|(user, password)| ExportChap { user, password });
                LocalCsp::open(config)
            })
            .await
            .map_err(|e| Error::internal(format!("start-up failed: {e}")))?
            .map_err(|e| Error::internal(format!("cannot open {}: {e}", data_dir.display())))?;
            let stop_signals = crate::daemon::StopSignals::watch();
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| Error::unavailable(format!("cannot listen on {listen}: {e}")))?;
            tracing::info!(url = %format!("http://{listen}"), data_dir = %data_dir.display(), "local CSP serving");
            if !exports.is_empty() {
                tracing::info!(exports = %exports.join(", "), "volumes are served over the network");
            }
            let closer = csp.clone();
            let served = csp
                .serve(listener, stop_signals.recv())
                .await
                .map_err(|e| Error::internal(format!("local CSP failed: {e}")));
            let _ = tokio::task::spawn_blocking(move || closer.close()).await;
            served
        }
        CspCommand::Check {
            url,
            username,
            password,
            array_ip,
            protocol,
            keep,
            insecure,
        } => {
            let opts = CheckOptions {
                url,
                username,
                password,
                array_ip,
                protocol,
                keep,
                insecure,
                poll_limit: Duration::from_secs(120),
            };
            let mut print = |r: &conformance::CheckResult| {
                if format == Format::Table {
                    println!("{r}");
                }
            };
            let report = conformance::run(&opts, &mut print).await?;
            if format == Format::Json {
                output::json(&report);
            }
            let mut summary = format!("{} passed, {} failed", report.passed(), report.failed());
            if report.warned() > 0 {
                summary.push_str(&format!(", {} warned", report.warned()));
            }
            if report.skipped() > 0 {
                summary.push_str(&format!(", {} skipped", report.skipped()));
            }
            if format == Format::Table {
                println!("{summary}");
            }
            if report.ok() {
                Ok(())
            } else {
                Err(Error::new(
                    ErrorKind::FailedPrecondition,
                    format!("the CSP failed the conformance check: {summary}"),
                ))
            }
        }
    }
}
