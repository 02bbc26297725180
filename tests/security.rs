//! The bypasses a black-box review found, attacked again from outside with several variants
//! each, over real loopback connections (clients act as different hosts by binding 127.0.0.N):
//! unreadable forwarding headers, public-path dot segments, forgeable address headers, the
//! remember-me rotation race, slow clients, login CSRF, the one trusted forwarding header, and
//! request framing, corrupt rows and global caps.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;
use reqwest::header::HeaderValue;
use serde_json::json;

/// A request from `from` with raw header values (bytes that are not text included).
fn send_with(
    gw: &Gateway,
    from: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &[u8])],
    body: Option<serde_json::Value>,
) -> Resp {
    let mut b = Browser::from_ip(from);
    let mut req = b.request(method, &gw.url(path));
    for (k, v) in headers {
        req = req.header(*k, HeaderValue::from_bytes(v).unwrap());
    }
    if let Some(body) = body {
        req = req
            .header("Content-Type", "application/json")
            .body(body.to_string());
    }
    b.send(req)
}

fn sign_in_body() -> serde_json::Value {
    json!({"login": "alice@example.com", "password": PASSWORD})
}

// 1. An unreadable forwarding header from a trusted proxy.

#[test]
fn an_unreadable_forwarding_header_makes_the_client_nobody_never_someone_of_its_choosing() {
    let up = Upstream::start();
    let gw = Gateway::start(
        up.addr,
        "network:
  trusted_proxies: [127.0.0.50]
  allow: [10.9.0.0/16, 198.51.100.0/24, 127.0.0.50]
  restrictions:
    - name: office
      groups: [staff]
      allow: [10.9.0.0/16]
",
    );
    let api = "/_portcullis/api/login";
    // The control: a readable header from the proxy is believed.
    let ok = send_with(
        &gw,
        "127.0.0.50",
        "POST",
        api,
        &[("X-Forwarded-For", b"10.9.0.1")],
        Some(sign_in_body()),
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    // nginx appends the real address to whatever the client sent; the client sends bytes that
    // are not text, and offers another header to fall through to.
    let attacks: &[&[(&str, &[u8])]] = &[
        &[
            ("X-Forwarded-For", b"\xe9, 203.0.113.9"),
            ("Forwarded", b"for=10.9.0.1"),
        ],
        &[("X-Forwarded-For", b"\xe9, 203.0.113.9")],
        &[("X-Forwarded-For", b"\xff"), ("X-Real-IP", b"10.9.0.1")],
        &[
            ("X-Forwarded-For", b"10.9.0.1"),
            ("X-Forwarded-For", b"\xe9"),
        ],
        &[("X-Forwarded-For", b"10.9.0.1\xa0, 203.0.113.9")],
        &[
            ("X-Forwarded-For", b"10.9.0.1, "),
            ("Forwarded", b"for=10.9.0.1"),
        ],
    ];
    for headers in attacks {
        // Neither the login page nor a public path: 0.0.0.0 is outside `allow`.
        let page = send_with(&gw, "127.0.0.50", "GET", "/static/x.css", headers, None);
        assert_eq!(page.status, 403, "{headers:?}");
        assert_eq!(page.json(), json!({"error": "ip_denied"}), "{headers:?}");
        let login = send_with(
            &gw,
            "127.0.0.50",
            "POST",
            api,
            headers,
            Some(sign_in_body()),
        );
        assert_eq!(login.status, 403, "{headers:?}: {}", login.body);
    }
    assert_eq!(up.count(), 0, "nothing reached the portal");
    // Junk left of the proxy's own hop does not hide the address the proxy saw.
    gw.assert_stored(&["ip_denied", "203.0.113.9", "0.0.0.0"]);

    // Without `allow`, the same attacks are just one address, 0.0.0.0: a user restricted to
    // 10.9.0.0/16 is refused, and rotating `Forwarded: for=` does not buy fresh budgets.
    let gw = Gateway::start(
        up.addr,
        "network:
  trusted_proxies: [127.0.0.50]
  restrictions:
    - name: office
      groups: [staff]
      allow: [10.9.0.0/16]
throttle:
  ip_attempts_per_minute: 3
",
    );
    let restricted = send_with(
        &gw,
        "127.0.0.50",
        "POST",
        api,
        &[
            ("X-Forwarded-For", b"\xe9, 203.0.113.9"),
            ("Forwarded", b"for=10.9.0.1"),
        ],
        Some(sign_in_body()),
    );
    assert_eq!(
        (restricted.status, restricted.json()),
        (403, json!({"error": "ip_restricted"}))
    );
    let statuses: Vec<u16> = (2..8)
        .map(|n| {
            let forwarded = format!("for=10.9.0.{n}");
            send_with(
                &gw,
                "127.0.0.50",
                "POST",
                api,
                &[
                    ("X-Forwarded-For", b"\xe9, 203.0.113.9"),
                    ("Forwarded", forwarded.as_bytes()),
                ],
                Some(json!({"login": "bob@example.com", "password": "wrong"})),
            )
            .status
        })
        .collect();
    assert_eq!(&statuses[..2], [401, 401], "{statuses:?}");
    assert!(statuses[2..].iter().all(|s| *s == 429), "{statuses:?}");
    // Control characters cannot even be sent by a client library: a raw socket does it.
    let answer = raw_request_from(
        "127.0.0.50",
        gw.addr,
        b"GET /x HTTP/1.1\r\nHost: gw\r\nAccept: application/json\r\nX-Forwarded-For: 10.9.0.1\x01, 203.0.113.9\r\nConnection: close\r\n\r\n",
    );
    assert!(matches!(status_of(&answer), 400 | 401), "{answer}");
    assert_eq!(up.count(), 0);
}

// 7. Which header is believed.

#[test]
fn only_the_configured_forwarding_header_is_read() {
    let up = Upstream::start();
    type Case<'a> = (&'a [(&'a str, &'a str)], u16);
    let configs: [(&str, &[Case]); 3] = [
        (
            "X-Real-IP",
            &[
                (&[("X-Real-IP", "198.51.100.9")], 200),
                // A client-sent X-Forwarded-For beside the proxy's X-Real-IP decides nothing.
                (
                    &[
                        ("X-Real-IP", "203.0.113.1"),
                        ("X-Forwarded-For", "198.51.100.9"),
                    ],
                    403,
                ),
                (
                    &[
                        ("X-Real-IP", "203.0.113.1"),
                        ("Forwarded", "for=198.51.100.9"),
                    ],
                    403,
                ),
                // Two values: something else wrote it too.
                (
                    &[("X-Real-IP", "198.51.100.9"), ("X-Real-IP", "198.51.100.8")],
                    403,
                ),
            ],
        ),
        (
            "Forwarded",
            &[
                (&[("Forwarded", "for=203.0.113.1, for=198.51.100.9")], 200),
                (&[("Forwarded", "for=198.51.100.9, for=203.0.113.1")], 403),
                (
                    &[
                        ("Forwarded", "for=203.0.113.1"),
                        ("X-Forwarded-For", "198.51.100.9"),
                    ],
                    403,
                ),
                (&[("Forwarded", "for=\"198.51.100.9")], 403),
            ],
        ),
        (
            "x-forwarded-for",
            &[
                (&[("X-Forwarded-For", "203.0.113.1, 198.51.100.9")], 200),
                (
                    &[
                        ("X-Forwarded-For", "203.0.113.1"),
                        ("X-Real-IP", "198.51.100.9"),
                    ],
                    403,
                ),
            ],
        ),
    ];
    for (header, cases) in configs {
        let gw = Gateway::start(
            up.addr,
            &format!(
                "network:\n  trusted_proxies: [127.0.0.50]\n  forwarded_header: {header}\n  allow: [198.51.100.0/24]\n"
            ),
        );
        for (headers, want) in cases {
            let raw: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
            let r = send_with(&gw, "127.0.0.50", "GET", "/static/a.css", &raw, None);
            assert_eq!(r.status, *want, "{header}: {headers:?}");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "upstream: http://127.0.0.1:1\nnetwork:\n  forwarded_header: X-Client-IP\n",
    )
    .unwrap();
    let out = run_cli(&["check-config"], Some(&file), None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "network.forwarded_header: `X-Client-IP` is not a forwarding header; use X-Forwarded-For, Forwarded, X-Real-IP"
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// 2. Public paths and dot segments.

#[test]
fn public_paths_cannot_be_walked_out_of_by_any_spelling_of_a_dot_segment() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "public_paths: [/static/]\n");
    let attacks = [
        "/static/..;/admin",
        "/static/..;jsessionid=1/admin",
        "/static;/../admin",
        "/static/..%00/admin",
        "/static/..%20/admin",
        "/static/..%09/admin",
        "/static/%2e%2e/admin",
        "/static/%252e%252e/admin",
        "/static/%c0%ae%c0%ae/admin",
        "/static/%e0%80%ae%e0%80%ae/admin",
        "/static/%u002e%u002e/admin",
        "/static/..%2fadmin",
        "/static/..%5cadmin",
        "/static/..\\admin",
        "/static/%ef%bc%8e%ef%bc%8e/admin",
        "/static/..+/admin",
        "/static/.../admin",
        "/static/app.css;.jsp",
        "/static/(S(x))/(S(y))-admin/p",
        "/static/a+b/..+/..+/admin",
    ];
    for path in attacks {
        let answer = raw_request(
            gw.addr,
            &format!(
                "GET {path} HTTP/1.1\r\nHost: gw\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
            ),
        );
        assert!(
            matches!(status_of(&answer), 401 | 400),
            "{path} was not refused: {answer}"
        );
    }
    // A public prefix serves files: another method, or a body, needs a session.
    for request in [
        "POST /static/app.css HTTP/1.1\r\nHost: gw\r\nContent-Length: 1\r\nAccept: application/json\r\nConnection: close\r\n\r\nx",
        "PUT /static/app.css HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
        "GET /static/app.css HTTP/1.1\r\nHost: gw\r\nContent-Length: 1\r\nAccept: application/json\r\nConnection: close\r\n\r\nx",
        "GET /static/app.css HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\nAccept: application/json\r\nConnection: close\r\n\r\n1\r\nx\r\n0\r\n\r\n",
    ] {
        assert_eq!(
            status_of(&raw_request(gw.addr, request)),
            401,
            "{request:?}"
        );
    }
    assert_eq!(up.count(), 0, "no attack reached the portal");
    // What a public path is for still works.
    for path in ["/static/app.css", "/static/css/site.min.css", "/static/"] {
        let answer = raw_request(
            gw.addr,
            &format!("GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(status_of(&answer), 200, "{path}: {answer}");
        assert_eq!(up.last().path, path);
    }
}

// 3. Forgeable address and rewrite headers.

#[test]
fn every_address_header_the_portal_receives_is_the_gateways_own() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "");
    let forged: &[(&str, &str)] = &[
        ("Forwarded", "for=10.0.0.1;host=evil.example;proto=https"),
        ("X-Real-IP", "10.0.0.1"),
        ("X_Real_IP", "10.0.0.1"),
        ("True-Client-IP", "10.0.0.1"),
        ("X-Client-IP", "10.0.0.1"),
        ("CF-Connecting-IP", "10.0.0.1"),
        ("X-Cluster-Client-IP", "10.0.0.1"),
        ("X-Original-URL", "/admin"),
        ("X-Rewrite-URL", "/admin"),
        ("X-Forwarded-Host", "evil.example"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Port", "443"),
        ("X-Forwarded-Prefix", "/admin"),
        ("X-Original-Forwarded-For", "10.0.0.1"),
        ("X-Host", "evil.example"),
    ];
    let check = |seen: &Seen, client: &str, host: &str| {
        assert_eq!(seen.headers_named("x-forwarded-for"), [client]);
        assert_eq!(seen.headers_named("x-real-ip"), [client]);
        assert_eq!(seen.headers_named("x-forwarded-proto"), ["http"]);
        assert_eq!(seen.headers_named("x-forwarded-host"), [host]);
        assert_eq!(
            seen.headers_named("forwarded"),
            [format!("for={client};proto=http;host=\"{host}\"")]
        );
        for (name, _) in forged {
            let kept = seen.headers_named(name);
            assert!(
                kept.iter().all(|v| !v.contains("10.0.0.1")
                    && !v.contains("evil")
                    && !v.contains("admin")),
                "{name} reached the portal: {kept:?}"
            );
        }
        for gone in [
            "true-client-ip",
            "x-client-ip",
            "x-original-url",
            "x-rewrite-url",
            "x-forwarded-port",
            "x-host",
        ] {
            assert!(seen.headers_named(gone).is_empty(), "{gone}");
        }
    };
    // A public path, and a signed-in one; from two addresses.
    for (from, signed_in) in [("127.0.0.21", false), ("127.0.0.22", true)] {
        let mut b = Browser::from_ip(from);
        if signed_in {
            b.sign_in(&gw, false);
        }
        let mut req = b.request(
            "GET",
            &gw.url(if signed_in { "/app" } else { "/static/a.css" }),
        );
        for (k, v) in forged {
            req = req.header(*k, *v);
        }
        b.send(req).echo();
        check(&up.last(), from, &gw.addr.to_string());
    }
    // A Host the portal could build a link from is refused outright; with `public_url`, the
    // portal is told that host, whatever the client asked for.
    for host in ["evil.example/x", "a b", "user@evil.example", "x\"y"] {
        let answer = raw_request(
            gw.addr,
            &format!("GET /static/a.css HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(status_of(&answer), 400, "Host: {host}");
    }
    let gw = Gateway::start(up.addr, "public_url: http://portal.example.com:8080\n");
    let mut b = Browser::from_ip("127.0.0.23");
    b.send(
        b.request("GET", &gw.url("/static/a.css"))
            .header("Host", "evil.example"),
    )
    .echo();
    check(&up.last(), "127.0.0.23", "portal.example.com:8080");
}

// 4. The remember-me rotation race.

/// Sends `n` requests at once carrying only `cookie`; their statuses and the session cookies
/// they were given.
fn parallel_with(
    gw: &Gateway,
    cookie: &str,
    n: usize,
) -> Vec<(u16, Option<String>, Option<String>)> {
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (barrier, url, cookie) = (barrier.clone(), gw.url("/app"), cookie.to_string());
            std::thread::spawn(move || {
                let mut b = Browser::new();
                b.jar.insert("portcullis_session_remember".into(), cookie);
                let req = b.request("GET", &url).header("Accept", "application/json");
                barrier.wait();
                let r = b.send(req);
                (r.status, b.session(), b.remember())
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn revocations(gw: &Gateway) -> usize {
    let out = gw.cli(&["audit", "--event", "sessions_revoked", "--json"], None);
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
fn parallel_requests_racing_with_one_remember_me_cookie_share_one_new_session() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "");
    let mut b = Browser::new();
    b.sign_in(&gw, true);
    let mut cookie = b.remember().unwrap();
    // A browser restarted (its session cookie gone) opening a page with many assets, nine times.
    for trial in 0..9 {
        let results = parallel_with(&gw, &cookie, 8);
        assert!(
            results.iter().all(|r| r.0 == 200),
            "trial {trial}: {results:?}"
        );
        let sessions: std::collections::BTreeSet<_> = results.iter().map(|r| r.1.clone()).collect();
        let remembers: std::collections::BTreeSet<_> =
            results.iter().map(|r| r.2.clone()).collect();
        assert_eq!(
            sessions.len(),
            1,
            "trial {trial}: one session for all: {results:?}"
        );
        assert_eq!(
            remembers.len(),
            1,
            "trial {trial}: one new validator for all"
        );
        let session = sessions
            .into_iter()
            .next()
            .unwrap()
            .expect("a session cookie");
        let mut check = Browser::new();
        check.jar.insert("portcullis_session".into(), session);
        check.api_get(&gw.url("/app")).echo();
        let next = remembers
            .into_iter()
            .next()
            .unwrap()
            .expect("a remember-me cookie");
        assert_ne!(next, cookie);
        cookie = next;
    }
    assert_eq!(revocations(&gw), 0, "no false theft");
    // A thief holding the cookie cannot compute the session its next use will make: the
    // derivation is keyed with a secret only the gateways hold, not with the cookie alone.
    let (_, validator) = cookie.split_once('.').unwrap();
    for label in [
        &b"portcullis remember-me session"[..],
        b"portcullis remember-me session\0",
    ] {
        use base64::Engine;
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(validator.as_bytes()).unwrap();
        mac.update(label);
        let guess =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        let mut thief = Browser::from_ip("127.0.0.66");
        thief.jar.insert("portcullis_session".into(), guess);
        assert_eq!(thief.api_get(&gw.url("/app")).status, 401);
    }
    let results = parallel_with(&gw, &cookie, 1);
    assert_eq!(results[0].0, 200, "the cookie itself still works");
}

#[test]
fn a_replayed_remember_me_cookie_is_still_theft() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "");
    // Variants: a validator two rotations old, one nobody ever had, and the one just replaced
    // presented after the grace.
    let mut b = Browser::new();
    b.sign_in(&gw, true);
    let v0 = b.remember().unwrap();
    let v1 = parallel_with(&gw, &v0, 1)[0].2.clone().unwrap();
    let (status, session2, v2) = parallel_with(&gw, &v1, 1)[0].clone();
    assert_eq!(status, 200);
    let replay = parallel_with(&gw, &v0, 1);
    assert_eq!(replay[0].0, 401, "two rotations old: {replay:?}");
    let mut victim = Browser::new();
    victim
        .jar
        .insert("portcullis_session".into(), session2.unwrap());
    assert_eq!(
        victim.api_get(&gw.url("/app")).status,
        401,
        "every session ended"
    );
    assert_eq!(
        parallel_with(&gw, &v2.unwrap(), 1)[0].0,
        401,
        "the token too"
    );
    assert_eq!(revocations(&gw), 1);

    let mut b = Browser::new();
    b.sign_in(&gw, true);
    let v0 = b.remember().unwrap();
    let (selector, _) = v0.split_once('.').unwrap();
    let forged = format!("{selector}.{}", "A".repeat(43));
    assert_eq!(parallel_with(&gw, &forged, 1)[0].0, 401);
    assert_eq!(
        b.api_get(&gw.url("/app")).status,
        401,
        "ended by the forged validator"
    );
    assert_eq!(revocations(&gw), 2);

    let mut b = Browser::new();
    b.sign_in(&gw, true);
    let v0 = b.remember().unwrap();
    assert_eq!(parallel_with(&gw, &v0, 1)[0].0, 200);
    std::thread::sleep(Duration::from_secs(
        portcullis::service::sessions::REMEMBER_GRACE as u64 + 1,
    ));
    assert_eq!(
        parallel_with(&gw, &v0, 1)[0].0,
        401,
        "replaced, after the grace"
    );
    assert_eq!(revocations(&gw), 3);
}

// 5. Slow clients.

const SLOW: &str =
    "timeouts:\n  request_header: 2s\n  request_body: 2s\n  keepalive: 3s\n  send: 2s\n";

/// Writes `chunks` one every `pause` until the gateway closes; returns how long after the
/// first write it closed and what it answered.
fn drip(gw: &Gateway, chunks: &[&[u8]], pause: Duration) -> (Duration, String) {
    let mut stream = connect_from("127.0.0.31", gw.addr);
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut next = 0;
    loop {
        assert!(started.elapsed() < Duration::from_secs(20), "never closed");
        if next < chunks.len() && stream.write_all(chunks[next]).is_ok() {
            next += 1;
        }
        let wait = Instant::now() + pause;
        while Instant::now() < wait {
            let mut buf = [0u8; 4096];
            match stream.read(&mut buf) {
                Ok(0) => {
                    return (
                        started.elapsed(),
                        String::from_utf8_lossy(&answer).into_owned(),
                    );
                }
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => {
                    return (
                        started.elapsed(),
                        String::from_utf8_lossy(&answer).into_owned(),
                    );
                }
            }
        }
    }
}

#[test]
fn slow_and_idle_clients_are_disconnected() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, SLOW);
    let limit = Duration::from_secs(5);
    // A head dripped a line at a time, and a byte at a time: 408 and closed.
    let lines: Vec<&[u8]> = vec![
        b"GET /static/a.css HTTP/1.1\r\n",
        b"Host: gw\r\n",
        b"X-A: 1\r\n",
        b"X-B: 1\r\n",
        b"X-C: 1\r\n",
        b"X-D: 1\r\n",
        b"X-E: 1\r\n",
        b"X-F: 1\r\n",
        b"X-G: 1\r\n",
        b"X-H: 1\r\n",
        b"X-I: 1\r\n",
        b"X-J: 1\r\n",
    ];
    let (took, answer) = drip(&gw, &lines, Duration::from_millis(400));
    assert!(took < limit, "a dripped head held the connection {took:?}");
    assert_eq!(status_of(&answer), 408, "{answer}");
    let bytes: Vec<&[u8]> = b"GET /static/a.css HTTP/1.1\r\nHost: gw\r\n"
        .chunks(1)
        .collect();
    let (took, answer) = drip(&gw, &bytes, Duration::from_millis(200));
    assert!(took < limit, "{took:?}");
    assert_eq!(status_of(&answer), 408, "{answer}");
    // A connection that sends nothing, and one idle after a request: closed without a word.
    let (took, answer) = drip(&gw, &[], Duration::from_millis(100));
    assert!(took < limit && answer.is_empty(), "{took:?} {answer}");
    let one = b"GET /static/a.css HTTP/1.1\r\nHost: gw\r\n\r\n";
    let (took, answer) = drip(&gw, &[one], Duration::from_millis(100));
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert!(
        took > Duration::from_secs(2) && took < Duration::from_secs(6),
        "keep-alive for {took:?}"
    );
    // A body dripped to the gateway's own login form: 408 and closed.
    let mut body: Vec<&[u8]> = vec![b"POST /_portcullis/login HTTP/1.1\r\nHost: gw\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 200\r\n\r\n"];
    body.extend(std::iter::repeat_n(&b"a"[..], 100));
    let (took, answer) = drip(&gw, &body, Duration::from_millis(200));
    assert!(took < limit, "{took:?}");
    assert_eq!(status_of(&answer), 408, "{answer}");
    // A body the gateway never reads (a refusal without a session) cannot be dripped either.
    let mut body: Vec<&[u8]> =
        vec![b"POST /app HTTP/1.1\r\nHost: gw\r\nContent-Length: 200\r\n\r\n"];
    body.extend(std::iter::repeat_n(&b"a"[..], 100));
    let (took, answer) = drip(&gw, &body, Duration::from_millis(200));
    assert!(took < limit, "{took:?}");
    assert_eq!(status_of(&answer), 401, "{answer}");
    // A public path cannot be used to drip a body: a POST there needs a session too.
    let mut body: Vec<&[u8]> =
        vec![b"POST /static/upload HTTP/1.1\r\nHost: gw\r\nContent-Length: 200\r\n\r\n"];
    body.extend(std::iter::repeat_n(&b"a"[..], 100));
    let (took, answer) = drip(&gw, &body, Duration::from_millis(200));
    assert!(took < limit, "{took:?}");
    assert_eq!(status_of(&answer), 401, "{answer}");
    // A client that stops reading a large response is let go within `send`.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(gw.addr).await.unwrap().into_std().unwrap()
    });
    stream.set_nonblocking(false).unwrap();
    stream
        .write_all(b"GET /static/big HTTP/1.1\r\nHost: gw\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_secs(5));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = 0;
    let mut buf = vec![0u8; 1 << 16];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        got += n;
    }
    assert!(
        got < BIG_FILE,
        "the whole file was kept for a client that did not read"
    );
    // Normal clients are unaffected: keep-alive reuse within the limit works.
    let mut stream = connect_from("127.0.0.32", gw.addr);
    for _ in 0..3 {
        stream.write_all(one).unwrap();
        let mut buf = [0u8; 8192];
        let n = stream.read(&mut buf).unwrap();
        assert_eq!(status_of(&String::from_utf8_lossy(&buf[..n])), 200);
        std::thread::sleep(Duration::from_millis(500));
    }
}

