//! The `-o key=value` option set of docker-volume-plugin.md §12: keys matched
//! case-insensitively, values checked with a message that names the option and what it
//! accepts, unknown keys passed to the CSP as volume config.

use crate::engine::{DockerCreate, VolumeSource};
use crate::error::{Error, Result};
use std::collections::BTreeMap;

const SIZE_HINT: &str = "use bytes or Ki, Mi, Gi, Ti (e.g. size=10Gi)";
const FS_TYPES: [&str; 3] = ["ext4", "xfs", "btrfs"];
const FORBIDDEN_MOUNT_OPTIONS: [&str; 5] = ["ro", "rw", "bind", "rbind", "remount"];
pub const MAX_DESCRIPTION: usize = 256;

/// The recognised keys, in their canonical spelling.
const KNOWN: [&str; 11] = [
    "size",
    "fsType",
    "mkfsOptions",
    "mountOptions",
    "fsOwner",
    "fsMode",
    "description",
    "fromSnapshot",
    "cloneOf",
    "readOnly",
    "backend",
];

fn bad(message: impl Into<String>) -> Error {
    // `field` marks the error as the user's option (the front end's `invalid option`).
    Error {
        kind: crate::ErrorKind::InvalidArgument,
        message: message.into(),
        field: Some("option".to_owned()),
    }
}

/// Parses a size in the one grammar (`volbridge_proto::units`), worded as §12 shows.
pub fn parse_size(text: &str) -> Result<u64> {
    use volbridge_proto::units::SizeError;
    volbridge_proto::units::parse_size(text).map_err(|e| {
        bad(match e {
            SizeError::NotASize => format!("size={text:?} is not a size; {SIZE_HINT}"),
            SizeError::NotWhole => format!("size={text:?} is not a whole number; {SIZE_HINT}"),
            SizeError::UnknownUnit { unit, .. } => {
                format!("size={text:?}: unknown unit {unit:?}; {SIZE_HINT}")
            }
            SizeError::TooLarge => format!("size={text:?} is too large; the limit is 1Ei"),
            SizeError::BelowMinimum {
                bytes,
                without_unit,
            } => {
                let hint = if without_unit && bytes > 0 {
                    format!("; did you mean size={bytes}Gi?")
                } else {
                    String::new()
                };
                format!("size={text:?} is {bytes} bytes, below the 1Mi minimum{hint}")
            }
        })
    })
}

fn parse_bool(key: &str, value: &str) -> Result<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(bad(format!(
            "{key}={value:?}: accepted values are true, false, 1, 0"
        ))),
    }
}

