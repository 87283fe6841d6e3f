//! `cargo bench --bench scale`: many volumes through CSI against a real `volbridge serve`
//! (a table, not a timed test). Runs as root, like the other daemon benches.
//!
//! The daemon is started as in `bench/csi.rs` (scratch state dir, embedded local CSP as the
//! default backend, `RUST_LOG=warn`). Then, in order:
//!
//! 1. Warm-up, not counted: 200 CreateVolume + DeleteVolume pairs through CSI and 200
//!    create+delete pairs straight on the CSP (connections, CSP sessions). Kept short on
//!    purpose: on ext4 without a journal, every file create skips the inodes deleted in
//!    the last minutes (the kernel's `recently_deleted`), so a long run of deletes before
//!    the creates would slow the first creates down, not the last ones.
//! 2. N CreateVolume calls through CSI at concurrency 16 (1 GiB sparse volumes, mount
//!    SINGLE_NODE_WRITER ext4, no secrets), each latency kept with the order in which the
//!    call was issued: create p50 of the first 100 against the last 100.
//! 3. Listing all N, interleaved A B A B A B: ListVolumes in pages of 500 (the whole walk,
//!    checked: N entries, sorted by name, each once), against the same listing straight on
//!    the embedded CSP over HTTP (`GET /containers/v1/volumes` with volbridge's own
//!    `CspClient`, decoded): the baseline of the ratio.
//! 4. With N volumes held, CreateVolume + DeleteVolume pairs through CSI at concurrency 16,
//!    interleaved chunk by chunk with the same pairs sent straight to the embedded CSP
//!    (volbridge's `CspClient`): the daemon's CPU per pair (utime+stime from
//!    /proc/<pid>/stat) for each; the direct pairs are the baseline (the CSP's own work,
//!    the kernel's file creates and deletes included).
//! 5. Daemon VmRSS (and RssAnon) holding the N volumes, after all of the above.
//! 6. N DeleteVolume calls at concurrency 16 (cleanup, timed).
//!
//! The figures move with the machine: the creates wait for the CSP's group-committed
//! `fdatasync`, so other I/O on the disk shows up in their latency, and on ext4 without a
//! journal a run started within minutes of another one (or of any mass delete in the same
//! directory) pays for that run's deletes in its first creates (printed per tenth, in
//! order, to show it). Run it on a quiet machine, a few minutes after the last run.
//!
//! Env: VOLBRIDGE_SCALE_VOLUMES (N, default 10000), VOLBRIDGE_SCALE_PAIRS (pairs of each
//! kind in step 4, default 4000), VOLBRIDGE_BENCH_DIR (scratch dir on a real disk; default the
//! system temp dir), VOLBRIDGE_BENCH_LOG (the daemon's RUST_LOG; default warn).

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::daemon::{self, clock_ticks_per_second, Daemon};
use support::{load_average, ms, percentile, remove_tree, sweep};
use tonic::transport::Channel;
use volbridge::frontend::csi::Endpoint;
use volbridge::provider::{ClientOptions, Credentials, CspClient, VolumeCreate};
use volbridge_proto::csi as pb;
use volbridge_proto::csi::controller_client::ControllerClient;
use volbridge_proto::csi::identity_client::IdentityClient;
use volbridge_proto::csi::volume_capability::{access_mode::Mode, AccessMode, AccessType};

const SIZE: u64 = 1 << 30;
const CONCURRENCY: usize = 16;
const PAGE: i32 = 500;
/// Listing walks of each kind, interleaved.
const WALKS: usize = 3;
/// Creates compared at the start and at the end.
const EDGE: usize = 100;
const CSP_USER: &str = "volbridge";
/// Untimed pairs of each kind before the measured steps.
const WARMUP: usize = 200;
/// Chunks per kind of pairs in step 4: the kinds take turns chunk by chunk.
const ROUNDS: usize = 4;

/// Set by Ctrl-C: finish the current phase, then clean up and report.
static STOP: AtomicBool = AtomicBool::new(false);

fn stopped() -> bool {
    STOP.load(Ordering::Relaxed)
}

fn fail(message: &str) -> ! {
    eprintln!("scale bench: {message}");
    std::process::exit(1);
}

fn ratio(a: f64, b: f64) -> String {
    if a == 0.0 || b == 0.0 || !a.is_finite() || !b.is_finite() {
        "n/a".to_owned()
    } else {
        format!("{:.2}x", a / b)
    }
}

