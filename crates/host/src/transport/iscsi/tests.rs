use super::super::tests_support::*;
use super::*;
use crate::target::{Chap, Serial};
use crate::{Call, FakeHost};

const IQN: &str = "iqn.2000-05.com.example:tgt1";
const WWID: &str = "naa.600a0980383041334a3f4a6b4a6c4b42";
const SERIAL: &str = "600A0980383041334A3F4A6B4A6C4B42";

fn ctx(scope: &str) -> IscsiTarget {
    IscsiTarget {
        serial: Serial::new(SERIAL).unwrap(),
        lun: 3,
        scope: match scope {
            "volume" => TargetScope::Volume,
            _ => TargetScope::Group,
        },
        primary: IscsiArray {
            iqns: vec![IQN.into()],
            portals: vec!["10.0.0.5".into()],
            chap: None,
        },
        peers: Vec::new(),
    }
}

fn transport(wait_ms: u64) -> IscsiTransport {
    IscsiTransport::new(Duration::from_millis(wait_ms))
}

fn no_sessions(host: &FakeHost) {
    host.script(
        ISCSIADM,
        &["-m", "session"],
        CmdOutput::failed(21, "iscsiadm: No active sessions.\n"),
    );
}

fn discovery(host: &FakeHost, portal: &str, stdout: &str) {
    host.script(
        ISCSIADM,
        &["-m", "discovery", "-t", "sendtargets", "-p", portal],
        CmdOutput::ok(stdout),
    );
}

/// A host with no session yet, whose array's discovery answers the one target.
fn one_target_host() -> FakeHost {
    let host = FakeHost::new();
    no_sessions(&host);
    discovery(
        &host,
        "10.0.0.5:3260",
        "10.0.0.5:3260,1 iqn.2000-05.com.example:tgt1\n",
    );
    host
}

fn login_ok(iqn: &str, ip: &str) -> CmdOutput {
    CmdOutput::ok(format!(
        "Logging in to [iface: default, target: {iqn}, portal: {ip},3260]\n\
             Login to [iface: default, target: {iqn}, portal: {ip},3260] successful.\n"
    ))
}

fn commands(host: &FakeHost) -> Vec<String> {
    host.commands()
}

#[test]
fn parses_real_iscsiadm_output() {
    let sessions = parse_sessions(
        "tcp: [1] 10.0.0.5:3260,1 iqn.2000-05.com.example:tgt1 (non-flash)\n\
             tcp: [12] [fd00::5]:3260,2 iqn.2000-05.com.example:tgt2 (non-flash)\n\
             iser: [3] 10.1.0.5:3260,1 iqn.2000-05.com.example:tgt3\n\
             garbage line\n",
    );
    assert_eq!(
        sessions,
        [
            Session {
                sid: 1,
                portal: "10.0.0.5:3260".into(),
                iqn: "iqn.2000-05.com.example:tgt1".into()
            },
            Session {
                sid: 12,
                portal: "[fd00::5]:3260".into(),
                iqn: "iqn.2000-05.com.example:tgt2".into()
            },
            Session {
                sid: 3,
                portal: "10.1.0.5:3260".into(),
                iqn: "iqn.2000-05.com.example:tgt3".into()
            },
        ]
    );
    assert_eq!(
        parse_discovery(
            "10.0.0.5:3260,1 iqn.2000-05.com.example:tgt1\n\
                 [fd00::5]:3260,1 iqn.2000-05.com.example:tgt1\n\
                 iscsiadm: some warning, ignored\n\
                 10.0.1.5:3260,2 iqn.2016-09.com.openebs.jiva:store1\n"
        ),
        [
            (
                "10.0.0.5:3260".into(),
                "iqn.2000-05.com.example:tgt1".into()
            ),
            (
                "[fd00::5]:3260".into(),
                "iqn.2000-05.com.example:tgt1".into()
            ),
            (
                "10.0.1.5:3260".into(),
                "iqn.2016-09.com.openebs.jiva:store1".into()
            ),
        ]
    );
    assert_eq!(portal_of("10.0.0.5"), "10.0.0.5:3260");
    assert_eq!(portal_of("fd00::5"), "[fd00::5]:3260");
    assert_eq!(portal_of("[fd00::5]"), "[fd00::5]:3260");
    assert_eq!(portal_of("array.example:3261"), "array.example:3261");
}

