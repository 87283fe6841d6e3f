//! The `-o key=value` options of a volume, one table for the Docker plugin (`docker volume
//! create -o`) and the FlexVolume driver (`flexVolume.options`): names, values, defaults,
//! help and the checks (docs/vocabulary.md).
//!
//! - Names are matched case-insensitively (`fstype` = `fsType`); two spellings of one name
//!   in a request are refused.
//! - An option outside the table is refused with a sentence naming it and the known ones
//!   (and the nearest known name, for a typo): `-o sise=1Gi` must not make a default-size
//!   volume, `-o thik=true` must not be stored.
//! - A backend's own settings, which volbridge does not know, are given as
//!   `csp.<name>=<value>` and reach the CSP's volume `config` as `<name>`
//!   (`-o csp.performancePolicy=fast`).
//! - `volbridge.*` names are reserved.
//!
//! Every refusal is an [`OptionError`], a sentence each front end prefixes with its own
//! words (`volbridge: invalid option: …`).

use crate::names::{check_stored_name, shown};
use crate::units::{parse_size, SizeError};
use std::collections::BTreeMap;
use std::fmt;

/// The front end whose options are parsed: each knows the options listed for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontEnd {
    Docker,
    Flex,
    /// `volbridge volume create|clone -o`: the CLI has flags for the rest of the table
    /// (`--size`, `--description`, `volume mount --read-only`…), so its `-o` takes the CSP
    /// settings of the table, the first format's settings and `csp.<name>` (see
    /// [`cli_flag_of`]).
    Cli,
}

/// One option of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionSpec {
    /// The canonical spelling.
    pub name: &'static str,
    /// What a value looks like.
    pub syntax: &'static str,
    /// What applies when the option is not given.
    pub default: &'static str,
    pub help: &'static str,
    pub docker: bool,
    pub flex: bool,
}

impl OptionSpec {
    pub fn known_to(&self, front_end: FrontEnd) -> bool {
        match front_end {
            FrontEnd::Docker => self.docker,
            FrontEnd::Flex => self.flex,
            FrontEnd::Cli => {
                CSP_SETTINGS.contains(&self.name) || FORMAT_SETTINGS.contains(&self.name)
            }
        }
    }
}

const fn both(
    name: &'static str,
    syntax: &'static str,
    default: &'static str,
    help: &'static str,
) -> OptionSpec {
    OptionSpec {
        name,
        syntax,
        default,
        help,
        docker: true,
        flex: true,
    }
}

const fn flex_only(
    name: &'static str,
    syntax: &'static str,
    default: &'static str,
    help: &'static str,
) -> OptionSpec {
    OptionSpec {
        docker: false,
        ..both(name, syntax, default, help)
    }
}

/// The table.
pub const OPTIONS: [OptionSpec; 15] = [
    both(
        "size",
        "bytes, or a whole number of Ki, Mi, Gi, Ti, Pi (1Mi to 1Ei)",
        "the daemon's default size (1Gi); a clone: its source's",
        "the volume's size; the CSP may round it up",
    ),
    both(
        "fsType",
        "ext4, xfs or btrfs",
        "ext4 (the daemon's default); a clone: its source's",
        "the filesystem made on a blank volume",
    ),
    both(
        "mkfsOptions",
        "whitespace-separated arguments, no quoting",
        "none",
        "extra arguments of mkfs at the first format; not with fromSnapshot or cloneOf",
    ),
    both(
        "mountOptions",
        "a comma-separated list such as noatime,discard",
        "none",
        "mount options at every mount; ro, rw, bind, rbind and remount are refused",
    ),
    both(
        "fsOwner",
        "uid:gid in decimal",
        "0:0",
        "owner of the filesystem's root after the first format",
    ),
    both(
        "fsMode",
        "3 or 4 octal digits",
        "0755",
        "mode of the filesystem's root after the first format",
    ),
    both(
        "description",
        "one line of at most 256 bytes",
        "none",
        "shown by inspect",
    ),
    both(
        "fromSnapshot",
        "a snapshot's name",
        "none",
        "make the volume from this snapshot",
    ),
    both(
        "cloneOf",
        "a volume's name",
        "none",
        "make the volume as a copy of this volume",
    ),
    both(
        "readOnly",
        "true, false, 1 or 0",
        "false",
        "mount the volume read-only",
    ),
    both(
        "backend",
        "the name of a backend in the daemon's configuration",
        "the default backend (Flex: the backend of the secrets)",
        "where the volume lives",
    ),
    both(
        "thick",
        "true, false, 1 or 0",
        "false",
        "allocate the whole size at creation (CSP setting thick)",
    ),
    both(
        "destroyOnDelete",
        "true, false, 1 or 0",
        "true",
        "false: the CSP keeps the data of a removed volume (CSP setting destroy_on_delete)",
    ),
    flex_only(
        "volumeName",
        "a volume's name",
        "the PV name",
        "the backend volume, when its name is not the PV's",
    ),
    flex_only(
        "autoCreate",
        "true, false, 1 or 0",
        "false",
        "make the volume at the first mount when it does not exist",
    ),
];

