//! Sessions over real HTTP: sign-in, sliding expiry, absolute expiry, remember-me renewal,
//! rotation and replay detection, fixation, logout, restart persistence and revocations made
//! by the CLI while the gateway runs.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[test]
fn signing_in_sets_a_fresh_http_only_session_and_reaches_the_portal() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "");
    let mut b = Browser::new();
    let r = b.login_form(
        &gw,
        "alice@example.com",
        PASSWORD,
        false,
        "/reports?year=2026",
    );
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/reports?year=2026"));
    let set = r
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("portcullis_session="))
        .unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax") && set.contains("Path=/"),
        "{set}"
    );
    assert!(
        !set.contains("Secure"),
        "plain http public_url must not set Secure: {set}"
    );
    let token = b.session().unwrap();
    assert_eq!(token.len(), 43, "256 bits in base64url");

    let echo = b.get(&gw.url("/reports?year=2026")).echo();
    assert_eq!(echo["path"], "/reports?year=2026");
    let seen = up.last();
    assert_eq!(seen.header("x-remote-user"), Some("alice@example.com"));
    assert_eq!(seen.header("x-remote-email"), Some("alice@example.com"));
    assert_eq!(seen.header("x-remote-name"), Some("Alice Liddell"));
    assert_eq!(seen.header("x-remote-groups"), Some("staff,ops"));
}

#[test]
fn login_is_case_insensitive_and_accepts_the_email() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "");
    gw.add_user("+1 555 0100", "bob@example.com", "Bob", &[]);
    let mut b = Browser::new();
    assert_eq!(
        b.login_form(&gw, "ALICE@Example.com", PASSWORD, false, "/")
            .status,
        303
    );
    let mut b = Browser::new();
    assert_eq!(
        b.login_form(&gw, "Bob@Example.COM", PASSWORD, false, "/")
            .status,
        303
    );
    b.get(&gw.url("/")).echo();
    assert_eq!(up.last().header("x-remote-user"), Some("+1 555 0100"));
}

#[test]
fn wrong_password_and_unknown_login_get_the_same_answer() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "");
    let mut b = Browser::new();
    let wrong = b.login_form(&gw, "alice@example.com", "not the password", false, "/");
    let unknown = b.login_form(&gw, "nobody@example.com", "not the password", false, "/");
    for r in [&wrong, &unknown] {
        assert_eq!(r.status, 401);
        assert!(r.body.contains("Incorrect login or password"), "{}", r.body);
    }
    assert!(b.session().is_none());
    let api_wrong = b.post_json(
        &gw.url("/_portcullis/api/login"),
        &json!({"login": "alice@example.com", "password": "x"}),
    );
    let api_unknown = b.post_json(
        &gw.url("/_portcullis/api/login"),
        &json!({"login": "nobody", "password": "x"}),
    );
    assert_eq!(
        (api_wrong.status, api_wrong.json()),
        (401, json!({"error": "invalid_credentials"}))
    );
    assert_eq!(
        (api_unknown.status, api_unknown.json()),
        (401, json!({"error": "invalid_credentials"}))
    );
}

#[test]
fn the_login_form_needs_its_csrf_token() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "");
    let mut b = Browser::new();
    b.get(&gw.url("/_portcullis/login"));
    let r = b.post_form(
        &gw.url("/_portcullis/login"),
        &[
            ("login", "alice@example.com"),
            ("password", PASSWORD),
            ("csrf", "forged-token-000000000"),
        ],
    );
    assert_eq!(r.status, 403);
    assert!(b.session().is_none());
    let mut fresh = Browser::new();
    let r = fresh.post_form(
        &gw.url("/_portcullis/login"),
        &[("login", "alice@example.com"), ("password", PASSWORD)],
    );
    assert_eq!(r.status, 403, "no CSRF cookie at all");
    assert!(fresh.session().is_none());
}

