//! Sizes as users write them: bytes, or a number with a binary (`Ki`..`Pi`) or decimal
//! (`K`..`P`) unit, an optional trailing `B`.

use crate::error::{Error, ErrorKind, Result};
use serde_json::Value;

/// CSPs get sizes aligned to 1 MiB (csp-api.md B15).
pub const ALIGNMENT: u64 = 1 << 20;
/// Largest size accepted, 1 EiB: a multiple of [`ALIGNMENT`], well clear of 2^63 - 1 (the
/// CSP wire carries sizes as signed 64-bit integers) and of overflow when rounding.
pub const MAX_SIZE: u64 = 1 << 60;

const UNITS: &[(&str, u64)] = &[
    ("ki", 1 << 10),
    ("mi", 1 << 20),
    ("gi", 1 << 30),
    ("ti", 1 << 40),
    ("pi", 1 << 50),
    ("k", 1_000),
    ("m", 1_000_000),
    ("g", 1_000_000_000),
    ("t", 1_000_000_000_000),
    ("p", 1_000_000_000_000_000),
    ("", 1),
];

const HELP: &str = "use bytes or a whole number with a unit: Ki, Mi, Gi, Ti, Pi (powers of 1024) or K, M, G, T, P (powers of 1000), e.g. 1Gi, 500Mi, 10G";

/// Parses a size string into bytes; zero, negative and unknown units are refused.
pub fn parse_size(field: &str, text: &str) -> Result<u64> {
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits_end);
    if number.is_empty() {
        return Err(Error::invalid(
            field,
            format!("'{text}' is not a size; {HELP}"),
        ));
    }
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let Some(&(_, factor)) = UNITS.iter().find(|(u, _)| *u == unit) else {
        return Err(Error::invalid(
            field,
            format!("'{text}' has an unknown unit; {HELP}"),
        ));
    };
    let n: u64 = number
        .parse()
        .map_err(|_| Error::invalid(field, format!("'{text}' is too large")))?;
    let bytes = n
        .checked_mul(factor)
        .filter(|b| *b <= MAX_SIZE)
        .ok_or_else(|| Error::invalid(field, format!("'{text}' is too large; the limit is 1Ei")))?;
    if bytes == 0 {
        return Err(Error::invalid(field, "must be greater than zero"));
    }
    Ok(bytes)
}

/// Parses a size given in JSON as a number of bytes or a string with a unit.
pub fn size_from_json(field: &str, value: &Value) -> Result<u64> {
    match value {
        Value::Number(n) => match n.as_u64() {
            Some(0) => Err(Error::invalid(field, "must be greater than zero")),
            Some(b) if b <= MAX_SIZE => Ok(b),
            _ => Err(Error::invalid(
                field,
                format!("{n} is not a valid size; {HELP}"),
            )),
        },
        Value::String(s) => parse_size(field, s),
        other => Err(Error::invalid(
            field,
            format!("{other} is not a size; {HELP}"),
        )),
    }
}

/// Rounds up to the 1 MiB alignment every CSP accepts. Above [`MAX_SIZE`] (where the
/// rounding itself could overflow, and the CSP could not take the number) the size is
/// refused with OutOfRange, before any CSP call; `field` names what asked for it.
pub fn align(field: &str, bytes: u64) -> Result<u64> {
    if bytes > MAX_SIZE {
        return Err(too_large(field, bytes));
    }
    Ok(bytes.div_ceil(ALIGNMENT) * ALIGNMENT)
}

/// The OutOfRange error of a size above [`MAX_SIZE`].
pub fn too_large(field: &str, bytes: u64) -> Error {
    Error {
        kind: ErrorKind::OutOfRange,
        message: format!(
            "{field}: {bytes} bytes is more than the largest size volbridge accepts, \
             {MAX_SIZE} bytes (1Ei); ask for 1Ei or less"
        ),
        field: Some(field.to_owned()),
    }
}

pub use volbridge_proto::units::human;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_size("size", "1Gi").unwrap(), 1 << 30);
        assert_eq!(parse_size("size", "500Mi").unwrap(), 500 << 20);
        assert_eq!(parse_size("size", "10G").unwrap(), 10_000_000_000);
        assert_eq!(parse_size("size", "4096").unwrap(), 4096);
        assert_eq!(parse_size("size", "2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("size", " 64mi ").unwrap(), 64 << 20);
    }

    #[test]
    fn refusals_name_the_field() {
        for bad in [
            "-1",
            "12Zi",
            "0",
            "",
            "Gi",
            "1.5Gi",
            "99999999999999999999",
            "2000Pi",
        ] {
            let e = parse_size("size", bad).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("size"), "{bad}");
        }
        assert!(size_from_json("size", &serde_json::json!(-1)).is_err());
        assert!(size_from_json("size", &serde_json::json!(0)).is_err());
        assert!(size_from_json("size", &serde_json::json!(true)).is_err());
        assert_eq!(
            size_from_json("size", &serde_json::json!("1Ki")).unwrap(),
            1024
        );
    }

    #[test]
    fn alignment_and_display() {
        assert_eq!(align("size", 0).unwrap(), 0);
        assert_eq!(align("size", 1).unwrap(), ALIGNMENT);
        assert_eq!(align("size", ALIGNMENT).unwrap(), ALIGNMENT);
        assert_eq!(align("size", MAX_SIZE - 1).unwrap(), MAX_SIZE);
        assert_eq!(align("size", MAX_SIZE).unwrap(), MAX_SIZE);
        assert_eq!(human(1 << 30), "1Gi");
        assert_eq!(human(1536 << 10), "1.5Mi");
        assert_eq!(human(10), "10B");
    }

    #[test]
    fn sizes_beyond_the_largest_are_out_of_range_not_overflow() {
        for bytes in [MAX_SIZE + 1, i64::MAX as u64, u64::MAX - 1, u64::MAX] {
            let e = align("capacity_range.required_bytes", bytes).unwrap_err();
            assert_eq!(e.kind, ErrorKind::OutOfRange, "{bytes}");
            assert_eq!(e.field.as_deref(), Some("capacity_range.required_bytes"));
            assert!(
                e.message.contains(&bytes.to_string()) && e.message.contains("1152921504606846976"),
                "{}",
                e.message
            );
        }
    }
}
