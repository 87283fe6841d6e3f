//! The options JSON kubelet and KCM pass (flexvolume.md §8): the `kubernetes.io/*` keys they
//! add and the user's `flexVolume.options`, parsed and validated before the daemon is
//! contacted. User options are the one option table of `volbridge_proto::options`, shared
//! with the Docker plugin: the same names, syntax and error texts.

use crate::errors::Failure;
use crate::names::validate_name;
use base64::Engine as _;
use serde_json::Value;
use std::collections::BTreeMap;
use volbridge_proto::options::{self as table, FrontEnd, OptionError};

pub const K8S_PREFIX: &str = "kubernetes.io/";
pub const SECRET_PREFIX: &str = "kubernetes.io/secret/";
pub const REDACTED: &str = "<redacted>";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodInfo {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub uid: Option<String>,
    pub service_account: Option<String>,
}

/// What kubelet says plus what the user asked for.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// `kubernetes.io/fsType` when not empty.
    pub k8s_fs_type: Option<String>,
    /// `kubernetes.io/readwrite` = `ro`.
    pub k8s_read_only: bool,
    pub pv_name: Option<String>,
    pub pod: PodInfo,
    /// `kubernetes.io/mounterArgs.FsGroup`, else the legacy `kubernetes.io/fsGroup`.
    pub fs_group: Option<u32>,
    /// The decoded `kubernetes.io/secret/*` entries: the CSP credentials map.
    pub secrets: BTreeMap<String, String>,
    pub user: UserOptions,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("k8s_fs_type", &self.k8s_fs_type)
            .field("k8s_read_only", &self.k8s_read_only)
            .field("pv_name", &self.pv_name)
            .field("pod", &self.pod)
            .field("fs_group", &self.fs_group)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("user", &self.user)
            .finish()
    }
}

/// `flexVolume.options`, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserOptions {
    pub volume_name: Option<String>,
    pub backend: Option<String>,
    pub auto_create: bool,
    pub size: Option<u64>,
    pub fs_owner: Option<(u32, u32)>,
    pub fs_mode: Option<u32>,
    pub description: Option<String>,
    pub from_snapshot: Option<String>,
    pub clone_of: Option<String>,
    pub fs_type: Option<String>,
    pub mount_options: Vec<String>,
    pub read_only: bool,
    /// Every other key, for the CSP's volume `config` (camelCase; the daemon converts).
    pub config: BTreeMap<String, String>,
}

impl Options {
    /// The backend volume: user `volumeName`, else `kubernetes.io/pvOrVolumeName`.
    pub fn volume_name(&self) -> Result<&str, Failure> {
        self.user
            .volume_name
            .as_deref()
            .or(self.pv_name.as_deref())
            .ok_or_else(|| {
                Failure::invalid_option(
                    "no volume name: neither volumeName nor kubernetes.io/pvOrVolumeName is set",
                )
            })
    }

    /// The PV (or inline volume) name kubelet and KCM know the volume by.
    pub fn pv(&self) -> Result<&str, Failure> {
        self.pv_name
            .as_deref()
            .ok_or_else(|| Failure::invalid_option("kubernetes.io/pvOrVolumeName is missing"))
    }

    /// User `fsType`, else a non-empty `kubernetes.io/fsType`, else `""` (what the volume
    /// holds, or the daemon's default for a blank one).
    pub fn fs_type(&self) -> String {
        self.user
            .fs_type
            .clone()
            .or_else(|| self.k8s_fs_type.clone())
            .unwrap_or_default()
    }

    pub fn read_only(&self) -> bool {
        self.k8s_read_only || self.user.read_only
    }
}

