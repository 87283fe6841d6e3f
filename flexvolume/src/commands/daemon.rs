//! The commands that need the daemon: a current-thread runtime, one connection, the admin
//! API calls of each [`Job`] within its time budget, and the outcome for stdout and the log.

use super::{anchor, Job, Outcome};
use crate::client::{backend_query, volume_path, CallError, Daemon};
use crate::config::{Config, FsGroup, Mode};
use crate::errors::Failure;
use crate::options::Options;
use crate::output::Reply;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use volbridge_proto::admin::{
    MountInfo, MountRequest, NodeInfo, UnmountInfo, UnmountRequest, VolumeCreateRequest,
    VolumeExpandRequest, VolumeInfo,
};

pub(super) fn execute(cfg: &Config, command: &str, job: Job) -> Outcome {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return Outcome::failed(&Failure::new(
                "internal error",
                format!("cannot start the I/O runtime: {e}"),
            ))
        }
    };
    let mut daemon = Daemon::new(&cfg.socket);
    let mut warnings = Vec::new();
    let budget = cfg.budgets.of(command);
    let subject = job.subject();
    let result = runtime.block_on(async {
        daemon.connect(cfg.budgets.connect).await?;
        let work = job.run(&mut daemon, cfg, &mut warnings);
        match tokio::time::timeout(budget, work).await {
            Ok(r) => r,
            Err(_) => Err(Failure::new(
                "timeout",
                format!(
                    "node daemon did not finish {command} of {subject} within {}s",
                    budget.as_secs()
                ),
            )
            .hint("it continues in the background and the next retry picks it up")),
        }
    });
    // Dropping the runtime closes the connection; the daemon finishes what it started.
    drop(runtime);
    Outcome {
        reply: result.unwrap_or_else(|f| Reply::failure(f.message())),
        request_ids: daemon.request_ids,
        timings: daemon.timings,
        warnings,
    }
}

/// A request body plus the decoded secrets that select its backend (never logged).
#[derive(Serialize)]
struct WithSecrets<'a, T: Serialize> {
    #[serde(flatten)]
    request: &'a T,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    secrets: &'a BTreeMap<String, String>,
}

fn failure(e: CallError) -> Failure {
    e.into_failure()
}

impl Job {
    async fn run(
        self,
        d: &mut Daemon,
        cfg: &Config,
        warnings: &mut Vec<String>,
    ) -> Result<Reply, Failure> {
        match self {
            Job::Mount { target, opts, pod } => {
                if pod && cfg.mode == Mode::Attach {
                    require_staged(d, &opts).await?;
                }
                mount_at(d, cfg, &target, &opts, pod, warnings).await?;
                Ok(Reply::success())
            }
            Job::Unmount { target } => {
                unmount_at(d, &target).await?;
                Ok(Reply::success())
            }
            Job::Attach { opts, node } => {
                if let Some(node) = &node {
                    check_node(d, cfg, node).await?;
                }
                let anchor = anchor(cfg, opts.pv()?)?;
                let info = mount_at(d, cfg, &anchor, &opts, false, warnings).await?;
                Ok(Reply::success().with_device(info.device))
            }
            Job::IsAttached { opts, node } => {
                check_node(d, cfg, &node).await?;
                let name = opts.volume_name()?;
                let path = volume_path(name, None) + &backend_query(opts.user.backend.as_deref());
                let volume: VolumeInfo = match d.get(&path).await {
                    Ok(v) => v,
                    Err(CallError::Daemon(e)) if e.is("NotFound") => {
                        return Ok(Reply::success().with_attached(false))
                    }
                    Err(e) => return Err(failure(e)),
                };
                let anchor = anchor(cfg, opts.pv()?)?;
                let node_info: NodeInfo = d.get("/v1/node").await.map_err(failure)?;
                let anchored = node_info
                    .volumes
                    .iter()
                    .any(|v| v.published_at.contains(&anchor));
                Ok(Reply::success().with_attached(volume.published && anchored))
            }
            Job::Detach { pv, node } => {
                check_node(d, cfg, &node).await?;
                unmount_at(d, &anchor(cfg, &pv)?).await?;
                Ok(Reply::success())
            }
            Job::Expand { opts, size } => {
                let name = opts.volume_name()?;
                let path = volume_path(name, Some("expand"))
                    + &backend_query(opts.user.backend.as_deref());
                let body = VolumeExpandRequest {
                    size: Value::from(size),
                };
                match d.post::<_, VolumeInfo>(&path, &body).await {
                    Ok(_) => Ok(Reply::success()),
                    Err(CallError::Daemon(e)) if e.is("NotFound") => {
                        Err(no_such_volume(name, &opts, false))
                    }
                    Err(e) => Err(failure(e)),
                }
            }
        }
    }
}

