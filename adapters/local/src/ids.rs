//! Object ids and external names.
//!
//! Ids are the only strings ever joined into a file path, so an id is accepted from a
//! request only when it has exactly the shape this crate generates (32 lower-case hex).

use crate::errors::ApiError;

/// Length of an id in hex characters (16 random bytes).
pub const ID_LEN: usize = 32;
/// Longest accepted name, in bytes.
pub const MAX_NAME_LEN: usize = 1024;

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

/// `n` bytes from the kernel's random source, hex-encoded.
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(got) => filled += got,
            Err(rustix::io::Errno::INTR) => continue,
            // getrandom only fails on kernels older than 3.17, which cannot run this anyway.
            Err(e) => panic!("getrandom failed: {e}"),
        }
    }
    hex(&buf)
}

/// A fresh object id.
pub fn new_id() -> String {
    random_hex(ID_LEN / 2)
}

/// Whether `s` has the exact shape of an id this crate generates.
pub fn is_id(s: &str) -> bool {
    s.len() == ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Checks an external name (volume, snapshot, group, host uuid): non-empty, at most
/// [`MAX_NAME_LEN`] bytes, no control characters. `field` names it in the 400 message.
pub fn check_name(field: &str, value: Option<&str>) -> Result<String, ApiError> {
    let Some(v) = value else {
        return Err(ApiError::bad_request(format!("{field} is required")));
    };
    if v.is_empty() {
        return Err(ApiError::bad_request(format!("{field} must not be empty")));
    }
    if v.len() > MAX_NAME_LEN {
        return Err(ApiError::bad_request(format!(
            "{field} is longer than {MAX_NAME_LEN} bytes"
        )));
    }
    if v.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(v.to_owned())
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_32_lower_hex() {
        let id = new_id();
        assert!(is_id(&id), "{id}");
        assert_ne!(id, new_id());
        assert!(!is_id(
            &id.to_uppercase().replace(|c: char| c.is_ascii_digit(), "A")
        ));
        assert!(!is_id("../../etc/passwd"));
        assert!(!is_id(""));
        assert!(!is_id(&format!("{id}0")));
        assert!(!is_id("0123456789abcdef0123456789abcdeg"));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("volume name", Some("pvc-1")).is_ok());
        assert!(check_name("volume name", Some("../../etc/passwd")).is_ok());
        assert!(check_name("volume name", None).is_err());
        assert!(check_name("volume name", Some("")).is_err());
        assert!(check_name("volume name", Some("a\nb")).is_err());
        let long = "x".repeat(MAX_NAME_LEN + 1);
        let e = check_name("volume name", Some(&long)).unwrap_err();
        assert!(e.message.contains("volume name"));
    }

    #[test]
    fn hex_encodes() {
        assert_eq!(hex(&[0, 0xab, 0xff]), "00abff");
    }
}
