//! The `-o key=value` options of docker-volume-plugin.md §12, as the one option table
//! (`volbridge_proto::options`, shared with FlexVolume) defines them, turned into what the
//! engine needs. Unknown names are refused; a backend's own settings are `csp.<name>`.

use crate::engine::{DockerCreate, VolumeSource};
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use volbridge_proto::options::{self as table, FrontEnd, OptionError};

fn bad(e: OptionError) -> Error {
    Error::invalid_option(e.0)
}

/// Parses a size in the one grammar (`volbridge_proto::units`), worded as §12 shows.
#[cfg(test)]
fn parse_size(text: &str) -> Result<u64> {
    table::size(text).map_err(bad)
}

/// The user's options, checked and turned into what the engine needs.
pub fn parse(name: &str, opts: &BTreeMap<String, String>) -> Result<DockerCreate> {
    let o = table::parse(
        FrontEnd::Docker,
        opts.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    )
    .map_err(bad)?;
    let params = o.volume_config();
    let mut req = DockerCreate {
        name: name.to_owned(),
        fs_type: "ext4".to_owned(),
        size: o.size,
        description: o.description,
        read_only: o.read_only,
        backend: o.backend,
        mount_options: o.mount_options,
        params,
        ..DockerCreate::default()
    };
    req.source = match (o.from_snapshot, o.clone_of) {
        (Some(s), _) => Some(VolumeSource::Snapshot(s)),
        (_, Some(v)) => Some(VolumeSource::Volume(v)),
        (None, None) => None,
    };
    if req.source.is_some() {
        // A clone holds its source's filesystem: none is made.
        req.fs_type = String::new();
    }
    if let Some(fs) = o.fs_type {
        req.fs_type = fs;
    }
    req.options = o.given;
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn sizes_as_the_spec_lists_them() {
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_size("10Gi").unwrap(), 10 << 30);
        assert_eq!(parse_size("10gi").unwrap(), 10 << 30);
        assert_eq!(parse_size("1Ti").unwrap(), 1 << 40);
        // The one grammar (volbridge_proto::units): the CLI's units and limits.
        assert_eq!(parse_size("1Pi").unwrap(), 1 << 50);
        assert_eq!(
            parse_size("10GB").unwrap_err().message,
            "size=\"10GB\": unknown unit \"GB\"; use bytes or Ki, Mi, Gi, Ti (e.g. size=10Gi)"
        );
        assert!(parse_size("10G")
            .unwrap_err()
            .message
            .contains("unknown unit \"G\""));
        assert!(parse_size("10GiB")
            .unwrap_err()
            .message
            .contains("unknown unit \"GiB\""));
        assert!(parse_size("1.5Gi")
            .unwrap_err()
            .message
            .contains("not a whole number"));
        assert_eq!(
            parse_size("10").unwrap_err().message,
            "size=\"10\" is 10 bytes, below the 1Mi minimum; did you mean size=10Gi?"
        );
        assert!(parse_size("99999999999999999999")
            .unwrap_err()
            .message
            .contains("too large"));
        assert!(parse_size("2000000Ti")
            .unwrap_err()
            .message
            .contains("too large"));
        assert!(parse_size("").is_err());
    }

    #[test]
    fn keys_are_case_insensitive_and_unique() {
        let r = parse("v", &opts(&[("FSTYPE", "XFS"), ("SIZE", "64Mi")])).unwrap();
        assert_eq!(r.fs_type, "xfs");
        assert_eq!(r.size, Some(64 << 20));
        assert_eq!(r.options["fsType"], "XFS");
        let e = parse("v", &opts(&[("fsType", "xfs"), ("fstype", "ext4")])).unwrap_err();
        assert!(e.message.contains("given twice"), "{}", e.message);
        let e = parse("v", &opts(&[("volbridge.x", "1")])).unwrap_err();
        assert!(e.message.contains("reserved"));
    }

    #[test]
    fn every_option() {
        let r = parse(
            "v",
            &opts(&[
                ("size", "1Gi"),
                ("fsType", "ext4"),
                ("mkfsOptions", "-m 0  -i 8192"),
                ("mountOptions", "noatime,discard"),
                ("fsOwner", "999:998"),
                ("fsMode", "0770"),
                ("description", "orders db"),
                ("readOnly", "TRUE"),
                ("backend", "array1"),
                ("csp.performancePolicy", "fast"),
                ("thick", "true"),
            ]),
        )
        .unwrap();
        assert_eq!(r.params["fsCreateOptions"], "-m 0 -i 8192");
        assert_eq!(r.params["fsOwner"], "999:998");
        assert_eq!(r.params["fsMode"], "0770");
        assert_eq!(r.params["performancePolicy"], "fast");
        assert_eq!(r.params["thick"], "true");
        assert_eq!(r.options["csp.performancePolicy"], "fast");
        assert_eq!(r.mount_options, ["noatime", "discard"]);
        assert!(r.read_only);
        assert_eq!(r.backend.as_deref(), Some("array1"));
        assert_eq!(r.description.as_deref(), Some("orders db"));
        for (k, v, says) in [
            ("fsType", "zfs", "accepted values are ext4, xfs, btrfs"),
            ("mountOptions", "ro,noatime", "use readOnly=true"),
            ("fsOwner", "root", "uid:gid"),
            ("fsMode", "999", "octal"),
            ("readOnly", "yes", "true, false, 1, 0"),
            ("mkfsOptions", "-L 'x y'", "no quoting"),
        ] {
            let e = parse("v", &opts(&[(k, v)])).unwrap_err();
            assert!(e.message.contains(says), "{k}={v}: {}", e.message);
            assert!(e.message.contains(k), "{k}: {}", e.message);
        }
        let long = "x".repeat(300);
        assert!(parse("v", &opts(&[("description", &long)])).is_err());
    }

    #[test]
    fn unknown_options_are_refused_in_docker_words() {
        use crate::frontend::docker::errors::{err_text, MAX_ERR};
        let e = parse("v", &opts(&[("sise", "1Gi")])).unwrap_err();
        assert_eq!(
            err_text(&e),
            "volbridge: invalid option: unknown option \"sise\" (did you mean size?); known: size, \
             fsType, mkfsOptions, mountOptions, fsOwner, fsMode, description, fromSnapshot, \
             cloneOf, readOnly, backend, thick, destroyOnDelete; give a backend's own setting \
             as csp.<name>=<value>"
        );
        assert!(err_text(&e).len() <= MAX_ERR);
        let e = parse("v", &opts(&[("thik", "true")])).unwrap_err();
        assert!(err_text(&e).starts_with(
            "volbridge: invalid option: unknown option \"thik\" (did you mean thick?); known: "
        ));
        let e = parse("v", &opts(&[("autoCreate", "true")])).unwrap_err();
        assert!(e.message.starts_with("unknown option \"autoCreate\""));
    }

    #[test]
    fn sources() {
        let e = parse("v", &opts(&[("fromSnapshot", "s"), ("cloneOf", "v0")])).unwrap_err();
        assert_eq!(e.message, "fromSnapshot and cloneOf cannot be combined");
        let e = parse("v", &opts(&[("cloneOf", "v0"), ("mkfsOptions", "-m 0")])).unwrap_err();
        assert!(e.message.contains("mkfsOptions cannot be combined"));
        let r = parse("v", &opts(&[("cloneOf", "v0")])).unwrap();
        assert_eq!(r.source, Some(VolumeSource::Volume("v0".into())));
        assert_eq!(r.fs_type, "");
        let r = parse("v", &opts(&[("fromSnapshot", "s1")])).unwrap();
        assert_eq!(r.source, Some(VolumeSource::Snapshot("s1".into())));
        assert!(parse("v", &opts(&[("cloneOf", "../x")])).is_err());
    }
}
