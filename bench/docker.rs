//! `cargo bench --bench docker`: the Docker volume plugin endpoint of a real `volbridge serve`
//! (embedded local CSP), driven over its unix socket the way dockerd does (keep-alive
//! HTTP/1.1, empty Host, JSON + newline). Prints a table; ratios are against baselines
//! measured in the same run.
//!
//! 1. Get and List with N volumes recorded (default 1,000): latency p50/p99 on one
//!    persistent connection. Baseline: the admin API's `GET /v1/volumes/{name}`, which asks
//!    the CSP (what a Get would cost without the local records).
//! 2. A Create + Mount + Unmount + Remove cycle of a 64 MiB volume through the plugin
//!    (unstage delay 0, so every cycle attaches, formats, mounts and detaches), against the
//!    same work through the CLI (`volume create`, `volume mount`, `volume unmount`,
//!    `volume rm`: four processes), interleaved so noise hits both alike. Needs root.
//!
//! Env: VOLBRIDGE_BENCH_DIR (scratch dir; default the system temp dir),
//! VOLBRIDGE_BENCH_VOLUMES (default 1000), VOLBRIDGE_BENCH_GETS (default 5000),
//! VOLBRIDGE_BENCH_CYCLES (default 15).

#[path = "support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::daemon::Daemon;
use support::percentile;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Conn {
    fn open(path: &Path) -> Conn {
        let s = UnixStream::connect(path).expect("connect");
        Conn {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        }
    }

    /// One keep-alive request; (status, body).
    fn request(&mut self, method: &str, path: &str, host: &str, body: &str) -> (u16, String) {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Go-http-client/1.1\r\nContent-Length: {}\r\nAccept: application/vnd.docker.plugins.v1.2+json\r\n\r\n{body}",
            body.len()
        );
        self.writer.write_all(req.as_bytes()).unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut len = 0;
        loop {
            let mut h = String::new();
            self.reader.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap();
                }
            }
        }
        let mut b = vec![0; len];
        self.reader.read_exact(&mut b).unwrap();
        (status, String::from_utf8(b).unwrap())
    }

    fn plugin(&mut self, method: &str, body: &str) -> String {
        let (status, text) = self.request("POST", &format!("/{method}"), "", &format!("{body}\n"));
        assert_eq!(status, 200, "{method}: {text}");
        text
    }
}

fn err_of(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text).unwrap()["Err"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// The shared bench daemon with the Docker plugin socket, and a sweep of its mounts and
/// loop devices when it goes.
struct DockerDaemon {
    daemon: Daemon,
    dir: PathBuf,
    docker: PathBuf,
}

impl DockerDaemon {
    fn start(dir: &Path) -> DockerDaemon {
        let docker = dir.join("docker.sock");
        let socket = docker.display().to_string();
        let daemon = Daemon::start_with(
            dir,
            &["--docker-socket", &socket, "--docker-unstage-delay", "0"],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        DockerDaemon {
            daemon,
            dir: dir.to_path_buf(),
            docker,
        }
    }
}

impl Drop for DockerDaemon {
    fn drop(&mut self) {
        self.daemon.stop();
        // Best effort: nothing of ours stays mounted or attached.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "grep -o ' {0}[^ ]*' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l; for l in $(losetup -a 2>/dev/null | grep '{0}' | cut -d: -f1); do losetup -d $l; done",
                self.dir.display()
            ))
            .status();
    }
}