fn json_failure(detail: impl Into<String>) -> Failure {
    Failure::new("invalid options JSON", detail)
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The options object as strings: numbers and booleans as their JSON text (kubelet never
/// sends them), objects, arrays and null refused.
fn string_map(text: &str) -> Result<BTreeMap<String, String>, Failure> {
    let value: Value = serde_json::from_str(text).map_err(|e| json_failure(e.to_string()))?;
    let Value::Object(map) = value else {
        return Err(json_failure(format!(
            "expected an object, found {}",
            kind_of(&value)
        )));
    };
    let mut out = BTreeMap::new();
    for (k, v) in map {
        let s = match v {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => {
                return Err(json_failure(format!(
                    "value of \"{}\" must be a string, found {}",
                    k.escape_debug(),
                    kind_of(&other)
                )))
            }
        };
        out.insert(k, s);
    }
    Ok(out)
}

/// Parses and validates the options JSON (one argv element).
pub fn parse(text: &str) -> Result<Options, Failure> {
    let map = string_map(text)?;
    let mut o = Options::default();
    let mut user: Vec<(String, String)> = Vec::new();
    let mut legacy_fs_group = None;
    for (key, value) in map {
        if let Some(name) = key.strip_prefix(SECRET_PREFIX) {
            if name.is_empty() {
                return Err(Failure::invalid_option("a secret key is empty"));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(value.as_bytes())
                .map_err(|_| {
                    Failure::invalid_option(format!(
                        "secret \"{}\" is not valid base64",
                        name.escape_debug()
                    ))
                })?;
            let decoded = String::from_utf8(bytes).map_err(|_| {
                Failure::invalid_option(format!(
                    "secret \"{}\" is not UTF-8 text once decoded",
                    name.escape_debug()
                ))
            })?;
            o.secrets.insert(name.to_owned(), decoded);
            continue;
        }
        match key.as_str() {
            "kubernetes.io/fsType" => {
                if !value.is_empty() {
                    o.k8s_fs_type = Some(table::fs_type(&key, &value).map_err(invalid)?);
                }
            }
            "kubernetes.io/readwrite" => {
                o.k8s_read_only = match value.as_str() {
                    "ro" => true,
                    "rw" | "" => false,
                    _ => {
                        return Err(Failure::invalid_option(format!(
                            "kubernetes.io/readwrite=\"{}\": expected \"ro\" or \"rw\"",
                            value.escape_debug()
                        )))
                    }
                }
            }
            "kubernetes.io/pvOrVolumeName" => {
                if !value.is_empty() {
                    validate_name("kubernetes.io/pvOrVolumeName", &value)?;
                    o.pv_name = Some(value);
                }
            }
            "kubernetes.io/pod.name" => o.pod.name = Some(value),
            "kubernetes.io/pod.namespace" => o.pod.namespace = Some(value),
            "kubernetes.io/pod.uid" => o.pod.uid = Some(value),
            "kubernetes.io/serviceAccount.name" => o.pod.service_account = Some(value),
            "kubernetes.io/mounterArgs.FsGroup" => o.fs_group = Some(gid(&key, &value)?),
            "kubernetes.io/fsGroup" => legacy_fs_group = Some(gid(&key, &value)?),
            // Unknown kubernetes.io/* keys (mountsDir, future ones): ignored.
            k if k.starts_with(K8S_PREFIX) => {}
            _ => user.push((key, value)),
        }
    }
    if o.fs_group.is_none() {
        o.fs_group = legacy_fs_group;
    }
    o.user = parse_user(user)?;
    if o.user.auto_create {
        // A volume autoCreate may make gets a name a person could have typed; an existing
        // one (`volumeName` alone) is looked up by whatever name it has.
        if let Some(v) = &o.user.volume_name {
            validate_name("volumeName", v)?;
        }
    }
    Ok(o)
}

fn gid(key: &str, value: &str) -> Result<u32, Failure> {
    value.trim().parse::<u32>().map_err(|_| {
        Failure::invalid_option(format!(
            "{key}=\"{}\" is not a group id (a decimal number)",
            value.escape_debug()
        ))
    })
}

fn invalid(e: OptionError) -> Failure {
    Failure::invalid_option(e.0)
}

/// `flexVolume.options`, checked by the one option table.
fn parse_user(pairs: Vec<(String, String)>) -> Result<UserOptions, Failure> {
    let o = table::parse(
        FrontEnd::Flex,
        pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    )
    .map_err(invalid)?;
    let mut config = o.csp;
    // As in the Docker plugin: kept in the volume's CSP config (`fsCreateOptions`) when
    // autoCreate makes it, and used when the node formats it.
    if let Some(m) = o.mkfs_options {
        config.insert("fsCreateOptions".into(), m);
    }
    Ok(UserOptions {
        volume_name: o.volume_name,
        backend: o.backend,
        auto_create: o.auto_create,
        size: o.size,
        fs_owner: o.fs_owner,
        fs_mode: o.fs_mode,
        description: o.description,
        from_snapshot: o.from_snapshot,
        clone_of: o.clone_of,
        fs_type: o.fs_type,
        mount_options: o.mount_options,
        read_only: o.read_only,
        config,
    })
}

/// A size in the one grammar of `volbridge_proto::units`, worded as every front end's
/// `size=` option.
#[cfg(test)]
fn size(text: &str) -> Result<u64, Failure> {
    table::size(text).map_err(invalid)
}

/// The options for the log: every `kubernetes.io/secret/*` value replaced by `<redacted>`;
/// text that does not parse but mentions a secret is replaced as a whole.
pub fn redact_arg(arg: &str) -> Value {
    if arg.trim_start().starts_with('{') {
        if let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(arg) {
            for (k, v) in map.iter_mut() {
                if k.starts_with(SECRET_PREFIX) {
                    *v = Value::String(REDACTED.to_owned());
                }
            }
            return Value::Object(map);
        }
    }
    if arg.to_ascii_lowercase().contains("secret") {
        return Value::String(format!("{REDACTED} ({} bytes)", arg.len()));
    }
    let mut s = arg.to_owned();
    if s.len() > 2048 {
        let mut end = 2048;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    Value::String(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn kubelet_keys_and_user_options() {
        let text = format!(
            r#"{{"autoCreate":"true","fsType":"xfs","kubernetes.io/fsGroup":"999","kubernetes.io/fsType":"ext4","kubernetes.io/mounterArgs.FsGroup":"1234","kubernetes.io/pod.name":"web-0","kubernetes.io/pod.namespace":"default","kubernetes.io/pod.uid":"u-1","kubernetes.io/pvOrVolumeName":"pv-data","kubernetes.io/readwrite":"ro","kubernetes.io/secret/password":"{}","kubernetes.io/serviceAccount.name":"default","kubernetes.io/mountsDir":"/x","size":"2Gi","csp.performancePolicy":"fast"}}"#,
            b64("s3cret pw")
        );
        let o = parse(&text).unwrap();
        assert_eq!(o.volume_name().unwrap(), "pv-data");
        assert_eq!(o.fs_type(), "xfs", "user fsType beats kubernetes.io/fsType");
        assert!(o.read_only());
        assert_eq!(o.fs_group, Some(1234), "mounterArgs.FsGroup wins");
        assert_eq!(o.secrets["password"], "s3cret pw");
        assert_eq!(o.pod.name.as_deref(), Some("web-0"));
        assert!(o.user.auto_create);
        assert_eq!(o.user.size, Some(2 << 30));
        assert_eq!(o.user.config["performancePolicy"], "fast");
        assert!(!format!("{o:?}").contains("s3cret"));
    }

    #[test]
    fn defaults_and_legacy_fs_group() {
        let o =
            parse(r#"{"kubernetes.io/pvOrVolumeName":"v","kubernetes.io/fsGroup":"7"}"#).unwrap();
        assert!(!o.read_only(), "missing readwrite means rw");
        assert_eq!(o.fs_type(), "");
        assert_eq!(o.fs_group, Some(7));
        assert!(!o.user.auto_create);
        let o =
            parse(r#"{"kubernetes.io/pvOrVolumeName":"pv","volumeName":"backend-vol"}"#).unwrap();
        assert_eq!(o.volume_name().unwrap(), "backend-vol");
        assert_eq!(o.pv().unwrap(), "pv");
    }

    #[test]
    fn go_escapes_decode_to_the_original_text() {
        let o = parse(
            r#"{"description":"a\u003cb\u003e \u0026 c","kubernetes.io/pvOrVolumeName":"v","csp.note":"x\u0026y"}"#,
        )
        .unwrap();
        assert_eq!(o.user.description.as_deref(), Some("a<b> & c"));
        assert_eq!(o.user.config["note"], "x&y");
    }

    #[test]
    fn malformed_json_is_refused_with_the_documented_words() {
        for (text, want) in [
            (r#"{"a":"#, "volbridge: invalid options JSON: "),
            (
                "[1,2]",
                "volbridge: invalid options JSON: expected an object, found an array",
            ),
            (
                r#""x""#,
                "volbridge: invalid options JSON: expected an object, found a string",
            ),
            (
                r#"{"a":{"b":"c"}}"#,
                "volbridge: invalid options JSON: value of \"a\" must be a string",
            ),
            (
                r#"{"a":["b"]}"#,
                "volbridge: invalid options JSON: value of \"a\" must be a string",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.message().starts_with(want), "{text}: {}", e.message());
        }
        // Numbers and booleans are taken as their JSON text.
        let o = parse(r#"{"kubernetes.io/pvOrVolumeName":"v","autoCreate":true,"size":1048576}"#)
            .unwrap();
        assert!(o.user.auto_create);
        assert_eq!(o.user.size, Some(1 << 20));
    }

    #[test]
    fn bad_secrets() {
        let e = parse(r#"{"kubernetes.io/secret/password":"not base64!"}"#).unwrap_err();
        assert_eq!(
            e.message(),
            "volbridge: invalid option: secret \"password\" is not valid base64"
        );
        assert!(!e.message().contains("not base64!"));
    }

    #[test]
    fn sizes_follow_the_docker_option_set() {
        assert_eq!(size("1048576").unwrap(), 1 << 20);
        assert_eq!(size("10Gi").unwrap(), 10 << 30);
        assert_eq!(size("10gi").unwrap(), 10 << 30);
        assert_eq!(size("512Mi").unwrap(), 512 << 20);
        assert_eq!(size("1Ti").unwrap(), 1 << 40);
        assert_eq!(
            size("10GB").unwrap_err().message(),
            "volbridge: invalid option: size=\"10GB\": unknown unit \"GB\"; use bytes or Ki, Mi, Gi, Ti (e.g. size=10Gi)"
        );
        assert_eq!(
            size("10").unwrap_err().message(),
            "volbridge: invalid option: size=\"10\" is 10 bytes, below the 1Mi minimum; did you mean size=10Gi?"
        );
        for bad in [
            "1.5Gi",
            "10G",
            "10GiB",
            "Gi",
            "-1",
            "",
            "99999999999999999999",
            "20000000Ti",
        ] {
            assert!(size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn user_option_rules() {
        let bad = [
            r#"{"size":"1","Size":"2"}"#,
            r#"{"fromSnapshot":"s","cloneOf":"v"}"#,
            r#"{"fsType":"ntfs"}"#,
            r#"{"kubernetes.io/fsType":"ext3"}"#,
            r#"{"mountOptions":"noatime,ro"}"#,
            r#"{"mountOptions":"bind"}"#,
            r#"{"fsOwner":"999"}"#,
            r#"{"fsMode":"999"}"#,
            r#"{"fsMode":"77777"}"#,
            r#"{"readOnly":"yes"}"#,
            r#"{"volbridge.internal":"x"}"#,
            r#"{"volumeName":"../etc"}"#,
            r#"{"kubernetes.io/pvOrVolumeName":"a/b"}"#,
            r#"{"kubernetes.io/readwrite":"rx"}"#,
            r#"{"kubernetes.io/mounterArgs.FsGroup":"abc"}"#,
            r#"{"mkfsOptions":"-L 'x y'"}"#,
        ];
        for text in bad {
            assert!(parse(text).is_err(), "{text} was accepted");
        }
        let o = parse(
            r#"{"FSTYPE":"XFS","mountoptions":"noatime, discard","fsowner":"999:998","fsMode":"0770","readonly":"1"}"#,
        )
        .unwrap();
        assert_eq!(o.user.fs_type.as_deref(), Some("xfs"));
        assert_eq!(o.user.mount_options, ["noatime", "discard"]);
        assert_eq!(o.user.fs_owner, Some((999, 998)));
        assert_eq!(o.user.fs_mode, Some(0o770));
        assert!(o.user.read_only);
        assert!(o.user.config.is_empty());
    }

    #[test]
    fn unknown_options_and_new_names_are_refused_in_flex_words() {
        let e = parse(r#"{"kubernetes.io/pvOrVolumeName":"v","sise":"1Gi"}"#).unwrap_err();
        assert_eq!(
            e.message(),
            "volbridge: invalid option: unknown option \"sise\" (did you mean size?); known: size, \
             fsType, mkfsOptions, mountOptions, fsOwner, fsMode, description, fromSnapshot, \
             cloneOf, readOnly, backend, thick, destroyOnDelete, volumeName, autoCreate; give a \
             backend's own setting as csp.<name>=<value>"
        );
        let e = parse(r#"{"thik":"true"}"#).unwrap_err();
        assert!(
            e.message().contains("\"thik\" (did you mean thick?)"),
            "{}",
            e.message()
        );
        // An existing volume is found by the name it has; a new one gets the user-name rule.
        let o = parse(r#"{"kubernetes.io/pvOrVolumeName":"pv","volumeName":"my vol"}"#).unwrap();
        assert_eq!(o.volume_name().unwrap(), "my vol");
        let e = parse(r#"{"volumeName":"my vol","autoCreate":"true"}"#).unwrap_err();
        assert_eq!(
            e.message(),
            "volbridge: invalid name: volumeName \"my vol\" may contain only letters, digits, '_', '.', '-'"
        );
        let e = parse(r#"{"kubernetes.io/pvOrVolumeName":".pv"}"#).unwrap_err();
        assert_eq!(
            e.message(),
            "volbridge: invalid name: kubernetes.io/pvOrVolumeName \".pv\" must start with a letter or a digit"
        );
    }

    #[test]
    fn redaction_for_the_log() {
        let secret = b64("hunter2");
        let arg = format!(
            r#"{{"kubernetes.io/pvOrVolumeName":"v","kubernetes.io/secret/password":"{secret}"}}"#
        );
        let logged = redact_arg(&arg).to_string();
        assert!(!logged.contains(&secret), "{logged}");
        assert!(logged.contains(REDACTED));
        assert!(logged.contains("pvOrVolumeName"));
        let broken = format!(r#"{{"kubernetes.io/secret/password":"{secret}""#);
        assert!(!redact_arg(&broken).to_string().contains(&secret));
        assert_eq!(redact_arg("/var/lib/x"), Value::String("/var/lib/x".into()));
    }
}
