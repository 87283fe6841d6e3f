//! The options JSON kubelet and KCM pass (flexvolume.md §8): the `kubernetes.io/*` keys they
//! add and the user's `flexVolume.options`, parsed and validated before the daemon is
//! contacted. User options follow the Docker `-o` set (docker-volume-plugin.md §12): keys
//! case-insensitive, the same syntax and error texts.

use crate::errors::Failure;
use crate::names::validate_name;
use base64::Engine as _;
use serde_json::Value;
use std::collections::BTreeMap;

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
                    o.k8s_fs_type = Some(fs_type(&key, &value)?);
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

fn fs_type(key: &str, value: &str) -> Result<String, Failure> {
    let lower = value.trim().to_ascii_lowercase();
    match lower.as_str() {
        "ext4" | "xfs" | "btrfs" => Ok(lower),
        _ => Err(Failure::invalid_option(format!(
            "{key}=\"{}\": volbridge formats ext4, xfs or btrfs",
            value.escape_debug()
        ))),
    }
}

fn boolean(key: &str, value: &str) -> Result<bool, Failure> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(Failure::invalid_option(format!(
            "{key}=\"{}\": use true or false",
            value.escape_debug()
        ))),
    }
}

/// The recognised user keys, by their lower-case spelling.
const KNOWN: [&str; 13] = [
    "volumeName",
    "backend",
    "autoCreate",
    "size",
    "mkfsOptions",
    "fsOwner",
    "fsMode",
    "description",
    "fromSnapshot",
    "cloneOf",
    "fsType",
    "mountOptions",
    "readOnly",
];

fn parse_user(pairs: Vec<(String, String)>) -> Result<UserOptions, Failure> {
    let mut u = UserOptions::default();
    let mut seen: BTreeMap<&'static str, String> = BTreeMap::new();
    for (key, value) in pairs {
        let Some(canonical) = KNOWN.iter().find(|k| k.eq_ignore_ascii_case(&key)) else {
            if key.len() >= 10 && key[..10].eq_ignore_ascii_case("volbridge.") {
                return Err(Failure::invalid_option(format!(
                    "\"{}\": keys starting with volbridge. are reserved",
                    key.escape_debug()
                )));
            }
            if key.is_empty() || key.chars().any(char::is_control) {
                return Err(Failure::invalid_option(format!(
                    "\"{}\" is not an option name",
                    key.escape_debug()
                )));
            }
            u.config.insert(key, value);
            continue;
        };
        if let Some(first) = seen.insert(canonical, key.clone()) {
            return Err(Failure::invalid_option(format!(
                "{canonical} is given twice (as \"{first}\" and \"{key}\")"
            )));
        }
        if value.trim().is_empty() && *canonical != "description" {
            continue;
        }
        let k = *canonical;
        match k {
            "volumeName" => {
                validate_name("volumeName", &value)?;
                u.volume_name = Some(value);
            }
            "backend" => {
                let b = value.trim();
                if b.len() > 128 || b.chars().any(|c| c.is_control() || c == '/') {
                    return Err(Failure::invalid_option(format!(
                        "backend=\"{}\" is not a backend name",
                        value.escape_debug()
                    )));
                }
                u.backend = Some(b.to_owned());
            }
            "autoCreate" => u.auto_create = boolean(k, &value)?,
            "readOnly" => u.read_only = boolean(k, &value)?,
            "size" => u.size = Some(size(&value)?),
            // As in the Docker plugin: kept in the volume's CSP config (`fsCreateOptions`)
            // when autoCreate makes it, and used when the node formats it.
            "mkfsOptions" => {
                let tokens: Vec<&str> = value.split_whitespace().collect();
                if tokens
                    .iter()
                    .any(|t| t.chars().any(|c| "'\"`$\\;&|<>".contains(c)))
                {
                    return Err(Failure::invalid_option(format!(
                        "mkfsOptions=\"{}\": plain whitespace-separated arguments only, no quoting",
                        value.escape_debug()
                    )));
                }
                u.config.insert("fsCreateOptions".into(), tokens.join(" "));
            }
            "fsOwner" => u.fs_owner = Some(owner(&value)?),
            "fsMode" => u.fs_mode = Some(mode(&value)?),
            "description" => {
                if value.len() > 256 {
                    return Err(Failure::invalid_option(format!(
                        "description is {} bytes long; the limit is 256",
                        value.len()
                    )));
                }
                u.description = Some(value);
            }
            "fromSnapshot" => {
                validate_name("fromSnapshot", &value)?;
                u.from_snapshot = Some(value);
            }
            "cloneOf" => {
                validate_name("cloneOf", &value)?;
                u.clone_of = Some(value);
            }
            "fsType" => u.fs_type = Some(fs_type(k, &value)?),
            "mountOptions" => u.mount_options = mount_options(&value)?,
            _ => unreachable!("every known key is handled"),
        }
    }
    if u.from_snapshot.is_some() && u.clone_of.is_some() {
        return Err(Failure::invalid_option(
            "fromSnapshot and cloneOf cannot be combined",
        ));
    }
    Ok(u)
}

