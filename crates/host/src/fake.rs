//! A recording [`Host`] for unit tests: every call is kept as a typed [`Call`], commands
//! answer with scripted outputs, and a small simulated machine (files, mounts, loop
//! devices) makes multi-step procedures observable without root.
//!
//! One file over 600 lines on purpose: it implements the `Host` trait method for method
//! over one simulated machine, and reads best beside the trait as a whole.
//!
//! Opt-in with [`FakeHost::simulate_filesystems`]: filesystem signatures, so that flows
//! spanning several stages (format once, find the filesystem again after a detach) run
//! without scripting every blkid answer.

use super::{Cmd, CmdOutput, FileKind, FileStat, FsUsage, Host, LoopDevice, MountEntry, MountSpec};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use volbridge_base::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// The argv as it may be logged (secrets redacted).
    Run {
        program: String,
        args: Vec<String>,
    },
    Mount(MountSpec),
    Unmount(PathBuf),
    LoopAttach {
        file: PathBuf,
        read_only: bool,
    },
    LoopDetach(PathBuf),
    LoopRefresh(PathBuf),
    Flush(PathBuf),
    WriteFile {
        path: PathBuf,
        contents: String,
    },
    CreateDir(PathBuf),
    CreateFile(PathBuf),
    Remove(PathBuf),
    RemoveEmptyDir(PathBuf),
    Chown {
        path: PathBuf,
        uid: u32,
        gid: u32,
    },
    Chmod {
        path: PathBuf,
        mode: u32,
    },
}

#[derive(Debug, Clone)]
enum Node {
    File(Vec<u8>),
    /// A sparse volume image: a size without its bytes (which read as zeros until a
    /// simulated mkfs writes to it).
    Image {
        size: u64,
        written: bool,
    },
    Dir,
    Block {
        major: u32,
        minor: u32,
        size: u64,
    },
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    /// Scripted answers, by program: the first matching prefix of argv wins.
    scripts: Vec<(String, Vec<String>, VecDeque<CmdOutput>)>,
    programs: Vec<String>,
    files: BTreeMap<PathBuf, Node>,
    mounts: Vec<MountEntry>,
    loops: Vec<LoopDevice>,
    next_mount_id: u32,
    /// Filesystem signatures by the file or device that holds them (see
    /// [`FakeHost::simulate_filesystems`]).
    signatures: BTreeMap<PathBuf, String>,
    simulate_filesystems: bool,
    boot_id: BootId,
    /// Mounts seen in other mount namespaces: (process, device `major:minor`).
    namespace_mounts: Vec<(u32, String)>,
    /// Devices whose reads fail (a LUN that is not ready).
    unreadable: std::collections::BTreeSet<PathBuf>,
}

/// The simulated kernel's boot ID: one from the start, as on a real machine.
struct BootId(Option<String>);

impl Default for BootId {
    fn default() -> Self {
        BootId(Some("00000000-0000-4000-8000-000000000001".to_owned()))
    }
}

#[derive(Default)]
pub struct FakeHost {
    state: Mutex<State>,
}

