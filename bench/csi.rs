//! `cargo bench --bench csi`: the CSI front end against a real `volbridge serve` process
//! (a table, not a timed test). Needs root: the node cycle binds loop devices, runs
//! mkfs.ext4 and mounts.
//!
//! The daemon runs on a scratch state dir with `--csi-endpoint unix://<dir>/csi.sock`, the
//! embedded local CSP on `--csp-listen 127.0.0.1:<free port>` (the default backend), and
//! `RUST_LOG=warn` (override with VOLBRIDGE_BENCH_LOG; its log is `<dir>/daemon.log`).
//!
//! 1. CreateVolume + DeleteVolume pairs per second through CSI (1 GiB, mount
//!    SINGLE_NODE_WRITER ext4, no secrets) at concurrency 1, 2, 4, 8 and 16, with
//!    CreateVolume p50/p99. The tasks share one HTTP/2 connection (the channel cloned per
//!    task), and, from concurrency 4 on, in a second variant, four connections round-robin.
//!    Baseline in the same run, interleaved round by round with the CSI variants so that
//!    machine noise hits both: the same create+delete pairs sent straight to the daemon's
//!    embedded CSP over HTTP with volbridge's own `CspClient`.
//! 2. Daemon CPU (utime+stime of the whole process, /proc/<pid>/stat) per pair, measured
//!    around every chunk of every variant: for CSI it covers the gRPC front end, the engine,
//!    the CSP client and the embedded CSP; for the direct baseline only the embedded CSP.
//!    Next to it, this process's own CPU per pair: for the baseline that is what a
//!    `CspClient` costs, i.e. what the daemon spends on its side of the same CSP calls.
//! 3. The node cycle through CSI on a volume created and ControllerPublished once (node id
//!    from NodeGetInfo): NodeStageVolume + NodePublishVolume + NodeUnpublishVolume +
//!    NodeUnstageVolume, mount access ext4. The first cycle formats and is reported on its
//!    own; the next ones find the filesystem. Baseline interleaved: the same host work
//!    through the admin API (`POST /v1/volumes/{name}/mount` and `/unmount` over the admin
//!    socket, one kept-alive connection) on another 1 GiB volume. Note that the admin
//!    cycle also grants and revokes the node at the CSP on every cycle (mount_volume and
//!    unmount_volume are whole flows), which the CSI cycle leaves to ControllerPublish.
//! 4. VmRSS of the daemon after all the load (and at start and after each phase, with
//!    RssAnon: file-backed pages are mostly the binary's text).
//!
//! Every mount and loop device under the scratch dir is removed at the end (also on a panic
//! or a second Ctrl-C), best effort, after the daemon is stopped.
//!
//! Besides its table it draws (1), pairs/s against concurrency for each variant, into
//! `csi-throughput.png` in docs/bench/ (bench/support/plot.rs).
//!
//! Env: VOLBRIDGE_BENCH_DIR (scratch dir on a real disk; default the system temp dir),
//! VOLBRIDGE_BENCH_CONCURRENCY (the levels of (1), comma-separated; default 1,2,4,8,16),
//! VOLBRIDGE_BENCH_PAIRS (pairs per variant at concurrency 4 and above; default 12000; a
//! quarter of it at 1, half at 2), VOLBRIDGE_BENCH_CYCLES (node cycles of each kind; default
//! 30), VOLBRIDGE_BENCH_LOG (the daemon's RUST_LOG; default warn), VOLBRIDGE_BENCH_PLOT_DIR
//! (where the chart goes).

#[path = "support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::daemon::{self, clock_ticks_per_second, proc_cpu_ticks, Daemon};
use support::plot::{self, Axis, Chart, Legend, Line};
use support::{load_average, ms, percentile, remove_tree, sweep};
use tonic::transport::Channel;
use volbridge::frontend::csi::Endpoint;
use volbridge::provider::{ClientOptions, Credentials, CspClient, VolumeCreate};
use volbridge_proto::admin::{MountInfo, MountRequest, UnmountInfo, UnmountRequest};
use volbridge_proto::csi as pb;
use volbridge_proto::csi::controller_client::ControllerClient;
use volbridge_proto::csi::identity_client::IdentityClient;
use volbridge_proto::csi::node_client::NodeClient;
use volbridge_proto::csi::volume_capability::{access_mode::Mode, AccessMode, AccessType};

const SIZE: u64 = 1 << 30;
const CONCURRENCY: [usize; 5] = [1, 2, 4, 8, 16];
/// Chunks per variant: variants take turns chunk by chunk (A B C A B C …).
const ROUNDS: usize = 4;
/// Untimed pairs per variant before the measured ones (connections, sessions, caches).
const WARMUP_PAIRS: usize = 200;
const CSP_USER: &str = "volbridge";
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Set by Ctrl-C: finish the current chunk or cycle, then clean up and report.
static STOP: AtomicBool = AtomicBool::new(false);

fn stopped() -> bool {
    STOP.load(Ordering::Relaxed)
}

fn fail(message: &str) -> ! {
    eprintln!("csi bench: {message}");
    std::process::exit(1);
}

fn ratio(a: f64, b: f64) -> String {
    if a == 0.0 || b == 0.0 || !a.is_finite() || !b.is_finite() {
        "n/a".to_owned()
    } else {
        format!("{:.2}x", a / b)
    }
}

