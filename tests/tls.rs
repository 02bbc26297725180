//! TLS termination (docs: TLS): HTTPS over HTTP/1.1 and HTTP/2 with a full sign-in, Secure
//! `__Host-` cookies and HSTS; certificate renewal by SIGHUP under an open connection; bad pairs
//! at start and on reload; an HTTPS portal checked against `upstream_ca`; the redirect listener.
//! Certificates come from a CA each test makes with `openssl`.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::tls::{Ca, Curl, HttpsPortal, KeptConnection};
use common::*;

const RELOADS_OK: &str = "portcullis_config_reloads_total{result=\"ok\"}";
const RELOADS_FAILED: &str = "portcullis_config_reloads_total{result=\"error\"}";
const EXPIRY: &str = "portcullis_tls_certificate_expiry_timestamp_seconds";

fn https(gw: &Gateway, path: &str) -> String {
    format!("https://{}{path}", gw.addr)
}

/// Sends SIGHUP and waits (10 s at most) for `series`, a reload counter, to grow.
fn sighup_counted(gw: &Gateway, series: &str) -> bool {
    let before = gw.metric(series);
    gw.sighup();
    within(Duration::from_secs(10), || gw.metric(series) > before).is_some()
}

/// The security headers of SPEC §16 on one of the gateway's own pages.
fn assert_page_headers(r: &common::tls::CurlResp) {
    let csp = r.header("content-security-policy").expect("a CSP");
    for part in [
        "frame-ancestors 'none'",
        "form-action 'self'",
        "default-src 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert!(!csp.contains("script-src"), "no script may run: {csp}");
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
}

#[test]
fn sign_in_over_https_with_http2_and_http1() {
    let ca = Ca::new();
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, &ca.leaf(20).yaml());
    for version in ["--http2", "--http1.1"] {
        let want = if version == "--http2" { "2" } else { "1.1" };
        let curl = Curl::new(&ca.pem());
        let page = curl.run(&[version, &https(&gw, "/_portcullis/login?rd=/app")]);
        assert_eq!(
            (page.status, page.version.as_str()),
            (200, want),
            "{page:?}"
        );
        assert_page_headers(&page);
        assert_eq!(
            page.header("strict-transport-security"),
            Some("max-age=31536000")
        );
        let csrf_line = page
            .all("set-cookie")
            .into_iter()
            .find(|c| c.starts_with("__Host-portcullis_session_csrf="))
            .expect("a __Host- CSRF cookie");
        assert!(csrf_line.contains("; Secure") && csrf_line.contains("Path=/"));
        let csrf = curl.cookie("__Host-portcullis_session_csrf").unwrap();

        let signed = curl.run(&[
            version,
            "-H",
            "Sec-Fetch-Site: same-origin",
            "--data-urlencode",
            "login=alice@example.com",
            "--data-urlencode",
            &format!("password={PASSWORD}"),
            "--data-urlencode",
            &format!("csrf={csrf}"),
            "--data-urlencode",
            "rd=/app",
            &https(&gw, "/_portcullis/login"),
        ]);
        assert_eq!(signed.status, 303, "{signed:?}");
        assert_eq!(signed.header("location"), Some("/app"));
        let session = signed
            .all("set-cookie")
            .into_iter()
            .find(|c| c.starts_with("__Host-portcullis_session="))
            .expect("a __Host- session cookie");
        assert!(session.contains("; Secure") && session.contains("HttpOnly"));

        // Through to the portal: identity set by the gateway, forged copies and the gateway's
        // cookies (sent in a second Cookie field, as HTTP/2 clients may) removed.
        let portal = curl.run(&[
            version,
            "-H",
            "X-Remote-User: mallory",
            "-H",
            "Cookie: theme=dark",
            &https(&gw, "/app?x=1"),
        ]);
        assert_eq!((portal.status, portal.version.as_str()), (200, want));
        assert_eq!(
            portal.header("strict-transport-security"),
            Some("max-age=31536000"),
            "HSTS on the portal's responses too"
        );
        let seen = up.last();
        assert_eq!(seen.path, "/app?x=1");
        assert_eq!(seen.headers_named("x-remote-user"), ["alice@example.com"]);
        assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
        let cookies = seen.headers_named("cookie").join("; ");
        assert!(cookies.contains("theme=dark"), "{cookies}");
        assert!(!cookies.contains("portcullis"), "{cookies}");

        // The API over the same protocol, and sign-out.
        let me = curl.run(&[version, &https(&gw, "/_portcullis/api/session")]);
        assert_eq!(me.status, 200, "{me:?}");
        assert!(me.body.contains("alice@example.com"));
        let out = curl.run(&[
            version,
            "-H",
            "Content-Type: application/json",
            "-H",
            "Sec-Fetch-Site: same-origin",
            "-d",
            "{}",
            &https(&gw, "/_portcullis/api/logout"),
        ]);
        assert_eq!(out.status, 200, "{out:?}");
        let after = curl.run(&[version, "-H", "Accept: text/html", &https(&gw, "/app")]);
        assert_eq!(after.status, 302, "signed out: back to the login page");
    }
    // Plain HTTP on a TLS listener is not served.
    let plain = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg(gw.url("/_portcullis/login"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&plain.stdout), "000");
}

