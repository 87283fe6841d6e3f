use super::*;

/// `etc/volbridge.toml` with its examples uncommented: `# key = …` and `# [section]`.
fn shipped_uncommented() -> String {
    include_str!("../../etc/volbridge.toml")
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest)
                if rest.starts_with('[')
                    || rest.split_once(" = ").is_some_and(|(k, _)| {
                        k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    }) =>
            {
                rest
            }
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn shipped_config_is_the_defaults_and_names_every_key() {
    let shipped = Config::parse(include_str!("../../etc/volbridge.toml")).unwrap();
    let defaults = Config::default().shown_toml().unwrap();
    assert_eq!(shipped.shown_toml().unwrap(), defaults, "all commented out");
    let text = shipped_uncommented();
    Config::parse(&text).unwrap_or_else(|e| panic!("{}:\n{text}", e.message));
    let all: toml::Table = text.parse().unwrap();
    let want: toml::Table = defaults.parse().unwrap();
    for (key, value) in &want {
        match value {
            toml::Value::Table(section) => {
                for k in section.keys() {
                    assert!(all[key].get(k).is_some(), "[{key}] {k} not in the file");
                }
            }
            _ => assert!(all.contains_key(key), "{key} not in the file"),
        }
    }
    assert!(
        all.contains_key("metrics_listen"),
        "metrics_listen not in the file"
    );
}

#[test]
fn shown_config_masks_secrets_and_reads_back() {
    let c = Config::parse(
        "metrics_listen = \"127.0.0.1:9808\"\n\
             [local_csp]\npassword = \"hunter22\"\n\
             [backends.array1]\nbackend = \"10.0.0.5\"\nusername = \"admin\"\n\
             password = \"s3cret!\"\nchapSecret = \"chap-pw\"\n",
    )
    .unwrap();
    for text in [c.shown_toml().unwrap(), c.shown_json().unwrap()] {
        for secret in ["hunter22", "s3cret!", "chap-pw"] {
            assert!(!text.contains(secret), "{secret} shown in:\n{text}");
        }
        assert!(
            text.contains("10.0.0.5") && text.contains("admin"),
            "{text}"
        );
    }
    let back = Config::parse(&c.shown_toml().unwrap()).expect("a file serve accepts");
    assert_eq!(back.metrics_listen, c.metrics_listen);
    assert_eq!(back.backends["array1"]["password"], "********");
}

#[test]
fn empty_file_is_all_defaults() {
    let c = Config::parse("").unwrap();
    assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
    assert_eq!(c.default_backend, "local");
    assert!(c.local_csp.enabled);
    assert_eq!(c.csp_data_dir(), PathBuf::from("/var/lib/volbridge/csp"));
}

#[test]
fn csi_section() {
    let c = Config::parse("[csi]\nendpoint = \"unix:///run/csi.sock\"\nmode = \"node\"\n").unwrap();
    assert_eq!(c.csi.endpoint.as_deref(), Some("unix:///run/csi.sock"));
    assert_eq!(c.csi.driver_name, DEFAULT_CSI_DRIVER);
    for bad in [
        "[csi]\nmode = \"both\"",
        "[csi]\nendpoint = \"relative.sock\"",
        "[csi]\ndriver_name = \"-bad-\"",
        "[csi]\nmax_volumes_per_node = -1",
    ] {
        assert!(Config::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn docker_section() {
    let c = Config::parse("").unwrap();
    assert!(!c.docker.enabled);
    let d = c.docker.to_frontend().unwrap();
    assert_eq!(
        d.listen,
        crate::frontend::docker::Listen::Socket("/run/docker/plugins/volbridge.sock".into())
    );
    let c =
        Config::parse("[docker]\nenabled = true\nscope = \"global\"\nunstage_delay_seconds = 0\n")
            .unwrap();
    assert_eq!(
        c.docker.to_frontend().unwrap().scope,
        crate::frontend::docker::Scope::Global
    );
    let c = Config::parse("[docker]\nenabled = true\nsocket_group = \"docker\"\n").unwrap();
    assert_eq!(
        c.docker.to_frontend().unwrap().socket_group.as_deref(),
        Some("docker")
    );
    for bad in [
            "[docker]\nenabled = true\nscope = \"cluster\"",
            "[docker]\nenabled = true\nmode = \"v3\"",
            "[docker]\nenabled = true\nlisten = \"tcp\"",
            "[docker]\nenabled = true\nmode = \"managed\"\nmount_base = \"/var/lib/x\"",
            "[docker]\nenabled = true\nsocket = \"rel.sock\"",
            "[docker]\nenabled = true\nsocket_group = \"\"",
            "[docker]\nenabled = true\nsocket_group = \"a b\"",
            "[docker]\nenabled = true\nlisten = \"tcp\"\ntcp_addr = \"127.0.0.1:1\"\nsocket_group = \"docker\"",
        ] {
            assert!(Config::parse(bad).is_err(), "{bad}");
        }
}

#[test]
fn backends_and_errors() {
    let c = Config::parse(
        r#"
            default_backend = "array1"
            [backends.array1]
            backend = "10.0.0.5"
            username = "admin"
            password = "pw"
            "#,
    )
    .unwrap();
    assert_eq!(c.backends["array1"]["username"], "admin");
    for bad in [
        "typo_key = 1",
        "default_backend = \"nope\"",
        "default_volume_size = \"12Zi\"",
        "[local_csp]\nlisten = \"0.0.0.0:80\"",
        "[backends.local]\nbackend = \"x\"",
        "[node]\nprotocols = [\"smb\"]",
        "[node]\nlocal_roots = [\"rel\"]",
        "[node]\ntool_timeout_seconds = 0",
    ] {
        assert!(Config::parse(bad).is_err(), "{bad}");
    }
}
