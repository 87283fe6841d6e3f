//! The checks of csp-api.md §9, run in table order against one CSP, and the cleanup.
//!
//! Checks share one context: later checks use what earlier ones created (the volume N1, the
//! snapshot S1, …). A check whose prerequisite is missing is skipped with the reason, so one
//! broken endpoint yields one FAIL instead of a cascade.

pub(super) use crate::random::{hex as random_hex, uuid_v4 as random_uuid};
mod auth;
mod cleanup;
mod clones;
mod groups;
mod hosts;
mod publish;
mod snapshots;
mod volumes;

use super::http::{Csp, Resp};
use super::{CheckOptions, CheckResult, Outcome, Report};
use serde_json::Value;
use std::time::{Duration, Instant};
use volbridge_proto::csp::PublishInfo;

pub(super) const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// What a check concluded before its level is applied.
#[derive(Debug)]
pub(crate) enum Verdict {
    Pass(String),
    Fail(String),
    Warn(String),
    Skip(String),
}

impl Verdict {
    pub fn text(&self) -> &str {
        match self {
            Verdict::Pass(t) | Verdict::Fail(t) | Verdict::Warn(t) | Verdict::Skip(t) => t,
        }
    }
}

/// A check body: `Ok(note)` passes; `Err` carries any other verdict, so `?` ends the check.
pub(super) type Step<T = String> = Result<T, Verdict>;

pub(super) fn fail<T>(msg: impl Into<String>) -> Step<T> {
    Err(Verdict::Fail(msg.into()))
}

pub(super) fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Step<()> {
    if cond {
        Ok(())
    } else {
        fail(msg())
    }
}

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
    fn scrub(&self, text: String) -> String {
        crate::logging::redact_values_as(&text, &self.secrets, "***")
    }
}

/// The checklist: id, level, title. Titles are what the CLI prints after the level.
const CHECKS: [(&str, char, &str); 40] = [
    ("C01", 'M', "login with valid credentials"),
    ("C02", 'M', "login with a wrong password"),
    ("C03", 'M', "request without a token"),
    ("C04", 'M', "request with a made-up token, then re-login"),
    ("C05", 'S', "error bodies in the wrapped form"),
    ("C06", 'M', "list volumes"),
    ("C07", 'M', "lookup of an unused name"),
    ("C08", 'M', "volume by an unused id"),
    ("C09", 'M', "register a test host"),
    ("C10", 'M', "re-register the host (upsert)"),
    ("C11", 'M', "create a volume"),
    ("C12", 'M', "find the volume by name and id"),
    ("C13", 'S', "create the same name again"),
    ("C14", 'M', "snapshots of a volume without any"),
    ("C15", 'M', "expand the volume"),
    ("C16", 'M', "refuse to shrink"),
    ("C17", 'M', "edit the description"),
    ("C18", 'M', "publish to the host"),
    ("C19", 'M', "publish again (idempotent)"),
    ("C20", 'M', "published flag set"),
    ("C21", 'M', "refuse to delete a published volume"),
    ("C22", 'S', "publish to two hosts"),
    ("C23", 'M', "unpublish"),
    ("C24", 'M', "unpublish again and from an unknown host"),
    ("C25", 'M', "create a snapshot"),
    ("C26", 'S', "create the same snapshot again"),
    ("C27", 'M', "find the snapshot by name"),
    ("C28", 'M', "snapshot existence query"),
    ("C29", 'M', "snapshot by id"),
    ("C30", 'M', "clone from the snapshot"),
    ("C31", 'M', "refuse a clone smaller than its snapshot"),
    ("C32", 'M', "refuse to delete a volume with snapshots"),
    ("C33", 'M', "delete a snapshot that has a clone"),
    ("C34", 'M', "delete the clone"),
    ("C35", 'M', "delete the snapshot"),
    ("C36", 'M', "delete the volume"),
    ("C37", 'S', "volume groups and snapshot groups"),
    ("C38", 'S', "list replication partners"),
    ("C39", 'S', "logout"),
    ("C40", 'S', "remove the test hosts"),
];

