//! The commands of flexvolume.md §6. Everything that can be judged locally (argv shape,
//! options JSON, names, paths, the mode) is judged here, before a runtime is built; only
//! the commands that need the daemon build a current-thread runtime and connect, in
//! `daemon.rs`.
//!
//! Engine mapping through the admin API:
//!
//! * `mount` (non-attachable): `POST /v1/volumes/{vol}/mount` at the pod dir (attach,
//!   format if blank, stage, bind); a missing volume is created first only with
//!   `autoCreate=true`.
//! * `unmount`, `unmountdevice`: the volume published at that path (`GET /v1/node`), then
//!   `POST …/unmount`; the last one unstages and detaches.
//! * Attachable mode: `attach` / `waitforattach` mount the volume at a per-PV anchor under
//!   `attach_dir` (the record that the volume is attached here, and how `detach`, which gets
//!   only the PV name, finds it); `mountdevice` and `mount` add publications at the device
//!   mount path and the pod dir; `detach` removes the anchor, which releases the volume once
//!   nothing else uses it.
//! * `expandvolume`, `expandfs`: `POST …/expand` (the daemon also grows a staged filesystem).

mod daemon;

use crate::config::{Config, FsGroup, Mode};
use crate::errors::Failure;
use crate::names::{validate_name, validate_path};
use crate::options::{self, Options};
use crate::output::{Capabilities, Reply};
use daemon::execute;

/// Set to make the driver panic (tests of the panic path; never set by kubelet).
pub const ENV_TEST_PANIC: &str = "VOLBRIDGE_FLEX_TEST_PANIC";

/// The argv shape of each command kubelet or KCM calls.
const SHAPES: &[(&str, &[&str])] = &[
    ("init", &[]),
    ("getvolumename", &["<json>"]),
    ("attach", &["<json>", "<nodeName>"]),
    ("isattached", &["<json>", "<nodeName>"]),
    ("waitforattach", &["<device>", "<json>"]),
    ("mountdevice", &["<deviceMountPath>", "<device>", "<json>"]),
    ("unmountdevice", &["<deviceMountPath>"]),
    ("mount", &["<podVolumeDir>", "<json>"]),
    ("unmount", &["<podVolumeDir>"]),
    ("detach", &["<pvOrVolumeName>", "<nodeName>"]),
    (
        "expandvolume",
        &[
            "<json>",
            "<deviceMountPath>",
            "<newSizeBytes>",
            "<oldSizeBytes>",
        ],
    ),
    (
        "expandfs",
        &[
            "<json>",
            "<devicePath>",
            "<deviceMountPath>",
            "<newSizeBytes>",
            "<oldSizeBytes>",
        ],
    ),
];

/// Commands kubelet only calls when `attach` is true.
const ATTACH_ONLY: &[&str] = &[
    "attach",
    "isattached",
    "waitforattach",
    "mountdevice",
    "unmountdevice",
    "detach",
];

/// What an invocation produced, for stdout and the log.
#[derive(Debug)]
pub struct Outcome {
    pub reply: Reply,
    pub request_ids: Vec<String>,
    pub timings: Vec<String>,
    pub warnings: Vec<String>,
}

impl Outcome {
    fn local(reply: Reply) -> Outcome {
        Outcome {
            reply,
            request_ids: Vec::new(),
            timings: Vec::new(),
            warnings: Vec::new(),
        }
    }

    pub fn failed(f: &Failure) -> Outcome {
        Outcome::local(Reply::failure(f.message()))
    }
}

/// The work of a command that needs the daemon, validated.
enum Job {
    /// `mount` (and, attachable, `mountdevice`): publish the volume at `target`.
    Mount {
        target: String,
        opts: Box<Options>,
        pod: bool,
    },
    /// `unmount`, `unmountdevice`.
    Unmount {
        target: String,
    },
    /// `attach` (KCM, with the node) and `waitforattach` (kubelet).
    Attach {
        opts: Box<Options>,
        node: Option<String>,
    },
    IsAttached {
        opts: Box<Options>,
        node: String,
    },
    Detach {
        pv: String,
        node: String,
    },
    Expand {
        opts: Box<Options>,
        size: u64,
    },
}

impl Job {
    /// What the timeout message names.
    fn subject(&self) -> String {
        let name = |o: &Options| {
            o.volume_name()
                .map(|n| format!("\"{n}\""))
                .unwrap_or_default()
        };
        match self {
            Job::Mount { opts, .. }
            | Job::Attach { opts, .. }
            | Job::IsAttached { opts, .. }
            | Job::Expand { opts, .. } => name(opts),
            Job::Unmount { target } => target.clone(),
            Job::Detach { pv, .. } => format!("\"{pv}\""),
        }
    }
}