#[test]
fn fresh_login_runs_discovery_node_setup_login_then_waits() {
    let host = FakeHost::new();
    no_sessions(&host);
    discovery(
        &host,
        "10.0.0.5:3260",
        "10.0.0.5:3260,1 iqn.2000-05.com.example:tgt1\n\
             10.0.1.5:3260,2 iqn.2000-05.com.example:tgt1\n\
             10.0.0.5:3260,1 iqn.2000-05.com.example:other-volume\n",
    );
    host.script(
        ISCSIADM,
        &["-m", "node", "-T", IQN, "-p", "10.0.0.5:3260", "--login"],
        login_ok(IQN, "10.0.0.5"),
    );
    let dev = appear_after(
        &host,
        "10.0.1.5:3260 --login",
        |h| {
            scsi_disk(h, "sdc", WWID, "8:32");
            scsi_disk(h, "sdd", WWID, "8:48");
        },
        || transport(5000).attach(&host, &ctx("group")).unwrap(),
    );
    assert_eq!(dev, PathBuf::from("/dev/sdc"));
    let node = |portal: &str, rest: &str| format!("iscsiadm -m node -T {IQN} -p {portal} {rest}");
    let mut expected = vec![
        "iscsiadm -m session".to_owned(),
        "iscsiadm -m discovery -t sendtargets -p 10.0.0.5:3260 -o nonpersistent".to_owned(),
    ];
    // Two paths: a dead one must reach dm-multipath in seconds, not iscsid's 120.
    for portal in ["10.0.0.5:3260", "10.0.1.5:3260"] {
        expected.push(node(portal, "-o new"));
        expected.push(node(portal, "-o update -n node.startup -v manual"));
        expected.push(node(
            portal,
            "-o update -n node.session.timeo.replacement_timeout -v 10",
        ));
        expected.push(node(portal, "--login"));
    }
    assert_eq!(commands(&host), expected);
    assert!(!commands(&host).iter().any(|c| c.contains("other-volume")));
}

#[test]
fn a_single_path_keeps_iscsids_replacement_timeout() {
    let host = one_target_host();
    let dev = appear_after(
        &host,
        "10.0.0.5:3260 --login",
        |h| scsi_disk(h, "sdc", WWID, "8:32"),
        || transport(5000).attach(&host, &ctx("group")).unwrap(),
    );
    assert_eq!(dev, PathBuf::from("/dev/sdc"));
    // Without a second path, queued I/O riding out a network blip is what users want.
    assert!(
        !commands(&host)
            .iter()
            .any(|c| c.contains("replacement_timeout")),
        "{:?}",
        commands(&host)
    );
}

#[test]
fn chap_password_is_passed_but_never_recorded() {
    let host = one_target_host();
    let mut c = ctx("volume");
    c.primary.chap = Some(Chap {
        user: "chapuser".into(),
        password: "s3cret-chap-pw".into(),
    });
    appear_after(
        &host,
        "--login",
        |h| scsi_disk(h, "sdb", WWID, "8:16"),
        || transport(5000).attach(&host, &c).unwrap(),
    );
    let node = |rest: &str| format!("iscsiadm -m node -T {IQN} -p 10.0.0.5:3260 {rest}");
    assert_eq!(
        commands(&host)[2..],
        [
            node("-o new"),
            node("-o update -n node.startup -v manual"),
            node("-o update -n node.session.auth.authmethod -v CHAP"),
            node("-o update -n node.session.auth.username -v chapuser"),
            node("-o update -n node.session.auth.password -v <redacted>"),
            node("--login"),
        ]
    );
    assert!(!format!("{:?}", host.calls()).contains("s3cret-chap-pw"));
}

#[test]
fn already_logged_in_group_target_is_rescanned_not_logged_in_again() {
    let host = FakeHost::new();
    host.script(
        ISCSIADM,
        &["-m", "session"],
        CmdOutput::ok(format!(
            "tcp: [4] 10.0.0.5:3260,1 {IQN} (non-flash)\n\
                 tcp: [5] 10.0.0.9:3260,1 iqn.2000-05.com.example:unrelated (non-flash)\n"
        )),
    );
    host.script(
        ISCSIADM,
        &["-m", "session", "-r"],
        CmdOutput::ok(format!(
            "Rescanning session [sid: 4, target: {IQN}, portal: 10.0.0.5,3260]\n"
        )),
    );
    // Another volume of the same target is already attached.
    scsi_disk(&host, "sdb", "naa.600a0980383041334a3f4a6b4a6c0001", "8:16");
    let dev = appear_after(
        &host,
        "--rescan",
        |h| scsi_disk(h, "sdc", WWID, "8:32"),
        || transport(5000).attach(&host, &ctx("group")).unwrap(),
    );
    assert_eq!(dev, PathBuf::from("/dev/sdc"));
    assert_eq!(
        commands(&host),
        ["iscsiadm -m session", "iscsiadm -m session -r 4 --rescan"]
    );

    // Idempotent repeat: the device is there, nothing else runs.
    host.clear_calls();
    let again = transport(5000).attach(&host, &ctx("group")).unwrap();
    assert_eq!(again, dev);
    assert_eq!(commands(&host), ["iscsiadm -m session"]);
}

