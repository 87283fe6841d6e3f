//! The CSI SnapshotMetadata service (changed-block tracking) against a real `volbridge
//! serve`: a block volume is attached through ControllerPublish, NodeStage and NodePublish,
//! known 64 KiB blocks are written through the published device (flushed), a snapshot is
//! taken, more blocks are written (some over the first ones, some new), a second snapshot
//! is taken, and GetMetadataAllocated and GetMetadataDelta must answer exactly those
//! ranges, over several stream messages when `max_results` is small.
//!
//! Every scenario is its own test and runs alone (`cargo test --test csi_conformance
//! snapshot_metadata::`; this was `tests/csi_snapshot_metadata.rs`). The pool modes are
//! those of the suite: the default (`auto`: an xfs image pool on this ext4 host; ranges
//! compared by extents) and `dir` (copies on ext4; ranges compared by bytes). Needs root
//! and the tools, like every test that uses the machine; without them it fails (skips only
//! with VOLBRIDGE_ALLOW_SKIP=1).

use crate::common;
use crate::csi_support::*;
use csi::snapshot_metadata_client::SnapshotMetadataClient;
use tonic::{Code, Status};

const K64: i64 = 64 << 10;
const SIZE: i64 = 64 * MIB;

/// Blocks of 64 KiB as (first block, count, seed).
const FIRST: &[(i64, i64, u8)] = &[(0, 1, 1), (16, 4, 2), (100, 1, 3), (1000, 2, 4)];
/// Over 17 and 1001, after 16-19 (20), and new places (500, the last block).
const SECOND: &[(i64, i64, u8)] = &[
    (17, 1, 9),
    (1001, 1, 9),
    (20, 1, 9),
    (500, 1, 9),
    (1023, 1, 9),
];

/// What the first snapshot holds, the second, and what changed in between: (block, count).
const ALLOCATED_ONE: &[(i64, i64)] = &[(0, 1), (16, 4), (100, 1), (1000, 2)];
const ALLOCATED_TWO: &[(i64, i64)] = &[(0, 1), (16, 5), (100, 1), (500, 1), (1000, 2), (1023, 1)];
const DELTA: &[(i64, i64)] = &[(17, 1), (20, 1), (500, 1), (1001, 1), (1023, 1)];

fn bytes(blocks: &[(i64, i64)]) -> Vec<(i64, i64)> {
    blocks.iter().map(|&(b, n)| (b * K64, n * K64)).collect()
}

/// Pool flags of the daemon: the default image pool, or `dir`.
#[derive(Clone, Copy)]
enum Pool {
    Default,
    Dir,
}

impl Pool {
    fn extra(self) -> &'static [&'static str] {
        match self {
            Pool::Default => &[],
            Pool::Dir => &["--csp-pool", "dir"],
        }
    }
}

/// A daemon with one block volume holding two snapshots, `one` before `two`.
struct Fixture {
    r: Rig,
    one: String,
    two: String,
}

fn write_blocks(device: &str, blocks: &[(i64, i64, u8)]) {
    for &(block, count, seed) in blocks {
        let data = pattern((count * K64) as usize, seed);
        write_at(device, (block * K64) as u64, &data)
            .unwrap_or_else(|e| panic!("writing block {block} to {device}: {e}"));
    }
}

async fn fixture(tag: &str, pool: Pool) -> Option<Fixture> {
    let r = Rig::start_with(
        tag,
        RigOptions {
            extra: pool.extra(),
            ..Default::default()
        },
    )
    .await?;
    let v = r.create_ok("data", Some(SIZE), Access::Block).await;
    let a = r.attach(&v, Access::Block, "pod-a").await;
    assert!(
        is_block_device(&a.target),
        "{} is no block device",
        a.target
    );
    write_blocks(&a.target, FIRST);
    let one = r.snapshot_ok("one", &v.volume_id).await.snapshot_id;
    r.wait_snapshot_ready(&one).await;
    write_blocks(&a.target, SECOND);
    let two = r.snapshot_ok("two", &v.volume_id).await.snapshot_id;
    r.wait_snapshot_ready(&two).await;
    r.detach(&a).await;
    Some(Fixture { r, one, two })
}