fn no_such_volume(name: &str, opts: &Options, hint_create: bool) -> Failure {
    let backend = opts
        .user
        .backend
        .clone()
        .or_else(|| opts.secrets.get("backend").cloned());
    let detail = match backend {
        Some(b) => format!("\"{name}\" on backend {b}"),
        None => format!("\"{name}\" on the default backend"),
    };
    let f = Failure::new("no such volume", detail);
    if hint_create {
        f.hint("create it first or set option autoCreate=true")
    } else {
        f
    }
}

/// Publishes the volume of `opts` at `target` (attaching, formatting and staging as
/// needed), creating it first when it is missing and `autoCreate=true`.
async fn mount_at(
    d: &mut Daemon,
    cfg: &Config,
    target: &str,
    opts: &Options,
    pod: bool,
    warnings: &mut Vec<String>,
) -> Result<MountInfo, Failure> {
    let name = opts.volume_name()?;
    let path = volume_path(name, Some("mount"));
    let mut request = MountRequest {
        path: target.to_owned(),
        backend: opts.user.backend.clone(),
        read_only: opts.read_only(),
        block: false,
        fs_type: opts.fs_type(),
        mount_options: opts.user.mount_options.clone(),
    };
    let mut created = false;
    let info = loop {
        let body = WithSecrets {
            request: &request,
            secrets: &opts.secrets,
        };
        match d.post::<_, MountInfo>(&path, &body).await {
            Ok(info) => break info,
            Err(CallError::Daemon(e)) if e.is("NotFound") && !created => {
                if !opts.user.auto_create {
                    return Err(no_such_volume(name, opts, true));
                }
                create(d, name, opts).await?;
                created = true;
            }
            // Never reformat: an existing filesystem wins over the requested type.
            Err(CallError::Daemon(e))
                if e.is("FailedPrecondition")
                    && e.message.contains("never reformats")
                    && e.message.contains(" filesystem, not ")
                    && !request.fs_type.is_empty() =>
            {
                warnings.push(format!(
                    "fsType {} not used: {}; mounting the existing filesystem",
                    request.fs_type, e.message
                ));
                request.fs_type.clear();
            }
            Err(e) => return Err(failure(e)),
        }
    };
    if let Err(f) = after_mount(cfg, target, opts, pod, &info) {
        // Roll back: kubelet removes the pod dir after a failed mount.
        let undo = UnmountRequest {
            path: target.to_owned(),
            backend: Some(info.backend.clone()),
        };
        if let Err(e) = d
            .post::<_, UnmountInfo>(&volume_path(&info.volume, Some("unmount")), &undo)
            .await
        {
            warnings.push(format!(
                "rollback of {target} failed: {}",
                e.into_failure().message()
            ));
        }
        return Err(f);
    }
    Ok(info)
}

/// Owner and mode of a filesystem formatted by this call; fsGroup under
/// `fs_group = "volbridge"` (pod mounts, read-write only).
fn after_mount(
    cfg: &Config,
    target: &str,
    opts: &Options,
    pod: bool,
    info: &MountInfo,
) -> Result<(), Failure> {
    let root = Path::new(target);
    let writable = !info.read_only;
    if info.formatted && writable && (opts.user.fs_owner.is_some() || opts.user.fs_mode.is_some()) {
        crate::host::set_owner_and_mode(root, opts.user.fs_owner, opts.user.fs_mode)?;
    }
    if pod && writable && cfg.fs_group == FsGroup::Volbridge {
        if let Some(gid) = opts.fs_group {
            crate::host::apply_fs_group(root, gid)?;
        }
    }
    Ok(())
}

