//! The Helm chart (`charts/volbridge`) checked with the real tools, as `cargo test` runs:
//!
//! - `helm lint --strict` of every scenario in `charts/volbridge/ci/` for Kubernetes 1.28
//!   and 1.35;
//! - `helm template` of every scenario for both versions, then `yamllint --strict` on the
//!   output and a strict schema validation of every object (`tests/chart/validate.py`:
//!   kubernetes-validate's bundled `-strict` schemas of exactly that version for API kinds,
//!   `tests/chart/schemas/` for the snapshot CRD kinds; a missing schema is an error);
//! - the rendered objects agree with each other and with the real `volbridge` binary: every
//!   flag the chart passes exists in `volbridge serve --help` / `volbridge flex install
//!   --help`, the rendered config parses with the daemon's own config parser, its default
//!   backend is the same CSP identity the StorageClass Secret names, sockets, host paths and
//!   Secret references line up;
//! - the install notes render in every scenario, and README's "Deploy on Kubernetes" section
//!   has the `helm install` command and names every value of `values.yaml`;
//! - negative tests: broken values fail `helm template`/`helm lint`, and the validators
//!   reject broken manifests (`tests/chart/broken/`).
//!
//! The tools come from `scripts/chart-tools` (which `scripts/test` runs): `target/chart-tools`
//! or `$VOLBRIDGE_CHART_TOOLS`. Without them the tests fail, unless `VOLBRIDGE_ALLOW_SKIP=1`.
//! Nothing here uses the network.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The Kubernetes versions every scenario is rendered for and validated against.
const KUBE_VERSIONS: [&str; 2] = ["1.28.0", "1.35.0"];
const RELEASE: &str = "vb";
const NAMESPACE: &str = "storage";
/// Every scenario must be there (the test must not pass on an empty directory).
const SCENARIOS: [&str; 4] = [
    "default",
    "controller-remote",
    "node-flex",
    "existing-secret",
];

struct Tools {
    helm: PathBuf,
    python: PathBuf,
    yamllint: PathBuf,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    repo().join("charts/volbridge")
}

fn data() -> PathBuf {
    repo().join("tests/chart")
}

fn tools() -> Option<Tools> {
    let dir = std::env::var_os("VOLBRIDGE_CHART_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/chart-tools"));
    let t = Tools {
        helm: dir.join("bin/helm"),
        python: dir.join("venv/bin/python"),
        yamllint: dir.join("venv/bin/yamllint"),
    };
    let validate = dir.join("venv/bin/kubernetes-validate");
    let missing: Vec<String> = [&t.helm, &t.python, &t.yamllint, &validate]
        .iter()
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        return Some(t);
    }
    let message = format!(
        "chart tools missing ({}): run scripts/chart-tools (scripts/test does) or point \
         VOLBRIDGE_CHART_TOOLS at an installed copy",
        missing.join(", ")
    );
    if std::env::var("VOLBRIDGE_ALLOW_SKIP").as_deref() == Ok("1") {
        eprintln!("SKIPPED (VOLBRIDGE_ALLOW_SKIP=1): {message}");
        return None;
    }
    panic!("{message}");
}

/// Where the rendered manifests are left for inspection: one directory per test process
/// (the target directory may be shared by concurrent runs).
fn out_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("chart")
        .join(std::process::id().to_string());
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn must(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        text(&out)
    );
    out
}

fn scenario_file(name: &str) -> PathBuf {
    chart().join(format!("ci/{name}-values.yaml"))
}

/// Helm, kept off the user's kubeconfig, cache and config: nothing here talks to a cluster.
fn helm(t: &Tools) -> Command {
    let home = out_dir().join("helm-home");
    let mut cmd = Command::new(&t.helm);
    cmd.env("KUBECONFIG", home.join("no-kubeconfig"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"));
    cmd
}

fn template(t: &Tools, values: &Path, kube: &str, extra: &[&str]) -> Command {
    let mut cmd = helm(t);
    cmd.args(["template", RELEASE])
        .arg(chart())
        .args(["--namespace", NAMESPACE, "--kube-version", kube])
        .args(["--api-versions", "snapshot.storage.k8s.io/v1"])
        .arg("--values")
        .arg(values)
        .args(extra);
    cmd
}

fn yamllint(t: &Tools) -> Command {
    let mut cmd = Command::new(&t.yamllint);
    cmd.args(["--strict", "-c"])
        .arg(data().join("yamllint.yaml"));
    cmd
}

fn validate(t: &Tools, kube: &str, file: &Path, dump: Option<&Path>) -> Command {
    let mut cmd = Command::new(&t.python);
    cmd.arg(data().join("validate.py"))
        .args(["--kube-version", kube, "--schemas"])
        .arg(data().join("schemas"));
    if let Some(d) = dump {
        cmd.arg("--dump").arg(d);
    }
    cmd.arg(file);
    cmd
}

// ---- reading the rendered objects ---------------------------------------------------------

fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.')
        .fold(v, |v, key| match key.parse::<usize>() {
            Ok(i) if v.is_array() => &v[i],
            _ => &v[key],
        })
}

fn st<'a>(v: &'a Value, path: &str) -> &'a str {
    at(v, path).as_str().unwrap_or_else(|| {
        panic!(
            "{path} is not a string in {}",
            serde_json::to_string(v).unwrap()
        )
    })
}