#[test]
fn sighup_renews_the_certificate_without_dropping_an_open_connection() {
    let ca = Ca::new();
    let (first, second) = (ca.leaf(20), ca.leaf(90));
    let served = ca.leaf(20);
    std::fs::copy(&first.cert, &served.cert).unwrap();
    std::fs::copy(&first.key, &served.key).unwrap();
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, &served.yaml());
    let expiry_before = gw.metric(EXPIRY);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (expiry_before - now - 20.0 * 86400.0).abs() < 3600.0,
        "{expiry_before}"
    );

    let mut kept = KeptConnection::open(gw.addr, &ca.pem());
    assert_eq!(kept.server_cert(), first.der());
    assert_eq!(kept.get("/_portcullis/login").0, 200);

    // The renewal: new files in place, SIGHUP.
    std::fs::copy(&second.cert, &served.cert).unwrap();
    std::fs::copy(&second.key, &served.key).unwrap();
    assert!(sighup_counted(&gw, RELOADS_OK), "no reload:\n{}", gw.logs());
    assert_eq!(
        KeptConnection::open(gw.addr, &ca.pem()).server_cert(),
        second.der()
    );
    let expiry_after = gw.metric(EXPIRY);
    assert!((expiry_after - expiry_before - 70.0 * 86400.0).abs() < 3600.0);
    // The connection opened before the renewal still serves its next request.
    assert_eq!(kept.get("/_portcullis/login").0, 200);

    // Bad pairs on reload: each refused, counted, recorded; the renewed one stays.
    let other = ca.leaf(20);
    let read = |p: &std::path::Path| std::fs::read(p).unwrap();
    let (cert, key) = (read(&second.cert), read(&second.key));
    // What is put in place: the certificate file, and the key file (`None`: no key file).
    let bad_pairs = [
        (
            "a key of another certificate",
            cert.clone(),
            Some(read(&other.key)),
        ),
        (
            "a truncated certificate",
            cert[..cert.len() / 2].to_vec(),
            Some(key),
        ),
        ("a missing key file", cert.clone(), None),
    ];
    for (what, cert, key) in bad_pairs {
        std::fs::write(&served.cert, cert).unwrap();
        match key {
            Some(key) => std::fs::write(&served.key, key).unwrap(),
            None => std::fs::remove_file(&served.key).unwrap(),
        }
        let refused = sighup_counted(&gw, RELOADS_FAILED);
        assert!(refused, "{what}: not refused:\n{}", gw.logs());
        assert_eq!(
            KeptConnection::open(gw.addr, &ca.pem()).server_cert(),
            second.der(),
            "{what}: the good pair must stay"
        );
        assert_eq!(kept.get("/_portcullis/login").0, 200, "{what}");
        assert_eq!(gw.metric(EXPIRY), expiry_after, "{what}");
    }
    gw.assert_stored(&["config_rejected"]);
    assert!(gw.logs().contains("is not the key of the certificate"));
}

