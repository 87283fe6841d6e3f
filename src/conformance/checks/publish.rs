//! Publish and unpublish: C18–C24.

use super::common::{
    ensure, expect, fail, fetch_volume, need, random_uuid, register, track_created, unpublish,
    volume_path, Created, Ctx, Step, Verdict, GIB,
};
use crate::conformance::http::Resp;
use serde_json::json;
use volbridge_proto::csp::{PublishInfo, Volume};

async fn publish(cx: &mut Ctx<'_>, volume: &str, host: &str) -> Step<Resp> {
    // Tracked before the answer is known: unpublish is idempotent, a half-done grant is not.
    cx.track(Created::Grant(volume.to_owned(), host.to_owned()));
    let body = json!({ "host_uuid": host, "access_protocol": cx.protocol });
    cx.csp
        .put(&format!("{}/actions/publish", volume_path(volume)), &body)
        .await
}

/// The PublishInfo rules of C18 (§4.5, B31).
fn judge_info(cx: &Ctx<'_>, r: &Resp) -> Step<PublishInfo> {
    let info: PublishInfo = r.json("PublishInfo")?;
    let mut bad = Vec::new();
    if info.serial_number.is_empty() {
        bad.push("serial_number is empty".to_owned());
    }
    if info.access_protocol != cx.protocol {
        bad.push(format!(
            "access_protocol is '{}' (want '{}')",
            info.access_protocol, cx.protocol
        ));
    }
    match info.lun_id {
        None => bad.push("lun_id is missing".to_owned()),
        Some(n) if n < 0 => bad.push(format!("lun_id is {n} (want ≥ 0)")),
        Some(_) => {}
    }
    match cx.protocol.as_str() {
        "iscsi" | "nvmetcp" => {
            if info.target_names.is_empty() {
                bad.push("target_names is empty".to_owned());
            }
            if info.discovery_ips.is_empty() {
                bad.push("discovery_ips is empty".to_owned());
            }
        }
        "local" => match info.local_path.as_deref() {
            Some(p) if p.starts_with('/') => {}
            other => bad.push(format!("local_path is {other:?} (want an absolute path)")),
        },
        _ => {}
    }
    for (i, peer) in info.peer_array_details.iter().enumerate() {
        if let Some(n) = peer.lun_id.filter(|n| *n < 0) {
            bad.push(format!("PeerArrayDetails[{i}].lun_id is {n} (want ≥ 0)"));
        }
    }
    if bad.is_empty() {
        Ok(info)
    } else {
        fail(bad.join("; "))
    }
}

/// B26: what must not change between two publishes of one (volume, host).
fn same_grant(a: &PublishInfo, b: &PublishInfo) -> Step<()> {
    ensure(
        a.serial_number == b.serial_number
            && a.lun_id == b.lun_id
            && a.target_names == b.target_names,
        || {
            format!(
                "serial/lun/targets changed: {} {:?} {:?} then {} {:?} {:?}",
                a.serial_number,
                a.lun_id,
                a.target_names,
                b.serial_number,
                b.lun_id,
                b.target_names
            )
        },
    )
}

fn host_u(cx: &Ctx<'_>) -> Step<String> {
    cx.host_u
        .as_ref()
        .map(|h| h.uuid.clone())
        .ok_or_else(|| Verdict::Skip("needs host U (C09)".into()))
}

async fn published(cx: &Ctx<'_>, id: &str, want: bool, step: &str) -> Step<()> {
    let v: Volume = fetch_volume(cx, id, step).await?;
    ensure(v.published == Some(want), || {
        format!("{step}: published is {:?} (want {want})", v.published)
    })
}

pub(super) async fn c18(cx: &mut Ctx<'_>) -> Step {
    cx.session()?;
    let v1 = need(&cx.v1, "volume N1 (C11)")?.to_owned();
    let u = host_u(cx)?;
    let r = publish(cx, &v1, &u).await?;
    expect(&r, &[200], "")?;
    let info = judge_info(cx, &r)?;
    cx.first_publish = Some(info);
    Ok(String::new())
}

pub(super) async fn c19(cx: &mut Ctx<'_>) -> Step {
    cx.session()?;
    let v1 = need(&cx.v1, "volume N1 (C11)")?.to_owned();
    let u = host_u(cx)?;
    let Some(first) = cx.first_publish.clone() else {
        return Err(Verdict::Skip("needs the first publish (C18)".into()));
    };
    let r = publish(cx, &v1, &u).await?;
    expect(&r, &[200], "")?;
    let again: PublishInfo = r.json("PublishInfo")?;
    same_grant(&first, &again)?;
    Ok(String::new())
}

