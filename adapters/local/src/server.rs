//! Opening a data directory and the HTTP router; the state handlers share is `shared`.

use crate::auth::Tokens;
use crate::config::LocalCspConfig;
use crate::errors::ApiError;
use crate::journal::Journal;
use crate::locks::KeyedLocks;
use crate::pool::{Pool, PoolMode};
use crate::routes::{groups, hosts, misc, publish, snapshot_metadata, snapshots, tokens, volumes};
use crate::shared::{CopyEvents, Dirs, Shared};
use crate::store::Store;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use volbridge_proto::csp::{API_PREFIX, AUTH_HEADER};

/// The embedded CSP. Cheap to clone; all clones serve the same data directory.
#[derive(Clone)]
pub struct LocalCsp {
    shared: Arc<Shared>,
    /// Every request's work, over HTTP or in-process ([`crate::to_the_end`]).
    tasks: tokio_util::task::TaskTracker,
}

impl LocalCsp {
    /// Opens (creating if needed) the data dir, loads durable metadata, runs crash recovery.
    pub fn open(config: LocalCspConfig) -> io::Result<LocalCsp> {
        let root = config.data_dir.clone();
        crate::files::private_dir(&root)?;
        let dir_lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(root.join("lock"))?;
        rustix::fs::flock(
            &dir_lock,
            rustix::fs::FlockOperation::NonBlockingLockExclusive,
        )
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "data dir {} is in use by another local CSP: {e}",
                    root.display()
                ),
            )
        })?;

        let (mut journal, mut tables) = Journal::open(&root)?;
        let has_data = !(tables.volumes.is_empty()
            && tables.snapshots.is_empty()
            && tables.retained.is_empty());
        let pool = Pool::open(&root, config.pool, config.pool_initial_size, has_data)?;
        let images = pool.images_root().to_owned();
        let dirs = Dirs {
            volumes: images.join("volumes"),
            snapshots: images.join("snapshots"),
            retained: images.join("retained"),
            canonical_volumes: PathBuf::new(),
            root,
        };
        for d in [&dirs.volumes, &dirs.snapshots, &dirs.retained] {
            crate::files::private_dir(d)?;
        }
        let dirs = Dirs {
            canonical_volumes: std::fs::canonicalize(&dirs.volumes)?,
            ..dirs
        };

        let restart = crate::recovery::reconcile(&dirs, &mut tables)?;
        let exports = crate::export::Exports::open(config.export.clone(), &dirs.root)?;
        journal.compact(&tables)?;
        let store = Store::start(journal, tables);
        let shared = Arc::new(Shared {
            tokens: Tokens::new(config.token_ttl),
            cfg: config,
            dirs,
            store,
            locks: KeyedLocks::default(),
            copy_events: CopyEvents::default(),
            pool,
            exports,
            _dir_lock: dir_lock,
        });
        reconcile_exports(&shared);
        for id in restart {
            tracing::info!(volume = %id, "restarting an interrupted clone copy");
            crate::copies::spawn_clone_copy(shared.clone(), id);
        }
        Ok(LocalCsp {
            shared,
            tasks: tokio_util::task::TaskTracker::new(),
        })
    }

    /// Serves `/containers/v1/...` and `/csp/containers/v1/...`.
    pub fn router(&self) -> Router {
        let api = api_routes(&self.shared);
        let inner = Router::new()
            .nest(API_PREFIX, api.clone())
            .nest(&format!("/csp{API_PREFIX}"), api)
            .fallback(not_found)
            .layer(middleware::from_fn(log_request))
            .with_state(self.shared.clone());
        // A 405 names the methods of the `Allow` header axum adds as the inner router's
        // answer leaves it: the middleware runs outside it.
        Router::new()
            .fallback_service(inner)
            .layer(middleware::from_fn(explain_405))
    }

    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        use crate::refusals::{csp_body, with_header_limit, RefusalBodies};
        use crate::to_the_end::{finish, FINISH_LIMIT};
        let app = with_header_limit(self.whole_request_router(), csp_body);
        let listener = RefusalBodies::new(listener, csp_body);
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
        finish(&self.tasks, FINISH_LIMIT, "local CSP").await;
        served
    }

    /// [`Self::router`] with each request run to its end on this CSP's tracker, which
    /// [`Self::serve`] waits for at stop: for an in-process client, whose own timeout
    /// would otherwise drop a handler half-way (an image made but never recorded).
    pub fn whole_request_router(&self) -> Router {
        crate::to_the_end::run_to_the_end(
            self.router(),
            self.tasks.clone(),
            crate::refusals::csp_body,
        )
    }

    /// Every issued token becomes invalid.
    pub fn revoke_tokens(&self) {
        self.shared.tokens.revoke_all();
    }

    pub fn data_dir(&self) -> &Path {
        &self.shared.dirs.root
    }

    /// The pool's mode, whether it reflinks, and why it was chosen.
    pub fn pool(&self) -> (PoolMode, bool, String) {
        let p = &self.shared.pool;
        (p.mode(), p.reflink(), p.reason().to_owned())
    }

    /// Unmounts an image pool at shutdown unless a volume in it is in use (see
    /// [`Pool::close`]). Requests after this still work on files already open.
    pub fn close(&self) {
        self.shared.pool.close();
    }
}

