//! Test harness: a real server on 127.0.0.1:0 over a private temp data dir.
#![allow(dead_code)]

use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use volbridge_local_csp::{LocalCsp, LocalCspConfig, PoolChoice};

pub const USER: &str = "admin";
pub const PASSWORD: &str = "test-password";
pub const GIB: u64 = 1 << 30;
pub const MIB: u64 = 1 << 20;

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let mut rnd = [0u8; 8];
        getrandom(&mut rnd);
        let name: String = rnd.iter().map(|b| format!("{b:02x}")).collect();
        let p = std::env::temp_dir().join(format!("vb-local-{tag}-{name}"));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        release_pool(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Unmounts an image pool a test left under `dir` (a server still running, or killed) and
/// frees its loop device, so removing the directory never reaches into a mounted pool.
pub fn release_pool(dir: &Path) {
    let Ok(dir) = std::fs::canonicalize(dir) else {
        return;
    };
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for target in mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|t| Path::new(t).starts_with(&dir))
    {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(target)
            .status();
    }
    for e in std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(b) = std::fs::read_to_string(e.path().join("loop/backing_file")) else {
            continue;
        };
        if Path::new(b.trim_end()).starts_with(&dir) {
            let dev = format!("/dev/{}", e.file_name().to_string_lossy());
            let _ = std::process::Command::new("losetup")
                .args(["-d", &dev])
                .status();
        }
    }
}

fn getrandom(buf: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(buf)
        .unwrap();
}

pub struct Server {
    pub csp: LocalCsp,
    pub addr: SocketAddr,
    pub client: Client,
    pub token: String,
    pub prefix: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    pub async fn start(dir: &Path) -> Server {
        Self::start_with(dir, PoolChoice::Auto).await
    }

    /// A server whose images stay in the data dir itself (tests that edit image files
    /// between runs, when an image pool would be unmounted).
    pub async fn start_dir(dir: &Path) -> Server {
        Self::start_with(dir, PoolChoice::Dir).await
    }

    pub async fn start_with(dir: &Path, pool: PoolChoice) -> Server {
        // A stopped server's connection tasks can still hold a router clone (and so the
        // data-dir lock) for a moment after `stop` returns; a restart waits that out.
        for _ in 0..200 {
            let mut config = LocalCspConfig::new(dir, USER, PASSWORD);
            config.pool = pool;
            match LocalCsp::open(config) {
                Ok(csp) => return Self::serve(csp).await,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    tokio::time::sleep(std::time::Duration::from_millis(25)).await
                }
                Err(e) => panic!("open: {e}"),
            }
        }
        panic!(
            "data dir {} stayed locked after the previous server stopped",
            dir.display()
        )
    }

    pub async fn serve(csp: LocalCsp) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(csp.clone().serve(listener, async move {
            let _ = rx.await;
        }));
        let task = tokio::spawn(async move {
            task.await.unwrap().unwrap();
        });
        let client = http_client().pool_max_idle_per_host(64).build().unwrap();
        let mut s = Server {
            csp,
            addr,
            client,
            token: String::new(),
            prefix: "/containers/v1".into(),
            stop: Some(tx),
            task: Some(task),
        };
        s.token = s.login().await;
        s
    }

    pub async fn login(&self) -> String {
        let (st, body) = self
            .raw(
                Method::POST,
                "/tokens",
                Some(json!({"username": USER, "password": PASSWORD, "array_ip": ""})),
                None,
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{body}");
        body["session_token"].as_str().unwrap().to_owned()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}{}", self.addr, self.prefix, path)
    }

    /// Sends a request; returns the status and the body as JSON (`Null` when empty).
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut rb = self
            .client
            .request(method, self.url(path))
            .header("accept", "application/json")
            .header("content-type", "application/json");
        if let Some(t) = token {
            rb = rb.header("x-auth-token", t);
        }
        if let Some(b) = body {
            rb = rb.body(b.to_string());
        }
        let resp = rb.send().await.unwrap();
        decode(resp).await
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let token = self.token.clone();
        self.raw(method, path, body, Some(&token)).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }
    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, None).await
    }

    /// Creates a volume and returns it (asserting 200).
    pub async fn volume(&self, name: &str, size: u64) -> Value {
        let (st, v) = self
            .post("/volumes", json!({"name": name, "size": size}))
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        v
    }

    pub async fn snapshot(&self, name: &str, volume_id: &str) -> Value {
        let (st, s) = self
            .post("/snapshots", json!({"name": name, "volume_id": volume_id}))
            .await;
        assert_eq!(st, StatusCode::OK, "{s}");
        s
    }

    pub async fn host(&self, uuid: &str) {
        let (st, h) = self
            .post("/hosts", json!({"uuid": uuid, "name": uuid}))
            .await;
        assert_eq!(st, StatusCode::OK, "{h}");
    }

    /// Polls until the snapshot is ready to use.
    pub async fn wait_ready(&self, snapshot_id: &str) -> Value {
        for _ in 0..1200 {
            let (st, s) = self.get(&format!("/snapshots/{snapshot_id}")).await;
            assert_eq!(st, StatusCode::OK, "{s}");
            if s["ready_to_use"] == json!(true) {
                return s;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("snapshot {snapshot_id} never became ready");
    }

    /// Polls until the clone's background status is no longer InProgress.
    pub async fn wait_clone(&self, volume_id: &str) -> Value {
        for _ in 0..1200 {
            let (st, v) = self.get(&format!("/volumes/{volume_id}")).await;
            assert_eq!(st, StatusCode::OK, "{v}");
            let status = v["config"]["background_operation_status"]
                .as_str()
                .unwrap_or("Completed");
            if status != "InProgress" {
                return v;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("clone {volume_id} never finished");
    }

    /// Stops serving and waits until the server task is gone.
    pub async fn stop(mut self) -> LocalCsp {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
        self.csp.clone()
    }
}

pub async fn decode(resp: reqwest::Response) -> (StatusCode, Value) {
    let st = resp.status();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = resp.bytes().await.unwrap();
    if bytes.is_empty() {
        return (st, Value::Null);
    }
    assert_eq!(
        ct.as_deref(),
        Some("application/json"),
        "status {st}: {}",
        String::from_utf8_lossy(&bytes)
    );
    let v: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "status {st}: body is not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    if !st.is_success() {
        assert_error_body(&v);
    }
    (st, v)
}

/// The wrapped error form with a non-empty code and message (§4.10).
pub fn assert_error_body(v: &Value) {
    let errs = v["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("not a wrapped error: {v}"));
    assert!(!errs.is_empty(), "{v}");
    for e in errs {
        assert!(!e["code"].as_str().unwrap_or("").is_empty(), "{v}");
        assert!(!e["message"].as_str().unwrap_or("").is_empty(), "{v}");
    }
}

/// All files below `dir`, recursively.
pub fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(all_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

pub fn image_count(dir: &Path, sub: &str) -> usize {
    std::fs::read_dir(images(dir).join(sub))
        .map(|r| r.count())
        .unwrap_or(0)
}

/// A reqwest builder usable whatever TLS features the workspace build unified into reqwest.
pub fn http_client() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::builder()
}

/// Where a data dir keeps its image directories: its image pool's mount when it has one.
pub fn images(data_dir: &Path) -> PathBuf {
    if data_dir.join("pool.json").exists() {
        data_dir.join("pool")
    } else {
        data_dir.to_path_buf()
    }
}
