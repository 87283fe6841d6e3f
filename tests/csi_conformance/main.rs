//! Our own CSI conformance suite: the numbered rules of `shared/specs/csi.md`, each as a test
//! named after its rule, against a real `volbridge serve` over its CSI unix socket, as root,
//! with real loop devices and mounts, in mount and block access types. Error cases assert
//! the exact gRPC code; idempotency cases repeat the call ten times and count volumes, loop
//! devices and mounts afterwards.
//!
//! One test binary, one module per CSI service, one `#[test]` per rule (and per service
//! where a rule spans several), so that a service or a rule runs alone:
//!
//! ```sh
//! cargo test --test csi_conformance identity::
//! cargo test --test csi_conformance controller::          # copy states included
//! cargo test --test csi_conformance controller::copy_states::
//! cargo test --test csi_conformance snapshots::
//! cargo test --test csi_conformance groups::              # GroupController
//! cargo test --test csi_conformance node::
//! cargo test --test csi_conformance snapshot_metadata::
//! cargo test --test csi_conformance general::             # secrets in logs, any :authority
//! cargo test --test csi_conformance rule_01_              # one rule, in every service
//! ```

#[path = "../common/mod.rs"]
mod common;
#[path = "../csi_support/mod.rs"]
mod csi_support;

mod controller;
mod general;
mod groups;
mod identity;
mod node;
mod snapshot_metadata;
mod snapshots;

use csi_support::*;
use tonic::Code;

const IA: Code = Code::InvalidArgument;

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// Rule 1's setting, in every service: a daemon holding one volume `v1` (64 MiB, mount)
/// published to this node, and the staging and target paths kubelet would use for it.
struct MissingFields {
    r: Rig,
    v: csi::Volume,
    ctx: Map,
    staging: String,
    target: String,
}

impl MissingFields {
    async fn start(tag: &str) -> Option<MissingFields> {
        let r = Rig::start(tag).await?;
        let v = r.create_ok("v1", Some(64 * MIB), Access::Mount).await;
        let ctx = r.cpublish_ok(&v, Access::Mount).await;
        let staging = r.staging("v1");
        let target = r.target("v1", "pod-a");
        Some(MissingFields {
            r,
            v,
            ctx,
            staging,
            target,
        })
    }

    /// Arguments are checked before state is touched: after the refused calls `v1` is the
    /// only volume, published to this node only, with nothing attached or mounted. Then `v1`
    /// goes and nothing is left.
    async fn finish(self, mut c: Checks) {
        let r = &self.r;
        c.eq(
            r.volume_ids().await,
            vec!["v1".to_owned()],
            "volumes after the refused calls",
        );
        c.eq(
            r.csp_volume_files().len(),
            1,
            "CSP volume files after the refused calls",
        );
        c.eq(
            r.csp_snapshot_files().len(),
            0,
            "CSP snapshot files after the refused calls",
        );
        c.eq(r.loops(), vec![], "loop devices after the refused calls");
        c.eq(
            common::mounts_under(r.dir.path()),
            Vec::<String>::new(),
            "mounts after the refused calls",
        );
        c.eq(
            r.published_nodes("v1").await,
            vec![r.node_id.clone()],
            "v1 stays published to this node only",
        );
        c.check(
            !std::path::Path::new(&self.target).exists(),
            "a refused NodePublish created the target",
        );

        r.cunpublish_ok("v1").await;
        r.delete_ok("v1").await;
        r.assert_nothing_left();
        c.finish();
    }
}

/// The soft-check collector itself (no daemon, no root).
mod checks_collector {
    use crate::csi_support::Checks;

    #[test]
    #[should_panic(expected = "Checks dropped without finish()")]
    fn dropped_unfinished_fails_the_test_naming_the_pending_checks() {
        let mut c = Checks::new();
        c.check(true, "the first check");
        c.eq(1, 2, "the second check");
        // A test that returns early drops its collector unfinished.
        drop(c);
    }

    #[test]
    fn finished_without_failures_passes() {
        let mut c = Checks::new();
        c.check(true, "a check");
        c.eq("a", "a", "another check");
        c.finish();
    }

    #[test]
    #[should_panic(expected = "1 of 2 check(s) failed")]
    fn finished_with_a_failure_fails_with_it() {
        let mut c = Checks::new();
        c.check(true, "a check");
        c.eq(1, 2, "another check");
        c.finish();
    }
}
