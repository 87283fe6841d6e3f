//! The redaction rules: a value whose key names a secret is never written out, and secret
//! values are cut out of free text (error messages, a tool's stderr) as whole tokens, never
//! as pieces of other words.

use std::collections::BTreeMap;

/// Keys whose values are secrets wherever they appear (CSI secrets, backend maps, CHAP).
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "chap",
        "credential",
        "passphrase",
        "key",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// A copy of a string map fit for a log line or an error: secret values replaced.
pub fn redacted(map: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    map.iter()
        .map(|(k, v)| {
            let shown = if is_secret_key(k) {
                "***".to_owned()
            } else {
                v.clone()
            };
            (k.clone(), shown)
        })
        .collect()
}

/// What a secret value becomes in text.
pub const REDACTED: &str = "<redacted>";

/// For a map that is not a secrets map but may hold secrets (a CSI publish or volume
/// context, where a CSP puts the CHAP password): the values whose key names a secret, to
/// scrub from text.
pub fn secret_entries(map: &std::collections::HashMap<String, String>) -> Vec<String> {
    map.iter()
        .filter(|(k, v)| is_secret_key(k) && !v.is_empty())
        .map(|(_, v)| v.clone())
        .collect()
}

/// A secrets map's values (every one a secret), to scrub from text; empty ones say nothing.
pub fn secret_values(map: &std::collections::HashMap<String, String>) -> Vec<String> {
    map.values().filter(|v| !v.is_empty()).cloned().collect()
}

/// A secrets map fit for a log line: every value reads [`REDACTED`], the keys stay.
pub fn redact_all(map: &mut std::collections::HashMap<String, String>) {
    for v in map.values_mut() {
        *v = REDACTED.to_owned();
    }
}

/// The same map fit for a log line: values whose key names a secret read [`REDACTED`].
pub fn redact_secret_entries(map: &mut std::collections::HashMap<String, String>) {
    for (k, v) in map.iter_mut() {
        if is_secret_key(k) {
            *v = REDACTED.to_owned();
        }
    }
}

/// `text` with every secret value that stands in it as a whole token replaced by
/// [`REDACTED`]: a value that begins (ends) with a letter, digit or `_` counts only where
/// no such character comes right before (after) it. So with the password `p` and the port
/// `1`, "login as u/p refused" and "http://10.0.0.5:1/csp" lose them while "request" and
/// "v1" stay whole. Where several values start at one place the longest wins; empty values
/// are ignored. Nothing else in the text changes.
pub fn redact_values<S: AsRef<str>>(text: &str, secrets: &[S]) -> String {
    redact_values_as(text, secrets, REDACTED)
}

/// [`redact_values`] with another mask.
pub fn redact_values_as<S: AsRef<str>>(text: &str, secrets: &[S], mask: &str) -> String {
    let mut values: Vec<&str> = secrets
        .iter()
        .map(AsRef::as_ref)
        .filter(|v| !v.is_empty() && text.contains(*v))
        .collect();
    if values.is_empty() {
        return text.to_owned();
    }
    values.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
    values.dedup();
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = String::with_capacity(text.len());
    let mut before: Option<char> = None;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let whole = values.iter().find(|v| {
            let (Some(first), Some(last)) = (v.chars().next(), v.chars().next_back()) else {
                return false;
            };
            rest.starts_with(**v)
                && !(word(first) && before.is_some_and(word))
                && !(word(last) && rest[v.len()..].chars().next().is_some_and(word))
        });
        match whole {
            Some(v) => {
                out.push_str(mask);
                before = v.chars().next_back();
                rest = &rest[v.len()..];
            }
            None => {
                out.push(c);
                before = Some(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys_are_masked() {
        let map: BTreeMap<String, String> = [
            ("backend", "10.0.0.1"),
            ("username", "admin"),
            ("password", "hunter2"),
            ("chapPassword", "c"),
            ("csi.storage.k8s.io/secret", "s"),
            ("x-auth-token", "t"),
            ("private_key", "k"),
            ("chapUser", "visible"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let shown = redacted(&map);
        assert_eq!(shown["backend"], "10.0.0.1");
        assert_eq!(shown["username"], "admin");
        for k in [
            "password",
            "chapPassword",
            "csi.storage.k8s.io/secret",
            "x-auth-token",
        ] {
            assert_eq!(shown[k], "***", "{k}");
        }
    }

    #[test]
    fn short_values_are_cut_as_tokens_only() {
        let secrets = ["u", "p", "1", "127.0.0.1"];
        let text = "cannot connect to the CSP: error sending request for url \
                    (https://127.0.0.1:1/csp/containers/v1/tokens)";
        assert_eq!(
            redact_values(text, &secrets),
            "cannot connect to the CSP: error sending request for url \
             (https://<redacted>:<redacted>/csp/containers/v1/tokens)"
        );
        assert_eq!(
            redact_values("login as u/p refused (user u, port 1)", &secrets),
            "login as <redacted>/<redacted> refused (user <redacted>, port <redacted>)"
        );
        // Inside other words and numbers nothing changes.
        let words = "upload up pu u_x x_u 10 21 v1.1 http/1.1";
        assert_eq!(
            redact_values(words, &["u", "1"]),
            "upload up pu u_x x_u 10 21 v1.<redacted> http/<redacted>.<redacted>"
        );
        // At the edges of the text, and next to non-word characters or other scripts.
        assert_eq!(redact_values("p", &["p"]), "<redacted>");
        assert_eq!(redact_values("p:p", &["p"]), "<redacted>:<redacted>");
        assert_eq!(redact_values("é-p-é", &["é"]), "<redacted>-p-<redacted>");
        assert_eq!(redact_values("pé", &["p"]), "pé");
    }

    #[test]
    fn longer_values_win_and_punctuation_edges_bind_nothing() {
        assert_eq!(
            redact_values("abcabc abc", &["abc", "abcabc"]),
            "<redacted> <redacted>"
        );
        // A value that begins or ends with punctuation is cut wherever it stands.
        assert_eq!(
            redact_values("x=s3cr3t! and s3cr3t!!", &["s3cr3t!"]),
            "x=<redacted> and <redacted>!"
        );
        assert_eq!(redact_values("hunter2.", &["hunter2"]), "<redacted>.");
        assert_eq!(
            redact_values(r#"{"password":"hunter2"}"#, &["hunter2"]),
            r#"{"password":"<redacted>"}"#
        );
        assert_eq!(redact_values("nothing here", &["", "zz"]), "nothing here");
        assert_eq!(redact_values_as("a b", &["b"], "***"), "a ***");
    }
}
