//! Volume groups, snapshot groups and replication partners: C37, C38.

use super::common::{
    ensure, expect, fail, fetch_volume, track_created, volume_path, wait_ready, Created, Ctx, Step,
    Verdict, GIB, NOT_SERVED,
};
use serde_json::{json, Value};
use volbridge_proto::csp::{SnapshotGroup, VolumeGroup};

pub(super) async fn c37(cx: &mut Ctx<'_>) -> Step {
    cx.session()?;
    let body = json!({
        "name": cx.name("vol3"),
        "size": GIB,
        "description": "volbridge csp check",
        "config": {},
        "volume_group_id": "",
    });
    let r = cx.csp.post("/volumes", &body).await?;
    let n3 = track_created(cx, &r);
    expect(&r, &[200], "V2 N3")?;
    let Some(n3) = n3 else {
        return fail(format!("V2 N3: got {} without an id", r.describe()));
    };

    let group_name = cx.name("group1");
    let body = json!({ "name": group_name, "description": "volbridge csp check" });
    let r = cx.csp.post("/volume_groups", &body).await?;
    if NOT_SERVED.contains(&r.status) {
        return Err(Verdict::Skip(format!("G2 answered {}", r.status)));
    }
    expect(&r, &[200], "G2")?;
    let g: VolumeGroup = r.json("VolumeGroup")?;
    let Some(gid) = g.id.filter(|s| !s.is_empty()) else {
        return fail(format!("G2: got {} without an id", r.describe()));
    };
    cx.track(Created::VolumeGroup(gid.clone()));

    let r = cx
        .csp
        .get("/volume_groups", &[("name", &group_name)])
        .await?;
    expect(&r, &[200], "G1 by name")?;
    let list: Vec<VolumeGroup> = r.json("VolumeGroup array")?;
    ensure(
        list.len() == 1 && list[0].id.as_deref() == Some(gid.as_str()),
        || format!("G1 by name: got {} (want [{gid}])", r.describe()),
    )?;

    let body = json!({ "id": n3, "volume_group_id": gid });
    let r = cx.csp.put(&volume_path(&n3), &body).await?;
    expect(&r, &[200], "V4 N3 into G")?;
    let v = fetch_volume(cx, &n3, "V3 N3").await?;
    ensure(v.group_id() == Some(gid.as_str()), || {
        format!("V3 N3: volume_group_id is {:?} (want {gid})", v.group_id())
    })?;

    let body = json!({ "name": cx.name("sgroup1"), "volume_group_id": gid });
    let r = cx.csp.post("/snapshot_groups", &body).await?;
    let sg: Option<SnapshotGroup> = if r.is_success() {
        r.json("SnapshotGroup").ok()
    } else {
        None
    };
    if let Some(sg) = &sg {
        // Members first, so that the reverse-order cleanup removes the group before them.
        for s in sg.snapshots.iter().flatten() {
            if let Some(id) = s.id.clone().filter(|i| !i.is_empty()) {
                cx.track(Created::Snapshot(id));
            }
        }
        if let Some(id) = sg.id.clone().filter(|i| !i.is_empty()) {
            cx.track(Created::SnapshotGroup(id));
        }
    }
    expect(&r, &[200], "P2")?;
    let sg = sg.ok_or_else(|| Verdict::Fail(format!("P2: got {}", r.describe())))?;
    let members = sg.snapshots.as_deref().unwrap_or_default();
    ensure(
        members.len() == 1 && members[0].volume_id.as_deref() == Some(n3.as_str()),
        || format!("P2: got {} (want one snapshot, of {n3})", r.describe()),
    )?;
    let Some(sgid) = sg.id.filter(|s| !s.is_empty()) else {
        return fail(format!("P2: got {} without an id", r.describe()));
    };

    // A member still being copied is in use and may block P4; wait as for any snapshot.
    for s in members {
        if let (Some(id), false) = (s.id.as_deref(), s.ready_to_use == Some(true)) {
            wait_ready(cx, id).await?;
        }
    }

    let r = cx.csp.get("/snapshot_groups", &[]).await?;
    expect(&r, &[400], "P1 without volume_group_id")?;

    let r = cx
        .csp
        .delete(&format!("/snapshot_groups/{sgid}"), &[])
        .await?;
    expect(&r, &[204], "P4")?;
    cx.forget(&Created::SnapshotGroup(sgid));
    for s in members {
        if let Some(id) = &s.id {
            cx.forget(&Created::Snapshot(id.clone()));
        }
    }

    let r = cx.csp.delete(&format!("/volume_groups/{gid}"), &[]).await?;
    if r.is_success() {
        cx.forget(&Created::VolumeGroup(gid.clone()));
    }
    expect(&r, &[409], "G4 with a member")?;
    Ok(String::new())
}

pub(super) async fn c38(cx: &mut Ctx<'_>) -> Step {
    cx.session()?;
    let r = cx.csp.get("/replication_partners", &[]).await?;
    expect(&r, &[200], "")?;
    ensure(matches!(r.value(), Some(Value::Array(_))), || {
        format!("got {}: not a JSON array", r.describe())
    })?;
    Ok(String::new())
}
