//! The plugin endpoints: exact-path routing of `POST /<Subsystem>.<Method>`, tolerant body
//! decoding (no Content-Type, empty bodies, `Opts: null`, trailing newline), and replies
//! with Docker's field names. Logical errors are 200 with `Err` (§6.2).

use super::errors::{err_text, malformed};
use super::options;
use super::{Docker, Mode};
use crate::engine::{DockerVolume, VolumeSource};
use crate::error::{Error, ErrorKind, Object, Result};
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1+json";
/// Largest request body read (Docker's are well under 1 KiB; options a few KiB).
const BODY_LIMIT: usize = 1 << 20;
/// Docker's Create and Mount deadline is 2 min, the others' 1 min (§9).
const LONG_BUDGET: Duration = Duration::from_secs(110);
const SHORT_BUDGET: Duration = Duration::from_secs(50);
/// A Get that misses asks the default backend for at most this long (global scope: a
/// volume made on another node), or [`LOCAL_ADOPT_BUDGET`] (local scope: one made by the
/// CLI, CSI or FlexVolume on this node).
const ADOPT_BUDGET: Duration = Duration::from_secs(5);
const LOCAL_ADOPT_BUDGET: Duration = Duration::from_secs(2);

pub fn router(docker: Docker) -> Router {
    Router::new().fallback(dispatch).with_state(docker)
}