fn client(r: &Rig) -> SnapshotMetadataClient<tonic::transport::Channel> {
    SnapshotMetadataClient::new(r.ch.clone())
}

/// One stream message as the test sees it: its ranges, after checking the fields every
/// message must carry.
fn ranges_of(
    kind: i32,
    capacity: i64,
    want_capacity: i64,
    blocks: &[csi::BlockMetadata],
    what: &str,
) -> Vec<(i64, i64)> {
    assert_eq!(
        kind,
        csi::BlockMetadataType::VariableLength as i32,
        "{what}: block_metadata_type"
    );
    assert_eq!(capacity, want_capacity, "{what}: volume_capacity_bytes");
    blocks
        .iter()
        .map(|b| (b.byte_offset, b.size_bytes))
        .collect()
}

/// Every message of a GetMetadataAllocated stream, as lists of (offset, size).
async fn allocated(
    r: &Rig,
    snapshot_id: &str,
    starting_offset: i64,
    max_results: i32,
) -> Result<Vec<Vec<(i64, i64)>>, Status> {
    allocated_of(r, snapshot_id, starting_offset, max_results, SIZE).await
}

/// The same, for a volume of `capacity` bytes.
async fn allocated_of(
    r: &Rig,
    snapshot_id: &str,
    starting_offset: i64,
    max_results: i32,
    capacity: i64,
) -> Result<Vec<Vec<(i64, i64)>>, Status> {
    let req = csi::GetMetadataAllocatedRequest {
        snapshot_id: snapshot_id.to_owned(),
        starting_offset,
        max_results,
        ..Default::default()
    };
    let mut s = t(client(r).get_metadata_allocated(req)).await?.into_inner();
    let mut out = Vec::new();
    while let Some(m) = t(s.message()).await? {
        out.push(ranges_of(
            m.block_metadata_type,
            m.volume_capacity_bytes,
            capacity,
            &m.block_metadata,
            "GetMetadataAllocated",
        ));
    }
    Ok(out)
}

/// Every message of a GetMetadataDelta stream.
async fn delta(
    r: &Rig,
    base: &str,
    target: &str,
    starting_offset: i64,
    max_results: i32,
) -> Result<Vec<Vec<(i64, i64)>>, Status> {
    let req = csi::GetMetadataDeltaRequest {
        base_snapshot_id: base.to_owned(),
        target_snapshot_id: target.to_owned(),
        starting_offset,
        max_results,
        ..Default::default()
    };
    let mut s = t(client(r).get_metadata_delta(req)).await?.into_inner();
    let mut out = Vec::new();
    while let Some(m) = t(s.message()).await? {
        out.push(ranges_of(
            m.block_metadata_type,
            m.volume_capacity_bytes,
            SIZE,
            &m.block_metadata,
            "GetMetadataDelta",
        ));
    }
    Ok(out)
}

#[track_caller]
fn messages(got: Result<Vec<Vec<(i64, i64)>>, Status>, what: &str) -> Vec<Vec<(i64, i64)>> {
    got.unwrap_or_else(|s| panic!("{what}: {:?}: {}", s.code(), s.message()))
}

/// The messages concatenated, checked to be in order and never overlapping across messages.
#[track_caller]
fn joined(messages: &[Vec<(i64, i64)>], what: &str) -> Vec<(i64, i64)> {
    let all: Vec<(i64, i64)> = messages.iter().flatten().copied().collect();
    for w in all.windows(2) {
        assert!(
            w[0].0 + w[0].1 <= w[1].0,
            "{what}: ranges out of order or overlapping: {all:?}"
        );
    }
    assert!(
        all.iter().all(|r| r.1 > 0),
        "{what}: an empty range: {all:?}"
    );
    all
}

