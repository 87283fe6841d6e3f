//! `volbridge serve`: the engine, the embedded local CSP on loopback (the default backend),
//! configured remote backends, and the admin API on its unix socket.

use crate::config::{Config, LOCAL_BACKEND};
use crate::engine::{size, Backend, Backends, Engine, EngineConfig, NodeConfig, StateStore};
use crate::error::{Error, Result};
use crate::frontend::api::{self, AdminState};
use crate::frontend::csi;
use crate::frontend::docker;
use crate::host::transport::TransportConfig;
use crate::provider::{ClientOptions, Credentials, CspClient};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use volbridge_local_csp::to_the_end::{finish, run_to_the_end, FINISH_LIMIT};
use volbridge_local_csp::{load_or_generate_password, LocalCsp, LocalCspConfig};

/// The longest the admin API waits for the start-up reconciliation.
const START_GATE_LIMIT: Duration = Duration::from_secs(30);

pub async fn serve(config: Config) -> Result<()> {
    let stop_signals = StopSignals::watch();
    let store = StateStore::open(&config.state_dir)?;
    // The Docker socket is bound first: Docker (and a managed plugin's enable, which gives
    // up after ~9 s) can connect at once; calls queue until the router serves them.
    let docker_bound = if config.docker.enabled {
        let docker_config = config.docker.to_frontend()?;
        let bound = docker::bind(&docker_config)?;
        tracing::info!(endpoint = %bound.shown, driver = %docker_config.driver_name, "Docker plugin socket bound");
        Some((docker_config, bound))
    } else {
        None
    };
    // Two stages: the admin API stops first, then the engine logs out of every backend
    // (the embedded CSP among them), then the embedded CSP stops.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (csp_stop_tx, csp_stop_rx) = watch::channel(false);
    let options = ClientOptions {
        max_inflight: config.limits.max_inflight_per_backend,
        ..ClientOptions::default()
    };

    volbridge_provider::observe::set_observer(crate::metrics::csp_call);
    let mut backends = Backends::new(config.default_backend.clone())
        .with_options(options.clone())
        .with_connector(std::sync::Arc::new(CspClient::new));
    let mut csp_task = None;
    if config.local_csp.enabled {
        let (backend, task) = start_local_csp(&config, &options, csp_stop_rx).await?;
        backends.add(backend);
        csp_task = Some(task);
    }
    for (name, map) in &config.backends {
        let creds =
            Credentials::from_map(map).map_err(|e| e.context(format!("backend '{name}'")))?;
        backends.add(Backend {
            name: name.clone(),
            client: CspClient::new(creds, options.clone())?,
            embedded: false,
        });
    }

    let engine_config = EngineConfig {
        default_volume_size: size::parse_size("default_volume_size", &config.default_volume_size)?,
        guard_wait: Duration::from_secs(config.limits.guard_wait_seconds),
        copy_wait: Duration::from_secs(config.limits.copy_wait_seconds),
    };
    let node_config = node_config(&config)?;
    let engine = Arc::new(
        Engine::new(backends, store, engine_config)?
            .with_node(Arc::new(crate::host::RealHost), node_config),
    );
    let (state, ready) = AdminState::new(engine.clone());
    // Docker's records are loaded (a reboot drops stale refs) before Docker is served.
    let docker_task = match docker_bound {
        None => None,
        Some((docker_config, bound)) => {
            let loaded = engine.docker_open(crate::engine::DockerSettings {
                mount_base: docker_config.effective_mount_base(),
                unstage_delay: docker_config.unstage_delay,
            })?;
            tracing::info!(volumes = loaded, "Docker volume records loaded");
            let front = docker::Docker::new(engine.clone(), docker_config, state.ready.clone());
            let mut stop = stop_rx.clone();
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            Some(docker::serve(front, bound, stopped))
        }
    };

    // CSI first, then the admin socket: once the admin socket answers, so does CSI.
    let csi_task = match &config.csi.endpoint {
        None => None,
        Some(text) => {
            let csi = csi::Csi::new(
                engine.clone(),
                csi::CsiConfig {
                    driver_name: config.csi.driver_name.clone(),
                    mode: csi::Mode::parse(&config.csi.mode)?,
                    max_volumes_per_node: config.csi.max_volumes_per_node,
                    orchestrator: csi::Orchestrator::parse(&config.csi.orchestrator)?,
                },
            )
            .with_ready(state.ready.clone());
            let mut stop = stop_rx.clone();
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            Some(csi::serve(csi, &csi::Endpoint::parse(text)?, stopped).await?)
        }
    };
    // The socket comes before any slow start-up work, so clients can connect at once.
    let listener = api::bind(&config.admin_socket)?;
    tracing::info!(
        socket = %config.admin_socket.display(),
        state_dir = %config.state_dir.display(),
        default_backend = %config.default_backend,
        "volbridge {} ready", env!("CARGO_PKG_VERSION")
    );
    let every = Duration::from_secs(config.node.reconcile_seconds);
    // A backend that does not answer must not keep the API closed for long.
    let ready = Arc::new(ready);
    let gate = ready.clone();
    let gate_timer = tokio::spawn(async move {
        tokio::time::sleep(START_GATE_LIMIT).await;
        if !*gate.borrow() {
            tracing::warn!("start-up reconciliation still running; serving requests anyway");
            gate.send_replace(true);
        }
    });
    let reconciler = tokio::spawn(reconcile_loop(state.clone(), every, ready, stop_rx.clone()));

    let metrics_task = match config.metrics_listen {
        None => None,
        Some(addr) => Some(serve_probes(addr, state.clone(), stop_rx.clone()).await?),
    };
    let mut stop_admin = stop_rx.clone();
    let listener =
        volbridge_local_csp::refusals::RefusalBodies::new(listener, api::error::refusal_body);
    let admin_tasks = TaskTracker::new();
    let router = volbridge_local_csp::refusals::with_header_limit(
        run_to_the_end(
            api::router(state),
            admin_tasks.clone(),
            api::error::refusal_body,
        ),
        api::error::refusal_body,
    );
    let served = axum::serve(listener, router).with_graceful_shutdown(async move {
        let _ = stop_admin.wait_for(|s| *s).await;
    });
    let signals = tokio::spawn(async move {
        stop_signals.recv().await;
        let _ = stop_tx.send(true);
    });
    // A client still connected at stop (a clone waiting for its copy) keeps the drain open
    // for at most DRAIN_LIMIT: its work runs on a tracked task, so the connection can go.
    let result = bounded_drain(async move { served.await }, stop_rx.clone(), DRAIN_LIMIT)
        .await
        .map_err(|e| Error::internal(format!("admin API failed: {e}")));

    // From here every wait shares one budget, so a stop stays within systemd's
    // TimeoutStopSec (30 s) and Kubernetes' grace period.
    let stop_by = tokio::time::Instant::now() + FINISH_LIMIT + Duration::from_secs(1);
    finish(&admin_tasks, FINISH_LIMIT, "admin API").await;
    signals.abort();
    reconciler.abort();
    gate_timer.abort();
    let _ = std::fs::remove_file(&config.admin_socket);
    // The servers stopped together and each waits up to FINISH_LIMIT for its requests.
    for task in [csi_task, metrics_task, docker_task].into_iter().flatten() {
        let _ = tokio::time::timeout_at(stop_by, task).await;
    }
    engine.shutdown().await;
    let _ = csp_stop_tx.send(true);
    if let Some(task) = csp_task {
        // Its drain and requests (bounded inside), then the pool's unmount.
        let _ = tokio::time::timeout(DRAIN_LIMIT + FINISH_LIMIT + CLOSE_LIMIT, task).await;
    }
    tracing::info!("volbridge stopped");
    result
}

