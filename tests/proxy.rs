//! The request pipeline over real HTTP: who gets redirected or refused, what reaches the
//! portal (identity, forwarded headers, bodies) and what never does (forged identity headers,
//! the gateway's cookies), and how failures look.

mod common;

use common::*;
use serde_json::json;

#[test]
fn no_session_means_a_login_redirect_for_browsers_and_401_json_otherwise() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "");
    let mut b = Browser::new();
    let r = b.get(&gw.url("/reports/q3?format=pdf"));
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location"),
        Some("/_portcullis/login?rd=%2Freports%2Fq3%3Fformat%3Dpdf")
    );
    let api = b.api_get(&gw.url("/api/items"));
    assert_eq!(api.status, 401);
    assert_eq!(
        api.json(),
        json!({"error": "unauthenticated", "login_url": "/_portcullis/login?rd=%2Fapi%2Fitems"})
    );
    let post = b.send(
        b.request("POST", &gw.url("/form"))
            .header("Accept", "text/html")
            .body("x=1"),
    );
    assert_eq!(post.status, 401, "a non-GET is never redirected");
    assert_eq!(up.count(), 0, "nothing reached the portal");
}

#[test]
fn the_login_page_is_self_contained_and_offers_stay_signed_in() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "");
    let mut b = Browser::new();
    let page = b.get(&gw.url("/_portcullis/login?rd=/x"));
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(
        page.header("content-security-policy")
            .unwrap()
            .contains("default-src 'none'")
    );
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    for needle in [
        "name=\"login\"",
        "name=\"password\"",
        "name=\"remember\"",
        "Stay signed in",
        "name=\"csrf\"",
        "value=\"/x\"",
    ] {
        assert!(page.body.contains(needle), "missing {needle}");
    }
    assert!(
        !page.body.contains("<script")
            && !page.body.contains("http://")
            && !page.body.contains("https://")
    );
    let gw2 = Gateway::start(up.addr, "session:\n  remember_me: 0\n");
    let page = Browser::new().get(&gw2.url("/_portcullis/login"));
    assert!(
        !page.body.contains("Stay signed in"),
        "remember_me: 0 hides the checkbox"
    );
}

#[test]
fn forged_identity_headers_never_reach_the_portal() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "");
    let forge = |req: reqwest::blocking::RequestBuilder| {
        req.header("X-Remote-User", "admin")
            .header("x-remote-email", "admin@example.com")
            .header("X_Remote_Name", "Admin")
            .header("X-REMOTE-GROUPS", "admins")
    };
    // A public path: proxied without identity, forged headers removed.
    let mut anon = Browser::new();
    anon.send(forge(anon.request("GET", &gw.url("/static/app.css"))))
        .echo();
    let seen = up.last();
    for h in [
        "x-remote-user",
        "x-remote-email",
        "x-remote-name",
        "x-remote-groups",
    ] {
        assert!(
            seen.headers_named(h).is_empty(),
            "{h} reached the portal on a public path"
        );
    }
    // Signed in: exactly one value per header, the real one.
    let mut b = Browser::new();
    b.sign_in(&gw, false);
    b.send(forge(b.request("GET", &gw.url("/")))).echo();
    let seen = up.last();
    assert_eq!(
        seen.headers_named("x-remote-user"),
        vec!["alice@example.com"]
    );
    assert_eq!(
        seen.headers_named("x-remote-email"),
        vec!["alice@example.com"]
    );
    assert_eq!(seen.headers_named("x-remote-name"), vec!["Alice Liddell"]);
    assert_eq!(seen.headers_named("x-remote-groups"), vec!["staff,ops"]);
}

#[test]
fn custom_identity_header_names_are_used_and_stripped() {
    let up = Upstream::start();
    let gw = Gateway::start(
        up.addr,
        "identity_headers:\n  user: Remote-User\n  groups: Remote-Groups\n",
    );
    let mut b = Browser::new();
    b.sign_in(&gw, false);
    b.send(
        b.request("GET", &gw.url("/"))
            .header("Remote-User", "admin"),
    )
    .echo();
    let seen = up.last();
    assert_eq!(seen.headers_named("remote-user"), vec!["alice@example.com"]);
    assert_eq!(seen.headers_named("remote-groups"), vec!["staff,ops"]);
    assert!(seen.header("x-remote-user").is_none());
}

