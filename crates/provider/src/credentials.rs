//! Backend credentials (csp-api.md §1.1) and the base URL they select (§1.2).

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use volbridge_base::{Error, Result};

/// Default per-request timeout in service mode (§1.1).
const SERVICE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default per-request timeout in direct mode (§1.1).
const DIRECT_TIMEOUT: Duration = Duration::from_secs(300);
const DEFAULT_DIRECT_PORT: u16 = 443;
const DEFAULT_CONTEXT_PATH: &str = "/csp";

/// One backend, parsed from the string map of §1.1. The password never leaves this struct
/// except in the login body; `Debug` redacts it.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    backend: String,
    username: String,
    password: String,
    service_name: Option<String>,
    service_port: Option<u16>,
    path: Option<String>,
    timeout: Option<Duration>,
    tls_insecure: bool,
    ca_bundle: Option<String>,
}

/// Whether `pem` holds at least one certificate and nothing unreadable.
fn is_pem_bundle(pem: &str) -> bool {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .is_ok_and(|certs| !certs.is_empty())
}

/// The keys of §1.1. A secrets map with none of them selects no backend: a CO passes every
/// secret a class names (an encryption key, a token for something else) to every call.
const KEYS: [&str; 9] = [
    "backend",
    "username",
    "password",
    "serviceName",
    "servicePort",
    "path",
    "timeoutSeconds",
    "tlsInsecure",
    "caBundle",
];

fn required(map: &BTreeMap<String, String>, key: &str) -> Result<String> {
    match map.get(key).map(|v| v.trim()) {
        Some(v) if !v.is_empty() => Ok(v.to_owned()),
        _ => Err(Error::invalid(
            key,
            "required backend credential is missing",
        )),
    }
}

fn optional<'a>(map: &'a BTreeMap<String, String>, key: &str) -> Option<&'a str> {
    map.get(key).map(|v| v.trim()).filter(|v| !v.is_empty())
}

fn parse_port(value: &str) -> Result<u16> {
    match value.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(Error::invalid(
            "servicePort",
            format!("'{value}' is not a TCP port (a decimal number 1-65535)"),
        )),
    }
}

