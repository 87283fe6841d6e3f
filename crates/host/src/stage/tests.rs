use super::*;
use crate::target::PublishedVolume;
use crate::transport::TransportConfig;
use crate::{Call, CmdOutput, FakeHost};

fn ctx() -> PublishedVolume {
    let wire = [
        ("accessProtocol", "local"),
        ("serialNumber", "v1"),
        ("localPath", "/data/volumes/v1.img"),
        ("fsOwner", "1000:1000"),
        ("fsMode", "0750"),
    ];
    let map = wire
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    PublishedVolume::parse("v1", &map).unwrap()
}

fn config() -> TransportConfig {
    TransportConfig {
        local_roots: vec!["/data".into()],
        ..TransportConfig::default()
    }
}

fn host() -> FakeHost {
    let h = FakeHost::new();
    h.add_file("/data/volumes/v1.img", "blank");
    h.install("mkfs.ext4").install("e2fsck");
    h.add_dir("/staging");
    h
}

fn mount_access() -> Access {
    Access::Mount {
        fs_type: String::new(),
        mount_options: vec!["noatime".into()],
    }
}

fn stage_with(h: &FakeHost, c: &PublishedVolume, access: &Access, ro: bool) -> Result<Staged> {
    stage(
        h,
        &StageRequest {
            attacher: c.target.attacher(&config()).as_ref(),
            filesystem: &c.filesystem,
            staging_path: Path::new("/staging/v1"),
            access,
            read_only: ro,
            tool_timeout: Duration::from_secs(5),
            redo_format: false,
            before_format: &|| Ok(()),
        },
    )
}

#[test]
fn blank_device_is_formatted_mounted_and_owned_once() {
    let h = host();
    h.script("blkid", &[], CmdOutput::failed(2, ""));
    let c = ctx();
    let s = stage_with(&h, &c, &mount_access(), false).unwrap();
    assert!(s.formatted);
    assert_eq!(s.fs_type.as_deref(), Some("ext4"));
    assert!(h.calls().contains(&Call::Chown {
        path: "/staging/v1".into(),
        uid: 1000,
        gid: 1000
    }));
    assert!(h.calls().contains(&Call::Chmod {
        path: "/staging/v1".into(),
        mode: 0o750
    }));
    // Again: already mounted, nothing is probed, formatted or mounted twice.
    h.clear_calls();
    let again = stage_with(&h, &c, &mount_access(), false).unwrap();
    assert!(!again.formatted);
    assert!(h.commands().is_empty(), "{:?}", h.commands());
    assert!(!h.calls().iter().any(|c| matches!(c, Call::Mount(_))));
}

#[test]
fn an_all_zero_backing_file_skips_the_probe() {
    let h = host();
    h.add_bytes("/data/volumes/v1.img", &[0u8; 64]);
    let s = stage_with(&h, &ctx(), &mount_access(), false).unwrap();
    assert!(s.formatted);
    assert!(
        !h.commands().iter().any(|c| c.starts_with("blkid")),
        "{:?}",
        h.commands()
    );
}

#[test]
fn a_filesystem_is_never_reformatted() {
    let h = host();
    h.script("blkid", &[], CmdOutput::ok("TYPE=xfs\nUSAGE=filesystem\n"));
    let c = ctx();
    let access = Access::Mount {
        fs_type: "ext4".into(),
        mount_options: vec![],
    };
    let e = stage_with(&h, &c, &access, false).unwrap_err();
    assert!(e.message.contains("never reformats"));
    assert!(!h.commands().iter().any(|c| c.starts_with("mkfs")));
    // The device this call attached is detached again.
    assert!(h.loops().unwrap().is_empty());
    // The same filesystem mounts without formatting.
    h.clear_calls();
    let s = stage_with(&h, &c, &mount_access(), false).unwrap();
    assert!(!s.formatted);
    assert_eq!(s.fs_type.as_deref(), Some("xfs"));
    assert!(!h.calls().iter().any(|c| matches!(c, Call::Chown { .. })));
}

#[test]
fn failed_mkfs_leaves_nothing_attached() {
    let h = host();
    h.script("blkid", &[], CmdOutput::failed(2, ""));
    h.script(
        "mkfs.ext4",
        &[],
        CmdOutput::failed(1, "mkfs.ext4: No space"),
    );
    let e = stage_with(&h, &ctx(), &mount_access(), false).unwrap_err();
    assert!(e.message.contains("No space"));
    assert!(h.loops().unwrap().is_empty());
    assert!(h.mounts().unwrap().is_empty());
}

