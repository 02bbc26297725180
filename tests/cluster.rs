//! Cluster mode (docs/reference.md, Store and cluster): two gateway processes on one
//! PostgreSQL database behave as one, and a gateway rides out a database outage. Needs `PORTCULLIS_TEST_POSTGRES` (CI and `make test`
//! set it); the outage test runs a private server of its own with `pg_ctl`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// Two gateways on a fresh database; the first creates alice.
fn pair(up: &Upstream, extra: &str) -> Option<(pg::Database, Gateway, Gateway)> {
    let server = pg::server()?;
    let db = pg::Database::create(&server);
    let store = format!("store:\n  kind: postgres\n  url: {}\n", db.url);
    let a = Gateway::start_on_store(up.addr, &store, extra, true);
    let b = Gateway::start_on_store(up.addr, &store, extra, false);
    Some((db, a, b))
}

#[test]
fn a_session_made_on_one_gateway_works_on_the_other_and_slides_across_both() {
    let up = Upstream::start();
    let Some((_db, a, b)) = pair(&up, "session:\n  idle_timeout: 5s\n") else {
        return;
    };
    let mut browser = Browser::new();
    browser.sign_in(&a, false);
    assert_eq!(browser.get(&b.url("/reports")).echo()["path"], "/reports");
    assert_eq!(up.last().header("x-remote-user"), Some("alice@example.com"));
    // Each gateway sees the browser only every 5.6 s, longer than the 5 s idle timeout; the
    // session lives on because each use reaches the store and the other gateway reads it there.
    // (2.8 s between uses leaves over a second for whole-second clocks and a slow machine.)
    let mut on = [&a, &b].into_iter().cycle();
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(2800));
        let gw = on.next().unwrap();
        let r = browser.api_get(&gw.url("/"));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // Left alone past the idle timeout, it is over on both.
    std::thread::sleep(Duration::from_millis(6100));
    assert_eq!(browser.api_get(&a.url("/")).status, 401);
    assert_eq!(browser.api_get(&b.url("/")).status, 401);
}

