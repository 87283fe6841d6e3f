//! Running a tool for real: its own process group (so a timeout kills the whole tree), the
//! parent-death signal (so a killed daemon leaves no mkfs running behind it), output
//! captured, and a deadline. A tool that must finish (an offline resize2fs, which leaves a
//! filesystem that will not mount when stopped half-way) gets neither: it runs on after
//! the daemon dies or the deadline passes, and the reconciler waits for it.

use super::cmd::{Cmd, CmdOutput};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use volbridge_base::error::{Error, ErrorKind, Result};

pub fn run(cmd: &Cmd) -> Result<CmdOutput> {
    let mut command = Command::new(&cmd.program);
    command
        .args(&cmd.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("LC_ALL", "C")
        .process_group(0);
    if !cmd.must_finish {
        // SAFETY: the closure only makes one async-signal-safe syscall (prctl).
        unsafe {
            command.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::KILL,
                ))
                .map_err(std::io::Error::from)
            });
        }
    }
    let child = command.spawn().map_err(|e| {
        let kind = if e.kind() == std::io::ErrorKind::NotFound {
            ErrorKind::FailedPrecondition
        } else {
            ErrorKind::Internal
        };
        Error::new(
            kind,
            format!("cannot run {}: {e} (is it installed?)", cmd.program),
        )
    })?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    // A thread drains both pipes (no deadlock on large output) while this one keeps time.
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(cmd.timeout) {
        Ok(output) => output?,
        Err(_) if cmd.must_finish => {
            return Err(Error::new(
                ErrorKind::DeadlineExceeded,
                format!(
                    "{} did not finish within {}; it is left running, because stopping it \
                     half-way would damage the filesystem: try again when it has ended",
                    cmd.program,
                    humantime::format_duration(cmd.timeout)
                ),
            ));
        }
        Err(_) => {
            if let Some(pgid) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
            }
            let _ = rx.recv();
            return Err(Error::new(
                ErrorKind::DeadlineExceeded,
                format!(
                    "{} did not finish within {}; it was killed",
                    cmd.program,
                    humantime::format_duration(cmd.timeout)
                ),
            ));
        }
    };
    let status = output
        .status
        .code()
        .or_else(|| output.status.signal().map(|s| 128 + s))
        .unwrap_or(-1);
    Ok(CmdOutput {
        status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: cmd.redact(&String::from_utf8_lossy(&output.stderr)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn captures_output_and_status() {
        let out = run(&Cmd::new("sh").args(["-c", "echo out; echo err >&2; exit 3"])).unwrap();
        assert_eq!(out.status, 3);
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
    }

    #[test]
    fn a_hanging_command_is_killed_with_its_children() {
        let start = Instant::now();
        let err = run(&Cmd::new("sh")
            .args(["-c", "sleep 30 & sleep 30"])
            .timeout(Duration::from_millis(200)))
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::DeadlineExceeded);
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_command_that_must_finish_outlives_its_deadline() {
        let dir = std::env::temp_dir().join(format!("vb-exec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let done = dir.join("done");
        let script = format!("sleep 0.6; touch {}", done.display());
        let err = run(&Cmd::new("sh")
            .args(["-c", &script])
            .timeout(Duration::from_millis(100))
            .must_finish())
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::DeadlineExceeded);
        assert!(err.message.contains("left running"), "{}", err.message);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(done.exists(), "the command was stopped");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_tool_says_so() {
        let err = run(&Cmd::new("volbridge-no-such-tool")).unwrap_err();
        assert_eq!(err.kind, ErrorKind::FailedPrecondition);
        assert!(err.message.contains("is it installed"));
    }
}