/// Names that reach the CSP's volume `config` as they are.
const CSP_SETTINGS: [&str; 2] = ["thick", "destroyOnDelete"];
/// How the first format is made: kept in the volume's `config` (see
/// [`Options::volume_config`]), read back by the node from the volume context.
const FORMAT_SETTINGS: [&str; 4] = ["fsType", "mkfsOptions", "fsOwner", "fsMode"];
/// The prefix of a backend's own setting.
pub const CSP_PREFIX: &str = "csp.";
/// The prefix volbridge keeps for itself.
pub const RESERVED_PREFIX: &str = "volbridge.";
pub const FS_TYPES: [&str; 3] = ["ext4", "xfs", "btrfs"];
/// The filesystem a volume gets when no `fsType` is given.
pub const DEFAULT_FS_TYPE: &str = "ext4";
pub const MAX_DESCRIPTION: usize = 256;
const FORBIDDEN_MOUNT_OPTIONS: [&str; 5] = ["ro", "rw", "bind", "rbind", "remount"];
/// Mount options that name another device or file for the filesystem to use (xfs's
/// external log and realtime devices, ext4's external journal, btrfs's other devices).
const DEVICE_MOUNT_OPTIONS: [&str; 5] =
    ["logdev", "rtdev", "journal_path", "journal_dev", "device"];
const SIZE_HINT: &str = "use bytes or Ki, Mi, Gi, Ti (e.g. size=10Gi)";

/// Why the options are refused: a sentence naming the option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionError(pub String);

impl fmt::Display for OptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OptionError {}

fn bad<T>(message: impl Into<String>) -> Result<T, OptionError> {
    Err(OptionError(message.into()))
}

/// The options, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub size: Option<u64>,
    /// Lower case.
    pub fs_type: Option<String>,
    /// The arguments joined by one space.
    pub mkfs_options: Option<String>,
    pub mount_options: Vec<String>,
    pub fs_owner: Option<(u32, u32)>,
    pub fs_mode: Option<u32>,
    pub description: Option<String>,
    pub from_snapshot: Option<String>,
    pub clone_of: Option<String>,
    pub read_only: bool,
    pub backend: Option<String>,
    pub volume_name: Option<String>,
    pub auto_create: bool,
    /// For the CSP's volume `config` (camelCase names): the CSP settings of the table as
    /// `"true"`/`"false"`, and every `csp.<name>` without its prefix.
    pub csp: BTreeMap<String, String>,
    /// Every option as given, under its canonical name (`csp.` ones with their prefix).
    pub given: BTreeMap<String, String>,
}

/// Where the CLI takes an option of the table that its `-o` does not: the flag or command
/// that does it, or why it has none.
pub fn cli_flag_of(option: &str) -> Option<&'static str> {
    let canonical = OPTIONS
        .iter()
        .find(|o| o.name.eq_ignore_ascii_case(option))?
        .name;
    Some(match canonical {
        "size" => "give it as --size (e.g. --size 10Gi)",
        "description" => "give it as --description",
        "backend" => "give it as --backend",
        "fromSnapshot" => "use volbridge volume clone NAME --from-snapshot SNAPSHOT",
        "cloneOf" => "use volbridge volume clone NAME --from-volume VOLUME",
        "mountOptions" => {
            "mount options are given at each mount: volbridge volume mount NAME PATH -m noatime"
        }
        "readOnly" => {
            "read-only is chosen at each mount: volbridge volume mount NAME PATH --read-only"
        }
        "volumeName" | "autoCreate" => "it is an option of the FlexVolume driver",
        _ => return None,
    })
}

