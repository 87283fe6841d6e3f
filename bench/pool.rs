//! `cargo bench --bench pool`: the local CSP's pool against the shell, in one run (a table,
//! not a timed test). Needs root, xfsprogs and fio.
//!
//! 1. Snapshot and clone of a 2 GiB volume holding 64 MiB, 256 MiB and 1 GiB of random data
//!    (a larger amount gets a volume twice its size), through the CLI against a real
//!    `volbridge serve` whose pool is chosen as users get it (`auto`; on ext4 an xfs image
//!    pool). Baselines in the same run, on the same file: `cp --reflink=always` inside the
//!    pool (goal: at most 2x) and `cp --sparse=always` in the host's data dir (goal: at least
//!    100x slower than ours, at 1 GiB); both followed by an fsync of the copy, since ours are
//!    durable when they return. Drawn, time against data size, into `pool-copies.png` in
//!    docs/bench/ (bench/support/plot.rs).
//! 2. The data path: fio (sequential 1 MiB and random 4 KiB, read and write, direct I/O) on a
//!    file in a mounted volume of the pool, against two baselines in the same run: the same
//!    job on a mounted volume of a `dir` pool (a loop device over a file in the host's data
//!    dir, what every local volume was before pools), whose ratio is the price of the pool
//!    layer (goals: ≥ 0.85 sequential, ≥ 0.7 random), and on a plain file in the host's data
//!    dir, whose ratio is the price of a loop-backed volume at all (stated; docs/pool.md).
//!
//! Env: VOLBRIDGE_BENCH_DIR (scratch dir on a real disk; default /var/tmp),
//! VOLBRIDGE_BENCH_ROUNDS (rounds of (1) at each size; default 3), VOLBRIDGE_BENCH_DATA_MIB
//! (the data sizes of (1) in MiB, comma-separated; default 64,256,1024),
//! VOLBRIDGE_BENCH_FIO_SECONDS (per fio job; default 5), VOLBRIDGE_BENCH_FIO_ROUNDS (rounds
//! of (2), each running every job on the three targets back to back; medians are shown, and
//! the ratios' range over the rounds; default 3), VOLBRIDGE_BENCH_PLOT_DIR (where the chart
//! goes).

#[path = "support/mod.rs"]
mod support;

use serde_json::Value;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::daemon::Daemon;
use support::plot::{self, Axis, Chart, Legend, Line};
use support::{load_average, ms, percentile, remove_tree, sweep};

const MIB: u64 = 1 << 20;

/// What this bench asks of the shared daemon beyond starting and stopping it.
trait PoolDaemon {
    fn json(&self, args: &[&str]) -> Value;
    fn timed(&self, args: &[&str]) -> Duration;
    fn images(&self) -> PathBuf;
    fn volume_image(&self, name: &str) -> PathBuf;
}

impl PoolDaemon for Daemon {
    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        serde_json::from_str(&self.cli(&all)).unwrap()
    }

    fn timed(&self, args: &[&str]) -> Duration {
        let t = Instant::now();
        self.cli(args);
        t.elapsed()
    }

    fn images(&self) -> PathBuf {
        let csp = self.state.join("csp");
        if csp.join("pool.json").exists() {
            csp.join("pool")
        } else {
            csp
        }
    }

    fn volume_image(&self, name: &str) -> PathBuf {
        let id = self.json(&["volume", "inspect", name])["id"]
            .as_str()
            .unwrap()
            .to_owned();
        self.images().join(format!("volumes/{id}.img"))
    }
}