#[test]
fn staging_path_used_by_another_mount_is_refused() {
    let h = host();
    h.add_mount("/dev/sdz", "/staging/v1", "ext4", "8:0");
    let e = stage_with(&h, &ctx(), &mount_access(), false).unwrap_err();
    assert!(e.message.contains("already used by another mount"));
    assert!(h.loops().unwrap().is_empty());
}

#[test]
fn blank_read_only_volume_is_not_formatted() {
    let h = host();
    h.script("blkid", &[], CmdOutput::failed(2, ""));
    let e = stage_with(&h, &ctx(), &mount_access(), true).unwrap_err();
    assert!(e.message.contains("read-only"));
}

#[test]
fn publish_binds_and_remounts_read_only_and_is_idempotent() {
    let h = host();
    h.script("blkid", &[], CmdOutput::failed(2, ""));
    stage_with(&h, &ctx(), &mount_access(), false).unwrap();
    let req = PublishRequest {
        source: Path::new("/staging/v1"),
        target: Path::new("/pods/a/mount"),
        block: false,
        read_only: true,
        mount_options: &[],
    };
    publish(&h, &req).unwrap();
    publish(&h, &req).unwrap();
    let binds: Vec<_> = h
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Mount(m) if m.target == Path::new("/pods/a/mount") => Some(m.flags),
            _ => None,
        })
        .collect();
    assert_eq!(binds.len(), 2, "one bind, one read-only remount: {binds:?}");
    assert!(binds[0].bind && !binds[0].remount);
    assert!(binds[1].bind && binds[1].remount && binds[1].read_only);
    let e = publish(
        &h,
        &PublishRequest {
            read_only: false,
            ..req
        },
    )
    .unwrap_err();
    assert_eq!(e.kind, volbridge_base::ErrorKind::AlreadyExists);
    unpublish(&h, Path::new("/pods/a/mount"), true).unwrap();
    unpublish(&h, Path::new("/pods/a/mount"), true).unwrap();
    assert!(!h.file_exists(Path::new("/pods/a/mount")));
}

#[test]
fn publish_before_stage_is_refused() {
    let h = host();
    let e = publish(
        &h,
        &PublishRequest {
            source: Path::new("/staging/v1"),
            target: Path::new("/pods/a/mount"),
            block: false,
            read_only: false,
            mount_options: &[],
        },
    )
    .unwrap_err();
    assert!(e.message.contains("stage the volume first"));
}

#[test]
fn owner_and_mode_parsing() {
    assert_eq!(parse_owner("10:20").unwrap(), (10, 20));
    assert!(parse_owner("root:root").is_err());
    assert!(parse_owner("10").is_err());
    assert_eq!(parse_mode("755").unwrap(), 0o755);
    assert_eq!(parse_mode("2775").unwrap(), 0o2775);
    assert!(parse_mode("999").is_err());
    assert!(parse_mode("12345").is_err());
    assert!(parse_mode("").is_err());
}

#[test]
fn stats_report_a_vanished_device() {
    let h = host();
    h.script("blkid", &[], CmdOutput::failed(2, ""));
    let c = ctx();
    stage_with(&h, &c, &mount_access(), false).unwrap();
    let config = config();
    let t = c.target.attacher(&config);
    let s = stats(&h, t.as_ref(), Path::new("/staging/v1"), false).unwrap();
    assert!(s.healthy && s.usage.is_some());
    h.loop_detach(Path::new("/dev/loop0")).unwrap();
    let s = stats(&h, t.as_ref(), Path::new("/staging/v1"), false).unwrap();
    assert!(!s.healthy);
    assert!(s.message.contains("gone"));
}

/// A mount option that names another device (xfs `logdev=`, ext4 `journal_path=`, btrfs
/// `device=`) is refused before anything is attached, whichever front end sent it.
#[test]
fn mount_options_naming_another_device_are_refused_before_attaching() {
    let h = host();
    for option in [
        "logdev=/dev/sdb",
        "noatime,rtdev=/dev/sdc",
        "JOURNAL_PATH=/dev/sdd",
        "device=/dev/sde",
    ] {
        let access = Access::Mount {
            fs_type: String::new(),
            mount_options: vec![option.into()],
        };
        let e = stage_with(&h, &ctx(), &access, false).unwrap_err();
        assert_eq!(e.kind, volbridge_base::error::ErrorKind::InvalidArgument);
        assert!(e.message.contains("names another device"), "{}", e.message);
    }
    assert!(h.calls().is_empty(), "{:?}", h.calls());
}