/// Refuses to run without root or loop devices, before anything is started.
fn preflight() {
    if !rustix::process::geteuid().is_root() {
        fail(
            "must run as root: the node cycle binds loop devices, runs mkfs.ext4 and mounts \
             filesystems (try `sudo -E cargo bench --bench csi`); nothing was done",
        );
    }
    if !Path::new("/dev/loop-control").exists() {
        fail("/dev/loop-control is missing (load the loop module: modprobe loop)");
    }
    for tool in ["losetup", "mkfs.ext4", "blkid"] {
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

// ---------------------------------------------------------------------------------------
// Scratch dir and host cleanup (as bench/node.rs)
// ---------------------------------------------------------------------------------------

/// The scratch root, canonical (mountinfo and sysfs report canonical paths).
fn scratch() -> PathBuf {
    let base = std::env::var_os("VOLBRIDGE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("vbbench-csi-{}", std::process::id()));
    if dir.exists() {
        sweep(&dir);
        remove_tree(&dir, "csi");
    }
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| fail(&format!("cannot create {}: {e}", dir.display())));
    std::fs::canonicalize(&dir).unwrap()
}

/// Kills a daemon still running (the panic and Ctrl-C paths), then sweeps and removes.
fn final_cleanup(root: &Path, keep: bool) -> String {
    daemon::kill_running();
    let (mounts, loops) = sweep(root);
    let removed = keep || remove_tree(root, "csi");
    if mounts == 0 && loops == 0 && removed {
        match keep {
            false => "every mount, loop device and temp dir removed".to_owned(),
            true => format!(
                "every mount and loop device removed; {} kept (its daemon.log shows the errors)",
                root.display()
            ),
        }
    } else {
        format!(
            "INCOMPLETE: {mounts} mount(s) and {loops} loop device(s) left under {}",
            root.display()
        )
    }
}

// ---------------------------------------------------------------------------------------
// Create + delete pairs
// ---------------------------------------------------------------------------------------

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

/// What the pairs of one variant did, summed over its chunks.
#[derive(Default)]
struct Pairs {
    pairs: usize,
    elapsed: Duration,
    create: Vec<Duration>,
    failures: usize,
    first_error: Option<String>,
    cpu_ticks: u64,
    /// This process's CPU over the same chunks (the client side).
    client_ticks: u64,
}

impl Pairs {
    fn per_sec(&self) -> f64 {
        if self.elapsed.is_zero() {
            return 0.0;
        }
        self.pairs as f64 / self.elapsed.as_secs_f64()
    }

    fn ms_per_pair(&self, ticks: u64, tck: u64) -> f64 {
        if self.pairs == 0 {
            return f64::NAN;
        }
        ticks as f64 * 1000.0 / tck as f64 / self.pairs as f64
    }

    fn add(&mut self, chunk: Chunk, (ticks, client): (u64, u64)) {
        self.pairs += chunk.create.len();
        self.elapsed += chunk.elapsed;
        self.create.extend(chunk.create);
        self.failures += chunk.failures;
        if self.first_error.is_none() {
            self.first_error = chunk.first_error;
        }
        self.cpu_ticks += ticks;
        self.client_ticks += client;
    }
}

struct Chunk {
    elapsed: Duration,
    create: Vec<Duration>,
    failures: usize,
    first_error: Option<String>,
}

/// Per task: successful create latencies, failures, first error.
type TaskOut = (Vec<Duration>, usize, Option<String>);

fn join_chunk(outs: Vec<TaskOut>, elapsed: Duration) -> Chunk {
    let mut c = Chunk {
        elapsed,
        create: Vec::new(),
        failures: 0,
        first_error: None,
    };
    for (lat, failures, err) in outs {
        c.create.extend(lat);
        c.failures += failures;
        if c.first_error.is_none() {
            c.first_error = err;
        }
    }
    c
}

/// `pairs` CreateVolume + DeleteVolume pairs through CSI by `concurrency` tasks, task `t`
/// on connection `t % channels.len()`.
async fn csi_chunk(channels: &[Channel], concurrency: usize, pairs: usize, tag: &str) -> Chunk {
    let per_task = pairs / concurrency;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..concurrency {
        let mut client = ControllerClient::new(channels[t % channels.len()].clone());
        let tag = tag.to_owned();
        tasks.spawn(async move {
            let mut lat = Vec::with_capacity(per_task);
            let (mut failures, mut first) = (0, None);
            for i in 0..per_task {
                let name = format!("csi-{tag}-{t}-{i}");
                let t0 = Instant::now();
                let created = client.create_volume(create_request(&name)).await;
                let took = t0.elapsed();
                if let Err(s) = &created {
                    failures += 1;
                    first.get_or_insert_with(|| {
                        grpc_error(
                            "CreateVolume",
                            &format!("name={name} 1 GiB mount ext4 SINGLE_NODE_WRITER"),
                            s,
                        )
                    });
                }
                let deleted = client
                    .delete_volume(pb::DeleteVolumeRequest {
                        volume_id: name.clone(),
                        ..Default::default()
                    })
                    .await;
                match deleted {
                    Ok(_) if created.is_ok() => lat.push(took),
                    Ok(_) => {}
                    Err(s) => {
                        failures += usize::from(created.is_ok());
                        first.get_or_insert_with(|| {
                            grpc_error("DeleteVolume", &format!("volume_id={name}"), &s)
                        });
                    }
                }
            }
            (lat, failures, first)
        });
    }
    let outs = tasks.join_all().await;
    join_chunk(outs, started.elapsed())
}

/// The same pairs straight to the embedded CSP.
async fn direct_chunk(client: &CspClient, concurrency: usize, pairs: usize, tag: &str) -> Chunk {
    let per_task = pairs / concurrency;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..concurrency {
        let client = client.clone();
        let tag = tag.to_owned();
        tasks.spawn(async move {
            let mut lat = Vec::with_capacity(per_task);
            let (mut failures, mut first) = (0, None);
            for i in 0..per_task {
                let name = format!("csp-{tag}-{t}-{i}");
                let req = VolumeCreate {
                    name: name.clone(),
                    size: Some(SIZE),
                    description: None,
                    params: BTreeMap::new(),
                    multi_initiator: false,
                };
                let t0 = Instant::now();
                let created = client.create_volume(&req).await;
                let took = t0.elapsed();
                match created {
                    Ok(v) => match client.delete_volume(v.id.as_deref().unwrap_or("")).await {
                        Ok(()) => lat.push(took),
                        Err(e) => {
                            failures += 1;
                            first.get_or_insert_with(|| format!("CSP delete_volume {name}: {e}"));
                        }
                    },
                    Err(e) => {
                        failures += 1;
                        first.get_or_insert_with(|| format!("CSP create_volume {name}: {e}"));
                    }
                }
            }
            (lat, failures, first)
        });
    }
    let outs = tasks.join_all().await;
    join_chunk(outs, started.elapsed())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Through CSI on this many connections.
    Csi(usize),
    Direct,
}

struct Variant {
    kind: Kind,
    concurrency: usize,
    pairs: Pairs,
}

impl Variant {
    fn label(&self) -> String {
        match self.kind {
            Kind::Csi(1) => format!("CSI c{} (1 connection)", self.concurrency),
            Kind::Csi(n) => format!("CSI c{} ({n} connections)", self.concurrency),
            Kind::Direct => format!("direct CSP c{}", self.concurrency),
        }
    }
}

struct Ctx<'a> {
    daemon: &'a Daemon,
    one: Vec<Channel>,
    four: Vec<Channel>,
    csp: CspClient,
}

/// The chunk, the daemon's CPU ticks over it and this process's.
async fn run_chunk(
    ctx: &Ctx<'_>,
    kind: Kind,
    c: usize,
    pairs: usize,
    tag: &str,
) -> (Chunk, (u64, u64)) {
    let before = ctx.daemon.cpu_ticks();
    let client_before = proc_cpu_ticks("self");
    let chunk = match kind {
        Kind::Csi(1) => csi_chunk(&ctx.one, c, pairs, tag).await,
        Kind::Csi(_) => csi_chunk(&ctx.four, c, pairs, tag).await,
        Kind::Direct => direct_chunk(&ctx.csp, c, pairs, tag).await,
    };
    let after = ctx.daemon.cpu_ticks();
    let client = proc_cpu_ticks("self").saturating_sub(client_before);
    (chunk, (after.saturating_sub(before), client))
}

/// Each variant of a concurrency level in turn, `ROUNDS` chunks each.
async fn run_level(ctx: &Ctx<'_>, c: usize, pairs: usize, kinds: &[Kind]) -> Vec<Variant> {
    let mut out: Vec<Variant> = kinds
        .iter()
        .map(|&kind| Variant {
            kind,
            concurrency: c,
            pairs: Pairs::default(),
        })
        .collect();
    let chunk = (pairs / ROUNDS).max(c);
    for round in 0..ROUNDS {
        for (n, v) in out.iter_mut().enumerate() {
            if stopped() {
                return out;
            }
            let tag = format!("c{c}v{n}r{round}");
            let (result, ticks) = run_chunk(ctx, v.kind, c, chunk, &tag).await;
            v.pairs.add(result, ticks);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Node cycles
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Series {
    lat: Vec<Duration>,
}

impl Series {
    fn p(&self, p: f64) -> Duration {
        let mut s = self.lat.clone();
        s.sort();
        percentile(&s, p)
    }
}

#[derive(Default)]
struct NodeResults {
    csi_first: Option<Duration>,
    admin_first: Option<Duration>,
    csi: Series,
    stage: Series,
    publish: Series,
    unpublish: Series,
    unstage: Series,
    admin: Series,
    mount: Series,
    unmount: Series,
    csi_failures: usize,
    admin_failures: usize,
    errors: Vec<String>,
}

struct CsiVolume {
    id: String,
    context: HashMap<String, String>,
    publish_context: HashMap<String, String>,
    staging: String,
    target: String,
}

/// One CSI node cycle: (stage, publish, unpublish, unstage).
async fn csi_cycle(node: &mut NodeClient<Channel>, v: &CsiVolume) -> Result<[Duration; 4], String> {
    let t0 = Instant::now();
    node.node_stage_volume(pb::NodeStageVolumeRequest {
        volume_id: v.id.clone(),
        publish_context: v.publish_context.clone(),
        staging_target_path: v.staging.clone(),
        volume_capability: Some(mount_cap()),
        volume_context: v.context.clone(),
        ..Default::default()
    })
    .await
    .map_err(|s| {
        grpc_error(
            "NodeStageVolume",
            &format!("volume_id={} staging={}", v.id, v.staging),
            &s,
        )
    })?;
    let stage = t0.elapsed();
    let t1 = Instant::now();
    node.node_publish_volume(pb::NodePublishVolumeRequest {
        volume_id: v.id.clone(),
        publish_context: v.publish_context.clone(),
        staging_target_path: v.staging.clone(),
        target_path: v.target.clone(),
        volume_capability: Some(mount_cap()),
        readonly: false,
        volume_context: v.context.clone(),
        ..Default::default()
    })
    .await
    .map_err(|s| {
        grpc_error(
            "NodePublishVolume",
            &format!("volume_id={} target={}", v.id, v.target),
            &s,
        )
    })?;
    let publish = t1.elapsed();
    let t2 = Instant::now();
    node.node_unpublish_volume(pb::NodeUnpublishVolumeRequest {
        volume_id: v.id.clone(),
        target_path: v.target.clone(),
    })
    .await
    .map_err(|s| {
        grpc_error(
            "NodeUnpublishVolume",
            &format!("volume_id={} target={}", v.id, v.target),
            &s,
        )
    })?;
    let unpublish = t2.elapsed();
    let t3 = Instant::now();
    node.node_unstage_volume(pb::NodeUnstageVolumeRequest {
        volume_id: v.id.clone(),
        staging_target_path: v.staging.clone(),
    })
    .await
    .map_err(|s| {
        grpc_error(
            "NodeUnstageVolume",
            &format!("volume_id={} staging={}", v.id, v.staging),
            &s,
        )
    })?;
    Ok([stage, publish, unpublish, t3.elapsed()])
}

/// The admin API over the daemon's unix socket (one kept-alive HTTP/1.1 connection).
struct Admin {
    http: reqwest::Client,
}

impl Admin {
    fn new(socket: &Path) -> Result<Admin, String> {
        let http = volbridge::tls::client_builder()
            .unix_socket(socket.to_path_buf())
            .timeout(CALL_TIMEOUT)
            .build()
            .map_err(|e| format!("admin client: {e}"))?;
        Ok(Admin { http })
    }

    async fn call<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, String> {
        let bytes = self.send(method.clone(), path, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| format!("{method} {path}: bad answer ({e})"))
    }

    async fn send<B: serde::Serialize>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<bytes::Bytes, String> {
        let mut req = self
            .http
            .request(method.clone(), format!("http://volbridge{path}"));
        if let Some(b) = body {
            req = req.json(b);
        }
        let what = || format!("{method} {path}");
        let resp = req.send().await.map_err(|e| format!("{}: {e}", what()))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| format!("{}: {e}", what()))?;
        if !status.is_success() {
            return Err(format!(
                "{}: {status}: {}",
                what(),
                String::from_utf8_lossy(&bytes)
            ));
        }
        Ok(bytes)
    }
}

/// One admin cycle: (mount, unmount), and whether the mount formatted.
async fn admin_cycle(
    admin: &Admin,
    name: &str,
    target: &str,
) -> Result<([Duration; 2], bool), String> {
    let t0 = Instant::now();
    let m: MountInfo = admin
        .call(
            reqwest::Method::POST,
            &format!("/v1/volumes/{name}/mount"),
            Some(&MountRequest {
                path: target.to_owned(),
                fs_type: "ext4".to_owned(),
                ..Default::default()
            }),
        )
        .await?;
    let mount = t0.elapsed();
    let t1 = Instant::now();
    let u: UnmountInfo = admin
        .call(
            reqwest::Method::POST,
            &format!("/v1/volumes/{name}/unmount"),
            Some(&UnmountRequest {
                path: target.to_owned(),
                backend: None,
            }),
        )
        .await?;
    if !u.unmounted {
        return Err(format!(
            "POST /v1/volumes/{name}/unmount: nothing was mounted at {target}"
        ));
    }
    Ok(([mount, t1.elapsed()], m.formatted))
}

async fn run_node(
    channel: &Channel,
    admin: &Admin,
    root: &Path,
    cycles: usize,
) -> Result<NodeResults, String> {
    let mut controller = ControllerClient::new(channel.clone());
    let mut node = NodeClient::new(channel.clone());
    let node_id = node
        .node_get_info(pb::NodeGetInfoRequest {})
        .await
        .map_err(|s| grpc_error("NodeGetInfo", "", &s))?
        .into_inner()
        .node_id;
    let created = controller
        .create_volume(create_request("node-csi"))
        .await
        .map_err(|s| grpc_error("CreateVolume", "name=node-csi", &s))?
        .into_inner()
        .volume
        .ok_or("CreateVolume node-csi: no volume in the answer")?;
    let published = controller
        .controller_publish_volume(pb::ControllerPublishVolumeRequest {
            volume_id: created.volume_id.clone(),
            node_id: node_id.clone(),
            volume_capability: Some(mount_cap()),
            readonly: false,
            volume_context: created.volume_context.clone(),
            ..Default::default()
        })
        .await
        .map_err(|s| {
            grpc_error(
                "ControllerPublishVolume",
                &format!("volume_id=node-csi node_id={node_id}"),
                &s,
            )
        });
    let kubelet = root.join("kubelet");
    let staging = kubelet.join("plugins/csi.volbridge.io/staging/node-csi/globalmount");
    let pod = kubelet.join("pods/bench/volumes/node-csi");
    let admin_target = root.join("admin/mnt/node-admin");
    // kubelet makes the staging dir and the target's parent.
    let dirs = std::fs::create_dir_all(&staging)
        .and_then(|()| std::fs::create_dir_all(&pod))
        .map_err(|e| format!("cannot make the kubelet dirs: {e}"));
    let result = match published {
        Err(e) => Err(e),
        Ok(_) if dirs.is_err() => Err(dirs.unwrap_err()),
        Ok(p) => {
            let v = CsiVolume {
                id: created.volume_id.clone(),
                context: created.volume_context.clone(),
                publish_context: p.into_inner().publish_context,
                staging: staging.display().to_string(),
                target: pod.join("mount").display().to_string(),
            };
            let made: Result<serde_json::Value, String> = admin
                .call(
                    reqwest::Method::POST,
                    "/v1/volumes",
                    Some(&serde_json::json!({ "name": "node-admin", "size": SIZE })),
                )
                .await;
            match made {
                Err(e) => Err(e),
                Ok(_) => {
                    let target = admin_target.display().to_string();
                    let r = node_loop(&mut node, &v, admin, &target, cycles).await;
                    let gone = admin
                        .send(
                            reqwest::Method::DELETE,
                            "/v1/volumes/node-admin",
                            None::<&()>,
                        )
                        .await;
                    if let Err(e) = gone {
                        eprintln!("csi bench: delete node-admin: {e}");
                    }
                    Ok(r)
                }
            }
        }
    };
    let unpublished = controller
        .controller_unpublish_volume(pb::ControllerUnpublishVolumeRequest {
            volume_id: "node-csi".to_owned(),
            node_id: node_id.clone(),
            ..Default::default()
        })
        .await;
    if let Err(s) = unpublished {
        eprintln!(
            "csi bench: {}",
            grpc_error("ControllerUnpublishVolume", "volume_id=node-csi", &s)
        );
    }
    let deleted = controller
        .delete_volume(pb::DeleteVolumeRequest {
            volume_id: "node-csi".to_owned(),
            ..Default::default()
        })
        .await;
    if let Err(s) = deleted {
        eprintln!(
            "csi bench: {}",
            grpc_error("DeleteVolume", "volume_id=node-csi", &s)
        );
    }
    result
}

async fn node_loop(
    node: &mut NodeClient<Channel>,
    v: &CsiVolume,
    admin: &Admin,
    admin_target: &str,
    cycles: usize,
) -> NodeResults {
    let mut r = NodeResults::default();
    // Cycle 0 formats both volumes (reported on its own), then `cycles` counted ones.
    for i in 0..=cycles {
        if stopped() {
            break;
        }
        // A, then B: the pair sees the same machine.
        match csi_cycle(node, v).await {
            Ok(d) => {
                let total = d.iter().sum();
                if i == 0 {
                    r.csi_first = Some(total);
                } else {
                    r.csi.lat.push(total);
                    r.stage.lat.push(d[0]);
                    r.publish.lat.push(d[1]);
                    r.unpublish.lat.push(d[2]);
                    r.unstage.lat.push(d[3]);
                }
            }
            Err(e) => {
                r.csi_failures += 1;
                r.errors.push(format!("CSI cycle {i}: {e}"));
                // Leave nothing staged for the next attempt.
                let _ = node
                    .node_unpublish_volume(pb::NodeUnpublishVolumeRequest {
                        volume_id: v.id.clone(),
                        target_path: v.target.clone(),
                    })
                    .await;
                let _ = node
                    .node_unstage_volume(pb::NodeUnstageVolumeRequest {
                        volume_id: v.id.clone(),
                        staging_target_path: v.staging.clone(),
                    })
                    .await;
            }
        }
        match admin_cycle(admin, "node-admin", admin_target).await {
            Ok((d, formatted)) => {
                if i == 0 {
                    r.admin_first = Some(d[0] + d[1]);
                    if !formatted {
                        r.errors
                            .push("admin cycle 0: the blank volume was not formatted".into());
                    }
                } else {
                    r.admin.lat.push(d[0] + d[1]);
                    r.mount.lat.push(d[0]);
                    r.unmount.lat.push(d[1]);
                }
            }
            Err(e) => {
                r.admin_failures += 1;
                r.errors.push(format!("admin cycle {i}: {e}"));
                let _: Result<UnmountInfo, String> = admin
                    .call(
                        reqwest::Method::POST,
                        "/v1/volumes/node-admin/unmount",
                        Some(&UnmountRequest {
                            path: admin_target.to_owned(),
                            backend: None,
                        }),
                    )
                    .await;
            }
        }
        if r.errors.len() > 5 {
            r.errors
                .push("too many failures; node cycles stopped".into());
            break;
        }
    }
    r
}

// ---------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------

struct Outcome {
    levels: Vec<Vec<Variant>>,
    node: Result<NodeResults, String>,
    /// (VmRSS, RssAnon) at start and after each phase.
    rss_steps: Vec<(String, u64, u64)>,
    rss_kib: u64,
    anon_kib: u64,
    file_kib: u64,
    threads: u64,
    hwm_kib: u64,
    pid: u32,
    total: Duration,
}

async fn wait_probe(channel: &Channel) -> Result<(), String> {
    let mut identity = IdentityClient::new(channel.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = identity.probe(pb::ProbeRequest {}).await;
        match answer {
            Ok(r) if r.get_ref().ready == Some(true) => return Ok(()),
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            Ok(r) => {
                return Err(format!(
                    "Probe: still not ready after 30 s ({:?})",
                    r.get_ref()
                ))
            }
            Err(s) => return Err(grpc_error("Probe", "", &s)),
        }
    }
}

/// Pairs per variant at concurrency `c`: a quarter of `pairs` at 1, half at 2 (the slow
/// levels), all of it from 4 on.
fn pairs_at(pairs: usize, c: usize) -> usize {
    (pairs * c.min(4) / 4).max(ROUNDS * c)
}

async fn run(
    daemon: &mut Daemon,
    root: &Path,
    levels_c: &[usize],
    pairs16: usize,
    cycles: usize,
) -> Result<Outcome, String> {
    let memory = |d: &Daemon, label: &str| {
        let (_, rss, anon) = d.memory("");
        (label.to_owned(), rss, anon)
    };
    let started = Instant::now();
    let endpoint = Endpoint::parse(&daemon.csi_endpoint).map_err(|e| e.to_string())?;
    let channel = || endpoint.channel().map_err(|e| e.to_string());
    let one = vec![channel()?];
    let four = vec![channel()?, channel()?, channel()?, channel()?];
    wait_probe(&one[0]).await?;
    let mut rss_steps = vec![memory(daemon, "start")];
    let creds = Credentials::service("local", daemon.csp_addr, CSP_USER, &daemon.csp_password()?)
        .map_err(|e| format!("CSP credentials: {e}"))?;
    let csp =
        CspClient::new(creds, ClientOptions::default()).map_err(|e| format!("CSP client: {e}"))?;
    let ctx = Ctx {
        daemon,
        one,
        four,
        csp,
    };

    // Warm-up, not counted: every connection and both paths.
    for kind in [Kind::Csi(1), Kind::Csi(4), Kind::Direct] {
        let (chunk, _) = run_chunk(&ctx, kind, 4, WARMUP_PAIRS, "warm").await;
        if let Some(e) = chunk.first_error {
            return Err(format!("warm-up: {e}"));
        }
    }
    rss_steps.push(memory(daemon, "warm-up"));
    let mut levels = Vec::new();
    for (i, &c) in levels_c.iter().enumerate() {
        let kinds: &[Kind] = if c >= 4 {
            &[Kind::Csi(1), Kind::Direct, Kind::Csi(4)]
        } else {
            &[Kind::Csi(1), Kind::Direct]
        };
        levels.push(run_level(&ctx, c, pairs_at(pairs16, c), kinds).await);
        if i == 0 || i + 1 == levels_c.len() {
            rss_steps.push(memory(daemon, &format!("c{c}")));
        }
    }
    let node = if stopped() {
        Err("stopped".to_owned())
    } else {
        let admin = Admin::new(&daemon.admin_socket)?;
        run_node(&ctx.one[0], &admin, root, cycles).await
    };
    let rss_kib = daemon.status_kib("VmRSS");
    rss_steps.push(memory(daemon, "node"));
    let hwm_kib = daemon.status_kib("VmHWM");
    let anon_kib = daemon.status_kib("RssAnon");
    let file_kib = daemon.status_kib("RssFile");
    let threads = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:")?.trim().parse().ok())
        .unwrap_or(0);
    if !daemon.alive() {
        return Err(format!(
            "the daemon died during the run; log:\n{}",
            daemon.log_tail()
        ));
    }
    Ok(Outcome {
        levels,
        node,
        rss_steps,
        rss_kib,
        anon_kib,
        file_kib,
        threads,
        hwm_kib,
        pid: daemon.pid,
        total: started.elapsed(),
    })
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not used by this harness.
    preflight();
    let env_usize = |key: &str, default: usize| -> usize {
        std::env::var(key)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let levels_c: Vec<usize> = match std::env::var("VOLBRIDGE_BENCH_CONCURRENCY") {
        Ok(v) => {
            let mut l: Vec<usize> = v
                .split(',')
                .map(|c| c.trim().parse().ok().filter(|c| *c > 0))
                .collect::<Option<_>>()
                .unwrap_or_else(|| {
                    fail(&format!(
                        "VOLBRIDGE_BENCH_CONCURRENCY={v}: expected levels like 1,2,4,8,16"
                    ))
                });
            l.sort_unstable();
            l.dedup();
            l
        }
        Err(_) => CONCURRENCY.to_vec(),
    };
    let pairs16 = env_usize("VOLBRIDGE_BENCH_PAIRS", 12000).max(16 * ROUNDS);
    let cycles = env_usize("VOLBRIDGE_BENCH_CYCLES", 30).max(1);
    let tck = clock_ticks_per_second();
    let load = load_average();
    let root = scratch();
    {
        // The bench profile aborts on panic (no unwinding, no Drop): clean up in the hook.
        let root = root.clone();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            eprintln!("csi bench: {}", final_cleanup(&root, true));
        }));
    }
    let mut daemon = match Daemon::start(&root) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("csi bench: cleanup: {}", final_cleanup(&root, true));
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
                        eprintln!("csi bench: {}", final_cleanup(&root, true));
                        std::process::exit(130);
                    }
                    eprintln!("csi bench: stopping after this chunk (Ctrl-C again to quit now)");
                }
            });
        }
        run(&mut daemon, &root, &levels_c, pairs16, cycles).await
    });
    drop(rt);
    let load = format!("{load} at start, {} at end", load_average());
    let stop = daemon.stop();
    let failed = match &outcome {
        Err(_) => true,
        Ok(o) => {
            o.levels.iter().flatten().any(|v| v.pairs.failures > 0)
                || o.node.as_ref().map_or(true, |n| !n.errors.is_empty())
        }
    };
    let cleanup = final_cleanup(&root, failed);
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            eprintln!("csi bench: daemon {stop}; cleanup: {cleanup}");
            fail(&e);
        }
    };
    report(&outcome, tck, &stop, &cleanup, &load, pairs16, cycles);
    match plot_throughput(&outcome, &load) {
        Ok(path) => println!("chart: {}", path.display()),
        Err(e) => fail(&format!("chart: {e}")),
    }
    if stopped() {
        std::process::exit(130);
    }
}