#[test]
fn idle_sessions_slide_and_then_expire_with_a_message() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "session:\n  idle_timeout: 3s\n");
    let mut b = Browser::new();
    b.sign_in(&gw, false);
    // Activity every 1.5 s keeps the session alive well past its 3 s idle timeout.
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(1500));
        b.get(&gw.url("/")).echo();
    }
    // api/session does not extend it.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(b.api_get(&gw.url("/_portcullis/api/session")).status, 200);
    std::thread::sleep(Duration::from_millis(2500));
    let r = b.get(&gw.url("/inbox"));
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location"),
        Some("/_portcullis/login?rd=%2Finbox&expired=1")
    );
    let page = b.get(&gw.url(r.header("location").unwrap()));
    assert!(
        page.body
            .contains("Your session has expired. Please sign in again"),
        "{}",
        page.body
    );
    gw.assert_stored(&["session_expired"]);
}

#[test]
fn absolute_timeout_ends_even_an_active_session() {
    let up = Upstream::start();
    let gw = Gateway::start(
        up.addr,
        "session:\n  idle_timeout: 10s\n  absolute_timeout: 3s\n",
    );
    let mut b = Browser::new();
    b.sign_in(&gw, false);
    b.get(&gw.url("/")).echo();
    std::thread::sleep(Duration::from_millis(1500));
    b.get(&gw.url("/")).echo();
    std::thread::sleep(Duration::from_millis(2600));
    assert_eq!(b.api_get(&gw.url("/")).status, 401);
}

#[test]
fn remember_me_renews_silently_and_rotates_its_validator() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "session:\n  idle_timeout: 2s\n  remember_me: 1d\n");
    let mut b = Browser::new();
    let r = b.login_form(&gw, "alice@example.com", PASSWORD, true, "/");
    assert_eq!(r.status, 303);
    let set = r
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("portcullis_session_remember="))
        .unwrap();
    assert!(
        set.contains("Max-Age=86400") && set.contains("HttpOnly"),
        "{set}"
    );
    let first_session = b.session().unwrap();
    let first_remember = b.remember().unwrap();
    std::thread::sleep(Duration::from_millis(3100));
    // The session has idled out, the remember-me cookie brings the user straight back in.
    let echo = b.get(&gw.url("/dashboard")).echo();
    assert_eq!(echo["path"], "/dashboard");
    assert_eq!(up.last().header("x-remote-user"), Some("alice@example.com"));
    let second_session = b.session().unwrap();
    let second_remember = b.remember().unwrap();
    assert_ne!(first_session, second_session);
    assert_ne!(first_remember, second_remember);
    let (sel1, _) = first_remember.split_once('.').unwrap();
    let (sel2, _) = second_remember.split_once('.').unwrap();
    assert_eq!(sel1, sel2, "the selector stays, the validator rotates");
    // Neither cookie reaches the portal.
    assert!(up.last().header("cookie").is_none());
}

#[test]
fn a_replayed_remember_token_revokes_every_session_of_the_user() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "session:\n  idle_timeout: 1m\n  remember_me: 1d\n");
    let mut victim = Browser::new();
    victim.sign_in(&gw, true);
    let stolen = victim.remember().unwrap();
    // The victim's browser uses the token (its session cookie lost), which rotates it.
    victim.jar.remove("portcullis_session");
    victim.get(&gw.url("/")).echo();
    assert_ne!(victim.remember().unwrap(), stolen);
    // And again, so the stolen validator is two rotations old: the one just replaced would
    // still be honoured for a few seconds, for parallel requests racing with it.
    victim.jar.remove("portcullis_session");
    victim.get(&gw.url("/")).echo();
    let mut other_device = Browser::new();
    other_device.sign_in(&gw, false);
    other_device.get(&gw.url("/")).echo();

    // The thief replays the old token: known selector, old validator.
    let mut thief = Browser::new();
    thief
        .jar
        .insert("portcullis_session_remember".into(), stolen);
    let r = thief.api_get(&gw.url("/"));
    assert_eq!(r.status, 401);
    assert!(thief.remember().is_none(), "the replayed cookie is cleared");

    // Every session and remember-me token of the user is gone.
    assert_eq!(victim.api_get(&gw.url("/")).status, 401);
    assert_eq!(other_device.api_get(&gw.url("/")).status, 401);
    let mut with_new_token = Browser::new();
    with_new_token.jar.insert(
        "portcullis_session_remember".into(),
        victim.remember().unwrap_or_default(),
    );
    assert_eq!(with_new_token.api_get(&gw.url("/")).status, 401);
    gw.assert_stored(&["remember-me token replayed"]);
}

