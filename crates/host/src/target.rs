//! The publish context as a node reads it (csp-api.md §6): the wire map, whose keys are
//! `volbridge_proto::publish_context`, parsed once by [`PublishedVolume::parse`] into a
//! typed [`AttachTarget`], one variant per transport, each carrying exactly what its
//! transport needs, plus the settings a new filesystem takes. Nothing past the parse reads
//! the map.
//!
//! What a transport cannot work without is refused here, with the volume and the key named;
//! what only one step needs stays lenient, as §6 asks ("missing keys read as `""`"): iSCSI
//! discovery addresses (a host already logged in attaches without them), the target scope
//! (anything but `volume` is a shared `group` target), the LUN (`0`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use volbridge_base::error::{Error, ErrorKind, Object, Result};
use volbridge_proto::csp::SecondaryLunInfo;
use volbridge_proto::initiators::{self, InitiatorKind};
use volbridge_proto::lenient;
use volbridge_proto::publish_context::*;

/// A volume's publish context, parsed: how to attach it, and how to make its filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedVolume {
    pub target: AttachTarget,
    pub filesystem: FsSettings,
}

/// How a volume reaches this host: one variant per transport (`accessProtocol`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachTarget {
    /// `local` (csp-api.md §8.3): the CSP's backing file on a loop device.
    Local(LocalTarget),
    /// `iscsi`: open-iscsi sessions to the array's targets.
    Iscsi(IscsiTarget),
    /// `nvmetcp`: nvme-cli connections to the array's subsystems.
    NvmeTcp(NvmeTcpTarget),
    /// `fc`: a LUN the fabric already shows, found after an HBA rescan.
    Fc(FcTarget),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalTarget {
    /// `localPath` as the CSP gave it; the transport checks it is absolute, normalized and
    /// inside the directories this node attaches from.
    pub file: PathBuf,
    /// The loop device is bound read-only (`readOnly`).
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IscsiTarget {
    /// The LUN's WWID as the array reports it.
    pub serial: Serial,
    /// For messages: what to check on the array when the disk does not show.
    pub lun: u32,
    pub scope: TargetScope,
    /// The array the volume lives on: its paths are required.
    pub primary: IscsiArray,
    /// Replication or peer-persistence partners: their paths are welcome, not required.
    pub peers: Vec<IscsiArray>,
}

/// The targets of one array. `Debug` hides the CHAP secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IscsiArray {
    /// Target IQNs; never empty for the primary.
    pub iqns: Vec<String>,
    /// SendTargets discovery addresses, usually without a port (§4.5); only logging in to a
    /// target without a session needs them.
    pub portals: Vec<String>,
    pub chap: Option<Chap>,
}

/// A CHAP pair. `Debug` shows the user, never the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Chap {
    pub user: String,
    pub password: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvmeTcpTarget {
    /// The namespace's NGUID, EUI-64 or UUID as the array reports it.
    pub serial: Serial,
    /// Subsystem NQNs (`targetNames`); never empty.
    pub nqns: Vec<String>,
    /// NVMe/TCP addresses to connect to (`discoveryIps`); never empty.
    pub addresses: Vec<String>,
    pub port: u16,
    /// The namespace id (`lunId`), for messages.
    pub namespace: u32,
    pub scope: TargetScope,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FcTarget {
    /// The LUN's WWID as the array reports it.
    pub serial: Serial,
    /// For messages: what to check in the zoning and LUN mapping.
    pub lun: u32,
}

/// Whether a target belongs to this volume alone (`volume`: log out on detach) or is
/// shared by the array's volumes (`group`, the default: log out only when no other LUN of
/// it is left).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetScope {
    Group,
    Volume,
}

/// The identity a device is matched on (`serialNumber`), trimmed and never empty: without
/// one any device would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serial(String);

