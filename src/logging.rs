//! Log set-up (tracing to stderr, text or JSON) and the redaction rule: a value whose key
//! names a secret is never written out.

use std::collections::BTreeMap;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Keys whose values are secrets wherever they appear (CSI secrets, backend maps, CHAP).
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "chap",
        "credential",
        "passphrase",
        "key",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// A copy of a string map fit for a log line or an error: secret values replaced.
pub fn redacted(map: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    map.iter()
        .map(|(k, v)| {
            let shown = if is_secret_key(k) {
                "***".to_owned()
            } else {
                v.clone()
            };
            (k.clone(), shown)
        })
        .collect()
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys_are_masked() {
        let map: BTreeMap<String, String> = [
            ("backend", "10.0.0.1"),
            ("username", "admin"),
            ("password", "hunter2"),
            ("chapPassword", "c"),
            ("csi.storage.k8s.io/secret", "s"),
            ("x-auth-token", "t"),
            ("private_key", "k"),
            ("chapUser", "visible"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let shown = redacted(&map);
        assert_eq!(shown["backend"], "10.0.0.1");
        assert_eq!(shown["username"], "admin");
        for k in [
            "password",
            "chapPassword",
            "csi.storage.k8s.io/secret",
            "x-auth-token",
        ] {
            assert_eq!(shown[k], "***", "{k}");
        }
    }
}