#[test]
fn a_planted_session_id_is_never_adopted() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "");
    let mut b = Browser::new();
    let planted = "A".repeat(43);
    b.jar.insert("portcullis_session".into(), planted.clone());
    assert_eq!(b.api_get(&gw.url("/")).status, 401);
    b.jar.insert("portcullis_session".into(), planted.clone());
    b.sign_in(&gw, false);
    assert_ne!(b.session().unwrap(), planted);
    let mut attacker = Browser::new();
    attacker.jar.insert("portcullis_session".into(), planted);
    assert_eq!(attacker.api_get(&gw.url("/")).status, 401);
    // Signed in, the login page sends the browser on; a second sign-in replaces the session.
    assert_eq!(
        b.get(&gw.url("/_portcullis/login?rd=/x"))
            .header("location"),
        Some("/x")
    );
    let first = b.session().unwrap();
    let csrf = b.csrf_cookie().unwrap();
    let again = b.post_form(
        &gw.url("/_portcullis/login"),
        &[
            ("login", "alice@example.com"),
            ("password", PASSWORD),
            ("csrf", &csrf),
        ],
    );
    assert_eq!(again.status, 303);
    assert_ne!(b.session().unwrap(), first);
    let mut old = Browser::new();
    old.jar.insert("portcullis_session".into(), first);
    assert_eq!(old.api_get(&gw.url("/")).status, 401);
}

#[test]
fn logout_ends_the_session_and_the_remember_token() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "");
    let mut b = Browser::new();
    b.sign_in(&gw, true);
    let session = b.session().unwrap();
    let remember = b.remember().unwrap();

    // A cross-site post without the CSRF token is refused and changes nothing.
    let forged = b.send(
        b.request("POST", &gw.url("/_portcullis/logout"))
            .header("Origin", "http://evil.example"),
    );
    assert_eq!(forged.status, 403);
    b.get(&gw.url("/")).echo();

    let csrf = portcullis::core::secret::SessionToken::parse(&session)
        .unwrap()
        .csrf();
    let r = b.post_form(&gw.url("/_portcullis/logout"), &[("csrf", &csrf)]);
    assert_eq!(r.status, 303);
    assert_eq!(
        r.header("location"),
        Some("/_portcullis/login?signed_out=1")
    );
    assert!(
        b.session().is_none() && b.remember().is_none(),
        "cookies cleared"
    );
    let mut replay = Browser::new();
    replay.jar.insert("portcullis_session".into(), session);
    replay
        .jar
        .insert("portcullis_session_remember".into(), remember);
    assert_eq!(replay.api_get(&gw.url("/")).status, 401);
    gw.assert_stored(&["logout"]);
}

#[test]
fn the_json_api_signs_in_reports_and_signs_out() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "");
    let mut b = Browser::new();
    let r = b.post_json(
        &gw.url("/_portcullis/api/login"),
        &json!({"login": "alice@example.com", "password": PASSWORD, "remember": true}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["user"], "alice@example.com");
    assert!(b.session().is_some() && b.remember().is_some());
    let s = b.api_get(&gw.url("/_portcullis/api/session"));
    assert_eq!(s.status, 200);
    let body = s.json();
    assert_eq!(body["email"], "alice@example.com");
    assert_eq!(body["name"], "Alice Liddell");
    assert_eq!(body["groups"], json!(["staff", "ops"]));
    assert_eq!(body["expires_in"], 1440);
    // A form post cannot reach the JSON API.
    let form = b.post_form(&gw.url("/_portcullis/api/login"), &[("login", "x")]);
    assert_eq!(form.status, 415);
    let out = b.post_json(&gw.url("/_portcullis/api/logout"), &json!({}));
    assert_eq!((out.status, out.json()), (200, json!({"ok": true})));
    assert_eq!(b.api_get(&gw.url("/_portcullis/api/session")).status, 401);
}

