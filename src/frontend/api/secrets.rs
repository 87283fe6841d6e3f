//! Request bodies that may carry CSP credentials: the decoded `kubernetes.io/secret/*` map
//! a FlexVolume `mount` brings (the same map CSI calls carry as `secrets`). It names the
//! backend, is held in memory only, and is never logged or echoed (no `Debug` here).

use crate::engine::Engine;
use crate::error::{Error, Result};
use serde::Deserialize;
use std::collections::BTreeMap;

/// `T` with an optional `"secrets": {…}` beside its fields.
#[derive(Deserialize)]
pub struct WithSecrets<T> {
    #[serde(flatten)]
    pub request: T,
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
}

/// The backend of a request: the one its secrets name (registered on first use), the one
/// it names by `backend`, or the default; naming two different ones is refused.
pub fn backend_of(
    engine: &Engine,
    named: Option<String>,
    secrets: &BTreeMap<String, String>,
) -> Result<Option<String>> {
    let named = named.filter(|n| !n.is_empty());
    let Some(by_secrets) = engine.backends().from_credentials(secrets)? else {
        return Ok(named);
    };
    match named {
        Some(n) if n != by_secrets => Err(Error::invalid(
            "backend",
            format!("'{n}' is not the backend the secrets name ('{by_secrets}'); give one or make them agree"),
        )),
        _ => Ok(Some(by_secrets)),
    }
}