/// Polls until `browser` is refused on `gw`; the time it took.
fn refused_within(browser: &mut Browser, gw: &Gateway, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if browser.api_get(&gw.url("/")).status == 401 {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "still signed in after {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_logout_on_one_gateway_ends_the_session_on_the_other_within_2s() {
    let up = Upstream::start();
    let Some((_db, a, b)) = pair(&up, "") else {
        return;
    };
    let mut browser = Browser::new();
    browser.sign_in(&a, false);
    // Cached on both.
    assert_eq!(browser.api_get(&a.url("/")).status, 200);
    assert_eq!(browser.api_get(&b.url("/")).status, 200);
    let mut copy = Browser::new();
    copy.jar = browser.jar.clone();
    let out = browser.post_json(&b.url("/_portcullis/api/logout"), &json!({}));
    assert_eq!(out.status, 200);
    let took = refused_within(&mut copy, &a, Duration::from_secs(2));
    eprintln!("logout on B reached A's cache after {took:?}");
}

#[test]
fn a_dismissal_from_the_command_line_reaches_both_gateways_within_2s() {
    let up = Upstream::start();
    let Some((_db, a, b)) = pair(&up, "") else {
        return;
    };
    let (mut on_a, mut on_b) = (Browser::new(), Browser::new());
    on_a.sign_in(&a, false);
    on_b.sign_in(&b, false);
    assert_eq!(on_a.api_get(&a.url("/")).status, 200);
    assert_eq!(on_b.api_get(&b.url("/")).status, 200);
    let out = b.cli(&["user", "dismiss", "alice@example.com"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let started = Instant::now();
    refused_within(&mut on_a, &a, Duration::from_secs(2));
    refused_within(
        &mut on_b,
        &b,
        Duration::from_secs(2) - started.elapsed().min(Duration::from_secs(2)),
    );
    assert_eq!(Browser::new().api_sign_in(&a, PASSWORD).status, 403);
    // The two sessions were counted once, by one of the two.
    let dismissed = "portcullis_sessions_ended_total{reason=\"dismissed\"}";
    let both = || a.metric(dismissed) + b.metric(dismissed);
    assert!(
        within(Duration::from_secs(2), || both() == 2.0).is_some(),
        "{}",
        both()
    );
}

#[test]
fn failures_on_both_gateways_add_up_to_the_captcha_threshold() {
    let up = Upstream::start();
    let extra = "throttle:\n  captcha_after: 3\n";
    let Some((_db, a, b)) = pair(&up, extra) else {
        return;
    };
    for (n, gw) in [&a, &b, &a].into_iter().enumerate() {
        let ip = format!("127.0.0.{}", 60 + n);
        let r = Browser::from_ip(&ip).api_sign_in(gw, "wrong-guess");
        assert_eq!(r.json()["error"], "invalid_credentials");
        assert_eq!(
            r.json().get("captcha").is_some(),
            n == 2,
            "failure {}: {}",
            n + 1,
            r.body
        );
    }
    let r = Browser::from_ip("127.0.0.70").api_sign_in(&b, PASSWORD);
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (401, Some("captcha_required"))
    );
}

#[test]
fn with_one_gateway_stopped_the_other_keeps_serving() {
    let up = Upstream::start();
    let Some((_db, mut a, b)) = pair(&up, "") else {
        return;
    };
    let mut browser = Browser::new();
    browser.sign_in(&a, false);
    a.kill();
    assert_eq!(browser.api_get(&b.url("/")).status, 200);
    let mut other = Browser::new();
    other.sign_in(&b, false);
    assert_eq!(other.api_get(&b.url("/")).status, 200);
}

#[test]
fn a_database_outage_is_ridden_out_and_recovered_from() {
    let up = Upstream::start();
    if pg::server().is_none() {
        return;
    }
    let server = pg::Server::start(free_port());
    let store = format!(
        "store:\n  kind: postgres\n  url: {}\n",
        server.url("portcullis")
    );
    let extra = "session:\n  idle_timeout: 4s\n";
    let gw = Gateway::start_on_store(up.addr, &store, extra, true);
    let other = Gateway::start_on_store(up.addr, &store, extra, false);
    let ready = || {
        let r = reqwest::blocking::get(format!("http://{}/readyz", gw.admin)).unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    let mut browser = Browser::new();
    browser.sign_in(&gw, false);
    assert_eq!(browser.api_get(&gw.url("/")).status, 200);

    server.stop();
    let down = Instant::now();
    let (status, body) = ready();
    assert_eq!(status, 503);
    assert!(body.starts_with("not ready: store: "), "{body}");
    // New sign-ins fail with a clear answer, as JSON and as a page.
    let r = Browser::new().api_sign_in(&gw, PASSWORD);
    assert_eq!((r.status, r.json()), (503, json!({"error": "unavailable"})));
    let page = Browser::new().login_form(&gw, "alice@example.com", PASSWORD, false, "/");
    assert_eq!(page.status, 503);
    assert!(
        page.body.contains("Sign-in is temporarily unavailable"),
        "{}",
        page.body
    );
    // The cached session works on, for its idle timeout at most without the store.
    let mut last_ok = Duration::ZERO;
    while down.elapsed() < Duration::from_secs(8) {
        match browser.api_get(&gw.url("/")).status {
            200 => last_ok = down.elapsed(),
            503 => {}
            other => panic!("status {other} during the outage"),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!("the cached session was served {last_ok:?} into the outage");
    assert!(
        last_ok >= Duration::from_millis(2500),
        "served only {last_ok:?} into the outage"
    );
    // 4 s, plus under a second as the gateway counts whole seconds, plus a request's time.
    assert!(
        last_ok <= Duration::from_secs(6),
        "served {last_ok:?} into the outage"
    );
    assert_eq!(browser.api_get(&gw.url("/")).status, 503);

    // The database returns: the gateway finds it again by itself.
    server.resume();
    let back = within(Duration::from_secs(10), || ready().0 == 200);
    assert!(back.is_some(), "{:?}", ready());
    let mut fresh = Browser::new();
    let r = fresh.api_sign_in(&gw, PASSWORD);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(fresh.api_get(&gw.url("/")).status, 200);
    // And the two gateways tell each other of revocations again.
    assert_eq!(fresh.api_get(&other.url("/")).status, 200);
    let mut copy = Browser::new();
    copy.jar = fresh.jar.clone();
    let out = fresh.post_json(&gw.url("/_portcullis/api/logout"), &json!({}));
    assert_eq!(out.status, 200);
    refused_within(&mut copy, &other, Duration::from_secs(2));
}

/// The account page on PostgreSQL: ending a session, "Log out on all devices" and a `user edit`
/// made through one gateway reach the other within 2 s.
#[test]
fn the_account_page_and_user_edit_reach_the_other_gateway_within_2s() {
    let up = Upstream::start();
    let Some((_db, a, b)) = pair(&up, "") else {
        return;
    };
    let mut here = Browser::from_ip("127.0.0.141");
    here.sign_in(&a, true);
    let mut there = Browser::from_ip("127.0.0.142");
    there.sign_in(&b, false);
    let mut third = Browser::from_ip("127.0.0.143");
    third.sign_in(&b, false);

    // A correction of the groups: the identity headers on the other gateway follow.
    let out = a.cli(
        &["user", "edit", "alice@example.com", "--group", "finance"],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let follows = within(Duration::from_secs(2), || {
        there.get(&b.url("/page")).status == 200
            && up.last().header("x-remote-groups") == Some("finance")
    });
    assert!(
        follows.is_some(),
        "the other gateway's session carries the new groups"
    );

    // End one session (a handle from the API), then all of them.
    let list = here
        .api_get(&a.url("/_portcullis/api/account/sessions"))
        .json();
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 3);
    let theirs = sessions.iter().find(|s| s["ip"] == "127.0.0.142").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = here.send(
        here.request(
            "DELETE",
            &a.url(&format!("/_portcullis/api/account/sessions/{theirs}")),
        )
        .header("Accept", "application/json"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    refused_within(&mut there, &b, Duration::from_secs(2));
    assert_eq!(third.api_get(&b.url("/")).status, 200, "only that one");
    let r = here.post_json(&a.url("/_portcullis/api/account/logout-all"), &json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    refused_within(&mut third, &b, Duration::from_secs(2));
}