/// Wraps IPv6 literals in brackets so they can sit in a URL authority.
fn url_host(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// A keyed hash of the password. The key is random per process, so the cache key can be
/// logged without offering an offline guessing target for the password.
fn password_digest(password: &str) -> u64 {
    static KEY: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    let mut h = KEY
        .get_or_init(std::collections::hash_map::RandomState::new)
        .build_hasher();
    h.write(password.as_bytes());
    h.finish()
}

impl Credentials {
    /// Service-mode credentials for a CSP listening at `addr` (the embedded CSP, tests).
    pub fn service(
        backend: &str,
        addr: std::net::SocketAddr,
        username: &str,
        password: &str,
    ) -> Result<Credentials> {
        let map: BTreeMap<String, String> = [
            ("backend", backend.to_owned()),
            ("serviceName", addr.ip().to_string()),
            ("servicePort", addr.port().to_string()),
            ("username", username.to_owned()),
            ("password", password.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        Credentials::from_map(&map)
    }

    /// Whether `map` holds any backend credential: if it does, it must hold all that
    /// `from_map` requires; if not, the request is for the default backend.
    pub fn named_in(map: &BTreeMap<String, String>) -> bool {
        KEYS.iter().any(|k| map.contains_key(*k))
    }

    /// Parses and validates the backend map; every error is InvalidArgument naming the key,
    /// raised before any request is made.
    pub fn from_map(map: &BTreeMap<String, String>) -> Result<Credentials> {
        let backend = required(map, "backend")?;
        let username = required(map, "username")?;
        // Passwords may legitimately start or end with spaces: only emptiness is checked.
        let password = match map.get("password") {
            Some(p) if !p.is_empty() => p.clone(),
            _ => {
                return Err(Error::invalid(
                    "password",
                    "required backend credential is missing",
                ))
            }
        };
        let service_name = optional(map, "serviceName").map(str::to_owned);
        let service_port = match (optional(map, "servicePort"), &service_name) {
            (Some(p), _) => Some(parse_port(p)?),
            (None, Some(_)) => {
                return Err(Error::invalid(
                    "servicePort",
                    "required when serviceName is set (service mode)",
                ))
            }
            (None, None) => None,
        };
        let path = match optional(map, "path") {
            Some(p) if !p.starts_with('/') => {
                return Err(Error::invalid("path", format!("'{p}' must start with '/'")))
            }
            Some(p) => Some(p.trim_end_matches('/').to_owned()),
            None => None,
        };
        let timeout = match optional(map, "timeoutSeconds") {
            Some(t) => match t.parse::<u64>() {
                Ok(s) if s > 0 => Some(Duration::from_secs(s)),
                _ => {
                    return Err(Error::invalid(
                        "timeoutSeconds",
                        format!("'{t}' is not a positive whole number of seconds"),
                    ))
                }
            },
            None => None,
        };
        let tls_insecure = match optional(map, "tlsInsecure") {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("true") => true,
            Some(v) if v.eq_ignore_ascii_case("false") => false,
            Some(v) => {
                return Err(Error::invalid(
                    "tlsInsecure",
                    format!("'{v}' is not \"true\" or \"false\""),
                ))
            }
        };
        let ca_bundle = optional(map, "caBundle").map(str::to_owned);
        if let Some(pem) = &ca_bundle {
            if !is_pem_bundle(pem) {
                return Err(Error::invalid(
                    "caBundle",
                    "not a PEM bundle with at least one certificate",
                ));
            }
        }
        Ok(Credentials {
            backend,
            username,
            password,
            service_name,
            service_port,
            path,
            timeout,
            tls_insecure,
            ca_bundle,
        })
    }

    /// Service mode: a CSP running apart from the array, selected by `serviceName`.
    pub fn is_service_mode(&self) -> bool {
        self.service_name.is_some()
    }

    /// The URL every endpoint path is appended to, without `/containers/v1` (§1.2).
    pub fn base_url(&self) -> String {
        match &self.service_name {
            Some(name) => format!(
                "http://{}:{}",
                url_host(name),
                self.service_port.unwrap_or(80)
            ),
            None => format!(
                "https://{}:{}{}",
                url_host(&self.backend),
                self.service_port.unwrap_or(DEFAULT_DIRECT_PORT),
                self.path.as_deref().unwrap_or(DEFAULT_CONTEXT_PATH)
            ),
        }
    }

    /// Identity of the cached token: (serviceName, backend, username, hash(password)). The
    /// port and context path join it because two CSPs behind one host name must not share a
    /// client.
    pub fn cache_key(&self) -> String {
        format!(
            "{}:{}{}|{}|{}|{:016x}",
            self.service_name.as_deref().unwrap_or(""),
            self.service_port.map(|p| p.to_string()).unwrap_or_default(),
            self.path.as_deref().unwrap_or(""),
            self.backend,
            self.username,
            password_digest(&self.password)
        )
    }

    pub fn backend(&self) -> &str {
        &self.backend
    }

    pub fn username(&self) -> &str {
        &self.username
    }

    pub(crate) fn password(&self) -> &str {
        &self.password
    }

    /// The per-request timeout: `timeoutSeconds`, else 60 s (service) or 300 s (direct).
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(if self.is_service_mode() {
            SERVICE_TIMEOUT
        } else {
            DIRECT_TIMEOUT
        })
    }

    pub fn tls_insecure(&self) -> bool {
        self.tls_insecure
    }

    pub fn ca_bundle(&self) -> Option<&str> {
        self.ca_bundle.as_deref()
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("backend", &self.backend)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("service_name", &self.service_name)
            .field("service_port", &self.service_port)
            .field("path", &self.path)
            .field("timeout", &self.timeout)
            .field("tls_insecure", &self.tls_insecure)
            .field("ca_bundle", &self.ca_bundle.as_ref().map(|_| "<pem>"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use volbridge_base::error::ErrorKind;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("backend", "10.0.0.5"),
            ("username", "admin"),
            ("password", "s3cr3t-pw"),
        ]
    }

    #[test]
    fn secrets_for_something_else_name_no_backend() {
        assert!(!Credentials::named_in(&map(&[])));
        assert!(!Credentials::named_in(&map(&[("secretKey", "v")])));
        assert!(Credentials::named_in(&map(&base())));
        let partial = map(&[("secretKey", "v"), ("serviceName", "csp")]);
        assert!(Credentials::named_in(&partial));
        let e = Credentials::from_map(&partial).unwrap_err();
        assert!(e.to_string().contains("backend"), "{e}");
    }

    #[test]
    fn direct_mode_defaults() {
        let c = Credentials::from_map(&map(&base())).unwrap();
        assert!(!c.is_service_mode());
        assert_eq!(c.base_url(), "https://10.0.0.5:443/csp");
        assert_eq!(c.timeout(), Duration::from_secs(300));
        assert!(!c.tls_insecure());
    }

    #[test]
    fn direct_mode_with_port_path_and_ipv6() {
        let mut m = base();
        m[0] = ("backend", "fd00::5");
        m.push(("servicePort", "8443"));
        m.push(("path", "/api/"));
        m.push(("tlsInsecure", "TRUE"));
        let c = Credentials::from_map(&map(&m)).unwrap();
        assert_eq!(c.base_url(), "https://[fd00::5]:8443/api");
        assert!(c.tls_insecure());
    }

    #[test]
    fn service_mode() {
        let mut m = base();
        m.push(("serviceName", "csp-svc.kube-system"));
        m.push(("servicePort", "8080"));
        m.push(("path", "/ignored"));
        m.push(("timeoutSeconds", "7"));
        let c = Credentials::from_map(&map(&m)).unwrap();
        assert!(c.is_service_mode());
        assert_eq!(c.base_url(), "http://csp-svc.kube-system:8080");
        assert_eq!(c.timeout(), Duration::from_secs(7));
        assert_eq!(c.backend(), "10.0.0.5");
    }

    #[test]
    fn invalid_maps_name_the_key() {
        for missing in ["backend", "username", "password"] {
            let m: Vec<_> = base().into_iter().filter(|(k, _)| *k != missing).collect();
            let e = Credentials::from_map(&map(&m)).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument);
            assert_eq!(e.field.as_deref(), Some(missing));
        }
        let cases: [(&str, &str, &str); 6] = [
            ("serviceName", "svc", "servicePort"),
            ("servicePort", "http", "servicePort"),
            ("servicePort", "70000", "servicePort"),
            ("timeoutSeconds", "-1", "timeoutSeconds"),
            ("tlsInsecure", "yes", "tlsInsecure"),
            ("caBundle", "not pem", "caBundle"),
        ];
        for (k, v, field) in cases {
            let mut m = base();
            m.push((k, v));
            let e = Credentials::from_map(&map(&m)).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument, "{k}={v}");
            assert_eq!(e.field.as_deref(), Some(field), "{k}={v}");
            assert!(!e.message.contains("s3cr3t-pw"));
        }
    }

    #[test]
    fn cache_key_hides_and_tracks_the_password() {
        let a = Credentials::from_map(&map(&base())).unwrap();
        let mut m = base();
        m[2] = ("password", "other-pw");
        let b = Credentials::from_map(&map(&m)).unwrap();
        assert!(!a.cache_key().contains("s3cr3t-pw"));
        assert_ne!(a.cache_key(), b.cache_key());
        assert_eq!(a.cache_key(), a.clone().cache_key());
        assert!(a.cache_key().contains("10.0.0.5") && a.cache_key().contains("admin"));
    }

    #[test]
    fn debug_redacts_the_password() {
        let c = Credentials::from_map(&map(&base())).unwrap();
        let text = format!("{c:?}");
        assert!(!text.contains("s3cr3t-pw"));
        assert!(text.contains("<redacted>"));
    }
}
