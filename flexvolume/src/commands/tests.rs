use super::*;
use std::path::{Path, PathBuf};

fn cfg(text: &str) -> Config {
    Config::parse(
        Path::new("/etc/volbridge/flex.toml"),
        text,
        Some(PathBuf::from("/nonexistent/flex-test.sock")),
    )
    .unwrap()
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

#[test]
fn local_answers() {
    let c = cfg("");
    let r = run(&c, &args(&["init"])).reply;
    let caps = r.capabilities.unwrap();
    assert!(!caps.attach && caps.fs_group && caps.selinux_relabel);
    let r = run(
        &cfg("mode = \"attach\"\nfs_group = \"volbridge\""),
        &args(&["init"]),
    )
    .reply;
    let caps = r.capabilities.unwrap();
    assert!(caps.attach && !caps.fs_group);
    assert_eq!(
        run(&c, &args(&["getvolumename", "{}"])).reply.status,
        "Not supported"
    );
    assert_eq!(
        run(&c, &args(&["frobnicate", "a", "b"])).reply.status,
        "Not supported"
    );
    for cmd in ATTACH_ONLY {
        assert_eq!(
            run(&c, &args(&[cmd])).reply.status,
            "Not supported",
            "{cmd}"
        );
    }
    let r = run(&c, &[]).reply;
    assert_eq!(
        r.message.as_deref(),
        Some("volbridge: invalid arguments: no command given")
    );
}

#[test]
fn argument_counts_and_local_validation_fail_before_the_daemon() {
    let c = cfg("mode = \"attach\"");
    let r = run(&c, &args(&["mount", "/var/lib/kubelet/pods/u/volumes/v"])).reply;
    assert_eq!(
        r.message.as_deref(),
        Some("volbridge: invalid arguments: mount expects 2 (<podVolumeDir> <json>), got 1")
    );
    for (a, want) in [
        (vec!["mount", "/p", "{\"a\":"], "invalid options JSON"),
        (vec!["mount", "relative", "{}"], "invalid arguments"),
        (vec!["mount", "/p", "{}"], "invalid option"),
        (
            vec![
                "attach",
                "{\"kubernetes.io/pvOrVolumeName\":\"v\"}",
                "bad node!",
            ],
            "invalid arguments",
        ),
        (vec!["detach", "../x", "node-a"], "invalid name"),
        (
            vec![
                "expandvolume",
                "{\"kubernetes.io/pvOrVolumeName\":\"v\"}",
                "/d",
                "ten",
                "1",
            ],
            "invalid arguments",
        ),
        (vec!["init", "extra"], "invalid arguments"),
    ] {
        let r = run(&c, &args(&a)).reply;
        assert_eq!(r.status, "Failure", "{a:?}");
        let m = r.message.unwrap();
        assert!(m.starts_with(&format!("volbridge: {want}")), "{a:?}: {m}");
    }
}