#[test]
fn session_exists_on_login_counts_as_success() {
    let host = one_target_host();
    host.script(
        ISCSIADM,
        &["-m", "node", "-T", IQN, "-p", "10.0.0.5:3260", "--login"],
        CmdOutput::failed(
            15,
            "iscsiadm: default: 1 session requested, but 1 already present.\n\
                 iscsiadm: Could not log into all portals\n",
        ),
    );
    scsi_disk(&host, "sdb", WWID, "8:16");
    assert_eq!(
        transport(5000).attach(&host, &ctx("group")).unwrap(),
        PathBuf::from("/dev/sdb")
    );
}

#[test]
fn losing_the_race_for_iscsiadms_lock_dir_is_tried_again() {
    let host = one_target_host();
    let new_node = ["-m", "node", "-T", IQN, "-p", "10.0.0.5:3260", "-o", "new"];
    host.script(
        ISCSIADM,
        &new_node,
        CmdOutput::failed(6, "iscsiadm: Could not open /run/lock/iscsi: File exists\n"),
    );
    host.script(ISCSIADM, &new_node, CmdOutput::ok("New iSCSI node added\n"));
    scsi_disk(&host, "sdb", WWID, "8:16");
    assert_eq!(
        transport(5000).attach(&host, &ctx("group")).unwrap(),
        PathBuf::from("/dev/sdb")
    );
    let runs = commands(&host);
    let made = format!("iscsiadm -m node -T {IQN} -p 10.0.0.5:3260 -o new");
    assert_eq!(runs.iter().filter(|c| **c == made).count(), 2, "{runs:?}");

    // Any other database failure is reported, not retried.
    let host = one_target_host();
    host.script(
        ISCSIADM,
        &new_node,
        CmdOutput::failed(
            6,
            "iscsiadm: Could not open /etc/iscsi/nodes: Permission denied\n",
        ),
    );
    let e = transport(5000).attach(&host, &ctx("group")).unwrap_err();
    assert!(e.message.contains("Permission denied"), "{}", e.message);
    let runs = commands(&host);
    assert_eq!(runs.iter().filter(|c| **c == made).count(), 1, "{runs:?}");
}

#[test]
fn multipath_map_is_returned_when_present() {
    let host = FakeHost::new();
    host.script(
            ISCSIADM,
            &["-m", "session"],
            CmdOutput::ok(format!(
                "tcp: [1] 10.0.0.5:3260,1 {IQN} (non-flash)\ntcp: [2] 10.0.1.5:3260,2 {IQN} (non-flash)\n"
            )),
        );
    scsi_disk(&host, "sdc", WWID, "8:32");
    scsi_disk(&host, "sdd", WWID, "8:48");
    mpath_map(
        &host,
        "dm-0",
        "mpatha",
        "3600a0980383041334a3f4a6b4a6c4b42",
        &["sdc", "sdd"],
    );
    let t = transport(5000);
    assert_eq!(
        t.attach(&host, &ctx("group")).unwrap(),
        PathBuf::from("/dev/mapper/mpatha")
    );
    assert_eq!(
        t.find(&host, &ctx("group")).unwrap(),
        Some(PathBuf::from("/dev/mapper/mpatha"))
    );
}

