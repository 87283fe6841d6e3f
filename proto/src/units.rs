//! Byte counts for people, the same in every front end and in the local CSP's messages.

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
    use super::human;

    #[test]
    fn binary_units() {
        assert_eq!(human(1 << 30), "1Gi");
        assert_eq!(human(1_572_864), "1.5Mi");
        assert_eq!(human(512), "512B");
    }
}
