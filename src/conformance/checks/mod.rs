//! The checks of csp-api.md §9, run in table order against one CSP, and the cleanup.
//!
//! Checks share one context: later checks use what earlier ones created (the volume N1, the
//! snapshot S1, …). A check whose prerequisite is missing is skipped with the reason, so one
//! broken endpoint yields one FAIL instead of a cascade.

mod auth;
mod cleanup;
mod clones;
mod common;
mod groups;
mod hosts;
mod publish;
mod snapshots;
mod volumes;

use super::http::Csp;
use super::options::CheckOptions;
use super::report::{CheckResult, Outcome, Report};
use common::{random_hex, Ctx, Step, Verdict};

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

#[cfg(test)]
mod tests {
    /// The check modules take what they share from `common` and from no sibling, and
    /// `common` imports no check module: no two files of the checker import each other.
    #[test]
    fn check_modules_import_only_common() {
        let checks = [
            ("auth", include_str!("auth.rs")),
            ("cleanup", include_str!("cleanup.rs")),
            ("clones", include_str!("clones.rs")),
            ("groups", include_str!("groups.rs")),
            ("hosts", include_str!("hosts.rs")),
            ("publish", include_str!("publish.rs")),
            ("snapshots", include_str!("snapshots.rs")),
            ("volumes", include_str!("volumes.rs")),
        ];
        let imports_from = |text: &str, module: &str| {
            text.contains(&format!("super::{module}::"))
                || text.contains(&format!("super::{module};"))
                || text.contains(&format!("checks::{module}"))
        };
        for (name, text) in checks {
            for (other, _) in checks {
                assert!(!imports_from(text, other), "{name}.rs imports {other}.rs");
            }
            // Items of checks/mod.rs itself (`use super::{…}` outside a test module).
            assert!(
                !text.contains("use super::{"),
                "{name}.rs imports checks/mod.rs"
            );
        }
        let common = include_str!("common.rs");
        for (other, _) in checks {
            assert!(!imports_from(common, other), "common.rs imports {other}.rs");
        }
        assert!(!include_str!("../http.rs").contains("checks::"));
        assert!(!include_str!("../verdict.rs").contains("use "));
    }
}
