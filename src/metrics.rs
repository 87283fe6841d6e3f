//! The daemon's Prometheus metrics: one registry per process, fed by the front ends (one
//! call per finished operation), the CSP client (one per call) and the reconciler, and
//! served as OpenMetrics text at `GET /metrics` on the admin API and on `--metrics-listen`.
//!
//! Labels never carry names or ids (volumes, nodes, CSP ids): operations are method names
//! or route templates, so the number of series stays fixed however many volumes there are.
//! `result` has one spelling whatever the front end: `ok`, or the error's kind in snake case
//! (`not_found`, `invalid_argument`, `unavailable`…), the gRPC code names' vocabulary.
//!
//! Beside volbridge's own families (prefix `volbridge_`), `volbridge_build_info` and the
//! conventional `process_*` gauges (resident memory, CPU seconds, open and maximum file
//! descriptors, start time) are read from `/proc/self` at each scrape.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::OnceLock;
use std::time::Duration;

/// What `GET /metrics` answers with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Operation {
    frontend: &'static str,
    operation: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Timed {
    frontend: &'static str,
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CspCall {
    backend: String,
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CspError {
    backend: String,
    method: String,
    route: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reconciled {
    outcome: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Build {
    version: &'static str,
    revision: &'static str,
}

struct Metrics {
    registry: Registry,
    process: Process,
    operations: Family<Operation, Counter>,
    latency: Histograms<Timed>,
    csp_latency: Histograms<CspCall>,
    csp_errors: Family<CspError, Counter>,
    reconciler: Family<Reconciled, Counter>,
    passes: Counter,
    attached: Gauge,
}

/// 0.25 ms to about 16 s: a cached lookup at the low end, a mkfs or a copy at the high end.
fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 17))
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let operations = Family::<Operation, Counter>::default();
        let latency: Histograms<Timed> = Family::new_with_constructor(seconds as fn() -> Histogram);
        let csp_latency: Histograms<CspCall> =
            Family::new_with_constructor(seconds as fn() -> Histogram);
        let csp_errors = Family::<CspError, Counter>::default();
        let reconciler = Family::<Reconciled, Counter>::default();
        let passes = Counter::default();
        let attached = Gauge::default();
        let mut root = Registry::default();
        let process = Process::register(&mut root);
        let registry = root.sub_registry_with_prefix("volbridge");
        let build = prometheus_client::metrics::info::Info::new(Build {
            version: env!("CARGO_PKG_VERSION"),
            // The commit build.rs found (or VOLBRIDGE_BUILD_COMMIT), as `--version` shows it.
            revision: if crate::build_info::COMMIT.is_empty() {
                "unknown"
            } else {
                crate::build_info::COMMIT
            },
        });
        registry.register("build", "volbridge's version and source revision", build);
        registry.register(
            "operations",
            "Finished operations by front end, operation and result",
            operations.clone(),
        );
        registry.register(
            "operation_duration_seconds",
            "Time to answer an operation, by front end and operation",
            latency.clone(),
        );
        registry.register(
            "csp_request_duration_seconds",
            "Time of a call to a CSP backend, by backend, HTTP method and route",
            csp_latency.clone(),
        );
        registry.register(
            "csp_request_errors",
            "CSP calls that failed: no answer (unreachable, timeout) or a 5xx status",
            csp_errors.clone(),
        );
        registry.register(
            "reconciler_actions",
            "Repairs the reconciler made (done) or left for the next pass (deferred)",
            reconciler.clone(),
        );
        registry.register(
            "reconciler_passes",
            "Reconciliation passes run",
            passes.clone(),
        );
        registry.register(
            "attached_volumes",
            "Volumes attached to this node (one per volume, however many targets)",
            attached.clone(),
        );
        Metrics {
            registry: root,
            process,
            operations,
            latency,
            csp_latency,
            csp_errors,
            reconciler,
            passes,
            attached,
        }
    })
}

/// The `result` of an operation that failed with `kind`.
pub fn result_of_kind(kind: volbridge_base::ErrorKind) -> &'static str {
    use volbridge_base::ErrorKind as K;
    match kind {
        K::InvalidArgument => "invalid_argument",
        K::NotFound => "not_found",
        K::AlreadyExists => "already_exists",
        K::FailedPrecondition => "failed_precondition",
        K::Aborted => "aborted",
        K::ResourceExhausted => "resource_exhausted",
        K::OutOfRange => "out_of_range",
        K::Unavailable => "unavailable",
        K::DeadlineExceeded => "deadline_exceeded",
        K::Unimplemented => "unimplemented",
        K::Internal => "internal",
    }
}

