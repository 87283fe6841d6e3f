//! Byte counts for people, the same in every front end and in the local CSP's messages:
//! one grammar for the sizes users write (CLI `--size`, Docker and FlexVolume `size=`, the
//! admin API, config files) and one way to print them.
//!
//! A size is bytes, or a whole number with a binary unit: `Ki`, `Mi`, `Gi`, `Ti`, `Pi`
//! (any case), from 1 MiB to 1 EiB. Decimal units (`G`, `GB`) and `GiB` are refused with
//! the binary unit as the suggestion: `10G` has meant 10^10 bytes to some tools and 10 GiB
//! to others, and a volume's size is not the place to guess.

/// The smallest size: CSPs get sizes aligned to 1 MiB, so anything less is a mistake (most
/// often a number written without its unit).
pub const MIN_SIZE: u64 = 1 << 20;
/// The largest size, 1 EiB: a multiple of 1 MiB, well clear of 2^63 - 1 (the CSP wire
/// carries sizes as signed 64-bit integers) and of overflow when rounding.
pub const MAX_SIZE: u64 = 1 << 60;

const UNITS: [(&str, u32); 6] = [
    ("", 0),
    ("ki", 10),
    ("mi", 20),
    ("gi", 30),
    ("ti", 40),
    ("pi", 50),
];

/// Why a text is not a size. Each front end words it in its own protocol's style.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SizeError {
    /// No digits at the start.
    NotASize,
    /// `1.5Gi`.
    NotWhole,
    /// A unit outside the list; `binary` is the unit meant, when one is clear (`G`, `GB`,
    /// `GiB` → `Gi`).
    UnknownUnit {
        unit: String,
        binary: Option<String>,
    },
    /// Beyond [`MAX_SIZE`].
    TooLarge,
    /// Below [`MIN_SIZE`]; `without_unit` when the text was only digits.
    BelowMinimum { bytes: u64, without_unit: bool },
}

/// Parses a size as the module says.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(digits_end);
    if digits.is_empty() {
        return Err(SizeError::NotASize);
    }
    if unit.starts_with(['.', ',']) {
        return Err(SizeError::NotWhole);
    }
    let lower = unit.trim().to_ascii_lowercase();
    let Some(&(_, shift)) = UNITS.iter().find(|(u, _)| *u == lower) else {
        // `G`, `GB` and `GiB` all name the gibibyte unit the user most likely meant.
        let binary = "kmgtp"
            .chars()
            .find(|c| [format!("{c}"), format!("{c}b"), format!("{c}ib")].contains(&lower))
            .map(|c| format!("{}i", c.to_ascii_uppercase()));
        return Err(SizeError::UnknownUnit {
            unit: unit.to_owned(),
            binary,
        });
    };
    let bytes = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1u64 << shift))
        .filter(|b| *b <= MAX_SIZE)
        .ok_or(SizeError::TooLarge)?;
    check_bytes(bytes).map_err(|e| match e {
        SizeError::BelowMinimum { bytes, .. } => SizeError::BelowMinimum {
            bytes,
            without_unit: unit.is_empty(),
        },
        other => other,
    })
}

/// The same limits for a size given as a number of bytes.
pub fn check_bytes(bytes: u64) -> Result<u64, SizeError> {
    if bytes > MAX_SIZE {
        return Err(SizeError::TooLarge);
    }
    if bytes < MIN_SIZE {
        return Err(SizeError::BelowMinimum {
            bytes,
            without_unit: true,
        });
    }
    Ok(bytes)
}

/// `1073741824` → `1Gi`, `1572864` → `1.5Mi`.
pub fn human(bytes: u64) -> String {
    const NAMES: [&str; 6] = ["", "Ki", "Mi", "Gi", "Ti", "Pi"];
    let mut value = bytes as f64;
    let mut i = 0;
    while value >= 1024.0 && i + 1 < NAMES.len() {
        value /= 1024.0;
        i += 1;
    }
    if i == 0 {
        return format!("{bytes}B");
    }
    let text = format!("{value:.1}");
    format!("{}{}", text.trim_end_matches(".0"), NAMES[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_grammar() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("10Gi"), Ok(10 << 30));
        assert_eq!(parse_size(" 10gi "), Ok(10 << 30));
        assert_eq!(parse_size("1PI"), Ok(1 << 50));
        assert_eq!(parse_size("1024Pi"), Ok(MAX_SIZE));
        assert_eq!(parse_size("1025Pi"), Err(SizeError::TooLarge));
        assert_eq!(parse_size("99999999999999999999"), Err(SizeError::TooLarge));
        assert_eq!(parse_size("1.5Gi"), Err(SizeError::NotWhole));
        assert_eq!(parse_size("Gi"), Err(SizeError::NotASize));
        assert_eq!(parse_size(""), Err(SizeError::NotASize));
        assert_eq!(parse_size("-1"), Err(SizeError::NotASize));
        for (text, unit, binary) in [
            ("10G", "G", Some("Gi")),
            ("10GB", "GB", Some("Gi")),
            ("10GiB", "GiB", Some("Gi")),
            ("5mb", "mb", Some("Mi")),
            ("10x", "x", None),
            ("10gx", "gx", None),
            ("10Gigs", "Gigs", None),
        ] {
            assert_eq!(
                parse_size(text),
                Err(SizeError::UnknownUnit {
                    unit: unit.into(),
                    binary: binary.map(Into::into)
                }),
                "{text}"
            );
        }
        assert_eq!(
            parse_size("10"),
            Err(SizeError::BelowMinimum {
                bytes: 10,
                without_unit: true
            })
        );
        assert_eq!(
            parse_size("512Ki"),
            Err(SizeError::BelowMinimum {
                bytes: 512 << 10,
                without_unit: false
            })
        );
        assert_eq!(
            parse_size("0Gi"),
            Err(SizeError::BelowMinimum {
                bytes: 0,
                without_unit: false
            })
        );
    }

    #[test]
    fn binary_units() {
        assert_eq!(human(1 << 30), "1Gi");
        assert_eq!(human(1_572_864), "1.5Mi");
        assert_eq!(human(512), "512B");
    }
}
