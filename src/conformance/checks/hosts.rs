//! Test hosts: C09, C10 (H2 upsert, H1) and C40 (H4 after cleanup).

use super::common::{
    ensure, expect, fail, host_body, register, Ctx, Step, TestHost, Verdict, NOT_SERVED,
};
use volbridge_proto::csp::Host;

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