impl FakeHost {
    pub fn new() -> FakeHost {
        FakeHost::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Answers the next run of `program` whose argv starts with `args_prefix` with `output`.
    /// Several scripts for one argv answer in order; the last one repeats.
    pub fn script(&self, program: &str, args_prefix: &[&str], output: CmdOutput) -> &Self {
        self.with(|s| {
            let prefix: Vec<String> = args_prefix.iter().map(|a| a.to_string()).collect();
            if let Some(entry) = s
                .scripts
                .iter_mut()
                .find(|(p, a, _)| p == program && *a == prefix)
            {
                entry.2.push_back(output);
            } else {
                s.scripts
                    .push((program.to_owned(), prefix, VecDeque::from([output])));
            }
            if !s.programs.iter().any(|p| p == program) {
                s.programs.push(program.to_owned());
            }
        });
        self
    }

    /// Makes a program "installed" without scripting it (it answers success, no output).
    pub fn install(&self, program: &str) -> &Self {
        self.with(|s| s.programs.push(program.to_owned()));
        self
    }

    pub fn add_file(&self, path: impl Into<PathBuf>, contents: &str) -> &Self {
        let path = path.into();
        self.with(|s| {
            add_parents(&mut s.files, &path);
            s.files
                .insert(path, Node::File(contents.as_bytes().to_vec()));
        });
        self
    }

    pub fn add_bytes(&self, path: impl Into<PathBuf>, contents: &[u8]) -> &Self {
        let path = path.into();
        self.with(|s| {
            add_parents(&mut s.files, &path);
            s.files.insert(path, Node::File(contents.to_vec()));
        });
        self
    }

    /// A sparse volume image of `size` bytes that reads as zeros (what a CSP's new volume
    /// looks like), without holding its bytes.
    pub fn add_image(&self, path: impl Into<PathBuf>, size: u64) -> &Self {
        let path = path.into();
        self.with(|s| {
            add_parents(&mut s.files, &path);
            s.files.insert(
                path,
                Node::Image {
                    size,
                    written: false,
                },
            );
        });
        self
    }

    /// Simulates filesystem signatures from now on: a successful `mkfs.<type>` (scripted or
    /// not) writes a `<type>` signature to the device it formats, and an unscripted
    /// `blkid -p` answers from the signature of the device it probes (exit 2: blank). A loop
    /// device shows what its backing file holds, so a signature survives a detach. Scripts
    /// still win: a test scripts blkid to make it fail.
    pub fn simulate_filesystems(&self) -> &Self {
        self.with(|s| s.simulate_filesystems = true);
        self
    }

    /// Puts a filesystem signature on a file or device, as if it had been formatted before;
    /// an image with a signature has data. See [`FakeHost::simulate_filesystems`].
    pub fn add_signature(&self, path: impl Into<PathBuf>, fs_type: &str) -> &Self {
        let path = path.into();
        self.with(|s| write_signature(s, &path, fs_type));
        self
    }

    /// The filesystem signature on a file or device (through its loop binding), if any.
    pub fn signature(&self, path: &Path) -> Option<String> {
        self.with(|s| s.signatures.get(&backing_of(s, path)).cloned())
    }

    /// A loop device bound by someone else, showing `backing_file` as the kernel does.
    pub fn add_loop(&self, device: &str, backing_file: &str, dev: &str) -> &Self {
        self.with(|s| {
            s.loops.push(LoopDevice {
                device: PathBuf::from(device),
                backing_file: PathBuf::from(backing_file),
                dev: dev.to_owned(),
                read_only: false,
            })
        });
        self
    }

    pub fn add_dir(&self, path: impl Into<PathBuf>) -> &Self {
        let path = path.into();
        self.with(|s| {
            add_parents(&mut s.files, &path);
            s.files.insert(path, Node::Dir);
        });
        self
    }

    /// Every read of `path` fails with an I/O error from now on, as a LUN in ALUA standby.
    pub fn make_unreadable(&self, path: impl Into<PathBuf>) -> &Self {
        let path = path.into();
        self.with(|s| s.unreadable.insert(path));
        self
    }

    pub fn add_block_device(
        &self,
        path: impl Into<PathBuf>,
        major: u32,
        minor: u32,
        size: u64,
    ) -> &Self {
        let path = path.into();
        self.with(|s| {
            add_parents(&mut s.files, &path);
            s.files.insert(path, Node::Block { major, minor, size });
        });
        self
    }

    pub fn add_mount(&self, source: &str, target: &str, fs_type: &str, dev: &str) -> &Self {
        self.with(|s| {
            s.next_mount_id += 1;
            s.mounts.push(MountEntry {
                mount_id: s.next_mount_id,
                dev: dev.to_owned(),
                root: "/".into(),
                target: target.into(),
                options: "rw".into(),
                fs_type: fs_type.into(),
                source: source.into(),
                super_options: "rw".into(),
            });
        });
        self
    }

    /// A reboot as the boot ID shows it (`None`: a kernel without one). Only the ID changes:
    /// a test drops the mounts and loop devices a reboot loses itself.
    pub fn set_boot_id(&self, boot_id: Option<&str>) -> &Self {
        self.with(|s| s.boot_id = BootId(boot_id.map(str::to_owned)));
        self
    }

    /// Process `pid`, in a mount namespace of its own (a container), has device `dev`
    /// (`major:minor`) mounted.
    pub fn add_namespace_mount(&self, pid: u32, dev: &str) -> &Self {
        self.with(|s| s.namespace_mounts.push((pid, dev.to_owned())));
        self
    }

    /// Process `pid` and its mount namespace are gone (the container stopped).
    pub fn end_namespace(&self, pid: u32) -> &Self {
        self.with(|s| s.namespace_mounts.retain(|(p, _)| *p != pid));
        self
    }

    pub fn calls(&self) -> Vec<Call> {
        self.with(|s| s.calls.clone())
    }

    /// The argv of every command run, as `program arg arg…` lines.
    pub fn commands(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Run { program, args } => Some(
                    std::iter::once(program)
                        .chain(args)
                        .collect::<Vec<_>>()
                        .join(" "),
                ),
                _ => None,
            })
            .collect()
    }

    pub fn clear_calls(&self) {
        self.with(|s| s.calls.clear());
    }

    pub fn file_exists(&self, path: &Path) -> bool {
        self.with(|s| s.files.contains_key(path))
    }
}