/// The `result` of a gRPC answer with `code`.
pub fn result_of_grpc(code: tonic::Code) -> &'static str {
    use tonic::Code as C;
    match code {
        C::Ok => "ok",
        C::Cancelled => "cancelled",
        C::Unknown => "unknown",
        C::InvalidArgument => "invalid_argument",
        C::DeadlineExceeded => "deadline_exceeded",
        C::NotFound => "not_found",
        C::AlreadyExists => "already_exists",
        C::PermissionDenied => "permission_denied",
        C::ResourceExhausted => "resource_exhausted",
        C::FailedPrecondition => "failed_precondition",
        C::Aborted => "aborted",
        C::OutOfRange => "out_of_range",
        C::Unimplemented => "unimplemented",
        C::Internal => "internal",
        C::Unavailable => "unavailable",
        C::DataLoss => "data_loss",
        C::Unauthenticated => "unauthenticated",
    }
}

/// The `result` of an HTTP answer with `status`: the kind the admin API maps to it
/// (`frontend/api/error.rs`), a malformed request for other 4xx, `internal` for other 5xx.
pub fn result_of_http(status: u16) -> &'static str {
    match status {
        200..=299 => "ok",
        404 => "not_found",
        405 | 501 => "unimplemented",
        409 => "already_exists",
        412 => "failed_precondition",
        423 => "aborted",
        503 => "unavailable",
        504 => "deadline_exceeded",
        507 => "resource_exhausted",
        400..=499 => "invalid_argument",
        _ => "internal",
    }
}

/// One finished front-end operation; `result` comes from one of the `result_of_*` above.
pub fn operation(frontend: &'static str, operation: &str, result: &str, elapsed: Duration) {
    let m = metrics();
    m.operations
        .get_or_create(&Operation {
            frontend,
            operation: operation.to_owned(),
            result: result.to_owned(),
        })
        .inc();
    m.latency
        .get_or_create(&Timed {
            frontend,
            operation: operation.to_owned(),
        })
        .observe(elapsed.as_secs_f64());
}

/// One CSP call, as the CSP client reports it (registered with
/// `volbridge_provider::observe::set_observer` when the daemon starts).
pub fn csp_call(call: &volbridge_provider::observe::CspCall) {
    let m = metrics();
    let labels = CspCall {
        backend: call.backend.to_owned(),
        method: call.method.to_owned(),
        route: call.route.to_owned(),
    };
    m.csp_latency
        .get_or_create(&labels)
        .observe(call.elapsed.as_secs_f64());
    if let Some(reason) = call.failure {
        m.csp_errors
            .get_or_create(&CspError {
                backend: labels.backend,
                method: labels.method,
                route: labels.route,
                reason: reason.to_owned(),
            })
            .inc();
    }
}

/// One reconciliation pass: how many repairs it made and how many it left.
pub fn reconciled(done: usize, deferred: usize) {
    let m = metrics();
    m.passes.inc();
    for (outcome, n) in [("done", done), ("deferred", deferred)] {
        m.reconciler
            .get_or_create(&Reconciled { outcome })
            .inc_by(n as u64);
    }
}

/// The whole registry as OpenMetrics text; `attached` is read by the caller just before.
pub fn render(attached: usize) -> String {
    let m = metrics();
    m.attached.set(attached as i64);
    m.process.sample();
    let mut out = String::new();
    encode(&mut out, &m.registry).expect("writing to a String cannot fail");
    out
}

/// The conventional process gauges, sampled from `/proc/self` when scraped.
struct Process {
    resident: Gauge,
    cpu_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    /// CPU seconds already added to the counter (the kernel gives a running total).
    cpu_seen: std::sync::Mutex<f64>,
    open_fds: Gauge,
    max_fds: Gauge,
    start_time: Gauge,
}

