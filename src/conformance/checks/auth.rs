//! Login, token handling and error bodies: C01–C05 and C39.

use super::common::{ensure, expect, fail, random_hex, Ctx, SeenError, Step, Verdict};
use crate::conformance::http::{Auth, Resp};
use reqwest::Method;
use serde_json::Value;
use volbridge_proto::csp::ErrorBody;

/// Logs in with the configured credentials; a token in the answer becomes the session.
async fn login(cx: &mut Ctx<'_>) -> Step<(Resp, Option<String>)> {
    let r = cx.csp.login(&cx.opts.username, &cx.opts.password).await?;
    let v = r.value().unwrap_or(Value::Null);
    cx.note_token(&v);
    let id = v.get("id").and_then(Value::as_str).map(str::to_owned);
    if let Some(id) = &id {
        cx.token_ids.push(id.clone());
    }
    let token = v
        .get("session_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(str::to_owned);
    if token.is_some() {
        cx.csp.token = token.clone();
        cx.session_id = id;
    }
    Ok((r, token))
}

pub(super) async fn c01(cx: &mut Ctx<'_>) -> Step {
    let (r, token) = login(cx).await?;
    // Exactly 200: the reference client accepts nothing else from POST /tokens (A2).
    expect(&r, &[200], "")?;
    match token {
        Some(_) => Ok(String::new()),
        None => fail(format!(
            "got {} without a non-empty session_token",
            r.describe()
        )),
    }
}

/// Either form of §4.10 counts as "parses as an error" (D9): wrapped, or a bare object.
fn error_form(body: &[u8]) -> Option<&'static str> {
    let v: Value = serde_json::from_slice(body).ok()?;
    if v.get("errors")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
    {
        return Some("wrapped");
    }
    if v.get("message").is_some() || v.get("code").is_some() {
        return Some("bare");
    }
    None
}

fn remember_error(cx: &mut Ctx<'_>, check: &'static str, r: &Resp) {
    if r.status >= 400 {
        cx.errors.push(SeenError {
            check,
            status: r.status,
            body: r.body.clone(),
        });
    }
}

pub(super) async fn c02(cx: &mut Ctx<'_>) -> Step {
    let wrong = format!("vbcheck-wrong-{}", random_hex(8));
    cx.secrets.push(wrong.clone());
    let r = cx.csp.login(&cx.opts.username, &wrong).await?;
    remember_error(cx, "C02", &r);
    // A CSP that lets a wrong password in hands out a token we must not print.
    if let Some(v) = r.value() {
        cx.note_token(&v);
    }
    expect(&r, &[401], "")?;
    ensure(error_form(&r.body).is_some(), || {
        format!("got {}: the body is not an error body", r.describe())
    })?;
    Ok(String::new())
}

pub(super) async fn c03(cx: &mut Ctx<'_>) -> Step {
    let r = cx
        .csp
        .send(Method::GET, "/volumes", &[], None, Auth::NoToken)
        .await?;
    remember_error(cx, "C03", &r);
    expect(&r, &[401], "")?;
    Ok(String::new())
}

pub(super) async fn c04(cx: &mut Ctx<'_>) -> Step {
    let made_up = random_hex(32);
    let r = cx
        .csp
        .send(Method::GET, "/volumes", &[], None, Auth::Token(&made_up))
        .await?;
    remember_error(cx, "C04", &r);
    expect(&r, &[401], "made-up token")?;
    let (l, token) = login(cx).await?;
    expect(&l, &[200], "re-login")?;
    if token.is_none() {
        return fail(format!(
            "re-login: got {} without a session_token",
            l.describe()
        ));
    }
    let r = cx.csp.get("/volumes", &[]).await?;
    expect(&r, &[200], "repeat with the new token")?;
    Ok(String::new())
}

pub(super) async fn c05(cx: &mut Ctx<'_>) -> Step {
    if cx.errors.is_empty() {
        return Err(Verdict::Skip("no error answers to judge".into()));
    }
    let bad: Vec<String> = cx
        .errors
        .iter()
        .filter(|e| !ErrorBody::is_canonical(&e.body))
        .map(|e| {
            let resp = Resp {
                status: e.status,
                content_type: None,
                body: e.body.clone(),
            };
            format!("{} got {}", e.check, resp.describe())
        })
        .collect();
    if bad.is_empty() {
        Ok(String::new())
    } else {
        fail(format!(
            "not the wrapped form {{\"errors\":[{{code,message}}]}}: {}",
            bad.join("; ")
        ))
    }
}

pub(super) async fn c39(cx: &mut Ctx<'_>) -> Step {
    // A session of its own, so the rest of the run keeps its token.
    let r = cx.csp.login(&cx.opts.username, &cx.opts.password).await?;
    expect(&r, &[200], "login")?;
    let v = r.value().unwrap_or(Value::Null);
    cx.note_token(&v);
    let token = v.get("session_token").and_then(Value::as_str).unwrap_or("");
    let id = v.get("id").and_then(Value::as_str).unwrap_or("");
    if token.is_empty() || id.is_empty() {
        return fail(format!(
            "login: got {} without a token id to log out with",
            r.describe()
        ));
    }
    let path = format!("/tokens/{id}");
    let d = cx
        .csp
        .send(Method::DELETE, &path, &[], None, Auth::Token(token))
        .await?;
    if !d.is_success() {
        // The token stays alive; log it out with the main session at the end.
        cx.token_ids.push(id.to_owned());
    }
    expect(&d, &[204], "T2")?;
    let after = cx
        .csp
        .send(Method::GET, "/volumes", &[], None, Auth::Token(token))
        .await?;
    expect(&after, &[401], "request with the deleted token")?;
    Ok(String::new())
}

#[cfg(test)]
mod tests {
    use super::error_form;

    #[test]
    fn both_error_forms_parse() {
        assert_eq!(
            error_form(br#"{"errors":[{"code":"Unauthorized","message":"no"}]}"#),
            Some("wrapped")
        );
        assert_eq!(
            error_form(br#"{"code":"Unauthorized","message":"no"}"#),
            Some("bare")
        );
        assert_eq!(error_form(b"denied"), None);
        assert_eq!(error_form(b"[]"), None);
    }
}
