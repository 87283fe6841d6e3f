use super::super::tests_support::*;
use super::*;
use crate::target::{Serial, TargetScope};
use crate::FakeHost;

const NQN: &str = "nqn.2020-07.com.example:group1";
const NGUID: &str = "6d0b6a7e-4f2c-11ee-8001-00a098d7c5b1";
const SERIAL: &str = "6D0B6A7E4F2C11EE800100A098D7C5B1";

fn ctx(scope: &str) -> NvmeTcpTarget {
    NvmeTcpTarget {
        serial: Serial::new(SERIAL).unwrap(),
        nqns: vec![NQN.into()],
        addresses: vec!["10.0.0.9".into(), "10.0.1.9".into()],
        port: 4420,
        namespace: 12,
        scope: match scope {
            "volume" => TargetScope::Volume,
            _ => TargetScope::Group,
        },
    }
}

fn transport(wait_ms: u64) -> NvmeTransport {
    NvmeTransport::new(Duration::from_millis(wait_ms))
}

fn subsystem(host: &FakeHost, subsys: &str, nqn: &str) {
    host.add_file(
        format!("{SYS_SUBSYSTEMS}/{subsys}/subsysnqn"),
        &format!("{nqn}\n"),
    );
    host.add_file(
        format!("{SYS_SUBSYSTEMS}/{subsys}/model"),
        "Example Array\n",
    );
}

fn controller(host: &FakeHost, subsys: &str, ctrl: &str, traddr: &str) {
    let dir = format!("{SYS_SUBSYSTEMS}/{subsys}/{ctrl}");
    host.add_file(format!("{dir}/transport"), "tcp\n");
    host.add_file(
        format!("{dir}/address"),
        &format!("traddr={traddr},trsvcid=4420,src_addr=10.0.0.2\n"),
    );
    host.add_file(format!("{dir}/state"), "live\n");
    host.add_file(format!("{dir}/subsysnqn"), "ignored\n");
}

/// A namespace head as native multipath shows it (`dir` relative to the subsystem).
fn namespace(host: &FakeHost, subsys: &str, rel: &str, nguid: &str, minor: u32) {
    let dir = format!("{SYS_SUBSYSTEMS}/{subsys}/{rel}");
    let name = rel.rsplit('/').next().unwrap_or(rel);
    host.add_file(format!("{dir}/nguid"), &format!("{nguid}\n"));
    host.add_file(format!("{dir}/uuid"), &format!("{nguid}\n"));
    host.add_file(
        format!("{dir}/wwid"),
        &format!("eui.{}\n", nguid.replace('-', "")),
    );
    host.add_file(format!("{dir}/nsid"), "12\n");
    host.add_file(format!("/sys/block/{name}/dev"), &format!("259:{minor}\n"));
    host.add_dir(format!("/sys/block/{name}/holders"));
}

