//! What the checks share: the run's context and what it created, the status and
//! prerequisite helpers, polling, and the calls several checks make (volume and snapshot
//! lookups, host registration, unpublish). Every check module imports from here and from no
//! sibling; nothing here imports a check module, so the imports form no cycle.

pub(super) use crate::conformance::verdict::{ensure, fail, Step, Verdict};
pub(super) use crate::random::{hex as random_hex, uuid_v4 as random_uuid};

use crate::conformance::http::{Csp, Resp};
use crate::conformance::options::CheckOptions;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use volbridge_proto::csp::{Host, PublishInfo, Snapshot, Volume, BACKGROUND_COMPLETED};

pub(super) const GIB: u64 = 1 << 30;

const MIB: u64 = 1 << 20;

/// Fails unless the status is one of `want`; `step` names the call in multi-call checks.
pub(super) fn expect(r: &Resp, want: &[u16], step: &str) -> Step<()> {
    if want.contains(&r.status) {
        return Ok(());
    }
    let want: Vec<String> = want.iter().map(u16::to_string).collect();
    let prefix = if step.is_empty() {
        String::new()
    } else {
        format!("{step}: ")
    };
    fail(format!(
        "{prefix}got {} (want {})",
        r.describe(),
        want.join(" or ")
    ))
}

/// The id a prerequisite check left behind, or a skip naming that check.
pub(super) fn need<'a>(slot: &'a Option<String>, what: &str) -> Step<&'a str> {
    slot.as_deref()
        .ok_or_else(|| Verdict::Skip(format!("needs {what}")))
}

/// Something the run created, to remove in reverse order at the end (§9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Created {
    Volume(String),
    Snapshot(String),
    /// A publish grant: (volume id, host uuid).
    Grant(String, String),
    VolumeGroup(String),
    SnapshotGroup(String),
}

/// A test host registered with H2.
pub(super) struct TestHost {
    pub uuid: String,
    pub name: String,
    /// The CSP's id for it, for H5 when H4 is not served.
    pub id: Option<String>,
}

/// An error answer C05 judges: which check got it and the raw body.
pub(super) struct SeenError {
    pub check: &'static str,
    pub status: u16,
    pub body: Vec<u8>,
}

pub(super) struct Ctx<'a> {
    pub opts: &'a CheckOptions,
    pub csp: Csp,
    /// `vbcheck-<8 hex>`: the prefix of every name the run creates.
    pub tag: String,
    /// Lower-case access protocol to publish with.
    pub protocol: String,
    pub created: Vec<Created>,
    pub errors: Vec<SeenError>,
    /// Ids of the sessions this run opened, logged out at the end.
    pub token_ids: Vec<String>,
    /// Id of the session in use, logged out last.
    pub session_id: Option<String>,
    /// Passwords and tokens to scrub from every detail, should a CSP echo one.
    pub secrets: Vec<String>,
    pub host_u: Option<TestHost>,
    pub host_u2: Option<TestHost>,
    pub v1: Option<String>,
    pub n2: Option<String>,
    pub s1: Option<String>,
    pub s1_size: Option<u64>,
    pub c1: Option<String>,
    /// The PublishInfo of the first V6 of N1 to U, for C19.
    pub first_publish: Option<PublishInfo>,
}

impl Ctx<'_> {
    pub fn name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.tag)
    }

    pub fn session(&self) -> Step<()> {
        if self.csp.has_session() {
            Ok(())
        } else {
            Err(Verdict::Skip("needs a session (login failed)".into()))
        }
    }

    pub fn track(&mut self, c: Created) {
        if !self.created.contains(&c) {
            self.created.push(c);
        }
    }

    /// Stops tracking something a check removed itself.
    pub fn forget(&mut self, c: &Created) {
        self.created.retain(|x| x != c);
    }

    /// Remembers a session token: it must never be printed, and it is logged out at the end.
    pub fn note_token(&mut self, body: &Value) {
        if let Some(t) = body.get("session_token").and_then(Value::as_str) {
            if !t.is_empty() {
                self.secrets.push(t.to_owned());
            }
        }
    }

    /// Secrets out of a check's detail, as whole tokens (a short password does not mask
    /// pieces of ordinary words).
    pub fn scrub(&self, text: String) -> String {
        crate::logging::redact_values_as(&text, &self.secrets, "***")
    }
}

/// Waits for a condition with growing pauses, up to the poll limit.
pub(super) struct Poll {
    deadline: Instant,
    pause: Duration,
}

