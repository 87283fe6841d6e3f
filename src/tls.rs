//! TLS set-up shared by every HTTP client of volbridge (rustls with the ring provider, chosen
//! over aws-lc-rs because it builds without cmake and keeps the binary small).

use std::sync::Once;

/// Installs the process-wide rustls crypto provider once; call before building a client.
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // A second install (by an embedding program) is harmless: keep whichever came first.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A reqwest client builder with the crypto provider in place.
pub fn client_builder() -> reqwest::ClientBuilder {
    init();
    reqwest::Client::builder()
}
