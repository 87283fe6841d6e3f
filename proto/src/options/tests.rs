use super::*;

fn docker(pairs: &[(&str, &str)]) -> Result<Options, OptionError> {
    parse(FrontEnd::Docker, pairs.iter().copied())
}

fn flex(pairs: &[(&str, &str)]) -> Result<Options, OptionError> {
    parse(FrontEnd::Flex, pairs.iter().copied())
}

#[test]
fn the_table_is_consistent() {
    for (i, o) in OPTIONS.iter().enumerate() {
        assert!(o.docker || o.flex, "{}", o.name);
        assert!(!o.help.is_empty() && !o.syntax.is_empty() && !o.default.is_empty());
        for later in &OPTIONS[i + 1..] {
            assert!(!o.name.eq_ignore_ascii_case(later.name), "{}", o.name);
        }
    }
    for s in CSP_SETTINGS {
        assert!(OPTIONS.iter().any(|o| o.name == s));
    }
}

#[test]
fn sizes_as_docker_words_them() {
    assert_eq!(size("10Gi"), Ok(10 << 30));
    assert_eq!(
        size("10GB").unwrap_err().0,
        "size=\"10GB\": unknown unit \"GB\"; use bytes or Ki, Mi, Gi, Ti (e.g. size=10Gi)"
    );
    assert_eq!(
        size("1.5Gi").unwrap_err().0,
        "size=\"1.5Gi\" is not a whole number; use bytes or Ki, Mi, Gi, Ti (e.g. size=10Gi)"
    );
    assert_eq!(
        size("10").unwrap_err().0,
        "size=\"10\" is 10 bytes, below the 1Mi minimum; did you mean size=10Gi?"
    );
    assert!(size("99999999999999999999")
        .unwrap_err()
        .0
        .contains("too large"));
}

#[test]
fn every_option() {
    let o = docker(&[
        ("SIZE", "1Gi"),
        ("fstype", "XFS"),
        ("mkfsOptions", "-m crc=1  -i size=512"),
        ("mountOptions", "noatime, discard"),
        ("fsOwner", "999:998"),
        ("fsMode", "0770"),
        ("description", "orders db"),
        ("readOnly", "TRUE"),
        ("backend", "array1"),
        ("thick", "1"),
        ("destroyondelete", "false"),
        ("csp.performancePolicy", "fast"),
    ])
    .unwrap();
    assert_eq!(o.size, Some(1 << 30));
    assert_eq!(o.fs_type.as_deref(), Some("xfs"));
    assert_eq!(o.mkfs_options.as_deref(), Some("-m crc=1 -i size=512"));
    assert_eq!(o.mount_options, ["noatime", "discard"]);
    assert_eq!(o.fs_owner, Some((999, 998)));
    assert_eq!(o.fs_mode, Some(0o770));
    assert!(o.read_only);
    assert_eq!(o.backend.as_deref(), Some("array1"));
    assert_eq!(o.csp["thick"], "true");
    assert_eq!(o.csp["destroyOnDelete"], "false");
    assert_eq!(o.csp["performancePolicy"], "fast");
    assert_eq!(o.given["fsType"], "XFS");
    assert_eq!(o.given["csp.performancePolicy"], "fast");
    let o = flex(&[("autoCreate", "true"), ("volumeName", "v1")]).unwrap();
    assert!(o.auto_create);
    assert_eq!(o.volume_name.as_deref(), Some("v1"));
}

#[test]
fn refusals_name_the_option() {
    for (k, v, says) in [
        (
            "fsType",
            "zfs",
            "fsType=\"zfs\": accepted values are ext4, xfs, btrfs",
        ),
        ("mountOptions", "ro,noatime", "use readOnly=true"),
        ("mountOptions", "ro=1", "is not allowed"),
        ("fsOwner", "root", "accepted values are uid:gid"),
        ("fsMode", "999", "accepted values are octal modes"),
        ("fsMode", "77777", "octal"),
        ("readOnly", "yes", "accepted values are true, false, 1, 0"),
        ("thick", "yes", "thick=\"yes\": accepted values are true"),
        ("mkfsOptions", "-L 'x y'", "no quoting"),
        ("cloneOf", "../x", "cloneOf=\"../x\" is not a volume name"),
        ("fromSnapshot", "a/b", "is not a snapshot name"),
        ("backend", "a/b", "backend=\"a/b\" is not a backend name"),
        ("volbridge.x", "1", "reserved"),
        ("csp.", "1", "a backend setting is csp.<name>"),
        ("csp.a b", "1", "a backend setting is csp.<name>"),
    ] {
        let e = flex(&[(k, v)]).unwrap_err();
        assert!(e.0.contains(says), "{k}={v}: {e}");
    }
    let e = docker(&[("description", &"x".repeat(300))]).unwrap_err();
    assert!(e.0.contains("at most 256 bytes"), "{e}");
    assert_eq!(
        docker(&[("fromSnapshot", "s"), ("cloneOf", "v")])
            .unwrap_err()
            .0,
        "fromSnapshot and cloneOf cannot be combined"
    );
    let e = docker(&[("cloneOf", "v"), ("mkfsOptions", "-m 0")]).unwrap_err();
    assert!(e.0.starts_with("mkfsOptions cannot be combined"), "{e}");
    for pairs in [
        [("fsType", "xfs"), ("FSTYPE", "ext4")],
        [("csp.perfPolicy", "a"), ("CSP.PERFPOLICY", "b")],
    ] {
        let e = docker(&pairs).unwrap_err();
        assert!(e.0.ends_with("are the same option given twice"), "{e}");
    }
}

