//! Random names and ids from the kernel's random source (no crate needed for a few bytes).

/// `n` random bytes as lower-case hex.
pub fn hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(k) => filled += k,
            Err(rustix::io::Errno::INTR) => {}
            // Names only need to differ between runs; the clock is good enough for that.
            Err(_) => {
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default();
                for (i, b) in buf.iter_mut().enumerate().skip(filled) {
                    *b = (t >> ((i % 16) * 8)) as u8 ^ (i as u8).wrapping_mul(151);
                }
                filled = n;
            }
        }
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random 64-bit number (listing ids in CSI tokens).
pub fn u64() -> u64 {
    u64::from_str_radix(&hex(8), 16).unwrap_or_default()
}

/// A random RFC 4122 version-4 UUID: some arrays insist on the format for host uuids.
pub fn uuid_v4() -> String {
    let mut h = hex(16).into_bytes();
    h[12] = b'4';
    h[16] = b"89ab"[(h[16] as usize) % 4];
    let h = String::from_utf8(h).unwrap_or_default();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
