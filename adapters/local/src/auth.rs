//! Session tokens (csp-api.md §2). Tokens live in memory only: after a restart clients get a
//! 401 and log in again (A4), which every CSP client already handles.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use volbridge_proto::csp::AccessToken;

struct Session {
    id: String,
    expires: Instant,
}

pub struct Tokens {
    ttl: Duration,
    /// session token → session
    sessions: Mutex<HashMap<String, Session>>,
}

impl Tokens {
    pub fn new(ttl: Duration) -> Tokens {
        Tokens {
            ttl,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn issue(&self, username: &str, array_ip: Option<String>) -> AccessToken {
        let token = crate::ids::random_hex(32);
        let id = crate::ids::new_id();
        let now = Instant::now();
        let mut sessions = self.sessions();
        if sessions.len() > 1024 {
            sessions.retain(|_, s| s.expires > now);
        }
        sessions.insert(
            token.clone(),
            Session {
                id: id.clone(),
                expires: now + self.ttl,
            },
        );
        let created = crate::ids::now();
        AccessToken {
            id: Some(id),
            username: Some(username.to_owned()),
            password: None,
            array_ip,
            session_token: Some(token),
            creation_time: Some(created),
            expiry_time: Some(created + self.ttl.as_secs() as i64),
        }
    }

    pub fn valid(&self, token: &str) -> bool {
        self.sessions()
            .get(token)
            .is_some_and(|s| s.expires > Instant::now())
    }

    /// Ends the session whose id (or token) is `id`.
    pub fn logout(&self, id: &str) -> bool {
        let mut sessions = self.sessions();
        let before = sessions.len();
        sessions.retain(|token, s| s.id != id && token != id);
        sessions.len() != before
    }

    pub fn revoke_all(&self) {
        self.sessions().clear();
    }
}

/// Compares secrets without an early exit on the first differing byte.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_expire_and_log_out() {
        let t = Tokens::new(Duration::from_secs(60));
        let a = t.issue("admin", None);
        let token = a.session_token.clone().unwrap();
        assert_eq!(token.len(), 64);
        assert!(t.valid(&token));
        assert!(!t.valid("nope"));
        assert!(t.logout(a.id.as_deref().unwrap()));
        assert!(!t.valid(&token));
        assert!(!t.logout(a.id.as_deref().unwrap()));

        let short = Tokens::new(Duration::from_millis(0));
        let b = short.issue("admin", None);
        assert!(!short.valid(b.session_token.as_deref().unwrap()));
    }

    #[test]
    fn secrets_compare() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
        assert!(!same_secret("", "a"));
    }
}