// 6. Login CSRF.

#[test]
fn a_login_form_from_anywhere_but_our_own_page_is_refused() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "");
    let post = |from: &str, cookie: &str, field: &str, extra: &[(&str, &str)]| {
        let mut b = Browser::from_ip(from);
        b.jar
            .insert("portcullis_session_csrf".into(), cookie.to_string());
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("login", "alice@example.com"),
                ("password", PASSWORD),
                ("csrf", field),
                ("rd", "/"),
            ])
            .finish();
        let mut req = b
            .request("POST", &gw.url("/_portcullis/login"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body);
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let r = b.send(req);
        (r.status, b.session().is_some())
    };
    // A token the attacker fetched from its own address.
    let mut attacker = Browser::from_ip("127.0.0.41");
    attacker.get(&gw.url("/_portcullis/login"));
    let harvested = attacker.csrf_cookie().unwrap();
    let mut victim = Browser::from_ip("127.0.0.42");
    victim.get(&gw.url("/_portcullis/login"));
    let own = victim.csrf_cookie().unwrap();
    let evil = [("Origin", "http://evil.example")];
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], u16);
    let cases: [Case; 8] = [
        // A planted cookie with a value of the attacker's choosing.
        ("X", "X", &[], 403),
        ("abcdefghijklmnopqrstuv", "abcdefghijklmnopqrstuv", &[], 403),
        // A real token, but for another address.
        (&harvested, &harvested, &[], 403),
        // The victim's own, posted by another site.
        (&own, &own, &evil, 403),
        (&own, &own, &[("Sec-Fetch-Site", "cross-site")], 403),
        (
            &own,
            &own,
            &[
                ("Sec-Fetch-Site", "same-site"),
                ("Origin", "http://sub.127.0.0.1"),
            ],
            403,
        ),
        // Our own page (a browser with Referrer-Policy: no-referrer sends Origin: null).
        (
            &own,
            &own,
            &[("Sec-Fetch-Site", "same-origin"), ("Origin", "null")],
            303,
        ),
        (&own, &own, &[], 303),
    ];
    for (cookie, field, extra, want) in cases {
        let (status, signed_in) = post("127.0.0.42", cookie, field, extra);
        assert_eq!(status, want, "cookie {cookie}, field {field}, {extra:?}");
        assert_eq!(signed_in, want == 303);
    }
    let mut b = Browser::new();
    let req = b
        .request("POST", &gw.url("/_portcullis/api/login"))
        .header("Content-Type", "application/json")
        .header("Origin", "http://evil.example")
        .body(sign_in_body().to_string());
    let r = b.send(req);
    assert_eq!((r.status, r.json()), (403, json!({"error": "csrf"})));
    // Behind a round-robin balancer: a form served by one gateway is posted to another.
    let second = Gateway::start_sharing(&gw, up.addr);
    let mut b = Browser::new();
    b.get(&gw.url("/_portcullis/login"));
    let csrf = b.csrf_cookie().unwrap();
    let r = b.post_form(
        &second.url("/_portcullis/login"),
        &[
            ("login", "alice@example.com"),
            ("password", PASSWORD),
            ("csrf", &csrf),
            ("rd", "/"),
        ],
    );
    assert_eq!(r.status, 303, "{}", r.body);
}

