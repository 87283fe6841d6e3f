//! One [`CspClient`] per backend identity, so every caller shares one token (A5).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::client::{ClientOptions, CspClient};
use super::credentials::Credentials;
use volbridge_base::error::Result;

/// Clients by [`Credentials::cache_key`], created on demand, plus clients registered under
/// backend names (the config file's backends).
#[derive(Default)]
pub struct Provider {
    options: ClientOptions,
    by_key: Mutex<HashMap<String, CspClient>>,
    by_name: Mutex<BTreeMap<String, CspClient>>,
}

impl Provider {
    pub fn with_options(options: ClientOptions) -> Provider {
        Provider {
            options,
            ..Provider::default()
        }
    }

    /// The client for these credentials; a changed password yields a fresh client (and so
    /// a fresh login).
    pub fn client(&self, creds: &Credentials) -> Result<CspClient> {
        let key = creds.cache_key();
        let mut map = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = map.get(&key) {
            return Ok(c.clone());
        }
        let client = CspClient::new(creds.clone(), self.options.clone())?;
        map.insert(key, client.clone());
        Ok(client)
    }

    /// Registers a client under a backend name (replacing any earlier one).
    pub fn insert(&self, name: &str, client: CspClient) {
        let key = client.credentials().cache_key();
        self.by_key
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_insert_with(|| client.clone());
        self.by_name
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), client);
    }

    pub fn named(&self, name: &str) -> Option<CspClient> {
        self.by_name
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// Backend names in order.
    pub fn names(&self) -> Vec<String> {
        self.by_name
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Unregisters a named backend; the caller may [`CspClient::logout`] the result.
    pub fn remove(&self, name: &str) -> Option<CspClient> {
        let client = self
            .by_name
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)?;
        self.by_key
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&client.credentials().cache_key());
        Some(client)
    }

    /// Best-effort logout of every client (A8), e.g. when the daemon stops.
    pub async fn logout_all(&self) {
        let mut clients: HashMap<String, CspClient> = HashMap::new();
        for c in self
            .by_key
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .chain(
                self.by_name
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .values(),
            )
        {
            clients
                .entry(c.credentials().cache_key())
                .or_insert_with(|| c.clone());
        }
        for c in clients.values() {
            c.logout().await;
        }
    }
}