/// What holds a device's data: the backing file of a loop device, else the path itself.
fn backing_of(s: &State, path: &Path) -> PathBuf {
    s.loops
        .iter()
        .find(|l| l.device == path)
        .map_or_else(|| path.to_path_buf(), |l| l.backing_file.clone())
}

fn write_signature(s: &mut State, path: &Path, fs_type: &str) {
    let holder = backing_of(s, path);
    if let Some(Node::Image { written, .. }) = s.files.get_mut(&holder) {
        *written = true;
    }
    s.signatures.insert(holder, fs_type.to_owned());
}

/// `blkid -p -o export <device>` as the real one answers for what the simulation knows.
fn simulated_blkid(s: &State, args: &[String]) -> CmdOutput {
    let device = args.last().map(PathBuf::from).unwrap_or_default();
    match s.signatures.get(&backing_of(s, &device)) {
        Some(fs_type) => CmdOutput::ok(format!(
            "DEVNAME={}\nTYPE={fs_type}\nUSAGE=filesystem\n",
            device.display()
        )),
        None => CmdOutput::failed(2, ""),
    }
}

fn add_parents(files: &mut BTreeMap<PathBuf, Node>, path: &Path) {
    let mut p = path.parent();
    while let Some(dir) = p {
        if dir.as_os_str().is_empty() {
            break;
        }
        files.entry(dir.to_path_buf()).or_insert(Node::Dir);
        p = dir.parent();
    }
}

impl Host for FakeHost {
    fn run(&self, cmd: &Cmd) -> Result<CmdOutput> {
        self.with(|s| {
            s.calls.push(Call::Run {
                program: cmd.program.clone(),
                args: cmd.redacted_args().into_iter().map(str::to_owned).collect(),
            });
            if !s.programs.contains(&cmd.program) {
                return Err(Error::precondition(format!(
                    "cannot run {}: not found (is it installed?)",
                    cmd.program
                )));
            }
            let best = s
                .scripts
                .iter_mut()
                .filter(|(p, prefix, _)| *p == cmd.program && cmd.args.starts_with(prefix))
                .max_by_key(|(_, prefix, _)| prefix.len());
            let output = match best {
                Some((_, _, outputs)) if outputs.len() > 1 => {
                    outputs.pop_front().unwrap_or_default()
                }
                Some((_, _, outputs)) => outputs.front().cloned().unwrap_or_default(),
                None if s.simulate_filesystems && cmd.program == "blkid" => {
                    simulated_blkid(s, &cmd.args)
                }
                None => CmdOutput::ok(""),
            };
            if s.simulate_filesystems && output.success() {
                if let (Some(fs_type), Some(device)) =
                    (cmd.program.strip_prefix("mkfs."), cmd.args.last())
                {
                    write_signature(s, Path::new(device), fs_type);
                }
            }
            Ok(output)
        })
    }

