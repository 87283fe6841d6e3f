//! On-disk metadata: a state file plus an append-only journal.
//!
//! `state.json` holds a full [`Tables`] snapshot, replaced atomically (temp, fsync, rename,
//! fsync dir). `journal` holds one line per committed operation:
//! `<crc32 of the JSON, 8 hex> <JSON array of changes>\n`. A line is all of an operation's
//! changes, so a torn write can lose an unacknowledged operation but never half of one.
//! Replay stops at the first line that is incomplete or fails its checksum; the file is
//! truncated there before anything new is appended.

use crate::model::{Change, Tables};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

const STATE_FILE: &str = "state.json";
const STATE_TMP: &str = "state.json.tmp";
const JOURNAL_FILE: &str = "journal";
/// The journal is compacted once it is larger than this and than the last state file.
const MIN_COMPACT_BYTES: u64 = 4 << 20;

#[derive(Deserialize)]
struct StateFile {
    tables: Tables,
}

#[derive(Serialize)]
struct StateFileRef<'a> {
    version: u32,
    tables: &'a Tables,
}

pub struct Journal {
    dir: PathBuf,
    file: File,
    len: u64,
    state_len: u64,
}

impl Journal {
    /// Loads the state file and replays the journal over it.
    pub fn open(dir: &Path) -> io::Result<(Journal, Tables)> {
        let _ = std::fs::remove_file(dir.join(STATE_TMP));
        let (mut tables, state_len) = match std::fs::read(dir.join(STATE_FILE)) {
            Ok(bytes) => {
                let sf: StateFile = serde_json::from_slice(&bytes).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}: {e}", dir.join(STATE_FILE).display()),
                    )
                })?;
                (sf.tables, bytes.len() as u64)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (Tables::default(), 0),
            Err(e) => return Err(e),
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(dir.join(JOURNAL_FILE))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (ops, valid) = decode(&bytes);
        if (valid as u64) < bytes.len() as u64 {
            tracing::warn!(
                dropped = bytes.len() - valid,
                "journal ends in a torn record; dropping it (it was never acknowledged)"
            );
            file.set_len(valid as u64)?;
            file.sync_data()?;
        }
        for op in ops {
            for change in op {
                tables.apply(change);
            }
        }
        let journal = Journal {
            dir: dir.to_owned(),
            file,
            len: valid as u64,
            state_len,
        };
        Ok((journal, tables))
    }

    /// Appends the operations and makes them durable with one `fdatasync`.
    pub fn append<'a>(&mut self, ops: impl IntoIterator<Item = &'a [Change]>) -> io::Result<()> {
        let mut buf = Vec::with_capacity(4096);
        for op in ops {
            encode_into(op, &mut buf);
        }
        if let Err(e) = self
            .file
            .write_all(&buf)
            .and_then(|_| self.file.sync_data())
        {
            // Cut off whatever part reached the file so the next append starts on a clean
            // line boundary; the failed records were not acknowledged.
            let _ = self.file.set_len(self.len);
            return Err(e);
        }
        self.len += buf.len() as u64;
        Ok(())
    }

    pub fn wants_compaction(&self) -> bool {
        self.len > MIN_COMPACT_BYTES.max(self.state_len)
    }

    /// Writes `tables` as the new state file and empties the journal. The JSON is
    /// streamed to the file through a small buffer: a state of 10,000 volumes is 4 MiB,
    /// which an in-memory copy would add to the daemon's peak (and, freed, to the memory
    /// the allocator keeps).
    pub fn compact(&mut self, tables: &Tables) -> io::Result<()> {
        let tmp = self.dir.join(STATE_TMP);
        let written = (|| {
            let f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            let mut out = io::BufWriter::with_capacity(64 << 10, Counted { f, n: 0 });
            serde_json::to_writer(&mut out, &StateFileRef { version: 1, tables })
                .map_err(io::Error::other)?;
            let Counted { f, n } = out.into_inner().map_err(|e| e.into_error())?;
            f.sync_all()?;
            std::fs::rename(&tmp, self.dir.join(STATE_FILE))?;
            crate::files::sync_dir(&self.dir)?;
            Ok(n)
        })();
        let len = match written {
            Ok(n) => n,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        // From here the state file holds everything; a crash before the truncation only
        // leaves records whose replay is idempotent.
        self.file.set_len(0)?;
        self.file.sync_data()?;
        self.len = 0;
        self.state_len = len;
        Ok(())
    }
}

/// A file that counts the bytes written to it.
struct Counted {
    f: File,
    n: u64,
}

impl Write for Counted {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.f.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.f.flush()
    }
}

fn encode_into(op: &[Change], buf: &mut Vec<u8>) {
    let start = buf.len();
    buf.extend_from_slice(b"00000000 ");
    // Serialising plain data structures into memory cannot fail.
    serde_json::to_writer(&mut *buf, op).expect("journal records serialise");
    let crc = crc32(&buf[start + 9..]);
    buf[start..start + 8].copy_from_slice(format!("{crc:08x}").as_bytes());
    buf.push(b'\n');
}

/// Decodes complete, intact lines; returns them and the byte length they cover.
fn decode(bytes: &[u8]) -> (Vec<Vec<Change>>, usize) {
    let mut ops = Vec::new();
    let mut pos = 0;
    while let Some(nl) = bytes[pos..].iter().position(|&b| b == b'\n') {
        let line = &bytes[pos..pos + nl];
        let Some(op) = decode_line(line) else { break };
        ops.push(op);
        pos += nl + 1;
    }
    (ops, pos)
}

fn decode_line(line: &[u8]) -> Option<Vec<Change>> {
    if line.len() < 10 || line[8] != b' ' {
        return None;
    }
    let crc = u32::from_str_radix(std::str::from_utf8(&line[..8]).ok()?, 16).ok()?;
    let json = &line[9..];
    if crc32(json) != crc {
        return None;
    }
    serde_json::from_slice(json).ok()
}

/// CRC-32 (IEEE), bitwise with a small table.
fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        t
    });
    let mut c = !0u32;
    for &b in data {
        c = table[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::VolumeGroupRec;

    fn group(id: &str) -> Change {
        Change::PutVolumeGroup(VolumeGroupRec {
            id: id.into(),
            name: format!("g{id}"),
            description: None,
            creation_time: 0,
            config: Default::default(),
        })
    }

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn torn_and_corrupt_tails_are_dropped() {
        let mut buf = Vec::new();
        encode_into(&[group("a")], &mut buf);
        encode_into(&[group("b"), group("c")], &mut buf);
        let good = buf.len();
        encode_into(&[group("d")], &mut buf);
        let (ops, len) = decode(&buf);
        assert_eq!((ops.len(), len), (3, buf.len()));

        let torn = &buf[..buf.len() - 3];
        let (ops, len) = decode(torn);
        assert_eq!((ops.len(), len), (2, good));

        let mut flipped = buf.clone();
        flipped[good + 20] ^= 1;
        assert_eq!(decode(&flipped).1, good);

        let mut zeros = buf[..good].to_vec();
        zeros.extend_from_slice(&[0u8; 100]);
        zeros.push(b'\n');
        assert_eq!(decode(&zeros).1, good);
    }
}