// 8. Framing, corrupt rows, global caps.

#[test]
fn requests_a_portal_could_read_differently_are_refused() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "");
    let refused = [
        "GET /static/a.css HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET /static/a.css HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
        "POST /static/a HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\nConnection: close\r\n\r\nabc",
        "POST /static/a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
        "POST /static/a HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\nConnection: close\r\n\r\nabc",
        // Spellings a portal that folds `_` into `-` would read as framing.
        "POST /static/a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer_Encoding: chunked\r\nConnection: close\r\n\r\nabc",
        "GET /static/a HTTP/1.1\r\nHost: a\r\nContent_Length: 3\r\nConnection: close\r\n\r\n",
    ];
    for request in refused {
        let answer = raw_request(gw.addr, request);
        assert_eq!(status_of(&answer), 400, "{request:?}: {answer}");
    }
    assert_eq!(up.count(), 0);
    let mut b = Browser::new();
    b.sign_in(&gw, false);
    let cookie = format!("portcullis_session={}", b.session().unwrap());
    let post = format!(
        "POST /app HTTP/1.1\r\nHost: a\r\nCookie: {cookie}\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
    );
    let fine = ["GET /static/a.css HTTP/1.0\r\n\r\n", post.as_str()];
    for request in fine {
        assert_eq!(
            status_of(&raw_request(gw.addr, request)),
            200,
            "{request:?}"
        );
    }
    // Both lengths: Pingora reads the body as chunked (RFC 9112 §6.3) and drops
    // `Content-Length`, so the portal sees one framing only, the one the gateway read.
    let both = format!(
        "POST /app HTTP/1.1\r\nHost: a\r\nCookie: {cookie}\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n0\r\n\r\n"
    );
    assert_eq!(status_of(&raw_request(gw.addr, &both)), 200);
    let seen = up.last();
    assert_eq!((seen.header("content-length"), seen.body_len), (None, 5));
}