/// Pairs/s against concurrency, one line per variant.
fn plot_throughput(o: &Outcome, load: &str) -> Result<PathBuf, String> {
    let points = |kind: Kind| -> Vec<(f64, f64)> {
        o.levels
            .iter()
            .flatten()
            .filter(|v| v.kind == kind && v.pairs.pairs > 0)
            .map(|v| (v.concurrency as f64, v.pairs.per_sec()))
            .collect()
    };
    let levels: Vec<f64> = o
        .levels
        .iter()
        .filter_map(|l| l.first())
        .map(|v| v.concurrency as f64)
        .collect();
    let chart = Chart {
        title: "CSI CreateVolume + DeleteVolume throughput against concurrency".to_owned(),
        note: format!(
            "volbridge serve (release), embedded local CSP, 1 GiB volumes; {} cores, 1-min \
             load {load}; cargo bench --bench csi",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        ),
        x: Axis::log("concurrent callers (log scale)").ticks(&levels),
        y: Axis::linear("create + delete pairs per second"),
        legend: Legend::UpperLeft,
        lines: vec![
            Line::ours("CSI, 1 gRPC connection", points(Kind::Csi(1))),
            Line::ours("CSI, 4 gRPC connections", points(Kind::Csi(4))),
            Line::baseline(
                "baseline: the same pairs straight to the daemon's CSP",
                points(Kind::Direct),
            ),
        ],
    };
    plot::draw("csi-throughput.png", &chart)
}