async fn the_answer_is_exactly_the_written_blocks(tag: &str, pool: Pool) {
    let Some(f) = fixture(tag, pool).await else {
        return;
    };
    let one = messages(allocated(&f.r, &f.one, 0, 0).await, "allocated one");
    assert_eq!(one.len(), 1, "one message when max_results is 0: {one:?}");
    assert_eq!(joined(&one, "allocated one"), bytes(ALLOCATED_ONE));
    let two = messages(allocated(&f.r, &f.two, 0, 0).await, "allocated two");
    assert_eq!(joined(&two, "allocated two"), bytes(ALLOCATED_TWO));
    let changed = messages(delta(&f.r, &f.one, &f.two, 0, 0).await, "delta");
    assert_eq!(joined(&changed, "delta"), bytes(DELTA));
    // Nothing changed between a snapshot and itself.
    let same = messages(delta(&f.r, &f.two, &f.two, 0, 0).await, "delta two two");
    assert_eq!(same, vec![vec![]], "one message, no ranges");
}

#[tokio::test]
async fn allocated_and_delta_are_exactly_the_written_blocks() {
    the_answer_is_exactly_the_written_blocks("meta-exact", Pool::Default).await;
}

#[tokio::test]
async fn allocated_and_delta_are_exactly_the_written_blocks_in_a_dir_pool() {
    the_answer_is_exactly_the_written_blocks("meta-exact-dir", Pool::Dir).await;
}

async fn small_max_results_spreads_the_answer(tag: &str, pool: Pool) {
    let Some(f) = fixture(tag, pool).await else {
        return;
    };
    let two = messages(allocated(&f.r, &f.two, 0, 2).await, "allocated two");
    assert_eq!(two.len(), 3, "6 ranges in messages of 2: {two:?}");
    assert!(two.iter().all(|m| !m.is_empty() && m.len() <= 2), "{two:?}");
    assert_eq!(joined(&two, "allocated two"), bytes(ALLOCATED_TWO));
    let changed = messages(delta(&f.r, &f.one, &f.two, 0, 1).await, "delta");
    assert_eq!(changed.len(), 5, "5 ranges in messages of 1: {changed:?}");
    assert_eq!(joined(&changed, "delta"), bytes(DELTA));
}

#[tokio::test]
async fn a_small_max_results_spreads_the_ranges_over_several_messages() {
    small_max_results_spreads_the_answer("meta-pages", Pool::Default).await;
}

#[tokio::test]
async fn a_small_max_results_spreads_the_ranges_over_several_messages_in_a_dir_pool() {
    small_max_results_spreads_the_answer("meta-pages-dir", Pool::Dir).await;
}

/// A CO resuming an interrupted stream sends the end of the last range it received; one
/// that starts inside a range gets it clipped to begin there.
#[tokio::test]
async fn a_starting_offset_in_the_middle_resumes_there() {
    let Some(f) = fixture("meta-resume", Pool::Default).await else {
        return;
    };
    // Resuming after the first two ranges received.
    let resume = 17 * K64 + K64 * 4;
    let rest = messages(
        allocated(&f.r, &f.two, resume, 0).await,
        "allocated from 21",
    );
    assert_eq!(
        joined(&rest, "allocated from 21"),
        bytes(&ALLOCATED_TWO[2..])
    );
    // Inside 16-20: that range from the offset on, then the rest.
    let inside = 18 * K64 + 4096;
    let got = joined(
        &messages(allocated(&f.r, &f.two, inside, 1).await, "allocated inside"),
        "allocated inside",
    );
    let mut want = vec![(inside, 21 * K64 - inside)];
    want.extend(bytes(&ALLOCATED_TWO[2..]));
    assert_eq!(got, want);
    let got = joined(
        &messages(
            delta(&f.r, &f.one, &f.two, 500 * K64, 2).await,
            "delta from 500",
        ),
        "delta from 500",
    );
    assert_eq!(got, bytes(&DELTA[2..]));
    // At the very end: one message, no ranges.
    let end = messages(
        allocated(&f.r, &f.two, SIZE, 0).await,
        "allocated at the end",
    );
    assert_eq!(end, vec![vec![]]);
}

