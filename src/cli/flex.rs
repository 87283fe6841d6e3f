//! `volbridge flex install`: puts the FlexVolume driver (`volbridge-flex`) where kubelet and
//! kube-controller-manager look for it, `<dir>/<vendor>~<driver>/<driver>`, atomically
//! (flexvolume.md §2). kubelet watches the plugin dir with inotify and runs `init` on every
//! event in a driver directory, so a half-written executable must never be visible there:
//! everything is staged in `<dir>/.<vendor>~<driver>.tmp/` (ignored by kubelet: leading
//! dot), written, fsynced and made 0755, then renamed into place in one step. Identical
//! bytes already installed: nothing is written (no pointless re-probe).

use super::output::{self, Format};
use crate::error::{Error, Result};
use clap::{Args, Subcommand};
use serde::Serialize;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const DEFAULT_PLUGIN_DIR: &str = "/usr/libexec/kubernetes/kubelet-plugins/volume/exec";
/// The driver binary's file name, looked for next to the running `volbridge`.
pub const FLEX_BINARY: &str = "volbridge-flex";

#[derive(Debug, Subcommand)]
pub enum FlexCommand {
    /// Install (or upgrade) the driver into kubelet's volume plugin directory, atomically.
    Install(InstallArgs),
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// kubelet's --volume-plugin-dir (KCM: --flex-volume-plugin-dir); must exist.
    #[arg(long, default_value = DEFAULT_PLUGIN_DIR)]
    pub dir: PathBuf,
    /// Vendor part of the driver name (`flexVolume.driver: <vendor>/<driver>`).
    #[arg(long, default_value = "volbridge")]
    pub vendor: String,
    /// Driver part of the driver name; also the executable's file name.
    #[arg(long, default_value = "csp")]
    pub driver: String,
    /// The volbridge-flex binary to install (default: the one next to this volbridge).
    #[arg(long)]
    pub binary: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The driver directory did not exist: it appeared complete, in one rename.
    Installed,
    /// The executable was replaced by a rename inside the driver directory.
    Upgraded,
    /// Identical bytes were already installed; nothing was written.
    Unchanged,
}

#[derive(Debug, Clone, Serialize)]
pub struct Installed {
    pub action: Action,
    /// `<dir>/<vendor>~<driver>/<driver>`.
    pub path: PathBuf,
    /// The driver name for `flexVolume.driver`.
    pub driver: String,
    pub source: PathBuf,
    pub bytes: u64,
}

pub fn run(command: FlexCommand, format: Format) -> Result<()> {
    match command {
        FlexCommand::Install(args) => {
            let done = install(&args)?;
            match format {
                Format::Json => output::json(&done),
                Format::Table => {
                    let what = match done.action {
                        Action::Installed => "installed",
                        Action::Upgraded => "upgraded",
                        Action::Unchanged => "already installed, unchanged:",
                    };
                    println!(
                        "{what} {} (driver \"{}\", from {})",
                        done.path.display(),
                        done.driver,
                        done.source.display()
                    );
                }
            }
            Ok(())
        }
    }
}

/// A vendor or driver name: it becomes a directory name and (driver) a file name.
fn validate_part(what: &str, value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && !value.starts_with('.')
        && !value.starts_with('-')
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            what,
            format!("'{value}' may contain only letters, digits, '-', '_' and '.' (not first)"),
        ))
    }
}

/// `volbridge-flex` next to the running executable.
fn default_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::internal(format!("cannot tell where volbridge runs from: {e}")))?;
    Ok(exe
        .parent()
        .map(|d| d.join(FLEX_BINARY))
        .unwrap_or_else(|| PathBuf::from(FLEX_BINARY)))
}

fn io_error(what: String, e: std::io::Error) -> Error {
    Error::internal(format!("{what}: {e}"))
}

fn fsync_dir(dir: &Path) -> Result<()> {
    volbridge_base::fs::sync_dir(dir)
        .map_err(|e| io_error(format!("cannot fsync {}", dir.display()), e))
}