fn preflight() {
    if !rustix::process::geteuid().is_root() {
        fail(
            "must run as root, as the daemon of the other CSI benches does (its embedded CSP \
             and reconciler manage loop devices); try `sudo -E cargo bench --bench scale`; \
             nothing was done",
        );
    }
}

fn scratch() -> PathBuf {
    let base = std::env::var_os("VOLBRIDGE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("vbbench-scale-{}", std::process::id()));
    if dir.exists() {
        sweep(&dir);
        remove_tree(&dir, "scale");
    }
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| fail(&format!("cannot create {}: {e}", dir.display())));
    std::fs::canonicalize(&dir).unwrap()
}

fn final_cleanup(root: &Path, keep: bool) -> String {
    daemon::kill_running();
    let (mounts, loops) = sweep(root);
    let removed = keep || remove_tree(root, "scale");
    match (mounts + loops, removed, keep) {
        (0, true, false) => "scratch dir removed".to_owned(),
        (0, true, true) => format!("{} kept (its daemon.log shows the errors)", root.display()),
        _ => format!(
            "INCOMPLETE: {mounts} mount(s) and {loops} loop device(s) left under {}",
            root.display()
        ),
    }
}

fn mount_cap() -> pb::VolumeCapability {
    pb::VolumeCapability {
        access_type: Some(AccessType::Mount(pb::volume_capability::MountVolume {
            fs_type: "ext4".to_owned(),
            ..Default::default()
        })),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    }
}

fn create_request(name: &str) -> pb::CreateVolumeRequest {
    pb::CreateVolumeRequest {
        name: name.to_owned(),
        capacity_range: Some(pb::CapacityRange {
            required_bytes: SIZE as i64,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![mount_cap()],
        ..Default::default()
    }
}

fn grpc_error(rpc: &str, detail: &str, s: &tonic::Status) -> String {
    format!("{rpc} {detail}: {:?}: {}", s.code(), s.message())
}

fn volume_name(i: usize) -> String {
    format!("scale-{i:06}")
}

/// Failures of one phase: how many, and the first one's text.
#[derive(Default)]
struct Failures {
    count: usize,
    first: Option<String>,
}

impl Failures {
    fn add(&mut self, e: String) {
        self.count += 1;
        self.first.get_or_insert(e);
    }
    fn merge(&mut self, o: Failures) {
        self.count += o.count;
        if self.first.is_none() {
            self.first = o.first;
        }
    }
}

/// Runs `job(i)` for i in 0..n by `CONCURRENCY` tasks, each taking the next index when
/// free; returns every job's duration by index (None: failed), the failures, the time.
async fn fan_out<F, Fut>(n: usize, job: F) -> (Vec<Option<Duration>>, Failures, Duration)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let job = Arc::new(job);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (next, job) = (next.clone(), job.clone());
        tasks.spawn(async move {
            let mut done = Vec::new();
            let mut failures = Failures::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n || stopped() {
                    break;
                }
                let t0 = Instant::now();
                match job(i).await {
                    Ok(()) => done.push((i, Some(t0.elapsed()))),
                    Err(e) => {
                        done.push((i, None));
                        failures.add(e);
                    }
                }
            }
            (done, failures)
        });
    }
    let mut by_index = vec![None; n];
    let mut failures = Failures::default();
    for (done, f) in tasks.join_all().await {
        for (i, d) in done {
            by_index[i] = d;
        }
        failures.merge(f);
    }
    (by_index, failures, started.elapsed())
}

/// Create+delete pairs of one kind: through CSI, or straight on the embedded CSP.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    Csi,
    Direct,
}

/// What the pairs of one kind did, summed over their chunks.
#[derive(Default)]
struct Pairs {
    pairs: usize,
    elapsed: Duration,
    ticks: u64,
    failures: Failures,
}