/// A size in the one grammar of `volbridge_proto::units` (bytes, or a whole number of Ki,
/// Mi, Gi, Ti, Pi; 1Mi to 1Ei), worded for a FlexVolume user.
pub fn size(text: &str) -> Result<u64, Failure> {
    use volbridge_proto::units::SizeError;
    let shown = text.escape_debug();
    let digits: String = text
        .trim()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let example = if digits.is_empty() { "10" } else { &digits };
    volbridge_proto::units::parse_size(text).map_err(|e| {
        Failure::invalid_option(match e {
            SizeError::NotASize => format!(
                "size=\"{shown}\" is not a size; use bytes or Ki, Mi, Gi, Ti (e.g. size=10Gi)"
            ),
            SizeError::NotWhole => format!(
                "size=\"{shown}\": decimals are not accepted; use a whole number of Ki, Mi, Gi or Ti (e.g. size=1536Mi)"
            ),
            SizeError::UnknownUnit { unit, .. } => format!(
                "size=\"{shown}\": unknown unit \"{}\"; use bytes or Ki, Mi, Gi, Ti (e.g. size={example}Gi)",
                unit.escape_debug()
            ),
            SizeError::TooLarge => format!("size=\"{shown}\" is too large; the limit is 1Ei"),
            SizeError::BelowMinimum {
                bytes,
                without_unit,
            } => {
                let hint = if without_unit && bytes > 0 {
                    format!("; did you mean size={digits}Gi?")
                } else {
                    String::new()
                };
                format!("size=\"{shown}\" is {bytes} bytes, below the 1Mi minimum{hint}")
            }
        })
    })
}

fn owner(value: &str) -> Result<(u32, u32), Failure> {
    let parsed = value
        .trim()
        .split_once(':')
        .and_then(|(u, g)| Some((u.parse::<u32>().ok()?, g.parse::<u32>().ok()?)));
    parsed.ok_or_else(|| {
        Failure::invalid_option(format!(
            "fsOwner=\"{}\": use uid:gid in decimal (e.g. fsOwner=999:999)",
            value.escape_debug()
        ))
    })
}

fn mode(value: &str) -> Result<u32, Failure> {
    let v = value.trim();
    let ok = (3..=4).contains(&v.len()) && v.bytes().all(|b| (b'0'..=b'7').contains(&b));
    if !ok {
        return Err(Failure::invalid_option(format!(
            "fsMode=\"{}\": use 3 or 4 octal digits (e.g. fsMode=0770)",
            value.escape_debug()
        )));
    }
    u32::from_str_radix(v, 8).map_err(|_| Failure::invalid_option("fsMode is not octal"))
}

fn mount_options(value: &str) -> Result<Vec<String>, Failure> {
    let mut out = Vec::new();
    for opt in value.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let name = opt.split('=').next().unwrap_or(opt).to_ascii_lowercase();
        let why = match name.as_str() {
            "ro" | "rw" => Some("use readOnly=true instead"),
            "bind" | "rbind" | "remount" => Some("volbridge makes its own mounts"),
            _ if opt.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                Some("mount options contain no spaces")
            }
            _ => None,
        };
        if let Some(why) = why {
            return Err(Failure::invalid_option(format!(
                "mountOptions=\"{}\": \"{}\" is not allowed; {why}",
                value.escape_debug(),
                opt.escape_debug()
            )));
        }
        out.push(opt.to_owned());
    }
    Ok(out)
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
            r#"{{"autoCreate":"true","fsType":"xfs","kubernetes.io/fsGroup":"999","kubernetes.io/fsType":"ext4","kubernetes.io/mounterArgs.FsGroup":"1234","kubernetes.io/pod.name":"web-0","kubernetes.io/pod.namespace":"default","kubernetes.io/pod.uid":"u-1","kubernetes.io/pvOrVolumeName":"pv-data","kubernetes.io/readwrite":"ro","kubernetes.io/secret/password":"{}","kubernetes.io/serviceAccount.name":"default","kubernetes.io/mountsDir":"/x","size":"2Gi","performancePolicy":"fast"}}"#,
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
            r#"{"description":"a\u003cb\u003e \u0026 c","kubernetes.io/pvOrVolumeName":"v","note":"x\u0026y"}"#,
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
