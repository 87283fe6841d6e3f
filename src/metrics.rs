//! The daemon's Prometheus metrics: one registry per process, fed by the front ends (one
//! call per finished operation), the CSP client (one per call) and the reconciler, and
//! served as OpenMetrics text at `GET /metrics` on the admin API and on `--metrics-listen`.
//!
//! Labels never carry names or ids (volumes, nodes, CSP ids): operations are method names
//! or route templates, so the number of series stays fixed however many volumes there are.

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

struct Metrics {
    registry: Registry,
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
        let mut registry = Registry::with_prefix("volbridge");
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
            registry,
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

/// One finished front-end operation. `result` is the protocol's own word for the outcome
/// (a gRPC code name, an HTTP status, `ok`/`error` for Docker).
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
    let mut out = String::new();
    encode(&mut out, &m.registry).expect("writing to a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_with_their_labels() {
        operation("csi", "CreateVolume", "OK", Duration::from_millis(2));
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
            "volbridge_operations_total{frontend=\"csi\",operation=\"CreateVolume\",result=\"OK\"}",
            "volbridge_operation_duration_seconds_bucket{",
            "volbridge_csp_request_duration_seconds_count{backend=\"local\",method=\"GET\",route=\"volumes\"}",
            "volbridge_csp_request_errors_total{backend=\"local\",method=\"GET\",route=\"volumes\",reason=\"unreachable\"} 1",
            "volbridge_reconciler_actions_total{outcome=\"done\"}",
            "volbridge_attached_volumes 3",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
    }
}
