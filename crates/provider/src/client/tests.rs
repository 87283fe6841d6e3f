use super::*;

fn kind(code: u16, body: &str, op: Op) -> (ErrorKind, String) {
    let e = classify(StatusCode::from_u16(code).unwrap(), body.as_bytes(), op);
    (e.kind, e.message)
}

#[test]
fn classification_table() {
    let wrapped = r#"{"errors":[{"code":"Conflict","message":"name taken"}]}"#;
    assert_eq!(
        kind(409, wrapped, Op::Create),
        (
            ErrorKind::AlreadyExists,
            "CSP answered 409 Conflict: name taken".into()
        )
    );
    assert_eq!(
        kind(409, wrapped, Op::Other).0,
        ErrorKind::FailedPrecondition
    );
    assert_eq!(
        kind(400, "", Op::Other),
        (
            ErrorKind::InvalidArgument,
            "CSP answered 400 Bad Request".into()
        )
    );
    assert_eq!(kind(401, "", Op::Other).0, ErrorKind::Unavailable);
    assert_eq!(
        kind(
            404,
            r#"{"code":"Not Found","message":"no group"}"#,
            Op::Other
        ),
        (
            ErrorKind::NotFound,
            "CSP answered 404 Not Found: no group".into()
        )
    );
    assert_eq!(kind(405, "", Op::Other).0, ErrorKind::Unimplemented);
    assert_eq!(kind(501, "", Op::Other).0, ErrorKind::Unimplemented);
    assert_eq!(
        kind(500, "boom", Op::Other),
        (
            ErrorKind::Internal,
            "CSP answered 500 Internal Server Error: boom".into()
        )
    );
    for gw in [502, 503, 504] {
        let (k, m) = kind(gw, "<html><body>Bad gateway</body></html>", Op::Create);
        assert_eq!(k, ErrorKind::Unavailable);
        assert!(!m.contains("html"), "{m}");
    }
}

#[test]
fn several_errors_are_joined() {
    let body =
        r#"{"errors":[{"code":"Bad Request","message":"a"},{"code":"Bad Request","message":"b"}]}"#;
    assert_eq!(
        kind(400, body, Op::Other).1,
        "CSP answered 400 Bad Request: a; b"
    );
}

#[test]
fn out_of_space_wins_over_status() {
    let body = r#"{"errors":[{"code":"x","message":"Insufficient Storage Space on pool"}]}"#;
    assert_eq!(kind(500, body, Op::Create).0, ErrorKind::ResourceExhausted);
    assert_eq!(kind(400, body, Op::Other).0, ErrorKind::ResourceExhausted);
}

#[test]
fn token_renewal_ignores_clock_skew() {
    let t = Token::from_answer(AccessToken {
        session_token: Some("x".into()),
        creation_time: Some(1_000),
        expiry_time: Some(2_800),
        ..Default::default()
    })
    .unwrap();
    assert!(t.fresh());
    assert!(t.renew_at.unwrap() - unix_now() <= 1_740);
    let short = Token::from_answer(AccessToken {
        session_token: Some("x".into()),
        creation_time: Some(unix_now()),
        expiry_time: Some(unix_now() + 30),
        ..Default::default()
    })
    .unwrap();
    assert!(short.fresh());
    let expired = Token::from_answer(AccessToken {
        session_token: Some("x".into()),
        expiry_time: Some(unix_now() + 10),
        ..Default::default()
    })
    .unwrap();
    assert!(!expired.fresh());
    assert!(Token::from_answer(AccessToken::default()).is_err());
}

#[test]
#[cfg(feature = "http")]
fn urls_keep_the_context_path_and_encode_segments() {
    let map = [
        ("backend", "10.1.1.1"),
        ("username", "u"),
        ("password", "p"),
        ("path", "/api/csp"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let c = CspClient::new(
        Credentials::from_map(&map).unwrap(),
        ClientOptions::default(),
    )
    .unwrap();
    assert_eq!(c.base_url(), "https://10.1.1.1:443/api/csp");
    assert_eq!(
        c.url(&["volumes", "a/b c", "actions", "publish"]).as_str(),
        "https://10.1.1.1/api/csp/containers/v1/volumes/a%2Fb%20c/actions/publish"
    );
}

#[test]
#[cfg(feature = "http")]
fn scrub_cuts_even_short_passwords_as_tokens_only() {
    let map = [
        ("backend", "10.1.1.1"),
        ("username", "u"),
        ("password", "pw"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let c = CspClient::new(
        Credentials::from_map(&map).unwrap(),
        ClientOptions::default(),
    )
    .unwrap();
    let e = c.scrub(
        Error::unavailable("login with pw refused: pwd policy; chap x1"),
        &["x1"],
    );
    assert_eq!(
        e.message,
        "login with <redacted> refused: pwd policy; chap <redacted>"
    );
}

#[test]
fn exact_name_pick() {
    let items = vec!["a", "ab", "a"];
    assert!(pick_exact(items, "a", |s| Some(*s), "volume").is_err());
    assert_eq!(
        pick_exact(vec!["a", "ab"], "ab", |s| Some(*s), "volume").unwrap(),
        Some("ab")
    );
    assert_eq!(
        pick_exact(vec!["A"], "a", |s| Some(*s), "volume").unwrap(),
        None
    );
}
