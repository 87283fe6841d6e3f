//! What the operator asks for (`pool = auto | dir | xfs-image | btrfs-image`) and what a
//! data dir ends up using.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The configured choice. `auto` takes the data dir itself when its filesystem reflinks,
/// else an image pool, else (no root, no mkfs) the data dir with copies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PoolChoice {
    #[default]
    Auto,
    Dir,
    XfsImage,
    BtrfsImage,
}

/// Where a data dir keeps its images.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PoolMode {
    /// The data dir itself: reflink where its filesystem has it, copies elsewhere.
    Dir,
    /// A sparse image formatted xfs (reflink=1), loop-attached and mounted under the data dir.
    XfsImage,
    /// The same with btrfs.
    BtrfsImage,
}

impl PoolMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::Dir => "dir",
            PoolMode::XfsImage => "xfs-image",
            PoolMode::BtrfsImage => "btrfs-image",
        }
    }
    /// The filesystem of an image pool.
    pub fn fs_type(self) -> Option<&'static str> {
        match self {
            PoolMode::Dir => None,
            PoolMode::XfsImage => Some("xfs"),
            PoolMode::BtrfsImage => Some("btrfs"),
        }
    }
}

impl fmt::Display for PoolMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PoolChoice {
    pub const ALL: &'static str = "auto, dir, xfs-image, btrfs-image";

    pub fn as_str(self) -> &'static str {
        match self {
            PoolChoice::Auto => "auto",
            PoolChoice::Dir => "dir",
            PoolChoice::XfsImage => "xfs-image",
            PoolChoice::BtrfsImage => "btrfs-image",
        }
    }
    /// The one mode this choice names, `None` for `auto`.
    pub fn mode(self) -> Option<PoolMode> {
        match self {
            PoolChoice::Auto => None,
            PoolChoice::Dir => Some(PoolMode::Dir),
            PoolChoice::XfsImage => Some(PoolMode::XfsImage),
            PoolChoice::BtrfsImage => Some(PoolMode::BtrfsImage),
        }
    }
}

impl fmt::Display for PoolChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PoolChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(PoolChoice::Auto),
            "dir" => Ok(PoolChoice::Dir),
            "xfs-image" | "xfs" => Ok(PoolChoice::XfsImage),
            "btrfs-image" | "btrfs" => Ok(PoolChoice::BtrfsImage),
            other => Err(format!(
                "unknown pool '{other}': use one of {}",
                PoolChoice::ALL
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse_and_print() {
        for c in [
            PoolChoice::Auto,
            PoolChoice::Dir,
            PoolChoice::XfsImage,
            PoolChoice::BtrfsImage,
        ] {
            assert_eq!(c.as_str().parse::<PoolChoice>().unwrap(), c);
        }
        assert_eq!(" XFS ".parse::<PoolChoice>().unwrap(), PoolChoice::XfsImage);
        let e = "zfs".parse::<PoolChoice>().unwrap_err();
        assert!(e.contains("auto, dir, xfs-image, btrfs-image"), "{e}");
    }
}
