//! Removal of everything the run created, in reverse order, even after failures (§9).

use super::common::{snapshot_path, unpublish, volume_path, Created, Ctx};
use crate::conformance::http::Resp;
use serde_json::Value;

/// Later passes retry what a dependency blocked in an earlier one (a group whose member
/// volume was still there, a snapshot whose clone was still copying).
const PASSES: usize = 3;

fn describe(c: &Created) -> String {
    match c {
        Created::Volume(id) => format!("volume {id}"),
        Created::Snapshot(id) => format!("snapshot {id}"),
        Created::Grant(v, h) => format!("grant of volume {v} to host {h}"),
        Created::VolumeGroup(id) => format!("volume group {id}"),
        Created::SnapshotGroup(id) => format!("snapshot group {id}"),
    }
}

async fn remove_once(cx: &Ctx<'_>, c: &Created) -> Result<Resp, String> {
    let r = match c {
        // force=true: what the check made must not stay behind in a retention area.
        Created::Volume(id) => cx.csp.delete(&volume_path(id), &[("force", "true")]).await,
        Created::Snapshot(id) => cx.csp.delete(&snapshot_path(id), &[]).await,
        Created::Grant(v, h) => unpublish(cx, v, h).await,
        Created::VolumeGroup(id) => cx.csp.delete(&format!("/volume_groups/{id}"), &[]).await,
        Created::SnapshotGroup(id) => cx.csp.delete(&format!("/snapshot_groups/{id}"), &[]).await,
    };
    r.map_err(|v| v.text().to_owned())
}

async fn relogin(cx: &mut Ctx<'_>) -> bool {
    let Ok(r) = cx.csp.login(&cx.opts.username, &cx.opts.password).await else {
        return false;
    };
    let v = r.value().unwrap_or(Value::Null);
    cx.note_token(&v);
    let token = v.get("session_token").and_then(Value::as_str).unwrap_or("");
    if r.status != 200 || token.is_empty() {
        return false;
    }
    cx.csp.token = Some(token.to_owned());
    if let Some(id) = v.get("id").and_then(Value::as_str) {
        cx.token_ids.push(id.to_owned());
        cx.session_id = Some(id.to_owned());
    }
    true
}

/// Removes what `cx.created` still holds, newest first.
pub(super) async fn run(cx: &mut Ctx<'_>) {
    if cx.created.is_empty() {
        return;
    }
    if cx.opts.keep {
        for c in &cx.created {
            tracing::info!("csp check --keep: left {}", describe(c));
        }
        return;
    }
    if !cx.csp.has_session() && !relogin(cx).await {
        tracing::warn!("csp check: cannot log in to clean up");
    }
    let mut pending: Vec<Created> = std::mem::take(&mut cx.created);
    pending.reverse();
    let mut relogged = false;
    let mut last_problem = Vec::new();
    for _ in 0..PASSES {
        let mut blocked = Vec::new();
        last_problem.clear();
        for c in pending {
            let mut r = remove_once(cx, &c).await;
            if matches!(&r, Ok(resp) if resp.status == 401) && !relogged {
                relogged = true;
                if relogin(cx).await {
                    r = remove_once(cx, &c).await;
                }
            }
            match r {
                Ok(resp) if resp.is_success() || resp.status == 404 => {}
                Ok(resp) => {
                    last_problem.push(format!("{}: got {}", describe(&c), resp.describe()));
                    blocked.push(c);
                }
                Err(e) => {
                    last_problem.push(format!("{}: {e}", describe(&c)));
                    blocked.push(c);
                }
            }
        }
        pending = blocked;
        if pending.is_empty() {
            return;
        }
    }
    for p in last_problem {
        // The scrub of report details does not reach logs; quotes are masked already.
        tracing::warn!("csp check: could not remove {p}");
    }
}

/// Logs out every session the run opened, its current one last.
pub(super) async fn logout(cx: &mut Ctx<'_>) {
    let own = cx.session_id.clone();
    let mut ids: Vec<String> = cx
        .token_ids
        .iter()
        .filter(|id| Some(*id) != own.as_ref())
        .cloned()
        .collect();
    ids.extend(own);
    for id in ids {
        let _ = cx.csp.delete(&format!("/tokens/{id}"), &[]).await;
    }
    cx.csp.token = None;
}