fn arr<'a>(v: &'a Value, path: &str) -> &'a [Value] {
    at(v, path).as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn strings(v: &Value, path: &str) -> Vec<String> {
    arr(v, path)
        .iter()
        .map(|s| s.as_str().expect("a string").to_owned())
        .collect()
}

/// A Secret's `stringData` entry (keys such as `node.toml` hold dots: no path lookup).
fn string_data<'a>(secret: &'a Value, key: &str) -> &'a str {
    secret["stringData"][key]
        .as_str()
        .unwrap_or_else(|| panic!("Secret {} has no {key}", secret["metadata"]["name"]))
}

struct Rendered {
    scenario: String,
    kube: String,
    objects: Vec<Value>,
}

impl Rendered {
    fn all(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    fn find(&self, kind: &str, name: &str) -> Option<&Value> {
        self.objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
    }

    fn get(&self, kind: &str, name: &str) -> &Value {
        self.find(kind, name).unwrap_or_else(|| {
            panic!(
                "{}: no {kind} {name} in {:?}",
                self.what(),
                self.objects
                    .iter()
                    .map(|o| format!("{}/{}", o["kind"], o["metadata"]["name"]))
                    .collect::<Vec<_>>()
            )
        })
    }

    fn names(&self, kind: &str) -> BTreeSet<String> {
        self.all(kind)
            .iter()
            .map(|o| st(o, "metadata.name").to_owned())
            .collect()
    }

    fn what(&self) -> String {
        format!("{} on Kubernetes {}", self.scenario, self.kube)
    }

    /// The value of `--name=value` in a container's args.
    fn flag<'a>(c: &'a Value, name: &str) -> Option<&'a str> {
        arr(c, "args").iter().find_map(|a| {
            a.as_str()?
                .strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('='))
        })
    }
}

fn container<'a>(workload: &'a Value, name: &str) -> &'a Value {
    arr(workload, "spec.template.spec.containers")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name} in {}", workload["metadata"]["name"]))
}

fn pod_volume<'a>(workload: &'a Value, name: &str) -> &'a Value {
    arr(workload, "spec.template.spec.volumes")
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no volume {name} in {}", workload["metadata"]["name"]))
}

/// The pod volume a container mounts at `path`, and how.
fn mount_at<'a>(workload: &'a Value, c: &'a Value, path: &str) -> (&'a Value, &'a Value) {
    let m = arr(c, "volumeMounts")
        .iter()
        .find(|m| m["mountPath"] == path)
        .unwrap_or_else(|| panic!("container {} mounts nothing at {path}", c["name"]));
    (pod_volume(workload, st(m, "name")), m)
}

fn host_path(volume: &Value) -> &str {
    st(volume, "hostPath.path")
}

/// The `--long` flags a `volbridge` subcommand accepts, from its real `--help`.
fn volbridge_flags(subcommand: &[&str]) -> BTreeSet<String> {
    static CACHE: OnceLock<std::sync::Mutex<BTreeMap<String, BTreeSet<String>>>> = OnceLock::new();
    let key = subcommand.join(" ");
    let cache = CACHE.get_or_init(Default::default);
    if let Some(f) = cache.lock().unwrap().get(&key) {
        return f.clone();
    }
    let out = must(
        Command::new(env!("CARGO_BIN_EXE_volbridge"))
            .args(subcommand)
            .arg("--help"),
    );
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let flags: BTreeSet<String> = help
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| {
            w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_owned()
        })
        .collect();
    assert!(
        flags.len() > 3,
        "no flags in `volbridge {key} --help`:\n{help}"
    );
    cache.lock().unwrap().insert(key, flags.clone());
    flags
}

fn check_flags(r: &Rendered, args: &[String], subcommand: &[&str]) {
    let known = volbridge_flags(subcommand);
    for a in args.iter().filter(|a| a.starts_with("--")) {
        let flag = a.split('=').next().unwrap();
        assert!(
            known.contains(flag),
            "{}: the chart passes {flag} to `volbridge {}`, which does not have it",
            r.what(),
            subcommand.join(" ")
        );
    }
}

// ---- what every rendered scenario must satisfy -------------------------------------------

const CLUSTER_SCOPED: [&str; 5] = [
    "CSIDriver",
    "StorageClass",
    "VolumeSnapshotClass",
    "ClusterRole",
    "ClusterRoleBinding",
];

/// Secrets the scenario expects to exist outside the chart.
fn external_secrets(scenario: &str) -> BTreeSet<String> {
    match scenario {
        "existing-secret" => ["array-credentials", "volbridge-config"]
            .map(String::from)
            .into(),
        _ => BTreeSet::new(),
    }
}

