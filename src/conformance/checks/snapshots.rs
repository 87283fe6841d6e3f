//! Snapshots: C14, C25–C29 and C35.

use super::common::{
    ensure, expect, fail, fetch_snapshot, need, random_hex, snapshot_path, track_answer,
    wait_ready, Created, Ctx, Step, Verdict,
};
use crate::conformance::http::Resp;
use serde_json::{json, Value};
use volbridge_proto::csp::Snapshot;

fn ids(r: &Resp) -> Step<Vec<String>> {
    let list: Vec<Snapshot> = r.json("Snapshot array")?;
    Ok(list.into_iter().map(|s| s.id.unwrap_or_default()).collect())
}

fn is_empty_array(r: &Resp) -> bool {
    matches!(r.value(), Some(Value::Array(a)) if a.is_empty())
}

pub(super) async fn c14(cx: &mut Ctx<'_>) -> Step {
    cx.session()?;
    let v1 = need(&cx.v1, "volume N1 (C11)")?;
    let r = cx.csp.get("/snapshots", &[("volume_id", v1)]).await?;
    expect(&r, &[200], "volume_id")?;
    ensure(is_empty_array(&r), || {
        format!("volume_id: got {} (want [])", r.describe())
    })?;
    let q = [("volume_id", v1), ("mode", "exists")];
    let r = cx.csp.get("/snapshots", &q).await?;
    expect(&r, &[200], "mode=exists")?;
    ensure(is_empty_array(&r), || {
        format!("mode=exists: got {} (want [])", r.describe())
    })?;
    // A volume filter that names no volume lists nothing. The HPE CSI driver fails
    // ListSnapshots on a 404 here; volbridge's client reads it as empty, hence a warning.
    let unknown = format!("{}-nosuchvolume", cx.tag);
    let r = cx.csp.get("/snapshots", &[("volume_id", &unknown)]).await?;
    if !(r.status == 200 && is_empty_array(&r)) {
        return Err(Verdict::Warn(format!(
            "unknown volume_id: got {} (want 200 []; a 404 fails the HPE CSI driver's \
             ListSnapshots)",
            r.describe()
        )));
    }
    Ok(String::new())
}

fn snapshot_body(cx: &Ctx<'_>, volume: &str) -> Value {
    json!({
        "name": cx.name("snap1"),
        "volume_id": volume,
        "description": "volbridge csp check",
    })
}

pub(super) async fn c25(cx: &mut Ctx<'_>) -> Step {
    cx.session()?;
    let v1 = need(&cx.v1, "volume N1 (C11)")?.to_owned();
    let r = cx.csp.post("/snapshots", &snapshot_body(cx, &v1)).await?;
    let id = track_answer(cx, &r, Created::Snapshot);
    cx.s1 = id.clone();
    expect(&r, &[200], "")?;
    let s: Snapshot = r.json("Snapshot")?;
    let Some(id) = id else {
        return fail(format!("got {} without an id", r.describe()));
    };
    ensure(s.volume_id.as_deref() == Some(v1.as_str()), || {
        format!("volume_id is {:?} (want {v1})", s.volume_id)
    })?;
    ensure(s.creation_time.is_some_and(|t| t > 0), || {
        format!("creation_time is {:?} (want > 0)", s.creation_time)
    })?;
    cx.s1_size = s.size;
    if s.ready_to_use != Some(true) {
        let s = wait_ready(cx, &id).await?;
        if s.size.is_some() {
            cx.s1_size = s.size;
        }
    }
    Ok(String::new())
}

pub(super) async fn c26(cx: &mut Ctx<'_>) -> Step {
    cx.session()?;
    let v1 = need(&cx.v1, "volume N1 (C11)")?.to_owned();
    let s1 = need(&cx.s1, "snapshot S1 (C25)")?.to_owned();
    let r = cx.csp.post("/snapshots", &snapshot_body(cx, &v1)).await?;
    let again = track_answer(cx, &r, Created::Snapshot);
    expect(&r, &[200], "")?;
    ensure(again.as_deref() == Some(s1.as_str()), || {
        format!("got id {again:?} (want the existing {s1})")
    })?;
    Ok(String::new())
}

pub(super) async fn c27(cx: &mut Ctx<'_>) -> Step {
    cx.session()?;
    let v1 = need(&cx.v1, "volume N1 (C11)")?;
    let s1 = need(&cx.s1, "snapshot S1 (C25)")?;
    let name = cx.name("snap1");
    let r = cx
        .csp
        .get("/snapshots", &[("volume_id", v1), ("name", &name)])
        .await?;
    expect(&r, &[200], "by name")?;
    let found = ids(&r)?;
    ensure(found == [s1], || {
        format!("by name: got {} (want [{s1}])", r.describe())
    })?;
    let unused = cx.name(&format!("unused-{}", random_hex(4)));
    let r = cx
        .csp
        .get("/snapshots", &[("volume_id", v1), ("name", &unused)])
        .await?;
    expect(&r, &[404], "unused name")?;
    Ok(String::new())
}

pub(super) async fn c28(cx: &mut Ctx<'_>) -> Step {
    cx.session()?;
    let v1 = need(&cx.v1, "volume N1 (C11)")?;
    need(&cx.s1, "snapshot S1 (C25)")?;
    let q = [("volume_id", v1), ("mode", "exists")];
    let r = cx.csp.get("/snapshots", &q).await?;
    expect(&r, &[200], "")?;
    let found = ids(&r)?;
    match found.len() {
        1 => Ok(String::new()),
        0 => fail(format!("got {} (want one element)", r.describe())),
        // B4 lets a CSP ignore mode=exists; clients only test emptiness, hence a warning.
        n => Err(Verdict::Warn(format!(
            "{n} elements: mode=exists is ignored (want one)"
        ))),
    }
}

pub(super) async fn c29(cx: &mut Ctx<'_>) -> Step {
    cx.session()?;
    let s1 = need(&cx.s1, "snapshot S1 (C25)")?.to_owned();
    let s = fetch_snapshot(cx, &s1, "S3 S1").await?;
    ensure(s.id.as_deref() == Some(s1.as_str()), || {
        format!("S3 S1: id is {:?} (want {s1})", s.id)
    })?;
    if s.size.is_some() {
        cx.s1_size = s.size;
    }
    let r = cx.csp.get(&snapshot_path(&random_hex(16)), &[]).await?;
    expect(&r, &[404], "S3 unused id")?;
    Ok(String::new())
}

pub(super) async fn c35(cx: &mut Ctx<'_>) -> Step {
    cx.session()?;
    let v1 = need(&cx.v1, "volume N1 (C11)")?.to_owned();
    let Some(s1) = cx.s1.clone() else {
        return Err(Verdict::Skip("needs snapshot S1 (C25)".into()));
    };
    let still_there = cx.created.contains(&Created::Snapshot(s1.clone()));
    if still_there {
        let r = cx.csp.delete(&snapshot_path(&s1), &[]).await?;
        expect(&r, &[204], "S4")?;
        cx.forget(&Created::Snapshot(s1.clone()));
    }
    let r = cx.csp.get(&snapshot_path(&s1), &[]).await?;
    expect(&r, &[404], "S3")?;
    let r = cx.csp.get("/snapshots", &[("volume_id", &v1)]).await?;
    expect(&r, &[200], "S1 by volume_id")?;
    let found = ids(&r)?;
    ensure(!found.contains(&s1), || {
        format!("S1 by volume_id still lists {s1}")
    })?;
    Ok(if still_there {
        String::new()
    } else {
        "already deleted by C33".into()
    })
}
