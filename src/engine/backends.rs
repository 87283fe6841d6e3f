//! The backends the engine serves: named CSP clients from the config (the embedded local
//! CSP among them), and one default.

use super::model::BackendStatus;
use crate::error::{Error, Result};
use crate::provider::CspClient;
use std::collections::BTreeMap;

#[derive(Clone)]
pub struct Backend {
    pub name: String,
    pub client: CspClient,
    pub embedded: bool,
}

#[derive(Clone, Default)]
pub struct Backends {
    by_name: BTreeMap<String, Backend>,
    default: String,
}

impl Backends {
    pub fn new(default: impl Into<String>) -> Backends {
        Backends {
            by_name: BTreeMap::new(),
            default: default.into(),
        }
    }

    pub fn add(&mut self, backend: Backend) {
        self.by_name.insert(backend.name.clone(), backend);
    }

    pub fn default_name(&self) -> &str {
        &self.default
    }

    /// The named backend, or the default one when no name is given.
    pub fn resolve(&self, name: Option<&str>) -> Result<&Backend> {
        let name = name.filter(|n| !n.is_empty()).unwrap_or(&self.default);
        self.by_name.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
            Error::invalid(
                "backend",
                format!(
                    "no backend named '{name}'; configured: {}",
                    known.join(", ")
                ),
            )
        })
    }

    pub fn all(&self) -> impl Iterator<Item = &Backend> {
        self.by_name.values()
    }

    /// Reachability and capacity of every backend, asked concurrently.
    pub async fn status(&self) -> Vec<BackendStatus> {
        let mut asks = tokio::task::JoinSet::new();
        for (index, b) in self.by_name.values().enumerate() {
            let b = b.clone();
            let default = b.name == self.default;
            asks.spawn(async move {
                let (reachable, capacity, error) = match b.client.capacity().await {
                    Ok(c) => (
                        true,
                        c.and_then(|c| Some((c.total_bytes?, c.free_bytes?))),
                        None,
                    ),
                    Err(e) => (false, None, Some(e.message)),
                };
                let status = BackendStatus {
                    name: b.name.clone(),
                    url: b.client.base_url().to_owned(),
                    default,
                    embedded: b.embedded,
                    reachable,
                    capacity,
                    error,
                };
                (index, status)
            });
        }
        let mut out: Vec<(usize, BackendStatus)> = asks.join_all().await;
        out.sort_by_key(|(i, _)| *i);
        out.into_iter().map(|(_, s)| s).collect()
    }
}
