//! The publish context as a node reads it (csp-api.md §6): the wire map, whose keys are
//! `volbridge_proto::publish_context`, parsed into the fields the attach layer uses.

use std::collections::BTreeMap;
use std::fmt;

use volbridge_base::{Error, Result};
use volbridge_proto::csp::SecondaryLunInfo;
use volbridge_proto::lenient;
use volbridge_proto::publish_context::*;

/// The publish context as a node reads it (§6, node-side parsing). `Debug` hides the CHAP
/// password.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PublishContext {
    pub serial_number: String,
    pub access_protocol: String,
    pub target_names: Vec<String>,
    pub target_scope: String,
    pub lun_id: u32,
    pub discovery_ips: Vec<String>,
    pub target_port: String,
    /// Raw `secondaryArrayDetailsKey` JSON, `""` without peers.
    pub secondary_array_details: String,
    pub chap_user: String,
    pub chap_password: String,
    pub read_only: bool,
    pub fs_type: String,
    pub fs_owner: String,
    pub fs_mode: String,
    pub fs_create_options: String,
    pub local_path: String,
    pub export_ip: String,
    pub mount_path: String,
}

impl PublishContext {
    /// Missing keys read as `""`; lists split on `,` without empties; `lunId` must be a u32.
    pub fn parse(map: &BTreeMap<String, String>) -> Result<PublishContext> {
        let get = |k: &str| map.get(k).cloned().unwrap_or_default();
        let list = |k: &str| lenient::split_names(map.get(k).map(String::as_str));
        let lun = get(KEY_LUN);
        let lun_id = if lun.is_empty() {
            0
        } else {
            lun.trim()
                .parse::<u32>()
                .map_err(|_| Error::invalid(KEY_LUN, format!("'{lun}' is not a LUN number")))?
        };
        let read_only = get(KEY_READ_ONLY);
        Ok(PublishContext {
            serial_number: get(KEY_SERIAL),
            access_protocol: get(KEY_PROTOCOL).to_ascii_lowercase(),
            target_names: list(KEY_TARGET_NAMES),
            target_scope: get(KEY_TARGET_SCOPE),
            lun_id,
            discovery_ips: list(KEY_DISCOVERY_IPS),
            target_port: get(KEY_TARGET_PORT),
            secondary_array_details: get(KEY_SECONDARY),
            chap_user: get(KEY_CHAP_USER),
            chap_password: get(KEY_CHAP_PASSWORD),
            read_only: read_only.trim().eq_ignore_ascii_case("true"),
            fs_type: get(KEY_FS_TYPE),
            fs_owner: get(KEY_FS_OWNER),
            fs_mode: get(KEY_FS_MODE),
            fs_create_options: get(KEY_FS_CREATE_OPTIONS),
            local_path: get(KEY_LOCAL_PATH),
            export_ip: get(KEY_EXPORT_IP),
            mount_path: get(KEY_MOUNT_PATH),
        })
    }

    /// The peers of `secondaryArrayDetailsKey`, empty without any.
    pub fn peers(&self) -> Result<Vec<SecondaryLunInfo>> {
        #[derive(serde::Deserialize)]
        struct Wrapper {
            #[serde(rename = "PeerArrayDetails", default)]
            peers: Vec<SecondaryLunInfo>,
        }
        if self.secondary_array_details.is_empty() {
            return Ok(Vec::new());
        }
        serde_json::from_str::<Wrapper>(&self.secondary_array_details)
            .map(|w| w.peers)
            .map_err(|e| Error::invalid(KEY_SECONDARY, e.to_string()))
    }
}

impl fmt::Debug for PublishContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishContext")
            .field("serial_number", &self.serial_number)
            .field("access_protocol", &self.access_protocol)
            .field("target_names", &self.target_names)
            .field("target_scope", &self.target_scope)
            .field("lun_id", &self.lun_id)
            .field("discovery_ips", &self.discovery_ips)
            .field("target_port", &self.target_port)
            .field("chap_user", &self.chap_user)
            .field(
                "chap_password",
                &if self.chap_password.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("read_only", &self.read_only)
            .field("fs_type", &self.fs_type)
            .field("local_path", &self.local_path)
            .finish_non_exhaustive()
    }
}
