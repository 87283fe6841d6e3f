//! Test hosts: C09, C10 (H2 upsert, H1) and C40 (H4 after cleanup).

use super::{ensure, expect, fail, random_uuid, Ctx, Step, TestHost, Verdict};
use serde_json::{json, Value};
use volbridge_proto::csp::Host;

/// Statuses by which a CSP says it does not serve an optional endpoint.
pub(super) const NOT_SERVED: [u16; 3] = [404, 405, 501];

/// The H2 body for a test host, with an initiator of the protocol under test. Initiators
/// derive from the uuid so that re-registering sends the same ones (B24).
pub(super) fn host_body(cx: &Ctx<'_>, host: &TestHost, networks: &[&str]) -> Value {
    let mut body = json!({
        "uuid": host.uuid,
        "name": host.name,
        "access_protocol": cx.protocol,
        "networks": networks,
    });
    let plain: String = host.uuid.chars().filter(|c| *c != '-').collect();
    match cx.protocol.as_str() {
        "iscsi" => body["iqns"] = json!([format!("iqn.2024-01.io.volbridge:{}", host.name)]),
        "nvmetcp" => {
            body["nqns"] = json!([format!("nqn.2014-08.org.nvmexpress:uuid:{}", host.uuid)])
        }
        "fc" => body["wwpns"] = json!([plain[..16].to_owned()]),
        _ => {}
    }
    body
}

/// H2 for a new test host; the host is remembered whatever the answer, for C40.
pub(super) async fn register(cx: &Ctx<'_>, suffix: &str, probe: bool) -> Step<TestHost> {
    let mut host = TestHost {
        uuid: random_uuid(),
        name: cx.name(suffix),
        id: None,
    };
    let mut body = host_body(cx, &host, &["192.0.2.10/24"]);
    if probe {
        body["vbcheck_probe"] = json!(true);
    }
    let r = cx.csp.post("/hosts", &body).await?;
    if r.status != 200 {
        return Err(Verdict::Fail(format!(
            "H2 {}: got {} (want 200)",
            host.name,
            r.describe()
        )));
    }
    host.id = r
        .json::<Host>("Host")
        .ok()
        .and_then(|h| h.id)
        .filter(|id| !id.is_empty());
    Ok(host)
}

pub(super) async fn c09(cx: &mut Ctx<'_>) -> Step {
    cx.session()?;
    let host = register(cx, "host1", true).await?;
    cx.host_u = Some(host);
    Ok(String::new())
}

pub(super) async fn c10(cx: &mut Ctx<'_>) -> Step {
    cx.session()?;
    let Some(host) = &cx.host_u else {
        return Err(Verdict::Skip("needs host U (C09)".into()));
    };
    let body = host_body(cx, host, &["198.51.100.10/24"]);
    let r = cx.csp.post("/hosts", &body).await?;
    expect(&r, &[200], "H2 again")?;
    let l = cx.csp.get("/hosts", &[]).await?;
    if NOT_SERVED.contains(&l.status) {
        return Ok(format!("H1 not served ({})", l.status));
    }
    expect(&l, &[200], "H1")?;
    let hosts: Vec<Host> = l.json("Host array")?;
    let n = hosts
        .iter()
        .filter(|h| h.uuid.as_deref() == Some(host.uuid.as_str()))
        .count();
    ensure(n <= 1, || {
        format!("H1 lists {n} hosts with uuid {}", host.uuid)
    })?;
    Ok(String::new())
}

pub(super) async fn c40(cx: &mut Ctx<'_>) -> Step {
    let hosts: Vec<&TestHost> = [&cx.host_u, &cx.host_u2].into_iter().flatten().collect();
    if hosts.is_empty() {
        return Err(Verdict::Skip("no test host was registered".into()));
    }
    if cx.opts.keep {
        let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
        return Err(Verdict::Skip(format!("--keep: left {}", names.join(", "))));
    }
    cx.session()?;
    let mut not_served = None;
    let mut failures = Vec::new();
    for h in &hosts {
        let r = cx.csp.delete("/hosts", &[("uuid", &h.uuid)]).await?;
        if r.status == 204 {
            continue;
        }
        if [404, 405].contains(&r.status) {
            not_served = Some(r.status);
            // H5 by the CSP's host id is the other way the published API offers.
            let by_id = h.id.as_deref().unwrap_or(&h.uuid);
            let h5 = cx.csp.delete(&format!("/hosts/{by_id}"), &[]).await?;
            if !h5.is_success() && h5.status != 404 {
                tracing::warn!(host = %h.name, status = h5.status, "csp check: test host left on the CSP");
            }
            continue;
        }
        failures.push(format!("H4 {}: got {} (want 204)", h.name, r.describe()));
    }
    if !failures.is_empty() {
        return fail(failures.join("; "));
    }
    if let Some(status) = not_served {
        return Err(Verdict::Skip(format!("H4 answered {status}")));
    }
    Ok(String::new())
}