/// How long a server keeps its connections open after the stop.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);
/// The embedded CSP's pool unmount at stop.
const CLOSE_LIMIT: Duration = Duration::from_secs(5);

/// `serving` (a server with graceful shutdown on `stop`) until it ends, or until `limit`
/// after `stop`: past that its connections are dropped (their requests' work runs on
/// tracked tasks; see `to_the_end`).
async fn bounded_drain(
    serving: impl std::future::Future<Output = std::io::Result<()>>,
    mut stop: watch::Receiver<bool>,
    limit: Duration,
) -> std::io::Result<()> {
    let limit = async move {
        let _ = stop.wait_for(|s| *s).await;
        tokio::time::sleep(limit).await;
        tracing::warn!("connections still open at stop were closed");
    };
    tokio::select! {
        done = serving => done,
        () = limit => Ok(()),
    }
}

async fn start_local_csp(
    config: &Config,
    options: &ClientOptions,
    stop: watch::Receiver<bool>,
) -> Result<(Backend, tokio::task::JoinHandle<()>)> {
    let section = &config.local_csp;
    let password = match &section.password {
        Some(p) => p.clone(),
        None => load_or_generate_password(&config.state_dir.join("local-csp.password"))
            .map_err(|e| Error::internal(format!("cannot keep the local CSP password: {e}")))?,
    };
    let data_dir = config.csp_data_dir();
    let mut csp_config = LocalCspConfig::new(&data_dir, &section.username, &password);
    csp_config.pool = section.pool;
    csp_config.overcommit = section.overcommit;
    csp_config.pool_initial_size =
        size::parse_size("local_csp.pool_initial_size", &section.pool_initial_size)?;
    let csp = tokio::task::spawn_blocking(move || LocalCsp::open(csp_config))
        .await
        .map_err(|e| Error::internal(format!("local CSP start-up failed: {e}")))?
        .map_err(|e| {
            Error::internal(format!(
                "cannot open the local CSP data dir {}: {e}",
                data_dir.display()
            ))
        })?;
    let listener = tokio::net::TcpListener::bind(section.listen)
        .await
        .map_err(|e| {
            Error::internal(format!(
                "local CSP cannot listen on {}: {e}",
                section.listen
            ))
        })?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::internal(format!("local CSP address: {e}")))?;
    let router = csp.whole_request_router();
    let mut stopping = stop.clone();
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopping.wait_for(|s| *s).await;
        };
        let closer = csp.clone();
        // The drain is bounded here, so that the close below always runs.
        let served = async move { csp.serve(listener, shutdown).await };
        if let Err(e) = bounded_drain(served, stop, DRAIN_LIMIT + FINISH_LIMIT).await {
            tracing::error!(error = %e, "local CSP stopped");
        }
        // An image pool is unmounted unless a volume in it is still attached here.
        let _ = tokio::task::spawn_blocking(move || closer.close()).await;
    });
    let creds = Credentials::service(LOCAL_BACKEND, addr, &section.username, &password)?;
    // The daemon's own calls skip the loopback; other clients use the listener.
    let client = CspClient::in_process(creds, options.clone(), router)?;
    tracing::info!(url = %client.base_url(), data_dir = %config.csp_data_dir().display(), "embedded local CSP serving");
    Ok((
        Backend {
            name: LOCAL_BACKEND.to_owned(),
            client,
            embedded: true,
        },
        task,
    ))
}

