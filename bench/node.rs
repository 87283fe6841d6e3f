//! `cargo bench --bench node`: the host attach layer on real loop devices (a table, not a
//! timed test). Needs root: it binds loop devices, runs mkfs.ext4 and mounts.
//!
//! 1. Full node cycle on a blank 1 GiB ext4 volume: `Engine::mount_volume` (CSP attach, loop
//!    attach, blkid probe, mkfs.ext4, mount at the staging dir, bind onto the target), then
//!    `Engine::unmount_volume` (unbind, unmount, loop detach, CSP unpublish). Every cycle
//!    uses a new blank volume (created before and deleted after, untimed), so every cycle
//!    formats.
//! 2. Baseline in the same run, interleaved with (1) so machine noise hits both equally:
//!    the same steps as shell commands, one `sh -c` per cycle (losetup, mkfs.ext4, mount,
//!    bind, umount ×2, losetup -d) on a fresh sparse 1 GiB file.
//! 3. `Engine::node_publish` / `Engine::node_unpublish` of extra bind targets of a volume
//!    that stays staged, timed separately; next to them, the bare syscalls (mkdir + bind
//!    mount, umount + rmdir) done directly by this process.
//!
//! Everything lives under one scratch dir; every mount and loop device under it is removed
//! after a failed iteration and at the end (also on a panic or Ctrl-C), best effort.
//!
//! Besides its table it draws the distribution of (1) beside (2) (the share of cycles done
//! within each time) into `node-cycle.png` in docs/bench/ (bench/support/plot.rs).
//!
//! Env: VOLBRIDGE_BENCH_DIR (scratch dir on a real disk; default the system temp dir),
//! VOLBRIDGE_BENCH_CYCLES (cycles of (1) and of (2); default 30), VOLBRIDGE_BENCH_PLOT_DIR
//! (where the chart goes).

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::plot::{self, Axis, Chart, Legend, Line};
use support::{load_average, mounts_under, ms, percentile, remove_tree, sweep};
use volbridge::engine::{
    Backend, Backends, CreateVolume, Engine, EngineConfig, MountVolume, NodeConfig, PublishVolume,
    StateStore, Wait,
};
use volbridge::host::transport::TransportConfig;
use volbridge::provider::{ClientOptions, Credentials, CspClient};
use volbridge_local_csp::{LocalCsp, LocalCspConfig};

const SIZE: u64 = 1 << 30;
const BACKEND: &str = "local";
/// Untimed cycle pairs before the measured ones (page cache, first mkfs, CSP session).
const WARMUP_CYCLES: usize = 2;
const PUBLISHES: usize = 300;
const WARMUP_PUBLISHES: usize = 10;
/// The baseline cycle; `$1` = backing file, `$2` = staging dir, `$3` = target.
const SHELL_CYCLE: &str = r#"L=$(losetup --find --show --direct-io=on "$1") && mkfs.ext4 -q -E lazy_itable_init=1,lazy_journal_init=1 $L && mkdir -p "$2" "$3" && mount $L "$2" && mount --bind "$2" "$3" && umount "$3" && umount "$2" && losetup -d $L"#;

/// Set by Ctrl-C: finish the current iteration, then clean up and report what was measured.
static STOP: AtomicBool = AtomicBool::new(false);

fn stopped() -> bool {
    STOP.load(Ordering::Relaxed)
}

#[derive(Default)]
struct Series {
    lat: Vec<Duration>,
    failures: usize,
}

impl Series {
    fn push(&mut self, d: Duration) {
        self.lat.push(d);
    }

    fn sorted(&self) -> Vec<Duration> {
        let mut s = self.lat.clone();
        s.sort();
        s
    }

    fn p(&self, p: f64) -> Duration {
        percentile(&self.sorted(), p)
    }
}