impl Serial {
    pub fn new(serial: &str) -> Result<Serial> {
        let serial = serial.trim();
        if serial.is_empty() {
            return Err(Error::invalid(KEY_SERIAL, "the device serial is empty"));
        }
        Ok(Serial(serial.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a filesystem made on the volume gets (`fsType`, `fsOwner`, `fsMode`,
/// `fsCreateOptions`). Owner and mode are checked when a filesystem is made, the only time
/// they apply: a volume formatted elsewhere never reads them, so a bad value must not stop
/// it from being staged or unstaged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FsSettings {
    /// `""`: whatever the volume holds, ext4 on a blank one.
    pub fs_type: String,
    /// `uid:gid`, `""` for none.
    pub owner: String,
    /// 1 to 4 octal digits, `""` for none.
    pub mode: String,
    /// Extra mkfs arguments.
    pub create_options: String,
}

/// The protocols [`PublishedVolume::parse`] knows, for the refusal of any other.
const PROTOCOLS: &str = "local, iscsi, nvmetcp and fc";

/// How to fix a publish context: it is the CSP's publish answer, passed on as it came.
const FIX: &str = "the CSP's publish answer must give it (csp-api.md §6); check the backend, \
                   then publish the volume to this node again";

impl PublishedVolume {
    /// Parses the wire map of volume `volume` (named in every error). Lists split on `,`
    /// without empties; a missing `lunId` is 0, a missing `targetPort` 4420.
    pub fn parse(volume: &str, map: &BTreeMap<String, String>) -> Result<PublishedVolume> {
        let wire = Wire { volume, map };
        let protocol = wire.get(KEY_PROTOCOL).trim().to_ascii_lowercase();
        let target = match protocol.as_str() {
            "local" => AttachTarget::Local(LocalTarget {
                file: PathBuf::from(wire.required(KEY_LOCAL_PATH, "the file to attach")?),
                read_only: wire.get(KEY_READ_ONLY).trim().eq_ignore_ascii_case("true"),
            }),
            "iscsi" => AttachTarget::Iscsi(wire.iscsi()?),
            "nvmetcp" => AttachTarget::NvmeTcp(NvmeTcpTarget {
                serial: wire.serial()?,
                nqns: wire.target_names(InitiatorKind::Nqn, "the NVMe subsystem NQN")?,
                addresses: wire
                    .addresses(wire.required_list(KEY_DISCOVERY_IPS, "the NVMe/TCP addresses")?)?,
                port: wire.port()?,
                namespace: wire.lun()?,
                scope: wire.scope(),
            }),
            "fc" => AttachTarget::Fc(FcTarget {
                serial: wire.serial()?,
                lun: wire.lun()?,
            }),
            "" => {
                return Err(wire.error(
                    KEY_PROTOCOL,
                    format!("{KEY_PROTOCOL} is missing (how the volume is attached)"),
                ))
            }
            other => {
                return Err(Error::new(
                    ErrorKind::Unimplemented,
                    format!(
                        "access protocol '{other}' of volume '{volume}' is not supported on \
                         this node (it attaches {PROTOCOLS}); publish the volume over one \
                         of them"
                    ),
                )
                .about(Object::Volume(volume.to_owned())))
            }
        };
        Ok(PublishedVolume {
            target,
            filesystem: FsSettings {
                fs_type: wire.get(KEY_FS_TYPE),
                owner: wire.get(KEY_FS_OWNER),
                mode: wire.get(KEY_FS_MODE),
                create_options: wire.get(KEY_FS_CREATE_OPTIONS),
            },
        })
    }
}

/// The map and the volume it belongs to, for errors that name both.
struct Wire<'a> {
    volume: &'a str,
    map: &'a BTreeMap<String, String>,
}

impl Wire<'_> {
    fn get(&self, key: &str) -> String {
        self.map.get(key).cloned().unwrap_or_default()
    }

    fn list(&self, key: &str) -> Vec<String> {
        lenient::split_names(self.map.get(key).map(String::as_str))
    }

    /// InvalidArgument about the volume, naming the key, with the fix.
    fn error(&self, key: &str, what: impl fmt::Display) -> Error {
        let mut e = Error::new(
            ErrorKind::InvalidArgument,
            format!("publish context of volume '{}': {what}; {FIX}", self.volume),
        );
        e.field = Some(key.to_owned());
        e.about(Object::Volume(self.volume.to_owned()))
    }

    fn missing(&self, key: &str, what: &str) -> Error {
        self.error(key, format!("{key} is missing ({what})"))
    }

    fn required(&self, key: &str, what: &str) -> Result<String> {
        let value = self.get(key);
        match value.trim().is_empty() {
            true => Err(self.missing(key, what)),
            false => Ok(value),
        }
    }

    fn required_list(&self, key: &str, what: &str) -> Result<Vec<String>> {
        let list = self.list(key);
        match list.is_empty() {
            true => Err(self.missing(key, what)),
            false => Ok(list),
        }
    }

    fn serial(&self) -> Result<Serial> {
        Serial::new(&self.get(KEY_SERIAL))
            .map_err(|_| self.missing(KEY_SERIAL, "the identity the device is found by"))
    }

    fn lun(&self) -> Result<u32> {
        let lun = self.get(KEY_LUN);
        match lun.trim() {
            "" => Ok(0),
            n => n.parse().map_err(|_| {
                self.error(
                    KEY_LUN,
                    format!("{KEY_LUN} '{lun}' is not a LUN number (0 to {})", u32::MAX),
                )
            }),
        }
    }

    fn port(&self) -> Result<u16> {
        let port = self.get(KEY_TARGET_PORT);
        let port = match port.trim() {
            "" => DEFAULT_NVME_PORT,
            p => p,
        };
        port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
            self.error(
                KEY_TARGET_PORT,
                format!("{KEY_TARGET_PORT} '{port}' is not a TCP port (1 to 65535)"),
            )
        })
    }

    fn scope(&self) -> TargetScope {
        match self
            .get(KEY_TARGET_SCOPE)
            .trim()
            .eq_ignore_ascii_case("volume")
        {
            true => TargetScope::Volume,
            false => TargetScope::Group,
        }
    }