#[test]
fn a_bad_pair_at_start_exits_2_naming_the_file_and_the_reason() {
    let ca = Ca::new();
    let (good, other) = (ca.leaf(20), ca.leaf(20));
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
    let missing = dir.path().join("missing.pem");
    // The pair, the file the message must name, and the reason it must give.
    let cases = [
        (
            &good.cert,
            &other.key,
            &other.key,
            "is not the key of the certificate",
        ),
        (&missing, &good.key, &missing, "cannot be read"),
        (&good.cert, &missing, &missing, "cannot be read"),
        (&garbage, &good.key, &garbage, "is not valid PEM"),
        (&good.key, &good.key, &good.key, "holds no certificate"),
        (&good.cert, &good.cert, &good.cert, "holds no private key"),
    ];
    for (cert, key, named, reason) in cases {
        let config = dir.path().join("portcullis.yaml");
        let port = free_port();
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:{}\nupstream: http://127.0.0.1:1\n\
                 store:\n  path: data/p.db\ntls:\n  cert: {}\n  key: {}\n",
                free_port(),
                cert.display(),
                key.display()
            ),
        )
        .unwrap();
        for command in ["check-config", "serve"] {
            let out = Command::new(BIN)
                .args([command, "-c"])
                .arg(&config)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{command} {cert:?} {key:?}: {err}"
            );
            assert!(
                err.contains(&named.display().to_string()),
                "{command}: {err}"
            );
            assert!(err.contains(reason), "{command}: want `{reason}` in {err}");
            assert_eq!(err.lines().count(), 1, "one clear line: {err}");
        }
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "nothing may listen after a refused start"
        );
    }
}

#[test]
fn an_https_portal_is_checked_against_upstream_ca() {
    let portal_ca = Ca::new();
    let portal = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let _server = HttpsPortal::start(portal, &portal_ca.leaf(20));
    let elsewhere = SocketAddr::from(([127, 0, 0, 2], free_port()));
    let _misnamed = HttpsPortal::start(elsewhere, &portal_ca.leaf(20));
    let stranger_ca = Ca::new();
    let cases = [
        (portal, Some(portal_ca.pem()), 200, "the portal's own CA"),
        (portal, None, 502, "system roots do not know a private CA"),
        (portal, Some(stranger_ca.pem()), 502, "another CA"),
        (
            elsewhere,
            Some(portal_ca.pem()),
            502,
            "a certificate for another name",
        ),
    ];
    for (addr, ca, want, what) in cases {
        let up = Upstream::start();
        let mut gw = Gateway::start(up.addr, "");
        let ca_line = ca.map_or(String::new(), |p| format!("upstream_ca: {}\n", p.display()));
        // Past the base config's `upstream`: the later key would be a duplicate.
        let text = std::fs::read_to_string(&gw.config).unwrap().replace(
            &format!("upstream: http://{}", up.addr),
            &format!("upstream: https://{addr}\n{ca_line}"),
        );
        gw.rewrite_raw(&text);
        gw.restart();
        let mut b = Browser::new();
        b.sign_in(&gw, false);
        let r = b.get(&gw.url("/"));
        assert_eq!(r.status, want, "{what}: {}", r.body);
        if want == 200 {
            assert!(
                r.body.contains("<HTML>") || r.body.contains("s_server"),
                "{}",
                r.body
            );
        } else {
            assert!(r.body.contains("The portal is not responding"), "{what}");
        }
        assert_eq!(up.count(), 0, "{what}: the plain upstream is not used");
    }
}

