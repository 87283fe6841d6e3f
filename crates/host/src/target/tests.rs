use super::*;

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn parse(pairs: &[(&str, &str)]) -> Result<PublishedVolume> {
    PublishedVolume::parse("db1", &map(pairs))
}

/// The error names the volume and the key, and says how to fix it.
fn refused(pairs: &[(&str, &str)], key: &str, says: &str) -> Error {
    let e = parse(pairs).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e:?}");
    assert_eq!(e.field.as_deref(), Some(key), "{e:?}");
    assert_eq!(e.object, Some(Object::Volume("db1".into())));
    assert!(e.message.contains("volume 'db1'"), "{}", e.message);
    assert!(e.message.contains(says), "{}", e.message);
    assert!(e.message.contains("publish the volume"), "{}", e.message);
    e
}

#[test]
fn local_takes_the_file_and_read_only() {
    let p = parse(&[
        ("accessProtocol", "LOCAL"),
        ("serialNumber", "abc"),
        ("localPath", "/d/volumes/abc.img"),
        ("readOnly", " True "),
        ("lunId", "0"),
        ("fsType", "xfs"),
        ("fsOwner", "10:20"),
        ("fsMode", "0750"),
        ("fsCreateOptions", "-m 0"),
    ])
    .unwrap();
    assert_eq!(
        p.target,
        AttachTarget::Local(LocalTarget {
            file: "/d/volumes/abc.img".into(),
            read_only: true,
        })
    );
    assert_eq!(
        p.filesystem,
        FsSettings {
            fs_type: "xfs".into(),
            owner: "10:20".into(),
            mode: "0750".into(),
            create_options: "-m 0".into(),
        }
    );
    let p = parse(&[("accessProtocol", "local"), ("localPath", "/f")]).unwrap();
    assert_eq!(
        p.target,
        AttachTarget::Local(LocalTarget {
            file: "/f".into(),
            read_only: false
        })
    );
    assert_eq!(p.filesystem, FsSettings::default());
    refused(
        &[("accessProtocol", "local")],
        "localPath",
        "localPath is missing",
    );
    refused(
        &[("accessProtocol", "local"), ("localPath", " ")],
        "localPath",
        "localPath is missing",
    );
}

#[test]
fn iscsi_takes_targets_portals_chap_scope_and_peers() {
    let peers = r#"{"PeerArrayDetails":[
        {"lun_id": 2, "target_names": ["iqn.p"], "discovery_ips": "10.1.0.1"},
        {"target_names": ["iqn.q"], "discovery_ips": [], "chap_user": "pu", "chap_password": "pp"}
    ]}"#;
    let p = parse(&[
        ("accessProtocol", "iscsi"),
        ("serialNumber", " 600ABC "),
        ("targetNames", "iqn.a,,iqn.b"),
        ("discoveryIps", "10.0.0.1, 10.0.0.2"),
        ("targetScope", "Volume"),
        ("lunId", "7"),
        ("chapUser", "u"),
        ("chapPassword", "chap-secret"),
        ("secondaryArrayDetailsKey", peers),
    ])
    .unwrap();
    let AttachTarget::Iscsi(t) = &p.target else {
        panic!("{:?}", p.target)
    };
    let host_chap = Some(Chap {
        user: "u".into(),
        password: "chap-secret".into(),
    });
    assert_eq!(t.serial.as_str(), "600ABC");
    assert_eq!(t.lun, 7);
    assert_eq!(t.scope, TargetScope::Volume);
    assert_eq!(
        t.primary,
        IscsiArray {
            iqns: vec!["iqn.a".into(), "iqn.b".into()],
            portals: vec!["10.0.0.1".into(), "10.0.0.2".into()],
            chap: host_chap.clone(),
        }
    );
    assert_eq!(
        t.peers,
        [
            IscsiArray {
                iqns: vec!["iqn.p".into()],
                portals: vec!["10.1.0.1".into()],
                chap: host_chap,
            },
            IscsiArray {
                iqns: vec!["iqn.q".into()],
                portals: vec![],
                chap: Some(Chap {
                    user: "pu".into(),
                    password: "pp".into()
                }),
            },
        ]
    );
    let shown = format!("{p:?}");
    assert!(
        !shown.contains("chap-secret") && !shown.contains("\"pp\""),
        "{shown}"
    );
    assert!(shown.contains("\"u\""), "{shown}");

    // The lenient parts: no CHAP, no discovery address, no scope, no LUN, no peers.
    let p = parse(&[
        ("accessProtocol", "iscsi"),
        ("serialNumber", "600ABC"),
        ("targetNames", "iqn.a"),
    ])
    .unwrap();
    let AttachTarget::Iscsi(t) = p.target else {
        panic!()
    };
    assert_eq!(t.scope, TargetScope::Group);
    assert_eq!(t.lun, 0);
    assert!(t.primary.chap.is_none() && t.primary.portals.is_empty() && t.peers.is_empty());
}

