//! The publish context (csp-api.md §6): the string map a controller hands to a node, built
//! from the CSP's PublishInfo by the provider and parsed by the host's attach layer. These
//! key names are the contract between the two; neither side spells them on its own.

/// Default NVMe/TCP port when the CSP gives none (§6, D19).
pub const DEFAULT_NVME_PORT: &str = "4420";

pub const KEY_SERIAL: &str = "serialNumber";
pub const KEY_PROTOCOL: &str = "accessProtocol";
pub const KEY_TARGET_NAMES: &str = "targetNames";
pub const KEY_TARGET_SCOPE: &str = "targetScope";
pub const KEY_LUN: &str = "lunId";
pub const KEY_DISCOVERY_IPS: &str = "discoveryIps";
pub const KEY_TARGET_PORT: &str = "targetPort";
pub const KEY_SECONDARY: &str = "secondaryArrayDetailsKey";
pub const KEY_CHAP_USER: &str = "chapUser";
pub const KEY_CHAP_PASSWORD: &str = "chapPassword";
pub const KEY_READ_ONLY: &str = "readOnly";
pub const KEY_FS_TYPE: &str = "fsType";
pub const KEY_FS_OWNER: &str = "fsOwner";
pub const KEY_FS_MODE: &str = "fsMode";
pub const KEY_FS_CREATE_OPTIONS: &str = "fsCreateOptions";
pub const KEY_LOCAL_PATH: &str = "localPath";
pub const KEY_EXPORT_IP: &str = "exportIP";
pub const KEY_MOUNT_PATH: &str = "mountPath";
