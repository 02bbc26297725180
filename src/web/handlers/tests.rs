//! The handlers as facts in, `Reply` out: real services over a SQLite file, no socket.

use http::request::Parts;
use serde_json::Value;

use super::*;
use crate::core::secret::SessionToken;
use crate::policy::route::Endpoint;
use crate::service::fixture::{PASSWORD, Services};
use crate::web::pages::messages;
use crate::web::request::tests::head;

fn site(s: &Services) -> Site {
    Site {
        sessions: s.sessions.clone(),
        signin: s.signin.clone(),
        captchas: s.store.clone(),
        audit: s.audit.clone(),
        metrics: s.metrics.clone(),
        clock: s.clock.clone(),
        csrf_key: [1; 32],
        pending_key: [4; 32],
        two_factor: s.two_factor.clone(),
        recovery: s.recovery.clone(),
        account: s.account.clone(),
    }
}

/// Calls `endpoint` with `head` from 192.0.2.7 and `body`.
async fn call(s: &Services, endpoint: Endpoint, head: &Parts, body: &str) -> Reply {
    let facts = Facts::of(head, "192.0.2.7".parse().unwrap(), &s.config.network);
    let req = Request {
        head,
        facts: &facts,
        body: body.as_bytes(),
    };
    handle(&site(s), &s.config, endpoint, &req).await
}

/// Request headers of a case.
type Headers<'a> = Vec<(&'a str, &'a str)>;

fn json(r: &Reply) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