pub fn install(args: &InstallArgs) -> Result<Installed> {
    validate_part("vendor", &args.vendor)?;
    validate_part("driver", &args.driver)?;
    let source = match &args.binary {
        Some(b) => b.clone(),
        None => default_binary()?,
    };
    let bytes = match std::fs::metadata(&source) {
        Ok(m) if m.is_file() && m.len() > 0 => std::fs::read(&source)
            .map_err(|e| io_error(format!("cannot read {}", source.display()), e))?,
        Ok(_) => {
            return Err(Error::invalid(
                "binary",
                format!("{} is not a non-empty regular file", source.display()),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::not_found(format!(
                "no {FLEX_BINARY} at {}: build it (cargo build --release -p volbridge-flex puts it next to volbridge) or pass --binary PATH",
                source.display()
            )))
        }
        Err(e) => return Err(io_error(format!("cannot read {}", source.display()), e)),
    };
    match std::fs::metadata(&args.dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Error::invalid(
                "dir",
                format!("{} is not a directory", args.dir.display()),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::not_found(format!(
                "plugin directory {} does not exist; pass kubelet's --volume-plugin-dir with --dir (not created here: a wrong path would install where kubelet never looks)",
                args.dir.display()
            )))
        }
        Err(e) => return Err(io_error(format!("cannot stat {}", args.dir.display()), e)),
    }
    let name = format!("{}~{}", args.vendor, args.driver);
    let driver_dir = args.dir.join(&name);
    let exe = driver_dir.join(&args.driver);
    let done = |action| Installed {
        action,
        path: exe.clone(),
        driver: format!("{}/{}", args.vendor, args.driver),
        source: source.clone(),
        bytes: bytes.len() as u64,
    };
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o777 == 0o755)
    };
    if executable(&exe) && std::fs::read(&exe).is_ok_and(|b| b == bytes) {
        return Ok(done(Action::Unchanged));
    }
    let staging = args.dir.join(format!(".{name}.tmp"));
    if std::fs::symlink_metadata(&staging).is_ok() {
        std::fs::remove_dir_all(&staging)
            .or_else(|_| std::fs::remove_file(&staging))
            .map_err(|e| io_error(format!("cannot remove the stale {}", staging.display()), e))?;
    }
    std::fs::create_dir(&staging)
        .and_then(|()| std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o755)))
        .map_err(|e| io_error(format!("cannot create {}", staging.display()), e))?;
    let staged = staging.join(&args.driver);
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o755)
        .open(&staged)
        .and_then(|mut f| {
            f.write_all(&bytes)?;
            // The umask may have narrowed the mode at create.
            f.set_permissions(std::fs::Permissions::from_mode(0o755))?;
            f.sync_all()
        });
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(io_error(format!("cannot write {}", staged.display()), e));
    }
    fsync_dir(&staging)?;
    let action = match std::fs::symlink_metadata(&driver_dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // First install: the driver directory appears with its executable in it.
            std::fs::rename(&staging, &driver_dir).map_err(|e| {
                let _ = std::fs::remove_dir_all(&staging);
                io_error(format!("cannot rename {} into place", staging.display()), e)
            })?;
            Action::Installed
        }
        Ok(m) if m.is_dir() => {
            // Upgrade: one rename over the old executable (a running copy keeps its inode).
            std::fs::rename(&staged, &exe).map_err(|e| {
                let _ = std::fs::remove_dir_all(&staging);
                io_error(
                    format!("cannot rename {} onto {}", staged.display(), exe.display()),
                    e,
                )
            })?;
            let _ = std::fs::remove_dir(&staging);
            fsync_dir(&driver_dir)?;
            Action::Upgraded
        }
        Ok(_) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(Error::precondition(format!(
                "{} exists and is not a directory; remove it first",
                driver_dir.display()
            )));
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(io_error(format!("cannot stat {}", driver_dir.display()), e));
        }
    };
    fsync_dir(&args.dir)?;
    Ok(done(action))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vb-flex-install-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn args(dir: &Path, binary: &Path) -> InstallArgs {
        InstallArgs {
            dir: dir.to_path_buf(),
            vendor: "volbridge".into(),
            driver: "csp".into(),
            binary: Some(binary.to_path_buf()),
        }
    }

    #[test]
    fn install_reinstall_upgrade() {
        let d = scratch("cycle");
        let plugins = d.join("exec");
        std::fs::create_dir(&plugins).unwrap();
        let bin = d.join("volbridge-flex");
        std::fs::write(&bin, b"#!/bin/sh\necho v1\n").unwrap();
        let a = args(&plugins, &bin);
        let first = install(&a).unwrap();
        assert_eq!(first.action, Action::Installed);
        let exe = plugins.join("volbridge~csp/csp");
        assert_eq!(first.path, exe);
        assert_eq!(first.driver, "volbridge/csp");
        assert_eq!(std::fs::read(&exe).unwrap(), b"#!/bin/sh\necho v1\n");
        assert_eq!(
            std::fs::metadata(&exe).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert_eq!(install(&a).unwrap().action, Action::Unchanged);
        std::fs::write(&bin, b"#!/bin/sh\necho v2\n").unwrap();
        assert_eq!(install(&a).unwrap().action, Action::Upgraded);
        assert_eq!(std::fs::read(&exe).unwrap(), b"#!/bin/sh\necho v2\n");
        let listed: Vec<_> = std::fs::read_dir(&plugins)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(listed, ["volbridge~csp"]);
        let inside: Vec<_> = std::fs::read_dir(plugins.join("volbridge~csp"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(inside, ["csp"]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn refusals() {
        let d = scratch("refuse");
        let bin = d.join("volbridge-flex");
        std::fs::write(&bin, b"x").unwrap();
        let e = install(&args(&d.join("missing"), &bin)).unwrap_err();
        assert!(e.message.contains("does not exist"), "{}", e.message);
        let e = install(&args(&d, &d.join("nope"))).unwrap_err();
        assert!(e.message.contains("--binary"), "{}", e.message);
        let mut bad = args(&d, &bin);
        bad.driver = "../x".into();
        assert!(install(&bad).is_err());
        bad.driver = "a~b".into();
        assert!(install(&bad).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
