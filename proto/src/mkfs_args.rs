//! `fsCreateOptions` (Docker and FlexVolume: `mkfsOptions`): the extra arguments a volume's
//! first mkfs gets. They come from whoever may create a volume — a StorageClass, a pod's
//! inline volume attributes, a `docker volume create -o` — and run as root on the node, so
//! they are checked against a list of what each mkfs may be told, not a list of what it may
//! not: a flag that reads or writes another file or device (`mke2fs -d DIR`, `-J device=`,
//! `mkfs.xfs -p FILE`, `-l logdev=`, `mkfs.btrfs --rootdir`, another device as an argument)
//! is refused, and so is every flag not listed, combined short flags (`-qf`) among them.
//! Values hold letters, digits and `= , . _ : ^ + -`, never `/`. Forcing a format is refused
//! on its own: volbridge formats only what it has probed as blank.
//!
//! The lists are each mkfs's layout and tuning settings (mke2fs(8), mkfs.xfs(8),
//! mkfs.btrfs(8)); dry runs and bad-block scans are left out, as they do not make a usable
//! volume.

/// One flag a mkfs may be given.
struct Flag {
    /// The spellings (`-L`, `--label`).
    names: &'static [&'static str],
    /// Takes a value (the next argument, or `--name=value` for long names).
    value: bool,
    /// For `key=value,…` values: the keys allowed (empty: any value of the allowed
    /// characters).
    keys: &'static [&'static str],
}

const fn flag(names: &'static [&'static str]) -> Flag {
    Flag {
        names,
        value: false,
        keys: &[],
    }
}

const fn valued(names: &'static [&'static str]) -> Flag {
    Flag {
        names,
        value: true,
        keys: &[],
    }
}

const fn keyed(names: &'static [&'static str], keys: &'static [&'static str]) -> Flag {
    Flag {
        names,
        value: true,
        keys,
    }
}

/// mke2fs(8).
const EXT4: &[Flag] = &[
    flag(&["-q"]),
    flag(&["-v"]),
    flag(&["-j"]),
    flag(&["-D"]),
    flag(&["-K"]),
    valued(&["-b"]),
    valued(&["-C"]),
    valued(&["-g"]),
    valued(&["-G"]),
    valued(&["-i"]),
    valued(&["-I"]),
    valued(&["-L"]),
    valued(&["-m"]),
    valued(&["-N"]),
    valued(&["-o"]),
    valued(&["-r"]),
    valued(&["-T"]),
    valued(&["-U"]),
    valued(&["-e"]),
    valued(&["-O"]),
    keyed(
        &["-E"],
        &[
            "stride",
            "stripe_width",
            "stripe-width",
            "resize",
            "packed_meta_blocks",
            "lazy_itable_init",
            "lazy_journal_init",
            "assume_storage_prezeroed",
            "root_owner",
            "num_backup_sb",
            "discard",
            "nodiscard",
            "quotatype",
            "encoding",
            "encoding_flags",
            "orphan_file_size",
        ],
    ),
    keyed(&["-J"], &["size", "fast_commit_size", "location"]),
];

/// mkfs.xfs(8).
const XFS: &[Flag] = &[
    flag(&["-q"]),
    flag(&["-K"]),
    valued(&["-L"]),
    keyed(&["-b"], &["size"]),
    keyed(
        &["-m"],
        &[
            "crc",
            "finobt",
            "uuid",
            "rmapbt",
            "reflink",
            "inobtcount",
            "bigtime",
            "autofsck",
            "metadir",
        ],
    ),
    keyed(
        &["-d"],
        &[
            "agcount",
            "agsize",
            "su",
            "sunit",
            "sw",
            "swidth",
            "size",
            "noalign",
            "cowextsize",
            "extszinherit",
            "daxinherit",
            "rtinherit",
            "projinherit",
            "concurrency",
        ],
    ),
    keyed(
        &["-i"],
        &[
            "size",
            "perblock",
            "maxpct",
            "align",
            "attr",
            "projid32bit",
            "sparse",
            "nrext64",
            "exchange",
        ],
    ),
    keyed(
        &["-l"],
        &[
            "internal",
            "size",
            "version",
            "sunit",
            "su",
            "lazy-count",
            "concurrency",
        ],
    ),
    keyed(&["-n"], &["size", "version", "ftype", "parent"]),
    keyed(
        &["-r"],
        &["extsize", "size", "rgcount", "rgsize", "concurrency"],
    ),
    keyed(&["-s"], &["size"]),
];