#[test]
fn the_redirect_listener_only_redirects() {
    let ca = Ca::new();
    let up = Upstream::start();
    let plain = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let extra = format!(
        "{}public_url: https://portal.example:8443\nredirect_http: {plain}\ntimeouts:\n  request_header: 1s\n",
        ca.leaf(20).yaml()
    );
    let gw = Gateway::start(up.addr, &extra);
    let cases: [(&[&str], &str, u16, &str); 5] = [
        (&[], "/", 301, "https://portal.example:8443/"),
        (
            &[],
            "/app/page?x=1&y=%2F",
            301,
            "https://portal.example:8443/app/page?x=1&y=%2F",
        ),
        (&["-I"], "/app", 301, "https://portal.example:8443/app"),
        (
            &["-d", "login=a&password=b"],
            "/_portcullis/login",
            308,
            "https://portal.example:8443/_portcullis/login",
        ),
        (
            &[
                "-H",
                "Host: evil.example",
                "-H",
                "Cookie: portcullis_session=x",
            ],
            "//evil.example/x",
            301,
            "https://portal.example:8443//evil.example/x",
        ),
    ];
    for (args, path, status, location) in cases {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "5", "-D", "-", "-o", "/dev/null"])
            .args(args)
            .arg(format!("http://{plain}{path}"))
            .output()
            .unwrap();
        let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
        assert!(
            head.starts_with(&format!("http/1.1 {status}")),
            "{path}: {head}"
        );
        assert!(
            head.contains(&format!("location: {}\r\n", location.to_ascii_lowercase())),
            "{head}"
        );
        assert!(!head.contains("set-cookie"), "{head}");
    }
    assert_eq!(
        up.count(),
        0,
        "nothing reaches the portal through the plain listener"
    );
    // A head dripped a byte at a time, and silence: closed after request_header, not 60 s.
    for drip in [&b"GET / HTTP/1.1\r\nHost: a\r\n"[..], &b""[..]] {
        use std::io::{Read, Write};
        let started = std::time::Instant::now();
        let mut tcp = std::net::TcpStream::connect(plain).unwrap();
        tcp.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut closed = false;
        for b in drip.iter().cycle().take(60) {
            if tcp.write_all(&[*b]).is_err() {
                closed = true;
                break;
            }
            let mut buf = [0u8; 16];
            if matches!(tcp.read(&mut buf), Ok(0)) {
                closed = true;
                break;
            }
        }
        if drip.is_empty() {
            let mut buf = [0u8; 16];
            tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            closed = matches!(tcp.read(&mut buf), Ok(0));
        }
        assert!(closed, "still open after {:?}", started.elapsed());
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{:?}",
            started.elapsed()
        );
    }
    // The gateway itself still serves HTTPS only.
    let r = Curl::new(&ca.pem()).run(&[&https(&gw, "/_portcullis/login")]);
    assert_eq!(r.status, 200);
}

/// What `testssl.sh` reports about the listener, finding by finding (its JSON).
fn testssl(gw: &Gateway, ca: &Ca) -> Vec<(String, String, String)> {
    let out = tempfile::tempdir().unwrap();
    let json = out.path().join("testssl.json");
    let run = Command::new("timeout")
        .args([
            "300",
            "testssl",
            "--quiet",
            "--warnings",
            "off",
            "--color",
            "0",
        ])
        .arg("--add-ca")
        .arg(ca.pem())
        .arg("--jsonfile")
        .arg(&json)
        .args(["--ip", "127.0.0.1"])
        .arg(format!("https://localhost:{}/", gw.addr.port()))
        .output()
        .expect("testssl runs (bootstrap installs Debian's testssl.sh)");
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| {
        panic!(
            "no JSON from testssl ({e}): {}",
            String::from_utf8_lossy(&run.stdout)
        )
    });
    let findings: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    findings
        .iter()
        .map(|f| {
            let field = |k: &str| f[k].as_str().unwrap_or_default().to_string();
            (field("id"), field("severity"), field("finding"))
        })
        .collect()
}

