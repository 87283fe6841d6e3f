//! One JSON line per invocation in `/var/log/volbridge/flex.log` (flexvolume.md §13): opened
//! `O_APPEND` each time, rotated to `flex.log.1` at 10 MiB under an `flock`, falling back to
//! syslog and then to nothing. Never stderr, never inside the driver directory, never a
//! secret (the options are redacted before they get here).

use serde::Serialize;
use serde_json::Value;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

const ROTATE_AT: u64 = 10 << 20;

#[derive(Debug, Serialize)]
pub struct Record<'a> {
    pub ts: String,
    pub pid: u32,
    pub cmd: &'a str,
    pub args: Vec<Value>,
    pub status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<&'a str>,
    pub ms: f64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub request_ids: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// `log_level = "debug"`: each daemon round trip, `METHOD path status ms`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub timings: Vec<String>,
}

static LOG_PATH: OnceLock<PathBuf> = OnceLock::new();

/// Where records go from now on (the panic hook reads it too).
pub fn set_path(path: &Path) {
    let _ = LOG_PATH.set(path.to_path_buf());
}

fn path() -> PathBuf {
    LOG_PATH
        .get()
        .cloned()
        .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_LOG))
}

pub fn write(record: &Record<'_>) {
    let Ok(mut line) = serde_json::to_vec(record) else {
        return;
    };
    line.push(b'\n');
    write_line(&path(), &line);
}

/// A panic: its text with the reference the user saw.
pub fn panic_record(reference: &str, text: &str) {
    let line = serde_json::json!({
        "ts": timestamp(SystemTime::now()),
        "pid": std::process::id(),
        "status": "Failure",
        "panic": text,
        "ref": reference,
    });
    let mut bytes = line.to_string().into_bytes();
    bytes.push(b'\n');
    write_line(&path(), &bytes);
}

fn write_line(path: &Path, line: &[u8]) {
    if append(path, line).is_err() {
        syslog(line);
    }
}

fn open(path: &Path) -> std::io::Result<std::fs::File> {
    let open = || {
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(path)
    };
    match open() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            open()
        }
        other => other,
    }
}

fn append(path: &Path, line: &[u8]) -> std::io::Result<()> {
    let mut file = open(path)?;
    if file.metadata()?.len() >= ROTATE_AT {
        file = rotate(path, file)?;
    }
    // O_APPEND and one write per record: lines of parallel invocations never interleave.
    file.write_all(line)
}

/// Renames a full log to `<name>.1` under an exclusive `flock`, unless another invocation
/// did it first; returns a handle on the fresh file.
fn rotate(path: &Path, file: std::fs::File) -> std::io::Result<std::fs::File> {
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)?;
    let ours = file.metadata()?;
    let still_full = std::fs::metadata(path)
        .map(|now| now.ino() == ours.ino() && now.dev() == ours.dev() && now.len() >= ROTATE_AT)
        .unwrap_or(false);
    if still_full {
        let mut old = path.as_os_str().to_owned();
        old.push(".1");
        std::fs::rename(path, old)?;
    }
    drop(file);
    open(path)
}

/// The fallback: one datagram to `/dev/log`, facility daemon, severity info.
fn syslog(line: &[u8]) {
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let mut msg = b"<30>volbridge-flex: ".to_vec();
    msg.extend_from_slice(line.strip_suffix(b"\n").unwrap_or(line));
    let _ = sock.send_to(&msg, "/dev/log");
}

/// A short random-looking reference for an internal error (time and pid mixed).
pub fn reference() -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mixed = (t.as_nanos() as u64 ^ (u64::from(std::process::id()) << 32))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!("{:06x}", mixed >> 40)
}

/// RFC 3339, UTC, milliseconds.
pub fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's method).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_251_199_123);
        assert_eq!(timestamp(t), "2024-02-29T23:59:59.123Z");
        let t = UNIX_EPOCH + Duration::from_secs(4_102_444_800);
        assert_eq!(timestamp(t), "2100-01-01T00:00:00.000Z");
    }

    #[test]
    fn appends_and_rotates_at_the_limit() {
        let dir = std::env::temp_dir().join(format!("vbflex-log-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub/flex.log");
        append(&path, b"one\n").unwrap();
        append(&path, b"two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\ntwo\n");
        let f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.set_len(ROTATE_AT).unwrap();
        append(&path, b"three\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
        let old = dir.join("sub/flex.log.1");
        assert_eq!(std::fs::metadata(old).unwrap().len(), ROTATE_AT);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn references_are_six_hex_digits() {
        let r = reference();
        assert_eq!(r.len(), 6, "{r}");
        assert!(r.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