/// The scratch root, canonical (mountinfo and sysfs report canonical paths).
fn scratch() -> PathBuf {
    let base = std::env::var_os("VOLBRIDGE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("vbbench-node-{}", std::process::id()));
    if dir.exists() {
        sweep(&dir);
        remove_tree(&dir, "node");
    }
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| fail(&format!("cannot create {}: {e}", dir.display())));
    std::fs::canonicalize(&dir).unwrap()
}

fn fail(message: &str) -> ! {
    eprintln!("node bench: {message}");
    std::process::exit(1);
}

/// Refuses to run without root or without the tools the baseline needs.
fn preflight() {
    if !rustix::process::geteuid().is_root() {
        fail(
            "must run as root: it binds loop devices, runs mkfs.ext4 and mounts filesystems \
             (try `sudo -E cargo bench --bench node`); nothing was done",
        );
    }
    if !Path::new("/dev/loop-control").exists() {
        fail("/dev/loop-control is missing (load the loop module: modprobe loop)");
    }
    for tool in ["losetup", "mkfs.ext4", "blkid", "mount", "umount"] {
        let found = Command::new("sh")
            .args(["-c", "command -v \"$1\"", "sh", tool])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            fail(&format!("`{tool}` is not installed or not on PATH"));
        }
    }
    if let Err(e) = plot::check_font() {
        fail(&e);
    }
}

fn final_cleanup(root: &Path) -> String {
    let (mounts, loops) = sweep(root);
    let removed = remove_tree(root, "node");
    if mounts == 0 && loops == 0 && removed {
        "every mount, loop device and temp dir removed".to_owned()
    } else {
        format!(
            "INCOMPLETE: {mounts} mount(s) and {loops} loop device(s) left under {}",
            root.display()
        )
    }
}

fn mount_request(name: &str, target: &Path) -> MountVolume {
    MountVolume {
        name: name.to_owned(),
        backend: None,
        target: target.display().to_string(),
        read_only: false,
        block: false,
        fs_type: String::new(),
        mount_options: vec![],
    }
}

async fn create(engine: &Engine, name: &str) -> Result<String, String> {
    let v = engine
        .create_volume(
            CreateVolume {
                name: name.to_owned(),
                size: Some(SIZE),
                ..Default::default()
            },
            Wait::Bounded,
        )
        .await
        .map_err(|e| format!("create_volume {name}: {e}"))?;
    Ok(v.id)
}

/// Undoes whatever a failed engine iteration left: the engine's own teardown first, then
/// the host sweep, then the CSP grant.
async fn engine_rescue(engine: &Engine, root: &Path, name: &str, target: &Path) {
    let _ = engine
        .unmount_volume(name, None, &target.display().to_string(), Wait::Bounded)
        .await;
    sweep(root);
    let _ = engine.detach_volume(name, None, Wait::Bounded).await;
}

/// One timed volbridge cycle: (mount_volume, unmount_volume).
async fn engine_cycle(
    engine: &Engine,
    root: &Path,
    i: usize,
) -> Result<(Duration, Duration), String> {
    let name = format!("cycle-{i}");
    let target = root.join("targets").join(&name);
    create(engine, &name).await?;
    let timed = async {
        let t0 = Instant::now();
        let mounted = engine
            .mount_volume(mount_request(&name, &target), Wait::Bounded)
            .await
            .map_err(|e| format!("mount_volume {name}: {e}"))?;
        let mount = t0.elapsed();
        if !mounted.formatted {
            return Err(format!(
                "mount_volume {name}: the blank volume was not formatted"
            ));
        }
        let t1 = Instant::now();
        let done = engine
            .unmount_volume(&name, None, &target.display().to_string(), Wait::Bounded)
            .await
            .map_err(|e| format!("unmount_volume {name}: {e}"))?;
        let unmount = t1.elapsed();
        if !done {
            return Err(format!("unmount_volume {name}: nothing was mounted"));
        }
        Ok((mount, unmount))
    }
    .await;
    if timed.is_err() {
        engine_rescue(engine, root, &name, &target).await;
    }
    if mounts_under(&target).is_empty() {
        let _ = std::fs::remove_dir(&target);
    }
    let deleted = engine
        .delete_volume(&name, None, Wait::Bounded)
        .await
        .map_err(|e| format!("delete_volume {name}: {e}"));
    let out = timed?;
    deleted?;
    Ok(out)
}