#[test]
fn device_that_never_appears_is_a_deadline_error() {
    let host = one_target_host();
    let started = std::time::Instant::now();
    let e = transport(20).attach(&host, &ctx("volume")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::DeadlineExceeded);
    assert!(
        e.message.contains(&format!(
            "no device with serial {SERIAL} appeared within 20ms"
        )) && e.message.contains(IQN)
            && e.message.contains("LUN 3"),
        "{}",
        e.message
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn missing_iscsiadm_says_what_to_install() {
    let host = FakeHost::new();
    let e = transport(20).attach(&host, &ctx("group")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::FailedPrecondition);
    assert!(e.message.contains("iscsiadm not found"), "{}", e.message);
    assert!(e.message.contains("install open-iscsi"), "{}", e.message);
    assert!(host.commands().is_empty());
}

#[test]
fn login_failure_reports_iscsiadm_reason() {
    let host = one_target_host();
    host.script(
            ISCSIADM,
            &["-m", "node", "-T", IQN, "-p", "10.0.0.5:3260", "--login"],
            CmdOutput::failed(
                24,
                format!(
                    "iscsiadm: Could not login to [iface: default, target: {IQN}, portal: 10.0.0.5,3260].\n\
                     iscsiadm: initiator reported error (24 - iSCSI login failed due to authorization failure)\n\
                     iscsiadm: Could not log into all portals\n"
                ),
            ),
        );
    let e = transport(20).attach(&host, &ctx("group")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::FailedPrecondition);
    assert!(
        e.message
            .contains(&format!("iSCSI login to {IQN} at 10.0.0.5:3260 failed"))
            && e.message
                .contains("login failed due to authorization failure")
            && e.message.contains("exit status 24")
            && e.message.contains("CHAP"),
        "{}",
        e.message
    );
}

#[test]
fn discovery_failure_reports_iscsiadm_reason() {
    let host = FakeHost::new();
    no_sessions(&host);
    host.script(
            ISCSIADM,
            &["-m", "discovery"],
            CmdOutput::failed(
                4,
                "iscsiadm: cannot make connection to 10.0.0.5: Connection refused\n\
                 iscsiadm: connection login retries (reopen_max) 5 exceeded\n\
                 iscsiadm: Could not perform SendTargets discovery: encountered connection failure\n",
            ),
        );
    let e = transport(20).attach(&host, &ctx("group")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unavailable);
    assert!(
        e.message
            .contains("iSCSI discovery at 10.0.0.5:3260 failed")
            && e.message
                .contains("Could not perform SendTargets discovery"),
        "{}",
        e.message
    );

    // Discovery works but the array does not offer the target to this initiator.
    let host = FakeHost::new();
    no_sessions(&host);
    discovery(
        &host,
        "10.0.0.5:3260",
        "10.0.0.5:3260,1 iqn.2000-05.com.example:someone-else\n",
    );
    let e = transport(20).attach(&host, &ctx("group")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::FailedPrecondition);
    assert!(e.message.contains("not offered"), "{}", e.message);
    assert!(!host.commands().iter().any(|c| c.contains("--login")));
}

#[test]
fn peer_array_paths_are_best_effort() {
    let host = one_target_host();
    host.script(
        ISCSIADM,
        &[
            "-m",
            "discovery",
            "-t",
            "sendtargets",
            "-p",
            "10.9.0.5:3260",
        ],
        CmdOutput::failed(
            4,
            "iscsiadm: cannot make connection to 10.9.0.5: No route to host\n",
        ),
    );
    let mut c = ctx("group");
    c.peers = vec![IscsiArray {
        iqns: vec!["iqn.2000-05.com.example:peer1".into()],
        portals: vec!["10.9.0.5".into()],
        chap: None,
    }];
    let dev = appear_after(
        &host,
        "--login",
        |h| scsi_disk(h, "sdb", WWID, "8:16"),
        || transport(5000).attach(&host, &c).unwrap(),
    );
    assert_eq!(dev, PathBuf::from("/dev/sdb"));
    assert!(commands(&host).contains(
        &"iscsiadm -m discovery -t sendtargets -p 10.9.0.5:3260 -o nonpersistent".to_owned()
    ));
}

fn attached(host: &FakeHost, sessions: &str) {
    host.install("multipath");
    host.script(ISCSIADM, &["-m", "session"], CmdOutput::ok(sessions));
    scsi_disk(host, "sdc", WWID, "8:32");
    iscsi_lun(host, 4, 6, 3, Some("sdc"));
    iscsi_lun(host, 4, 6, 0, None);
}

#[test]
fn detach_of_group_target_with_another_lun_keeps_the_session() {
    let host = FakeHost::new();
    attached(
        &host,
        &format!("tcp: [4] 10.0.0.5:3260,1 {IQN} (non-flash)\n"),
    );
    scsi_disk(&host, "sdd", "naa.600a0980383041334a3f4a6b4a6c0002", "8:48");
    iscsi_lun(&host, 4, 6, 7, Some("sdd"));
    transport(20).detach(&host, &ctx("group")).unwrap();
    assert_eq!(
        host.calls(),
        [
            write("/sys/block/sdc/device/delete", "1"),
            run("iscsiadm -m session"),
        ]
    );
}

#[test]
fn detach_of_last_lun_of_group_target_logs_out() {
    let host = FakeHost::new();
    attached(
        &host,
        &format!("tcp: [4] 10.0.0.5:3260,1 {IQN} (non-flash)\n"),
    );
    transport(20).detach(&host, &ctx("")).unwrap();
    let node = |rest: &str| format!("iscsiadm -m node -T {IQN} -p 10.0.0.5:3260 {rest}");
    assert_eq!(
        host.calls(),
        [
            write("/sys/block/sdc/device/delete", "1"),
            run("iscsiadm -m session"),
            run(&node("--logout")),
            run(&node("-o delete")),
        ]
    );
}

#[test]
fn detach_of_volume_target_flushes_map_deletes_paths_and_logs_out() {
    let host = FakeHost::new();
    attached(
        &host,
        &format!(
            "tcp: [4] 10.0.0.5:3260,1 {IQN} (non-flash)\n\
                 tcp: [5] 10.0.1.5:3260,2 {IQN} (non-flash)\n\
                 tcp: [6] 10.0.0.5:3260,1 iqn.2000-05.com.example:unrelated (non-flash)\n"
        ),
    );
    scsi_disk(&host, "sdd", WWID, "8:48");
    iscsi_lun(&host, 5, 7, 3, Some("sdd"));
    mpath_map(
        &host,
        "dm-1",
        "mpathb",
        "3600a0980383041334a3f4a6b4a6c4b42",
        &["sdc", "sdd"],
    );
    // Volume scope: logged out even though the session shows another LUN.
    iscsi_lun(&host, 4, 6, 9, Some("sde"));
    transport(20).detach(&host, &ctx("volume")).unwrap();
    let node = |portal: &str, rest: &str| format!("iscsiadm -m node -T {IQN} -p {portal} {rest}");
    assert_eq!(
        host.calls(),
        [
            run("multipath -f mpathb"),
            write("/sys/block/sdc/device/delete", "1"),
            write("/sys/block/sdd/device/delete", "1"),
            run("iscsiadm -m session"),
            run(&node("10.0.0.5:3260", "--logout")),
            run(&node("10.0.0.5:3260", "-o delete")),
            run(&node("10.0.1.5:3260", "--logout")),
            run(&node("10.0.1.5:3260", "-o delete")),
        ]
    );

    // Repeat after the kernel removed the disks: nothing left but the logouts, which
    // iscsiadm answers with "no matching sessions".
    let host = FakeHost::new();
    host.script(
        ISCSIADM,
        &["-m", "session"],
        CmdOutput::failed(21, "iscsiadm: No active sessions.\n"),
    );
    transport(20).detach(&host, &ctx("volume")).unwrap();
    assert_eq!(commands(&host), ["iscsiadm -m session"]);
}

#[test]
fn detach_refuses_a_mounted_device() {
    let host = FakeHost::new();
    attached(
        &host,
        &format!("tcp: [4] 10.0.0.5:3260,1 {IQN} (non-flash)\n"),
    );
    host.add_mount("/dev/sdc", "/mnt/data", "xfs", "8:32");
    let e = transport(20).detach(&host, &ctx("volume")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::FailedPrecondition);
    assert!(
        e.message.contains("still mounted at /mnt/data"),
        "{}",
        e.message
    );
    assert!(host.calls().is_empty(), "{:?}", host.calls());
}

#[test]
fn logout_failure_reports_reason() {
    let host = FakeHost::new();
    attached(
        &host,
        &format!("tcp: [4] 10.0.0.5:3260,1 {IQN} (non-flash)\n"),
    );
    host.script(
            ISCSIADM,
            &["-m", "node", "-T", IQN, "-p", "10.0.0.5:3260", "--logout"],
            CmdOutput::failed(
                10,
                "iscsiadm: Could not logout of [sid: 4, target: iqn.2000-05.com.example:tgt1, portal: 10.0.0.5,3260].\n\
                 iscsiadm: initiator reported error (10 - iSCSI logout failed)\n",
            ),
        );
    let e = transport(20).detach(&host, &ctx("volume")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Internal);
    assert!(e.message.contains("iSCSI logout failed"), "{}", e.message);
    assert!(!host.commands().iter().any(|c| c.contains("-o delete")));
}

#[test]
fn find_never_reuses_a_device_name() {
    let host = FakeHost::new();
    let t = transport(20);
    assert_eq!(t.find(&host, &ctx("group")).unwrap(), None);
    scsi_disk(&host, "sdf", WWID, "8:80");
    assert_eq!(
        t.find(&host, &ctx("group")).unwrap(),
        Some(PathBuf::from("/dev/sdf"))
    );
    // Without a serial any disk would do: no target can be made without one.
    let e = Serial::new(" ").unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(!host.calls().iter().any(|c| matches!(c, Call::Run { .. })));
}