/// mkfs.btrfs(8).
const BTRFS: &[Flag] = &[
    flag(&["-q", "--quiet"]),
    flag(&["-K", "--nodiscard"]),
    flag(&["-M", "--mixed"]),
    valued(&["-L", "--label"]),
    valued(&["-d", "--data"]),
    valued(&["-m", "--metadata"]),
    valued(&["-n", "--nodesize"]),
    valued(&["-s", "--sectorsize"]),
    valued(&["-O", "--features"]),
    valued(&["-R", "--runtime-features"]),
    valued(&["-U", "--uuid"]),
    valued(&["-b", "--byte-count"]),
    valued(&["--csum", "--checksum"]),
];

/// Arguments that would let mkfs overwrite an existing filesystem.
const FORCE: [&str; 3] = ["-F", "-f", "--force"];

fn flags(fs_type: &str) -> Option<&'static [Flag]> {
    match fs_type {
        "ext4" => Some(EXT4),
        "xfs" => Some(XFS),
        "btrfs" => Some(BTRFS),
        _ => None,
    }
}

fn value_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '=' | ',' | '.' | '_' | ':' | '^' | '+' | '-')
}

/// Checks `options` (whitespace-separated) as extra arguments of `mkfs.<fs_type>`; the
/// arguments when all are allowed, else why not, naming the argument.
pub fn check(fs_type: &str, options: &str) -> Result<Vec<String>, String> {
    let Some(table) = flags(fs_type) else {
        return Err(format!(
            "volbridge makes only ext4, xfs and btrfs, not '{fs_type}'"
        ));
    };
    let mut out = Vec::new();
    let mut tokens = options.split_whitespace();
    while let Some(token) = tokens.next() {
        if FORCE.contains(&token) {
            return Err(format!(
                "'{token}' is not allowed: volbridge never forces a format"
            ));
        }
        let (name, inline) = match token.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v)),
            _ => (token, None),
        };
        let Some(spec) = table.iter().find(|f| f.names.contains(&name)) else {
            return Err(refused(fs_type, token, table));
        };
        out.push(name.to_owned());
        if !spec.value {
            if inline.is_some() {
                return Err(format!("'{name}' of mkfs.{fs_type} takes no value"));
            }
            continue;
        }
        let Some(value) = inline.or_else(|| tokens.next()) else {
            return Err(format!("'{name}' of mkfs.{fs_type} needs a value after it"));
        };
        check_value(fs_type, name, value, spec.keys)?;
        out.push(value.to_owned());
    }
    Ok(out)
}

fn check_value(fs_type: &str, name: &str, value: &str, keys: &[&str]) -> Result<(), String> {
    if value.is_empty() || value.starts_with('-') {
        return Err(format!(
            "'{name}' of mkfs.{fs_type} needs a value after it, not '{value}'"
        ));
    }
    if let Some(c) = value.chars().find(|c| !value_char(*c)) {
        return Err(format!(
            "'{name} {value}': '{c}' is not allowed in a value (letters, digits and = , . _ : ^ + - \
             only; a file or device is never an mkfs argument here)"
        ));
    }
    if keys.is_empty() {
        return Ok(());
    }
    for part in value.split(',').filter(|p| !p.is_empty()) {
        let key = part.split('=').next().unwrap_or_default();
        if !keys.contains(&key) {
            return Err(format!(
                "'{name} {value}': '{key}' is not a setting volbridge passes to mkfs.{fs_type} \
                 (allowed: {})",
                keys.join(", ")
            ));
        }
    }
    Ok(())
}

