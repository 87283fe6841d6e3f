//! A slow backend. Rule 3 of docs/copy-semantics.md: a CreateVolume whose one CSP call
//! outlasts the caller's deadline still gets our answer in time (ABORTED, retry with the
//! same name), never the server's CANCELLED; the create goes on, and the retry answers the
//! volume it made. Rule 38 of docs/csi.md: any call whose caller gave up runs to its end,
//! and a stop waits for it.

use crate::common::slow_csp::{slow_csp, Volumes};
use crate::csi_support::*;
use std::time::{Duration, Instant};
use tonic::Code;

/// The callers' deadline: shorter than the fake's create and delete, with room for the
/// answer's margin (a tenth, at least 250 ms) on a loaded host.
const DEADLINE: Duration = Duration::from_secs(4);

/// A daemon whose default backend is a [`slow_csp`], and what that CSP holds.
async fn slow_rig(tag: &str) -> Option<(Rig, Volumes)> {
    let (port, volumes) = slow_csp().await;
    let rig = Rig::start_with(
        tag,
        RigOptions {
            default_csp: Some(("slow", port, "p4ssword")),
            ..Default::default()
        },
    )
    .await?;
    Some((rig, volumes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_30_a_slow_backend_still_answers_by_the_deadline() {
    let Some((r, volumes)) = slow_rig("slow-backend").await else {
        return;
    };
    let req = r.create_req("slow-vol", Some(GIB), vec![Access::Mount.cap()]);
    let asked = Instant::now();
    let first = r.create_within(req.clone(), DEADLINE).await;
    let took = asked.elapsed();
    let st = first.expect_err("a create slower than the deadline cannot be OK");
    assert_eq!(st.code(), Code::Aborted, "{}", st.message());
    assert!(
        st.message().contains("'slow-vol'")
            && st
                .message()
                .contains("retry CreateVolume with the same name"),
        "{}",
        st.message()
    );
    assert!(
        took < DEADLINE,
        "answered after {took:?} of its {DEADLINE:?}"
    );
    // A retry while the first create still runs: operation pending.
    let again = r.create_within(req.clone(), DEADLINE).await;
    assert_eq!(
        again.map(|_| ()).map_err(|s| s.code()),
        Err(Code::Aborted),
        "a retry during the create"
    );
    // The first create went on to its end; the retry answers what it made.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !volumes.lock().unwrap().contains_key("slow-vol") {
        assert!(Instant::now() < deadline, "the create never ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The CSP has answered; the daemon may still be taking that answer in.
    let made = loop {
        match r.create(req.clone()).await {
            Err(st) if st.code() == Code::Aborted && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => {
                break ok(other, "the retry after the create")
                    .volume
                    .expect("a volume")
            }
        }
    };
    assert!(made.volume_id.contains("slow-vol"), "{made:?}");
    assert_eq!(made.capacity_bytes, GIB);
    assert_eq!(volumes.lock().unwrap().len(), 1, "one volume made");
}

/// A daemon told to stop while such a create still runs waits for it (its CSP answer, its
/// records) before it logs out of the backends and exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_38_a_stop_waits_for_a_create_that_outlived_its_answer() {
    let Some((mut r, volumes)) = slow_rig("slow-stop").await else {
        return;
    };
    let req = r.create_req("late-vol", Some(GIB), vec![Access::Mount.cap()]);
    let first = r.create_within(req, DEADLINE).await;
    assert_eq!(first.map(|_| ()).map_err(|s| s.code()), Err(Code::Aborted));
    assert!(
        volumes.lock().unwrap().is_empty(),
        "the CSP was faster than SLOW"
    );
    tokio::task::block_in_place(|| r.d.stop());
    assert!(
        volumes.lock().unwrap().contains_key("late-vol"),
        "the daemon stopped before the create it had answered ended"
    );
    let log = r.d.log_text();
    assert!(
        log.contains("done after the caller's deadline") && log.contains("late-vol"),
        "{}",
        r.log_tail(30)
    );
}

/// Any call whose caller gives up (here DeleteVolume past its deadline: the caller hears
/// its own timeout) still runs to its end: the backend's delete is not cut off half-way,
/// and the retry answers OK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_38_a_call_the_caller_gave_up_on_still_ends() {
    let Some((r, volumes)) = slow_rig("slow-delete").await else {
        return;
    };
    r.create_ok("gone-vol", Some(GIB), Access::Mount).await;
    assert!(volumes.lock().unwrap().contains_key("gone-vol"));
    let mut req = tonic::Request::new(csi::DeleteVolumeRequest {
        volume_id: "gone-vol".into(),
        ..Default::default()
    });
    req.set_timeout(DEADLINE);
    let gave_up = t(r.ctrl().delete_volume(req)).await;
    assert!(gave_up.is_err(), "the delete answered within its deadline");
    let deadline = Instant::now() + Duration::from_secs(30);
    while volumes.lock().unwrap().contains_key("gone-vol") {
        assert!(
            Instant::now() < deadline,
            "the delete the caller gave up on was cut off"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let again = loop {
        let answer = t(r.ctrl().delete_volume(csi::DeleteVolumeRequest {
            volume_id: "gone-vol".into(),
            ..Default::default()
        }))
        .await;
        match answer {
            Err(st) if st.code() == Code::Aborted && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => break other,
        }
    };
    ok(again, "the retry of the delete");
}
