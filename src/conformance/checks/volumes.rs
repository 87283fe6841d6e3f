//! Volume lookups, create, expand, edit and delete: C06–C08, C11–C13, C15–C17, C36.

use super::common::{
    ensure, expect, expect_gone, fetch_volume, need, random_hex, track_created, volume_path,
    wait_background, Created, Ctx, Step, GIB,
};
use serde_json::{json, Value};
use volbridge_proto::csp::{Volume, BACKGROUND_COMPLETED};

pub(super) async fn c06(cx: &mut Ctx<'_>) -> Step {
    cx.session()?;
    let r = cx.csp.get("/volumes", &[]).await?;
    expect(&r, &[200], "")?;
    ensure(matches!(r.value(), Some(Value::Array(_))), || {
        format!("got {}: not a JSON array", r.describe())
    })?;
    let ct = r.content_type.as_deref().unwrap_or("");
    ensure(
        ct.to_ascii_lowercase().starts_with("application/json"),
        || format!("Content-Type is '{ct}' (want application/json)"),
    )?;
    Ok(String::new())
}

pub(super) async fn c07(cx: &mut Ctx<'_>) -> Step {
    cx.session()?;
    let unused = cx.name(&format!("unused-{}", random_hex(4)));
    let r = cx.csp.get("/volumes", &[("name", &unused)]).await?;
    expect(&r, &[404], "")?;
    Ok(String::new())
}

pub(super) async fn c08(cx: &mut Ctx<'_>) -> Step {
    cx.session()?;
    let r = cx.csp.get(&volume_path(&random_hex(16)), &[]).await?;
    expect(&r, &[404], "")?;
    Ok(String::new())
}

fn create_body(cx: &Ctx<'_>, size: u64) -> Value {
    // The shape the reference client sends: `volume_group_id: ""` always, plus a field
    // the CSP has never heard of, which it must ignore.
    json!({
        "name": cx.name("vol1"),
        "size": size,
        "description": "volbridge csp check",
        "config": {},
        "volume_group_id": "",
        "vbcheck_probe": true,
    })
}

pub(super) async fn c11(cx: &mut Ctx<'_>) -> Step {
    cx.session()?;
    let name = cx.name("vol1");
    let r = cx.csp.post("/volumes", &create_body(cx, GIB)).await?;
    let id = track_created(cx, &r);
    cx.v1 = id.clone();
    expect(&r, &[200], "")?;
    let v: Volume = r.json("Volume")?;
    ensure(id.is_some(), || {
        format!("got {} without an id", r.describe())
    })?;
    ensure(v.name.as_deref() == Some(name.as_str()), || {
        format!("name is {:?} (want {name})", v.name)
    })?;
    ensure(v.size == Some(GIB), || {
        format!("size is {:?} (want {GIB})", v.size)
    })?;
    ensure(v.published == Some(false), || {
        format!("published is {:?} (want false)", v.published)
    })?;
    if v.background_status()
        .is_some_and(|s| s != BACKGROUND_COMPLETED)
    {
        // Later checks publish the volume, which a CSP may refuse until the create is done.
        if let Some(id) = &id {
            wait_background(cx, id).await?;
        }
    }
    Ok(String::new())
}

pub(super) async fn c12(cx: &mut Ctx<'_>) -> Step {
    cx.session()?;
    let id = need(&cx.v1, "volume N1 (C11)")?;
    let name = cx.name("vol1");
    let r = cx.csp.get("/volumes", &[("name", &name)]).await?;
    expect(&r, &[200], "V1 by name")?;
    let list: Vec<Volume> = r.json("Volume array")?;
    ensure(list.len() == 1 && list[0].id.as_deref() == Some(id), || {
        format!(
            "V1 by name: got {} (want one element with id {id})",
            r.describe()
        )
    })?;
    let v = fetch_volume(cx, id, "V3").await?;
    ensure(
        v.id.as_deref() == Some(id) && v.name.as_deref() == Some(name.as_str()),
        || {
            format!(
                "V3: got id {:?} name {:?} (want {id}, {name})",
                v.id, v.name
            )
        },
    )?;
    Ok(String::new())
}

pub(super) async fn c13(cx: &mut Ctx<'_>) -> Step {
    cx.session()?;
    let id = need(&cx.v1, "volume N1 (C11)")?.to_owned();
    let r = cx.csp.post("/volumes", &create_body(cx, GIB)).await?;
    let again = track_created(cx, &r);
    expect(&r, &[200], "same size")?;
    ensure(again.as_deref() == Some(id.as_str()), || {
        format!("same size: got id {again:?} (want the existing {id})")
    })?;
    let r = cx.csp.post("/volumes", &create_body(cx, 2 * GIB)).await?;
    track_created(cx, &r);
    expect(&r, &[409], "other size")?;
    Ok(String::new())
}

pub(super) async fn c15(cx: &mut Ctx<'_>) -> Step {
    cx.session()?;
    let id = need(&cx.v1, "volume N1 (C11)")?;
    let body = json!({ "id": id, "size": 2 * GIB, "volume_group_id": "" });
    let r = cx.csp.put(&volume_path(id), &body).await?;
    expect(&r, &[200], "")?;
    let v: Volume = r.json("Volume")?;
    ensure(v.size == Some(2 * GIB), || {
        format!("size is {:?} (want {})", v.size, 2 * GIB)
    })?;
    ensure(v.group_id().is_none(), || {
        format!(
            "volume_group_id became {:?} (want unchanged: none)",
            v.group_id()
        )
    })?;
    Ok(String::new())
}

pub(super) async fn c16(cx: &mut Ctx<'_>) -> Step {
    cx.session()?;
    let id = need(&cx.v1, "volume N1 (C11)")?;
    let body = json!({ "id": id, "size": GIB });
    let r = cx.csp.put(&volume_path(id), &body).await?;
    expect(&r, &[400], "")?;
    let v = fetch_volume(cx, id, "V3").await?;
    ensure(v.size == Some(2 * GIB), || {
        format!("V3: size is {:?} (want {})", v.size, 2 * GIB)
    })?;
    Ok(String::new())
}

pub(super) async fn c17(cx: &mut Ctx<'_>) -> Step {
    cx.session()?;
    let id = need(&cx.v1, "volume N1 (C11)")?;
    let text = format!("edited by volbridge csp check {}", random_hex(2));
    let body = json!({ "id": id, "description": text });
    let r = cx.csp.put(&volume_path(id), &body).await?;
    expect(&r, &[200], "")?;
    let v: Volume = r.json("Volume")?;
    ensure(v.description.as_deref() == Some(text.as_str()), || {
        format!("description is {:?} (want {text:?})", v.description)
    })?;
    ensure(v.size == Some(2 * GIB), || {
        format!("size is {:?} (want {})", v.size, 2 * GIB)
    })?;
    Ok(String::new())
}

pub(super) async fn c36(cx: &mut Ctx<'_>) -> Step {
    cx.session()?;
    let id = need(&cx.v1, "volume N1 (C11)")?.to_owned();
    // force=true: a volume of the check must not linger in a retention area (V5 note).
    let r = cx
        .csp
        .delete(&volume_path(&id), &[("force", "true")])
        .await?;
    expect(&r, &[204], "V5")?;
    cx.forget(&Created::Volume(id.clone()));
    cx.v1 = None;
    expect_gone(cx, &id, "V3").await?;
    let name = cx.name("vol1");
    let r = cx.csp.get("/volumes", &[("name", &name)]).await?;
    expect(&r, &[404], "V1 by name")?;
    Ok(String::new())
}
