//! What can be checked without a kernel target: the publish answers, the protocols served,
//! the instance id. The configfs set-up itself runs against LIO and nvmet in the VM lane
//! (`volbridge_two_hosts_over_iscsi_and_nvme`, tests/vm/two_hosts.rs).

use super::*;

fn exports(cfg: ExportConfig) -> Exports {
    Exports {
        cfg,
        instance: "1a2b3c4d".into(),
    }
}

const ID: &str = "0123456789abcdef0123456789abcdef";

#[test]
fn iscsi_answer_names_the_target_portals_and_wwid() {
    let e = exports(ExportConfig {
        iscsi_portals: vec![
            "10.0.0.1:3260".parse().unwrap(),
            "10.0.1.1:3261".parse().unwrap(),
        ],
        chap: Some(Chap {
            user: "u".into(),
            password: "secret-pw".into(),
        }),
        ..ExportConfig::default()
    });
    let info = e.publish_info(ID, PROTOCOL_ISCSI);
    assert_eq!(info.access_protocol, "iscsi");
    assert_eq!(info.serial_number, "60014050123456789abcdef012345678");
    assert_eq!(
        info.target_names,
        ["iqn.2026-12.io.volbridge:1a2b3c4d.0123456789abcdef0123456789abcdef"]
    );
    // The default port is left out, as arrays answer (§4.5); another is kept.
    assert_eq!(info.discovery_ips, ["10.0.0.1", "10.0.1.1:3261"]);
    assert_eq!(info.lun_id, Some(0));
    assert_eq!(info.chap_user.as_deref(), Some("u"));
    assert!(!format!("{:?}", e.cfg).contains("secret-pw"));
}

#[test]
fn nvme_answer_names_the_subsystem_and_nguid() {
    let e = exports(ExportConfig {
        nvme_addresses: vec!["10.0.0.1:4421".parse().unwrap()],
        ..ExportConfig::default()
    });
    let info = e.publish_info(ID, PROTOCOL_NVME);
    assert_eq!(info.access_protocol, "nvmetcp");
    assert_eq!(info.serial_number, ID);
    assert_eq!(
        info.target_names,
        ["nqn.2026-12.io.volbridge:1a2b3c4d.0123456789abcdef0123456789abcdef"]
    );
    assert_eq!(info.discovery_ips, ["10.0.0.1"]);
    assert_eq!(info.target_port.as_deref(), Some("4421"));
    assert_eq!(info.lun_id, Some(1));
}

#[test]
fn protocols_are_local_and_what_is_configured() {
    assert_eq!(exports(ExportConfig::default()).protocols(), ["local"]);
    let e = exports(ExportConfig {
        nvme_addresses: vec!["10.0.0.1:4420".parse().unwrap()],
        ..ExportConfig::default()
    });
    assert_eq!(e.protocols(), ["local", "nvmetcp"]);
    assert!(!e.serves("iscsi"));
}

#[test]
fn nothing_configured_touches_nothing() {
    // configfs is never looked at: a path that cannot exist proves it.
    let e = exports(ExportConfig {
        configfs: PathBuf::from("/nonexistent/configfs"),
        ..ExportConfig::default()
    });
    assert!(e.sync(ID, None).is_ok());
    assert!(e.reconcile(&[]).is_empty());
}

#[test]
fn instance_id_is_made_once() {
    let dir = std::env::temp_dir().join(format!("vb-export-{}", crate::ids::new_id()));
    std::fs::create_dir_all(&dir).unwrap();
    let a = instance_id(&dir).unwrap();
    assert_eq!(a.len(), 8);
    assert_eq!(instance_id(&dir).unwrap(), a);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A host record stored before initiator names were checked may hold a path; it never
/// reaches the export (whose ACL and host directories are named by it).
#[test]
fn an_initiator_that_is_not_a_name_is_left_out_of_the_export() {
    use crate::model::{Change, Tables, VolumeRec};
    use volbridge_proto::csp::{Config, Host};
    let mut state = State::new(Tables::default());
    let mut config = Config::new();
    config.insert("access_protocol".into(), "iscsi".into());
    state.apply(Change::PutHost(Host {
        uuid: Some("h1".into()),
        iqns: vec![
            "iqn.1993-08.org.debian:01:good".into(),
            "../../../../etc/cron.d/x".into(),
            "/etc/passwd".into(),
        ],
        ..Host::default()
    }));
    state.apply(Change::PutVolume(VolumeRec {
        id: ID.into(),
        name: "v".into(),
        size: 1 << 20,
        description: None,
        base_snapshot_id: String::new(),
        parent_volume_id: String::new(),
        volume_group_id: String::new(),
        config,
        hosts: ["h1".to_owned()].into(),
        creation_time: 1,
    }));
    let w = wanted(&state, ID, PathBuf::from("/data/volumes/v.img")).expect("published");
    assert_eq!(
        w.initiators.into_iter().collect::<Vec<_>>(),
        ["iqn.1993-08.org.debian:01:good"]
    );
}

#[test]
fn chap_pairs_lio_cannot_carry_are_refused_at_start_without_the_secret() {
    let chap = |user: &str, password: &str| Chap {
        user: user.into(),
        password: password.into(),
    };
    assert_eq!(chap("vb", "s3cr3t-s3cr3t").check(), Ok(()));
    let long = "p".repeat(MAX_CHAP_BYTES + 1);
    let e = chap("vb", &long).check().unwrap_err();
    assert!(e.contains("--chap-password must be 1 to 255 bytes") && !e.contains(&long));
    let e = chap("vb", "pw\nnode.startup = automatic")
        .check()
        .unwrap_err();
    assert!(
        e.contains("--chap-password") && !e.contains("automatic"),
        "{e}"
    );
    let e = chap("", "pw").check().unwrap_err();
    assert!(e.contains("--chap-user"), "{e}");
    let dir = std::env::temp_dir().join(format!("vb-chap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = ExportConfig {
        iscsi_portals: vec!["127.0.0.1:3260".parse().unwrap()],
        chap: Some(chap("vb", &long)),
        configfs: dir.join("configfs"),
        ..ExportConfig::default()
    };
    let e = Exports::open(cfg, &dir).err().expect("refused");
    assert!(!e.to_string().contains(&long), "{e}");
    assert!(
        !dir.join("export-id").exists(),
        "nothing made before the refusal"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A configfs write that fails names the attribute, not the CHAP value written.
#[test]
fn a_failed_chap_write_does_not_show_the_value() {
    let dir = std::env::temp_dir().join(format!("vb-chap-write-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("password")).unwrap();
    let e = configfs::set_secret(&dir.join("password"), "s3cr3t-chap-pw").unwrap_err();
    assert!(!e.to_string().contains("s3cr3t"), "{e}");
    assert!(e.to_string().contains("password"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
