//! `volbridge-flex`: the FlexVolume driver of volbridge (`shared/specs/flexvolume.md`).
//!
//! kubelet and kube-controller-manager run it as `<exe> <command> [args…]` and parse its
//! stdout and stderr, combined, as one JSON object. It is a thin, stateless client of the
//! node daemon's admin API (`volbridge serve`, unix socket): it parses argv and the options
//! JSON, sends the daemon what to do, prints the answer and logs one line. No engine here.
//!
//! Contract kept by construction: stderr is `/dev/null` from the first instruction, exactly
//! one `write` of one object and `\n` reaches stdout (a panic included), exit 0 for Success
//! and Not supported, 1 for Failure. `init` reads only `/etc/volbridge/flex.toml`.

mod client;
mod commands;
mod config;
mod errors;
mod host;
mod log;
mod names;
mod options;
mod output;

use std::time::{Instant, SystemTime};

fn main() {
    output::silence_stderr();
    output::install_panic_hook();
    let started = Instant::now();
    let now = SystemTime::now();
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let config = config::Config::load();
    let outcome = match &config {
        Ok(c) => {
            log::set_path(&c.log_file);
            output::set_log_hint(&c.log_file);
            commands::run(c, &args)
        }
        Err(f) => {
            if let Some(log) = config::Config::fallback_log_file() {
                log::set_path(&log);
                output::set_log_hint(&log);
            }
            commands::Outcome::failed(f)
        }
    };
    output::print(&outcome.reply);
    let debug = config.as_ref().is_ok_and(|c| c.debug);
    log::write(&log::Record {
        ts: log::timestamp(now),
        pid: std::process::id(),
        cmd: args.first().map(String::as_str).unwrap_or(""),
        args: args
            .iter()
            .skip(1)
            .map(|a| options::redact_arg(a))
            .collect(),
        status: outcome.reply.status,
        message: outcome.reply.message.as_deref(),
        ms: (started.elapsed().as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
        request_ids: outcome.request_ids,
        warnings: outcome.warnings,
        timings: if debug { outcome.timings } else { Vec::new() },
    });
    std::process::exit(outcome.reply.exit_code());
}