#[test]
fn testssl_finds_no_old_protocol_no_weak_cipher_and_no_vulnerability() {
    let ca = Ca::new();
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, &ca.leaf(365).yaml());
    let findings = testssl(&gw, &ca);
    let finding = |id: &str| {
        findings
            .iter()
            .find(|(i, _, _)| i == id)
            .map(|(_, _, f)| f.as_str())
            .unwrap_or_else(|| panic!("testssl reported no `{id}`: {findings:#?}"))
    };
    for old in ["SSLv2", "SSLv3", "TLS1", "TLS1_1"] {
        assert_eq!(finding(old), "not offered", "{old}");
    }
    assert!(finding("TLS1_2").starts_with("offered"));
    assert!(finding("TLS1_3").starts_with("offered"));
    assert_eq!(finding("ALPN_HTTP2"), "h2");
    for weak in [
        "cipherlist_NULL",
        "cipherlist_aNULL",
        "cipherlist_EXPORT",
        "cipherlist_LOW",
        "cipherlist_3DES_IDEA",
        "cipherlist_AVERAGE",
    ] {
        assert_eq!(finding(weak), "not offered", "{weak}");
    }
    assert_eq!(finding("cipher_order"), "server");
    for vulnerability in [
        "heartbleed",
        "CCS",
        "ROBOT",
        "CRIME_TLS",
        "POODLE_SSL",
        "SWEET32",
        "FREAK",
        "DROWN",
        "LOGJAM",
        "BEAST",
        "LUCKY13",
        "RC4",
    ] {
        finding(vulnerability);
    }
    // Nothing at all above LOW (and no scan problem): the certificate the test made is sound,
    // so what is left to report would be the listener's. One probe is a race, not a finding:
    // testssl's client for ticket resumption closes as soon as its handshake is done, and a TLS
    // 1.3 ticket comes after the client's Finished (RFC 8446 §4.6.1), so whether the client
    // took one away depends on scheduling (openssl s_client against `openssl s_server`: 87 in
    // 100). When it took one in testssl's earlier probe and none in this one, testssl reports
    // a "connect problem". Resumption is checked below without the race instead.
    let racy = |id: &str, finding: &str| {
        id == "sessionresumption_ticket" && finding == "check failed because of connect problem"
    };
    let serious: Vec<_> = findings
        .iter()
        .filter(|(id, severity, finding)| {
            !matches!(severity.as_str(), "OK" | "INFO" | "LOW") && !racy(id, finding)
        })
        .collect();
    assert!(serious.is_empty(), "{serious:#?}");
    let resumed = resumption(&gw);
    assert!(resumed.starts_with("Reused, TLSv1.3"), "{resumed}");
}

