//! The backends the engine serves: named CSP clients from the config (the embedded local
//! CSP among them), one default, and backends named by the credentials a request carries
//! (CSI `secrets`), registered on first use.

use crate::model::BackendStatus;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use volbridge_base::error::{Error, Result};
use volbridge_provider::{ClientOptions, Credentials, CspClient};

#[derive(Clone)]
pub struct Backend {
    pub name: String,
    pub client: CspClient,
    pub embedded: bool,
}

/// Makes a client for credentials a request carries. The daemon passes one that speaks
/// HTTP(S); the engine itself holds no HTTP client.
pub type Connector = Arc<dyn Fn(Credentials, ClientOptions) -> Result<CspClient> + Send + Sync>;

#[derive(Clone, Default)]
pub struct Backends {
    by_name: BTreeMap<String, Backend>,
    default: String,
    /// Backends met through request credentials, by name.
    by_request: Arc<Mutex<BTreeMap<String, Backend>>>,
    options: ClientOptions,
    connect: Option<Connector>,
}

impl Backends {
    pub fn new(default: impl Into<String>) -> Backends {
        Backends {
            default: default.into(),
            ..Backends::default()
        }
    }

    /// How clients for request-named backends are made (limits, timeouts).
    pub fn with_options(mut self, options: ClientOptions) -> Backends {
        self.options = options;
        self
    }

    /// How clients for backends named by request credentials are made.
    pub fn with_connector(mut self, connect: Connector) -> Backends {
        self.connect = Some(connect);
        self
    }

    /// The backend a credentials map (CSI `secrets`) names: a configured backend with the
    /// same identity, or one registered now as `<username>@<backend>`. A changed password
    /// replaces the registered client. A map without any credential key (empty, or secrets
    /// meant for something else) names no backend: the default.
    pub fn from_credentials(&self, map: &BTreeMap<String, String>) -> Result<Option<String>> {
        if !Credentials::named_in(map) {
            return Ok(None);
        }
        let creds = Credentials::from_map(map)?;
        let key = creds.cache_key();
        if let Some(b) = self
            .by_name
            .values()
            .find(|b| b.client.credentials().cache_key() == key)
        {
            return Ok(Some(b.name.clone()));
        }
        let name = format!("{}@{}", creds.username(), creds.backend());
        let mut by_request = self.by_request.lock().unwrap_or_else(|e| e.into_inner());
        let current = by_request
            .get(&name)
            .is_some_and(|b| b.client.credentials().cache_key() == key);
        if !current {
            let connect = self.connect.as_ref().ok_or_else(|| {
                Error::new(
                    volbridge_base::ErrorKind::Unimplemented,
                    "this engine reaches only its configured backends; a backend named in \
                     the request's secrets cannot be used here",
                )
            })?;
            let client = connect(creds, self.options.clone())?;
            by_request.insert(
                name.clone(),
                Backend {
                    name: name.clone(),
                    client,
                    embedded: false,
                },
            );
        }
        Ok(Some(name))
    }

    pub fn add(&mut self, backend: Backend) {
        self.by_name.insert(backend.name.clone(), backend);
    }

    pub fn default_name(&self) -> &str {
        &self.default
    }

    /// The named backend, or the default one when no name is given.
    pub fn resolve(&self, name: Option<&str>) -> Result<Backend> {
        let name = name.filter(|n| !n.is_empty()).unwrap_or(&self.default);
        if let Some(b) = self.by_name.get(name) {
            return Ok(b.clone());
        }
        let by_request = self.by_request.lock().unwrap_or_else(|e| e.into_inner());
        by_request.get(name).cloned().ok_or_else(|| {
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
                    Ok(c) => (true, c, None),
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