async fn dispatch(id: &str, cx: &mut Ctx<'_>) -> Step {
    match id {
        "C01" => auth::c01(cx).await,
        "C02" => auth::c02(cx).await,
        "C03" => auth::c03(cx).await,
        "C04" => auth::c04(cx).await,
        "C05" => auth::c05(cx).await,
        "C06" => volumes::c06(cx).await,
        "C07" => volumes::c07(cx).await,
        "C08" => volumes::c08(cx).await,
        "C09" => hosts::c09(cx).await,
        "C10" => hosts::c10(cx).await,
        "C11" => volumes::c11(cx).await,
        "C12" => volumes::c12(cx).await,
        "C13" => volumes::c13(cx).await,
        "C14" => snapshots::c14(cx).await,
        "C15" => volumes::c15(cx).await,
        "C16" => volumes::c16(cx).await,
        "C17" => volumes::c17(cx).await,
        "C18" => publish::c18(cx).await,
        "C19" => publish::c19(cx).await,
        "C20" => publish::c20(cx).await,
        "C21" => publish::c21(cx).await,
        "C22" => publish::c22(cx).await,
        "C23" => publish::c23(cx).await,
        "C24" => publish::c24(cx).await,
        "C25" => snapshots::c25(cx).await,
        "C26" => snapshots::c26(cx).await,
        "C27" => snapshots::c27(cx).await,
        "C28" => snapshots::c28(cx).await,
        "C29" => snapshots::c29(cx).await,
        "C30" => clones::c30(cx).await,
        "C31" => clones::c31(cx).await,
        "C32" => clones::c32(cx).await,
        "C33" => clones::c33(cx).await,
        "C34" => clones::c34(cx).await,
        "C35" => snapshots::c35(cx).await,
        "C36" => volumes::c36(cx).await,
        "C37" => groups::c37(cx).await,
        "C38" => groups::c38(cx).await,
        "C39" => auth::c39(cx).await,
        "C40" => hosts::c40(cx).await,
        _ => Err(Verdict::Skip("not implemented".into())),
    }
}

pub(super) async fn run(
    opts: &CheckOptions,
    on_result: &mut (dyn FnMut(&CheckResult) + Send),
) -> crate::Result<Report> {
    let csp = Csp::new(opts)?;
    let mut cx = Ctx {
        opts,
        csp,
        tag: format!("vbcheck-{}", random_hex(4)),
        protocol: opts.protocol.trim().to_ascii_lowercase(),
        created: Vec::new(),
        errors: Vec::new(),
        token_ids: Vec::new(),
        session_id: None,
        secrets: vec![opts.password.clone()],
        host_u: None,
        host_u2: None,
        v1: None,
        n2: None,
        s1: None,
        s1_size: None,
        c1: None,
        first_publish: None,
    };
    if cx.protocol.is_empty() {
        cx.protocol = "iscsi".into();
    }
    let mut report = Report::default();
    for (id, level, title) in CHECKS {
        if id == "C40" {
            // C40 removes the hosts, which only works once nothing is published to them.
            cleanup::run(&mut cx).await;
        }
        let verdict = match dispatch(id, &mut cx).await {
            Ok(note) => Verdict::Pass(note),
            Err(v) => v,
        };
        let (outcome, detail) = match verdict {
            Verdict::Pass(d) => (Outcome::Pass, d),
            Verdict::Fail(d) if level == 'S' => (Outcome::Warn, d),
            Verdict::Fail(d) => (Outcome::Fail, d),
            Verdict::Warn(d) => (Outcome::Warn, d),
            Verdict::Skip(d) => (Outcome::Skip, d),
        };
        let result = CheckResult {
            id,
            level,
            title,
            outcome,
            detail: cx.scrub(detail),
        };
        on_result(&result);
        report.results.push(result);
    }
    cleanup::logout(&mut cx).await;
    Ok(report)
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