/// How a second connection starts when the first one waited for the gateway's TLS 1.3 session
/// ticket (s_client's "Reused, TLSv1.3, …" or "New, …"): testssl's resumption probe without
/// its race.
fn resumption(gw: &Gateway) -> String {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("session.pem");
    let connect = format!("127.0.0.1:{}", gw.addr.port());
    let s_client = |saved: &str| {
        let mut c = Command::new("timeout");
        c.args(["30", "openssl", "s_client", "-connect", &connect])
            .args(["-servername", "localhost", saved])
            .arg(&session)
            .stderr(Stdio::null());
        c
    };
    let mut first = s_client("-sess_out")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl runs");
    // Until the ticket arrives (or the gateway closes the connection, or 30 s have passed).
    let arrived = BufReader::new(first.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .any(|line| line.contains("New Session Ticket arrived"));
    drop(first.stdin.take());
    first.wait().unwrap();
    assert!(arrived, "the gateway sent no TLS 1.3 session ticket");
    let second = s_client("-sess_in")
        .stdin(Stdio::null())
        .output()
        .expect("openssl runs");
    let text = String::from_utf8_lossy(&second.stdout);
    text.lines()
        .find(|l| l.starts_with("Reused,") || l.starts_with("New,"))
        .unwrap_or_else(|| panic!("no handshake in: {text}"))
        .to_string()
}

#[test]
fn a_handshake_that_never_ends_is_closed_with_a_slow_head() {
    let ca = Ca::new();
    let up = Upstream::start();
    let extra = format!("{}timeouts:\n  request_header: 1s\n", ca.leaf(20).yaml());
    let gw = Gateway::start(up.addr, &extra);
    // Nothing at all, the first bytes of a ClientHello, and a ClientHello dripped a byte at a
    // time: each connection is closed once `request_header` has passed, not Pingora's 60 s.
    let hello_start: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01];
    for (what, bytes, pause) in [
        ("silence", &[][..], Duration::ZERO),
        ("a started ClientHello", hello_start, Duration::ZERO),
        (
            "a dripped ClientHello",
            hello_start,
            Duration::from_millis(300),
        ),
    ] {
        use std::io::{Read, Write};
        let started = std::time::Instant::now();
        let mut tcp = std::net::TcpStream::connect(gw.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        for b in bytes {
            if tcp.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(pause);
        }
        let mut buf = [0u8; 64];
        let closed = match tcp.read(&mut buf) {
            Ok(n) => n == 0,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        };
        let took = started.elapsed();
        assert!(closed, "{what}: still open");
        assert!(took < Duration::from_secs(10), "{what}: held for {took:?}");
    }
    // Meanwhile a real client is served.
    assert_eq!(
        Curl::new(&ca.pem())
            .run(&[&https(&gw, "/_portcullis/login")])
            .status,
        200
    );
}

#[test]
fn turning_tls_on_or_off_by_a_reload_is_refused() {
    let ca = Ca::new();
    let leaf = ca.leaf(20);
    let up = Upstream::start();
    for (start, next) in [(String::new(), leaf.yaml()), (leaf.yaml(), String::new())] {
        let gw = Gateway::start(up.addr, &start);
        gw.rewrite(&next);
        let refused = sighup_counted(&gw, RELOADS_FAILED);
        assert!(refused, "{next:?}: not refused:\n{}", gw.logs());
        assert!(gw.logs().contains("turning TLS on or off takes a restart"));
        // The listener and its cookies are as they were.
        let secure = !start.is_empty();
        let cookie = if secure {
            let r = Curl::new(&ca.pem()).run(&[&https(&gw, "/_portcullis/login")]);
            r.all("set-cookie").join("\n")
        } else {
            Browser::new()
                .get(&gw.url("/_portcullis/login"))
                .set_cookies()
                .join("\n")
        };
        assert_eq!(cookie.contains("__Host-"), secure, "{cookie}");
        assert_eq!(cookie.contains("; Secure"), secure, "{cookie}");
    }
}

#[test]
fn with_watch_a_renewed_certificate_is_served_without_a_signal() {
    let ca = Ca::new();
    let (first, second) = (ca.leaf(20), ca.leaf(90));
    let served = ca.leaf(20);
    for (from, to) in [(&first.cert, &served.cert), (&first.key, &served.key)] {
        std::fs::copy(from, to).unwrap();
    }
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, &format!("{}watch: true\n", served.yaml()));
    assert_eq!(
        KeptConnection::open(gw.addr, &ca.pem()).server_cert(),
        first.der()
    );
    // The key first, then the certificate: each as a whole file (renamed into place).
    for (from, to) in [(&second.key, &served.key), (&second.cert, &served.cert)] {
        let tmp = to.with_extension("new");
        std::fs::copy(from, &tmp).unwrap();
        std::fs::rename(&tmp, to).unwrap();
    }
    let renewed = within(Duration::from_secs(10), || {
        KeptConnection::open(gw.addr, &ca.pem()).server_cert() == second.der()
    });
    assert!(renewed.is_some(), "not renewed:\n{}", gw.logs());
}

