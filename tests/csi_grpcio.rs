//! Python grpcio (gRPC C-core, from PyPI, default channel options) as the CSI client of a
//! real daemon on its unix socket, as root with real loop devices and mounts: the session
//! of `tests/csi_grpcio/csi_client.py` (Identity, CreateVolume/DeleteVolume, the node cycle
//! of a mount volume). C-core sends the socket path as the HTTP/2 `:authority` (csi.md
//! rule 34); the tonic-side check of the same, without Python, is rule 34 of
//! `tests/csi_conformance/` (`general::rule_34_any_http2_authority_on_unix_and_tcp`). A
//! second session puts grpcio's deadlines against a slow fake CSP (`common::slow_csp`).
//!
//! grpcio and grpcio-tools (pinned in `tests/csi_grpcio/requirements.txt`) come from
//! `scripts/python-venv target/grpcio-venv tests/csi_grpcio/requirements.txt`, which
//! `scripts/test` runs; `$VOLBRIDGE_GRPCIO_VENV` names another venv. Without them the test
//! fails, unless `VOLBRIDGE_ALLOW_SKIP=1`.

mod common;

use common::slow_csp::{default_backend_config, slow_csp};
use common::{loops_under, mounts_under, require_root_and_tools, Daemon, HostCleanup, TempDir};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's python when it has grpcio and grpcio-tools; otherwise fails the test (or
/// skips it with `VOLBRIDGE_ALLOW_SKIP=1`).
fn grpcio_python(test: &str) -> Option<PathBuf> {
    let venv = std::env::var_os("VOLBRIDGE_GRPCIO_VENV")
        .map(PathBuf::from)
        .map(|p| if p.is_relative() { repo().join(p) } else { p })
        .unwrap_or_else(|| repo().join("target/grpcio-venv"));
    let python = venv.join("bin/python");
    let probe = Command::new(&python)
        .args([
            "-c",
            "import grpc, grpc_tools.protoc; print(grpc.__version__)",
        ])
        .output();
    let problem = match probe {
        Ok(out) if out.status.success() => return Some(python),
        Ok(out) => String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or("import failed")
            .to_owned(),
        Err(e) => format!("{}: {e}", python.display()),
    };
    let why = format!(
        "{test} needs Python grpcio and grpcio-tools in {} ({problem}); run \
         scripts/python-venv {} tests/csi_grpcio/requirements.txt (scripts/test does)",
        venv.display(),
        venv.display()
    );
    if std::env::var("VOLBRIDGE_ALLOW_SKIP").as_deref() == Ok("1") {
        eprintln!("SKIPPED (VOLBRIDGE_ALLOW_SKIP=1): {why}");
        return None;
    }
    panic!("{why}; set VOLBRIDGE_ALLOW_SKIP=1 to skip on a developer machine");
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Root, the disk tools and the venv's python, or `None` (a skip allowed by
/// `VOLBRIDGE_ALLOW_SKIP=1`; otherwise the checks fail the test).
fn prerequisites(test: &str) -> Option<PathBuf> {
    if !require_root_and_tools(test) {
        return None;
    }
    grpcio_python(test)
}

/// A daemon serving CSI on `dir`/csi.sock, once the socket is there; and its endpoint.
fn daemon_with_csi(dir: &std::path::Path, extra: &[&str]) -> (Daemon, String) {
    let socket = dir.join("csi.sock");
    let endpoint = format!("unix://{}", socket.display());
    let mut args = vec!["--csi-endpoint", endpoint.as_str()];
    args.extend_from_slice(extra);
    let d = Daemon::start(dir, &args);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "the daemon never made {}; log:\n{}",
            socket.display(),
            tail(&d.log_text(), 40)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (d, endpoint)
}

/// Runs `tests/csi_grpcio/csi_client.py` against `endpoint` and asserts it ends well.
fn client_session(
    python: &std::path::Path,
    d: &Daemon,
    endpoint: &str,
    dir: &std::path::Path,
    extra: &[&str],
) -> String {
    let out = Command::new(python)
        .arg(repo().join("tests/csi_grpcio/csi_client.py"))
        .arg("--endpoint")
        .arg(endpoint)
        .arg("--proto")
        .arg(repo().join("proto/csi.proto"))
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run tests/csi_grpcio/csi_client.py");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("grpcio session ok"),
        "the grpcio session failed ({}):\n{stdout}\n{stderr}\ndaemon log:\n{}",
        out.status,
        tail(&d.log_text(), 60)
    );
    eprintln!("{stdout}");
    stdout
}

#[test]
fn python_grpcio_default_channel_identity_create_delete_and_node_cycle() {
    let test = "python_grpcio_default_channel_identity_create_delete_and_node_cycle";
    let Some(python) = prerequisites(test) else {
        return;
    };
    let dir = TempDir::new("grpcio");
    let _cleanup = HostCleanup(dir.path().to_path_buf());
    let (d, endpoint) = daemon_with_csi(dir.path(), &[]);
    client_session(&python, &d, &endpoint, &dir.path().join("kubelet"), &[]);
    assert!(
        mounts_under(dir.path()).is_empty() && loops_under(dir.path()).is_empty(),
        "left behind: mounts {:?}, loop devices {:?}",
        mounts_under(dir.path()),
        loops_under(dir.path())
    );
}

/// docs/copy-semantics.md rule 3 and docs/csi.md rule 38 as grpcio sees them: C-core ends
/// a call at its deadline on its own, so the daemon's ABORTED must come before it; a
/// DeleteVolume it gave up on still deletes on the (slow) backend.
#[test]
fn python_grpcio_deadlines_against_a_slow_backend() {
    let test = "python_grpcio_deadlines_against_a_slow_backend";
    let Some(python) = prerequisites(test) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (port, volumes) = runtime.block_on(slow_csp());
    let dir = TempDir::new("grpcio-slow");
    let _cleanup = HostCleanup(dir.path().to_path_buf());
    let config = default_backend_config(dir.path(), "slow", port, "p4ssword");
    let config = config.display().to_string();
    let (d, endpoint) = daemon_with_csi(dir.path(), &["--config", &config]);
    let said = client_session(
        &python,
        &d,
        &endpoint,
        &dir.path().join("kubelet"),
        &["--scenario", "slow-backend", "--volume", "slow-vol"],
    );
    assert!(said.contains("ok DeleteVolume retried"), "{said}");
    assert!(
        volumes.lock().unwrap().is_empty(),
        "the slow backend still holds {:?}",
        volumes.lock().unwrap().keys().collect::<Vec<_>>()
    );
}