fn chunk(seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(MIB as usize);
    while out.len() < MIB as usize {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

fn fill(path: &Path, len: u64, seed: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    for i in 0..len / MIB {
        f.write_all_at(&chunk(seed * 100_000 + i), i * MIB).unwrap();
    }
    f.sync_all().unwrap();
}

/// `cp <flag> src dst && sync dst`, timed.
fn cp(flag: &str, src: &Path, dst: &Path) -> Duration {
    let _ = std::fs::remove_file(dst);
    let t = Instant::now();
    let ok = Command::new("sh")
        .args([
            "-c",
            &format!("cp {flag} \"$1\" \"$2\" && sync \"$2\""),
            "cp",
        ])
        .arg(src)
        .arg(dst)
        .status()
        .unwrap()
        .success();
    let d = t.elapsed();
    assert!(ok, "cp {flag} failed");
    let _ = std::fs::remove_file(dst);
    d
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    percentile(&v, 0.5)
}

/// Snapshot and clone at one data size, and the two baselines, one entry per round.
struct Copies {
    data_mib: u64,
    volume_mib: u64,
    snap: Vec<Duration>,
    clone_snap: Vec<Duration>,
    clone_vol: Vec<Duration>,
    reflink: Vec<Duration>,
    sparse: Vec<Duration>,
}

/// `rounds` rounds of (1) on a volume holding `data_mib` MiB of random data.
fn copies(d: &Daemon, host_dir: &Path, data_mib: u64, rounds: u64) -> Copies {
    let volume_mib = (2 * data_mib).max(2048);
    let mut c = Copies {
        data_mib,
        volume_mib,
        snap: vec![],
        clone_snap: vec![],
        clone_vol: vec![],
        reflink: vec![],
        sparse: vec![],
    };
    let host_src = host_dir.join("src.img");
    for r in 0..rounds {
        let tag = format!("{data_mib}m{r}");
        let (v, s) = (format!("v{tag}"), format!("s{tag}"));
        let (c1, c2) = (format!("c{tag}"), format!("cv{tag}"));
        d.cli(&["volume", "create", &v, "--size", &format!("{volume_mib}Mi")]);
        let img = d.volume_image(&v);
        fill(&img, data_mib * MIB, data_mib * 1000 + r + 1);
        c.snap
            .push(d.timed(&["snapshot", "create", &s, "--volume", &v]));
        c.clone_snap
            .push(d.timed(&["volume", "clone", &c1, "--from-snapshot", &s]));
        c.clone_vol
            .push(d.timed(&["volume", "clone", &c2, "--from-volume", &v]));
        c.reflink.push(cp(
            "--reflink=always",
            &img,
            &d.images().join("volumes/bench-copy.img"),
        ));
        if r == 0 {
            let ok = Command::new("cp")
                .arg("--sparse=always")
                .arg(&img)
                .arg(&host_src)
                .status()
                .unwrap()
                .success();
            assert!(ok);
        }
        c.sparse
            .push(cp("--sparse=always", &host_src, &host_dir.join("dst.img")));
        d.cli(&["volume", "rm", &c1, &c2]);
        d.cli(&["snapshot", "rm", &s]);
        d.cli(&["volume", "rm", &v]);
    }
    let _ = std::fs::remove_file(&host_src);
    c
}

fn size_label(mib: u64) -> String {
    if mib >= 1024 && mib.is_multiple_of(1024) {
        format!("{} GiB", mib / 1024)
    } else {
        format!("{mib} MiB")
    }
}

/// Median time against data size, ours solid, the baselines dashed, both axes log.
fn plot_copies(all: &[Copies], pool: &Value, load: &str) -> Result<PathBuf, String> {
    let series = |f: fn(&Copies) -> &Vec<Duration>| -> Vec<(f64, f64)> {
        all.iter()
            .map(|c| {
                (
                    c.data_mib as f64,
                    median(f(c).clone()).as_secs_f64() * 1000.0,
                )
            })
            .collect()
    };
    let sizes: Vec<f64> = all.iter().map(|c| c.data_mib as f64).collect();
    let chart = Chart {
        title: "Snapshot and clone time against the data in the volume".to_owned(),
        note: format!(
            "median of {} rounds; pool {} (reflink {}); {} cores, 1-min load {load} at start; \
             cargo bench --bench pool",
            all.first().map_or(0, |c| c.snap.len()),
            pool["mode"].as_str().unwrap_or("?"),
            pool["reflink"],
            std::thread::available_parallelism().map_or(0, |n| n.get())
        ),
        x: Axis::log("data in the volume (MiB, log scale)").ticks(&sizes),
        y: Axis::log("time (ms, log scale)"),
        legend: Legend::UpperLeft,
        lines: vec![
            Line::ours("volbridge snapshot create (CLI)", series(|c| &c.snap)),
            Line::ours(
                "volbridge volume clone --from-snapshot (CLI)",
                series(|c| &c.clone_snap),
            ),
            Line::ours(
                "volbridge volume clone --from-volume (CLI)",
                series(|c| &c.clone_vol),
            ),
            Line::baseline(
                "baseline: cp --reflink=always + sync, in the pool",
                series(|c| &c.reflink),
            ),
            Line::baseline(
                "baseline: cp --sparse=always + sync, host data dir",
                series(|c| &c.sparse),
            ),
        ],
    };
    plot::draw("pool-copies.png", &chart)
}

fn env_num(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Fio {
    name: &'static str,
    rw: &'static str,
    bs: &'static str,
    random: bool,
}

const JOBS: [Fio; 4] = [
    Fio {
        name: "sequential write 1 MiB",
        rw: "write",
        bs: "1M",
        random: false,
    },
    Fio {
        name: "sequential read 1 MiB",
        rw: "read",
        bs: "1M",
        random: false,
    },
    Fio {
        name: "random write 4 KiB",
        rw: "randwrite",
        bs: "4k",
        random: true,
    },
    Fio {
        name: "random read 4 KiB",
        rw: "randread",
        bs: "4k",
        random: true,
    },
];

/// Bytes per second of one fio job on `file`.
fn fio(job: &Fio, file: &Path, seconds: u64) -> f64 {
    let out = Command::new("fio")
        .args([
            "--name=bench",
            "--ioengine=libaio",
            "--direct=1",
            "--iodepth=16",
            "--size=512M",
            "--time_based",
            "--output-format=json",
            &format!("--runtime={seconds}"),
            &format!("--rw={}", job.rw),
            &format!("--bs={}", job.bs),
        ])
        .arg(format!("--filename={}", file.display()))
        .output()
        .expect("run fio (apt-get install fio)");
    assert!(
        out.status.success(),
        "fio: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let j = &v["jobs"][0];
    let side = if job.rw.contains("read") {
        "read"
    } else {
        "write"
    };
    j[side]["bw_bytes"].as_f64().unwrap_or(0.0)
}

/// A fresh 4 GiB volume of a daemon, mounted while the value lives.
struct FioVolume<'a> {
    d: &'a Daemon,
    mnt: PathBuf,
}

impl<'a> FioVolume<'a> {
    fn new(d: &'a Daemon, mnt: &Path) -> FioVolume<'a> {
        d.cli(&["volume", "create", "fio", "--size", "4Gi"]);
        d.cli(&["volume", "mount", "fio", &mnt.display().to_string()]);
        FioVolume {
            d,
            mnt: mnt.to_path_buf(),
        }
    }

    fn file(&self) -> PathBuf {
        self.mnt.join("fio.dat")
    }
}

impl Drop for FioVolume<'_> {
    fn drop(&mut self) {
        self.d
            .cli(&["volume", "unmount", "fio", &self.mnt.display().to_string()]);
        self.d.cli(&["volume", "rm", "fio"]);
    }
}

/// One fio job's rates on each target, one entry per round.
struct FioRow {
    /// `[target][round]`, bytes per second.
    rates: Vec<Vec<f64>>,
}

impl FioRow {
    fn median(&self, target: usize) -> f64 {
        let mut v = self.rates[target].clone();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    /// The ratio of two targets' medians, and its range over the rounds (each round ran the
    /// targets back to back, so a round's ratio saw one state of the machine).
    fn ratio(&self, a: usize, b: usize) -> String {
        let per_round: Vec<f64> = self.rates[a]
            .iter()
            .zip(&self.rates[b])
            .map(|(x, y)| x / y)
            .collect();
        let lo = per_round.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = per_round.iter().copied().fold(0.0, f64::max);
        format!("{:.2} ({lo:.2}-{hi:.2})", self.median(a) / self.median(b))
    }
}

/// Every job on every target, `rounds` times; within a round each job runs on the targets
/// back to back, so drift of a noisy machine falls on all of them alike.
fn fio_rounds(targets: &[PathBuf], rounds: u64, seconds: u64) -> Vec<FioRow> {
    let mut rows: Vec<FioRow> = JOBS
        .iter()
        .map(|_| FioRow {
            rates: vec![Vec::new(); targets.len()],
        })
        .collect();
    for _ in 0..rounds {
        for (job, row) in JOBS.iter().zip(&mut rows) {
            for (t, file) in targets.iter().enumerate() {
                row.rates[t].push(fio(job, file, seconds));
            }
        }
    }
    rows
}

/// Which way this kernel's loop driver submits I/O, so the fio rows can be read: before Linux
/// 6.19 every loop I/O is handed to a worker (one wake-up per layer per I/O), from 6.19 it is
/// tried inline with IOCB_NOWAIT first. `bench/loop-trace.sh` shows it directly.
fn loop_regime() -> String {
    let uname = rustix::system::uname();
    let release = uname.release().to_string_lossy().into_owned();
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    if version >= (6, 19) {
        format!("kernel {release}: loop devices submit I/O inline first (Linux 6.19 and later)")
    } else {
        format!(
            "kernel {release}: loop devices hand every I/O to a worker (before Linux 6.19), \
             one wake-up per layer: docs/pool.md, bench/loop-trace.sh"
        )
    }
}

fn main() {
    assert!(
        rustix::process::geteuid().is_root(),
        "the pool bench needs root (loop devices, mounts)"
    );
    if let Err(e) = plot::check_font() {
        eprintln!("pool bench: {e}");
        std::process::exit(1);
    }
    let rounds = env_num("VOLBRIDGE_BENCH_ROUNDS", 3).max(1);
    let sizes: Vec<u64> = std::env::var("VOLBRIDGE_BENCH_DATA_MIB")
        .map(|v| {
            v.split(',')
                .map(|m| {
                    m.trim()
                        .parse()
                        .expect("VOLBRIDGE_BENCH_DATA_MIB: MiB like 64,256,1024")
                })
                .filter(|m| *m > 0)
                .collect()
        })
        .unwrap_or_else(|_| vec![64, 256, 1024]);
    let fio_seconds = env_num("VOLBRIDGE_BENCH_FIO_SECONDS", 5).max(1);
    let fio_round_count = env_num("VOLBRIDGE_BENCH_FIO_ROUNDS", 3).max(1);
    let base = std::env::var_os("VOLBRIDGE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    let root = base.join(format!("volbridge-pool-bench-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    let root = std::fs::canonicalize(&root).unwrap();
    {
        let root = root.clone();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            let _ = sweep(&root);
        }));
    }
    let load = load_average();
    let mut d = Daemon::start(&root).unwrap_or_else(|e| panic!("{e}"));
    let backends = d.json(&["backend", "ls"]);
    let pool = backends[0]["pool"].clone();
    let host_dir = root.join("host");
    std::fs::create_dir_all(&host_dir).unwrap();

    // 1. Snapshot and clone, at each data size.
    let all: Vec<Copies> = sizes
        .iter()
        .map(|&mib| copies(&d, &host_dir, mib, rounds))
        .collect();

    // 2. The data path: the pool's volume, a dir pool's volume, a plain host file.
    let dir_root = root.join("dir-pool");
    std::fs::create_dir_all(&dir_root).unwrap();
    let mut dir_daemon =
        Daemon::start_with(&dir_root, &["--csp-pool", "dir"]).unwrap_or_else(|e| panic!("{e}"));
    let rows = {
        let ours = FioVolume::new(&d, &root.join("mnt"));
        let dir_pool = FioVolume::new(&dir_daemon, &dir_root.join("mnt"));
        let targets = [ours.file(), dir_pool.file(), host_dir.join("fio.dat")];
        fio_rounds(&targets, fio_round_count, fio_seconds)
    };
    dir_daemon.stop();
    d.stop();
    let (mounts, loops) = sweep(&root);
    let removed = remove_tree(&root, "pool");

    println!();
    println!(
        "pool bench: mode {} (reflink {}), {rounds} rounds, 1-minute load average {load}",
        pool["mode"], pool["reflink"]
    );
    println!("  {}", pool["reason"].as_str().unwrap_or(""));
    for c in &all {
        println!();
        println!(
            "{:<44} {:>12} {:>16} {:>16}",
            format!(
                "{} volume, {} of data (median)",
                size_label(c.volume_mib),
                size_label(c.data_mib)
            ),
            "ms",
            "vs cp --reflink",
            "cp --sparse / us"
        );
        let reflink_m = median(c.reflink.clone());
        let sparse_m = median(c.sparse.clone());
        for (what, v) in [
            ("snapshot create (CLI)", &c.snap),
            ("volume clone --from-snapshot (CLI)", &c.clone_snap),
            ("volume clone --from-volume (CLI)", &c.clone_vol),
        ] {
            let m = median(v.clone());
            println!(
                "{:<44} {:>12} {:>15.2}x {:>15.0}x",
                what,
                ms(m),
                m.as_secs_f64() / reflink_m.as_secs_f64(),
                sparse_m.as_secs_f64() / m.as_secs_f64()
            );
        }
        println!(
            "{:<44} {:>12}",
            "baseline: cp --reflink=always + sync (pool)",
            ms(reflink_m)
        );
        println!(
            "{:<44} {:>12}",
            "baseline: cp --sparse=always + sync (host)",
            ms(sparse_m)
        );
    }
    println!(
        "goals: at most 2x cp --reflink; cp --sparse at least 100x slower than ours (at 1 GiB)"
    );
    println!();
    println!(
        "{:<24} {:>13} {:>13} {:>13} {:>17} {:>6} {:>17}",
        format!("fio, direct I/O, x{fio_round_count}"),
        "pool volume",
        "dir volume",
        "host file",
        "pool/dir (range)",
        "goal",
        "pool/host (range)"
    );
    for (job, row) in JOBS.iter().zip(&rows) {
        let unit = |b: f64| {
            if job.random {
                format!("{:.0} IOPS", b / 4096.0)
            } else {
                format!("{:.0} MiB/s", b / MIB as f64)
            }
        };
        println!(
            "{:<24} {:>13} {:>13} {:>13} {:>17} {:>6} {:>17}",
            job.name,
            unit(row.median(0)),
            unit(row.median(1)),
            unit(row.median(2)),
            row.ratio(0, 1),
            if job.random { "≥0.70" } else { "≥0.85" },
            row.ratio(0, 2),
        );
    }
    println!("pool/dir: the price of the pool layer; pool/host: of a loop-backed volume at all");
    println!("{}", loop_regime());
    if mounts + loops > 0 || !removed {
        eprintln!(
            "pool bench: left behind {mounts} mount(s), {loops} loop device(s) under {}",
            root.display()
        );
    }
    println!(
        "command: cargo bench --bench pool   (env: VOLBRIDGE_BENCH_DIR, VOLBRIDGE_BENCH_ROUNDS, \
         VOLBRIDGE_BENCH_DATA_MIB, VOLBRIDGE_BENCH_FIO_SECONDS, VOLBRIDGE_BENCH_FIO_ROUNDS, \
         VOLBRIDGE_BENCH_PLOT_DIR)"
    );
    match plot_copies(&all, &pool, &load) {
        Ok(path) => println!("chart: {}", path.display()),
        Err(e) => {
            eprintln!("pool bench: chart: {e}");
            std::process::exit(1);
        }
    }
}