#[test]
fn gateway_cookies_are_removed_and_forwarded_headers_set() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "session:\n  remember_me: 1d\n");
    let mut b = Browser::new();
    b.sign_in(&gw, true);
    b.jar.insert("portal_pref".into(), "dark".into());
    let req = b
        .request("GET", &gw.url("/"))
        .header("X-Forwarded-For", "203.0.113.7")
        .header("X-Forwarded-Proto", "https")
        .header("X-Forwarded-Host", "evil.example");
    b.send(req).echo();
    let seen = up.last();
    assert_eq!(seen.header("cookie"), Some("portal_pref=dark"));
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("127.0.0.1"),
        "the client's own claim is not passed on: the peer is not a trusted proxy"
    );
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(
        seen.header("x-forwarded-host"),
        Some(gw.addr.to_string().as_str())
    );
}

#[test]
fn public_paths_need_no_session_but_tricks_do_not_make_paths_public() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "");
    let mut b = Browser::new();
    for path in ["/favicon.ico", "/static/app.css", "/static/img/logo.png"] {
        assert_eq!(b.api_get(&gw.url(path)).status, 200, "{path}");
    }
    for path in [
        "/static/../admin",
        "/static/%2e%2e/admin",
        "/static/..%2fadmin",
        "/favicon.ico.php",
        "/staticx",
    ] {
        assert_eq!(b.api_get(&gw.url(path)).status, 401, "{path}");
    }
}

#[test]
fn redirects_after_sign_in_stay_on_this_site() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "");
    let cases = [
        ("/inbox?folder=2", "/inbox?folder=2"),
        ("//evil.example/x", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("/\t/evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("", "/"),
    ];
    for (rd, want) in cases {
        let mut b = Browser::new();
        let r = b.login_form(&gw, "alice@example.com", PASSWORD, false, rd);
        assert_eq!(r.status, 303);
        assert_eq!(r.header("location"), Some(want), "rd={rd:?}");
    }
    let mut b = Browser::new();
    b.sign_in(&gw, false);
    let r = b.get(&gw.url("/_portcullis/login?rd=%2F%2Fevil.example"));
    assert_eq!(r.header("location"), Some("/"));
}

#[test]
fn request_bodies_reach_the_portal_intact_but_login_bodies_are_capped() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "");
    let mut b = Browser::new();
    b.sign_in(&gw, false);
    let body: Vec<u8> = (0..1_048_576u32).map(|i| (i % 251) as u8).collect();
    let echo = b
        .send(b.request("POST", &gw.url("/upload")).body(body.clone()))
        .echo();
    assert_eq!(echo["body_len"], 1_048_576);
    use sha2::Digest;
    assert_eq!(
        echo["body_sha256"],
        hex::encode(sha2::Sha256::digest(&body))
    );

    let huge = "x".repeat(20 * 1024);
    let mut anon = Browser::new();
    anon.get(&gw.url("/_portcullis/login"));
    let r = anon.post_form(
        &gw.url("/_portcullis/login"),
        &[("login", huge.as_str()), ("password", "x")],
    );
    assert_eq!(r.status, 413);
    let r = anon.post_json(
        &gw.url("/_portcullis/api/login"),
        &json!({"login": huge, "password": "x"}),
    );
    assert_eq!(r.status, 413);
    // Chunked, with no Content-Length announcing the size.
    let chunks = json_login_body(&huge);
    let r = anon.send(
        anon.request("POST", &gw.url("/_portcullis/api/login"))
            .header("Content-Type", "application/json")
            .body(reqwest::blocking::Body::new(std::io::Cursor::new(chunks))),
    );
    assert_eq!(r.status, 413);
}

fn json_login_body(s: &str) -> Vec<u8> {
    format!("{{\"login\":\"{s}\",\"password\":\"x\"}}").into_bytes()
}

#[test]
fn unknown_gateway_paths_are_not_proxied() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "");
    let mut b = Browser::new();
    b.sign_in(&gw, false);
    assert_eq!(b.get(&gw.url("/_portcullis/nothing")).status, 404);
    // Sent raw: HTTP client libraries would normalise the dot segments away.
    let raw = raw_request(
        gw.addr,
        &format!(
            "GET /_portcullis/../secret HTTP/1.1\r\nHost: x\r\nCookie: {}\r\nConnection: close\r\n\r\n",
            b.cookie_header()
        ),
    );
    assert!(raw.starts_with("HTTP/1.1 404"), "{raw}");
    assert_eq!(
        b.send(b.request("DELETE", &gw.url("/_portcullis/login")))
            .status,
        405
    );
    assert_eq!(up.count(), 0);
}

#[test]
fn a_dead_upstream_gives_a_clean_502_page_and_unready() {
    let dead = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let gw = Gateway::start(dead, "");
    let mut b = Browser::new();
    b.sign_in(&gw, false);
    let r = b.get(&gw.url("/"));
    assert_eq!(r.status, 502);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(
        r.body.contains("The portal is not responding"),
        "{}",
        r.body
    );
    let health = reqwest::blocking::get(format!("http://{}/healthz", gw.admin)).unwrap();
    assert_eq!(health.status(), 200);
    let ready = reqwest::blocking::get(format!("http://{}/readyz", gw.admin)).unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.text().unwrap().contains("upstream"));
}