/// A channel whose HTTP/2 stream window is 1 KiB: a server stream can run only a few dozen
/// small messages ahead of a reader that stops reading.
async fn narrow_channel(r: &Rig) -> tonic::transport::Channel {
    let path = r.endpoint.trim_start_matches("unix://").to_owned();
    tonic::transport::Endpoint::from_static("http://localhost")
        .initial_stream_window_size(Some(1024))
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let io = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(io))
            }
        }))
        .await
        .expect("a channel to the CSI socket")
}

/// The spec's "abort transmission": a snapshot deleted while its ranges stream ends the
/// stream with an error, never with a clean end that would pass for a complete answer.
#[tokio::test]
async fn a_snapshot_deleted_while_streaming_ends_the_stream_with_an_error() {
    let Some(r) = Rig::start("meta-abort").await else {
        return;
    };
    // 256 ranges of 64 KiB (every other block of 32 MiB), streamed one per message: far
    // more than the narrow window lets the server send before the reader reads on.
    let v = r.create_ok("many", Some(SIZE), Access::Block).await;
    let a = r.attach(&v, Access::Block, "pod-a").await;
    let every_other: Vec<(i64, i64, u8)> = (0..256).map(|i| (2 * i, 1, 7)).collect();
    write_blocks(&a.target, &every_other);
    r.detach(&a).await;
    let snap = r.snapshot_ok("many", &v.volume_id).await.snapshot_id;
    r.wait_snapshot_ready(&snap).await;

    let req = csi::GetMetadataAllocatedRequest {
        snapshot_id: snap.clone(),
        max_results: 1,
        ..Default::default()
    };
    let mut s = ok(
        t(SnapshotMetadataClient::new(narrow_channel(&r).await).get_metadata_allocated(req)).await,
        "GetMetadataAllocated",
    );
    let first = t(s.message())
        .await
        .expect("a first message")
        .expect("some");
    r.delete_snapshot_ok(&snap).await;
    let mut got = first.block_metadata;
    let end = loop {
        match t(s.message()).await {
            Ok(Some(m)) => got.extend(m.block_metadata),
            Ok(None) => break None,
            Err(status) => break Some(status),
        }
    };
    let status =
        end.unwrap_or_else(|| panic!("the stream ended cleanly after {} ranges", got.len()));
    assert_eq!(status.code(), Code::NotFound, "{}", status.message());
    assert!(
        got.len() < 256,
        "all {} ranges came after the delete",
        got.len()
    );
    // What came before the error is a true prefix of the answer.
    for (i, b) in got.iter().enumerate() {
        assert_eq!((b.byte_offset, b.size_bytes), (2 * i as i64 * K64, K64));
    }
}

/// Members of a group snapshot have ids `<group>/<CSP id>`: they name snapshots here too.
#[tokio::test]
async fn group_snapshot_members_are_named_by_their_csi_ids() {
    let Some(f) = fixture("meta-group", Pool::Default).await else {
        return;
    };
    let group = ok(
        t(f.r
            .group()
            .create_volume_group_snapshot(csi::CreateVolumeGroupSnapshotRequest {
                name: "nightly".into(),
                source_volume_ids: vec!["data".into()],
                ..Default::default()
            }))
        .await,
        "CreateVolumeGroupSnapshot",
    )
    .group_snapshot
    .expect("a group snapshot");
    let member = &group.snapshots[0].snapshot_id;
    assert!(member.contains('/'), "member id {member}");
    let got = messages(
        allocated(&f.r, member, 0, 0).await,
        "allocated of the member",
    );
    assert_eq!(joined(&got, "member"), bytes(ALLOCATED_TWO));
    let got = messages(delta(&f.r, &f.one, member, 0, 0).await, "delta one..member");
    assert_eq!(joined(&got, "one..member"), bytes(DELTA));
    let got = messages(delta(&f.r, member, &f.two, 0, 0).await, "delta member..two");
    assert_eq!(got, vec![vec![]], "the member holds what two holds");
}

