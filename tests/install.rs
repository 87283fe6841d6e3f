//! Install bits (issue 16): `--version` with build details, `volbridge completion
//! bash|zsh|fish`, `volbridge man --dir`, and the systemd unit `etc/systemd/volbridge.service`
//! that `systemd-analyze verify` accepts (with the binary and the man pages it names).

mod common;

use common::{require_tool, TempDir, BIN};
use std::path::Path;
use std::process::{Command, Output};

fn volbridge(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run volbridge")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn version_says_how_the_binary_was_built() {
    let out = volbridge(&["--version"]);
    assert!(out.status.success());
    let v = text(&out.stdout);
    let lines: Vec<&str> = v.lines().collect();
    assert_eq!(
        lines[0],
        format!("volbridge {}", env!("CARGO_PKG_VERSION")),
        "{v}"
    );
    let field = |name: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {name}: line in {v}"))
            .to_owned()
    };
    assert!(field("target").contains("linux"), "{v}");
    assert!(
        ["debug", "release"].contains(&field("profile").as_str()),
        "{v}"
    );
    assert!(field("rustc").starts_with("rustc "), "{v}");
    // Built in a git checkout: the commit it was built from.
    let head = Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short=12",
            "HEAD",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| text(&o.stdout).trim().to_owned());
    match head {
        Some(head) => assert_eq!(field("commit"), head, "{v}"),
        None => assert!(!field("commit").is_empty(), "{v}"),
    }
    // -V stays one line; subcommands answer the same.
    let short = text(&volbridge(&["-V"]).stdout);
    assert_eq!(
        short.trim_end(),
        format!("volbridge {}", env!("CARGO_PKG_VERSION"))
    );
    assert!(text(&volbridge(&["volume", "--version"]).stdout).contains("commit:"));
}

#[test]
fn completion_scripts_complete_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        let out = volbridge(&["completion", shell]);
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        for word in ["volume", "snapshot", "csi", "mount", "read-only"] {
            assert!(script.contains(word), "{shell} script lacks {word}");
        }
    }
    // Bash: the script parses, registers itself, and completes `volbridge vol<TAB>` and
    // `volbridge volume mo<TAB>`.
    let dir = TempDir::new("completion");
    let script = dir.path().join("volbridge.bash");
    std::fs::write(&script, volbridge(&["completion", "bash"]).stdout).unwrap();
    let check = format!(
        r#"set -e
source {script}
complete -p volbridge
COMP_WORDS=(volbridge vol); COMP_CWORD=1; COMP_LINE="volbridge vol"; COMP_POINT=${{#COMP_LINE}}
_volbridge volbridge vol volbridge
echo "one: ${{COMPREPLY[*]}}"
COMP_WORDS=(volbridge volume mo); COMP_CWORD=2; COMP_LINE="volbridge volume mo"; COMP_POINT=${{#COMP_LINE}}
_volbridge volbridge mo volume
echo "two: ${{COMPREPLY[*]}}"
"#,
        script = script.display()
    );
    let out = Command::new("bash").arg("-c").arg(&check).output().unwrap();
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    assert!(said.contains("-F _volbridge volbridge"), "{said}");
    assert!(said.lines().any(|l| l == "one: volume"), "{said}");
    assert!(said.lines().any(|l| l == "two: mount"), "{said}");
    // A reader that stops early is no error.
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("set -o pipefail; {BIN} completion bash | head -1"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).is_empty(), "{}", text(&out.stderr));
}

#[test]
fn man_pages_are_written_for_every_command() {
    let dir = TempDir::new("man");
    let man1 = dir.path().join("man1");
    let out = volbridge(&["man", "--dir", man1.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("wrote "),
        "{}",
        text(&out.stdout)
    );
    for page in [
        "volbridge.1",
        "volbridge-serve.1",
        "volbridge-volume.1",
        "volbridge-volume-mount.1",
        "volbridge-csi-controller-delete.1",
        "volbridge-completion.1",
    ] {
        let body =
            std::fs::read_to_string(man1.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(
            body.starts_with(".ie") || body.contains(".TH"),
            "{page}: {body}"
        );
    }
    let mount = std::fs::read_to_string(man1.join("volbridge-volume-mount.1")).unwrap();
    assert!(mount.contains("read\\-only"), "{mount}");
    if !require_tool("man_pages_are_written_for_every_command", "man", "man-db") {
        return;
    }
    // `man` finds and renders them from a MANPATH entry.
    let out = Command::new("man")
        .args(["-P", "cat", "volbridge-volume-mount"])
        .env("MANPATH", dir.path())
        .env("MANWIDTH", "100")
        .output()
        .unwrap();
    let page = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        page.contains("NAME") && page.contains("--read-only"),
        "{page}"
    );
}

/// The canonical unit passes `systemd-analyze verify` with no warning: every directive
/// known, the binary it runs there (the unit's /usr/local/bin/volbridge is pointed at the
/// one under test), the man pages of `Documentation=` found by `man`.
#[test]
fn the_systemd_unit_verifies() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/systemd/volbridge.service");
    let text_of_unit = std::fs::read_to_string(&unit).expect("etc/systemd/volbridge.service");
    for needed in [
        "ExecStart=/usr/local/bin/volbridge serve\n",
        "RuntimeDirectory=volbridge\n",
        "StateDirectory=volbridge\n",
        "ConfigurationDirectory=volbridge\n",
        "KillMode=process\n",
        "WantedBy=multi-user.target\n",
    ] {
        assert!(text_of_unit.contains(needed), "the unit lacks {needed}");
    }
    // The directories systemd makes are the daemon's defaults, so the daemon, the CLI and
    // FlexVolume agree without flags.
    use volbridge::config::{DEFAULT_ADMIN_SOCKET, DEFAULT_CONFIG_FILE, DEFAULT_STATE_DIR};
    assert_eq!(DEFAULT_ADMIN_SOCKET, "/run/volbridge/volbridge.sock");
    assert_eq!(DEFAULT_STATE_DIR, "/var/lib/volbridge");
    assert_eq!(DEFAULT_CONFIG_FILE, "/etc/volbridge/volbridge.toml");
    if !require_tool("the_systemd_unit_verifies", "systemd-analyze", "systemd")
        || !require_tool("the_systemd_unit_verifies", "man", "man-db")
    {
        return;
    }
    let dir = TempDir::new("unit");
    let man = dir.path().join("man");
    assert!(
        volbridge(&["man", "--dir", man.join("man1").to_str().unwrap()])
            .status
            .success()
    );
    let copy = dir.path().join("volbridge.service");
    std::fs::write(&copy, text_of_unit.replace("/usr/local/bin/volbridge", BIN)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .env("MANPATH", &man)
        .env("SYSTEMD_LOG_LEVEL", "notice")
        .output()
        .unwrap();
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{said}"
    );
    assert!(
        said.trim().is_empty(),
        "systemd-analyze verify warned:\n{said}"
    );
}