/// One timed baseline cycle by shell commands.
fn shell_cycle(root: &Path, i: usize) -> Result<Duration, String> {
    let dir = root.join("shell").join(format!("cycle-{i}"));
    let file = dir.join("vol.img");
    let prepared = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::File::create(&file))
        .and_then(|f| f.set_len(SIZE));
    if let Err(e) = prepared {
        return Err(format!("cannot make {}: {e}", file.display()));
    }
    let t0 = Instant::now();
    let out = Command::new("sh")
        .args(["-c", SHELL_CYCLE, "sh"])
        .arg(&file)
        .arg(dir.join("s"))
        .arg(dir.join("t"))
        .stdin(Stdio::null())
        .output();
    let elapsed = t0.elapsed();
    let result = match out {
        Ok(o) if o.status.success() => Ok(elapsed),
        Ok(o) => Err(format!(
            "shell cycle {i} failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run sh: {e}")),
    };
    if result.is_err() || !mounts_under(&dir).is_empty() {
        sweep(root);
    }
    remove_tree(&dir, "node");
    result
}

struct Cycles {
    engine: Series,
    engine_mount: Series,
    engine_unmount: Series,
    shell: Series,
}

async fn run_cycles(engine: &Engine, root: &Path, cycles: usize) -> Cycles {
    let mut r = Cycles {
        engine: Series::default(),
        engine_mount: Series::default(),
        engine_unmount: Series::default(),
        shell: Series::default(),
    };
    for i in 0..WARMUP_CYCLES + cycles {
        if stopped() {
            break;
        }
        let counted = i >= WARMUP_CYCLES;
        // A, then B: the pair sees the same machine.
        match engine_cycle(engine, root, i).await {
            Ok((m, u)) if counted => {
                r.engine.push(m + u);
                r.engine_mount.push(m);
                r.engine_unmount.push(u);
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("node bench: volbridge cycle {i}: {e}");
                r.engine.failures += usize::from(counted);
            }
        }
        let root_b = root.to_path_buf();
        let shell = tokio::task::spawn_blocking(move || shell_cycle(&root_b, i))
            .await
            .unwrap_or_else(|e| Err(format!("shell task: {e}")));
        match shell {
            Ok(d) if counted => r.shell.push(d),
            Ok(_) => {}
            Err(e) => {
                eprintln!("node bench: {e}");
                r.shell.failures += usize::from(counted);
            }
        }
    }
    r
}

struct Publishes {
    publish: Series,
    unpublish: Series,
    bare_bind: Series,
    bare_unbind: Series,
}

/// The bare host work of a publish and an unpublish, done by this process directly.
fn bare_bind_cycle(staging: &Path, target: &Path) -> Result<(Duration, Duration), String> {
    use rustix::mount::{mount_bind, unmount, UnmountFlags};
    let t0 = Instant::now();
    std::fs::create_dir(target).map_err(|e| format!("mkdir {}: {e}", target.display()))?;
    mount_bind(staging, target).map_err(|e| format!("bind {}: {e}", target.display()))?;
    let bind = t0.elapsed();
    let t1 = Instant::now();
    unmount(target, UnmountFlags::NOFOLLOW)
        .map_err(|e| format!("umount {}: {e}", target.display()))?;
    std::fs::remove_dir(target).map_err(|e| format!("rmdir {}: {e}", target.display()))?;
    Ok((bind, t1.elapsed()))
}

