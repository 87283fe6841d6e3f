//! `cargo bench --bench core`: the core's benchmark harness (a table, not a timed test).
//!
//! 1. Volume create+delete pairs per second through the CSP REST client against the local
//!    CSP over real HTTP on loopback, at concurrency 1 and 16, with create latency p50/p99.
//!    Every acknowledged create is durable (the CSP group-commits its journal).
//! 2. Baseline in the same process: the equivalent durable file work done directly — a
//!    sparse image plus a metadata record written atomically (temp, fsync, rename, fsync
//!    dir) per create, both unlinked and the dir synced per delete. The ratio says what
//!    the whole HTTP + CSP stack costs against the bare filesystem.
//! 3. Idle RSS of `volbridge serve`, and its RSS after a burst of admin calls.
//!
//! Env: VOLBRIDGE_BENCH_DIR (scratch dir on a real disk; default the system temp dir),
//! VOLBRIDGE_BENCH_PAIRS (pairs per run at concurrency 16; default 6000).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use volbridge::provider::{ClientOptions, Credentials, CspClient, VolumeCreate};
use volbridge_local_csp::{LocalCsp, LocalCspConfig};

const SIZE: u64 = 1 << 30;

struct Run {
    pairs_per_sec: f64,
    p50: Duration,
    p99: Duration,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn scratch(tag: &str) -> PathBuf {
    let base = std::env::var_os("VOLBRIDGE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("vbbench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn client_run(client: &CspClient, concurrency: usize, pairs: usize, tag: &str) -> Run {
    let per_task = pairs / concurrency;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..concurrency {
        let client = client.clone();
        let tag = tag.to_owned();
        tasks.spawn(async move {
            let mut lat = Vec::with_capacity(per_task);
            for i in 0..per_task {
                let req = VolumeCreate {
                    name: format!("bench-{tag}-{t}-{i}"),
                    size: Some(SIZE),
                    description: None,
                    params: BTreeMap::new(),
                    multi_initiator: false,
                };
                let t0 = Instant::now();
                let v = client.create_volume(&req).await.expect("create");
                lat.push(t0.elapsed());
                client
                    .delete_volume(v.id.as_deref().unwrap())
                    .await
                    .expect("delete");
            }
            lat
        });
    }
    let mut lat: Vec<Duration> = tasks.join_all().await.into_iter().flatten().collect();
    let elapsed = started.elapsed();
    lat.sort();
    Run {
        pairs_per_sec: lat.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
    }
}

fn sync_dir(dir: &Path) {
    std::fs::File::open(dir).unwrap().sync_all().unwrap();
}

/// The bare durable filesystem work of one create and one delete.
fn baseline_pair(dir: &Path, name: &str) -> Duration {
    use std::io::Write;
    let t0 = Instant::now();
    let img = dir.join(format!("{name}.img"));
    std::fs::File::create(&img).unwrap().set_len(SIZE).unwrap();
    let meta = dir.join(format!("{name}.json"));
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp).unwrap();
    write!(f, r#"{{"name":"{name}","size":{SIZE}}}"#).unwrap();
    f.sync_all().unwrap();
    std::fs::rename(&tmp, &meta).unwrap();
    sync_dir(dir);
    let create = t0.elapsed();
    std::fs::remove_file(&meta).unwrap();
    std::fs::remove_file(&img).unwrap();
    sync_dir(dir);
    create
}

async fn baseline_run(dir: &Path, concurrency: usize, pairs: usize) -> Run {
    let per_task = pairs / concurrency;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..concurrency {
        let dir = dir.to_path_buf();
        tasks.spawn_blocking(move || {
            (0..per_task)
                .map(|i| baseline_pair(&dir, &format!("b{t}-{i}")))
                .collect::<Vec<_>>()
        });
    }
    let mut lat: Vec<Duration> = tasks.join_all().await.into_iter().flatten().collect();
    let elapsed = started.elapsed();
    lat.sort();
    Run {
        pairs_per_sec: lat.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Starts `volbridge serve` on a scratch dir; returns (idle RSS, RSS after 200 admin calls).
fn serve_rss() -> (u64, u64) {
    let dir = scratch("serve");
    let socket = dir.join("admin.sock");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_volbridge"))
        .arg("serve")
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--admin-socket")
        .arg(&socket)
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("start volbridge serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "volbridge serve did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(2));
    let idle = rss_kib(child.id());
    for i in 0..100 {
        for args in [
            vec!["volume", "create", &format!("r{i}"), "--size", "64Mi"],
            vec!["volume", "rm", &format!("r{i}")],
        ] {
            let ok = std::process::Command::new(env!("CARGO_BIN_EXE_volbridge"))
                .args(&args)
                .env("VOLBRIDGE_SOCKET", &socket)
                .stdout(std::process::Stdio::null())
                .status()
                .unwrap()
                .success();
            assert!(ok, "volbridge {args:?} failed");
        }
    }
    let loaded = rss_kib(child.id());
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    (idle, loaded)
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not used by this harness.
    let pairs16: usize = std::env::var("VOLBRIDGE_BENCH_PAIRS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6000);
    let pairs1 = (pairs16 / 3).max(100);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let results = rt.block_on(async {
        let dir = scratch("csp");
        let csp = LocalCsp::open(LocalCspConfig::new(
            dir.join("data"),
            "bench",
            "bench-password",
        ))
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listener_addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(csp.serve(listener, async move {
            let _ = stop_rx.await;
        }));
        let creds =
            Credentials::service("local", listener_addr, "bench", "bench-password").unwrap();
        let client = CspClient::new(creds, ClientOptions::default()).unwrap();
        client_run(&client, 4, 400, "warm").await;
        let base_dir = scratch("baseline");
        let mut rows = Vec::new();
        for (c, pairs) in [(1usize, pairs1), (16, pairs16)] {
            let ours = client_run(&client, c, pairs, &format!("c{c}")).await;
            let base = baseline_run(&base_dir, c, pairs).await;
            rows.push((c, pairs, ours, base));
        }
        let _ = stop_tx.send(());
        let _ = server.await;
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&base_dir);
        rows
    });

    println!();
    println!("volume create+delete through the CSP client against the local CSP (1 GiB volumes, durable)");
    println!(
        "{:<12} {:>7} {:>12} {:>12} {:>8} {:>14} {:>14}",
        "concurrency", "pairs", "pairs/s", "baseline/s", "ratio", "create p50 ms", "create p99 ms"
    );
    for (c, pairs, ours, base) in &results {
        println!(
            "{:<12} {:>7} {:>12.0} {:>12.0} {:>8.2} {:>14} {:>14}",
            c,
            pairs,
            ours.pairs_per_sec,
            base.pairs_per_sec,
            ours.pairs_per_sec / base.pairs_per_sec,
            ms(ours.p50),
            ms(ours.p99)
        );
    }
    println!("baseline: the same durable file work done directly in this process (sparse image + atomic metadata record per create, unlink + dir sync per delete); baseline create p50 ms: {}",
        results.iter().map(|(c, _, _, b)| format!("c{c} {}", ms(b.p50))).collect::<Vec<_>>().join(", "));
    let (idle, loaded) = serve_rss();
    println!();
    println!("{:<40} {:>10}", "volbridge serve", "RSS MiB");
    println!(
        "{:<40} {:>10.2}",
        "idle, 2 s after start",
        idle as f64 / 1024.0
    );
    println!(
        "{:<40} {:>10.2}",
        "after 200 admin calls (CLI processes)",
        loaded as f64 / 1024.0
    );
    println!("goals: >= 2000 pairs/s at 16, create p50 < 1 ms, idle RSS < 8 MiB");
}
