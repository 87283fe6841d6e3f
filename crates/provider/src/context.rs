//! Volume context (B38) and publish context (csp-api.md §6): the flat string maps that
//! travel from the controller side to the node.

use std::collections::BTreeMap;

use serde_json::Value;
use volbridge_proto::csp::{snake_to_camel, PublishInfo, SecondaryLunInfo, Volume, PROTOCOL_LOCAL};
use volbridge_proto::lenient;

use volbridge_base::error::{Error, Result};

use volbridge_proto::publish_context::*;

/// A volume's response `config` as camelCase strings (B38); non-strings as compact JSON,
/// `null`s dropped.
pub fn volume_context(v: &Volume) -> BTreeMap<String, String> {
    v.config
        .iter()
        .flatten()
        .filter(|(_, value)| !value.is_null())
        .map(|(k, value)| {
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (snake_to_camel(k), text)
        })
        .collect()
}

/// What the publish context is built from.
#[derive(Clone, Copy, Debug)]
pub struct PublishContextInput<'a> {
    pub info: &'a PublishInfo,
    pub volume: &'a Volume,
    pub read_only: bool,
    /// `Some` for filesystem access: the fs type of the requested mount capability (may be
    /// `""`); `None` for raw block access, which leaves out the `fs*` keys.
    pub fs_type: Option<&'a str>,
    pub volume_context: &'a BTreeMap<String, String>,
}

