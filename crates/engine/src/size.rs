//! Sizes as users write them, in the one grammar of `volbridge_proto::units` (bytes, or a
//! whole number of Ki, Mi, Gi, Ti, Pi; 1Mi to 1Ei), worded for the CLI, the admin API and
//! config files.

use serde_json::Value;
use volbridge_base::error::{Error, ErrorKind, Result};
use volbridge_proto::units::SizeError;
pub use volbridge_proto::units::MAX_SIZE;

/// CSPs get sizes aligned to 1 MiB (csp-api.md B15).
pub const ALIGNMENT: u64 = 1 << 20;

const HELP: &str = "use bytes or a whole number of Ki, Mi, Gi, Ti or Pi (powers of 1024), from 1Mi to 1Ei, e.g. 10Gi";

/// Parses a size string into bytes; `field` names the place in the error.
pub fn parse_size(field: &str, text: &str) -> Result<u64> {
    volbridge_proto::units::parse_size(text)
        .map_err(|e| size_error(field, &format!("'{}'", text.trim()), e))
}

/// Parses a size given in JSON as a number of bytes or a string with a unit.
pub fn size_from_json(field: &str, value: &Value) -> Result<u64> {
    match value {
        Value::Number(n) => match n.as_u64() {
            Some(b) => volbridge_proto::units::check_bytes(b)
                .map_err(|e| size_error(field, &format!("{b} bytes"), e)),
            None => Err(Error::invalid(
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

fn size_error(field: &str, shown: &str, e: SizeError) -> Error {
    let message = match e {
        SizeError::NotASize => format!("{shown} is not a size; {HELP}"),
        SizeError::NotWhole => {
            format!("{shown} is not a whole number; use a smaller unit (1536Mi, not 1.5Gi)")
        }
        SizeError::UnknownUnit {
            unit,
            binary: Some(binary),
        } => {
            let digits: String = shown.chars().filter(|c| c.is_ascii_digit()).collect();
            format!(
                "{shown}: volbridge sizes use binary units, and '{unit}' is not one; did you mean {digits}{binary}? ({HELP})"
            )
        }
        SizeError::UnknownUnit { unit, binary: None } => {
            format!("{shown} has an unknown unit '{unit}'; {HELP}")
        }
        SizeError::TooLarge => format!("{shown} is too large; the limit is 1Ei"),
        SizeError::BelowMinimum {
            bytes,
            without_unit,
        } => {
            let hint = if without_unit && bytes > 0 {
                format!("; a number without a unit is bytes: did you mean {bytes}Gi?")
            } else {
                String::new()
            };
            format!("{shown} is {bytes} bytes, below the 1Mi minimum{hint}")
        }
    };
    Error::invalid(field, message)
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
        field: Some(field.to_owned()),
        ..Error::new(
            ErrorKind::OutOfRange,
            format!(
                "{field}: {bytes} bytes is more than the largest size volbridge accepts, \
                 {MAX_SIZE} bytes (1Ei); ask for 1Ei or less"
            ),
        )
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
        assert_eq!(parse_size("size", "1048576").unwrap(), 1 << 20);
        assert_eq!(parse_size("size", " 64mi ").unwrap(), 64 << 20);
        let e = parse_size("size", "10GB").unwrap_err();
        assert!(e.message.contains("did you mean 10Gi?"), "{}", e.message);
        let e = parse_size("size", "100").unwrap_err();
        assert!(e.message.contains("did you mean 100Gi?"), "{}", e.message);
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
        assert!(size_from_json("size", &serde_json::json!(4096)).is_err());
        assert_eq!(
            size_from_json("size", &serde_json::json!("1Mi")).unwrap(),
            1 << 20
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