impl Process {
    fn register(registry: &mut Registry) -> Process {
        let p = Process {
            resident: Gauge::default(),
            cpu_seconds: Counter::default(),
            cpu_seen: std::sync::Mutex::new(0.0),
            open_fds: Gauge::default(),
            max_fds: Gauge::default(),
            start_time: Gauge::default(),
        };
        registry.register_with_unit(
            "process_resident_memory",
            "Resident memory size",
            prometheus_client::registry::Unit::Bytes,
            p.resident.clone(),
        );
        registry.register_with_unit(
            "process_cpu",
            "User and system CPU time spent",
            prometheus_client::registry::Unit::Seconds,
            p.cpu_seconds.clone(),
        );
        registry.register(
            "process_open_fds",
            "Open file descriptors",
            p.open_fds.clone(),
        );
        registry.register(
            "process_max_fds",
            "Limit of open file descriptors",
            p.max_fds.clone(),
        );
        registry.register_with_unit(
            "process_start_time",
            "Start time of the process since the Unix epoch",
            prometheus_client::registry::Unit::Seconds,
            p.start_time.clone(),
        );
        p
    }

    /// Reads what the kernel says now; a field it cannot read keeps its last value.
    fn sample(&self) {
        let ticks = rustix::param::clock_ticks_per_second() as f64;
        let page = rustix::param::page_size() as i64;
        if let Some(pages) = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<i64>().ok())
        {
            self.resident.set(pages * page);
        }
        // Fields after the command name (which may hold spaces) in /proc/self/stat.
        if let Some(fields) = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| {
                let rest = s.rsplit_once(')')?.1.to_owned();
                Some(
                    rest.split_whitespace()
                        .map(str::to_owned)
                        .collect::<Vec<_>>(),
                )
            })
        {
            let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
            if let (Some(utime), Some(stime)) = (field(14), field(15)) {
                let now = (utime + stime) / ticks;
                let mut seen = self.cpu_seen.lock().unwrap_or_else(|p| p.into_inner());
                if now > *seen {
                    self.cpu_seconds.inc_by(now - *seen);
                    *seen = now;
                }
            }
            if let (Some(start), Some(boot)) = (field(22), boot_time()) {
                self.start_time.set(boot + (start / ticks) as i64);
            }
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(dir.count() as i64);
        }
        if let Some(soft) = rustix::process::getrlimit(rustix::process::Resource::Nofile).current {
            self.max_fds.set(i64::try_from(soft).unwrap_or(i64::MAX));
        }
    }
}

/// Seconds since the epoch when the machine booted (`btime` in /proc/stat).
fn boot_time() -> Option<i64> {
    std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_with_their_labels() {
        operation(
            "csi",
            "CreateVolume",
            result_of_grpc(tonic::Code::Ok),
            Duration::from_millis(2),
        );
        csp_call(&volbridge_provider::observe::CspCall {
            backend: "local",
            method: "GET",
            route: "volumes",
            failure: Some("unreachable"),
            elapsed: Duration::ZERO,
        });
        reconciled(1, 0);
        let text = render(3);
        for needle in [
            "volbridge_operations_total{frontend=\"csi\",operation=\"CreateVolume\",result=\"ok\"}",
            "volbridge_operation_duration_seconds_bucket{",
            "volbridge_csp_request_duration_seconds_count{backend=\"local\",method=\"GET\",route=\"volumes\"}",
            "volbridge_csp_request_errors_total{backend=\"local\",method=\"GET\",route=\"volumes\",reason=\"unreachable\"} 1",
            "volbridge_reconciler_actions_total{outcome=\"done\"}",
            "volbridge_attached_volumes 3",
            "volbridge_build_info{version=\"",
            "process_resident_memory_bytes ",
            "process_cpu_seconds_total ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
    }

    #[test]
    fn one_spelling_of_results_whatever_the_protocol() {
        use volbridge_base::ErrorKind;
        assert_eq!(result_of_grpc(tonic::Code::NotFound), "not_found");
        assert_eq!(result_of_http(404), "not_found");
        assert_eq!(result_of_kind(ErrorKind::NotFound), "not_found");
        assert_eq!(result_of_http(204), "ok");
        // Each kind reads the same through the admin API's status and CSI's code.
        for kind in [
            ErrorKind::NotFound,
            ErrorKind::AlreadyExists,
            ErrorKind::FailedPrecondition,
            ErrorKind::Aborted,
            ErrorKind::ResourceExhausted,
            ErrorKind::Unavailable,
            ErrorKind::DeadlineExceeded,
            ErrorKind::Unimplemented,
            ErrorKind::Internal,
            ErrorKind::InvalidArgument,
        ] {
            let http = crate::frontend::api::error::status_of(kind).as_u16();
            assert_eq!(result_of_http(http), result_of_kind(kind), "{kind:?}");
        }
    }
}