/// The options `front_end` knows, in table order.
pub fn known(front_end: FrontEnd) -> impl Iterator<Item = &'static OptionSpec> {
    OPTIONS.iter().filter(move |o| o.known_to(front_end))
}

/// The refusal of an option outside the table.
fn unknown(front_end: FrontEnd, key: &str) -> OptionError {
    let names: Vec<&str> = known(front_end).map(|o| o.name).collect();
    // The CLI's `-o` knows few names; a typo of one of the table's others (`sise`) is
    // pointed at the flag that takes it.
    let candidates: Vec<&str> = match front_end {
        FrontEnd::Cli => OPTIONS.iter().map(|o| o.name).collect(),
        _ => names.clone(),
    };
    let nearest = candidates
        .iter()
        .map(|n| {
            (
                distance(&key.to_ascii_lowercase(), &n.to_ascii_lowercase()),
                n,
            )
        })
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| match (front_end, cli_flag_of(n)) {
            (FrontEnd::Cli, Some(flag)) if !names.contains(n) => {
                format!(" (did you mean {n}? {flag})")
            }
            _ => format!(" (did you mean {n}?)"),
        })
        .unwrap_or_default();
    let mut key_shown = shown(key);
    if key_shown.chars().count() > 32 {
        key_shown = key_shown.chars().take(31).collect::<String>() + "…";
    }
    OptionError(format!(
        "unknown option \"{key_shown}\"{nearest}; known: {}; give a backend's own setting as {CSP_PREFIX}<name>=<value>",
        names.join(", ")
    ))
}

/// Edit distance (Levenshtein) of two short ASCII-lowercased names.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Checks `pairs` as `front_end`'s options. Flex: a known option with an empty value counts
/// as not given (PV templates often carry `fsType: ""`).
pub fn parse<'a>(
    front_end: FrontEnd,
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Options, OptionError> {
    let mut o = Options::default();
    for (key, value) in pairs {
        if key.is_empty() {
            return bad("an option has an empty name");
        }
        if starts_with_ignore_case(key, RESERVED_PREFIX) {
            return bad(format!(
                "{}: options starting with '{RESERVED_PREFIX}' are reserved",
                shown(key)
            ));
        }
        let canonical = if starts_with_ignore_case(key, CSP_PREFIX) {
            let setting = &key[CSP_PREFIX.len()..];
            check_setting_name(key, setting)?;
            format!("{CSP_PREFIX}{setting}")
        } else if let Some(flag) = (front_end == FrontEnd::Cli)
            .then(|| cli_flag_of(key))
            .flatten()
        {
            return bad(format!(
                "{} is not an -o option of the CLI: {flag}",
                shown(key)
            ));
        } else {
            known(front_end)
                .find(|k| k.name.eq_ignore_ascii_case(key))
                .ok_or_else(|| unknown(front_end, key))?
                .name
                .to_owned()
        };
        if let Some(other) = o.given.keys().find(|k| k.eq_ignore_ascii_case(&canonical)) {
            return bad(format!(
                "{other} and {} are the same option given twice",
                shown(key)
            ));
        }
        o.given.insert(canonical.clone(), value.to_owned());
        if front_end == FrontEnd::Flex && value.trim().is_empty() && canonical != "description" {
            continue;
        }
        o.apply(&canonical, value)?;
    }
    if o.from_snapshot.is_some() && o.clone_of.is_some() {
        return bad("fromSnapshot and cloneOf cannot be combined");
    }
    if o.mkfs_options.is_some() && (o.from_snapshot.is_some() || o.clone_of.is_some()) {
        return bad(
            "mkfsOptions cannot be combined with fromSnapshot or cloneOf (a clone is never formatted)",
        );
    }
    // Checked here when the filesystem is named with them (FlexVolume names it outside this
    // table, in kubernetes.io/fsType); the node checks them again, always, before mkfs.
    if let (Some(m), Some(fs_type)) = (&o.mkfs_options, &o.fs_type) {
        if let Err(why) = crate::mkfs_args::check(fs_type, m) {
            return bad(format!("mkfsOptions={m:?}: {why}"));
        }
    }
    Ok(o)
}