    fn find_program(&self, name: &str) -> Option<PathBuf> {
        self.with(|s| {
            s.programs
                .iter()
                .any(|p| p == name)
                .then(|| PathBuf::from("/usr/sbin").join(name))
        })
    }

    fn mount(&self, spec: &MountSpec) -> Result<()> {
        self.with(|s| {
            s.calls.push(Call::Mount(spec.clone()));
            if !s.files.contains_key(&spec.target) {
                return Err(Error::not_found(format!(
                    "cannot mount on {}: no such file or directory",
                    spec.target.display()
                )));
            }
            if spec.flags.remount {
                if let Some(m) = s.mounts.iter_mut().rev().find(|m| m.target == spec.target) {
                    m.options = if spec.flags.read_only { "ro" } else { "rw" }.into();
                }
                return Ok(());
            }
            let mut root = PathBuf::from("/");
            let (dev, fs_type, source) = if spec.flags.bind {
                match s.mounts.iter().rev().find(|m| m.target == spec.source) {
                    Some(m) => (m.dev.clone(), m.fs_type.clone(), m.source.clone()),
                    None => match s.files.get(&spec.source) {
                        // Like the kernel: devtmpfs's device, and the node's path in /dev.
                        Some(Node::Block { .. }) => {
                            root = Path::new("/")
                                .join(spec.source.strip_prefix("/dev").unwrap_or(&spec.source));
                            ("0:1".into(), "devtmpfs".into(), "udev".into())
                        }
                        _ => (
                            "0:1".into(),
                            "none".into(),
                            spec.source.display().to_string(),
                        ),
                    },
                }
            } else {
                let dev = match s.files.get(&spec.source) {
                    Some(Node::Block { major, minor, .. }) => format!("{major}:{minor}"),
                    _ => {
                        return Err(Error::not_found(format!(
                            "cannot mount {}: not a block device",
                            spec.source.display()
                        )))
                    }
                };
                (
                    dev,
                    spec.fs_type.clone().unwrap_or_default(),
                    spec.source.display().to_string(),
                )
            };
            s.next_mount_id += 1;
            let id = s.next_mount_id;
            s.mounts.push(MountEntry {
                mount_id: id,
                dev,
                root,
                target: spec.target.clone(),
                options: if spec.flags.read_only { "ro" } else { "rw" }.into(),
                fs_type,
                source,
                super_options: "rw".into(),
            });
            Ok(())
        })
    }

    fn unmount(&self, target: &Path) -> Result<bool> {
        self.with(|s| {
            s.calls.push(Call::Unmount(target.to_path_buf()));
            match s.mounts.iter().rposition(|m| m.target == target) {
                Some(i) => {
                    s.mounts.remove(i);
                    Ok(true)
                }
                None => Ok(false),
            }
        })
    }

    fn mounts(&self) -> Result<Vec<MountEntry>> {
        self.with(|s| Ok(s.mounts.clone()))
    }

    fn mounted_in_other_namespaces(&self, dev: &str) -> Result<Vec<u32>> {
        self.with(|s| {
            let mut pids: Vec<u32> = s
                .namespace_mounts
                .iter()
                .filter(|(_, d)| d == dev)
                .map(|(p, _)| *p)
                .collect();
            pids.sort_unstable();
            pids.dedup();
            Ok(pids)
        })
    }