#[tokio::test]
async fn errors_name_the_snapshot_and_the_fix() {
    let Some(f) = fixture("meta-errors", Pool::Default).await else {
        return;
    };
    let r = &f.r;
    let mut c = Checks::new();
    let code = |got: Result<Vec<Vec<(i64, i64)>>, Status>| match got {
        Ok(m) => Err(format!("OK {m:?}")),
        Err(s) => Ok(s),
    };
    let mut expect = |got, want: Code, needle: &str, what: &str| match code(got) {
        Err(ok) => c.check(false, format!("{what}: wanted {want:?}, got {ok}")),
        Ok(s) => {
            c.eq(s.code(), want, &format!("{what}: {}", s.message()));
            c.check(
                s.message().contains(needle),
                format!("{what}: '{}' does not say '{needle}'", s.message()),
            );
        }
    };
    expect(
        allocated(r, "no-such-snapshot", 0, 0).await,
        Code::NotFound,
        "no-such-snapshot",
        "allocated of an unknown snapshot",
    );
    expect(
        delta(r, "no-such-snapshot", &f.two, 0, 0).await,
        Code::NotFound,
        "no-such-snapshot",
        "delta from an unknown base",
    );
    expect(
        delta(r, &f.one, "no-such/0123456789abcdef0123456789abcdef", 0, 0).await,
        Code::NotFound,
        "0123456789abcdef0123456789abcdef",
        "delta to an unknown group member",
    );
    let other = r.create_ok("other", Some(SIZE), Access::Block).await;
    let elsewhere = r
        .snapshot_ok("elsewhere", &other.volume_id)
        .await
        .snapshot_id;
    r.wait_snapshot_ready(&elsewhere).await;
    expect(
        delta(r, &elsewhere, &f.two, 0, 0).await,
        Code::InvalidArgument,
        "not of one volume",
        "delta between snapshots of two volumes",
    );
    expect(
        allocated(r, &f.two, SIZE + 512, 0).await,
        Code::OutOfRange,
        "outside snapshot 'two'",
        "allocated from beyond the capacity",
    );
    expect(
        delta(r, &f.one, &f.two, SIZE + K64, 0).await,
        Code::OutOfRange,
        "outside snapshot 'two'",
        "delta from beyond the capacity",
    );
    expect(
        allocated(r, &f.two, -1, 0).await,
        Code::OutOfRange,
        "negative",
        "allocated from a negative offset",
    );
    expect(
        allocated(r, "", 0, 0).await,
        Code::InvalidArgument,
        "snapshot_id",
        "allocated without a snapshot id",
    );
    expect(
        delta(r, &f.one, "", 0, 0).await,
        Code::InvalidArgument,
        "target_snapshot_id",
        "delta without a target",
    );
    expect(
        delta(r, &f.one, &f.two, 0, -5).await,
        Code::InvalidArgument,
        "max_results",
        "delta with a negative max_results",
    );
    c.finish();
}

