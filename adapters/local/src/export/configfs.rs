//! The few configfs moves the exporters make. configfs is not a normal file system: a
//! `mkdir` makes a kernel object with its attribute files already in it, attributes are
//! written whole (one `write`), `rmdir` removes an object with its attributes, and a
//! symlink between objects is how LIO maps a LUN and nvmet allows a host. Every helper
//! here tolerates what a half-done earlier attempt left (a directory or link already there,
//! one already gone), so a set-up or tear-down can be run again after a crash.

use std::io::{self, Write};
use std::path::Path;

/// The error of a configfs step, naming the path (the kernel's own message is only an
/// errno).
pub fn error(what: &str, path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

pub fn mkdir(path: &Path) -> io::Result<()> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(error("cannot create", path, e)),
    }
}

/// `mkdir -p` for the groups a parent object does not make by itself.
pub fn mkdir_all(path: &Path) -> io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        mkdir_all(parent)?;
    }
    mkdir(path)
}

/// Writes an attribute in one `write` call, exactly as given (no newline is added: LIO
/// keeps one as part of a CHAP name).
pub fn write(path: &Path, value: &str) -> io::Result<()> {
    write_shown(path, value, &format!("cannot write '{value}' to"))
}

fn write_shown(path: &Path, value: &str, failed: &str) -> io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| error("cannot open", path, e))?;
    f.write_all(value.as_bytes())
        .map_err(|e| error(failed, path, e))
}

/// [`set`] for a CHAP name or secret: an error names the attribute, never the value (it
/// would reach the HTTP answer and the log).
pub fn set_secret(path: &Path, value: &str) -> io::Result<()> {
    if read(path).as_deref() == Some(value.trim()) {
        return Ok(());
    }
    write_shown(path, value, "cannot write the CHAP setting to")
}

/// An attribute's value, trimmed; `None` when it cannot be read.
pub fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Writes an attribute only when it differs, as some (a namespace's device path, a
/// subsystem's serial) refuse any write once in use.
pub fn set(path: &Path, value: &str) -> io::Result<()> {
    if read(path).as_deref() == Some(value.trim()) {
        return Ok(());
    }
    write(path, value)
}

pub fn link(target: &Path, link: &Path) -> io::Result<()> {
    if link.symlink_metadata().is_ok() {
        return Ok(());
    }
    std::os::unix::fs::symlink(target, link).map_err(|e| error("cannot link", link, e))
}

pub fn unlink(link: &Path) -> io::Result<()> {
    match std::fs::remove_file(link) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(error("cannot unlink", link, e)),
    }
}

pub fn rmdir(path: &Path) -> io::Result<()> {
    match std::fs::remove_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(error("cannot remove", path, e)),
    }
}

/// Entry names of a directory; empty when it does not exist.
pub fn entries(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// The symlinks among a directory's entries (an object's attributes are plain files).
pub fn links(dir: &Path) -> Vec<String> {
    entries(dir)
        .into_iter()
        .filter(|n| {
            dir.join(n)
                .symlink_metadata()
                .is_ok_and(|m| m.file_type().is_symlink())
        })
        .collect()
}