/// The 1-minute load average: client, daemon and CSP share the machine's cores.
fn line(measure: &str, result: &str, goal: &str) {
    println!("{measure:<58} {result:>22}   {goal}");
}

fn report(
    o: &Outcome,
    tck: u64,
    stop: &str,
    cleanup: &str,
    load: &str,
    pairs16: usize,
    cycles: usize,
) {
    println!();
    println!(
        "CSI against `volbridge serve` (pid {}, release build, embedded local CSP, default \
         backend); 1 GiB volumes, mount SINGLE_NODE_WRITER ext4, no secrets",
        o.pid
    );
    let per_level: Vec<String> = o
        .levels
        .iter()
        .filter_map(|l| l.first())
        .map(|v| format!("{} at c{}", pairs_at(pairs16, v.concurrency), v.concurrency))
        .collect();
    println!(
        "pairs per variant: {}, in {ROUNDS} interleaved chunks per variant ({WARMUP_PAIRS} \
         warm-up pairs per path not counted); daemon CPU from /proc/<pid>/stat at {tck} ticks/s",
        per_level.join(", ")
    );
    println!();
    println!(
        "{:<12} {:>14} {:>14} {:>14} {:>14}",
        "pairs/s", "CSI 1 conn", "CSI 4 conns", "direct CSP", "CSI 1 / direct"
    );
    for level in &o.levels {
        let rate = |kind: Kind| {
            level
                .iter()
                .find(|v| v.kind == kind)
                .map(|v| v.pairs.per_sec())
        };
        let cell = |r: Option<f64>| r.map_or_else(|| "-".to_owned(), |r| format!("{r:.0}"));
        let (one, four, direct) = (rate(Kind::Csi(1)), rate(Kind::Csi(4)), rate(Kind::Direct));
        println!(
            "{:<12} {:>14} {:>14} {:>14} {:>14}",
            format!("c{}", level.first().map_or(0, |v| v.concurrency)),
            cell(one),
            cell(four),
            cell(direct),
            ratio(one.unwrap_or(0.0), direct.unwrap_or(0.0))
        );
    }
    println!();
    line("measure", "result", "goal");
    println!("{}", "-".repeat(96));
    let mut errors = Vec::new();
    for level in &o.levels {
        let direct = level.iter().find(|v| v.kind == Kind::Direct);
        for v in level {
            let p = &v.pairs;
            let mut lat = p.create.clone();
            lat.sort();
            let fails = if p.failures > 0 {
                format!("  ({} FAILED)", p.failures)
            } else {
                String::new()
            };
            let what = match v.kind {
                Kind::Direct => "create+delete",
                Kind::Csi(_) => "CreateVolume+DeleteVolume",
            };
            line(
                &format!("{}: {what} pairs/s{fails}", v.label()),
                &format!("{:.0}", p.per_sec()),
                "",
            );
            line(
                &format!("{}: create p50 / p99 ms", v.label()),
                &format!(
                    "{} / {}",
                    ms(percentile(&lat, 0.5)),
                    ms(percentile(&lat, 0.99))
                ),
                "",
            );
            let goal = match v.kind {
                Kind::Csi(_) => "<= 0.5 ms",
                Kind::Direct => "(the CSP's server side only)",
            };
            line(
                &format!("{}: daemon CPU ms per pair", v.label()),
                &format!("{:.3}", p.ms_per_pair(p.cpu_ticks, tck)),
                goal,
            );
            let client = match v.kind {
                Kind::Csi(_) => "(tonic client)",
                Kind::Direct => "(CspClient: what the daemon's own client costs)",
            };
            line(
                &format!("{}: bench process CPU ms per pair", v.label()),
                &format!("{:.3}", p.ms_per_pair(p.client_ticks, tck)),
                client,
            );
            if let (Kind::Csi(_), Some(d)) = (v.kind, direct) {
                line(
                    &format!("ratio {} / direct CSP pairs/s", v.label()),
                    &ratio(p.per_sec(), d.pairs.per_sec()),
                    "",
                );
            }
            if let Some(e) = &p.first_error {
                errors.push(format!("{}: {e}", v.label()));
            }
        }
    }
    match &o.node {
        Ok(n) => {
            let first = |d: Option<Duration>| d.map_or_else(|| "failed".to_owned(), ms);
            line(
                "node cycle via CSI, first (formats), ms",
                &first(n.csi_first),
                "",
            );
            line(
                "node cycle via admin API, first (formats), ms",
                &first(n.admin_first),
                "",
            );
            let fails = |f: usize| {
                if f > 0 {
                    format!(" ({f} FAILED)")
                } else {
                    String::new()
                }
            };
            line(
                &format!(
                    "node cycle via CSI (stage+publish+unpublish+unstage), n={}{}: p50 / p90 ms",
                    n.csi.lat.len(),
                    fails(n.csi_failures)
                ),
                &format!("{} / {}", ms(n.csi.p(0.5)), ms(n.csi.p(0.9))),
                "",
            );
            for (label, s) in [
                ("  NodeStageVolume", &n.stage),
                ("  NodePublishVolume", &n.publish),
                ("  NodeUnpublishVolume", &n.unpublish),
                ("  NodeUnstageVolume", &n.unstage),
            ] {
                line(
                    &format!("{label}: p50 / p90 ms"),
                    &format!("{} / {}", ms(s.p(0.5)), ms(s.p(0.9))),
                    "",
                );
            }
            line(
                &format!(
                    "node cycle via admin API (mount+unmount), n={}{}: p50 / p90 ms",
                    n.admin.lat.len(),
                    fails(n.admin_failures)
                ),
                &format!("{} / {}", ms(n.admin.p(0.5)), ms(n.admin.p(0.9))),
                "",
            );
            for (label, s) in [("  mount", &n.mount), ("  unmount", &n.unmount)] {
                line(
                    &format!("{label}: p50 / p90 ms"),
                    &format!("{} / {}", ms(s.p(0.5)), ms(s.p(0.9))),
                    "",
                );
            }
            line(
                "ratio node cycle CSI / admin API (p50)",
                &ratio(n.csi.p(0.5).as_secs_f64(), n.admin.p(0.5).as_secs_f64()),
                "<= 1.10x",
            );
            line(
                "ratio node cycle CSI / admin API (p90)",
                &ratio(n.csi.p(0.9).as_secs_f64(), n.admin.p(0.9).as_secs_f64()),
                "",
            );
            errors.extend(n.errors.iter().cloned());
        }
        Err(e) => {
            line("node cycle", "not measured", "");
            errors.push(format!("node cycle: {e}"));
        }
    }
    let mib = |kib: u64| format!("{:.2}", kib as f64 / 1024.0);
    let names: Vec<&str> = o.rss_steps.iter().map(|s| s.0.as_str()).collect();
    line(
        &format!("daemon VmRSS at {}, MiB", names.join(" / ")),
        &o.rss_steps
            .iter()
            .map(|s| mib(s.1))
            .collect::<Vec<_>>()
            .join(" / "),
        "",
    );
    line(
        "  of which RssAnon, MiB",
        &o.rss_steps
            .iter()
            .map(|s| mib(s.2))
            .collect::<Vec<_>>()
            .join(" / "),
        "",
    );
    line(
        "daemon VmRSS after the load, MiB",
        &format!("{:.2}", o.rss_kib as f64 / 1024.0),
        "<= 12 MiB",
    );
    line(
        &format!("  of which anon / file-backed, MiB ({} threads)", o.threads),
        &format!(
            "{:.2} / {:.2}",
            o.anon_kib as f64 / 1024.0,
            o.file_kib as f64 / 1024.0
        ),
        "",
    );
    line(
        "daemon VmHWM (peak RSS), MiB",
        &format!("{:.2}", o.hwm_kib as f64 / 1024.0),
        "",
    );
    println!();
    if errors.is_empty() {
        println!("errors: none");
    } else {
        println!("errors (first of each variant):");
        for e in &errors {
            println!("  {e}");
        }
    }
    println!(
        "the admin cycle also grants and revokes the node at the CSP each time; the CSI cycle \
         is ControllerPublished once ({cycles} counted cycles each, interleaved A B A B)"
    );
    println!(
        "total {:.1} s; 1-min load average {load}; daemon {stop}; cleanup: {cleanup}",
        o.total.as_secs_f64()
    );
    println!(
        "command: cargo bench --bench csi   (env: VOLBRIDGE_BENCH_DIR, \
         VOLBRIDGE_BENCH_CONCURRENCY, VOLBRIDGE_BENCH_PAIRS, VOLBRIDGE_BENCH_CYCLES, \
         VOLBRIDGE_BENCH_LOG, VOLBRIDGE_BENCH_PLOT_DIR)"
    );
}