impl Poll {
    pub fn new(limit: Duration) -> Self {
        Poll {
            deadline: Instant::now() + limit,
            pause: Duration::from_millis(200),
        }
    }

    /// Sleeps before the next attempt; false once the limit is used up.
    pub async fn wait(&mut self) -> bool {
        let now = Instant::now();
        if now >= self.deadline {
            return false;
        }
        tokio::time::sleep(self.pause.min(self.deadline - now)).await;
        self.pause = (self.pause * 2).min(Duration::from_secs(2));
        true
    }
}

/// A size below `size`, aligned to 1 MiB, for the "smaller than the source" checks.
pub(super) fn smaller_than(size: u64) -> u64 {
    ((size / 2) / MIB * MIB)
        .max(MIB)
        .min(size.saturating_sub(MIB).max(512))
}

// ---- Calls several checks make: volumes (V3) ----

pub(super) fn volume_path(id: &str) -> String {
    format!("/volumes/{id}")
}

/// V3 that must answer 200; `step` names the call in the failure text.
pub(super) async fn fetch_volume(cx: &Ctx<'_>, id: &str, step: &str) -> Step<Volume> {
    let r = cx.csp.get(&volume_path(id), &[]).await?;
    expect(&r, &[200], step)?;
    r.json("Volume")
}

/// V3 that must answer 404: the volume is gone.
pub(super) async fn expect_gone(cx: &Ctx<'_>, id: &str, step: &str) -> Step<()> {
    let r = cx.csp.get(&volume_path(id), &[]).await?;
    expect(&r, &[404], step)
}

/// Tracks the volume a 2xx create answered with, whatever else is wrong with the answer.
pub(super) fn track_created(cx: &mut Ctx<'_>, r: &Resp) -> Option<String> {
    track_answer(cx, r, Created::Volume)
}

/// Tracks the object (`made` of its id) a 2xx create answered with.
pub(super) fn track_answer(
    cx: &mut Ctx<'_>,
    r: &Resp,
    made: fn(String) -> Created,
) -> Option<String> {
    if !r.is_success() {
        return None;
    }
    let id = r
        .value()?
        .get("id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())?
        .to_owned();
    cx.track(made(id.clone()));
    Some(id)
}

/// Waits until `config.background_operation_status` is absent or `Completed` (B39).
pub(super) async fn wait_background(cx: &Ctx<'_>, id: &str) -> Step<Volume> {
    let mut poll = Poll::new(cx.opts.poll_limit);
    loop {
        let v = fetch_volume(cx, id, "V3 while waiting for the background operation").await?;
        match v.background_status() {
            None | Some(BACKGROUND_COMPLETED) => return Ok(v),
            Some(s) if s.starts_with("Failed") => {
                return fail(format!("background_operation_status is '{s}'"));
            }
            Some(s) => {
                if !poll.wait().await {
                    return fail(format!(
                        "background_operation_status still '{s}' after {:?}",
                        cx.opts.poll_limit
                    ));
                }
            }
        }
    }
}

// ---- snapshots (S3) ----

pub(super) fn snapshot_path(id: &str) -> String {
    format!("/snapshots/{id}")
}

pub(super) async fn fetch_snapshot(cx: &Ctx<'_>, id: &str, step: &str) -> Step<Snapshot> {
    let r = cx.csp.get(&snapshot_path(id), &[]).await?;
    expect(&r, &[200], step)?;
    r.json("Snapshot")
}

/// Polls S3 until the snapshot reports `ready_to_use: true`.
pub(super) async fn wait_ready(cx: &Ctx<'_>, id: &str) -> Step<Snapshot> {
    let mut poll = Poll::new(cx.opts.poll_limit);
    loop {
        let s = fetch_snapshot(cx, id, "S3 while waiting for ready_to_use").await?;
        if s.ready_to_use == Some(true) {
            return Ok(s);
        }
        if !poll.wait().await {
            return fail(format!(
                "snapshot {id}: ready_to_use still {:?} after {:?}",
                s.ready_to_use, cx.opts.poll_limit
            ));
        }
    }
}

// ---- hosts (H2) and grants (unpublish) ----

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

pub(super) async fn unpublish(cx: &Ctx<'_>, volume: &str, host: &str) -> Step<Resp> {
    let body = json!({ "host_uuid": host });
    cx.csp
        .put(&format!("{}/actions/unpublish", volume_path(volume)), &body)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_sizes() {
        let u = random_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(random_hex(4), random_hex(4));
        assert_eq!(smaller_than(2 * GIB), GIB);
        assert!(smaller_than(MIB + 512) < MIB + 512);
    }
}