#[test]
fn identifiers_and_names() {
    assert_eq!(
        id_key("eui.6d0b6a7e4f2c11ee800100a098d7c5b1"),
        SERIAL.to_ascii_lowercase()
    );
    assert_eq!(id_key(NGUID), SERIAL.to_ascii_lowercase());
    assert_eq!(
        id_key("uuid.0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0\n"),
        "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    );
    assert_eq!(id_key("00 25 38 5b 71 b0 7e 2f\n"), "0025385b71b07e2f");
    assert!(is_controller("nvme0") && is_controller("nvme12"));
    assert!(!is_controller("nvme0n1") && !is_controller("nvme-subsys0"));
    assert!(is_namespace("nvme0n1") && is_namespace("nvme10n23"));
    assert!(!is_namespace("nvme0c1n1") && !is_namespace("nvme0") && !is_namespace("nvme0n"));
    assert_eq!(
        parse_address("traddr=10.0.0.9,trsvcid=4420,src_addr=10.0.0.2\n"),
        ("10.0.0.9".into(), "4420".into())
    );
    assert_eq!(
        parse_address("traddr=fd00::9,trsvcid=4420"),
        ("fd00::9".into(), "4420".into())
    );
}

#[test]
fn connect_to_every_address_then_find_the_namespace_by_nguid() {
    let host = FakeHost::new();
    host.install(NVME);
    let dev = appear_after(
        &host,
        "-a 10.0.1.9",
        |h| {
            subsystem(h, "nvme-subsys0", NQN);
            controller(h, "nvme-subsys0", "nvme0", "10.0.0.9");
            controller(h, "nvme-subsys0", "nvme1", "10.0.1.9");
            namespace(h, "nvme-subsys0", "nvme0n1", NGUID, 0);
        },
        || transport(5000).attach(&host, &ctx("group")).unwrap(),
    );
    assert_eq!(dev, PathBuf::from("/dev/nvme0n1"));
    assert_eq!(
        host.commands(),
        [
            format!("nvme connect -t tcp -n {NQN} -a 10.0.0.9 -s 4420"),
            format!("nvme connect -t tcp -n {NQN} -a 10.0.1.9 -s 4420"),
        ]
    );
    // Repeat: every path is up and the namespace is there; nothing runs.
    host.clear_calls();
    assert_eq!(transport(5000).attach(&host, &ctx("group")).unwrap(), dev);
    assert!(host.commands().is_empty());
}

#[test]
fn already_connected_is_success_and_port_defaults_to_4420() {
    let host = FakeHost::new();
    host.script(
        NVME,
        &["connect"],
        CmdOutput::failed(1, "already connected\n"),
    );
    subsystem(&host, "nvme-subsys3", NQN);
    controller(&host, "nvme-subsys3", "nvme3", "10.0.0.9");
    // The default port (an empty `targetPort` parses as 4420).
    let c = ctx("group");
    appear_after(
        &host,
        "connect",
        |h| namespace(h, "nvme-subsys3", "nvme3n2", NGUID, 5),
        || transport(5000).attach(&host, &c).unwrap(),
    );
    // Only the address without a live controller is connected.
    assert_eq!(
        host.commands(),
        [format!("nvme connect -t tcp -n {NQN} -a 10.0.1.9 -s 4420")]
    );

    let host = FakeHost::new();
    host.script(
        NVME,
        &["connect"],
        CmdOutput::failed(
            114,
            "Failed to write to /dev/nvme-fabrics: Operation already in progress\n",
        ),
    );
    subsystem(&host, "nvme-subsys0", NQN);
    namespace(&host, "nvme-subsys0", "nvme0n1", NGUID, 0);
    let mut c = ctx("group");
    c.port = 8009;
    c.addresses.truncate(1);
    transport(5000).attach(&host, &c).unwrap();
    assert_eq!(
        host.commands(),
        [format!("nvme connect -t tcp -n {NQN} -a 10.0.0.9 -s 8009")]
    );
}

#[test]
fn namespace_is_matched_by_uuid_eui_and_nqn() {
    let host = FakeHost::new();
    subsystem(&host, "nvme-subsys0", NQN);
    controller(&host, "nvme-subsys0", "nvme0", "10.0.0.9");
    let ns = format!("{SYS_SUBSYSTEMS}/nvme-subsys0/nvme0n4");
    host.add_file(
        format!("{ns}/wwid"),
        "uuid.0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0\n",
    );
    host.add_file(
        format!("{ns}/uuid"),
        "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0\n",
    );
    host.add_file(format!("{ns}/nguid"), &format!("{NGUID}\n"));
    host.add_file(format!("{ns}/eui"), "00 25 38 5b 71 b0 7e 2f\n");
    // The same identifiers behind another subsystem must not be taken.
    subsystem(&host, "nvme-subsys1", "nqn.2020-07.com.example:other");
    namespace(
        &host,
        "nvme-subsys1",
        "nvme1n1",
        "11111111-2222-3333-4444-555555555555",
        1,
    );
    let t = transport(20);
    for serial in [
        SERIAL,
        "eui.6d0b6a7e4f2c11ee800100a098d7c5b1",
        "0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0",
        "0025385B71B07E2F",
    ] {
        let mut c = ctx("group");
        c.serial = Serial::new(serial).unwrap();
        assert_eq!(
            t.find(&host, &c).unwrap(),
            Some(PathBuf::from("/dev/nvme0n4")),
            "{serial}"
        );
    }
    let mut c = ctx("group");
    c.serial = Serial::new("111111112222333344445555555555555").unwrap();
    assert_eq!(t.find(&host, &c).unwrap(), None);
    c.serial = Serial::new("11111111222233334444555555555555").unwrap();
    assert_eq!(t.find(&host, &c).unwrap(), None);
    c.nqns = vec!["nqn.2020-07.com.example:other".into()];
    assert_eq!(
        t.find(&host, &c).unwrap(),
        Some(PathBuf::from("/dev/nvme1n1"))
    );
}

#[test]
fn live_paths_without_the_namespace_are_rescanned() {
    let host = FakeHost::new();
    host.install(NVME);
    subsystem(&host, "nvme-subsys0", NQN);
    controller(&host, "nvme-subsys0", "nvme0", "10.0.0.9");
    controller(&host, "nvme-subsys0", "nvme1", "10.0.1.9");
    namespace(
        &host,
        "nvme-subsys0",
        "nvme0n1",
        "11111111-2222-3333-4444-555555555555",
        1,
    );
    let dev = appear_after(
        &host,
        "ns-rescan /dev/nvme1",
        |h| namespace(h, "nvme-subsys0", "nvme0n2", NGUID, 2),
        || transport(5000).attach(&host, &ctx("group")).unwrap(),
    );
    assert_eq!(dev, PathBuf::from("/dev/nvme0n2"));
    assert_eq!(
        host.commands(),
        ["nvme ns-rescan /dev/nvme0", "nvme ns-rescan /dev/nvme1"]
    );
}

#[test]
fn dm_multipath_over_non_native_paths() {
    let host = FakeHost::new();
    host.install(NVME);
    host.install("multipath");
    subsystem(&host, "nvme-subsys0", NQN);
    controller(&host, "nvme-subsys0", "nvme0", "10.0.0.9");
    controller(&host, "nvme-subsys0", "nvme1", "10.0.1.9");
    namespace(&host, "nvme-subsys0", "nvme0/nvme0n1", NGUID, 0);
    namespace(&host, "nvme-subsys0", "nvme1/nvme1n1", NGUID, 1);
    let wwid = format!("eui.{}", SERIAL.to_ascii_lowercase());
    mpath_map(&host, "dm-3", "mpathc", &wwid, &["nvme0n1", "nvme1n1"]);
    let t = transport(20);
    assert_eq!(
        t.attach(&host, &ctx("volume")).unwrap(),
        PathBuf::from("/dev/mapper/mpathc")
    );
    assert!(host.commands().is_empty());
    t.detach(&host, &ctx("volume")).unwrap();
    assert_eq!(
        host.commands(),
        [
            "multipath -f mpathc".to_owned(),
            format!("nvme disconnect -n {NQN}")
        ]
    );
}

#[test]
fn disconnect_only_when_no_other_namespace_uses_a_group_subsystem() {
    let connected = || {
        let host = FakeHost::new();
        host.script(
            NVME,
            &["disconnect"],
            CmdOutput::ok(format!("NQN:{NQN} disconnected 2 controller(s)\n")),
        );
        subsystem(&host, "nvme-subsys0", NQN);
        controller(&host, "nvme-subsys0", "nvme0", "10.0.0.9");
        controller(&host, "nvme-subsys0", "nvme1", "10.0.1.9");
        namespace(&host, "nvme-subsys0", "nvme0n1", NGUID, 0);
        host
    };
    let host = connected();
    namespace(
        &host,
        "nvme-subsys0",
        "nvme0n2",
        "11111111-2222-3333-4444-555555555555",
        2,
    );
    transport(20).detach(&host, &ctx("group")).unwrap();
    assert!(host.commands().is_empty(), "{:?}", host.commands());

    // Volume scope: the subsystem is the volume's own.
    transport(20).detach(&host, &ctx("volume")).unwrap();
    assert_eq!(host.commands(), [format!("nvme disconnect -n {NQN}")]);

    let host = connected();
    transport(20).detach(&host, &ctx("group")).unwrap();
    assert_eq!(host.commands(), [format!("nvme disconnect -n {NQN}")]);

    // Nothing connected any more: nothing to do, nvme-cli not even needed.
    let host = FakeHost::new();
    transport(20).detach(&host, &ctx("volume")).unwrap();
    assert!(host.calls().is_empty());
}

#[test]
fn detach_refuses_a_mounted_namespace() {
    let host = FakeHost::new();
    host.install(NVME);
    subsystem(&host, "nvme-subsys0", NQN);
    controller(&host, "nvme-subsys0", "nvme0", "10.0.0.9");
    namespace(&host, "nvme-subsys0", "nvme0n1", NGUID, 0);
    host.add_mount("/dev/nvme0n1", "/srv/data", "ext4", "259:0");
    let e = transport(20).detach(&host, &ctx("volume")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::FailedPrecondition);
    assert!(
        e.message
            .contains("/dev/nvme0n1 is still mounted at /srv/data"),
        "{}",
        e.message
    );
    assert!(host.commands().is_empty());
}

#[test]
fn connect_failure_reports_nvme_reason_and_module_hint() {
    let host = FakeHost::new();
    host.script(
        NVME,
        &["connect"],
        CmdOutput::failed(
            1,
            "could not add new controller: failed to write to nvme-fabrics device\n",
        ),
    );
    let e = transport(20).attach(&host, &ctx("group")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Internal);
    assert!(
        e.message.contains(&format!(
            "NVMe/TCP connect to {NQN} at 10.0.1.9:4420 failed"
        )) && e.message.contains("failed to write to nvme-fabrics device")
            && e.message.contains("modprobe nvme-tcp"),
        "{}",
        e.message
    );

    host.add_dir(TCP_MODULE);
    let e = transport(20).attach(&host, &ctx("group")).unwrap_err();
    assert!(!e.message.contains("modprobe"), "{}", e.message);
}

#[test]
fn missing_nvme_cli_and_missing_namespace() {
    let host = FakeHost::new();
    let e = transport(20).attach(&host, &ctx("group")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::FailedPrecondition);
    assert!(
        e.message
            .contains("nvme not found on this node: install nvme-cli"),
        "{}",
        e.message
    );

    host.install(NVME);
    let e = transport(20).attach(&host, &ctx("group")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::DeadlineExceeded);
    assert!(
        e.message.contains(&format!(
            "no device with serial {SERIAL} appeared within 20ms"
        )) && e.message.contains("namespace 12"),
        "{}",
        e.message
    );
}

#[test]
fn id_ns_size_is_blocks_of_the_format_in_use() {
    let json =
        r#"{"nsze":2097152,"flbas":1,"lbafs":[{"ms":0,"ds":9,"rp":0},{"ms":0,"ds":12,"rp":0}]}"#;
    assert_eq!(id_ns_bytes(json), Some(2097152 << 12));
    assert_eq!(
        id_ns_bytes(r#"{"nsze":8,"flbas":0,"lbafs":[{"ds":9}]}"#),
        Some(4096)
    );
    assert_eq!(id_ns_bytes("not json"), None);
    assert_eq!(
        id_ns_bytes(r#"{"nsze":8,"flbas":3,"lbafs":[{"ds":9}]}"#),
        None
    );
}

/// A connected namespace the kernel shows with `shown` bytes, of which the array's
/// Identify Namespace reports 2 GiB.
fn grown_namespace(shown: u64) -> FakeHost {
    let host = FakeHost::new();
    subsystem(&host, "nvme-subsys0", NQN);
    controller(&host, "nvme-subsys0", "nvme0", "10.0.0.9");
    namespace(&host, "nvme-subsys0", "nvme0n1", NGUID, 0);
    host.add_block_device("/dev/nvme0n1", 259, 0, shown);
    host.script(
        NVME,
        &["id-ns"],
        CmdOutput::ok(r#"{"nsze":4194304,"flbas":0,"lbafs":[{"ds":9}]}"#),
    );
    host
}

/// A grown namespace the kernel has not caught up with: the controllers are asked to
/// rescan, and a size that never comes is UNAVAILABLE naming both sizes; one already shown
/// needs nothing.
#[test]
fn refresh_size_waits_for_what_the_array_reports() {
    // The array reports 2 GiB; the kernel still shows 1 GiB.
    let host = grown_namespace(1 << 30);
    let e = transport(50)
        .refresh_size(&host, &ctx("volume"), Path::new("/dev/nvme0n1"))
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unavailable);
    assert!(
        e.message.contains("1073741824") && e.message.contains("2147483648"),
        "{}",
        e.message
    );
    assert_eq!(
        host.commands(),
        [
            "nvme id-ns /dev/nvme0n1 --output-format=json",
            "nvme ns-rescan /dev/nvme0"
        ]
    );

    let host = grown_namespace(2 << 30);
    transport(50)
        .refresh_size(&host, &ctx("volume"), Path::new("/dev/nvme0n1"))
        .unwrap();
    assert_eq!(
        host.commands(),
        ["nvme id-ns /dev/nvme0n1 --output-format=json"]
    );
}