fn starts_with_ignore_case(text: &str, prefix: &str) -> bool {
    text.len() >= prefix.len()
        && text.is_char_boundary(prefix.len())
        && text[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// A backend setting's name: letters, digits, `_`, `-`, `.`.
fn check_setting_name(key: &str, setting: &str) -> Result<(), OptionError> {
    if setting.is_empty()
        || !setting
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return bad(format!(
            "{}: a backend setting is {CSP_PREFIX}<name>, the name of letters, digits, '_', '-', '.'",
            shown(key)
        ));
    }
    Ok(())
}

impl Options {
    /// The volume's CSP `config`: the CSP settings and `csp.<name>` ones ([`Options::csp`]),
    /// and how the first format is made under the publish context's keys (`fsType`,
    /// `fsCreateOptions`, `fsOwner`, `fsMode`), which the node reads back at its first stage.
    pub fn volume_config(&self) -> BTreeMap<String, String> {
        let mut config = self.csp.clone();
        if let Some(fs) = &self.fs_type {
            config.insert("fsType".into(), fs.clone());
        }
        if let Some(m) = &self.mkfs_options {
            config.insert("fsCreateOptions".into(), m.clone());
        }
        if let Some((uid, gid)) = self.fs_owner {
            config.insert("fsOwner".into(), format!("{uid}:{gid}"));
        }
        if self.fs_mode.is_some() {
            if let Some(given) = self.given.get("fsMode") {
                config.insert("fsMode".into(), given.trim().to_owned());
            }
        }
        config
    }

    fn apply(&mut self, key: &str, raw: &str) -> Result<(), OptionError> {
        let value = raw.trim();
        if let Some(setting) = key.strip_prefix(CSP_PREFIX) {
            self.csp.insert(setting.to_owned(), raw.to_owned());
            return Ok(());
        }
        match key {
            "size" => self.size = Some(size(raw)?),
            "fsType" => self.fs_type = Some(fs_type(key, raw)?),
            "mkfsOptions" => self.mkfs_options = Some(mkfs_options(raw)?),
            "mountOptions" => self.mount_options = mount_options(raw)?,
            "fsOwner" => self.fs_owner = Some(fs_owner(raw)?),
            "fsMode" => self.fs_mode = Some(fs_mode(raw)?),
            "description" => {
                if raw.len() > MAX_DESCRIPTION || raw.chars().any(char::is_control) {
                    return bad(format!(
                        "description is {} bytes; accepted is one line of at most {MAX_DESCRIPTION} bytes",
                        raw.len()
                    ));
                }
                self.description = Some(raw.to_owned());
            }
            "fromSnapshot" => self.from_snapshot = Some(reference(key, value, "snapshot")?),
            "cloneOf" => self.clone_of = Some(reference(key, value, "volume")?),
            "volumeName" => self.volume_name = Some(reference(key, value, "volume")?),
            "readOnly" => self.read_only = boolean(key, value)?,
            "autoCreate" => self.auto_create = boolean(key, value)?,
            "backend" => {
                if check_stored_name(value).is_err() {
                    return bad(format!("backend={raw:?} is not a backend name"));
                }
                self.backend = Some(value.to_owned());
            }
            setting if CSP_SETTINGS.contains(&setting) => {
                let b = boolean(key, value)?;
                self.csp.insert(setting.to_owned(), b.to_string());
            }
            _ => unreachable!("every option of the table is applied"),
        }
        Ok(())
    }
}

/// A size in the one grammar of [`crate::units`], worded as docker-volume-plugin.md §13.
pub fn size(text: &str) -> Result<u64, OptionError> {
    parse_size(text).map_err(|e| {
        OptionError(match e {
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

/// `ext4`, `xfs` or `btrfs`, any case, as lower case (`key`: `fsType`, or kubelet's
/// `kubernetes.io/fsType`).
pub fn fs_type(key: &str, raw: &str) -> Result<String, OptionError> {
    let lower = raw.trim().to_ascii_lowercase();
    if FS_TYPES.contains(&lower.as_str()) {
        Ok(lower)
    } else {
        bad(format!(
            "{key}={raw:?}: accepted values are {}",
            FS_TYPES.join(", ")
        ))
    }
}

fn boolean(key: &str, value: &str) -> Result<bool, OptionError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => bad(format!(
            "{key}={value:?}: accepted values are true, false, 1, 0"
        )),
    }
}

fn mkfs_options(raw: &str) -> Result<String, OptionError> {
    let tokens: Vec<&str> = raw.split_whitespace().collect();
    if tokens
        .iter()
        .any(|t| t.chars().any(|c| "'\"`$\\;&|<>".contains(c)))
    {
        return bad(format!(
            "mkfsOptions={raw:?}: plain whitespace-separated arguments only, no quoting"
        ));
    }
    Ok(tokens.join(" "))
}

/// Whether a mount option is one volbridge refuses in every front end (`ro`, `rw`, `bind`,
/// `rbind`, `remount`, any case, with or without `=value`): read-only is a setting of its
/// own, and volbridge makes the bind mounts itself. The option's name, lower-cased, when it is.
pub fn refused_mount_option(option: &str) -> Option<String> {
    mount_option_in(option, &FORBIDDEN_MOUNT_OPTIONS)
}

/// The option's name (before any `=`), lower-cased, when it is one of `names`.
fn mount_option_in(option: &str, names: &[&str]) -> Option<String> {
    let name = option
        .trim()
        .split('=')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    names.contains(&name.as_str()).then_some(name)
}

/// Whether a mount option names another device or file for the filesystem (`logdev=`,
/// `rtdev=`, `journal_path=`, `journal_dev=`, `device=`): a volume's mount uses the volume
/// only, so whoever sets mount options cannot have the node's other disks written. The
/// option's name, lower-cased, when it does.
pub fn device_mount_option(option: &str) -> Option<String> {
    mount_option_in(option, &DEVICE_MOUNT_OPTIONS)
}

fn mount_options(raw: &str) -> Result<Vec<String>, OptionError> {
    let mut list = Vec::new();
    for o in raw.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        if refused_mount_option(o).is_some() {
            return bad(format!(
                "mountOptions={raw:?}: {o:?} is not allowed (ro, rw, bind, rbind, remount are refused; use readOnly=true)"
            ));
        }
        if let Some(name) = device_mount_option(o) {
            return bad(format!(
                "mountOptions={raw:?}: {name} names another device; a volume is mounted from \
                 its own device only"
            ));
        }
        if o.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return bad(format!(
                "mountOptions={raw:?}: a comma-separated list such as noatime,discard"
            ));
        }
        list.push(o.to_owned());
    }
    Ok(list)
}

fn fs_owner(raw: &str) -> Result<(u32, u32), OptionError> {
    raw.trim()
        .split_once(':')
        .and_then(|(u, g)| Some((u.parse::<u32>().ok()?, g.parse::<u32>().ok()?)))
        .ok_or_else(|| {
            OptionError(format!(
                "fsOwner={raw:?}: accepted values are uid:gid in decimal (e.g. fsOwner=999:999)"
            ))
        })
}

fn fs_mode(raw: &str) -> Result<u32, OptionError> {
    let v = raw.trim();
    if (3..=4).contains(&v.len()) && v.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        if let Ok(mode) = u32::from_str_radix(v, 8) {
            return Ok(mode);
        }
    }
    bad(format!(
        "fsMode={raw:?}: accepted values are octal modes of 3 or 4 digits (e.g. 755, 0770, 1777)"
    ))
}

/// The name of an existing volume or snapshot: the stored-name rule, so volumes made before
/// the user-name rule can still be named.
fn reference(key: &str, value: &str, what: &str) -> Result<String, OptionError> {
    if check_stored_name(value).is_err() {
        return bad(format!("{key}={value:?} is not a {what} name"));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests;