    fn loop_attach(&self, file: &Path, read_only: bool) -> Result<PathBuf> {
        self.with(|s| {
            s.calls.push(Call::LoopAttach {
                file: file.to_path_buf(),
                read_only,
            });
            let size = match s.files.get(file) {
                Some(Node::File(c)) => c.len() as u64,
                Some(Node::Image { size, .. }) | Some(Node::Block { size, .. }) => *size,
                _ => {
                    return Err(Error::not_found(format!(
                        "{}: no such file",
                        file.display()
                    )))
                }
            };
            let n = (0u32..)
                .find(|n| !s.loops.iter().any(|l| l.dev == format!("7:{n}")))
                .unwrap_or(0);
            let device = PathBuf::from(format!("/dev/loop{n}"));
            s.loops.push(LoopDevice {
                device: device.clone(),
                backing_file: file.to_path_buf(),
                dev: format!("7:{n}"),
                read_only,
            });
            // The node appears in /dev, which exists on any machine (devtmpfs, `0:1`).
            add_parents(&mut s.files, &device);
            s.files.insert(
                device.clone(),
                Node::Block {
                    major: 7,
                    minor: n,
                    size,
                },
            );
            Ok(device)
        })
    }

    fn loop_detach(&self, device: &Path) -> Result<()> {
        self.with(|s| {
            s.calls.push(Call::LoopDetach(device.to_path_buf()));
            s.loops.retain(|l| l.device != device);
            Ok(())
        })
    }

    fn loops(&self) -> Result<Vec<LoopDevice>> {
        self.with(|s| Ok(s.loops.clone()))
    }

    fn tool_running(&self, _programs: &[&str], _arg: &Path) -> Result<bool> {
        Ok(false)
    }

    fn boot_id(&self) -> Result<Option<String>> {
        self.with(|s| Ok(s.boot_id.0.clone()))
    }

    fn flush(&self, path: &Path) -> Result<()> {
        self.with(|s| {
            s.calls.push(Call::Flush(path.to_path_buf()));
            Ok(())
        })
    }

    fn loop_refresh(&self, device: &Path) -> Result<()> {
        self.with(|s| {
            s.calls.push(Call::LoopRefresh(device.to_path_buf()));
            Ok(())
        })
    }

    fn device_size(&self, device: &Path) -> Result<u64> {
        self.with(|s| match s.files.get(device) {
            Some(Node::Block { size, .. }) => Ok(*size),
            _ => Err(Error::not_found(format!("{} is gone", device.display()))),
        })
    }

    fn file_has_data(&self, path: &Path) -> Result<bool> {
        self.with(|s| match s.files.get(path) {
            Some(Node::File(c)) => Ok(c.iter().any(|b| *b != 0)),
            Some(Node::Image { written, .. }) => Ok(*written),
            Some(_) => Ok(true),
            None => Err(Error::not_found(format!(
                "{}: no such file",
                path.display()
            ))),
        })
    }

    fn read_at(&self, path: &Path, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.with(|s| match s.files.get(path) {
            _ if s.unreadable.contains(path) => Err(Error::internal(format!(
                "cannot read {}: Input/output error (os error 5)",
                path.display()
            ))),
            Some(Node::File(c)) => Ok(c.iter().skip(offset as usize).take(len).copied().collect()),
            Some(_) => Ok(vec![0; len]),
            None => Err(Error::not_found(format!("{} is gone", path.display()))),
        })
    }

    fn statvfs(&self, path: &Path) -> Result<FsUsage> {
        self.with(|s| {
            if s.mounts.iter().any(|m| m.target == path) {
                Ok(FsUsage {
                    total_bytes: 1 << 30,
                    available_bytes: 1 << 29,
                    used_bytes: 1 << 29,
                    total_inodes: 65536,
                    free_inodes: 65000,
                    used_inodes: 536,
                })
            } else {
                Err(Error::not_found(format!(
                    "{} is not mounted",
                    path.display()
                )))
            }
        })
    }

    fn stat(&self, path: &Path) -> Result<Option<FileStat>> {
        self.with(|s| {
            Ok(s.files.get(path).map(|n| {
                let (kind, rdev) = match n {
                    Node::File(_) | Node::Image { .. } => (FileKind::File, (0, 0)),
                    Node::Dir => (FileKind::Dir, (0, 0)),
                    Node::Block { major, minor, .. } => (FileKind::BlockDevice, (*major, *minor)),
                };
                FileStat {
                    kind,
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                    rdev,
                    dev: (0, 1),
                }
            }))
        })
    }