#[test]
fn slow_or_idle_http2_connections_are_closed() {
    let ca = Ca::new();
    let up = Upstream::start();
    let extra = format!(
        "{}timeouts:\n  request_header: 1s\n  keepalive: 2s\n",
        ca.leaf(20).yaml()
    );
    let gw = Gateway::start(up.addr, &extra);
    let preface: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let settings: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];
    // HEADERS (type 1) on stream 1 without END_HEADERS, then nothing.
    let half_headers: &[u8] = &[0, 0, 1, 1, 0, 0, 0, 0, 1, 0x82];
    // (what is sent, the most the connection may live: request_header for the preface,
    // keepalive once HTTP/2 runs with no request in flight; with slack for a debug build)
    let cases: [(&str, Vec<u8>, u64); 4] = [
        ("nothing after the handshake", vec![], 5),
        ("half a preface", preface[..10].to_vec(), 5),
        ("a preface and SETTINGS", [preface, settings].concat(), 7),
        (
            "an unfinished header block",
            [preface, settings, half_headers].concat(),
            7,
        ),
    ];
    for (what, bytes, limit) in cases {
        let mut conn = KeptConnection::open_with_alpn(gw.addr, &ca.pem(), &[b"h2"]);
        conn.send(&bytes);
        let closed = conn.wait_closed(Duration::from_secs(15));
        assert!(
            closed.is_some_and(|t| t < Duration::from_secs(limit)),
            "{what}: {closed:?}"
        );
    }
    // Pings (empty SETTINGS) do not keep an idle connection either.
    let mut conn = KeptConnection::open_with_alpn(gw.addr, &ca.pem(), &[b"h2"]);
    conn.send(&[preface, settings].concat());
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(12)
        && conn.wait_closed(Duration::from_millis(500)).is_none()
    {
        conn.send(settings);
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "kept open by pings: {:?}",
        started.elapsed()
    );
    // A real HTTP/2 client is served.
    let r = Curl::new(&ca.pem()).run(&["--http2", &https(&gw, "/_portcullis/login")]);
    assert_eq!((r.status, r.version.as_str()), (200, "2"));
}

#[test]
fn an_http2_body_without_content_length_never_makes_a_public_request() {
    let ca = Ca::new();
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, &ca.leaf(20).yaml());
    let curl = Curl::new(&ca.pem());
    let url = https(&gw, "/static/app.css");
    let plain = curl.run(&["--http2", &url]);
    assert_eq!(plain.status, 200, "a public path is public");
    let seen = up.count();
    let smuggled = "POST /admin HTTP/1.1\r\nX-Remote-User: admin\r\n\r\n";
    for method in ["GET", "HEAD"] {
        // `Content-Length:` with no value: curl sends the body in DATA frames without one.
        let r = curl.run(&[
            "--http2",
            "-X",
            method,
            "-H",
            "Content-Length:",
            "--data-binary",
            smuggled,
            &url,
        ]);
        assert_eq!(r.status, 401, "{method}: {r:?}");
        assert_eq!(r.version, "2");
    }
    assert_eq!(up.count(), seen, "nothing reached the portal");
}

#[test]
fn an_http2_request_answered_before_its_body_is_read_gets_the_whole_answer() {
    // The gateway answers some requests without reading their bodies (no session, a body with
    // no length on a public path). Over HTTP/2 the client may still be sending then: the stream
    // must end cleanly, not be reset under it, which curl 7.88 (Debian 12's) reports as error 92
    // in place of the answer. That happened to about one request in three before the gateway
    // read the rest of such bodies; 20 of each kind must all be answered.
    let ca = Ca::new();
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, &ca.leaf(20).yaml());
    let curl = Curl::new(&ca.pem());
    let body = "x".repeat(100);
    for (what, extra, path) in [
        ("a form posted without a session", vec![], "/private"),
        (
            "a body with no length on a public path",
            vec!["-H", "Content-Length:"],
            "/static/app.css",
        ),
    ] {
        for attempt in 0..20 {
            let mut args = vec!["--http2", "-X", "POST", "--data-binary", &body];
            args.extend(extra.iter().copied());
            let url = https(&gw, path);
            args.push(&url);
            let r = curl.run(&args);
            assert_eq!(
                (r.status, r.version.as_str(), r.exit),
                (401, "2", Some(0)),
                "{what}, attempt {attempt}: {r:?}"
            );
        }
    }
    assert_eq!(up.count(), 0, "nothing reached the portal");
}