/// In a `dir` pool a snapshot is a background copy: until it is complete its ranges are not
/// final, and the calls answer UNAVAILABLE (retry later); once ready they answer.
#[tokio::test]
async fn a_snapshot_still_being_copied_is_unavailable_until_ready() {
    let Some(r) = Rig::start_with(
        "meta-copying",
        RigOptions {
            extra: Pool::Dir.extra(),
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    // Enough data that the copy still runs when the next call comes (as rule 30's tests).
    let v = r.create_ok("big", Some(1024 * MIB), Access::Block).await;
    let a = r.attach(&v, Access::Block, "pod-a").await;
    write_at(&a.target, 0, &pattern(256 << 20, 0x5c)).unwrap();
    r.detach(&a).await;
    let snap = r.snapshot_ok("copying", &v.volume_id).await;
    assert!(
        !snap.ready_to_use,
        "the dir pool's snapshot of 256 MiB was complete at once: no copy to race"
    );
    let e = allocated_of(&r, &snap.snapshot_id, 0, 0, 1024 * MIB)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{}", e.message());
    assert!(
        e.message().contains("still being copied"),
        "{}",
        e.message()
    );
    r.wait_snapshot_ready(&snap.snapshot_id).await;
    let got = messages(
        allocated_of(&r, &snap.snapshot_id, 0, 0, 1024 * MIB).await,
        "allocated",
    );
    let total: i64 = got.iter().flatten().map(|r| r.1).sum();
    assert_eq!(total, 256 << 20, "{got:?}");
}

/// The service is advertised because the embedded CSP lists the extension.
#[tokio::test]
async fn the_plugin_advertises_the_snapshot_metadata_service() {
    let Some(r) = Rig::start("meta-caps").await else {
        return;
    };
    use csi::plugin_capability::{service::Type as S, Type as P};
    let caps = ok(
        t(r.ident()
            .get_plugin_capabilities(csi::GetPluginCapabilitiesRequest {}))
        .await,
        "GetPluginCapabilities",
    );
    let listed = caps.capabilities.iter().any(
        |c| matches!(&c.r#type, Some(P::Service(s)) if s.r#type() == S::SnapshotMetadataService),
    );
    assert!(listed, "SNAPSHOT_METADATA_SERVICE missing: {caps:?}");
}

/// A fake standard CSP for the default backend: logins and a capacity answer without
/// `extensions`; every other path 404. Records the paths asked.
async fn standard_csp() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use axum::http::{Method, Uri};
    use axum::response::IntoResponse;
    let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = calls.clone();
    let app = axum::Router::new().fallback(move |method: Method, uri: Uri| {
        let seen = seen.clone();
        async move {
            let path = uri.path().trim_start_matches("/containers/v1/").to_owned();
            seen.lock().unwrap().push(format!("{method} {path}"));
            let (status, body) = match (method.as_str(), path.as_str()) {
                ("POST", "tokens") => (200, r#"{"id":"t","session_token":"s"}"#),
                ("GET", "capacity") => (200, r#"{"total_bytes":1,"free_bytes":1,"used_bytes":0}"#),
                _ => (404, r#"{"errors":[{"code":"Not Found","message":"no"}]}"#),
            };
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                [("content-type", "application/json")],
                body,
            )
                .into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, calls)
}

/// docs/snapshot-metadata.md M2: a default backend whose CSP does not list the extension
/// leaves SNAPSHOT_METADATA_SERVICE out of the plugin capabilities, and a call answers
/// FAILED_PRECONDITION without the CSP ever being asked for ranges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_without_the_extension_leaves_the_service_off() {
    if !common::require_root_and_tools("a_backend_without_the_extension_leaves_the_service_off") {
        return;
    }
    let (port, calls) = standard_csp().await;
    let Some(r) = Rig::start_with(
        "meta-plain",
        RigOptions {
            default_csp: Some(("plain", port, "p4ssword")),
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    use csi::plugin_capability::{service::Type as S, Type as P};
    let caps = ok(
        t(r.ident()
            .get_plugin_capabilities(csi::GetPluginCapabilitiesRequest {}))
        .await,
        "GetPluginCapabilities",
    );
    let services: Vec<S> = caps
        .capabilities
        .iter()
        .filter_map(|c| match &c.r#type {
            Some(P::Service(s)) => Some(s.r#type()),
            _ => None,
        })
        .collect();
    assert!(services.contains(&S::ControllerService), "{services:?}");
    assert!(
        !services.contains(&S::SnapshotMetadataService),
        "advertised without the extension: {services:?}"
    );
    let e = allocated(&r, "nightly", 0, 0).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());
    assert!(
        e.message().contains("does not track changed blocks"),
        "{}",
        e.message()
    );
    let e = delta(&r, "a", "b", 0, 0).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());
    let asked = calls.lock().unwrap().clone();
    assert!(
        asked
            .iter()
            .all(|c| !c.contains("allocated") && !c.contains("changes")),
        "the CSP was asked for ranges: {asked:?}"
    );
}