#[test]
fn iscsi_needs_a_serial_and_a_target() {
    let base = [
        ("accessProtocol", "iscsi"),
        ("serialNumber", "600ABC"),
        ("targetNames", "iqn.a"),
    ];
    refused(&base[..2], "targetNames", "targetNames is missing");
    refused(
        &[base[0], base[1], ("targetNames", " , ")],
        "targetNames",
        "iSCSI targets",
    );
    refused(
        &[base[0], ("serialNumber", "  "), base[2]],
        "serialNumber",
        "serialNumber is missing",
    );
    refused(
        &[
            base[0],
            base[1],
            base[2],
            ("secondaryArrayDetailsKey", "{nope"),
        ],
        "secondaryArrayDetailsKey",
        "not the JSON of the peer arrays",
    );
}

#[test]
fn nvme_takes_nqns_addresses_and_port() {
    let p = parse(&[
        ("accessProtocol", "nvmetcp"),
        ("serialNumber", "eui.1"),
        ("targetNames", "nqn.x"),
        ("discoveryIps", "10.0.0.9,10.0.1.9"),
        ("lunId", "12"),
        ("targetScope", "group"),
    ])
    .unwrap();
    assert_eq!(
        p.target,
        AttachTarget::NvmeTcp(NvmeTcpTarget {
            serial: Serial::new("eui.1").unwrap(),
            nqns: vec!["nqn.x".into()],
            addresses: vec!["10.0.0.9".into(), "10.0.1.9".into()],
            port: 4420,
            namespace: 12,
            scope: TargetScope::Group,
        })
    );
    let with = |extra: (&'static str, &'static str)| {
        let mut m = vec![
            ("accessProtocol", "nvmetcp"),
            ("serialNumber", "eui.1"),
            ("targetNames", "nqn.x"),
            ("discoveryIps", "10.0.0.9"),
        ];
        m.retain(|(k, _)| *k != extra.0);
        m.push(extra);
        m
    };
    let AttachTarget::NvmeTcp(t) = parse(&with(("targetPort", " 8009 "))).unwrap().target else {
        panic!()
    };
    assert_eq!(t.port, 8009);
    refused(
        &with(("targetPort", "http")),
        "targetPort",
        "'http' is not a TCP port",
    );
    refused(&with(("targetPort", "0")), "targetPort", "not a TCP port");
    refused(
        &with(("targetPort", "70000")),
        "targetPort",
        "not a TCP port",
    );
    refused(&with(("targetNames", "")), "targetNames", "NQN");
    refused(
        &with(("discoveryIps", "")),
        "discoveryIps",
        "NVMe/TCP addresses",
    );
    refused(&with(("serialNumber", "")), "serialNumber", "found by");
}

#[test]
fn fc_takes_the_wwid_and_lun() {
    let p = parse(&[
        ("accessProtocol", "fc"),
        ("serialNumber", "624A9370"),
        ("lunId", "4"),
        ("targetNames", ""),
        ("discoveryIps", ""),
    ])
    .unwrap();
    assert_eq!(
        p.target,
        AttachTarget::Fc(FcTarget {
            serial: Serial::new("624A9370").unwrap(),
            lun: 4,
        })
    );
    refused(
        &[("accessProtocol", "fc")],
        "serialNumber",
        "serialNumber is missing",
    );
}