/// The raw answer to `request` sent over a fresh TLS connection (HTTP/1.1).
fn raw_tls(gw: &Gateway, ca: &Ca, request: &[u8]) -> String {
    use std::io::Read;
    let mut conn = KeptConnection::open(gw.addr, &ca.pem());
    conn.send(request);
    let mut answer = Vec::new();
    let _ = conn.stream_mut().read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).to_string()
}

#[test]
fn every_response_over_tls_carries_hsts() {
    let ca = Ca::new();
    let up = Upstream::start();
    let extra = format!(
        "{}public_paths: [/static/, /hsts]\ntimeouts:\n  request_header: 1s\n",
        ca.leaf(20).yaml()
    );
    let gw = Gateway::start(up.addr, &extra);
    let hsts = "strict-transport-security: max-age=31536000\r\n";
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    // (Pingora answers a head it cannot parse, e.g. two Host fields, with a 400 of its own,
    // before any hook of the gateway: that one has no HSTS.)
    let cases: [(&str, Vec<u8>, &str); 3] = [
        (
            "a head too slow: 408",
            b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec(),
            "408",
        ),
        ("a head too large: 431", big.into_bytes(), "431"),
        (
            "a login redirect",
            b"GET /app HTTP/1.1\r\nHost: a\r\nAccept: text/html\r\nConnection: close\r\n\r\n"
                .to_vec(),
            "302",
        ),
    ];
    for (what, request, status) in cases {
        let answer = raw_tls(&gw, &ca, &request).to_ascii_lowercase();
        assert!(
            answer.starts_with(&format!("http/1.1 {status}")),
            "{what}: {answer}"
        );
        assert!(answer.contains(hsts), "{what}: {answer}");
    }
    // The portal's answers get it; one the portal gives a policy of its own keeps that one.
    let curl = Curl::new(&ca.pem());
    let r = curl.run(&["--http2", &https(&gw, "/static/app.css")]);
    assert_eq!(r.all("strict-transport-security"), ["max-age=31536000"]);
    let r = curl.run(&["--http2", &https(&gw, "/hsts")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.all("strict-transport-security"), [PORTAL_HSTS]);
    // The 502 page.
    drop(up);
    let r = curl.run(&["--http2", &https(&gw, "/static/app.css")]);
    assert_eq!(r.status, 502);
    assert_eq!(r.all("strict-transport-security"), ["max-age=31536000"]);
}

#[test]
fn a_certificate_for_another_name_is_served_with_a_warning() {
    let ca = Ca::new();
    let leaf = ca.leaf(20);
    let up = Upstream::start();
    for (public_url, warned) in [
        ("https://portal.example.com", true),
        ("https://127.0.0.1:8443", false),
        ("https://localhost", false),
    ] {
        let extra = format!("{}public_url: {public_url}\n", leaf.yaml());
        let mut gw = Gateway::start(up.addr, &extra);
        let check = gw.cli(&["check-config"], None);
        let err = String::from_utf8_lossy(&check.stderr);
        assert!(check.status.success(), "{err}");
        assert_eq!(String::from_utf8_lossy(&check.stdout), "ok\n");
        assert_eq!(
            err.contains("warning: tls.cert: the certificate does not name"),
            warned,
            "{public_url}: {err}"
        );
        assert_eq!(
            gw.logs().contains("the certificate does not name"),
            warned,
            "{public_url}"
        );
        assert!(gw.is_running(), "served all the same");
    }
}