impl Pairs {
    fn per_sec(&self) -> f64 {
        self.pairs as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    fn cpu_ms(&self, tck: u64) -> f64 {
        self.ticks as f64 * 1000.0 / tck as f64 / self.pairs.max(1) as f64
    }
}

/// `n` create+delete pairs at concurrency 16; adds them and the daemon's CPU to `into`.
async fn pairs(
    d: &Daemon,
    csi: &ControllerClient<Channel>,
    csp: &CspClient,
    via: Via,
    n: usize,
    tag: String,
    into: &mut Pairs,
) {
    let before = d.cpu_ticks();
    let (csi, csp) = (csi.clone(), csp.clone());
    let (_, failures, took) = fan_out(n, move |i| {
        let (mut c, csp, name) = (csi.clone(), csp.clone(), format!("pair-{tag}-{i}"));
        async move {
            match via {
                Via::Csi => {
                    c.create_volume(create_request(&name))
                        .await
                        .map_err(|s| grpc_error("CreateVolume", &name, &s))?;
                    c.delete_volume(pb::DeleteVolumeRequest {
                        volume_id: name.clone(),
                        ..Default::default()
                    })
                    .await
                    .map_err(|s| grpc_error("DeleteVolume", &name, &s))?;
                }
                Via::Direct => {
                    let req = VolumeCreate {
                        name: name.clone(),
                        size: Some(SIZE),
                        description: None,
                        params: BTreeMap::new(),
                        multi_initiator: false,
                    };
                    let v = csp
                        .create_volume(&req)
                        .await
                        .map_err(|e| format!("CSP create_volume {name}: {e}"))?;
                    csp.delete_volume(v.id.as_deref().unwrap_or(""))
                        .await
                        .map_err(|e| format!("CSP delete_volume {name}: {e}"))?;
                }
            }
            Ok(())
        }
    })
    .await;
    into.ticks += d.cpu_ticks().saturating_sub(before);
    into.pairs += n - failures.count;
    into.elapsed += took;
    into.failures.merge(failures);
}

/// One ListVolumes walk in pages of `PAGE`: (time, first page, other pages' times, error).
async fn csi_walk(
    mut c: ControllerClient<Channel>,
    n: usize,
) -> Result<(Duration, Duration, Vec<Duration>), String> {
    let started = Instant::now();
    let mut token = String::new();
    let mut names: Vec<String> = Vec::with_capacity(n);
    let mut pages = Vec::new();
    loop {
        let t0 = Instant::now();
        let page = c
            .list_volumes(pb::ListVolumesRequest {
                max_entries: PAGE,
                starting_token: token.clone(),
            })
            .await
            .map_err(|s| grpc_error("ListVolumes", &format!("token '{token}'"), &s))?
            .into_inner();
        pages.push(t0.elapsed());
        if page.entries.len() > PAGE as usize {
            return Err(format!("a page of {} entries", page.entries.len()));
        }
        for e in page.entries {
            let v = e.volume.ok_or("an entry without a volume")?;
            if e.status.is_none() {
                return Err(format!("{}: entry without status", v.volume_id));
            }
            names.push(v.volume_id);
        }
        if page.next_token.is_empty() {
            break;
        }
        if pages.len() > n / PAGE as usize + 2 {
            return Err("the walk does not end".into());
        }
        token = page.next_token;
    }
    let took = started.elapsed();
    if names.len() != n || names.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!(
            "the walk listed {} names (want {n}, sorted, each once)",
            names.len()
        ));
    }
    let first = pages.remove(0);
    Ok((took, first, pages))
}

/// `GET /containers/v1/volumes` straight on the embedded CSP, decoded.
async fn direct_list(csp: &CspClient, n: usize) -> Result<Duration, String> {
    let t0 = Instant::now();
    let all = csp
        .list_volumes()
        .await
        .map_err(|e| format!("CSP list: {e}"))?;
    let took = t0.elapsed();
    if all.len() != n {
        return Err(format!("CSP list: {} volumes (want {n})", all.len()));
    }
    Ok(took)
}

