use super::*;

#[test]
fn key_conversion_matches_the_reference_table() {
    let table = [
        ("accessProtocol", "access_protocol", "accessProtocol"),
        ("destroyOnDelete", "destroy_on_delete", "destroyOnDelete"),
        ("fsCreateOptions", "fs_create_options", "fsCreateOptions"),
        ("limitMBPS", "limit_mbps", "limitMbps"),
        ("IOPSLimit", "iops_limit", "iopsLimit"),
        ("nfsPVC", "nfs_pvc", "nfsPvc"),
        ("description", "description", "description"),
    ];
    for (camel, snake, back) in table {
        assert_eq!(camel_to_snake(camel), snake, "{camel}");
        assert_eq!(snake_to_camel(snake), back, "{snake}");
    }
    assert_eq!(
        snake_to_camel("background_operation_status"),
        "backgroundOperationStatus"
    );
    assert_eq!(snake_to_camel("volume_1"), "volume_1");
}

#[test]
fn publish_info_accepts_reference_shapes() {
    let info: PublishInfo = serde_json::from_str(
        r#"{"serial_number":"ABC","access_protocol":"iscsi",
                "target_names":["iqn.1,iqn.2"],"discovery_ips":"10.0.0.1",
                "target_port":4420,"peerArrayDetails":[{"lun_id":"3"}],"extra":1}"#,
    )
    .unwrap();
    assert_eq!(info.lun_id, None);
    assert_eq!(info.target_names, ["iqn.1", "iqn.2"]);
    assert_eq!(info.discovery_ips, ["10.0.0.1"]);
    assert_eq!(info.target_port.as_deref(), Some("4420"));
    assert_eq!(info.peer_array_details[0].lun_id, Some(3));
    let out = serde_json::to_value(&info).unwrap();
    assert!(out.get("PeerArrayDetails").is_some());
}

#[test]
fn error_bodies_in_every_form() {
    let w = ErrorBody::parse(
        br#"{"errors":[{"code":"Conflict","message":"busy"}]}"#,
        "Conflict",
    );
    assert_eq!(w.message(), "busy");
    let b = ErrorBody::parse(
        br#"{"code":"Not Found","message":"no such group"}"#,
        "Not Found",
    );
    assert_eq!(b.errors[0].code, "Not Found");
    let t = ErrorBody::parse(b"<html>gateway</html>", "Bad Gateway");
    assert_eq!(t.errors[0].code, "Bad Gateway");
    assert_eq!(t.message(), "<html>gateway</html>");
    assert!(ErrorBody::is_canonical(
        br#"{"errors":[{"code":"Conflict","message":"x"}]}"#
    ));
    assert!(!ErrorBody::is_canonical(
        br#"{"code":"Conflict","message":"x"}"#
    ));
}

#[test]
fn volume_group_tri_state() {
    let v: Volume = serde_json::from_str(r#"{"volume_group_id":null}"#).unwrap();
    assert_eq!(v.volume_group_id, Some(None));
    let v: Volume = serde_json::from_str(r#"{"volume_group_id":""}"#).unwrap();
    assert_eq!(v.group_id(), None);
    let v: Volume = serde_json::from_str(r#"{"size":"1024","clone":"true"}"#).unwrap();
    assert_eq!((v.size, v.clone), (Some(1024), Some(true)));
}