async fn run_publishes(engine: &Engine, root: &Path) -> Result<Publishes, String> {
    let name = "staged";
    let main_target = root.join("targets").join(name);
    let id = create(engine, name).await?;
    let key = format!("{BACKEND}-{id}");
    let staged = engine
        .mount_volume(mount_request(name, &main_target), Wait::Bounded)
        .await
        .map_err(|e| format!("mount_volume {name}: {e}"));
    let result = match staged {
        Ok(_) => publish_loop(engine, root, &key).await,
        Err(e) => Err(e),
    };
    let unmounted = engine
        .unmount_volume(
            name,
            None,
            &main_target.display().to_string(),
            Wait::Bounded,
        )
        .await
        .map_err(|e| format!("unmount_volume {name}: {e}"));
    if result.is_err() || unmounted.is_err() {
        engine_rescue(engine, root, name, &main_target).await;
    }
    if mounts_under(&main_target).is_empty() {
        let _ = std::fs::remove_dir(&main_target);
    }
    let deleted = engine
        .delete_volume(name, None, Wait::Bounded)
        .await
        .map_err(|e| format!("delete_volume {name}: {e}"));
    let out = result?;
    unmounted?;
    deleted?;
    Ok(out)
}

async fn publish_loop(engine: &Engine, root: &Path, key: &str) -> Result<Publishes, String> {
    let staging = engine
        .stages()
        .map_err(|e| format!("stage records: {e}"))?
        .into_iter()
        .find(|s| s.volume_key == key)
        .map(|s| s.staging_path)
        .ok_or_else(|| format!("no stage record for {key}"))?;
    let mut r = Publishes {
        publish: Series::default(),
        unpublish: Series::default(),
        bare_bind: Series::default(),
        bare_unbind: Series::default(),
    };
    let dir = root.join("targets");
    for i in 0..WARMUP_PUBLISHES + PUBLISHES {
        if stopped() {
            break;
        }
        let counted = i >= WARMUP_PUBLISHES;
        let target = dir.join(format!("pub-{i}"));
        let target_path = target.display().to_string();
        let t0 = Instant::now();
        let published = engine
            .node_publish(
                PublishVolume {
                    volume_key: key.to_owned(),
                    target_path: target_path.clone(),
                    read_only: false,
                    mount_options: vec![],
                    remove_target: true,
                    single_writer: false,
                },
                Wait::No,
            )
            .await;
        let publish = t0.elapsed();
        match published {
            Ok(()) => {
                let t1 = Instant::now();
                let unpublished = engine.node_unpublish(key, &target_path, Wait::No).await;
                let unpublish = t1.elapsed();
                match unpublished {
                    Ok(()) if counted => {
                        r.publish.push(publish);
                        r.unpublish.push(unpublish);
                    }
                    Ok(()) => {}
                    Err(e) => {
                        eprintln!("node bench: node_unpublish {target_path}: {e}");
                        r.unpublish.failures += usize::from(counted);
                    }
                }
            }
            Err(e) => {
                eprintln!("node bench: node_publish {target_path}: {e}");
                r.publish.failures += usize::from(counted);
            }
        }
        if !mounts_under(&target).is_empty() {
            return Err(format!(
                "{target_path} is still mounted after node_unpublish"
            ));
        }
        let _ = std::fs::remove_dir(&target);

        // The same work by bare syscalls, interleaved.
        let bare = dir.join(format!("bare-{i}"));
        let (s, b) = (staging.clone(), bare.clone());
        let timed = tokio::task::spawn_blocking(move || bare_bind_cycle(&s, &b))
            .await
            .unwrap_or_else(|e| Err(format!("bare task: {e}")));
        match timed {
            Ok((bind, unbind)) if counted => {
                r.bare_bind.push(bind);
                r.bare_unbind.push(unbind);
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("node bench: {e}");
                r.bare_bind.failures += usize::from(counted);
                let _ = rustix::mount::unmount(&bare, rustix::mount::UnmountFlags::DETACH);
                let _ = std::fs::remove_dir(&bare);
            }
        }
    }
    Ok(r)
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not used by this harness.
    preflight();
    let cycles: usize = std::env::var("VOLBRIDGE_BENCH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30)
        .max(1);
    let load = load_average();
    let root = scratch();
    {
        // The bench profile aborts on panic (no unwinding, no Drop): clean up in the hook.
        let root = root.clone();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            eprintln!("node bench: {}", final_cleanup(&root));
        }));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let outcome = rt.block_on(async {
        {
            let root = root.clone();
            tokio::spawn(async move {
                loop {
                    if tokio::signal::ctrl_c().await.is_err() {
                        return;
                    }
                    if STOP.swap(true, Ordering::Relaxed) {
                        // A second Ctrl-C: clean up now and leave.
                        eprintln!("node bench: {}", final_cleanup(&root));
                        std::process::exit(130);
                    }
                    eprintln!(
                        "node bench: stopping after this iteration (Ctrl-C again to quit now)"
                    );
                }
            });
        }
        let csp_dir = root.join("csp");
        let csp = LocalCsp::open(LocalCspConfig::new(&csp_dir, "bench", "bench-password"))
            .map_err(|e| format!("cannot open the local CSP: {e}"))?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("cannot listen: {e}"))?;
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(csp.serve(listener, async move {
            let _ = stop_rx.await;
        }));
        let result = async {
            let creds = Credentials::service(BACKEND, addr, "bench", "bench-password")
                .map_err(|e| format!("credentials: {e}"))?;
            let client = CspClient::new(creds, ClientOptions::default())
                .map_err(|e| format!("CSP client: {e}"))?;
            let mut backends = Backends::new(BACKEND);
            backends.add(Backend {
                name: BACKEND.to_owned(),
                client,
                embedded: true,
            });
            let store =
                StateStore::open(root.join("state")).map_err(|e| format!("state store: {e}"))?;
            let csp_root = std::fs::canonicalize(&csp_dir)
                .map_err(|e| format!("{}: {e}", csp_dir.display()))?;
            let engine = Engine::new(backends, store, EngineConfig::default())
                .map_err(|e| format!("engine: {e}"))?
                .with_node(
                    Arc::new(volbridge::host::RealHost),
                    NodeConfig {
                        transport: TransportConfig {
                            local_roots: vec![csp_root],
                            ..TransportConfig::default()
                        },
                        tool_timeout: Duration::from_secs(120),
                        staging_root: None,
                    },
                );
            let cycles = run_cycles(&engine, &root, cycles).await;
            let publishes = if stopped() {
                Err("stopped".to_owned())
            } else {
                run_publishes(&engine, &root).await
            };
            engine.shutdown().await;
            Ok::<_, String>((cycles, publishes))
        }
        .await;
        let _ = stop_tx.send(());
        let _ = server.await;
        result
    });
    drop(rt);
    let cleanup = final_cleanup(&root);
    let (cycles_r, publishes) = match outcome {
        Ok(r) => r,
        Err(e) => {
            eprintln!("node bench: cleanup: {cleanup}");
            fail(&e);
        }
    };
    report(cycles, &cycles_r, &publishes, &cleanup, &load);
    match plot_cycles(&cycles_r, &load) {
        Ok(path) => println!("chart: {}", path.display()),
        Err(e) => fail(&format!("chart: {e}")),
    }
    if stopped() {
        std::process::exit(130);
    }
}