pub(super) async fn c20(cx: &mut Ctx<'_>) -> Step {
    cx.session()?;
    let v1 = need(&cx.v1, "volume N1 (C11)")?;
    published(cx, v1, true, "V3").await?;
    Ok(String::new())
}

pub(super) async fn c21(cx: &mut Ctx<'_>) -> Step {
    cx.session()?;
    let v1 = need(&cx.v1, "volume N1 (C11)")?.to_owned();
    let r = cx
        .csp
        .delete(&volume_path(&v1), &[("force", "false")])
        .await?;
    if r.is_success() {
        cx.forget(&Created::Volume(v1.clone()));
        cx.v1 = None;
    }
    expect(&r, &[400], "V5")?;
    fetch_volume(cx, &v1, "V3").await?;
    Ok(String::new())
}

pub(super) async fn c22(cx: &mut Ctx<'_>) -> Step {
    cx.session()?;
    let u = host_u(cx)?;
    let body = json!({
        "name": cx.name("vol2"),
        "size": GIB,
        "description": "volbridge csp check",
        "config": { "multi_initiator": true },
        "volume_group_id": "",
    });
    let r = cx.csp.post("/volumes", &body).await?;
    let id = track_created(cx, &r);
    cx.n2 = id.clone();
    expect(&r, &[200], "V2 N2")?;
    let Some(n2) = id else {
        return fail(format!("V2 N2: got {} without an id", r.describe()));
    };
    if cx.host_u2.is_none() {
        let h = register(cx, "host2", false).await?;
        cx.host_u2 = Some(h);
    }
    let u2 = cx
        .host_u2
        .as_ref()
        .map(|h| h.uuid.clone())
        .unwrap_or_default();

    let r = publish(cx, &n2, &u).await?;
    expect(&r, &[200], "V6 N2 to U")?;
    let r = publish(cx, &n2, &u2).await?;
    expect(&r, &[200], "V6 N2 to U2")?;
    let to_u2: PublishInfo = r.json("PublishInfo")?;

    let r = unpublish(cx, &n2, &u).await?;
    expect(&r, &[204, 200], "V7 N2 from U")?;
    cx.forget(&Created::Grant(n2.clone(), u.clone()));
    published(cx, &n2, true, "V3 after V7 U").await?;

    let r = publish(cx, &n2, &u2).await?;
    expect(&r, &[200], "V6 N2 to U2 again")?;
    let again: PublishInfo = r.json("PublishInfo")?;
    same_grant(&to_u2, &again)?;

    let r = unpublish(cx, &n2, &u2).await?;
    expect(&r, &[204, 200], "V7 N2 from U2")?;
    cx.forget(&Created::Grant(n2.clone(), u2));
    published(cx, &n2, false, "V3 after V7 U2").await?;
    Ok(String::new())
}

pub(super) async fn c23(cx: &mut Ctx<'_>) -> Step {
    cx.session()?;
    let v1 = need(&cx.v1, "volume N1 (C11)")?.to_owned();
    let u = host_u(cx)?;
    let r = unpublish(cx, &v1, &u).await?;
    expect(&r, &[204, 200], "")?;
    cx.forget(&Created::Grant(v1.clone(), u));
    published(cx, &v1, false, "V3").await?;
    Ok(String::new())
}

pub(super) async fn c24(cx: &mut Ctx<'_>) -> Step {
    cx.session()?;
    let v1 = need(&cx.v1, "volume N1 (C11)")?.to_owned();
    let u = host_u(cx)?;
    let r = unpublish(cx, &v1, &u).await?;
    ensure(r.is_success(), || {
        format!("V7 U again: got {} (want 2xx)", r.describe())
    })?;
    let r = unpublish(cx, &v1, &random_uuid()).await?;
    ensure(r.is_success(), || {
        format!("V7 unknown host: got {} (want 2xx)", r.describe())
    })?;
    Ok(String::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_compare_on_identity_fields_only() {
        let a = PublishInfo {
            serial_number: "abc".into(),
            lun_id: Some(0),
            target_names: vec!["iqn.x".into()],
            ..Default::default()
        };
        let mut b = a.clone();
        b.discovery_ips = vec!["10.0.0.1".into()];
        assert!(same_grant(&a, &b).is_ok());
        b.lun_id = Some(1);
        assert!(same_grant(&a, &b).is_err());
    }
}