fn reply(status: StatusCode, body: Value) -> Response {
    let mut text = body.to_string();
    text.push('\n');
    (status, [(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
}

fn ok(body: Value) -> Response {
    reply(StatusCode::OK, body)
}

/// A logical error: 200 with `Err` (and the extra fields a method always carries).
fn failed(e: &Error, mut extra: Map<String, Value>) -> Response {
    extra.insert("Err".into(), Value::String(err_text(e)));
    let mut response = ok(Value::Object(extra));
    response
        .extensions_mut()
        .insert(Outcome(crate::metrics::result_of_kind(e.kind)));
    response
}

/// The metrics' word for a 200 answer that carries an `Err`: the error's kind (`not_found`
/// for the Get that Docker sends before every Create).
#[derive(Clone, Copy)]
struct Outcome(&'static str);

/// Answers one call and counts it: `ok`, or the kind of the error an `Err` answer or a
/// refused request carries (`crate::metrics`).
async fn dispatch(state: State<Docker>, request: Request) -> Response {
    let started = std::time::Instant::now();
    let method = request
        .uri()
        .path()
        .strip_prefix("/VolumeDriver.")
        .or_else(|| request.uri().path().strip_prefix("/Plugin."))
        .filter(|m| KNOWN.contains(m))
        .unwrap_or("unknown")
        .to_owned();
    let response = answer(state, request).await;
    let result = match response.extensions().get::<Outcome>() {
        _ if response.status() != StatusCode::OK => {
            crate::metrics::result_of_http(response.status().as_u16())
        }
        Some(Outcome(word)) => word,
        None => "ok",
    };
    crate::metrics::operation("docker", &method, result, started.elapsed());
    response
}

/// Method names as metric labels (anything else is counted as `unknown`).
const KNOWN: [&str; 9] = [
    "Activate",
    "Create",
    "Remove",
    "Mount",
    "Unmount",
    "Path",
    "Get",
    "List",
    "Capabilities",
];

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct NameRequest {
    #[serde(rename = "Name")]
    name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CreateRequest {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Opts")]
    opts: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct MountRequest {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "ID")]
    id: String,
}

/// Empty and whitespace-only bodies are `{}`; anything else must be a JSON object.
#[allow(clippy::result_large_err)]
fn decode<T: DeserializeOwned + Default>(body: &Bytes) -> std::result::Result<T, Response> {
    let text = body.trim_ascii();
    if text.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(text).map_err(|e| {
        reply(
            StatusCode::BAD_REQUEST,
            json!({ "Err": malformed(&e.to_string()) }),
        )
    })
}

async fn answer(State(docker): State<Docker>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let known = matches!(
        path.as_str(),
        "/Plugin.Activate"
            | "/VolumeDriver.Create"
            | "/VolumeDriver.Remove"
            | "/VolumeDriver.Mount"
            | "/VolumeDriver.Unmount"
            | "/VolumeDriver.Path"
            | "/VolumeDriver.Get"
            | "/VolumeDriver.List"
            | "/VolumeDriver.Capabilities"
    );
    if !known {
        tracing::debug!(path = %path, "Docker: unknown endpoint");
        let shown: String = path.chars().take(100).collect();
        return reply(
            StatusCode::NOT_FOUND,
            json!({ "Err": super::errors::one_line(&format!("volbridge: unknown endpoint {shown}")) }),
        );
    }
    if request.method() != Method::POST {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({ "Err": format!("volbridge: unknown endpoint {} {path}; use POST", request.method()) }),
        );
    }
    let body = match axum::body::to_bytes(request.into_body(), BODY_LIMIT).await {
        Ok(b) => b,
        Err(e) => {
            return reply(
                StatusCode::BAD_REQUEST,
                json!({ "Err": malformed(&format!("cannot read the body: {e}")) }),
            )
        }
    };
    match path.as_str() {
        "/Plugin.Activate" => {
            tracing::debug!("Docker: Activate");
            ok(json!({ "Implements": ["VolumeDriver"] }))
        }
        "/VolumeDriver.Capabilities" => {
            tracing::debug!("Docker: Capabilities");
            ok(json!({ "Capabilities": { "Scope": docker.scope() } }))
        }
        "/VolumeDriver.List" => list(&docker).await,
        "/VolumeDriver.Get" => match decode::<NameRequest>(&body) {
            Ok(r) => get(&docker, &r.name).await,
            Err(resp) => resp,
        },
        "/VolumeDriver.Path" => match decode::<NameRequest>(&body) {
            Ok(r) => path_of(&docker, &r.name),
            Err(resp) => resp,
        },
        "/VolumeDriver.Create" => match decode::<CreateRequest>(&body) {
            Ok(r) => create(&docker, r).await,
            Err(resp) => resp,
        },
        "/VolumeDriver.Remove" => match decode::<NameRequest>(&body) {
            Ok(r) => remove(&docker, r.name).await,
            Err(resp) => resp,
        },
        "/VolumeDriver.Mount" => match decode::<MountRequest>(&body) {
            Ok(r) => mount(&docker, r).await,
            Err(resp) => resp,
        },
        "/VolumeDriver.Unmount" => match decode::<MountRequest>(&body) {
            Ok(r) => unmount(&docker, r).await,
            Err(resp) => resp,
        },
        _ => unreachable!("checked above"),
    }
}

/// RFC 3339, UTC, second precision.
fn rfc3339(secs: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn list_entry(v: &DockerVolume) -> Value {
    let mut m = Map::new();
    m.insert("Name".into(), Value::String(v.name.clone()));
    if let Some(p) = v.mountpoint() {
        m.insert("Mountpoint".into(), Value::String(p.display().to_string()));
    }
    m.insert("CreatedAt".into(), Value::String(rfc3339(v.created_at)));
    Value::Object(m)
}

/// The records, then the default backend's volumes this node has no record of (made by
/// another front end; `listing`).
async fn list(docker: &Docker) -> Response {
    let records = match docker.engine.docker_list() {
        Ok(all) => all,
        Err(e) => return failed(&e, Map::new()),
    };
    let others = docker.listing.names(&docker.engine).await;
    let known: std::collections::HashSet<&str> = records.iter().map(|v| v.name.as_str()).collect();
    let mut volumes: Vec<Value> = records.iter().map(list_entry).collect();
    volumes.extend(
        others
            .iter()
            .filter(|n| !known.contains(n.as_str()))
            .map(|n| json!({ "Name": n })),
    );
    ok(json!({ "Volumes": volumes, "Err": "" }))
}

fn status_of(docker: &Docker, v: &DockerVolume) -> Value {
    let mut s = Map::new();
    s.insert("volumeId".into(), json!(v.volume_id));
    s.insert("backend".into(), json!(v.backend));
    s.insert("sizeBytes".into(), json!(v.size_bytes));
    let fs = v
        .options
        .get("fsType")
        .map(|f| f.to_ascii_lowercase())
        .unwrap_or_else(|| v.fs_type.clone());
    if !fs.is_empty() {
        s.insert("fsType".into(), json!(fs));
    }
    s.insert("state".into(), json!(v.state()));
    s.insert("node".into(), json!(docker.engine.node().hostname));
    s.insert("mountRefs".into(), json!(v.total_refs()));
    s.insert("readOnly".into(), json!(v.read_only));
    if let Some(d) = &v.description {
        s.insert("description".into(), json!(d));
    }
    if let Some(src) = &v.source {
        s.insert("source".into(), json!(src));
    }
    Value::Object(s)
}

async fn get(docker: &Docker, name: &str) -> Response {
    let found = match docker.engine.docker_get(name) {
        Ok(f) => f,
        Err(e) => return failed(&e, Map::new()),
    };
    let found = match found {
        Some(v) => Some(v),
        // The default backend may hold a volume made by another front end (or, global
        // scope, on another node): one capped lookup, and Docker can use it as it is.
        None if known_name(name) => {
            let engine = docker.engine.clone();
            let n = name.to_owned();
            let budget = if docker.scope() == "global" {
                ADOPT_BUDGET
            } else {
                LOCAL_ADOPT_BUDGET
            };
            match tokio::time::timeout(budget, async move { engine.docker_adopt(&n, None).await })
                .await
            {
                Ok(Ok(v)) => Some(v),
                _ => None,
            }
        }
        None => None,
    };
    let Some(v) = found else {
        let mut response = ok(json!({ "Err": "no such volume" }));
        response.extensions_mut().insert(Outcome("not_found"));
        return response;
    };
    let mut volume = Map::new();
    // Docker takes the name from the reply: echo the request's bytes.
    volume.insert("Name".into(), Value::String(name.to_owned()));
    if let Some(p) = v.mountpoint() {
        volume.insert("Mountpoint".into(), Value::String(p.display().to_string()));
    }
    volume.insert("CreatedAt".into(), Value::String(rfc3339(v.created_at)));
    volume.insert("Status".into(), status_of(docker, &v));
    ok(json!({ "Volume": Value::Object(volume), "Err": "" }))
}

fn mountpoint_field(p: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("Mountpoint".into(), Value::String(p.to_owned()));
    m
}

fn no_such_volume(name: &str) -> Error {
    Error::not_found(format!("no such volume: {name:?}")).about(Object::Volume(name.to_owned()))
}

fn path_of(docker: &Docker, name: &str) -> Response {
    match docker.engine.docker_get(name) {
        Ok(Some(v)) => {
            let p = v
                .mountpoint()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            ok(json!({ "Mountpoint": p, "Err": "" }))
        }
        Ok(None) => failed(&no_such_volume(name), mountpoint_field("")),
        Err(e) => failed(&e, mountpoint_field("")),
    }
}

/// A name Docker makes a volume with: the user-name rule (`volbridge_proto::names`).
fn check_name(name: &str) -> Result<()> {
    volbridge_proto::names::check_user_name(name).map_err(|e| Error::invalid("name", e.to_string()))
}

/// A name that may be looked up: the stored-name rule, so no volume is locked out.
fn known_name(name: &str) -> bool {
    crate::engine::names::validate_name("name", name).is_ok()
}

/// The call budget of an operation (§9).
fn budget(docker: &Docker, long: bool) -> Duration {
    match (docker.config.call_budget, docker.config.mode) {
        (Some(b), _) => b,
        (None, Mode::Managed) => Duration::from_secs(25),
        (None, Mode::Legacy) if long => LONG_BUDGET,
        (None, Mode::Legacy) => SHORT_BUDGET,
    }
}

/// Runs an engine call as its own task within the budget; past it, the caller gets a
/// `timeout` error and the work goes on in the background.
async fn budgeted<T: Send + 'static>(
    docker: &Docker,
    what: &str,
    name: &str,
    long: bool,
    work: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    budgeted_flag(docker, what, name, long, None, work).await
}

/// [`budgeted`], raising `abandoned` when the budget runs out.
async fn budgeted_flag<T: Send + 'static>(
    docker: &Docker,
    what: &str,
    name: &str,
    long: bool,
    abandoned: Option<Arc<AtomicBool>>,
    work: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    let limit = budget(docker, long);
    let started = tokio::time::Instant::now();
    // Node work waits for the start-up reconciliation (Get/List/Path never do).
    let mut ready = docker.ready.clone();
    let opened = tokio::time::timeout(limit, ready.wait_for(|r| *r))
        .await
        .is_ok();
    let task = docker.tasks.spawn(work);
    let left = limit.saturating_sub(started.elapsed());
    let result = if !opened {
        Err(())
    } else {
        tokio::time::timeout(left, task).await.map_err(|_| ())
    };
    match result {
        Ok(Ok(r)) => r,
        Ok(Err(join)) => Err(Error::internal(format!("{what} task failed: {join}"))),
        Err(()) => Err({
            if let Some(flag) = &abandoned {
                flag.store(true, Ordering::SeqCst);
            }
            Error::new(
            ErrorKind::DeadlineExceeded,
            format!(
                "{what} of {name:?} did not finish within {}s; it continues in the background, retry the command",
                limit.as_secs()
            ),
        )
        }),
    }
}

async fn create(docker: &Docker, req: CreateRequest) -> Response {
    let opts = req.opts.unwrap_or_default();
    tracing::info!(volume = %req.name, options = ?opts.keys().collect::<Vec<_>>(), "Docker: Create");
    let result = async {
        check_name(&req.name)?;
        let parsed = options::parse(&req.name, &opts)?;
        if let Some(b) = &parsed.backend {
            if docker.engine.backends().resolve(Some(b)).is_err() {
                let known: Vec<String> = docker
                    .engine
                    .backends()
                    .all()
                    .map(|b| b.name.clone())
                    .collect();
                return Err(Error::invalid_option(format!(
                    "backend={b:?} is not a configured backend; configured: {}",
                    known.join(", ")
                )));
            }
        }
        if let (Some(VolumeSource::Volume(src)), Some(fs)) = (&parsed.source, opts_fs(&parsed)) {
            if let Some(s) = docker.engine.docker_get(src)? {
                if !s.fs_type.is_empty() && s.fs_type != fs {
                    return Err(Error::invalid_option(format!(
                        "fsType={fs:?} differs from the source's {}; omit fsType for clones",
                        s.fs_type
                    )));
                }
            }
        }
        let engine = docker.engine.clone();
        budgeted(docker, "create", &req.name, true, async move {
            engine.docker_create(parsed).await
        })
        .await
    }
    .await;
    match result {
        Ok(_) => ok(json!({ "Err": "" })),
        Err(e) => {
            tracing::info!(volume = %req.name, kind = %e.kind, error = %e.message, "Docker: Create failed");
            failed(&e, Map::new())
        }
    }
}

fn opts_fs(parsed: &crate::engine::DockerCreate) -> Option<String> {
    parsed.params.get("fsType").cloned()
}

async fn remove(docker: &Docker, name: String) -> Response {
    tracing::info!(volume = %name, "Docker: Remove");
    let engine = docker.engine.clone();
    let n = name.clone();
    let result = budgeted(docker, "remove", &name, false, async move {
        engine.docker_remove(&n).await
    })
    .await;
    match result {
        Ok(()) => ok(json!({ "Err": "" })),
        Err(e) => {
            tracing::info!(volume = %name, kind = %e.kind, error = %e.message, "Docker: Remove failed");
            failed(&e, Map::new())
        }
    }
}

async fn mount(docker: &Docker, req: MountRequest) -> Response {
    tracing::info!(volume = %req.name, id = %req.id, "Docker: Mount");
    if !known_name(&req.name) {
        return failed(&no_such_volume(&req.name), mountpoint_field(""));
    }
    let engine = docker.engine.clone();
    let (n, id) = (req.name.clone(), req.id.clone());
    let abandoned = Arc::new(AtomicBool::new(false));
    let flag = abandoned.clone();
    let result = budgeted_flag(
        docker,
        "mount",
        &req.name,
        true,
        Some(abandoned),
        async move { engine.docker_mount(&n, &id, Some(flag)).await },
    )
    .await;
    match result {
        Ok(path) => ok(json!({ "Mountpoint": path.display().to_string(), "Err": "" })),
        Err(e) => {
            tracing::info!(volume = %req.name, kind = %e.kind, error = %e.message, "Docker: Mount failed");
            failed(&e, mountpoint_field(""))
        }
    }
}

async fn unmount(docker: &Docker, req: MountRequest) -> Response {
    tracing::info!(volume = %req.name, id = %req.id, "Docker: Unmount");
    let engine = docker.engine.clone();
    let (n, id) = (req.name.clone(), req.id.clone());
    let result = budgeted(docker, "unmount", &req.name, false, async move {
        engine.docker_unmount(&n, &id).await
    })
    .await;
    match result {
        Ok(()) => ok(json!({ "Err": "" })),
        Err(e) => {
            tracing::warn!(volume = %req.name, kind = %e.kind, error = %e.message, "Docker: Unmount failed");
            failed(&e, Map::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("db1").is_ok());
        assert!(check_name(&"a".repeat(64)).is_ok());
        assert!(check_name(&"a".repeat(128)).is_ok());
        for bad in [
            "",
            "a/b",
            "..",
            "a..b",
            "-x",
            ".x",
            "my vol",
            &"a".repeat(129),
        ] {
            let e = check_name(bad).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("name"), "{bad}");
        }
        let e = check_name("my vol").unwrap_err();
        assert_eq!(
            err_text(&e),
            "volbridge: invalid name: \"my vol\" may contain only letters, digits, '_', '.', '-'"
        );
    }

    #[test]
    fn created_at_is_rfc3339_utc_seconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_262_400), "2026-11-21T12:00:00Z");
    }
}
