//! Log set-up: tracing to stderr, text or JSON. The redaction rules live in
//! `volbridge_base::redact` (every layer redacts; only the daemon installs a subscriber).

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
pub use volbridge_base::redact::{
    is_secret_key, redact_values, redact_values_as, redacted, REDACTED,
};

/// Installs the global subscriber once; `RUST_LOG` overrides `level`. Both take
/// `level` or `target=level,…` (`Targets`, not `EnvFilter`: no regex engine in the binary,
/// which keeps the daemon's resident size down).
pub fn init(level: &str, json: bool) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<Targets>().ok())
        .or_else(|| level.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    use std::io::IsTerminal;
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let registry = tracing_subscriber::registry().with(filter);
    let _ = if json {
        registry.with(fmt.json().flatten_event(true)).try_init()
    } else {
        registry.with(fmt).try_init()
    };
}
