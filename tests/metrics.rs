//! `/metrics`, `/healthz` and `/readyz` on a real daemon: on the admin socket and on
//! `--metrics-listen`. After a CSI operation, an admin call and a Docker call, the scrape
//! parses with an independent Prometheus text-format parser and holds every family with
//! its label set.

mod common;

use common::{free_port, raw_http, raw_tcp, Daemon, TempDir};
use std::collections::{BTreeMap, BTreeSet};

/// Family name → the label names seen on its samples, and the samples' label values.
type Families = BTreeMap<String, (BTreeSet<String>, Vec<BTreeMap<String, String>>)>;

fn parse(text: &str) -> Families {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("the scrape parses");
    let mut out = Families::new();
    for s in scrape.samples {
        let labels: BTreeMap<String, String> = s
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .filter(|(k, _)| k != "le")
            .collect();
        let entry = out.entry(s.metric).or_default();
        entry.0.extend(labels.keys().cloned());
        entry.1.push(labels);
    }
    out
}

fn labels(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn metrics_list_every_family_after_csi_admin_and_docker_calls() {
    let dir = TempDir::new("metrics");
    let port = free_port();
    let csi = dir.path().join("csi.sock");
    let docker = dir.path().join("docker.sock");
    let endpoint = format!("unix://{}", csi.display());
    let listen = format!("127.0.0.1:{port}");
    // A backend nobody listens for: its calls fail and are counted as errors.
    let config = dir.path().join("volbridge.toml");
    std::fs::write(
        &config,
        "[backends.dead]\nbackend = \"127.0.0.1\"\nserviceName = \"127.0.0.1\"\n\
         servicePort = \"1\"\nusername = \"u\"\npassword = \"planted-pw\"\n",
    )
    .unwrap();
    let d = Daemon::start(
        dir.path(),
        &[
            "--config",
            config.to_str().unwrap(),
            "--csp-listen",
            "127.0.0.1:0",
            "--csi-endpoint",
            &endpoint,
            "--docker-socket",
            docker.to_str().unwrap(),
            "--metrics-listen",
            &listen,
        ],
    );

    // A CSI operation (through `volbridge csi`), an admin call, a Docker call.
    let created = d.json(&[
        "csi",
        "--endpoint",
        &endpoint,
        "controller",
        "create",
        "metered",
        "--size",
        "16Mi",
    ]);
    assert!(created.to_string().contains("metered"), "{created}");
    let (code, _) = raw_http(&d.socket, "GET", "/v1/status", None);
    assert_eq!(code, 200);
    let (code, body) = raw_http(
        &d.socket,
        "POST",
        "/v1/volumes",
        Some(r#"{"name":"unreached","backend":"dead"}"#),
    );
    assert_eq!(code, 503, "{body}");
    let (code, body) = raw_http(&docker, "POST", "/VolumeDriver.List", Some("{}"));
    assert_eq!(code, 200, "{body}");
    // The Get Docker sends before every Create: a miss, not an error.
    let (code, body) = raw_http(
        &docker,
        "POST",
        "/VolumeDriver.Get",
        Some(r#"{"Name":"unknown"}"#),
    );
    assert_eq!((code, body.trim()), (200, r#"{"Err":"no such volume"}"#));

    let (code, body) = raw_tcp(port, "GET", "/healthz");
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let (code, body) = raw_tcp(port, "GET", "/readyz");
    assert_eq!(code, 200, "/readyz: {body}");
    let (code, _) = raw_tcp(port, "GET", "/v1/volumes");
    assert_eq!(code, 404, "the metrics listener serves nothing but probes");

    let (code, over_tcp) = raw_tcp(port, "GET", "/metrics");
    assert_eq!(code, 200);
    let (code, over_socket) = raw_http(&d.socket, "GET", "/metrics", None);
    assert_eq!(code, 200);
    for text in [&over_tcp, &over_socket] {
        let families = parse(text);
        // The parser folds a histogram's _bucket, _sum and _count lines into one sample.
        let want: [(&str, &[&str]); 6] = [
            (
                "volbridge_operations_total",
                &["frontend", "operation", "result"],
            ),
            (
                "volbridge_operation_duration_seconds",
                &["frontend", "operation"],
            ),
            (
                "volbridge_csp_request_duration_seconds",
                &["backend", "method", "route"],
            ),
            ("volbridge_reconciler_actions_total", &["outcome"]),
            ("volbridge_reconciler_passes_total", &[]),
            ("volbridge_attached_volumes", &[]),
        ];
        for (name, names) in want {
            let (seen, _) = families
                .get(name)
                .unwrap_or_else(|| panic!("{name} missing from:\n{text}"));
            assert_eq!(seen, &labels(names), "label names of {name}");
        }
        let failed = &families
            .get("volbridge_csp_request_errors_total")
            .unwrap_or_else(|| panic!("no CSP error counted:\n{text}"))
            .1;
        assert!(
            failed
                .iter()
                .any(|l| l["route"] == "tokens" && l["reason"] == "unreachable"),
            "the login to the dead backend is counted as unreachable:\n{text}"
        );
        assert!(!text.contains("planted-pw"), "no secret in the metrics");
        let ops = &families["volbridge_operations_total"].1;
        for (frontend, operation, result) in [
            ("csi", "CreateVolume", "ok"),
            ("admin", "GET /v1/status", "ok"),
            ("admin", "POST /v1/volumes", "unavailable"),
            ("docker", "List", "ok"),
            ("docker", "Get", "not_found"),
        ] {
            assert!(
                ops.iter().any(|l| l["frontend"] == frontend
                    && l["operation"] == operation
                    && l["result"] == result),
                "no {frontend}/{operation}/{result} sample in:\n{text}"
            );
        }
        let csp = &families["volbridge_csp_request_duration_seconds"].1;
        assert!(
            csp.iter().any(|l| l["backend"] == "local"
                && l["method"] == "POST"
                && l["route"] == "volumes"),
            "the CSP create call is counted by route, without ids:\n{text}"
        );
        assert!(
            !text.contains("metered"),
            "volume names never become label values"
        );
        for (name, labels) in [
            ("volbridge_build_info", &["version", "revision"][..]),
            ("process_resident_memory_bytes", &[]),
            ("process_cpu_seconds_total", &[]),
            ("process_open_fds", &[]),
            ("process_max_fds", &[]),
            ("process_start_time_seconds", &[]),
        ] {
            let (seen, samples) = families
                .get(name)
                .unwrap_or_else(|| panic!("{name} missing from:\n{text}"));
            assert_eq!(seen, &self::labels(labels), "label names of {name}");
            assert!(!samples.is_empty(), "{name} has a sample");
        }
        // The chart's Grafana dashboard asks only for what the daemon serves.
        for wanted in dashboard_metrics() {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| wanted.strip_suffix(s))
                .unwrap_or(&wanted);
            assert!(
                families.contains_key(family),
                "the dashboard queries {wanted}, which /metrics does not serve:\n{text}"
            );
        }
    }
    let rss = scrape_value(&over_socket, "process_resident_memory_bytes");
    assert!(
        rss > 1e6 && rss < 1e9,
        "the daemon's resident memory is plausible: {rss}"
    );
}

fn scrape_value(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

/// The metric names the dashboard's queries use (`volbridge_…`, `process_…`).
fn dashboard_metrics() -> BTreeSet<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/charts/volbridge/dashboards/volbridge.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut names = BTreeSet::new();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    for list in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(q) = list["query"].as_str() {
            exprs.push(q.to_owned());
        }
    }
    for expr in exprs {
        for (i, _) in expr.match_indices(['v', 'p']) {
            let rest = &expr[i..];
            if (rest.starts_with("volbridge_") || rest.starts_with("process_"))
                && !expr[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                names.insert(name);
            }
        }
    }
    assert!(names.len() >= 8, "dashboard metrics: {names:?}");
    names
}