struct Outcome {
    n: usize,
    pairs_n: usize,
    create_all: Duration,
    create_first: Vec<Duration>,
    create_last: Vec<Duration>,
    create_every: Vec<Duration>,
    /// Every create's latency in the order the calls were issued (None: failed).
    create_order: Vec<Option<Duration>>,
    csi_walks: Vec<Duration>,
    first_pages: Vec<Duration>,
    later_pages: Vec<Duration>,
    direct: Vec<Duration>,
    pairs_csi: Pairs,
    pairs_direct: Pairs,
    delete_all: Duration,
    rss: Vec<(&'static str, u64, u64)>,
    hwm_kib: u64,
    threads: u64,
    state_bytes: u64,
    errors: Vec<String>,
    total: Duration,
}

async fn wait_probe(channel: &Channel) -> Result<(), String> {
    let mut identity = IdentityClient::new(channel.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match identity.probe(pb::ProbeRequest {}).await {
            Ok(r) if r.get_ref().ready == Some(true) => return Ok(()),
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            Ok(r) => return Err(format!("Probe: not ready after 30 s ({:?})", r.get_ref())),
            Err(s) => return Err(grpc_error("Probe", "", &s)),
        }
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                // The pool image (docs/pool.md) holds volume data, not metadata.
                .filter(|e| e.file_name() != volbridge_local_csp::POOL_IMAGE)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

async fn run(d: &mut Daemon, n: usize, pairs_n: usize) -> Result<Outcome, String> {
    let started = Instant::now();
    let endpoint = Endpoint::parse(&d.csi_endpoint).map_err(|e| e.to_string())?;
    let channel = endpoint.channel().map_err(|e| e.to_string())?;
    wait_probe(&channel).await?;
    let csi = ControllerClient::new(channel);
    let creds = Credentials::service("local", d.csp_addr, CSP_USER, &d.csp_password()?)
        .map_err(|e| format!("CSP credentials: {e}"))?;
    let csp =
        CspClient::new(creds, ClientOptions::default()).map_err(|e| format!("CSP client: {e}"))?;
    let mut errors = Vec::new();
    let mut rss = vec![d.memory("start")];

    // 1. Warm-up, not counted.
    for via in [Via::Csi, Via::Direct] {
        let mut warm = Pairs::default();
        pairs(d, &csi, &csp, via, WARMUP, "warm".into(), &mut warm).await;
        if let Some(e) = warm.failures.first {
            return Err(format!("warm-up: {e}"));
        }
    }
    rss.push(d.memory("warm-up"));

    // 2. N creates.
    let c = csi.clone();
    let (lat, f, create_all) = fan_out(n, move |i| {
        let (mut c, name) = (c.clone(), volume_name(i));
        async move {
            c.create_volume(create_request(&name))
                .await
                .map(drop)
                .map_err(|s| grpc_error("CreateVolume", &name, &s))
        }
    })
    .await;
    if let Some(e) = f.first {
        errors.push(format!("creates ({} failed): {e}", f.count));
    }
    let ok_in = |range: std::ops::Range<usize>| -> Vec<Duration> {
        let mut v: Vec<Duration> = lat[range].iter().flatten().copied().collect();
        v.sort();
        v
    };
    let edge = EDGE.min(n / 2);
    let create_first = ok_in(0..edge);
    let create_last = ok_in(n - edge..n);
    let create_every = ok_in(0..n);
    rss.push(d.memory("creates"));
    if stopped() {
        return Err("stopped".into());
    }

    // 3. Listing, CSI and direct in turn.
    let (mut csi_walks, mut first_pages, mut later_pages, mut direct) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..WALKS {
        match csi_walk(csi.clone(), n).await {
            Ok((all, first, later)) => {
                csi_walks.push(all);
                first_pages.push(first);
                later_pages.extend(later);
            }
            Err(e) => errors.push(format!("ListVolumes walk: {e}")),
        }
        match direct_list(&csp, n).await {
            Ok(t) => direct.push(t),
            Err(e) => errors.push(e),
        }
    }
    rss.push(d.memory("listing"));

    // 4. Pairs with N volumes held, CSI and direct in turn.
    let (mut pairs_csi, mut pairs_direct) = (Pairs::default(), Pairs::default());
    let chunk = (pairs_n / ROUNDS).max(CONCURRENCY);
    for round in 0..ROUNDS {
        for (via, into) in [(Via::Csi, &mut pairs_csi), (Via::Direct, &mut pairs_direct)] {
            if stopped() {
                break;
            }
            pairs(d, &csi, &csp, via, chunk, format!("r{round}"), into).await;
        }
    }
    for (what, p) in [("CSI", &mut pairs_csi), ("direct", &mut pairs_direct)] {
        if let Some(e) = p.failures.first.take() {
            errors.push(format!(
                "{what} pairs, {n} volumes held ({} failed): {e}",
                p.failures.count
            ));
        }
    }
    // 5. What the daemon holds now.
    rss.push(d.memory("pairs"));
    let hwm_kib = d.status_kib("VmHWM");
    let threads = d.threads();
    let csp_dir = d.state.join("csp");
    let state_bytes = dir_bytes(&csp_dir);

    // 6. Cleanup through CSI.
    let c = csi.clone();
    let (_, f, delete_all) = fan_out(n, move |i| {
        let (mut c, name) = (c.clone(), volume_name(i));
        async move {
            c.delete_volume(pb::DeleteVolumeRequest {
                volume_id: name.clone(),
                ..Default::default()
            })
            .await
            .map(drop)
            .map_err(|s| grpc_error("DeleteVolume", &name, &s))
        }
    })
    .await;
    if let Some(e) = f.first {
        errors.push(format!("deletes ({} failed): {e}", f.count));
    }
    if !d.alive() {
        return Err(format!("the daemon died; log:\n{}", d.log_tail()));
    }
    Ok(Outcome {
        n,
        pairs_n,
        create_all,
        create_first,
        create_last,
        create_every,
        create_order: lat,
        csi_walks,
        first_pages,
        later_pages,
        direct,
        pairs_csi,
        pairs_direct,
        delete_all,
        rss,
        hwm_kib,
        threads,
        state_bytes,
        errors,
        total: started.elapsed(),
    })
}

fn main() {
    preflight();
    let env_usize = |key: &str, default: usize| -> usize {
        std::env::var(key)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let n = env_usize("VOLBRIDGE_SCALE_VOLUMES", 10_000).max(2);
    let pairs_n = env_usize("VOLBRIDGE_SCALE_PAIRS", 4000).max(CONCURRENCY);
    let tck = clock_ticks_per_second();
    let load = load_average();
    let root = scratch();
    {
        let root = root.clone();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            eprintln!("scale bench: {}", final_cleanup(&root, true));
        }));
    }
    let mut d = match Daemon::start(&root) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("scale bench: cleanup: {}", final_cleanup(&root, true));
            fail(&e);
        }
    };
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
                        eprintln!("scale bench: {}", final_cleanup(&root, true));
                        std::process::exit(130);
                    }
                    eprintln!("scale bench: stopping after this phase (Ctrl-C again to quit now)");
                }
            });
        }
        run(&mut d, n, pairs_n).await
    });
    drop(rt);
    let load = format!("{load} at start, {} at end", load_average());
    let pid = d.pid;
    let stop = d.stop();
    let failed = outcome.as_ref().map_or(true, |o| !o.errors.is_empty());
    let cleanup = final_cleanup(&root, failed);
    match outcome {
        Ok(o) => report(&o, pid, tck, &stop, &cleanup, &load),
        Err(e) => {
            eprintln!("scale bench: daemon {stop}; cleanup: {cleanup}");
            fail(&e);
        }
    }
    if stopped() {
        std::process::exit(130);
    }
}