/// The node settings: `local` volumes attach only from the embedded CSP's data dir and the
/// configured roots, compared in canonical form.
pub fn node_config(config: &Config) -> Result<NodeConfig> {
    let mut roots = Vec::new();
    if config.local_csp.enabled {
        let data = config.csp_data_dir();
        crate::engine::store::create_private_dir(&data)?;
        roots.push(data);
    }
    roots.extend(config.node.local_roots.iter().cloned());
    let local_roots = roots
        .into_iter()
        .filter_map(|r| std::fs::canonicalize(&r).ok())
        .collect();
    Ok(NodeConfig {
        transport: TransportConfig {
            local_roots,
            ..TransportConfig::default()
        },
        tool_timeout: Duration::from_secs(config.node.tool_timeout_seconds),
        staging_root: None,
    })
}

/// Reconciles at start, then every `every`.
/// `--metrics-listen`: probes and metrics over TCP, for Prometheus and kubelet.
async fn serve_probes(
    addr: std::net::SocketAddr,
    state: AdminState,
    mut stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::internal(format!("cannot listen for metrics on {addr}: {e}")))?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    let app = api::health::probes(state);
    Ok(tokio::spawn(async move {
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stopped)
            .await
        {
            tracing::error!(error = %e, "metrics listener failed");
        }
    }))
}

async fn reconcile_loop(
    state: AdminState,
    every: Duration,
    ready: Arc<watch::Sender<bool>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let report = state.engine.reconcile().await;
        state.record_reconcile(report);
        ready.send_replace(true);
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// SIGTERM and SIGINT, watched from the moment this is made, before any socket exists:
/// tokio installs a handler only when the stream is created, so a watch made later (on a
/// task's first poll) would leave a window in which a supervisor's SIGTERM takes the
/// default action and kills the daemon with its pool still mounted.
pub struct StopSignals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    /// Registers the handlers now (needs a tokio runtime).
    pub fn watch() -> StopSignals {
        use tokio::signal::unix::{signal, SignalKind};
        let open = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "cannot watch {name}");
                None
            }
        };
        StopSignals {
            term: open(SignalKind::terminate(), "SIGTERM"),
            int: open(SignalKind::interrupt(), "SIGINT"),
        }
    }

    /// The first of them to come (never, when neither could be watched).
    pub async fn recv(mut self) {
        async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = next(&mut self.term) => tracing::info!("SIGTERM: stopping"),
            _ = next(&mut self.int) => tracing::info!("SIGINT: stopping"),
        }
    }
}