pub fn run(cfg: &Config, args: &[String]) -> Outcome {
    if std::env::var_os(ENV_TEST_PANIC).is_some() {
        panic!("induced by {ENV_TEST_PANIC}");
    }
    let Some(command) = args.first() else {
        return Outcome::failed(&Failure::invalid_arguments("no command given"));
    };
    let rest = &args[1..];
    let command = command.as_str();
    let Some((_, shape)) = SHAPES.iter().find(|(c, _)| *c == command) else {
        return Outcome::local(Reply::not_supported(format!(
            "volbridge: unknown command \"{}\"",
            command.escape_debug()
        )));
    };
    if command == "getvolumename" {
        return Outcome::local(Reply::not_supported(
            "getvolumename: kubelet uses the PV or volume name",
        ));
    }
    if cfg.mode == Mode::Mount && ATTACH_ONLY.contains(&command) {
        return Outcome::local(Reply::not_supported(format!(
            "{command}: not used in the non-attachable mode (mode = \"mount\")"
        )));
    }
    if rest.len() != shape.len() {
        let expected = if shape.is_empty() {
            "no arguments".to_owned()
        } else {
            format!("{} ({})", shape.len(), shape.join(" "))
        };
        return Outcome::failed(&Failure::invalid_arguments(format!(
            "{command} expects {expected}, got {}",
            rest.len()
        )));
    }
    if command == "init" {
        return Outcome::local(init(cfg));
    }
    match prepare(cfg, command, rest) {
        Ok(job) => execute(cfg, command, job),
        Err(f) => Outcome::failed(&f),
    }
}

fn init(cfg: &Config) -> Reply {
    Reply::success().with_capabilities(Capabilities {
        attach: cfg.mode == Mode::Attach,
        selinux_relabel: true,
        fs_group: cfg.fs_group == FsGroup::Kubelet,
        supports_metrics: true,
        requires_fs_resize: true,
    })
}

fn parse_options(text: &str) -> Result<Box<Options>, Failure> {
    options::parse(text).map(Box::new)
}

fn bytes_arg(what: &str, text: &str) -> Result<u64, Failure> {
    text.trim().parse::<u64>().map_err(|_| {
        Failure::invalid_arguments(format!(
            "{what} \"{}\" is not a number of bytes",
            text.escape_debug()
        ))
    })
}

fn node_arg(text: &str) -> Result<String, Failure> {
    let ok = !text.is_empty()
        && text.len() <= 253
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if ok {
        Ok(text.to_owned())
    } else {
        Err(Failure::invalid_arguments(format!(
            "\"{}\" is not a node name",
            text.escape_debug()
        )))
    }
}

/// Everything judged without the daemon.
fn prepare(cfg: &Config, command: &str, a: &[String]) -> Result<Job, Failure> {
    Ok(match command {
        "mount" => {
            validate_path("pod volume dir", &a[0])?;
            let opts = parse_options(&a[1])?;
            opts.volume_name()?;
            Job::Mount {
                target: a[0].clone(),
                opts,
                pod: true,
            }
        }
        "unmount" => {
            validate_path("pod volume dir", &a[0])?;
            Job::Unmount {
                target: a[0].clone(),
            }
        }
        "unmountdevice" => {
            validate_path("device mount path", &a[0])?;
            Job::Unmount {
                target: a[0].clone(),
            }
        }
        "mountdevice" => {
            validate_path("device mount path", &a[0])?;
            let opts = parse_options(&a[2])?;
            opts.volume_name()?;
            Job::Mount {
                target: a[0].clone(),
                opts,
                pod: false,
            }
        }
        "attach" | "waitforattach" => {
            let (json, node) = if command == "attach" {
                (&a[0], Some(node_arg(&a[1])?))
            } else {
                (&a[1], None)
            };
            let opts = parse_options(json)?;
            opts.volume_name()?;
            opts.pv()?;
            anchor(cfg, opts.pv()?)?;
            Job::Attach { opts, node }
        }
        "isattached" => {
            let opts = parse_options(&a[0])?;
            opts.volume_name()?;
            opts.pv()?;
            Job::IsAttached {
                opts,
                node: node_arg(&a[1])?,
            }
        }
        "detach" => {
            validate_name("PV name", &a[0])?;
            Job::Detach {
                pv: a[0].clone(),
                node: node_arg(&a[1])?,
            }
        }
        "expandvolume" | "expandfs" => {
            let opts = parse_options(&a[0])?;
            opts.volume_name()?;
            let new = if command == "expandvolume" {
                &a[2]
            } else {
                &a[3]
            };
            Job::Expand {
                opts,
                size: bytes_arg("newSizeBytes", new)?,
            }
        }
        _ => unreachable!("every command of SHAPES is prepared"),
    })
}

/// The anchor of a PV in attachable mode: `<attach_dir>/<pv>`.
fn anchor(cfg: &Config, pv: &str) -> Result<String, Failure> {
    validate_name("PV name", pv)?;
    let path = cfg.attach_dir.join(pv).display().to_string();
    validate_path("attach_dir", &path)?;
    Ok(path)
}

#[cfg(test)]
mod tests;
