//! Log set-up: tracing to stderr, text or JSON; inside a Docker managed plugin, split
//! between stdout and stderr by level. The redaction rules live in `volbridge_base::redact`
//! (every layer redacts; only the daemon installs a subscriber).

use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::writer::MakeWriterExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
pub use volbridge_base::redact::{
    is_secret_key, redact_values, redact_values_as, redacted, REDACTED,
};

/// Where the lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Streams {
    /// Every line to stderr (a host process, systemd, a terminal).
    Stderr,
    /// Inside a Docker managed plugin (`--docker-mode=managed`, or the Swarm CSI plugin):
    /// dockerd logs a plugin's stdout at `level=info` and its stderr at `level=error`, so
    /// info, debug and trace lines go to stdout and warnings and errors to stderr. Each line
    /// keeps its own level word (`INFO`, `WARN`, `ERROR`).
    Split,
}

impl Streams {
    /// Split inside a managed plugin: the Docker front end in `managed` mode, or CSI for
    /// Swarm (Docker serves cluster volumes only through a managed plugin).
    pub fn for_daemon(config: &crate::config::Config) -> Streams {
        let docker_managed = config.docker.enabled && config.docker.mode == "managed";
        if docker_managed || config.csi.orchestrator == "swarm" {
            Streams::Split
        } else {
            Streams::Stderr
        }
    }
}

/// Installs the global subscriber once; `RUST_LOG` overrides `level`. Both take
/// `level` or `target=level,…` (`Targets`, not `EnvFilter`: no regex engine in the binary,
/// which keeps the daemon's resident size down).
pub fn init(level: &str, json: bool, streams: Streams) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<Targets>().ok())
        .or_else(|| level.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    use std::io::IsTerminal;
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match streams {
        Streams::Stderr => {
            let fmt = tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_target(false);
            if json {
                registry.with(fmt.json().flatten_event(true)).try_init()
            } else {
                registry.with(fmt).try_init()
            }
        }
        Streams::Split => {
            // `with_max_level(WARN)`: WARN and ERROR (the less verbose levels) to stderr.
            let writer = std::io::stderr
                .with_max_level(tracing::Level::WARN)
                .or_else(std::io::stdout);
            let fmt = tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_ansi(false)
                .with_target(false);
            if json {
                registry.with(fmt.json().flatten_event(true)).try_init()
            } else {
                registry.with(fmt).try_init()
            }
        }
    };
}
