//! Clones and delete preconditions: C30–C34.

use super::common::{
    ensure, expect, expect_gone, fail, fetch_snapshot, fetch_volume, need, smaller_than,
    snapshot_path, track_created, volume_path, wait_background, Created, Ctx, Step, Verdict, GIB,
};
use serde_json::{json, Value};
use volbridge_proto::csp::{Volume, BACKGROUND_COMPLETED};

/// The snapshot's size, or the volume's size when it was taken (C15 made it 2 GiB).
fn snapshot_size(cx: &Ctx<'_>) -> u64 {
    cx.s1_size.filter(|s| *s > 0).unwrap_or(2 * GIB)
}

fn clone_body(cx: &Ctx<'_>, suffix: &str, snapshot: &str, size: Option<u64>) -> Value {
    let mut body = json!({
        "name": cx.name(suffix),
        "base_snapshot_id": snapshot,
        "clone": true,
        "description": "volbridge csp check",
        "config": {},
    });
    if let Some(size) = size {
        body["size"] = json!(size);
    }
    body
}

pub(super) async fn c30(cx: &mut Ctx<'_>) -> Step {
    cx.session()?;
    let s1 = need(&cx.s1, "snapshot S1 (C25)")?.to_owned();
    let r = cx
        .csp
        .post("/volumes", &clone_body(cx, "clone1", &s1, None))
        .await?;
    let id = track_created(cx, &r);
    cx.c1 = id.clone();
    expect(&r, &[200], "")?;
    let v: Volume = r.json("Volume")?;
    let Some(id) = id else {
        return fail(format!("got {} without an id", r.describe()));
    };
    let want = snapshot_size(cx);
    ensure(v.size.is_some_and(|s| s >= want), || {
        format!("size is {:?} (want ≥ {want}, the snapshot's)", v.size)
    })?;
    if v.background_status()
        .is_some_and(|s| s != BACKGROUND_COMPLETED)
    {
        wait_background(cx, &id).await?;
    }
    Ok(String::new())
}

pub(super) async fn c31(cx: &mut Ctx<'_>) -> Step {
    cx.session()?;
    let s1 = need(&cx.s1, "snapshot S1 (C25)")?.to_owned();
    let small = smaller_than(snapshot_size(cx));
    let body = clone_body(cx, "clone2", &s1, Some(small));
    let r = cx.csp.post("/volumes", &body).await?;
    track_created(cx, &r);
    expect(&r, &[400], &format!("clone of {small} bytes"))?;
    Ok(String::new())
}

pub(super) async fn c32(cx: &mut Ctx<'_>) -> Step {
    cx.session()?;
    let v1 = need(&cx.v1, "volume N1 (C11)")?.to_owned();
    need(&cx.s1, "snapshot S1 (C25)")?;
    // force=false as the client sends it; the 409 must hold either way (B34).
    let r = cx
        .csp
        .delete(&volume_path(&v1), &[("force", "false")])
        .await?;
    if r.is_success() {
        cx.forget(&Created::Volume(v1.clone()));
        cx.v1 = None;
    }
    expect(&r, &[409], "V5")?;
    fetch_volume(cx, &v1, "V3").await?;
    Ok(String::new())
}

pub(super) async fn c33(cx: &mut Ctx<'_>) -> Step {
    cx.session()?;
    let s1 = need(&cx.s1, "snapshot S1 (C25)")?.to_owned();
    let c1 = need(&cx.c1, "clone C1 (C30)")?.to_owned();
    let r = cx.csp.delete(&snapshot_path(&s1), &[]).await?;
    match r.status {
        409 => {
            let s = fetch_snapshot(cx, &s1, "S3 after 409").await?;
            if s.in_use != Some(true) {
                // The in_use half of C33 is S-level: the refusal itself is what must hold.
                return Err(Verdict::Warn(format!(
                    "409, but S3 shows in_use {:?} (should be true)",
                    s.in_use
                )));
            }
            Ok(String::new())
        }
        204 => {
            cx.forget(&Created::Snapshot(s1));
            fetch_volume(cx, &c1, "V3 C1 after 204").await?;
            Ok("snapshot deleted; the clone does not depend on it".into())
        }
        _ => fail(format!("S4: got {} (want 409 or 204)", r.describe())),
    }
}

pub(super) async fn c34(cx: &mut Ctx<'_>) -> Step {
    cx.session()?;
    let c1 = need(&cx.c1, "clone C1 (C30)")?.to_owned();
    // force=true: a volume of the check must not linger in a retention area (V5 note).
    let r = cx
        .csp
        .delete(&volume_path(&c1), &[("force", "true")])
        .await?;
    expect(&r, &[204], "V5")?;
    cx.forget(&Created::Volume(c1.clone()));
    cx.c1 = None;
    expect_gone(cx, &c1, "V3").await?;
    let r = cx
        .csp
        .delete(&volume_path(&c1), &[("force", "true")])
        .await?;
    expect(&r, &[404], "V5 again")?;
    Ok(String::new())
}