fn check_common(r: &Rendered) {
    let what = r.what();
    let mut seen = BTreeSet::new();
    for o in &r.objects {
        let kind = st(o, "kind");
        let name = st(o, "metadata.name");
        assert!(seen.insert((kind, name)), "{what}: {kind} {name} twice");
        let ns = o["metadata"]["namespace"].as_str();
        if CLUSTER_SCOPED.contains(&kind) {
            assert_eq!(
                ns, None,
                "{what}: cluster-scoped {kind} {name} has a namespace"
            );
        } else {
            assert_eq!(ns, Some(NAMESPACE), "{what}: {kind} {name} namespace");
        }
    }
    let secrets: BTreeSet<String> = r
        .names("Secret")
        .into_iter()
        .chain(external_secrets(&r.scenario))
        .collect();
    let accounts = r.names("ServiceAccount");

    // RBAC: bindings name roles and accounts that exist.
    for b in r
        .all("ClusterRoleBinding")
        .into_iter()
        .chain(r.all("RoleBinding"))
    {
        let role_kind = st(b, "roleRef.kind");
        assert!(
            r.find(role_kind, st(b, "roleRef.name")).is_some(),
            "{what}: {} binds a missing {role_kind}",
            b["metadata"]["name"]
        );
        for s in arr(b, "subjects") {
            assert!(
                accounts.contains(st(s, "name")),
                "{what}: binding to a missing account"
            );
        }
    }

    let driver = r
        .all("CSIDriver")
        .first()
        .map(|d| st(d, "metadata.name").to_owned());
    if let Some(d) = r.all("CSIDriver").first() {
        assert_eq!(d["spec"]["attachRequired"], true, "{what}");
        assert_eq!(d["spec"]["podInfoOnMount"], true, "{what}");
        assert_eq!(d["spec"]["fsGroupPolicy"], "File", "{what}");
        assert_eq!(
            strings(d, "spec.volumeLifecycleModes"),
            ["Persistent", "Ephemeral"],
            "{what}"
        );
    }

    for w in r.all("Deployment").into_iter().chain(r.all("DaemonSet")) {
        let wname = st(w, "metadata.name");
        let pod = at(w, "spec.template.spec");
        assert!(
            accounts.contains(st(pod, "serviceAccountName")),
            "{what}: {wname} runs as a ServiceAccount the chart does not render"
        );
        for v in arr(pod, "volumes") {
            if let Some(s) = v["secret"]["secretName"].as_str() {
                assert!(
                    secrets.contains(s),
                    "{what}: {wname} mounts missing Secret {s}"
                );
            }
        }
        for c in arr(pod, "containers") {
            let image = st(c, "image");
            let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
            assert!(
                !tag.is_empty() && !tag.contains('/') && tag != "latest",
                "{what}: {wname}/{}: image {image} has no pinned tag",
                c["name"]
            );
            for m in arr(c, "volumeMounts") {
                pod_volume(w, st(m, "name"));
            }
            for e in arr(c, "env") {
                if let Some(s) = e["valueFrom"]["secretKeyRef"]["name"].as_str() {
                    assert!(
                        secrets.contains(s),
                        "{what}: {wname} reads missing Secret {s}"
                    );
                }
            }
        }
        // Every container that runs the volbridge binary: `serve` or `csp serve`.
        for c in arr(pod, "containers") {
            if c["command"][0] == "volbridge" {
                check_daemon(r, w, c, driver.as_deref());
            }
        }
    }

    // The credentials every StorageClass / VolumeSnapshotClass call carries.
    let secret_keys = ["provisioner", "controller-publish", "controller-expand"];
    for sc in r.all("StorageClass") {
        if let Some(d) = &driver {
            assert_eq!(st(sc, "provisioner"), d, "{what}");
        }
        check_secret_refs(r, &sc["parameters"], &secret_keys, &secrets);
    }
    for vsc in r.all("VolumeSnapshotClass") {
        if let Some(d) = &driver {
            assert_eq!(st(vsc, "driver"), d, "{what}");
        }
        check_secret_refs(r, &vsc["parameters"], &["snapshotter"], &secrets);
    }
}

/// `csi.storage.k8s.io/<k>-secret-name|namespace` name an existing Secret of the release.
fn check_secret_refs(r: &Rendered, params: &Value, keys: &[&str], secrets: &BTreeSet<String>) {
    for k in keys {
        let name = params[format!("csi.storage.k8s.io/{k}-secret-name")].as_str();
        let ns = params[format!("csi.storage.k8s.io/{k}-secret-namespace")].as_str();
        let name = name.unwrap_or_else(|| panic!("{}: no {k}-secret-name", r.what()));
        assert!(
            secrets.contains(name),
            "{}: {k} secret {name} missing",
            r.what()
        );
        assert_eq!(ns, Some(NAMESPACE), "{}: {k} secret namespace", r.what());
    }
}

