//! The one thing kubelet reads: a single JSON object and `\n` on stdout. stderr is pointed
//! at `/dev/null` before anything else runs (kubelet parses stdout and stderr *combined*,
//! so one stray byte there fails the call), and a panic still prints a `Failure` object.

use serde::Serialize;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

pub const SUCCESS: &str = "Success";
pub const FAILURE: &str = "Failure";
pub const NOT_SUPPORTED: &str = "Not supported";

/// Longest `message` printed (spec §12: one line, at most 300 bytes).
const MAX_MESSAGE: usize = 300;

/// The driver's answer (flexvolume.md §4). Only the fields a command uses are printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reply {
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(rename = "volumeName", skip_serializing_if = "Option::is_none")]
    pub volume_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attached: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
}

/// `init`'s capabilities: all five keys, always explicit (kubelet fills omitted ones with
/// defaults that are wrong for volbridge).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    pub attach: bool,
    #[serde(rename = "selinuxRelabel")]
    pub selinux_relabel: bool,
    #[serde(rename = "fsGroup")]
    pub fs_group: bool,
    #[serde(rename = "supportsMetrics")]
    pub supports_metrics: bool,
    #[serde(rename = "requiresFSResize")]
    pub requires_fs_resize: bool,
}

impl Reply {
    fn bare(status: &'static str) -> Reply {
        Reply {
            status,
            message: None,
            device: None,
            volume_name: None,
            attached: None,
            capabilities: None,
        }
    }

    pub fn success() -> Reply {
        Reply::bare(SUCCESS)
    }

    pub fn failure(message: impl Into<String>) -> Reply {
        Reply {
            message: Some(clip(message.into())),
            ..Reply::bare(FAILURE)
        }
    }

    pub fn not_supported(message: impl Into<String>) -> Reply {
        Reply {
            message: Some(clip(message.into())),
            ..Reply::bare(NOT_SUPPORTED)
        }
    }

    pub fn with_device(mut self, device: impl Into<String>) -> Reply {
        self.device = Some(device.into());
        self
    }

    pub fn with_attached(mut self, attached: bool) -> Reply {
        self.attached = Some(attached);
        self
    }

    pub fn with_capabilities(mut self, c: Capabilities) -> Reply {
        self.capabilities = Some(c);
        self
    }

    /// Exit 1 for Failure, 0 for Success and Not supported.
    pub fn exit_code(&self) -> i32 {
        i32::from(self.status == FAILURE)
    }
}

/// One line, at most [`MAX_MESSAGE`] bytes, cut on a character boundary.
pub fn clip(message: String) -> String {
    let one_line: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.len() <= MAX_MESSAGE {
        return one_line;
    }
    let mut end = MAX_MESSAGE - '…'.len_utf8();
    while !one_line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &one_line[..end])
}

static PRINTED: AtomicBool = AtomicBool::new(false);

/// Prints the reply as one JSON object and `\n`, in one write; later calls print nothing.
pub fn print(reply: &Reply) {
    if PRINTED.swap(true, Ordering::SeqCst) {
        return;
    }
    let mut line = serde_json::to_vec(reply).unwrap_or_else(|_| {
        br#"{"status":"Failure","message":"volbridge: internal error: cannot encode the reply"}"#
            .to_vec()
    });
    line.push(b'\n');
    let mut out = std::io::stdout().lock();
    // Nothing else can be reported: stderr is /dev/null and kubelet reads only this.
    let _ = out.write_all(&line).and_then(|()| out.flush());
}

/// Points fd 2 at `/dev/null`, so nothing (a library warning, a panic text) ever reaches
/// kubelet's combined output.
pub fn silence_stderr() {
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = rustix::stdio::dup2_stderr(&null);
    }
}

/// Where the panic hook tells the reader to look (the log file, once the config is read).
static LOG_HINT: OnceLock<String> = OnceLock::new();

pub fn set_log_hint(path: &std::path::Path) {
    let _ = LOG_HINT.set(path.display().to_string());
}

/// A panic prints `Failure` (when nothing was printed yet), logs the panic text with a
/// reference, and exits 1: never a stack trace on stderr, never exit 101.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let reference = crate::log::reference();
        let log = LOG_HINT
            .get()
            .map(String::as_str)
            .unwrap_or(crate::config::DEFAULT_LOG);
        print(&Reply::failure(format!(
            "volbridge: internal error (ref {reference}); see {log} and the daemon log"
        )));
        crate::log::panic_record(&reference, &info.to_string());
        std::process::exit(1);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_reply_has_all_five_keys_in_the_documented_spelling() {
        let r = Reply::success().with_capabilities(Capabilities {
            attach: false,
            selinux_relabel: true,
            fs_group: true,
            supports_metrics: true,
            requires_fs_resize: true,
        });
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"status":"Success","capabilities":{"attach":false,"selinuxRelabel":true,"fsGroup":true,"supportsMetrics":true,"requiresFSResize":true}}"#
        );
        assert_eq!(r.exit_code(), 0);
    }

    #[test]
    fn exit_codes_follow_the_status() {
        assert_eq!(Reply::failure("x").exit_code(), 1);
        assert_eq!(Reply::not_supported("x").exit_code(), 0);
        assert_eq!(
            serde_json::to_string(&Reply::success().with_attached(false)).unwrap(),
            r#"{"status":"Success","attached":false}"#
        );
    }

    #[test]
    fn messages_are_one_clipped_line() {
        let long = format!("a\nb{}", "é".repeat(400));
        let c = clip(long);
        assert!(c.len() <= MAX_MESSAGE, "{}", c.len());
        assert!(c.starts_with("a b"));
        assert!(c.ends_with('…'));
    }
}