/// The user's options, checked and turned into what the engine needs.
pub fn parse(name: &str, opts: &BTreeMap<String, String>) -> Result<DockerCreate> {
    // Canonical spelling → value; two spellings of one key are refused.
    let mut given: BTreeMap<String, String> = BTreeMap::new();
    let mut config: BTreeMap<String, String> = BTreeMap::new();
    for (key, value) in opts {
        if key.is_empty() {
            return Err(bad("an option has an empty name"));
        }
        if key.to_ascii_lowercase().starts_with("volbridge.") {
            return Err(bad(format!(
                "{key}: options starting with 'volbridge.' are reserved"
            )));
        }
        let canonical = KNOWN
            .iter()
            .find(|k| k.eq_ignore_ascii_case(key))
            .map(|k| (*k).to_owned());
        let (slot, canonical) = match canonical {
            Some(c) => (&mut given, c),
            None => (&mut config, key.clone()),
        };
        let clash = slot
            .keys()
            .find(|k| k.eq_ignore_ascii_case(&canonical))
            .cloned();
        if let Some(other) = clash {
            return Err(bad(format!(
                "{other} and {key} are the same option given twice"
            )));
        }
        slot.insert(canonical, value.clone());
    }

    let mut req = DockerCreate {
        name: name.to_owned(),
        fs_type: "ext4".to_owned(),
        ..DockerCreate::default()
    };
    if let Some(v) = given.get("size") {
        req.size = Some(parse_size(v)?);
    }
    let from_snapshot = given.get("fromSnapshot");
    let clone_of = given.get("cloneOf");
    req.source = match (from_snapshot, clone_of) {
        (Some(_), Some(_)) => {
            return Err(bad("fromSnapshot and cloneOf cannot be combined"));
        }
        (Some(s), None) => Some(VolumeSource::Snapshot(check_ref("fromSnapshot", s)?)),
        (None, Some(v)) => Some(VolumeSource::Volume(check_ref("cloneOf", v)?)),
        (None, None) => None,
    };
    if req.source.is_some() {
        // A clone holds its source's filesystem: none is made.
        req.fs_type = String::new();
    }
    if let Some(fs) = given.get("fsType") {
        let fs = fs.to_ascii_lowercase();
        if !FS_TYPES.contains(&fs.as_str()) {
            return Err(bad(format!(
                "fsType={:?}: accepted values are ext4, xfs, btrfs",
                given["fsType"]
            )));
        }
        req.params.insert("fsType".into(), fs.clone());
        req.fs_type = fs;
    }
    if let Some(m) = given.get("mkfsOptions") {
        if req.source.is_some() {
            return Err(bad(
                "mkfsOptions cannot be combined with fromSnapshot or cloneOf (a clone is never formatted)",
            ));
        }
        let tokens: Vec<&str> = m.split_whitespace().collect();
        if tokens
            .iter()
            .any(|t| t.chars().any(|c| "'\"`$\\;&|<>".contains(c)))
        {
            return Err(bad(format!(
                "mkfsOptions={m:?}: plain whitespace-separated arguments only, no quoting"
            )));
        }
        req.params
            .insert("fsCreateOptions".into(), tokens.join(" "));
    }
    if let Some(m) = given.get("mountOptions") {
        let mut list = Vec::new();
        for o in m.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            if FORBIDDEN_MOUNT_OPTIONS.contains(&o.to_ascii_lowercase().as_str()) {
                return Err(bad(format!(
                    "mountOptions={m:?}: {o:?} is not allowed (ro, rw, bind, rbind, remount are refused; use readOnly=true)"
                )));
            }
            if o.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(bad(format!(
                    "mountOptions={m:?}: a comma-separated list such as noatime,discard"
                )));
            }
            list.push(o.to_owned());
        }
        req.mount_options = list;
    }
    if let Some(o) = given.get("fsOwner") {
        let ok = o.split_once(':').is_some_and(|(u, g)| {
            !u.is_empty() && !g.is_empty() && u.parse::<u32>().is_ok() && g.parse::<u32>().is_ok()
        });
        if !ok {
            return Err(bad(format!(
                "fsOwner={o:?}: accepted values are uid:gid in decimal (e.g. fsOwner=999:999)"
            )));
        }
        req.params.insert("fsOwner".into(), o.clone());
    }
    if let Some(m) = given.get("fsMode") {
        let ok = (3..=4).contains(&m.len()) && m.bytes().all(|b| (b'0'..=b'7').contains(&b));
        if !ok {
            return Err(bad(format!(
                "fsMode={m:?}: accepted values are octal modes of 3 or 4 digits (e.g. 755, 0770, 1777)"
            )));
        }
        req.params.insert("fsMode".into(), m.clone());
    }
    if let Some(d) = given.get("description") {
        if d.len() > MAX_DESCRIPTION || d.chars().any(char::is_control) {
            return Err(bad(format!(
                "description is {} bytes; accepted is one line of at most {MAX_DESCRIPTION} bytes",
                d.len()
            )));
        }
        req.description = Some(d.clone());
    }
    if let Some(r) = given.get("readOnly") {
        req.read_only = parse_bool("readOnly", r)?;
    }
    if let Some(b) = given.get("backend") {
        if crate::engine::names::validate_name("backend", b).is_err() {
            return Err(bad(format!("backend={b:?} is not a backend name")));
        }
        req.backend = Some(b.clone());
    }
    for (key, value) in &config {
        if !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return Err(bad(format!(
                "{key}: option names may contain only letters, digits, '_', '-', '.'"
            )));
        }
        req.params.insert(key.clone(), value.clone());
    }
    req.options = given.into_iter().chain(config).collect();
    Ok(req)
}

fn check_ref(key: &str, value: &str) -> Result<String> {
    crate::engine::names::validate_name(key, value)
        .map_err(|_| bad(format!("{key}={value:?} is not a volume or snapshot name")))?;
    Ok(value.to_owned())
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
                ("performancePolicy", "fast"),
            ]),
        )
        .unwrap();
        assert_eq!(r.params["fsCreateOptions"], "-m 0 -i 8192");
        assert_eq!(r.params["fsOwner"], "999:998");
        assert_eq!(r.params["fsMode"], "0770");
        assert_eq!(r.params["performancePolicy"], "fast");
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