/// A container running `volbridge`: its flags exist; for `serve`, sockets, paths and the
/// config line up.
fn check_daemon(r: &Rendered, w: &Value, vb: &Value, driver: Option<&str>) {
    let what = format!("{} {}", r.what(), st(w, "metadata.name"));
    assert_eq!(strings(vb, "command"), ["volbridge"], "{what}");
    let args = strings(vb, "args");
    if args.first().map(String::as_str) == Some("csp") {
        assert_eq!(args.get(1).map(String::as_str), Some("serve"), "{what}");
        check_flags(r, &args[2..], &["csp", "serve"]);
        return;
    }
    assert_eq!(vb["name"], "volbridge", "{what}");
    assert_eq!(args.first().map(String::as_str), Some("serve"), "{what}");
    check_flags(r, &args[1..], &["serve"]);
    assert!(args.iter().any(|a| a == "--no-local-csp"), "{what}");
    let mode = Rendered::flag(vb, "--csi-mode").expect("--csi-mode");
    let expected = match st(w, "kind") {
        "Deployment" => "controller",
        _ => "node",
    };
    assert_eq!(mode, expected, "{what}");
    if let Some(d) = driver {
        assert_eq!(Rendered::flag(vb, "--csi-driver-name"), Some(d), "{what}");
    }

    // One socket: the daemon's endpoint and every sidecar's --csi-address are the same
    // file of the same volume.
    let endpoint = Rendered::flag(vb, "--csi-endpoint").expect("--csi-endpoint");
    let socket = endpoint.strip_prefix("unix://").expect("a unix endpoint");
    let (dir, file) = socket.rsplit_once('/').unwrap();
    let (socket_volume, _) = mount_at(w, vb, dir);
    let mut sidecars = 0;
    for c in arr(w, "spec.template.spec.containers") {
        if let Some(address) = Rendered::flag(c, "--csi-address") {
            let (d, f) = address.rsplit_once('/').unwrap();
            let (v, _) = mount_at(w, c, d);
            assert_eq!(
                v["name"], socket_volume["name"],
                "{what}: {} socket volume",
                c["name"]
            );
            assert_eq!(f, file, "{what}: {} socket file", c["name"]);
            sidecars += 1;
        }
    }
    assert!(sidecars >= 2, "{what}: sidecars on the socket: {sidecars}");

    // The liveness probe of the daemon is the livenessprobe sidecar's port.
    let health = arr(vb, "ports")
        .iter()
        .find(|p| p["name"] == "healthz")
        .expect("a healthz port");
    let probe = container(w, "liveness-probe");
    assert_eq!(
        Rendered::flag(probe, "--health-port"),
        Some(health["containerPort"].to_string().as_str()),
        "{what}"
    );
    assert_eq!(vb["livenessProbe"]["httpGet"]["port"], "healthz", "{what}");
    // With --metrics-listen, /readyz on that port is the readiness probe.
    if let Some(listen) = Rendered::flag(vb, "--metrics-listen") {
        let port = listen.rsplit_once(':').unwrap().1;
        let metrics = arr(vb, "ports")
            .iter()
            .find(|p| p["name"] == "metrics")
            .expect("a metrics port");
        assert_eq!(metrics["containerPort"].to_string(), port, "{what}");
        assert_eq!(vb["readinessProbe"]["httpGet"]["path"], "/readyz", "{what}");
        assert_eq!(vb["readinessProbe"]["httpGet"]["port"], "metrics", "{what}");
        let annotations = at(w, "spec.template.metadata.annotations");
        assert_eq!(annotations["prometheus.io/port"], port, "{what}");
    } else {
        assert!(vb.get("readinessProbe").is_none(), "{what}");
    }

    // The config file: parsed by the daemon's own parser; its default backend is the CSP
    // the StorageClass Secret names (same identity: the node registers there and the
    // controller checks that registration there).
    let config = Rendered::flag(vb, "--config").expect("--config");
    let (dir, file) = config.rsplit_once('/').unwrap();
    let (volume, _) = mount_at(w, vb, dir);
    let item = arr(volume, "secret.items")
        .iter()
        .find(|i| i["path"] == file)
        .expect("the config item");
    let secret_name = st(volume, "secret.secretName");
    let Some(secret) = r.find("Secret", secret_name) else {
        assert!(
            external_secrets(&r.scenario).contains(secret_name),
            "{what}"
        );
        assert_eq!(item["key"], "volbridge.toml", "{what}");
        if expected == "node" {
            check_node(r, w, vb, None);
        }
        return;
    };
    let toml = string_data(secret, st(item, "key"));
    let parsed = volbridge::config::Config::parse(toml)
        .unwrap_or_else(|e| panic!("{what}: the rendered config does not parse: {e:?}\n{toml}"));
    assert!(!parsed.local_csp.enabled, "{what}");
    let backend = parsed
        .backends
        .get(&parsed.default_backend)
        .expect("the default backend")
        .clone();
    volbridge::provider::Credentials::from_map(&backend)
        .unwrap_or_else(|e| panic!("{what}: default backend credentials: {e:?}"));
    if let Some(creds) = r
        .all("Secret")
        .into_iter()
        .find(|s| s["metadata"]["labels"]["app.kubernetes.io/component"] == "csp-credentials")
    {
        let map: BTreeMap<String, String> =
            serde_json::from_value(creds["stringData"].clone()).unwrap();
        assert_eq!(
            map, backend,
            "{what}: config backend != StorageClass Secret"
        );
    }

    if expected == "node" {
        check_node(r, w, vb, Some(&parsed));
    }
}