#[test]
fn a_bad_lun_is_refused() {
    for lun in ["-1", "x", "4294967296"] {
        let e = refused(
            &[
                ("accessProtocol", "fc"),
                ("serialNumber", "624A9370"),
                ("lunId", lun),
            ],
            "lunId",
            "is not a LUN number",
        );
        assert!(e.message.contains(&format!("'{lun}'")), "{}", e.message);
    }
}

#[test]
fn an_unknown_or_missing_protocol_is_refused() {
    let e = parse(&[("accessProtocol", "nfs"), ("exportIP", "10.0.0.1")]).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unimplemented);
    assert_eq!(e.object, Some(Object::Volume("db1".into())));
    assert!(
        e.message.contains("'nfs' of volume 'db1' is not supported")
            && e.message.contains("local, iscsi, nvmetcp and fc"),
        "{}",
        e.message
    );
    refused(&[("serialNumber", "abc")], "accessProtocol", "is missing");
    refused(&[], "accessProtocol", "is missing");
}

#[test]
fn a_serial_is_never_empty() {
    assert_eq!(Serial::new(" ab\n").unwrap().as_str(), "ab");
    let e = Serial::new(" ").unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert_eq!(e.field.as_deref(), Some("serialNumber"));
}

/// What the CSP sends becomes iscsiadm and nvme-cli arguments, an open-iscsi node record
/// and the kernel's fabrics option line: a name that is not one, an address with a line
/// break, a CHAP value with a control character are refused, the secret never shown.
#[test]
fn names_addresses_and_chap_that_would_inject_are_refused() {
    let iscsi = |extra: &[(&'static str, &'static str)]| {
        let mut pairs = vec![
            ("accessProtocol", "iscsi"),
            ("serialNumber", "6001405abc"),
            ("targetNames", "iqn.2026-12.io.volbridge:a.b"),
            ("discoveryIps", "10.0.0.9"),
        ];
        pairs.extend_from_slice(extra);
        pairs
    };
    refused(
        &iscsi(&[("targetNames", "../../etc/iscsi")]),
        "targetNames",
        "is not an iSCSI target name (IQN)",
    );
    refused(
        &iscsi(&[("discoveryIps", "10.0.0.9\nnode.startup = automatic")]),
        "discoveryIps",
        "is not an address",
    );
    let e = refused(
        &iscsi(&[
            ("chapUser", "u"),
            ("chapPassword", "pw\nnode.session.auth.username = evil"),
        ]),
        "chapUser",
        "holds a control character",
    );
    assert!(!e.message.contains("evil"), "{}", e.message);
    let e = refused(
        &iscsi(&[(
            "secondaryArrayDetailsKey",
            r#"{"PeerArrayDetails":[{"target_names":["iqn.p"],"chap_user":"u","chap_password":987654321}]}"#,
        )]),
        "secondaryArrayDetailsKey",
        "at line 1",
    );
    assert!(!e.message.contains("987654321"), "{}", e.message);
    refused(
        &iscsi(&[(
            "secondaryArrayDetailsKey",
            r#"{"PeerArrayDetails":[{"target_names":["/etc/x"],"discovery_ips":"10.1.0.1"}]}"#,
        )]),
        "secondaryArrayDetailsKey",
        "is not an iSCSI target name",
    );
    let nvme = |nqn: &'static str, addr: &'static str| {
        vec![
            ("accessProtocol", "nvmetcp"),
            ("serialNumber", "0123456789abcdef"),
            ("targetNames", nqn),
            ("discoveryIps", addr),
        ]
    };
    refused(
        &nvme("iqn.2026-12.x:y", "10.0.0.9"),
        "targetNames",
        "is not an NVMe subsystem NQN",
    );
    refused(
        &nvme("nqn.2026-12.x:y", "10.0.0.9\nhostnqn=nqn.evil"),
        "discoveryIps",
        "is not an address",
    );
    assert!(parse(&nvme("nqn.2026-12.x:y", "[fe80::1%eth0]:4420")).is_ok());
}