fn line(measure: &str, result: &str, goal: &str) {
    println!("{measure:<62} {result:>22}   {goal}");
}

fn median(v: &[Duration]) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    percentile(&s, 0.5)
}

fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

fn report(o: &Outcome, pid: u32, tck: u64, stop: &str, cleanup: &str, load: &str) {
    let n = o.n;
    println!();
    println!(
        "{n} volumes through CSI against `volbridge serve` (pid {pid}, release build, embedded \
         local CSP, default backend); 1 GiB sparse volumes, mount SINGLE_NODE_WRITER ext4, \
         concurrency {CONCURRENCY} on one connection; daemon CPU from /proc/<pid>/stat at {tck} \
         ticks/s"
    );
    println!(
        "pairs with {n} held: {} of each kind (CSI, direct CSP) in {ROUNDS} interleaved \
         chunks; {WARMUP} warm-up pairs of each kind first, not counted",
        o.pairs_n
    );
    println!();
    line("measure", "result", "goal");
    println!("{}", "-".repeat(100));
    line(
        &format!("{n} CreateVolume at c{CONCURRENCY}: total s / per second"),
        &format!(
            "{} / {:.0}",
            secs(o.create_all),
            n as f64 / o.create_all.as_secs_f64()
        ),
        "",
    );
    let p50 = |v: &[Duration]| percentile(v, 0.5);
    line(
        &format!("create p50 / p99 ms, all {n}"),
        &format!(
            "{} / {}",
            ms(percentile(&o.create_every, 0.5)),
            ms(percentile(&o.create_every, 0.99))
        ),
        "",
    );
    let tenth = (n / 10).max(1);
    let deciles: Vec<String> = o
        .create_order
        .chunks(tenth)
        .map(|c| {
            let mut c: Vec<Duration> = c.iter().flatten().copied().collect();
            c.sort();
            format!("{:.2}", percentile(&c, 0.5).as_secs_f64() * 1000.0)
        })
        .collect();
    line(
        &format!("create p50 ms by tenth of the {n}, in order"),
        "",
        "",
    );
    println!("    {}", deciles.join(" "));
    line(
        &format!("create p50 ms, first {EDGE} / last {EDGE}"),
        &format!("{} / {}", ms(p50(&o.create_first)), ms(p50(&o.create_last))),
        "",
    );
    line(
        &format!("ratio create p50, last {EDGE} / first {EDGE}"),
        &ratio(
            p50(&o.create_last).as_secs_f64(),
            p50(&o.create_first).as_secs_f64(),
        ),
        "<= 1.20x",
    );
    let walks: Vec<String> = o.csi_walks.iter().map(|d| secs(*d)).collect();
    line(
        &format!(
            "ListVolumes of {n} in pages of {PAGE}, s (walks: {})",
            walks.join(", ")
        ),
        &secs(median(&o.csi_walks)),
        "<= 0.3 s (median)",
    );
    line(
        "  first page / later pages p50, ms",
        &format!(
            "{} / {}",
            ms(median(&o.first_pages)),
            ms(median(&o.later_pages))
        ),
        "",
    );
    let direct: Vec<String> = o.direct.iter().map(|d| secs(*d)).collect();
    line(
        &format!(
            "direct CSP GET /volumes of {n}, decoded, s ({})",
            direct.join(", ")
        ),
        &secs(median(&o.direct)),
        "(baseline)",
    );
    line(
        "ratio ListVolumes walk / direct CSP listing (medians)",
        &ratio(
            median(&o.csi_walks).as_secs_f64(),
            median(&o.direct).as_secs_f64(),
        ),
        "",
    );
    let (pc, pd) = (&o.pairs_csi, &o.pairs_direct);
    line(
        &format!("{n} held: CreateVolume+DeleteVolume pairs/s at c{CONCURRENCY}, CSI / direct CSP"),
        &format!("{:.0} / {:.0}", pc.per_sec(), pd.per_sec()),
        "",
    );
    line(
        &format!("{n} held: daemon CPU ms per pair at c{CONCURRENCY}, CSI"),
        &format!("{:.3}", pc.cpu_ms(tck)),
        "<= 0.35 ms",
    );
    line(
        &format!("{n} held: daemon CPU ms per pair at c{CONCURRENCY}, direct CSP"),
        &format!("{:.3}", pd.cpu_ms(tck)),
        "(baseline: the CSP's side)",
    );
    line(
        "ratio CPU per pair, CSI / direct CSP",
        &ratio(pc.cpu_ms(tck), pd.cpu_ms(tck)),
        "",
    );
    let mib = |kib: u64| format!("{:.2}", kib as f64 / 1024.0);
    let names: Vec<&str> = o.rss.iter().map(|s| s.0).collect();
    line(
        &format!("daemon VmRSS at {}, MiB", names.join(" / ")),
        &o.rss
            .iter()
            .map(|s| mib(s.1))
            .collect::<Vec<_>>()
            .join(" / "),
        "",
    );
    line(
        "  of which RssAnon, MiB",
        &o.rss
            .iter()
            .map(|s| mib(s.2))
            .collect::<Vec<_>>()
            .join(" / "),
        "",
    );
    let held = o.rss.last().map_or(0, |s| s.1);
    line(
        &format!(
            "daemon VmRSS holding {n} volumes, MiB ({} threads)",
            o.threads
        ),
        &mib(held),
        "<= 20 MiB",
    );
    line("daemon VmHWM (peak RSS), MiB", &mib(o.hwm_kib), "");
    line(
        "local CSP metadata on disk (state file + journal), MiB",
        &format!("{:.2}", o.state_bytes as f64 / 1048576.0),
        "",
    );
    line(
        &format!("{n} DeleteVolume at c{CONCURRENCY} (cleanup), s"),
        &secs(o.delete_all),
        "",
    );
    println!();
    if o.errors.is_empty() {
        println!("errors: none");
    } else {
        println!("errors:");
        for e in &o.errors {
            println!("  {e}");
        }
    }
    println!(
        "total {:.1} s; 1-min load average {load}; daemon {stop}; cleanup: {cleanup}",
        o.total.as_secs_f64()
    );
    println!(
        "command: cargo bench --bench scale   (env: VOLBRIDGE_SCALE_VOLUMES, \
         VOLBRIDGE_SCALE_PAIRS, VOLBRIDGE_BENCH_DIR, VOLBRIDGE_BENCH_LOG)"
    );
}
