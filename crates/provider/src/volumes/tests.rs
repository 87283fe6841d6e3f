use super::*;

#[test]
fn params_become_snake_config() {
    let req = VolumeCreate {
        name: "v".into(),
        size: Some(1),
        description: None,
        params: [
            ("accessProtocol", "local"),
            ("destroyOnDelete", "false"),
            ("limitMBPS", "10"),
            ("description", "from params"),
            ("chapPassword", "hunter22"),
            ("csi.storage.k8s.io/provisioner-secret-name", "s"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        multi_initiator: true,
    };
    let (config, description) = create_config(&req);
    assert_eq!(description.as_deref(), Some("from params"));
    assert_eq!(config["access_protocol"], "local");
    assert_eq!(config["destroy_on_delete"], "false");
    assert_eq!(config["limit_mbps"], "10");
    assert_eq!(config["multi_initiator"], true);
    assert_eq!(config.len(), 4, "{config:?}");
    assert!(!serde_json::to_string(&config).unwrap().contains("hunter22"));
}

#[test]
fn explicit_description_wins() {
    let req = VolumeCreate {
        description: Some("top".into()),
        params: [("description".to_owned(), "p".to_owned())].into(),
        ..Default::default()
    };
    assert_eq!(create_config(&req).1.as_deref(), Some("top"));
}

#[test]
fn edit_removes_keys_with_null() {
    let params: BTreeMap<String, Option<String>> = [
        ("destroyOnDelete".to_owned(), None),
        ("fooBar".to_owned(), Some("1".into())),
    ]
    .into();
    let (config, _) = params_to_config(&params, |v| v.clone().map_or(Value::Null, Value::String));
    assert_eq!(config["destroy_on_delete"], Value::Null);
    assert_eq!(config["foo_bar"], "1");
}

#[test]
fn size_matching() {
    let v = |s| Volume {
        size: s,
        ..Default::default()
    };
    assert!(same_size(&v(Some(10)), Some(10)));
    assert!(same_size(&v(Some(0)), Some(10)));
    assert!(same_size(&v(None), Some(10)));
    assert!(same_size(&v(Some(10)), None));
    assert!(!same_size(&v(Some(10)), Some(20)));
    assert!(check_clone_size(Some(5), Some(10), "snapshot", "s").is_err());
    assert!(check_clone_size(Some(10), Some(10), "snapshot", "s").is_ok());
    assert!(check_clone_size(None, Some(10), "snapshot", "s").is_ok());
}

#[test]
fn temp_snapshot_suffix() {
    let h = volbridge_base::random::hex(4);
    assert_eq!(h.len(), 8);
    assert!(h.chars().all(|c| c.is_ascii_hexdigit()));
}
