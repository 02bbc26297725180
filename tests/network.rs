//! Address rules over real loopback connections: clients act as different hosts by binding
//! 127.0.0.N (and ::1) as their source address. Global allowlist, trusted and untrusted
//! forwarders, per-group and per-user restrictions on sign-in and on live sessions, dual-stack
//! listeners, and reloads that tighten a rule or are refused.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[test]
fn the_global_allowlist_is_checked_before_anything_else() {
    let up = Upstream::start();
    let gw = Gateway::start(
        up.addr,
        "network:\n  allow: [127.0.0.2, 127.0.0.10-127.0.0.20, 127.0.1.0/24]\n",
    );
    let cases = [
        ("127.0.0.2", true),
        ("127.0.0.3", false),
        ("127.0.0.9", false),
        ("127.0.0.10", true),
        ("127.0.0.20", true),
        ("127.0.0.21", false),
        ("127.0.1.255", true),
        ("127.0.2.0", false),
    ];
    for (ip, allowed) in cases {
        let mut b = Browser::from_ip(ip);
        let page = b.get(&gw.url("/_portcullis/login"));
        let api = b.api_get(&gw.url("/app"));
        if allowed {
            assert_eq!(page.status, 200, "{ip}: login page");
            assert_eq!(api.status, 401, "{ip}: protected path without a session");
        } else {
            assert_eq!(
                page.status, 403,
                "{ip}: the login page is behind the allowlist too"
            );
            assert!(
                page.body
                    .contains("Access from your IP address is not allowed")
            );
            assert_eq!(
                (api.status, api.json()),
                (403, json!({"error": "ip_denied"})),
                "{ip}"
            );
        }
    }
    // A public path is no way around it.
    assert_eq!(
        Browser::from_ip("127.0.0.3")
            .api_get(&gw.url("/static/x.css"))
            .status,
        403
    );
    assert_eq!(up.count(), 0);
    gw.assert_stored(&["ip_denied", "127.0.0.3"]);
}

#[test]
fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
    let up = Upstream::start();
    let gw = Gateway::start(
        up.addr,
        "network:\n  trusted_proxies: [127.0.0.50, 127.0.0.51]\n  allow: [198.51.100.0/24, 127.0.0.60]\n",
    );
    let send = |from: &str, headers: &[(&str, &str)]| {
        let mut b = Browser::from_ip(from);
        let mut req = b.request("GET", &gw.url("/static/app.css"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        b.send(req).status
    };
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], u16);
    let cases: [Case; 10] = [
        // A trusted proxy vouching for an allowed client.
        ("127.0.0.50", &[("X-Forwarded-For", "198.51.100.7")], 200),
        // Two trusted proxies in a row.
        (
            "127.0.0.50",
            &[("X-Forwarded-For", "198.51.100.7, 127.0.0.51")],
            200,
        ),
        // The client forged the left-most entry; the proxy appended the real address.
        (
            "127.0.0.50",
            &[("X-Forwarded-For", "198.51.100.7, 203.0.113.9")],
            403,
        ),
        (
            "127.0.0.50",
            &[
                ("X-Forwarded-For", "198.51.100.7"),
                ("X-Forwarded-For", "203.0.113.9"),
            ],
            403,
        ),
        // Only the configured header (X-Forwarded-For by default) is read: the others name
        // nobody, so the client is the proxy itself.
        (
            "127.0.0.50",
            &[("Forwarded", "for=198.51.100.8;proto=https")],
            403,
        ),
        ("127.0.0.50", &[("X-Real-IP", "198.51.100.9")], 403),
        ("127.0.0.50", &[("X-Forwarded-For", "unknown")], 403),
        // An untrusted peer's claims are ignored, whatever the header.
        ("127.0.0.61", &[("X-Forwarded-For", "198.51.100.7")], 403),
        (
            "127.0.0.61",
            &[
                ("X-Real-IP", "198.51.100.7"),
                ("Forwarded", "for=198.51.100.7"),
            ],
            403,
        ),
        ("127.0.0.60", &[("X-Forwarded-For", "203.0.113.9")], 200),
    ];
    for (from, headers, want) in cases {
        assert_eq!(send(from, headers), want, "from {from} with {headers:?}");
    }
    // What the portal is told: the resolved client alone; hops left of it are the client's
    // own claims, which the portal must never be given as if vouched for.
    send(
        "127.0.0.50",
        &[("X-Forwarded-For", "10.9.9.9, 198.51.100.7, 127.0.0.51")],
    );
    assert_eq!(up.last().header("x-forwarded-for"), Some("198.51.100.7"));
    send("127.0.0.60", &[("X-Forwarded-For", "198.51.100.7")]);
    assert_eq!(up.last().header("x-forwarded-for"), Some("127.0.0.60"));
}