#[test]
fn sessions_survive_a_restart() {
    let up = Upstream::start();
    let mut gw = Gateway::start(up.addr, "");
    let mut b = Browser::new();
    b.sign_in(&gw, false);
    b.get(&gw.url("/")).echo();
    gw.restart();
    b.get(&gw.url("/after-restart")).echo();
    assert_eq!(up.last().header("x-remote-user"), Some("alice@example.com"));
}

fn revoked_within_2s(cli: &[&str], stdin: Option<&str>) {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "session:\n  remember_me: 1d\n");
    let mut b = Browser::new();
    b.sign_in(&gw, true);
    b.get(&gw.url("/")).echo();
    let out = gw.cli(cli, stdin);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let took = within(Duration::from_secs(2), || {
        b.api_get(&gw.url("/")).status == 401
    });
    assert!(
        took.is_some(),
        "{cli:?}: the session was still alive after 2 s"
    );
    assert!(
        b.remember().is_none(),
        "{cli:?}: the remember-me token must be dead too"
    );
}

#[test]
fn cli_logout_all_ends_live_sessions_within_2s() {
    revoked_within_2s(&["user", "logout-all", "alice@example.com"], None);
}

#[test]
fn cli_set_password_ends_live_sessions_within_2s() {
    revoked_within_2s(
        &[
            "user",
            "set-password",
            "alice@example.com",
            "--password-stdin",
        ],
        Some("a new long password"),
    );
}

#[test]
fn cli_dismissal_ends_live_sessions_within_2s_and_blocks_sign_in() {
    revoked_within_2s(&["user", "dismiss", "alice@example.com"], None);
}

#[test]
fn dismissed_users_see_the_dismissal_message_until_restored() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "");
    assert!(
        gw.cli(&["user", "dismiss", "alice@example.com"], None)
            .status
            .success()
    );
    let mut b = Browser::new();
    let r = b.login_form(&gw, "alice@example.com", PASSWORD, false, "/");
    assert_eq!(r.status, 403);
    assert!(
        r.body
            .contains("User may have been dismissed. Contact your administrator")
    );
    // A wrong password for a dismissed user reveals nothing about the dismissal.
    let r = b.login_form(&gw, "alice@example.com", "wrong password", false, "/");
    assert!(r.body.contains("Incorrect login or password"));
    let api = b.post_json(
        &gw.url("/_portcullis/api/login"),
        &json!({"login": "alice@example.com", "password": PASSWORD}),
    );
    assert_eq!(
        (api.status, api.json()),
        (403, json!({"error": "dismissed"}))
    );
    assert!(
        gw.cli(&["user", "restore", "alice@example.com"], None)
            .status
            .success()
    );
    b.sign_in(&gw, false);
}

#[test]
fn nothing_secret_is_stored_or_logged_in_clear() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "session:\n  remember_me: 1d\n");
    let mut b = Browser::new();
    b.sign_in(&gw, true);
    b.get(&gw.url("/")).echo();
    b.jar.remove("portcullis_session");
    b.get(&gw.url("/")).echo(); // a renewal, so a rotated validator exists too
    let wrong = "a-wrong-password-typed";
    Browser::new().login_form(&gw, "alice@example.com", wrong, false, "/");
    let session = b.session().unwrap();
    let remember = b.remember().unwrap();
    let (_, validator) = remember.split_once('.').unwrap();
    // Events are written in the background: wait for the failed sign-in's before scanning.
    gw.assert_stored(&["wrong_password"]);
    let db = gw.db_bytes();
    let logs = gw.logs();
    assert!(!db.is_empty() && !logs.is_empty());
    let contains =
        |hay: &[u8], needle: &str| hay.windows(needle.len()).any(|w| w == needle.as_bytes());
    for secret in [
        PASSWORD,
        wrong,
        session.as_str(),
        validator,
        remember.as_str(),
    ] {
        assert!(!contains(&db, secret), "the store holds a secret in clear");
        assert!(!logs.contains(secret), "the log holds a secret in clear");
    }
}