/// The node plugin's host paths; `config` is its rendered config (None: an external one).
fn check_node(r: &Rendered, w: &Value, vb: &Value, config: Option<&volbridge::config::Config>) {
    let what = format!("{} {}", r.what(), st(w, "metadata.name"));
    assert_eq!(vb["securityContext"]["privileged"], true, "{what}");
    let registrar = container(w, "node-driver-registrar");
    let registration = Rendered::flag(registrar, "--kubelet-registration-path").unwrap();
    let kubelet = registration
        .split("/plugins/")
        .next()
        .expect("<kubelet>/plugins/<driver>/csi.sock");
    let driver = Rendered::flag(vb, "--csi-driver-name").unwrap();
    assert_eq!(
        registration,
        format!("{kubelet}/plugins/{driver}/csi.sock"),
        "{what}"
    );
    // kubelet's directory at the same path, Bidirectional; the plugin socket directory is
    // the host directory kubelet is told about; the registration directory is kubelet's.
    let (v, m) = mount_at(w, vb, kubelet);
    assert_eq!(host_path(v), kubelet, "{what}");
    assert_eq!(m["mountPropagation"], "Bidirectional", "{what}");
    let (socket_dir, _) = mount_at(w, registrar, "/csi");
    assert_eq!(
        host_path(socket_dir),
        format!("{kubelet}/plugins/{driver}"),
        "{what}"
    );
    let (reg, _) = mount_at(w, registrar, "/registration");
    assert_eq!(
        host_path(reg),
        format!("{kubelet}/plugins_registry"),
        "{what}"
    );
    let (dev, _) = mount_at(w, vb, "/dev");
    assert_eq!(host_path(dev), "/dev", "{what}");
    // State and admin socket: host directories at the same path (FlexVolume and the host's
    // CLI reach the daemon through the socket).
    let state = Rendered::flag(vb, "--state-dir").unwrap();
    let (v, m) = mount_at(w, vb, state);
    assert_eq!(host_path(v), state, "{what}");
    assert_eq!(m["mountPropagation"], "Bidirectional", "{what}");
    let admin = Rendered::flag(vb, "--admin-socket").unwrap();
    let admin_dir = admin.rsplit_once('/').unwrap().0;
    let (v, _) = mount_at(w, vb, admin_dir);
    assert_eq!(host_path(v), admin_dir, "{what}");
    // The local CSP's files are where its publish context says, and this node may attach
    // from there.
    if let Some(csp) = r
        .all("Deployment")
        .into_iter()
        .find(|d| d["metadata"]["labels"]["app.kubernetes.io/component"] == "local-csp")
    {
        let c = container(csp, "csp");
        let data = Rendered::flag(c, "--data-dir").unwrap();
        let (v, _) = mount_at(csp, c, data);
        assert_eq!(host_path(v), data, "{what}");
        let (v, _) = mount_at(w, vb, data);
        assert_eq!(host_path(v), data, "{what}");
        if let Some(config) = config {
            assert!(
                config.node.local_roots.iter().any(|p| p == Path::new(data)),
                "{what}: node config local_roots {:?} lacks {data}",
                config.node.local_roots
            );
        }
    }
}

fn render(t: &Tools, scenario: &str, kube: &str) -> Rendered {
    let dir = out_dir();
    let manifest = dir.join(format!("{scenario}-{kube}.yaml"));
    let dump = dir.join(format!("{scenario}-{kube}.json"));
    let out = must(&mut template(t, &scenario_file(scenario), kube, &[]));
    std::fs::write(&manifest, &out.stdout).unwrap();
    must(yamllint(t).arg(&manifest));
    let out = must(&mut validate(t, kube, &manifest, Some(&dump)));
    let report = text(&out);
    assert!(report.contains(", 0 failed"), "{report}");
    let objects: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&dump).unwrap()).unwrap();
    Rendered {
        scenario: scenario.to_owned(),
        kube: kube.to_owned(),
        objects,
    }
}

// ---- the tests -----------------------------------------------------------------------------