/// Exports made to match the store (after a reboot the kernel has none; after a crash it
/// may hold half of one, or one whose unpublish was committed). A volume that cannot be
/// exported is reported and stays published: its next publish retries.
fn reconcile_exports(sh: &Shared) {
    let wanted: Vec<_> = sh
        .store
        .read(|s| {
            s.t.volumes
                .keys()
                .filter_map(|id| crate::export::wanted(s, id, sh.dirs.volume(id)))
                .collect()
        })
        .0;
    for failure in sh.exports.reconcile(&wanted) {
        tracing::warn!(%failure, "cannot restore a network export");
    }
}

type AppRouter = Router<Arc<Shared>>;

/// Registers `path` and, for collections, `path/` (one trailing slash is tolerated).
fn both(r: AppRouter, path: &str, m: MethodRouter<Arc<Shared>>) -> AppRouter {
    r.route(path, m.clone()).route(&format!("{path}/"), m)
}

fn api_routes(shared: &Arc<Shared>) -> AppRouter {
    let public = both(Router::new(), "/tokens", post(tokens::login));
    let mut authed = Router::new()
        .route("/tokens/{id}", axum::routing::delete(tokens::logout))
        .route("/hosts/{id}", get(hosts::get).delete(hosts::delete))
        .route(
            "/volumes/{id}",
            get(volumes::get).put(volumes::edit).delete(volumes::delete),
        )
        .route(
            "/volumes/{id}/actions/publish",
            axum::routing::put(publish::publish),
        )
        .route(
            "/volumes/{id}/actions/unpublish",
            axum::routing::put(publish::unpublish),
        )
        .route(
            "/snapshots/{id}",
            get(snapshots::get).delete(snapshots::delete),
        )
        .route(
            "/snapshots/{id}/allocated",
            get(snapshot_metadata::allocated),
        )
        .route("/snapshots/{id}/changes", get(snapshot_metadata::changes))
        .route(
            "/volume_groups/{id}",
            get(groups::get_volume_group).delete(groups::delete_volume_group),
        )
        .route(
            "/snapshot_groups/{id}",
            get(groups::get_snapshot_group).delete(groups::delete_snapshot_group),
        );
    authed = both(
        authed,
        "/hosts",
        get(hosts::list)
            .post(hosts::upsert)
            .delete(hosts::delete_by_query),
    );
    authed = both(authed, "/volumes", get(volumes::list).post(volumes::create));
    authed = both(
        authed,
        "/snapshots",
        get(snapshots::list).post(snapshots::create),
    );
    authed = both(
        authed,
        "/volume_groups",
        get(groups::list_volume_groups).post(groups::create_volume_group),
    );
    authed = both(
        authed,
        "/snapshot_groups",
        get(groups::list_snapshot_groups).post(groups::create_snapshot_group),
    );
    authed = both(
        authed,
        "/replication_partners",
        get(misc::replication_partners),
    );
    authed = both(authed, "/capacity", get(misc::capacity));
    authed = both(authed, "/mutable_config", get(misc::mutable_config));
    let authed = authed.route_layer(middleware::from_fn_with_state(
        shared.clone(),
        require_token,
    ));
    public
        .merge(authed)
        .method_not_allowed_fallback(method_not_allowed)
}

async fn not_found(req: Request) -> Response {
    ApiError::not_found(format!("no such resource: {}", req.uri().path())).into_response()
}

async fn method_not_allowed(req: Request) -> Response {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "method {} is not allowed on {}",
            req.method(),
            req.uri().path()
        ),
    )
    .into_response()
}

/// Middleware: a 405 names the full path and the methods of its `Allow` header.
async fn explain_405(req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let resp = next.run(req).await;
    if resp.status() != axum::http::StatusCode::METHOD_NOT_ALLOWED {
        return resp;
    }
    let allow = resp
        .headers()
        .get(axum::http::header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .filter(|a| !a.is_empty())
        .map(|a| format!("; it takes {}", a.replace(',', ", ")))
        .unwrap_or_default();
    let (mut parts, _) = resp.into_parts();
    let (fresh, body) = ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "method {method} is not allowed on {}{allow}",
            volbridge_proto::names::shown(&path)
        ),
    )
    .into_response()
    .into_parts();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.extend(fresh.headers);
    Response::from_parts(parts, body)
}

async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let start = std::time::Instant::now();
    let resp = next.run(req).await;
    tracing::debug!(
        %method,
        %path,
        status = resp.status().as_u16(),
        micros = start.elapsed().as_micros() as u64,
        "csp request"
    );
    resp
}
/// Middleware: every route it wraps needs a valid `x-auth-token`.
pub async fn require_token(
    State(shared): State<Arc<Shared>>,
    req: Request,
    next: Next,
) -> Response {
    let ok = req
        .headers()
        .get(AUTH_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| shared.tokens.valid(t.trim()));
    if !ok {
        return ApiError::unauthorized("a valid x-auth-token session token is required")
            .into_response();
    }
    next.run(req).await
}
