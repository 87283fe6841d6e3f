//! An external command as data: program, argv, timeout, and which arguments are secret, so
//! that the command can be logged, recorded by the fake and compared in tests without ever
//! showing a CHAP password.

use std::fmt;
use std::time::Duration;

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, PartialEq, Eq)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
    pub timeout: Duration,
    /// Indexes into `args` that hold secrets.
    secret: Vec<usize>,
    /// Killing it half-way damages what it works on (an offline resize2fs): it outlives
    /// the daemon and its own deadline, and whoever comes next waits for it.
    pub must_finish: bool,
}

impl Cmd {
    pub fn new(program: impl Into<String>) -> Cmd {
        Cmd {
            program: program.into(),
            args: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            secret: Vec::new(),
            must_finish: false,
        }
    }

    /// See [`Cmd::must_finish`].
    pub fn must_finish(mut self) -> Cmd {
        self.must_finish = true;
        self
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Cmd {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// An argument that must never be logged.
    pub fn secret_arg(mut self, arg: impl Into<String>) -> Cmd {
        self.secret.push(self.args.len());
        self.args.push(arg.into());
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Cmd {
        self.timeout = timeout;
        self
    }

    /// The argv as it may be logged: secrets replaced.
    pub fn redacted_args(&self) -> Vec<&str> {
        self.args
            .iter()
            .enumerate()
            .map(|(i, a)| {
                if self.secret.contains(&i) {
                    "<redacted>"
                } else {
                    a.as_str()
                }
            })
            .collect()
    }

    /// Removes secret argument values from a text (a tool's stderr may echo its argv), as
    /// whole tokens (see [`volbridge_base::redact::redact_values`]).
    pub fn redact(&self, text: &str) -> String {
        let secrets: Vec<&str> = self.secret.iter().map(|&i| self.args[i].as_str()).collect();
        volbridge_base::redact::redact_values(text, &secrets)
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.program)?;
        for a in self.redacted_args() {
            write!(f, " {a}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cmd({self})")
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CmdOutput {
    /// Exit code; a process killed by a signal reports 128 + signal.
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    pub fn ok(stdout: impl Into<String>) -> CmdOutput {
        CmdOutput {
            status: 0,
            stdout: stdout.into(),
            stderr: String::new(),
        }
    }

    pub fn failed(status: i32, stderr: impl Into<String>) -> CmdOutput {
        CmdOutput {
            status,
            stdout: String::new(),
            stderr: stderr.into(),
        }
    }

    pub fn success(&self) -> bool {
        self.status == 0
    }

    /// The line of stderr (or stdout) that says what went wrong: the first one that is not
    /// a version banner, and nothing from a usage text on.
    pub fn reason(&self) -> String {
        let pick = |s: &str| {
            s.lines()
                .map(str::trim)
                .take_while(|l| !l.to_ascii_lowercase().starts_with("usage:"))
                .filter(|l| !l.is_empty() && !is_banner(l))
                .map(str::to_owned)
                .next()
        };
        pick(&self.stderr)
            .or_else(|| pick(&self.stdout))
            .unwrap_or_else(|| format!("exit status {}", self.status))
    }
}

/// `resize2fs 1.47.0 (5-Feb-2023)`, `mke2fs 1.47.0 …`.
fn is_banner(line: &str) -> bool {
    let mut words = line.split_whitespace();
    let (Some(first), Some(second)) = (words.next(), words.next()) else {
        return false;
    };
    !first.ends_with(':')
        && second.starts_with(|c: char| c.is_ascii_digit())
        && second.contains('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show() {
        let c = Cmd::new("iscsiadm")
            .args(["-m", "node", "-v"])
            .secret_arg("hunter2");
        assert_eq!(c.to_string(), "iscsiadm -m node -v <redacted>");
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(c.redact("bad value hunter2"), "bad value <redacted>");
        assert_eq!(c.args[3], "hunter2");
        // A short secret is cut where it stands alone, never out of other words.
        let c = Cmd::new("iscsiadm").arg("-v").secret_arg("s");
        assert_eq!(
            c.redact("iscsiadm: invalid secrets s, 's' refused"),
            "iscsiadm: invalid secrets <redacted>, '<redacted>' refused"
        );
    }

    #[test]
    fn reason_skips_banners_and_usage() {
        let o = CmdOutput::failed(
            1,
            "resize2fs 1.47.0 (5-Feb-2023)\nresize2fs: Permission denied to resize filesystem\n",
        );
        assert_eq!(
            o.reason(),
            "resize2fs: Permission denied to resize filesystem"
        );
        let o = CmdOutput::failed(
            1,
            "Filesystem must be larger than 300MB.\nUsage: mkfs.xfs\n/* blocksize */ [-b size=num]\n",
        );
        assert_eq!(o.reason(), "Filesystem must be larger than 300MB.");
        assert_eq!(CmdOutput::failed(3, "").reason(), "exit status 3");
    }
}