#[test]
fn chart_lints_strictly_in_every_scenario() {
    let Some(t) = tools() else { return };
    for scenario in SCENARIOS {
        for kube in KUBE_VERSIONS {
            let out = must(
                helm(&t)
                    .args(["lint", "--strict", "--kube-version", kube])
                    .arg(chart())
                    .arg("--values")
                    .arg(scenario_file(scenario)),
            );
            assert!(text(&out).contains("0 chart(s) failed"), "{}", text(&out));
        }
    }
    // The install notes render in every scenario (`helm template` skips NOTES.txt).
    for scenario in SCENARIOS {
        let out = must(
            helm(&t)
                .args(["install", RELEASE])
                .arg(chart())
                .args(["--dry-run=client", "--namespace", NAMESPACE])
                .arg("--values")
                .arg(scenario_file(scenario)),
        );
        let notes = text(&out);
        assert!(
            notes.contains("NOTES:\n") && notes.contains("Check the install:"),
            "{notes}"
        );
    }
    // The chart's own YAML files, the scenarios and the test data.
    must(
        yamllint(&t)
            .arg(chart().join("Chart.yaml"))
            .arg(chart().join("values.yaml"))
            .arg(chart().join("ci"))
            .arg(data().join("yamllint.yaml")),
    );
    // README's "Deploy on Kubernetes" section has the install command and every value.
    let out = must(
        Command::new(&t.python)
            .arg(data().join("values_keys.py"))
            .arg(chart().join("values.yaml")),
    );
    let keys: Vec<Vec<String>> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(keys.len() > 50, "values.yaml keys: {keys:?}");
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let start = readme
        .find("\n## Deploy on Kubernetes\n")
        .expect("README.md has a \"Deploy on Kubernetes\" section");
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    assert!(
        section.contains("helm install volbridge charts/volbridge"),
        "{section}"
    );
    let undocumented: Vec<&str> = keys
        .iter()
        .filter(|names| !names.iter().any(|k| section.contains(&format!("`{k}`"))))
        .map(|names| names[0].as_str())
        .collect();
    assert!(
        undocumented.is_empty(),
        "README's Deploy on Kubernetes section does not describe {undocumented:?}"
    );
    let scenarios: BTreeSet<String> = std::fs::read_dir(chart().join("ci"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let expected: BTreeSet<String> = SCENARIOS.map(|s| format!("{s}-values.yaml")).into();
    assert_eq!(
        scenarios, expected,
        "charts/volbridge/ci and SCENARIOS differ"
    );
}

#[test]
fn scenarios_render_validate_and_agree() {
    let Some(t) = tools() else { return };
    for kube in KUBE_VERSIONS {
        for scenario in SCENARIOS {
            let r = render(&t, scenario, kube);
            check_common(&r);
            match scenario {
                "default" => check_default(&r),
                "controller-remote" => check_controller_remote(&r),
                "node-flex" => check_node_flex(&r),
                "existing-secret" => check_existing_secret(&r),
                other => panic!("no checks for scenario {other}"),
            }
        }
    }
}

fn kinds(r: &Rendered) -> BTreeMap<String, usize> {
    let mut k = BTreeMap::new();
    for o in &r.objects {
        *k.entry(st(o, "kind").to_owned()).or_insert(0) += 1;
    }
    k
}

fn controller_checks(r: &Rendered) -> &Value {
    let what = r.what();
    let d = r.get("Deployment", "vb-volbridge-controller");
    let provisioner = container(d, "csi-provisioner");
    let args = strings(provisioner, "args");
    for want in [
        "--extra-create-metadata",
        "--feature-gates=Topology=true",
        "--leader-election",
    ] {
        assert!(
            args.iter().any(|a| a == want),
            "{what}: provisioner lacks {want}: {args:?}"
        );
    }
    assert!(Rendered::flag(provisioner, "--timeout").is_some(), "{what}");
    for name in ["csi-attacher", "csi-resizer", "csi-snapshotter"] {
        let c = container(d, name);
        assert!(
            strings(c, "args").iter().any(|a| a == "--leader-election"),
            "{what} {name}"
        );
        assert_eq!(
            Rendered::flag(c, "--leader-election-namespace"),
            Some(NAMESPACE),
            "{what} {name}"
        );
    }
    let roles = r.names("ClusterRole");
    for sidecar in ["provisioner", "attacher", "resizer", "snapshotter"] {
        assert!(
            roles.contains(&format!("vb-volbridge-{sidecar}")),
            "{what}: {roles:?}"
        );
    }
    let leases = r.get("Role", "vb-volbridge-leader-election");
    assert_eq!(leases["rules"][0]["resources"][0], "leases", "{what}");
    d
}

fn check_default(r: &Rendered) {
    let what = r.what();
    let k = kinds(r);
    for (kind, n) in [
        ("CSIDriver", 1),
        ("Deployment", 2),
        ("DaemonSet", 1),
        ("Service", 1),
        ("StorageClass", 1),
        ("VolumeSnapshotClass", 1),
        ("Secret", 2),
        ("ServiceAccount", 2),
    ] {
        assert_eq!(
            k.get(kind).copied().unwrap_or(0),
            n,
            "{what}: {kind} in {k:?}"
        );
    }
    let d = controller_checks(r);
    assert_eq!(d["spec"]["replicas"], 1, "{what}");
    // The Secret read is scoped to the one CSP Secret, by name.
    let secret_role = r.get("Role", "vb-volbridge-csp-secret");
    assert_eq!(
        strings(&secret_role["rules"][0], "resourceNames"),
        ["vb-volbridge-csp"],
        "{what}"
    );
    assert_eq!(
        strings(&secret_role["rules"][0], "verbs"),
        ["get"],
        "{what}"
    );
    // The credentials point at the local CSP's Service (service mode).
    let creds = &r.get("Secret", "vb-volbridge-csp")["stringData"];
    let svc = r.get("Service", "vb-volbridge-csp");
    assert_eq!(
        st(creds, "serviceName"),
        format!("vb-volbridge-csp.{NAMESPACE}.svc"),
        "{what}"
    );
    assert_eq!(
        st(creds, "servicePort"),
        svc["spec"]["ports"][0]["port"].to_string()
    );
    assert!(
        st(creds, "password").len() >= 24,
        "{what}: generated password"
    );
    let csp = r.get("Deployment", "vb-volbridge-csp");
    assert_eq!(csp["spec"]["replicas"], 1, "{what}");
    assert_eq!(csp["spec"]["strategy"]["type"], "Recreate", "{what}");
    let node = r.get("DaemonSet", "vb-volbridge-node");
    assert_eq!(
        Rendered::flag(
            container(node, "node-driver-registrar"),
            "--kubelet-registration-path"
        ),
        Some("/var/lib/kubelet/plugins/csi.volbridge.io/csi.sock"),
        "{what}"
    );
    let sc = r.get("StorageClass", "volbridge");
    assert_eq!(sc["volumeBindingMode"], "Immediate", "{what}");
    assert_eq!(sc["allowVolumeExpansion"], true, "{what}");
}

fn check_controller_remote(r: &Rendered) {
    let what = r.what();
    assert!(r.all("DaemonSet").is_empty(), "{what}");
    assert!(r.find("Deployment", "vb-volbridge-csp").is_none(), "{what}");
    assert!(r.all("Service").is_empty(), "{what}");
    let d = controller_checks(r);
    assert_eq!(d["spec"]["replicas"], 2, "{what}");
    let vb = container(d, "volbridge");
    assert!(
        strings(vb, "args").iter().any(|a| a == "--log-json"),
        "{what}"
    );
    assert_eq!(
        Rendered::flag(vb, "--metrics-listen"),
        Some("0.0.0.0:9812"),
        "{what}"
    );
    let snap = container(d, "csi-snapshotter");
    assert!(
        strings(snap, "args")
            .iter()
            .any(|a| a == "--feature-gates=CSIVolumeGroupSnapshot=true"),
        "{what}"
    );
    assert!(
        serde_json::to_string(r.get("ClusterRole", "vb-volbridge-snapshotter"))
            .unwrap()
            .contains("volumegroupsnapshotcontents"),
        "{what}"
    );
    assert!(
        r.find("ClusterRole", "vb-volbridge-csp-secret").is_some(),
        "{what}"
    );
    // Direct mode credentials, the awkward password intact in the Secret and the config.
    let creds = &r.get("Secret", "vb-volbridge-csp")["stringData"];
    assert_eq!(st(creds, "backend"), "10.0.0.5");
    assert_eq!(st(creds, "password"), "p@ss\"w\\ord#1");
    assert_eq!(st(creds, "tlsInsecure"), "true");
    assert!(creds.get("serviceName").is_none(), "{what}: direct mode");
    let config = string_data(r.get("Secret", "vb-volbridge-config"), "controller.toml");
    let parsed = volbridge::config::Config::parse(config).unwrap();
    assert_eq!(parsed.backends["csp"]["password"], "p@ss\"w\\ord#1");
    let sc = r.get("StorageClass", "array-gold");
    assert_eq!(sc["volumeBindingMode"], "WaitForFirstConsumer", "{what}");
    assert_eq!(
        sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"],
        "true"
    );
    assert_eq!(sc["parameters"]["thick"], "true", "{what}");
    assert_eq!(
        sc["parameters"]["csi.storage.k8s.io/fstype"], "xfs",
        "{what}"
    );
    assert_eq!(strings(sc, "mountOptions"), ["noatime"], "{what}");
    let vsc = r.get("VolumeSnapshotClass", "array-snapshots");
    assert_eq!(vsc["deletionPolicy"], "Retain", "{what}");
}

fn check_node_flex(r: &Rendered) {
    let what = r.what();
    assert!(r.all("Deployment").is_empty(), "{what}");
    assert!(r.all("StorageClass").is_empty(), "{what}");
    assert!(r.all("VolumeSnapshotClass").is_empty(), "{what}");
    assert!(
        r.all("ClusterRole").is_empty(),
        "{what}: no controller, no RBAC"
    );
    assert!(r.all("Role").is_empty(), "{what}");
    let node = r.get("DaemonSet", "vb-volbridge-node");
    let pod = at(node, "spec.template.spec");
    assert_eq!(pod["hostNetwork"], true, "{what}");
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet", "{what}");
    assert_eq!(pod["automountServiceAccountToken"], false, "{what}");
    let vb = container(node, "volbridge");
    assert_eq!(Rendered::flag(vb, "--csi-max-volumes-per-node"), Some("16"));
    assert_eq!(Rendered::flag(vb, "--metrics-listen"), Some("0.0.0.0:9900"));
    let (v, m) = mount_at(node, vb, "/var/lib/k0s/kubelet");
    assert_eq!(host_path(v), "/var/lib/k0s/kubelet", "{what}");
    assert_eq!(m["mountPropagation"], "Bidirectional", "{what}");
    assert_eq!(
        Rendered::flag(
            container(node, "node-driver-registrar"),
            "--kubelet-registration-path"
        ),
        Some("/var/lib/k0s/kubelet/plugins/csi.volbridge.io/csi.sock"),
        "{what}"
    );
    let (v, _) = mount_at(node, vb, "/etc/iscsi");
    assert_eq!(host_path(v), "/etc/iscsi", "{what}");
    // Service-mode credentials for a remote CSP, in the node config too.
    let config = string_data(r.get("Secret", "vb-volbridge-config"), "node.toml");
    let parsed = volbridge::config::Config::parse(config).unwrap();
    assert_eq!(
        parsed.backends["csp"]["serviceName"],
        "csp.storage.svc.cluster.local"
    );
    assert_eq!(parsed.node.protocols, ["local", "iscsi"]);
    assert!(parsed.node.local_roots.is_empty(), "{what}: no local CSP");
    // The FlexVolume installer: `volbridge flex install` into the plugin dir, then sleep.
    let flex = r.get("DaemonSet", "vb-volbridge-flex-installer");
    let install = container(flex, "install");
    let script = strings(install, "args").join("\n");
    let line = script
        .lines()
        .find(|l| l.trim_start().starts_with("volbridge flex install"))
        .unwrap_or_else(|| panic!("{what}: no `volbridge flex install` in {script}"));
    let words: Vec<String> = line.split_whitespace().map(String::from).collect();
    check_flags(r, &words[3..], &["flex", "install"]);
    assert_eq!(
        words[3..],
        [
            "--dir",
            "/flexmnt",
            "--vendor",
            "volbridge",
            "--driver",
            "csp"
        ]
    );
    assert!(
        script.contains("sleep"),
        "{what}: the installer sleeps after installing"
    );
    let (v, _) = mount_at(flex, install, "/flexmnt");
    assert_eq!(
        host_path(v),
        "/usr/libexec/k0s/kubelet-plugins/volume/exec",
        "{what}"
    );
    assert_eq!(v["hostPath"]["type"], "Directory", "{what}");
}

fn check_existing_secret(r: &Rendered) {
    let what = r.what();
    assert!(
        r.all("Secret").is_empty(),
        "{what}: the Secrets are external"
    );
    let sc = r.get("StorageClass", "volbridge");
    assert_eq!(
        sc["parameters"]["csi.storage.k8s.io/provisioner-secret-name"],
        "array-credentials"
    );
    let role = r.get("Role", "vb-volbridge-csp-secret");
    assert_eq!(
        strings(&role["rules"][0], "resourceNames"),
        ["array-credentials"]
    );
    for w in [
        r.get("Deployment", "vb-volbridge-controller"),
        r.get("DaemonSet", "vb-volbridge-node"),
    ] {
        let config = pod_volume(w, "config");
        assert_eq!(config["secret"]["secretName"], "volbridge-config", "{what}");
        assert_eq!(
            config["secret"]["items"][0]["key"], "volbridge.toml",
            "{what}"
        );
    }
    let node = r.get("DaemonSet", "vb-volbridge-node");
    let kubelet = pod_volume(node, "kubelet-dir");
    assert_eq!(
        host_path(kubelet),
        "/var/snap/microk8s/common/var/lib/kubelet",
        "{what}"
    );
}

/// Broken values are refused by `helm template` and `helm lint --strict`, each with a
/// message naming what is wrong.
#[test]
fn broken_values_fail_the_chart_checks() {
    let Some(t) = tools() else { return };
    let defaults = scenario_file("default");
    // (values, what the error says, whether values.schema.json refuses it: `helm lint`
    // reports a template's `fail` only as information, so those rely on `helm template`).
    let cases: [(&[&str], &str, bool); 8] = [
        (
            &["--set", "controller.replicas=-1"],
            "/controller/replicas",
            true,
        ),
        (
            &["--set-string", "controller.replicas=2"],
            "/controller/replicas",
            true,
        ),
        (
            &["--set", "kubeletDir=var/lib/kubelet"],
            "/kubeletDir",
            true,
        ),
        (
            &["--set", "kubeletDir=/var/lib/kubelet/../k0s"],
            "/kubeletDir",
            true,
        ),
        (
            &["--set", "csiDriver.fsGroupPolicy=Always"],
            "/csiDriver/fsGroupPolicy",
            true,
        ),
        (&["--set", "localCsp.enabled=false"], "/csp", true),
        (
            &[
                "--set",
                "localCsp.enabled=false",
                "--set",
                "csp.existingSecret=creds",
            ],
            "daemonConfig.existingSecret",
            false,
        ),
        (
            &["--set", "csp.backend=10.0.0.5"],
            "set localCsp.enabled=false",
            false,
        ),
    ];
    for (set, expected, schema) in cases {
        for kube in KUBE_VERSIONS {
            let out = run(&mut template(&t, &defaults, kube, set));
            assert!(
                !out.status.success(),
                "helm template with {set:?} succeeded:\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
            assert!(
                text(&out).contains(expected),
                "helm template with {set:?}: expected {expected:?} in:\n{}",
                text(&out)
            );
            if schema {
                let lint = run(helm(&t)
                    .args(["lint", "--strict", "--kube-version", kube])
                    .arg(chart())
                    .args(set));
                assert!(
                    !lint.status.success() && text(&lint).contains(expected),
                    "helm lint --strict with {set:?} passed:\n{}",
                    text(&lint)
                );
            }
        }
    }
    // The control: the same commands pass without the broken value.
    must(&mut template(&t, &defaults, KUBE_VERSIONS[0], &[]));
}

/// The validators have teeth: a typo'd field, a wrong type, a kind without a schema and a
/// bad snapshot class fail validation; a duplicated key fails yamllint.
#[test]
fn validators_reject_broken_manifests() {
    let Some(t) = tools() else { return };
    let broken = data().join("broken");
    let cases = [
        ("unknown-field.yaml", "imagePullPolcy"),
        ("wrong-type.yaml", "'two' is not of type"),
        ("unknown-kind.yaml", "no schema"),
        ("bad-snapshotclass.yaml", "'driver' is a required property"),
    ];
    for kube in KUBE_VERSIONS {
        for (file, expected) in cases {
            let out = run(&mut validate(&t, kube, &broken.join(file), None));
            assert!(
                !out.status.success(),
                "{file} passed validation:\n{}",
                text(&out)
            );
            assert!(text(&out).contains(expected), "{file}: {}", text(&out));
        }
    }
    let out = run(yamllint(&t).arg(broken.join("duplicate-key.yaml")));
    assert!(!out.status.success(), "duplicate key passed yamllint");
    assert!(text(&out).contains("duplication of key"), "{}", text(&out));
    // A Kubernetes version the bundled schemas do not cover is an error, not a fallback.
    let out = run(&mut validate(
        &t,
        "1.99.0",
        &broken.join("wrong-type.yaml"),
        None,
    ));
    assert!(!out.status.success(), "{}", text(&out));
}