#[test]
fn a_user_whose_groups_cannot_be_read_is_never_let_in() {
    let up = Upstream::start();
    let gw = Gateway::start(
        up.addr,
        "network:\n  restrictions:\n    - name: office\n      groups: [staff]\n      allow: [127.0.0.99]\n",
    );
    let conn = rusqlite::Connection::open(gw.dir.path().join("data/portcullis.db")).unwrap();
    for bad in ["staff", "{\"staff\":1}", ""] {
        conn.execute("UPDATE users SET groups = ?1", [bad]).unwrap();
        let r = Browser::from_ip("127.0.0.5").api_sign_in(&gw, PASSWORD);
        assert_eq!(r.status, 503, "groups {bad:?}: {}", r.body);
    }
    assert_eq!(up.count(), 0);
}

#[test]
fn captchas_and_password_checks_have_global_limits() {
    let up = Upstream::start();
    // Every failure asks for a CAPTCHA; the store may hold two live ones.
    let gw = Gateway::start(
        up.addr,
        "throttle:\n  captcha_after: 1\n  captcha_limit: 2\n",
    );
    let api = gw.url("/_portcullis/api/login");
    let mut pictures = Vec::new();
    for n in 1..=5 {
        let mut b = Browser::from_ip(&format!("127.0.0.{}", 60 + n));
        let r = b.post_json(
            &api,
            &json!({"login": format!("user{n}@example.com"), "password": "wrong"}),
        );
        assert_eq!(r.status, 401, "{}", r.body);
        pictures.push(r.json()["captcha"]["image"].as_str().unwrap().to_string());
    }
    let conn = rusqlite::Connection::open(gw.dir.path().join("data/portcullis.db")).unwrap();
    let stored: i64 = conn
        .query_row("SELECT COUNT(*) FROM captchas", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, 2, "pictures in the store");
    // The newest are kept, the oldest pushed out; and whoever needs a picture still gets one
    // (a flood cannot lock a chosen account out by filling the store).
    let status = |path: &str| Browser::new().get(&gw.url(path)).status;
    assert_eq!(
        pictures.iter().map(|p| status(p)).collect::<Vec<_>>(),
        [404, 404, 404, 200, 200]
    );
    let r = Browser::from_ip("127.0.0.61").post_json(
        &api,
        &json!({"login": "alice@example.com", "password": PASSWORD}),
    );
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json()["error"], "captcha_required");
    assert_eq!(status(r.json()["captcha"]["image"].as_str().unwrap()), 200);

    // At most 3 password checks a second on this gateway, whatever the addresses.
    let gw = Gateway::start(
        up.addr,
        "throttle:\n  password_checks_per_second: 3\n  captcha_after: 0\n",
    );
    let statuses: Vec<u16> = (1..=8)
        .map(|n| {
            Browser::from_ip(&format!("127.0.1.{n}"))
                .post_json(
                    &gw.url("/_portcullis/api/login"),
                    &json!({"login": "alice@example.com", "password": "wrong"}),
                )
                .status
        })
        .collect();
    assert!(
        statuses.iter().filter(|s| **s == 401).count() >= 3,
        "{statuses:?}"
    );
    assert!(statuses.contains(&429), "{statuses:?}");
}