fn text(r: &Reply) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// The value a `Set-Cookie` of the reply gives `name`, if any.
fn cookie(r: &Reply, name: &str) -> Option<String> {
    r.set_cookies()
        .into_iter()
        .find_map(|c| c.strip_prefix(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap_or("").to_string())
}

/// Loads the login page and returns its CSRF token (cookie and field are one).
async fn form_token(s: &Services) -> String {
    let page = call(
        s,
        Endpoint::LoginPage,
        &head("GET", "/_portcullis/login", &[]),
        "",
    )
    .await;
    assert_eq!(page.status, 200);
    cookie(&page, "portcullis_session_csrf").expect("a CSRF cookie")
}

fn form_body(login: &str, password: &str, csrf: &str) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("login", login),
            ("password", password),
            ("csrf", csrf),
            ("rd", "/app"),
        ])
        .finish()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_form_table() {
    let s = Services::start("").await;
    let token = form_token(&s).await;
    let with_csrf = format!("portcullis_session_csrf={token}");
    // (case, extra headers, body, status, a session issued, text on the page)
    let cases: [(&str, Headers, String, u16, bool, &str); 5] = [
        (
            "a planted token",
            vec![("Cookie", "portcullis_session_csrf=X")],
            form_body("alice@example.com", PASSWORD, "X"),
            403,
            false,
            messages::FORM_EXPIRED,
        ),
        (
            "from another site",
            vec![("Cookie", &with_csrf), ("Origin", "http://evil.example")],
            form_body("alice@example.com", PASSWORD, &token),
            403,
            false,
            messages::FORM_EXPIRED,
        ),
        (
            "a wrong password",
            vec![("Cookie", &with_csrf)],
            form_body("alice@example.com", "wrong", &token),
            401,
            false,
            messages::INVALID_CREDENTIALS,
        ),
        (
            "an unknown login, the same answer",
            vec![("Cookie", &with_csrf)],
            form_body("nobody@example.com", "wrong", &token),
            401,
            false,
            messages::INVALID_CREDENTIALS,
        ),
        (
            "success",
            vec![("Cookie", &with_csrf), ("Sec-Fetch-Site", "same-origin")],
            form_body("alice@example.com", PASSWORD, &token),
            303,
            true,
            "",
        ),
    ];
    for (case, headers, body, status, issued, shown) in cases {
        let h = head("POST", "/_portcullis/login", &headers);
        let r = call(&s, Endpoint::LoginForm, &h, &body).await;
        assert_eq!(r.status, status, "{case}");
        assert_eq!(cookie(&r, "portcullis_session").is_some(), issued, "{case}");
        assert!(text(&r).contains(shown), "{case}: {}", text(&r));
        if issued {
            assert_eq!(r.header_value("location"), Some("/app"), "{case}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_api_table() {
    let s = Services::start("").await;
    let body = |login: &str, pw: &str| format!(r#"{{"login":"{login}","password":"{pw}"}}"#);
    let json_type = ("Content-Type", "application/json");
    // (case, headers, body, status, error)
    let cases: [(&str, Headers, String, u16, Option<&str>); 5] = [
        (
            "not JSON",
            vec![("Content-Type", "text/plain")],
            body("alice@example.com", PASSWORD),
            415,
            Some("unsupported_media_type"),
        ),
        (
            "cross-site",
            vec![json_type, ("Sec-Fetch-Site", "cross-site")],
            body("alice@example.com", PASSWORD),
            403,
            Some("csrf"),
        ),
        (
            "malformed",
            vec![json_type],
            "{".into(),
            400,
            Some("bad_request"),
        ),
        (
            "wrong password",
            vec![json_type],
            body("alice@example.com", "nope"),
            401,
            Some("invalid_credentials"),
        ),
        (
            "success",
            vec![json_type],
            body("alice@example.com", PASSWORD),
            200,
            None,
        ),
    ];
    for (case, headers, b, status, error) in cases {
        let h = head("POST", "/_portcullis/api/login", &headers);
        let r = call(&s, Endpoint::ApiLogin, &h, &b).await;
        assert_eq!(r.status, status, "{case}");
        let v = json(&r);
        assert_eq!(v["error"].as_str(), error, "{case}: {v}");
        if error.is_none() {
            assert_eq!(v["user"], "alice@example.com");
            assert!(cookie(&r, "portcullis_session").is_some());
        }
    }
}

/// A session for alice, issued by the service, as its cookie value.
async fn signed_in(s: &Services) -> SessionToken {
    let issued = s
        .sessions
        .issue(&s.alice, None, &Default::default())
        .await
        .unwrap();
    issued.token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_api_and_sign_out() {
    let s = Services::start("").await;
    let token = signed_in(&s).await;
    let cookie_header = format!("portcullis_session={}", token.expose());
    let session_api =
        |headers: Vec<(&str, &str)>| head("GET", "/_portcullis/api/session", &headers);
    let anon = call(&s, Endpoint::ApiSession, &session_api(vec![]), "").await;
    assert_eq!(
        (anon.status, json(&anon)["error"].clone()),
        (401, "unauthenticated".into())
    );
    let me = call(
        &s,
        Endpoint::ApiSession,
        &session_api(vec![("Cookie", &cookie_header)]),
        "",
    )
    .await;
    assert_eq!(
        (me.status, json(&me)["user"].clone()),
        (200, "alice@example.com".into())
    );

    // Sign-out: refused from another site or without the session's token, else done.
    let logout = |headers: Vec<(&str, &str)>| head("POST", "/_portcullis/logout", &headers);
    let cases: [(&str, Headers, String, u16); 3] = [
        (
            "cross-site",
            vec![
                ("Cookie", &cookie_header),
                ("Origin", "http://evil.example"),
            ],
            format!("csrf={}", token.csrf().expose()),
            403,
        ),
        (
            "no token, no origin",
            vec![("Cookie", &cookie_header)],
            String::new(),
            403,
        ),
        (
            "the form's token",
            vec![("Cookie", &cookie_header)],
            format!("csrf={}", token.csrf().expose()),
            303,
        ),
    ];
    for (case, headers, body, status) in cases {
        let r = call(&s, Endpoint::Logout, &logout(headers), &body).await;
        assert_eq!(r.status, status, "{case}");
    }
    let after = call(
        &s,
        Endpoint::ApiSession,
        &session_api(vec![("Cookie", &cookie_header)]),
        "",
    )
    .await;
    assert_eq!(after.status, 401, "the session ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_in_front_of_the_portal() {
    let s = Services::start("network:\n  allow: [192.0.2.0/24]\n").await;
    let token = signed_in(&s).await;
    let with_session = format!("portcullis_session={}", token.expose());
    let decide = |h: Parts, from: &'static str| {
        let site = site(&s);
        let cfg = s.config.clone();
        async move {
            let facts = Facts::of(&h, from.parse().unwrap(), &cfg.network);
            gate::decide(&site, &cfg, &h, &facts).await
        }
    };
    let html = ("Accept", "text/html");
    let v = decide(head("GET", "/static/a.css", &[("Host", "gw")]), "192.0.2.7").await;
    assert!(
        matches!(v, gate::Verdict::Forward { identity: None, .. }),
        "{v:?}"
    );
    let v = decide(head("GET", "/app", &[("Host", "gw"), html]), "192.0.2.7").await;
    assert!(
        matches!(&v, gate::Verdict::Reply(r) if r.status == 302),
        "{v:?}"
    );
    let v = decide(head("POST", "/app", &[("Host", "gw")]), "192.0.2.7").await;
    assert!(
        matches!(&v, gate::Verdict::Reply(r) if r.status == 401),
        "{v:?}"
    );
    let v = decide(
        head("GET", "/app", &[("Host", "gw"), ("Cookie", &with_session)]),
        "192.0.2.7",
    )
    .await;
    let gate::Verdict::Forward {
        identity: Some(id), ..
    } = v
    else {
        panic!("a live session goes on: {v:?}");
    };
    assert_eq!(id.login, "alice@example.com");
    let v = decide(head("GET", "/app", &[("Host", "gw")]), "203.0.113.1").await;
    assert!(
        matches!(&v, gate::Verdict::Reply(r) if r.status == 403),
        "outside `allow`: {v:?}"
    );
    let v = decide(
        head("GET", "/_portcullis/login", &[("Host", "gw")]),
        "192.0.2.7",
    )
    .await;
    assert!(matches!(v, gate::Verdict::Local(Endpoint::LoginPage)));
    let v = decide(
        head("GET", "/app", &[("Host", "a"), ("Host", "b")]),
        "192.0.2.7",
    )
    .await;
    assert!(
        matches!(&v, gate::Verdict::Close(r) if r.status == 400),
        "{v:?}"
    );
}