#[test]
fn unknown_options_are_refused_with_the_known_ones() {
    let e = docker(&[("sise", "1Gi")]).unwrap_err();
    assert_eq!(
        e.0,
        "unknown option \"sise\" (did you mean size?); known: size, fsType, mkfsOptions, \
             mountOptions, fsOwner, fsMode, description, fromSnapshot, cloneOf, readOnly, \
             backend, thick, destroyOnDelete; give a backend's own setting as csp.<name>=<value>"
    );
    let e = docker(&[("thik", "true")]).unwrap_err();
    assert!(
        e.0.starts_with("unknown option \"thik\" (did you mean thick?); "),
        "{e}"
    );
    let e = docker(&[("performancePolicy", "fast")]).unwrap_err();
    assert!(
        e.0.starts_with("unknown option \"performancePolicy\"; known: "),
        "{e}"
    );
    // Flex's own options are unknown to Docker, and listed for Flex.
    let e = docker(&[("autoCreate", "true")]).unwrap_err();
    assert!(!e.0.contains("volumeName"), "{e}");
    let e = flex(&[("autoCreat", "true")]).unwrap_err();
    assert!(e.0.contains("(did you mean autoCreate?)") && e.0.contains("volumeName"));
    let e = docker(&[(&"k".repeat(200), "1")]).unwrap_err();
    assert!(e.0.len() < 300 - "volbridge: invalid option: ".len(), "{e}");
}

#[test]
fn flex_takes_empty_values_as_absent() {
    let o = flex(&[("fsType", ""), ("size", " ")]).unwrap();
    assert_eq!((o.fs_type, o.size), (None, None));
    assert!(docker(&[("size", "")]).is_err());
}

fn cli(pairs: &[(&str, &str)]) -> Result<Options, OptionError> {
    parse(FrontEnd::Cli, pairs.iter().copied())
}

#[test]
fn the_cli_takes_csp_settings_and_points_the_rest_at_its_flags() {
    let o = cli(&[
        ("thick", "1"),
        ("DestroyOnDelete", "false"),
        ("csp.performancePolicy", "fast"),
    ])
    .unwrap();
    assert_eq!(o.csp["thick"], "true");
    assert_eq!(o.csp["destroyOnDelete"], "false");
    assert_eq!(o.csp["performancePolicy"], "fast");
    assert_eq!(
        cli(&[("thik", "true")]).unwrap_err().0,
        "unknown option \"thik\" (did you mean thick?); known: fsType, mkfsOptions, fsOwner, \
         fsMode, thick, destroyOnDelete; give a backend's own setting as csp.<name>=<value>"
    );
    assert_eq!(
        cli(&[("sise", "1Gi")]).unwrap_err().0,
        "unknown option \"sise\" (did you mean size? give it as --size (e.g. --size 10Gi)); \
         known: fsType, mkfsOptions, fsOwner, fsMode, thick, destroyOnDelete; give a \
         backend's own setting as csp.<name>=<value>"
    );
    assert_eq!(
        cli(&[("Size", "1Gi")]).unwrap_err().0,
        "Size is not an -o option of the CLI: give it as --size (e.g. --size 10Gi)"
    );
    // How the first format is made goes to the volume's config, as Docker puts it.
    let o = cli(&[
        ("fstype", "XFS"),
        ("mkfsOptions", "-m reflink=1"),
        ("fsOwner", "1:2"),
        ("fsMode", "0710"),
    ])
    .unwrap();
    let config = o.volume_config();
    assert_eq!(config["fsType"], "xfs");
    assert_eq!(config["fsCreateOptions"], "-m reflink=1");
    assert_eq!(config["fsOwner"], "1:2");
    assert_eq!(config["fsMode"], "0710");
    for key in [
        "mountOptions",
        "readOnly",
        "fromSnapshot",
        "cloneOf",
        "description",
        "backend",
        "autoCreate",
    ] {
        let e = cli(&[(key, "x")]).unwrap_err().0;
        assert!(
            e.starts_with(&format!("{key} is not an -o option of the CLI: ")),
            "{e}"
        );
    }
    assert!(cli(&[("performancePolicy", "fast")])
        .unwrap_err()
        .0
        .contains("csp.<name>=<value>"));
    assert!(cli(&[("thick", "maybe")]).is_err());
}

/// mkfsOptions given with fsType are checked against that mkfs before anything is made; a
/// file, a device or a flag not on its list is refused, naming it.
#[test]
fn mkfs_options_with_a_filesystem_are_checked_at_once() {
    for (fs, m, says) in [
        (
            "ext4",
            "-d /etc",
            "'-d' is not an option volbridge passes to mkfs.ext4",
        ),
        ("ext4", "-L /etc", "'/' is not allowed in a value"),
        ("xfs", "-l logdev=sdc", "'logdev' is not a setting"),
        (
            "btrfs",
            "-qf",
            "is not an option volbridge passes to mkfs.btrfs",
        ),
    ] {
        let e = docker(&[("fsType", fs), ("mkfsOptions", m)]).unwrap_err();
        assert!(
            e.0.starts_with("mkfsOptions=") && e.0.contains(says),
            "{fs} {m}: {e}"
        );
    }
    // Without fsType (FlexVolume names it in kubernetes.io/fsType) the node checks them.
    assert!(flex(&[("mkfsOptions", "-d agcount=4")]).is_ok());
}

#[test]
fn mount_options_naming_another_device_are_refused() {
    for o in [
        "logdev=/dev/sdb",
        "noatime,rtdev=/dev/sdc",
        "journal_path=/dev/sdd",
        "Device=/dev/sde",
    ] {
        let e = flex(&[("mountOptions", o)]).unwrap_err();
        assert!(e.0.contains("names another device"), "{o}: {e}");
    }
    assert!(flex(&[("mountOptions", "noatime,discard,nouuid")]).is_ok());
}