fn refused(fs_type: &str, token: &str, table: &[Flag]) -> String {
    let allowed: Vec<&str> = table.iter().flat_map(|f| f.names.iter().copied()).collect();
    if token.starts_with('-') {
        format!(
            "'{token}' is not an option volbridge passes to mkfs.{fs_type} (allowed: {}; \
             give combined flags one by one)",
            allowed.join(" ")
        )
    } else {
        format!(
            "'{token}' is not an option of mkfs.{fs_type}: an argument that is not an option's \
             value would be taken as another device or file"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(fs: &str, options: &str) -> Vec<String> {
        check(fs, options).unwrap_or_else(|e| panic!("{fs} {options}: {e}"))
    }

    fn refused(fs: &str, options: &str) -> String {
        check(fs, options).expect_err(options)
    }

    #[test]
    fn layout_and_tuning_pass_as_given() {
        assert_eq!(ok("ext4", "-m 0 -i 8192"), ["-m", "0", "-i", "8192"]);
        ok(
            "ext4",
            "-L data -O ^has_journal,metadata_csum -E stride=16,stripe_width=64",
        );
        ok(
            "ext4",
            "-b 4096 -I 256 -J size=64 -T largefile -e remount-ro -U clear",
        );
        ok(
            "xfs",
            "-m reflink=1,crc=1 -d agcount=4,su=64k,sw=4 -i size=512 -n ftype=1",
        );
        ok("xfs", "-l size=64m,lazy-count=1 -s size=4096 -L vol_1 -K");
        assert_eq!(
            ok(
                "btrfs",
                "--label=web -m dup -d single --csum xxhash -O ^no-holes"
            ),
            [
                "--label",
                "web",
                "-m",
                "dup",
                "-d",
                "single",
                "--csum",
                "xxhash",
                "-O",
                "^no-holes"
            ]
        );
        assert_eq!(ok("ext4", "  "), Vec::<String>::new());
    }

    #[test]
    fn what_reads_or_writes_another_file_or_device_is_refused() {
        for (fs, options, says) in [
            ("ext4", "-d /etc/kubernetes", "'-d' is not an option"),
            ("ext4", "-L /etc/kubernetes", "'/' is not allowed"),
            ("ext4", "-d etc", "'-d' is not an option"),
            ("ext4", "-l badblocks", "'-l' is not an option"),
            ("ext4", "-J device=/dev/sdc", "'/' is not allowed"),
            ("ext4", "-J device=LABEL=j", "'device' is not a setting"),
            (
                "ext4",
                "-E root_owner=0:0,offset=9",
                "'offset' is not a setting",
            ),
            ("xfs", "-p protofile", "'-p' is not an option"),
            ("xfs", "-l logdev=sdc", "'logdev' is not a setting"),
            ("xfs", "-d name=image", "'name' is not a setting"),
            ("xfs", "-r rtdev=sdc", "'rtdev' is not a setting"),
            ("btrfs", "--rootdir /etc", "'--rootdir' is not an option"),
            ("btrfs", "-r etc", "'-r' is not an option"),
            ("btrfs", "-L x sdc", "would be taken as another device"),
            ("btrfs", "/dev/sdc", "would be taken as another device"),
        ] {
            let e = refused(fs, options);
            assert!(e.contains(says), "{fs} {options}: {e}");
        }
    }

    #[test]
    fn force_and_combined_flags_are_refused() {
        for (fs, options) in [("ext4", "-F"), ("xfs", "-f"), ("btrfs", "--force")] {
            assert!(refused(fs, options).contains("never forces a format"));
        }
        for (fs, options) in [
            ("ext4", "-qF"),
            ("ext4", "-FF"),
            ("xfs", "-qf"),
            ("btrfs", "--forc"),
        ] {
            assert!(
                refused(fs, options).contains("is not an option"),
                "{options}"
            );
        }
    }

    #[test]
    fn values_are_needed_and_plain() {
        assert!(refused("ext4", "-L").contains("needs a value"));
        assert!(refused("ext4", "-L -q").contains("needs a value"));
        assert!(refused("btrfs", "--label=").contains("needs a value"));
        assert!(refused("btrfs", "--quiet=1").contains("takes no value"));
        assert!(refused("ext4", "-L a$b").contains("'$' is not allowed"));
        assert!(refused("zfs", "-q").contains("only ext4, xfs and btrfs"));
    }
}
