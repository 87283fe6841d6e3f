//! Config keys between their two spellings (B38): a CSP names a volume's config keys
//! snake_case, users and the volume context camelCase (StorageClass parameters, mutable
//! parameters). Converted exactly as the reference client does.

/// Converts a config key from camelCase to snake_case exactly as the reference client does
/// (B38): `(.)([A-Z][a-z]+)` → `$1_$2`, then `([a-z0-9])([A-Z])` → `$1_$2`, then lower-case.
pub fn camel_to_snake(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    // Pass 1: left to right, non-overlapping matches of `(.)([A-Z][a-z]+)`.
    let mut pass1 = String::with_capacity(key.len() + 4);
    let mut i = 0;
    while i < chars.len() {
        if i + 2 < chars.len()
            && chars[i + 1].is_ascii_uppercase()
            && chars[i + 2].is_ascii_lowercase()
        {
            let mut end = i + 3;
            while end < chars.len() && chars[end].is_ascii_lowercase() {
                end += 1;
            }
            pass1.push(chars[i]);
            pass1.push('_');
            pass1.extend(&chars[i + 1..end]);
            i = end;
        } else {
            pass1.push(chars[i]);
            i += 1;
        }
    }
    // Pass 2: `([a-z0-9])([A-Z])`, non-overlapping.
    let chars: Vec<char> = pass1.chars().collect();
    let mut out = String::with_capacity(chars.len() + 4);
    let mut i = 0;
    while i < chars.len() {
        if i + 1 < chars.len()
            && (chars[i].is_ascii_lowercase() || chars[i].is_ascii_digit())
            && chars[i + 1].is_ascii_uppercase()
        {
            out.push(chars[i]);
            out.push('_');
            out.push(chars[i + 1]);
            i += 2;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out.to_lowercase()
}

/// Converts a config key from snake_case to camelCase (B38): each `^[A-Za-z]` or `_[A-Za-z]`
/// becomes the upper-cased letter, then the first character is lower-cased.
pub fn snake_to_camel(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    let mut out = String::with_capacity(key.len());
    let mut i = 0;
    while i < chars.len() {
        if i == 0 && chars[0].is_ascii_alphabetic() {
            out.push(chars[0].to_ascii_uppercase());
            i += 1;
        } else if chars[i] == '_' && i + 1 < chars.len() && chars[i + 1].is_ascii_alphabetic() {
            out.push(chars[i + 1].to_ascii_uppercase());
            i += 2;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    let mut it = out.chars();
    match it.next() {
        Some(first) => first.to_lowercase().chain(it).collect(),
        None => out,
    }
}