async fn create(d: &mut Daemon, name: &str, opts: &Options) -> Result<(), Failure> {
    let u = &opts.user;
    let request = VolumeCreateRequest {
        name: name.to_owned(),
        size: u.size.map(Value::from),
        backend: u.backend.clone(),
        description: u.description.clone(),
        options: u.config.clone(),
        from_snapshot: u.from_snapshot.clone(),
        from_volume: u.clone_of.clone(),
    };
    let body = WithSecrets {
        request: &request,
        secrets: &opts.secrets,
    };
    d.post::<_, VolumeInfo>("/v1/volumes", &body)
        .await
        .map(drop)
        .map_err(failure)
}

/// Unmounts whatever volume volbridge has published at `target`; nothing there is success,
/// a mount point volbridge does not know is refused (never unmounted blindly).
async fn unmount_at(d: &mut Daemon, target: &str) -> Result<(), Failure> {
    let node: NodeInfo = d.get("/v1/node").await.map_err(failure)?;
    let found = node
        .volumes
        .iter()
        .find(|v| v.published_at.iter().any(|p| p == target));
    if let Some(v) = found {
        let request = UnmountRequest {
            path: target.to_owned(),
            backend: Some(v.backend.clone()),
        };
        return match d
            .post::<_, UnmountInfo>(&volume_path(&v.volume, Some("unmount")), &request)
            .await
        {
            Ok(_) => Ok(()),
            // A backend named only by a mount's secrets: gone with a daemon restart.
            Err(CallError::Daemon(e))
                if e.is("InvalidArgument") && e.field.as_deref() == Some("backend") =>
            {
                Err(Failure::new(
                    "backend unavailable",
                    format!(
                        "volume \"{}\" at {target} belongs to backend {}, which the daemon no longer knows (its credentials came with a mount's secrets)",
                        v.volume, v.backend
                    ),
                )
                .hint("mount a volume with the same secrets again, or name the backend in the daemon config"))
            }
            Err(e) => Err(failure(e)),
        };
    }
    if crate::host::is_mount_point(target) {
        return Err(Failure::new(
            "in use",
            format!("{target} is a mount point volbridge has no record of"),
        )
        .hint("unmount it by hand (volbridge never unmounts what it did not mount)"));
    }
    Ok(())
}

/// Attachable mode, pod mount: the volume must be attached and staged here already.
async fn require_staged(d: &mut Daemon, opts: &Options) -> Result<(), Failure> {
    let name = opts.volume_name()?;
    let node: NodeInfo = d.get("/v1/node").await.map_err(failure)?;
    let staged = node
        .volumes
        .iter()
        .any(|v| v.volume == name && opts.user.backend.as_deref().is_none_or(|b| b == v.backend));
    if staged {
        Ok(())
    } else {
        Err(Failure::new(
            "not staged",
            format!("volume \"{name}\" is not attached and mounted on this node"),
        )
        .hint("kubelet runs waitforattach and mountdevice before mount"))
    }
}

/// Attachable mode: `<node>` must be this node (the daemon attaches only its own host).
async fn check_node(d: &mut Daemon, cfg: &Config, node: &str) -> Result<(), Failure> {
    let local = match &cfg.node_name {
        Some(n) => n.clone(),
        None => {
            let info: NodeInfo = d.get("/v1/node").await.map_err(failure)?;
            info.hostname
        }
    };
    if node.eq_ignore_ascii_case(&local) {
        return Ok(());
    }
    Err(Failure::new(
        "no such node",
        format!("\"{node}\" is not this node (\"{local}\")"),
    )
    .hint("the daemon attaches only its own host: run kubelet with --enable-controller-attach-detach=false, set node_name in flex.toml, or use mode = \"mount\""))
}