const RESTRICTIONS: &str = "network:
  restrictions:
    - name: office
      groups: [staff]
      allow: [127.0.0.30-127.0.0.39]
    - name: ops-vpn
      groups: [ops]
      allow: [127.0.0.41]
    - name: contractor
      users: [BOB@example.com]
      allow: [127.0.0.40]
";

#[test]
fn restricted_users_sign_in_only_from_their_ranges_and_the_refusal_reveals_nothing() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, RESTRICTIONS);
    gw.add_user("bob@example.com", "bob@example.com", "Bob", &[]);
    gw.add_user(
        "carol@example.com",
        "carol@example.com",
        "Carol",
        &["staff"],
    );
    gw.add_user(
        "dave@example.com",
        "dave@example.com",
        "Dave",
        &["visitors"],
    );
    let login = |from: &str, who: &str, pw: &str| {
        let mut b = Browser::from_ip(from);
        let r = b.login_form(&gw, who, pw, false, "/");
        (r.status, r.body, b.session().is_some())
    };
    // Alice is in staff and ops: the union of both ranges.
    assert_eq!(login("127.0.0.35", "alice@example.com", PASSWORD).0, 303);
    assert_eq!(login("127.0.0.41", "alice@example.com", PASSWORD).0, 303);
    let (status, body, session) = login("127.0.0.42", "alice@example.com", PASSWORD);
    assert_eq!(status, 403);
    assert!(body.contains("Access from your IP address is restricted"));
    assert!(!session);
    // Without the right password nothing tells that the account is restricted.
    let (status, body, _) = login("127.0.0.42", "alice@example.com", "wrong password");
    assert_eq!(status, 401);
    assert!(body.contains("Incorrect login or password"));
    assert_eq!(login("127.0.0.40", "bob@example.com", PASSWORD).0, 303);
    // A user-level restriction ends a live session too.
    let mut bob = Browser::from_ip("127.0.0.40");
    assert_eq!(
        bob.login_form(&gw, "bob@example.com", PASSWORD, false, "/")
            .status,
        303
    );
    bob.get(&gw.url("/")).echo();
    assert_eq!(bob.moved_to("127.0.0.41").get(&gw.url("/")).status, 403);
    assert_eq!(bob.api_get(&gw.url("/")).status, 401);
    assert_eq!(login("127.0.0.35", "bob@example.com", PASSWORD).0, 403);
    assert_eq!(login("127.0.0.40", "carol@example.com", PASSWORD).0, 403);
    assert_eq!(
        login("127.0.0.77", "dave@example.com", PASSWORD).0,
        303,
        "unrestricted users come from anywhere"
    );
    let mut api = Browser::from_ip("127.0.0.42");
    let r = api.post_json(
        &gw.url("/_portcullis/api/login"),
        &json!({"login": "alice@example.com", "password": PASSWORD}),
    );
    assert_eq!(
        (r.status, r.json()),
        (403, json!({"error": "ip_restricted"}))
    );
}

#[test]
fn a_live_session_used_from_outside_its_range_ends() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, RESTRICTIONS);
    let mut office = Browser::from_ip("127.0.0.30");
    office.sign_in(&gw, false);
    office.get(&gw.url("/")).echo();
    // Same cookie, another allowed address: fine.
    office.moved_to("127.0.0.39").get(&gw.url("/")).echo();
    // Same cookie from outside: refused, and the session is over everywhere.
    // The gateway's own API does not vouch for it from there either.
    assert_eq!(
        office
            .moved_to("127.0.0.90")
            .api_get(&gw.url("/_portcullis/api/session"))
            .status,
        401
    );
    let mut outside = office.moved_to("127.0.0.90");
    let r = outside.get(&gw.url("/"));
    assert_eq!(r.status, 403);
    assert!(r.body.contains("Access from your IP address is restricted"));
    assert_eq!(office.api_get(&gw.url("/")).status, 401);
    gw.assert_stored(&["ip_restricted"]);
}