/// The cumulative distribution of both cycles: x the cycle time, y the share of cycles
/// done within it.
fn plot_cycles(c: &Cycles, load: &str) -> Result<PathBuf, String> {
    let cdf = |s: &Series| -> Vec<(f64, f64)> {
        let sorted = s.sorted();
        let n = sorted.len() as f64;
        sorted
            .iter()
            .enumerate()
            .map(|(i, d)| (d.as_secs_f64() * 1000.0, (i + 1) as f64 * 100.0 / n))
            .collect()
    };
    let p50 = |s: &Series| format!("{:.1}", s.p(0.5).as_secs_f64() * 1000.0);
    let chart = Chart {
        title: "Node cycle on a blank 1 GiB volume (attach, mkfs.ext4, mount, bind, reverse)"
            .to_owned(),
        note: format!(
            "{} cycles each, interleaved; {} cores, 1-min load {load} at start; cargo bench \
             --bench node",
            c.engine.lat.len().max(c.shell.lat.len()),
            std::thread::available_parallelism().map_or(0, |n| n.get())
        ),
        x: Axis::linear("cycle time (ms)"),
        y: Axis::linear("cycles done within that time (%)").range(0.0, 100.0),
        legend: Legend::LowerRight,
        lines: vec![
            Line::ours(
                &format!(
                    "volbridge mount_volume + unmount_volume (p50 {} ms)",
                    p50(&c.engine)
                ),
                cdf(&c.engine),
            ),
            Line::baseline(
                &format!(
                    "baseline: losetup, mkfs.ext4, mount, bind by shell (p50 {} ms)",
                    p50(&c.shell)
                ),
                cdf(&c.shell),
            ),
        ],
    };
    plot::draw("node-cycle.png", &chart)
}