fn main() {
    let volumes = env_usize("VOLBRIDGE_BENCH_VOLUMES", 1000);
    let gets = env_usize("VOLBRIDGE_BENCH_GETS", 5000);
    let cycles = env_usize("VOLBRIDGE_BENCH_CYCLES", 15);
    let base = std::env::var_os("VOLBRIDGE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("vbbench-docker-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let root = rustix::process::geteuid().is_root();
    {
        let daemon = DockerDaemon::start(&dir);
        let mut conn = Conn::open(&daemon.docker);
        println!(
            "volbridge Docker plugin benchmark: {volumes} volumes, {gets} Gets, {cycles} cycles"
        );
        let t = Instant::now();
        for i in 0..volumes {
            let r = conn.plugin(
                "VolumeDriver.Create",
                &format!(r#"{{"Name":"bench{i:05}","Opts":{{"size":"1Mi"}}}}"#),
            );
            assert_eq!(err_of(&r), "", "{r}");
        }
        println!(
            "created {volumes} volumes in {:.1} s",
            t.elapsed().as_secs_f64()
        );

        // 1. Get / List, and the CSP round trip they avoid.
        let mut get = Vec::with_capacity(gets);
        let mut seed = 0x2545_f491_u64;
        for _ in 0..gets {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let body = format!(r#"{{"Name":"bench{:05}"}}"#, seed as usize % volumes.max(1));
            let t = Instant::now();
            let r = conn.plugin("VolumeDriver.Get", &body);
            get.push(t.elapsed());
            debug_assert!(err_of(&r).is_empty());
        }
        let lists = (gets / 20).max(20);
        let mut list = Vec::with_capacity(lists);
        for _ in 0..lists {
            let t = Instant::now();
            let r = conn.plugin("VolumeDriver.List", "{}");
            list.push(t.elapsed());
            debug_assert!(r.len() > volumes * 20);
        }
        let mut admin = Conn::open(&daemon.daemon.admin_socket);
        let csp_gets = (gets / 10).max(50);
        let mut csp = Vec::with_capacity(csp_gets);
        for i in 0..csp_gets {
            let path = format!("/v1/volumes/bench{:05}", i % volumes.max(1));
            let t = Instant::now();
            let (status, _) = admin.request("GET", &path, "volbridge", "");
            csp.push(t.elapsed());
            assert_eq!(status, 200);
        }
        for v in [&mut get, &mut list, &mut csp] {
            v.sort();
        }
        println!();
        println!(
            "{:<44} {:>12} {:>12} {:>10}",
            "operation", "p50", "p99", "p99 ratio"
        );
        let row = |name: &str, s: &[Duration], base: Option<&[Duration]>| {
            let ratio = base
                .map(|b| {
                    format!(
                        "{:.3}",
                        percentile(s, 0.99).as_secs_f64() / percentile(b, 0.99).as_secs_f64()
                    )
                })
                .unwrap_or_else(|| "1".into());
            println!(
                "{:<44} {:>12} {:>12} {:>10}",
                name,
                us(percentile(s, 0.5)),
                us(percentile(s, 0.99)),
                ratio
            );
        };
        row("baseline: admin GET /v1/volumes/x (CSP)", &csp, None);
        row("VolumeDriver.Get (local records)", &get, Some(&csp));
        row(
            &format!("VolumeDriver.List ({volumes} volumes)"),
            &list,
            Some(&csp),
        );
        let p99 = percentile(&get, 0.99);
        println!(
            "goal Get p99 < 1 ms: {} ({})",
            if p99 < Duration::from_millis(1) {
                "met"
            } else {
                "NOT met"
            },
            us(p99)
        );

        // 2. Create + Mount + Unmount + Remove: plugin vs CLI.
        if !root {
            println!("\ncycle benchmark skipped: needs root (loop devices, mkfs, mount)");
        } else {
            let mut plugin = Vec::new();
            let mut cli = Vec::new();
            let target = dir.join("cli-target");
            for i in 0..cycles + 1 {
                let name = format!("cyc{i}");
                let t = Instant::now();
                let r = conn.plugin(
                    "VolumeDriver.Create",
                    &format!(r#"{{"Name":"{name}","Opts":{{"size":"64Mi"}}}}"#),
                );
                assert_eq!(err_of(&r), "", "{r}");
                let id = "ab".repeat(32);
                let r = conn.plugin(
                    "VolumeDriver.Mount",
                    &format!(r#"{{"Name":"{name}","ID":"{id}"}}"#),
                );
                assert_eq!(err_of(&r), "", "{r}");
                let r = conn.plugin(
                    "VolumeDriver.Unmount",
                    &format!(r#"{{"Name":"{name}","ID":"{id}"}}"#),
                );
                assert_eq!(err_of(&r), "", "{r}");
                let r = conn.plugin("VolumeDriver.Remove", &format!(r#"{{"Name":"{name}"}}"#));
                assert_eq!(err_of(&r), "", "{r}");
                let took = t.elapsed();

                let cname = format!("cli{i}");
                let tpath = target.display().to_string();
                let t = Instant::now();
                daemon
                    .daemon
                    .cli(&["volume", "create", &cname, "--size", "64Mi"]);
                daemon.daemon.cli(&["volume", "mount", &cname, &tpath]);
                daemon.daemon.cli(&["volume", "unmount", &cname, &tpath]);
                daemon.daemon.cli(&["volume", "rm", &cname]);
                let took_cli = t.elapsed();
                if i > 0 {
                    // The first pair warms caches.
                    plugin.push(took);
                    cli.push(took_cli);
                }
            }
            plugin.sort();
            cli.sort();
            println!();
            println!(
                "{:<44} {:>12} {:>12} {:>10}",
                "cycle (create+mount+unmount+remove)", "p50", "p99", "p50 ratio"
            );
            println!(
                "{:<44} {:>12} {:>12} {:>10}",
                "baseline: CLI (4 processes, admin API)",
                ms(percentile(&cli, 0.5)),
                ms(percentile(&cli, 0.99)),
                "1"
            );
            println!(
                "{:<44} {:>12} {:>12} {:>10.3}",
                "Docker plugin (one keep-alive connection)",
                ms(percentile(&plugin, 0.5)),
                ms(percentile(&plugin, 0.99)),
                percentile(&plugin, 0.5).as_secs_f64() / percentile(&cli, 0.5).as_secs_f64()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