    fn exists(&self, path: &Path) -> Result<bool> {
        self.with(|s| Ok(s.files.contains_key(path)))
    }

    fn canonicalize(&self, path: &Path) -> Result<PathBuf> {
        self.with(|s| {
            if s.files.contains_key(path) {
                Ok(path.to_path_buf())
            } else {
                Err(Error::not_found(format!(
                    "{}: no such file",
                    path.display()
                )))
            }
        })
    }

    fn read_file(&self, path: &Path) -> Result<Option<String>> {
        self.with(|s| match s.files.get(path) {
            Some(Node::File(c)) => Ok(Some(String::from_utf8_lossy(c).into_owned())),
            _ => Ok(None),
        })
    }

    fn write_file(&self, path: &Path, contents: &str) -> Result<()> {
        self.with(|s| {
            s.calls.push(Call::WriteFile {
                path: path.to_path_buf(),
                contents: contents.to_owned(),
            });
            Ok(())
        })
    }

    fn list_dir(&self, path: &Path) -> Result<Vec<String>> {
        self.with(|s| {
            let mut names: Vec<String> = s
                .files
                .keys()
                .filter(|p| p.parent() == Some(path))
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect();
            names.sort();
            names.dedup();
            Ok(names)
        })
    }

    fn create_dir(&self, path: &Path) -> Result<()> {
        self.with(|s| {
            s.calls.push(Call::CreateDir(path.to_path_buf()));
            add_parents(&mut s.files, path);
            s.files.entry(path.to_path_buf()).or_insert(Node::Dir);
            Ok(())
        })
    }

    fn create_file(&self, path: &Path) -> Result<()> {
        self.with(|s| {
            s.calls.push(Call::CreateFile(path.to_path_buf()));
            s.files
                .entry(path.to_path_buf())
                .or_insert_with(|| Node::File(Vec::new()));
            Ok(())
        })
    }

    fn remove(&self, path: &Path) -> Result<()> {
        self.with(|s| {
            s.calls.push(Call::Remove(path.to_path_buf()));
            // Like rmdir(2) and unlink(2): a mount point is busy, a directory must be empty.
            if s.mounts.iter().any(|m| m.target == path) {
                return Err(Error::internal(format!(
                    "cannot remove {}: Device or resource busy",
                    path.display()
                )));
            }
            if s.files.keys().any(|p| p.parent() == Some(path)) {
                return Err(Error::internal(format!(
                    "cannot remove {}: Directory not empty",
                    path.display()
                )));
            }
            s.files.remove(path);
            Ok(())
        })
    }

    fn remove_empty_dir(&self, path: &Path) -> Result<()> {
        self.with(|s| {
            s.calls.push(Call::RemoveEmptyDir(path.to_path_buf()));
            match s.files.get(path) {
                None => return Ok(()),
                Some(Node::Dir) => {}
                Some(_) => {
                    return Err(Error::internal(format!(
                        "cannot remove {}: Not a directory",
                        path.display()
                    )))
                }
            }
            if s.mounts.iter().any(|m| m.target == path) {
                return Err(Error::internal(format!(
                    "cannot remove {}: Device or resource busy",
                    path.display()
                )));
            }
            if s.files.keys().any(|p| p.parent() == Some(path)) {
                return Err(Error::internal(format!(
                    "cannot remove {}: Directory not empty",
                    path.display()
                )));
            }
            s.files.remove(path);
            Ok(())
        })
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> Result<()> {
        self.with(|s| {
            s.calls.push(Call::Chown {
                path: path.to_path_buf(),
                uid,
                gid,
            });
            Ok(())
        })
    }

    fn chmod(&self, path: &Path, mode: u32) -> Result<()> {
        self.with(|s| {
            s.calls.push(Call::Chmod {
                path: path.to_path_buf(),
                mode,
            });
            Ok(())
        })
    }
}
