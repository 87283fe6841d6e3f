//! A slow or unreachable CSP for the end-to-end checks (docker-volume-plugin.md §14: "a
//! fault-injecting CSP"), with no test hook in the product: a standalone local CSP
//! (`volbridge csp serve`) behind a TCP proxy the test steers. The daemon reaches it as a
//! named backend (`[backends.NAME]` with `servicePort` = the proxy's port).
//!
//! The proxy passes bytes, stalls what the daemon sends (the CSP sees nothing until the
//! stall ends, so every call, login included, takes that long) or refuses (the listener is
//! closed and open connections are cut: `connection refused`, as when the CSP is down).

use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Pass,
    /// Hold what the daemon sends until this instant (or until the fault changes).
    Stall(Instant),
    Refuse,
}

/// A TCP proxy on 127.0.0.1 in front of `upstream`; stopped on drop.
pub struct FaultProxy {
    pub port: u16,
    control: watch::Sender<Fault>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FaultProxy {
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime for the fault proxy");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind the fault proxy");
        let port = listener.local_addr().unwrap().port();
        let (control, faults) = watch::channel(Fault::Pass);
        runtime.spawn(accept_loop(listener, port, upstream, faults));
        FaultProxy {
            port,
            control,
            runtime: Some(runtime),
        }
    }

    /// Bytes flow both ways (stalled bytes are released at once).
    pub fn pass(&self) {
        self.control.send_replace(Fault::Pass);
    }

    /// What the daemon sends is held for at most `max` (until `pass` or `refuse`).
    pub fn stall(&self, max: Duration) {
        self.control
            .send_replace(Fault::Stall(Instant::now() + max));
    }

    /// Connections are refused and open ones cut, until `pass`.
    pub fn refuse(&self) {
        self.control.send_replace(Fault::Refuse);
        // The listener is closed by the accept loop; wait until it is.
        let closed = super::eventually(Duration::from_secs(5), || {
            StdStream::connect(("127.0.0.1", self.port)).is_err()
        });
        assert!(closed, "the fault proxy still accepts on {}", self.port);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    port: u16,
    upstream: SocketAddr,
    mut faults: watch::Receiver<Fault>,
) {
    let mut listener = Some(listener);
    loop {
        let fault = *faults.borrow_and_update();
        if fault == Fault::Refuse {
            // Closing the listener makes connects fail with ECONNREFUSED.
            listener = None;
            if faults.changed().await.is_err() {
                return;
            }
            continue;
        }
        if listener.is_none() {
            listener = rebind(port).await;
        }
        let Some(l) = listener.as_ref() else {
            eprintln!("fault proxy: cannot listen on 127.0.0.1:{port} again");
            return;
        };
        tokio::select! {
            accepted = l.accept() => {
                if let Ok((client, _)) = accepted {
                    tokio::spawn(relay(client, upstream, faults.clone()));
                }
            }
            changed = faults.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// The same port again (tokio sets SO_REUSEADDR: no TIME_WAIT trouble).
async fn rebind(port: u16) -> Option<TcpListener> {
    for _ in 0..100 {
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)).await {
            return Some(l);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

async fn relay(client: TcpStream, upstream: SocketAddr, faults: watch::Receiver<Fault>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = forward(client_read, server_write, Some(faults.clone()));
    let down = forward(server_read, client_write, None);
    let mut cut = faults.clone();
    // Dropping both halves of both sockets closes the connection.
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        _ = cut.wait_for(|f| *f == Fault::Refuse) => {}
    }
}

/// Copies until EOF; with `hold`, each chunk waits out a stall first.
async fn forward(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut hold: Option<watch::Receiver<Fault>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(faults) = hold.as_mut() {
            wait_out_stall(faults).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

async fn wait_out_stall(faults: &mut watch::Receiver<Fault>) {
    loop {
        let Fault::Stall(until) = *faults.borrow_and_update() else {
            return;
        };
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(left) => return,
            changed = faults.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// A standalone local CSP (`volbridge csp serve`) on 127.0.0.1; stopped by its PID on drop.
pub struct CspServer {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub username: String,
    pub password: String,
    child: Option<Child>,
    log: PathBuf,
}

impl CspServer {
    pub fn start(dir: &Path) -> CspServer {
        let data_dir = dir.join("csp-data");
        let log = dir.join("csp.log");
        let port = {
            let l = StdListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let username = "vbtest".to_owned();
        let password = format!("csp-pw-{}", std::process::id());
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(crate::common::BIN)
            .args(["csp", "serve", "--data-dir"])
            .arg(&data_dir)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--username")
            .arg(&username)
            .env("VOLBRIDGE_CSP_PASSWORD", &password)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn volbridge csp serve");
        let mut csp = CspServer {
            addr,
            data_dir,
            username,
            password,
            child: Some(child),
            log,
        };
        let up = super::eventually(Duration::from_secs(30), || {
            if let Some(status) = csp.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "volbridge csp serve exited ({status}): {}",
                    std::fs::read_to_string(&csp.log).unwrap_or_default()
                );
            }
            StdStream::connect(addr).is_ok()
        });
        assert!(
            up,
            "volbridge csp serve did not listen on {addr} within 30 s"
        );
        csp
    }

    /// A `[backends.NAME]` table reaching this CSP through `port` (the proxy's).
    pub fn backend_toml(&self, name: &str, port: u16) -> String {
        format!(
            "[backends.{name}]\nbackend = \"127.0.0.1\"\nserviceName = \"127.0.0.1\"\nservicePort = \"{port}\"\nusername = \"{}\"\npassword = \"{}\"\n",
            self.username, self.password
        )
    }

    /// SIGTERM by PID, then SIGKILL after 10 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let stopped = super::eventually(Duration::from_secs(10), || {
            child.try_wait().ok().flatten().is_some()
        });
        if !stopped {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for CspServer {
    fn drop(&mut self) {
        self.stop();
    }
}