#[test]
fn readiness_and_health_on_the_admin_listener_only() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "");
    let ready = reqwest::blocking::get(format!("http://{}/readyz", gw.admin)).unwrap();
    assert_eq!(ready.status(), 200);
    let mut b = Browser::new();
    // On the public listener /healthz is just another protected portal path.
    assert_eq!(b.api_get(&gw.url("/healthz")).status, 401);
}

/// A portal that answers the first request of each connection and closes the connection on
/// the second, unanswered, as a portal restarting under a pooled connection would: every
/// request head it reads is kept, with the number of the connection it came on.
struct ClosingPortal {
    addr: std::net::SocketAddr,
    heads: std::sync::Arc<std::sync::Mutex<Vec<(usize, String)>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ClosingPortal {
    fn start() -> ClosingPortal {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (log, stopping) = (heads.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for (n, conn) in listener.incoming().enumerate() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                let log = log.clone();
                std::thread::spawn(move || {
                    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                        .unwrap();
                    let mut buf = Vec::new();
                    let mut answered = false;
                    loop {
                        let mut chunk = [0u8; 4096];
                        let Ok(read) = conn.read(&mut chunk) else {
                            return;
                        };
                        if read == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..read]);
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            continue;
                        };
                        let head: Vec<u8> = buf.drain(..end + 4).collect();
                        log.lock()
                            .unwrap()
                            .push((n, String::from_utf8_lossy(&head).into_owned()));
                        if answered {
                            return; // closed, unanswered
                        }
                        answered = true;
                        let body = "portal";
                        let reply = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if conn.write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        ClosingPortal {
            addr,
            heads,
            stop,
            thread: Some(thread),
        }
    }

    /// The heads of requests for `path`, in the order they came, with their connections.
    fn heads_for(&self, path: &str) -> Vec<(usize, String)> {
        let line = format!("GET {path} HTTP/1.1\r\n");
        self.heads
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, h)| h.starts_with(&line))
            .cloned()
            .collect()
    }
}

impl Drop for ClosingPortal {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wakes the accept loop, which then sees the flag.
        let _ = std::net::TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Header values of `name` in a raw request head, matched without regard to case.
fn head_values<'a>(head: &'a str, name: &str) -> Vec<&'a str> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect()
}

#[test]
fn a_request_retried_on_a_new_upstream_connection_carries_the_same_headers() {
    // Pingora sends a request again on a new connection when a pooled one closes before
    // answering it, and builds the upstream request again for it: the identity and address
    // headers must be the gateway's on every attempt, and nothing the client sent may slip
    // through the second time.
    let portal = ClosingPortal::start();
    let gw = Gateway::start(portal.addr, "");
    let mut b = Browser::new();
    b.sign_in(&gw, false);
    // A cookie of the portal's own, so that the Cookie header is rewritten rather than removed.
    b.jar.insert("portal_pref".into(), "dark".into());
    let paths = ["/first", "/second", "/third"];
    for path in paths {
        let req = b
            .request("GET", &gw.url(path))
            .header("X-Forwarded-For", "203.0.113.7")
            .header("X-Remote-User", "admin");
        let r = b.send(req);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert_eq!(r.body, "portal", "{path}");
    }
    for path in &paths[1..] {
        let heads = portal.heads_for(path);
        assert_eq!(
            heads.len(),
            2,
            "{path}: sent on the pooled connection, which closed, then on a new one: {heads:?}"
        );
        assert_ne!(
            heads[0].0, heads[1].0,
            "{path}: the retry is on a new connection"
        );
        for (attempt, (_, head)) in heads.iter().enumerate() {
            assert_eq!(
                head_values(head, "X-Forwarded-For"),
                ["127.0.0.1"],
                "{path}, attempt {attempt}:\n{head}"
            );
            assert_eq!(
                head_values(head, "X-Real-IP"),
                ["127.0.0.1"],
                "{path}, attempt {attempt}"
            );
            assert_eq!(
                head_values(head, "X-Remote-User"),
                ["alice@example.com"],
                "{path}, attempt {attempt}"
            );
            assert_eq!(
                head_values(head, "X-Forwarded-Proto"),
                ["http"],
                "{path}, attempt {attempt}"
            );
            assert_eq!(
                head_values(head, "Cookie"),
                ["portal_pref=dark"],
                "{path}, attempt {attempt}: only the portal's own cookie"
            );
        }
    }
}