/// §6: every key, exact camelCase. Refuses (Internal) an answer a node could not use.
pub fn publish_context(input: &PublishContextInput) -> Result<BTreeMap<String, String>> {
    let info = input.info;
    let vc = input.volume_context;
    let from_volume = volume_context(input.volume);
    let lookup = |key: &str| -> Option<String> {
        vc.get(key)
            .or_else(|| from_volume.get(key))
            .filter(|v| !v.is_empty())
            .cloned()
    };
    if info.serial_number.is_empty() {
        return Err(Error::internal("CSP publish answer has no serial_number"));
    }
    let protocol = Some(info.access_protocol.clone())
        .filter(|p| !p.is_empty())
        .or_else(|| lookup("accessProtocol"))
        .ok_or_else(|| Error::internal("CSP publish answer has no access_protocol"))?
        .to_ascii_lowercase();
    let lun = info.lun_id.unwrap_or(0);
    if lun < 0 {
        return Err(Error::internal(format!("CSP returned invalid LUN {lun}")));
    }
    let mut ctx = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        ctx.insert(k.to_owned(), v);
    };
    put(KEY_SERIAL, info.serial_number.clone());
    put(KEY_PROTOCOL, protocol.clone());
    put(
        KEY_TARGET_NAMES,
        lenient::split_names(info.target_names.iter().map(String::as_str)).join(","),
    );
    put(
        KEY_TARGET_SCOPE,
        lookup(KEY_TARGET_SCOPE).unwrap_or_else(|| "group".to_owned()),
    );
    put(KEY_LUN, lun.to_string());
    put(
        KEY_DISCOVERY_IPS,
        lenient::split_names(info.discovery_ips.iter().map(String::as_str)).join(","),
    );
    if protocol == "nvmetcp" {
        put(
            KEY_TARGET_PORT,
            info.target_port
                .clone()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| DEFAULT_NVME_PORT.to_owned()),
        );
    }
    if !info.peer_array_details.is_empty() {
        let peers = info
            .peer_array_details
            .iter()
            .map(|p| {
                let lun = p.lun_id.unwrap_or(0);
                if lun < 0 {
                    return Err(Error::internal(format!("CSP returned invalid LUN {lun}")));
                }
                Ok(SecondaryLunInfo {
                    lun_id: Some(lun),
                    ..p.clone()
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let json = serde_json::json!({ "PeerArrayDetails": peers });
        put(KEY_SECONDARY, json.to_string());
    }
    if protocol == "iscsi" {
        if let (Some(user), Some(pass)) = (&info.chap_user, &info.chap_password) {
            if !user.is_empty() && !pass.is_empty() {
                put(KEY_CHAP_USER, user.clone());
                put(KEY_CHAP_PASSWORD, pass.clone());
            }
        }
    }
    put(KEY_READ_ONLY, input.read_only.to_string());
    if let Some(requested) = input.fs_type {
        put(
            KEY_FS_TYPE,
            lookup(KEY_FS_TYPE).unwrap_or_else(|| requested.to_owned()),
        );
        for key in [KEY_FS_OWNER, KEY_FS_MODE, KEY_FS_CREATE_OPTIONS] {
            put(key, lookup(key).unwrap_or_default());
        }
    }
    if protocol == PROTOCOL_LOCAL {
        let path = info
            .local_path
            .clone()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| Error::internal("CSP publish answer for 'local' has no local_path"))?;
        put(KEY_LOCAL_PATH, path);
    }
    Ok(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use volbridge_host::target::{AttachTarget, TargetScope};
    use volbridge_host::PublishedVolume;

    fn volume(config: Value) -> Volume {
        Volume {
            id: Some("v1".into()),
            config: config.as_object().cloned(),
            ..Default::default()
        }
    }

    #[test]
    fn volume_context_converts_keys_and_values() {
        let v = volume(serde_json::json!({
            "access_protocol": "iscsi", "multi_initiator": true, "limit_iops": 42,
            "background_operation_status": "Completed", "gone": null, "volume_1": "x"
        }));
        let vc = volume_context(&v);
        assert_eq!(vc["accessProtocol"], "iscsi");
        assert_eq!(vc["multiInitiator"], "true");
        assert_eq!(vc["limitIops"], "42");
        assert_eq!(vc["backgroundOperationStatus"], "Completed");
        assert_eq!(vc["volume_1"], "x");
        assert!(!vc.contains_key("gone"));
    }

    fn info(json: Value) -> PublishInfo {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn iscsi_context_with_chap_and_peers() {
        let pi = info(serde_json::json!({
            "serial_number": "600ABC", "access_protocol": "ISCSI", "lun_id": 7,
            "target_names": ["iqn.a,iqn.b"], "discovery_ips": "10.0.0.1, 10.0.0.2",
            "chap_user": "u", "chap_password": "chap-secret",
            "PeerArrayDetails": [{"target_names": ["iqn.p"], "discovery_ips": ["10.1.0.1"]}]
        }));
        let v = volume(serde_json::json!({"target_scope": "volume"}));
        let vc = BTreeMap::from([("fsOwner".to_owned(), "10:20".to_owned())]);
        let ctx = publish_context(&PublishContextInput {
            info: &pi,
            volume: &v,
            read_only: true,
            fs_type: Some("ext4"),
            volume_context: &vc,
        })
        .unwrap();
        assert_eq!(ctx[KEY_SERIAL], "600ABC");
        assert_eq!(ctx[KEY_PROTOCOL], "iscsi");
        assert_eq!(ctx[KEY_TARGET_NAMES], "iqn.a,iqn.b");
        assert_eq!(ctx[KEY_DISCOVERY_IPS], "10.0.0.1,10.0.0.2");
        assert_eq!(ctx[KEY_TARGET_SCOPE], "volume");
        assert_eq!(ctx[KEY_LUN], "7");
        assert_eq!(ctx[KEY_READ_ONLY], "true");
        assert_eq!(ctx[KEY_FS_TYPE], "ext4");
        assert_eq!(ctx[KEY_FS_OWNER], "10:20");
        assert_eq!(ctx[KEY_FS_MODE], "");
        assert_eq!(ctx[KEY_CHAP_PASSWORD], "chap-secret");
        assert!(!ctx.contains_key(KEY_TARGET_PORT));
        assert!(!ctx.contains_key(KEY_LOCAL_PATH));
        let peers: Value = serde_json::from_str(&ctx[KEY_SECONDARY]).unwrap();
        assert_eq!(peers["PeerArrayDetails"][0]["lun_id"], 0);
        let parsed = PublishedVolume::parse("v1", &ctx).unwrap();
        let AttachTarget::Iscsi(t) = &parsed.target else {
            panic!("{parsed:?}")
        };
        assert_eq!(t.primary.iqns, ["iqn.a", "iqn.b"]);
        assert_eq!(t.lun, 7);
        assert_eq!(t.scope, TargetScope::Volume);
        assert_eq!(t.peers[0].iqns, ["iqn.p"]);
        assert_eq!(parsed.filesystem.owner, "10:20");
        assert!(!format!("{parsed:?}").contains("chap-secret"));
    }

    #[test]
    fn nvme_and_local_and_block() {
        let v = volume(serde_json::json!({}));
        let vc = BTreeMap::new();
        let nvme = info(
            serde_json::json!({"serial_number": "eui.1", "access_protocol": "nvmetcp",
            "target_names": ["nqn.x"], "discovery_ips": ["10.0.0.9"]}),
        );
        let ctx = publish_context(&PublishContextInput {
            info: &nvme,
            volume: &v,
            read_only: false,
            fs_type: None,
            volume_context: &vc,
        })
        .unwrap();
        assert_eq!(ctx[KEY_TARGET_PORT], "4420");
        assert_eq!(ctx[KEY_TARGET_SCOPE], "group");
        assert_eq!(ctx[KEY_LUN], "0");
        assert!(!ctx.contains_key(KEY_FS_TYPE));
        let local = info(
            serde_json::json!({"serial_number": "abc", "access_protocol": "local",
            "lun_id": 0, "target_names": [], "discovery_ips": [], "local_path": "/d/volumes/abc.img"}),
        );
        let input = PublishContextInput {
            info: &local,
            volume: &v,
            read_only: false,
            fs_type: Some(""),
            volume_context: &vc,
        };
        let ctx = publish_context(&input).unwrap();
        assert_eq!(ctx[KEY_LOCAL_PATH], "/d/volumes/abc.img");
        assert_eq!(ctx[KEY_TARGET_NAMES], "");
        assert_eq!(ctx[KEY_FS_TYPE], "");
        let parsed = PublishedVolume::parse("abc", &ctx).unwrap();
        assert!(matches!(parsed.target, AttachTarget::Local(_)));
        let mut broken = local.clone();
        broken.local_path = None;
        assert!(publish_context(&PublishContextInput {
            info: &broken,
            ..input
        })
        .is_err());
        broken = local.clone();
        broken.lun_id = Some(-2);
        assert!(publish_context(&PublishContextInput {
            info: &broken,
            ..input
        })
        .is_err());
    }

    #[test]
    fn node_parsing_rejects_bad_lun() {
        let mut m = BTreeMap::from([
            (KEY_PROTOCOL.to_owned(), "fc".to_owned()),
            (KEY_SERIAL.to_owned(), "600a".to_owned()),
        ]);
        let lun = |m: &BTreeMap<String, String>| -> Result<u32> {
            match PublishedVolume::parse("v", m)?.target {
                AttachTarget::Fc(t) => Ok(t.lun),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(lun(&m).unwrap(), 0);
        m.insert(KEY_LUN.to_owned(), "-1".to_owned());
        assert!(lun(&m).is_err());
    }
}
