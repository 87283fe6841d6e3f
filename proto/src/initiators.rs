//! Initiator names: the iSCSI name (IQN) a node logs in with and the NVMe host NQN it
//! connects with. An array allows a host by exactly these, and a target made for it names
//! the host by them (the local CSP's LIO ACLs and nvmet hosts are directories named so), so
//! a name is accepted only in a shape that is both a real initiator name and a single safe
//! path component: a `../..` or `/etc/x` sent as an IQN must never reach a path.
//!
//! The shapes follow RFC 3720 §3.2.6 (iSCSI: `iqn.`, `eui.`, `naa.`) and the NVMe base
//! specification (NQN: `nqn.`), both at most 223 bytes. The characters are those the two
//! formats use in practice — letters, digits, `.`, `-`, `:` — and `_`, which some
//! hand-edited names carry.

/// The longest iSCSI name or NQN, in bytes (RFC 3720 §3.2.6.1; NVMe base spec §4.5).
pub const MAX_INITIATOR_BYTES: usize = 223;

/// Which kind of initiator name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitiatorKind {
    Iqn,
    Nqn,
}

impl InitiatorKind {
    fn prefixes(self) -> &'static [&'static str] {
        match self {
            InitiatorKind::Iqn => &["iqn.", "eui.", "naa."],
            InitiatorKind::Nqn => &["nqn."],
        }
    }

    /// What the name is, in words.
    pub fn noun(self) -> &'static str {
        match self {
            InitiatorKind::Iqn => "an iSCSI initiator name (IQN)",
            InitiatorKind::Nqn => "an NVMe host NQN",
        }
    }

    /// The expected shape, for messages.
    pub fn shape(self) -> &'static str {
        match self {
            InitiatorKind::Iqn => {
                "iqn.<yyyy-mm>.<reversed domain>[:<name>], eui.<16 hex digits> or naa.<hex digits>"
            }
            InitiatorKind::Nqn => "nqn.<yyyy-mm>.<reversed domain>:<name>",
        }
    }

    /// The file a Linux node keeps its own name in.
    pub fn node_file(self) -> &'static str {
        match self {
            InitiatorKind::Iqn => "/etc/iscsi/initiatorname.iscsi",
            InitiatorKind::Nqn => "/etc/nvme/hostnqn",
        }
    }
}

/// Checks `name` as an initiator name of `kind`; the error says what is wrong with it and
/// what the shape is, without repeating the name (the caller shows it).
pub fn check(kind: InitiatorKind, name: &str) -> Result<(), String> {
    let allowed = format!(
        "expected {}, at most {MAX_INITIATOR_BYTES} letters, digits and . - : _",
        kind.shape()
    );
    if name.len() > MAX_INITIATOR_BYTES {
        return Err(format!("it is {} bytes long; {allowed}", name.len()));
    }
    let lower = name.to_ascii_lowercase();
    let Some(prefix) = kind.prefixes().iter().find(|p| lower.starts_with(**p)) else {
        return Err(format!(
            "it does not start with {}; {allowed}",
            kind.prefixes().join(" or ")
        ));
    };
    if name.len() == prefix.len() {
        return Err(format!("it has nothing after '{prefix}'; {allowed}"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_')))
    {
        return Err(format!("it holds {}; {allowed}", shown_char(c)));
    }
    Ok(())
}

/// Whether `name` is an initiator name of `kind` ([`check`]).
pub fn is_valid(kind: InitiatorKind, name: &str) -> bool {
    check(kind, name).is_ok()
}

fn shown_char(c: char) -> String {
    match c {
        ' ' => "a space".to_owned(),
        '/' => "a '/'".to_owned(),
        c if c.is_control() => format!("the control character U+{:04X}", c as u32),
        c => format!("'{c}'"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use InitiatorKind::{Iqn, Nqn};

    #[test]
    fn real_names_pass() {
        for iqn in [
            "iqn.1993-08.org.debian:01:6e2b4b1c9f3",
            "iqn.1991-05.com.microsoft:host-1.corp.example.com",
            "iqn.1998-01.com.vmware:esx01-4f3e2a1b",
            "IQN.2005-03.ORG.OPEN-ISCSI:ABC",
            "eui.02004567a425678d",
            "naa.52004567ba64678d",
            "iqn.2026-12.io.volbridge:node_a",
        ] {
            assert_eq!(check(Iqn, iqn), Ok(()), "{iqn}");
        }
        for nqn in [
            "nqn.2014-08.org.nvmexpress:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
            "nqn.2026-12.io.volbridge:node-a",
        ] {
            assert_eq!(check(Nqn, nqn), Ok(()), "{nqn}");
        }
    }

    #[test]
    fn paths_and_strangers_are_refused_with_a_reason() {
        let refused = |kind, name: &str| check(kind, name).expect_err(name);
        assert!(refused(Iqn, "../../../etc/cron.d/x").contains("does not start with iqn."));
        assert!(refused(Iqn, "iqn.2026-12.x:../../etc").contains("a '/'"));
        assert!(refused(Iqn, "/etc/passwd").contains("does not start with"));
        assert!(refused(Iqn, "iqn.").contains("nothing after 'iqn.'"));
        assert!(refused(Iqn, "iqn.2026-12.x:a b").contains("a space"));
        assert!(refused(Iqn, "iqn.2026-12.x:a\nb").contains("U+000A"));
        assert!(refused(Iqn, "nqn.2014-08.org.nvmexpress:uuid:1").contains("iqn."));
        assert!(refused(Nqn, "iqn.1993-08.org.debian:01:abc").contains("nqn."));
        assert!(refused(Nqn, "nqn.2026-12.x:é").contains("'é'"));
        let long = format!("iqn.2026-12.x:{}", "a".repeat(MAX_INITIATOR_BYTES));
        assert!(refused(Iqn, &long).contains("bytes long"));
        let at_most = format!("iqn.2026-12.x:{}", "a".repeat(MAX_INITIATOR_BYTES - 14));
        assert_eq!(at_most.len(), MAX_INITIATOR_BYTES);
        assert_eq!(check(Iqn, &at_most), Ok(()));
    }

    #[test]
    fn a_valid_name_is_one_path_component() {
        for name in ["iqn.2026-12.a:b", "eui.02004567a425678d", "nqn.2014-08.x:y"] {
            let kind = if name.starts_with("nqn.") { Nqn } else { Iqn };
            assert!(is_valid(kind, name));
            let path = std::path::Path::new("/sys/kernel/config/acls").join(name);
            assert_eq!(
                path.parent(),
                Some(std::path::Path::new("/sys/kernel/config/acls"))
            );
        }
    }
}