#[test]
fn a_dual_stack_listener_matches_ipv4_rules_and_ipv6_separately() {
    let up = Upstream::start();
    let gw = Gateway::start_on("[::]", up.addr, "network:\n  allow: [127.0.0.7, \"::1\"]\n");
    // IPv4 clients arrive as ::ffff:127.0.0.N on the IPv6 socket.
    assert_eq!(
        Browser::from_ip("127.0.0.7").api_get(&gw.url("/")).status,
        401
    );
    assert_eq!(
        Browser::from_ip("127.0.0.8").api_get(&gw.url("/")).status,
        403
    );
    let v6 = format!("http://[::1]:{}/", gw.addr.port());
    assert_eq!(Browser::from_ip("::1").api_get(&v6).status, 401);
    let gw4 = Gateway::start_on("[::]", up.addr, "network:\n  allow: [127.0.0.0/8]\n");
    let v6 = format!("http://[::1]:{}/", gw4.addr.port());
    assert_eq!(
        Browser::from_ip("::1").api_get(&v6).status,
        403,
        "::1 is not in 127.0.0.0/8"
    );
    // An IPv6 client behind a trusted IPv6 proxy.
    let gw6 = Gateway::start_on(
        "[::]",
        up.addr,
        "network:\n  trusted_proxies: [\"::1\"]\n  allow: [2001:db8::/32]\n",
    );
    let v6 = format!("http://[::1]:{}/", gw6.addr.port());
    let mut b = Browser::from_ip("::1");
    assert_eq!(
        b.send(
            b.request("GET", &v6)
                .header("X-Forwarded-For", "2001:db8::5")
        )
        .status,
        401
    );
    assert_eq!(
        b.send(
            b.request("GET", &v6)
                .header("X-Forwarded-For", "2001:db9::5")
        )
        .status,
        403
    );
}

#[test]
fn a_reload_that_tightens_a_rule_applies_to_live_sessions() {
    let up = Upstream::start();
    let mut gw = Gateway::start(up.addr, "");
    let mut b = Browser::from_ip("127.0.0.30");
    b.sign_in(&gw, false);
    b.get(&gw.url("/")).echo();
    gw.rewrite("network:\n  restrictions:\n    - groups: [staff]\n      allow: [127.0.0.99]\n");
    gw.sighup();
    let took = within(Duration::from_secs(3), || b.get(&gw.url("/")).status == 403);
    assert!(
        took.is_some(),
        "the tightened rule did not reach the live session"
    );
    assert_eq!(
        b.moved_to("127.0.0.99").api_get(&gw.url("/")).status,
        401,
        "the session ended"
    );
    gw.assert_stored(&["config_reloaded"]);
    assert!(gw.is_running());
}

#[test]
fn an_invalid_reload_changes_nothing() {
    let up = Upstream::start();
    let mut gw = Gateway::start(up.addr, "network:\n  allow: [127.0.0.2]\n");
    gw.rewrite("network:\n  allow: [127.0.0.2, 127.0.0.300]\n");
    gw.sighup();
    std::thread::sleep(Duration::from_millis(800));
    gw.rewrite_raw("this: is: not yaml");
    gw.sighup();
    std::thread::sleep(Duration::from_millis(800));
    assert!(gw.is_running());
    assert_eq!(
        Browser::from_ip("127.0.0.2").api_get(&gw.url("/")).status,
        401
    );
    assert_eq!(
        Browser::from_ip("127.0.0.3").api_get(&gw.url("/")).status,
        403,
        "the old rule stays"
    );
    let logs = gw.logs();
    assert!(logs.contains("configuration refused"), "{logs}");
    assert!(logs.contains("127.0.0.300"));
    gw.assert_stored(&["config_rejected"]);
    let metrics = reqwest::blocking::get(format!("http://{}/metrics", gw.admin))
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("portcullis_config_reloads_total{result=\"error\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_config_reloads_total{result=\"ok\"} 0"),
        "{metrics}"
    );
}

#[test]
fn watch_true_reloads_when_the_file_changes() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "watch: true\n");
    assert_eq!(
        Browser::from_ip("127.0.0.3").api_get(&gw.url("/")).status,
        401
    );
    std::thread::sleep(Duration::from_millis(1100)); // a new modification time
    gw.rewrite("watch: true\nnetwork:\n  allow: [127.0.0.2]\n");
    let took = within(Duration::from_secs(4), || {
        Browser::from_ip("127.0.0.3").api_get(&gw.url("/")).status == 403
    });
    assert!(took.is_some(), "the changed file was not picked up");
}
