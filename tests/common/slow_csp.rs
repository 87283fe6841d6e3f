//! A fake CSP that is slow where real arrays are: its volume create and delete take
//! [`SLOW`]. It keeps what it made, by name, so that a test sees whether a call the daemon
//! was asked for ran to its end. Logins and capacity answer at once, as do lookups by name
//! and snapshot probes (there are none); anything else is 404.

use axum::http::{Method, StatusCode, Uri};
use axum::response::IntoResponse;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long the fake array takes to create or delete a volume.
pub const SLOW: Duration = Duration::from_secs(6);

/// The volumes the fake holds, by name.
pub type Volumes = Arc<Mutex<BTreeMap<String, serde_json::Value>>>;

/// Serves the fake on a loopback port (on the calling runtime): the port and what it holds.
pub async fn slow_csp() -> (u16, Volumes) {
    let volumes = Arc::new(Mutex::new(BTreeMap::new()));
    let held = volumes.clone();
    let app =
        axum::Router::new().fallback(move |method: Method, uri: Uri, body: axum::body::Bytes| {
            let held = held.clone();
            async move {
                let path = uri.path().trim_start_matches("/containers/v1/").to_owned();
                let query = uri.query().unwrap_or("").to_owned();
                let reply = |status: u16, body: String| {
                    (
                        StatusCode::from_u16(status).unwrap(),
                        [("content-type", "application/json")],
                        body,
                    )
                        .into_response()
                };
                match (method.as_str(), path.as_str()) {
                    ("POST", "tokens") => reply(200, r#"{"id":"t","session_token":"s"}"#.into()),
                    ("GET", "capacity") => reply(
                        200,
                        r#"{"total_bytes":1099511627776,"free_bytes":1099511627776,"used_bytes":0}"#
                            .into(),
                    ),
                    ("GET", "volumes") => {
                        let held = held.lock().unwrap();
                        let found: Vec<_> = match query.strip_prefix("name=") {
                            Some(name) => held.get(name).cloned().into_iter().collect(),
                            None => held.values().cloned().collect(),
                        };
                        reply(200, serde_json::Value::from(found).to_string())
                    }
                    ("POST", "volumes") => {
                        let asked: serde_json::Value =
                            serde_json::from_slice(&body).unwrap_or_default();
                        let name = asked["name"].as_str().unwrap_or("").to_owned();
                        tokio::time::sleep(SLOW).await;
                        let mut made = asked.clone();
                        made["id"] = format!("id-{name}").into();
                        made["published"] = false.into();
                        held.lock().unwrap().insert(name, made.clone());
                        reply(200, made.to_string())
                    }
                    ("GET", "snapshots") => reply(200, "[]".into()),
                    ("DELETE", _) if path.starts_with("volumes/id-") => {
                        let name = path.trim_start_matches("volumes/id-").to_owned();
                        tokio::time::sleep(SLOW).await;
                        held.lock().unwrap().remove(&name);
                        reply(204, String::new())
                    }
                    _ => reply(404, r#"{"errors":[{"code":"Not Found","message":"no"}]}"#.into()),
                }
            }
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, volumes)
}

/// A daemon config file in `dir` whose default backend is the CSP at the loopback `port`.
pub fn default_backend_config(dir: &Path, name: &str, port: u16, password: &str) -> PathBuf {
    let config = dir.join("volbridge.toml");
    std::fs::write(
        &config,
        format!(
            "default_backend = \"{name}\"\n\n[backends.{name}]\nbackend = \"{name}\"\n\
             serviceName = \"127.0.0.1\"\nservicePort = \"{port}\"\nusername = \"u\"\n\
             password = \"{password}\"\n"
        ),
    )
    .unwrap();
    config
}
