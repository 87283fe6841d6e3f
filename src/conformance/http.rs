//! Raw CSP calls for the checker: every answer comes back as status, content type and bytes,
//! because judging those is the point (the provider client would classify them away).

use super::options::CheckOptions;
use super::verdict::Verdict;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::time::Duration;
use volbridge_proto::csp::{API_PREFIX, ARRAY_HEADER, AUTH_HEADER};

/// Keys whose values must never reach a report line (A10).
const SECRET_KEYS: [&str; 3] = ["password", "session_token", "chap_password"];
/// How much of a body a report line quotes.
const QUOTE_LIMIT: usize = 200;
/// A hung CSP must not hang the checker; 60 s is the service-mode default of §1.1.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Which credentials a request carries.
#[derive(Clone, Copy)]
pub(crate) enum Auth<'a> {
    /// The checker's current session token.
    Session,
    /// No `x-auth-token`, but still `x-array-ip` (C03).
    NoToken,
    /// A given token (C04's made-up one, C39's throw-away session).
    Token(&'a str),
    /// Neither header: `POST /tokens`.
    Login,
}

pub(crate) struct Resp {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn value(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// Decodes the body; `what` names the expected model in the failure text.
    pub fn json<T: DeserializeOwned>(&self, what: &str) -> Result<T, Verdict> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Verdict::Fail(format!("{} is not a {what} ({e})", quote_body(&self.body))))
    }

    /// `200 []`: the status and a short, secret-free quote of the body.
    pub fn describe(&self) -> String {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            self.status.to_string()
        } else {
            format!("{} {}", self.status, quote_body(&self.body))
        }
    }
}

/// A compact quote of a body with secret fields masked and long text cut.
pub(crate) fn quote_body(body: &[u8]) -> String {
    let text = match serde_json::from_slice::<Value>(body) {
        Ok(mut v) => {
            mask(&mut v);
            v.to_string()
        }
        Err(_) => String::from_utf8_lossy(body).trim().to_owned(),
    };
    if text.chars().count() > QUOTE_LIMIT {
        let cut: String = text.chars().take(QUOTE_LIMIT).collect();
        format!("{cut}…")
    } else {
        text
    }
}

fn mask(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if SECRET_KEYS.contains(&k.as_str()) {
                    *val = Value::String("***".into());
                } else {
                    mask(val);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask),
        _ => {}
    }
}

pub(crate) struct Csp {
    client: reqwest::Client,
    /// `<base>/containers/v1`.
    api: String,
    array_ip: Option<String>,
    pub token: Option<String>,
}

impl Csp {
    pub fn new(opts: &CheckOptions) -> crate::Result<Self> {
        let base = opts.url.trim().trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(crate::Error::invalid(
                "url",
                format!("'{base}' is not an http:// or https:// URL"),
            ));
        }
        // Forgive a URL that already names the API prefix: the base is what precedes it.
        let base = base.strip_suffix(API_PREFIX).unwrap_or(base);
        let client = crate::tls::client_builder()
            .danger_accept_invalid_certs(opts.insecure)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| crate::Error::internal(format!("cannot build the HTTP client: {e}")))?;
        Ok(Csp {
            client,
            api: format!("{base}{API_PREFIX}"),
            array_ip: opts.array_ip.clone().filter(|a| !a.is_empty()),
            token: None,
        })
    }

    pub fn has_session(&self) -> bool {
        self.token.is_some()
    }

    /// One request; a transport failure is a failed check, not an error of the run.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
        auth: Auth<'_>,
    ) -> Result<Resp, Verdict> {
        let url = format!("{}{path}", self.api);
        let mut req = self
            .client
            .request(method.clone(), &url)
            .header(ACCEPT, "application/json")
            // §1.3: also on GET/DELETE; servers must accept it there.
            .header(CONTENT_TYPE, "application/json");
        if !query.is_empty() {
            req = req.query(query);
        }
        let token = match auth {
            Auth::Session => self.token.as_deref(),
            Auth::Token(t) => Some(t),
            Auth::NoToken | Auth::Login => None,
        };
        if let Some(t) = token {
            req = req.header(AUTH_HEADER, t);
        }
        if let (Some(ip), false) = (&self.array_ip, matches!(auth, Auth::Login)) {
            req = req.header(ARRAY_HEADER, ip);
        }
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        let what = format!("{method} {path}");
        let resp = req
            .send()
            .await
            .map_err(|e| Verdict::Fail(format!("{what}: request failed: {}", chain(&e))))?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp
            .bytes()
            .await
            .map_err(|e| Verdict::Fail(format!("{what}: reading the answer: {}", chain(&e))))?
            .to_vec();
        Ok(Resp {
            status,
            content_type,
            body,
        })
    }

    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Resp, Verdict> {
        self.send(Method::GET, path, query, None, Auth::Session)
            .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Resp, Verdict> {
        self.send(Method::POST, path, &[], Some(body), Auth::Session)
            .await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Result<Resp, Verdict> {
        self.send(Method::PUT, path, &[], Some(body), Auth::Session)
            .await
    }

    pub async fn delete(&self, path: &str, query: &[(&str, &str)]) -> Result<Resp, Verdict> {
        self.send(Method::DELETE, path, query, None, Auth::Session)
            .await
    }

    /// `POST /tokens`; `array_ip` only in service mode (A1).
    pub async fn login(&self, username: &str, password: &str) -> Result<Resp, Verdict> {
        let mut body = serde_json::json!({ "username": username, "password": password });
        if let Some(ip) = &self.array_ip {
            body["array_ip"] = Value::String(ip.clone());
        }
        self.send(Method::POST, "/tokens", &[], Some(&body), Auth::Login)
            .await
    }
}

/// The error and its causes on one line; reqwest's own text alone hides "connection refused".
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_hide_secrets_and_stay_short() {
        let q = quote_body(br#"{"id":"1","session_token":"abc","nested":[{"password":"p"}]}"#);
        assert!(!q.contains("abc") && !q.contains("\"p\""), "{q}");
        assert!(q.contains("***"));
        let long = vec![b'x'; 1000];
        assert!(quote_body(&long).chars().count() <= QUOTE_LIMIT + 1);
        let r = Resp {
            status: 200,
            content_type: None,
            body: b"[]".to_vec(),
        };
        assert_eq!(r.describe(), "200 []");
    }
}