fn row(label: &str, s: &Series, p99: bool) {
    println!(
        "{:<44} {:>5} {:>5} {:>10} {:>10} {:>10}",
        label,
        s.lat.len(),
        s.failures,
        ms(s.p(0.5)),
        ms(s.p(0.9)),
        if p99 { ms(s.p(0.99)) } else { "-".to_owned() }
    );
}

/// The 1-minute load average: the shell baseline (nine processes per cycle) slows down
/// more than volbridge on a busy machine, so the ratio is only meaningful when this is low.
fn report(cycles: usize, c: &Cycles, p: &Result<Publishes, String>, cleanup: &str, load: &str) {
    let header = || {
        println!(
            "{:<44} {:>5} {:>5} {:>10} {:>10} {:>10}",
            "", "n", "fail", "p50 ms", "p90 ms", "p99 ms"
        );
    };
    println!();
    println!(
        "node cycle on a blank 1 GiB volume, ext4 made every cycle ({cycles} cycles each, \
         interleaved A B A B, {WARMUP_CYCLES} warm-up pairs not counted)"
    );
    header();
    row("volbridge mount_volume + unmount_volume", &c.engine, false);
    row("  of which mount_volume", &c.engine_mount, false);
    row("  of which unmount_volume", &c.engine_unmount, false);
    row(
        "shell: losetup, mkfs, mount, bind, reverse",
        &c.shell,
        false,
    );
    let (a, b) = (c.engine.p(0.5), c.shell.p(0.5));
    let ratio = if b.is_zero() || a.is_zero() {
        "n/a".to_owned()
    } else {
        format!("{:.2}", a.as_secs_f64() / b.as_secs_f64())
    };
    println!(
        "ratio volbridge/shell (p50): {ratio}x   goal: <= 0.90x   (1-min load average at start: {load})"
    );
    println!();
    match p {
        Ok(p) => {
            println!(
                "publish/unpublish of an already staged volume ({PUBLISHES} targets, \
                 {WARMUP_PUBLISHES} warm-up not counted)"
            );
            header();
            row("volbridge node_publish (bind)", &p.publish, true);
            row(
                "volbridge node_unpublish (unbind, rmdir)",
                &p.unpublish,
                true,
            );
            row("bare syscalls: mkdir + bind mount", &p.bare_bind, true);
            row("bare syscalls: umount + rmdir", &p.bare_unbind, true);
            println!("goal: node_publish and node_unpublish p50 < 2 ms");
        }
        Err(e) => println!("publish/unpublish: not measured: {e}"),
    }
    println!();
    println!("cleanup: {cleanup}");
    println!(
        "command: cargo bench --bench node   (env: VOLBRIDGE_BENCH_DIR, VOLBRIDGE_BENCH_CYCLES, \
         VOLBRIDGE_BENCH_PLOT_DIR)"
    );
}