    /// The target names of `targetNames`, each an IQN or NQN: they become iscsiadm and
    /// nvme-cli arguments and open-iscsi's node record paths.
    fn target_names(&self, kind: InitiatorKind, what: &str) -> Result<Vec<String>> {
        let names = self.required_list(KEY_TARGET_NAMES, what)?;
        self.checked_names(KEY_TARGET_NAMES, kind, names)
    }

    fn checked_names(
        &self,
        key: &str,
        kind: InitiatorKind,
        names: Vec<String>,
    ) -> Result<Vec<String>> {
        for name in &names {
            if let Err(why) = initiators::check(kind, name) {
                let noun = match kind {
                    InitiatorKind::Iqn => "an iSCSI target name (IQN)",
                    InitiatorKind::Nqn => "an NVMe subsystem NQN",
                };
                return Err(self.error(
                    key,
                    format!("{key} '{}' is not {noun}: {why}", name.escape_debug()),
                ));
            }
        }
        Ok(names)
    }

    /// Discovery addresses: an IP or host name with an optional port, as iscsiadm `-p` and
    /// nvme-cli `-a` take them. Nothing else reaches them (a line break would add settings
    /// to the kernel's fabrics options or to an open-iscsi record).
    fn addresses(&self, list: Vec<String>) -> Result<Vec<String>> {
        for a in &list {
            let plain = a.len() <= 255
                && a.chars().all(|c| {
                    c.is_ascii_alphanumeric()
                        || matches!(c, '.' | ':' | '-' | '[' | ']' | '%' | '_')
                });
            if !plain {
                return Err(self.error(
                    KEY_DISCOVERY_IPS,
                    format!(
                        "{KEY_DISCOVERY_IPS} '{}' is not an address (an IP or host name, with \
                         :port if not the default)",
                        a.escape_debug()
                    ),
                ));
            }
        }
        Ok(list)
    }

    /// A CHAP name or secret: iscsiadm writes it into a one-line node record, so it may not
    /// hold a control character; the error never shows the value.
    fn chap(&self, key: &str, user: String, password: String) -> Result<Chap> {
        for (field, value) in [(KEY_CHAP_USER, &user), (KEY_CHAP_PASSWORD, &password)] {
            if value.len() > 255 || value.chars().any(char::is_control) {
                return Err(self.error(
                    key,
                    format!(
                        "{field} is longer than 255 bytes or holds a control character \
                         (a line break would add settings to the node's iSCSI record)"
                    ),
                ));
            }
        }
        Ok(Chap { user, password })
    }

    fn iscsi(&self) -> Result<IscsiTarget> {
        let user = self.get(KEY_CHAP_USER);
        let chap = match user.is_empty() {
            true => None,
            false => Some(self.chap(KEY_CHAP_USER, user, self.get(KEY_CHAP_PASSWORD))?),
        };
        let mut peers = Vec::new();
        for peer in self.peers()? {
            // A peer array without its own CHAP pair takes the host's, which the CSP set on
            // both arrays.
            let peer_chap = match peer.chap_user.filter(|u| !u.is_empty()) {
                Some(user) => {
                    Some(self.chap(KEY_SECONDARY, user, peer.chap_password.unwrap_or_default())?)
                }
                None => chap.clone(),
            };
            peers.push(IscsiArray {
                iqns: self.checked_names(KEY_SECONDARY, InitiatorKind::Iqn, peer.target_names)?,
                portals: self.addresses(peer.discovery_ips)?,
                chap: peer_chap,
            });
        }
        Ok(IscsiTarget {
            serial: self.serial()?,
            lun: self.lun()?,
            scope: self.scope(),
            primary: IscsiArray {
                iqns: self.target_names(InitiatorKind::Iqn, "the iSCSI targets to log in to")?,
                portals: self.addresses(self.list(KEY_DISCOVERY_IPS))?,
                chap,
            },
            peers,
        })
    }

    /// The peers of `secondaryArrayDetailsKey`, empty without any.
    fn peers(&self) -> Result<Vec<SecondaryLunInfo>> {
        #[derive(serde::Deserialize)]
        struct Wrapper {
            #[serde(rename = "PeerArrayDetails", default)]
            peers: Vec<SecondaryLunInfo>,
        }
        let details = self.get(KEY_SECONDARY);
        if details.is_empty() {
            return Ok(Vec::new());
        }
        serde_json::from_str::<Wrapper>(&details)
            .map(|w| w.peers)
            .map_err(|e| {
                self.error(
                    KEY_SECONDARY,
                    // serde's text may quote a value (a peer's CHAP secret): only where.
                    format!(
                        "{KEY_SECONDARY} is not the JSON of the peer arrays (at line {}, \
                         column {})",
                        e.line(),
                        e.column()
                    ),
                )
            })
    }
}

impl fmt::Debug for Chap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chap")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests;