/// 24 browsers, 3 rounds each, through a cache of 2 and, side by side, a cache of 2 000: every
/// request gets through with its identity on both; the small cache sends many to the store,
/// the big one none. (The cache evicts in its background upkeep, so how far the small one
/// overflows between two upkeeps, and so the exact number of reads, depends on timing: half
/// the sessions read again at least is the bound, against none for the big cache.)
#[test]
fn sessions_pushed_out_of_a_small_cache_are_read_from_the_store() {
    let up = Upstream::start();
    let misses = |capacity: u32| -> f64 {
        let gw = Gateway::start(
            up.addr,
            &format!("session:\n  cache_capacity: {capacity}\n"),
        );
        let mut browsers: Vec<Browser> = (0..24)
            .map(|_| {
                let mut b = Browser::new();
                b.sign_in(&gw, false);
                b
            })
            .collect();
        let miss = "portcullis_session_cache_total{result=\"miss\"}";
        let before = gw.metric(miss);
        for round in 0..3 {
            for (n, b) in browsers.iter_mut().enumerate() {
                let r = b.get(&gw.url(&format!("/round/{round}/{n}")));
                assert_eq!(
                    r.status, 200,
                    "cache {capacity}, browser {n}, round {round}: {}",
                    r.body
                );
            }
        }
        gw.metric(miss) - before
    };
    let (small, big) = (misses(2), misses(2000));
    assert!(
        small >= 12.0,
        "only {small} store reads for 72 requests of 24 sessions with a cache of 2"
    );
    assert_eq!(big, 0.0, "a cache of 2 000 read the store for 24 sessions");
    assert!(
        up.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path.starts_with("/round/"))
            .all(|s| s.headers_named("x-remote-user") == ["alice@example.com"])
    );
}

#[test]
fn a_batch_of_users_dismissed_from_stdin_loses_every_session_at_once() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "");
    let logins: Vec<String> = (0..12).map(|n| format!("leaver{n}@example.com")).collect();
    let mut signed_in: Vec<Browser> = Vec::new();
    for login in &logins {
        gw.add_user(login, login, "Leaver", &[]);
        let mut b = Browser::new();
        let r = b.login_form(&gw, login, PASSWORD, false, "/");
        assert_eq!(r.status, 303, "{login}: {}", r.body);
        signed_in.push(b);
    }
    let mut stays = Browser::new();
    stays.sign_in(&gw, false);

    // One unknown login in the list: nobody is dismissed.
    let with_typo = format!("{}\nnobody@example.com\n", logins.join("\n"));
    let refused = gw.cli(&["user", "dismiss", "--stdin"], Some(&with_typo));
    assert_eq!(refused.status.code(), Some(2));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("no user nobody@example.com; nobody was dismissed"),
        "{err}"
    );
    assert!(
        signed_in
            .iter_mut()
            .all(|b| b.get(&gw.url("/")).status == 200)
    );

    // The list as HR sends it: comments, blank lines, odd spacing, any case.
    let list = format!(
        "# leavers, December\n\n{}\n",
        logins
            .iter()
            .map(|l| format!("  {} ", l.to_uppercase()))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let out = gw.cli(&["user", "dismiss", "--stdin"], Some(&list));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("Dismissed ")
            .count(),
        12
    );
    let all_out = within(Duration::from_secs(2), || {
        signed_in
            .iter_mut()
            .all(|b| b.get(&gw.url("/")).status == 302)
    });
    assert!(all_out.is_some(), "a dismissed user still gets through");
    assert_eq!(stays.get(&gw.url("/")).status, 200, "others are untouched");
    let again = gw.cli(&["user", "dismiss", "--stdin"], Some("\n# nothing\n"));
    assert_eq!(again.status.code(), Some(2), "an empty list is a mistake");
}
