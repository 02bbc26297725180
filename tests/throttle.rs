//! Password guessing against the real binary (docs/reference.md, Sign-in): failure counters
//! per login and per address, the CAPTCHA step, the lock, the per-address rate, and what survives a restart.
//! Clients use 127.0.0.N source addresses to act as different people.

mod common;

use std::time::Duration;

use common::{Browser, Gateway, PASSWORD, Resp, Upstream, within};
use serde_json::{Value, json};

const HASHES: &str = "portcullis_password_hash_seconds_count";

fn attempts(result: &str) -> String {
    format!("portcullis_login_attempts_total{{result=\"{result}\"}}")
}

fn throttle(captcha_after: u32, lock_after: u32, lock: &str, per_minute: u32) -> String {
    format!(
        "throttle:\n  captcha_after: {captcha_after}\n  lock_after: {lock_after}\n  lock_duration: {lock}\n  ip_attempts_per_minute: {per_minute}\n"
    )
}

/// `POST api/login` from `ip`, with an optional `(captcha_id, captcha_answer)`.
fn api_login(
    gw: &Gateway,
    ip: &str,
    login: &str,
    password: &str,
    captcha: Option<(&str, &str)>,
) -> Resp {
    let mut body = json!({"login": login, "password": password});
    if let Some((id, answer)) = captcha {
        body["captcha_id"] = json!(id);
        body["captcha_answer"] = json!(answer);
    }
    Browser::from_ip(ip).post_json(&gw.url("/_portcullis/api/login"), &body)
}

fn error(r: &Resp) -> String {
    r.json()["error"].as_str().unwrap_or_default().to_string()
}

/// The challenge a refusal asks for; checks the shape of docs/reference.md, Endpoints.
fn challenge(r: &Resp) -> String {
    let c = &r.json()["captcha"];
    let id = c["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no challenge in {}", r.body));
    assert_eq!(
        c["image"],
        Value::from(format!("/_portcullis/captcha/{id}.png"))
    );
    id.to_string()
}

fn image(gw: &Gateway, id: &str) -> reqwest::blocking::Response {
    reqwest::blocking::get(gw.url(&format!("/_portcullis/captcha/{id}.png"))).unwrap()
}

#[test]
fn failures_for_one_login_from_any_address_bring_a_captcha_that_must_be_answered() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, &throttle(3, 0, "15m", 1000));
    for (i, ip) in ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
        .iter()
        .enumerate()
    {
        let r = api_login(&gw, ip, "alice@example.com", "wrong", None);
        assert_eq!((r.status, error(&r).as_str()), (401, "invalid_credentials"));
        // The failure that reaches the threshold already hands out the next step's challenge.
        assert_eq!(r.json().get("captcha").is_some(), i == 2, "{}", r.body);
    }
    let hashes = gw.metric(HASHES);

    // The right password from a fourth address, without an answer: refused, and not hashed.
    let r = api_login(&gw, "127.0.0.14", "alice@example.com", PASSWORD, None);
    assert_eq!((r.status, error(&r).as_str()), (401, "captcha_required"));
    let first = challenge(&r);
    let img = image(&gw, &first);
    assert_eq!(img.status(), 200);
    assert_eq!(img.headers()["content-type"], "image/png");
    assert_eq!(img.headers()["cache-control"], "no-store");
    assert!(img.bytes().unwrap().starts_with(b"\x89PNG\r\n\x1a\n"));

    // The right password with a wrong answer: refused, a new challenge, the old picture gone.
    let r = api_login(
        &gw,
        "127.0.0.14",
        "alice@example.com",
        PASSWORD,
        Some((&first, "RW4XJT")),
    );
    assert_eq!((r.status, error(&r).as_str()), (401, "captcha_required"));
    let second = challenge(&r);
    assert_ne!(second, first);
    assert_eq!(image(&gw, &first).status(), 404);
    assert_eq!(
        gw.metric(HASHES),
        hashes,
        "a missing or wrong answer costs no hash"
    );
    assert_eq!(gw.metric(&attempts("captcha_required")), 1.0);
    assert_eq!(gw.metric(&attempts("captcha_failed")), 1.0);
    assert_eq!(gw.metric(&attempts("invalid_credentials")), 3.0);

    // A right answer (case does not matter) with a wrong password uses the challenge up ...
    let minted = gw.mint_captcha("K7WXAP");
    let r = api_login(
        &gw,
        "127.0.0.14",
        "alice@example.com",
        "wrong",
        Some((&minted, "k7wxap")),
    );
    assert_eq!((r.status, error(&r).as_str()), (401, "invalid_credentials"));
    // ... so answering it again is refused, even with the right password.
    let r = api_login(
        &gw,
        "127.0.0.14",
        "alice@example.com",
        PASSWORD,
        Some((&minted, "K7WXAP")),
    );
    assert_eq!((r.status, error(&r).as_str()), (401, "captcha_required"));

    let minted = gw.mint_captcha("K7WXAP");
    let r = api_login(
        &gw,
        "127.0.0.15",
        "alice@example.com",
        PASSWORD,
        Some((&minted, " k7wXap")),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["user"], "alice@example.com");
    gw.assert_stored(&["captcha_required", "captcha_failed", "127.0.0.14"]);
    // The answers given never reach the store or the (debug-level) log. (Answers with mixed
    // characters: a run like "AAAAAA" can occur in the stored PNG data by chance.)
    let db = String::from_utf8_lossy(&gw.db_bytes()).to_lowercase();
    let logs = gw.logs().to_lowercase();
    for secret in ["k7wxap", "rw4xjt"] {
        if let Some(at) = db.find(secret) {
            let around = &db.as_bytes()[at.saturating_sub(80)..(at + 80).min(db.len())];
            panic!(
                "{secret} in the store: {:?}",
                String::from_utf8_lossy(around)
            );
        }
        assert!(!logs.contains(secret), "{secret} in the log");
    }
}

#[test]
fn a_success_resets_the_login_count() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, &throttle(3, 0, "15m", 1000));
    // Each from its own address, so only the login's count grows.
    for ip in ["127.0.0.21", "127.0.0.22"] {
        let r = api_login(&gw, ip, "alice@example.com", "wrong", None);
        assert_eq!(r.status, 401);
    }
    assert_eq!(
        api_login(&gw, "127.0.0.23", "alice@example.com", PASSWORD, None).status,
        200
    );
    for ip in ["127.0.0.24", "127.0.0.25"] {
        let r = api_login(&gw, ip, "alice@example.com", "wrong", None);
        assert_eq!(
            r.json().get("captcha"),
            None,
            "2 failures since the success: {}",
            r.body
        );
    }
    // Four failures in all, but two since the success: still below the threshold of three.
    let r = api_login(&gw, "127.0.0.26", "alice@example.com", PASSWORD, None);
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn spraying_from_one_address_escalates_that_address_while_the_accounts_stay_usable_elsewhere() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, &throttle(3, 0, "15m", 1000));
    gw.add_user("bob@example.com", "bob@example.com", "Bob", &[]);
    gw.add_user("carol@example.com", "carol@example.com", "Carol", &[]);
    // One password tried against three logins (one of them unknown) from one address.
    for login in ["bob@example.com", "carol@example.com", "nobody@example.com"] {
        let r = api_login(&gw, "127.0.0.31", login, "Summer2026!", None);
        assert_eq!(r.status, 401);
    }
    // That address now needs a CAPTCHA for any login, even one it never tried ...
    let r = api_login(&gw, "127.0.0.31", "alice@example.com", PASSWORD, None);
    assert_eq!((r.status, error(&r).as_str()), (401, "captcha_required"));
    gw.assert_stored(&["captcha_required", "address"]);
    // ... and its login page shows the picture before anyone types a login.
    let page = Browser::from_ip("127.0.0.31").get(&gw.url("/_portcullis/login"));
    assert!(
        page.body.contains("name=\"captcha_answer\""),
        "{}",
        page.body
    );
    let id = page
        .body
        .split("name=\"captcha_id\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a challenge id on the page");
    assert_eq!(image(&gw, id).status(), 200);

    // The sprayed accounts' owners, elsewhere, sign in as usual.
    let elsewhere = Browser::from_ip("127.0.0.32").get(&gw.url("/_portcullis/login"));
    assert!(!elsewhere.body.contains("captcha_answer"));
    for login in ["bob@example.com", "carol@example.com"] {
        let r = api_login(&gw, "127.0.0.32", login, PASSWORD, None);
        assert_eq!(r.status, 200, "{login}: {}", r.body);
    }
}

#[test]
fn a_login_locks_after_lock_after_failures_and_opens_after_lock_duration() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, &throttle(0, 3, "2s", 1000));
    for ip in ["127.0.0.41", "127.0.0.42", "127.0.0.43"] {
        let r = api_login(&gw, ip, "alice@example.com", "wrong", None);
        assert_eq!((r.status, error(&r).as_str()), (401, "invalid_credentials"));
    }
    // The lock started before this instant (the third failure's answer has arrived).
    let locked_at = std::time::Instant::now();
    gw.assert_stored(&["account_locked"]);
    let hashes = gw.metric(HASHES);
    let r = api_login(&gw, "127.0.0.44", "alice@example.com", PASSWORD, None);
    assert_eq!(
        (r.status, error(&r).as_str()),
        (423, "locked"),
        "{}",
        r.body
    );
    let wait = r.json()["retry_after"].as_u64().expect("retry_after");
    assert!((1..=2).contains(&wait), "retry_after {wait}");
    assert_eq!(r.header("retry-after"), Some(wait.to_string().as_str()));
    assert_eq!(gw.metric(HASHES), hashes, "a locked login is not hashed");
    assert_eq!(gw.metric(&attempts("locked")), 1.0);

    // The form shows the message of docs/reference.md, Messages.
    let mut b = Browser::from_ip("127.0.0.45");
    let page = b.login_form(&gw, "alice@example.com", PASSWORD, false, "/");
    assert_eq!(page.status, 423);
    assert!(
        page.body
            .contains("Too many failed attempts. Try again later")
    );

    let opened = within(Duration::from_secs(4), || {
        api_login(&gw, "127.0.0.46", "alice@example.com", PASSWORD, None).status == 200
    });
    opened.expect("the lock never opened");
    let open_after = locked_at.elapsed();
    assert!(
        open_after >= Duration::from_millis(1900),
        "open {open_after:?} after the lock began, before its 2 s ran out"
    );
}

/// Parallel attempts from one address, or for one account from many addresses, at once.
fn at_once(gw: &Gateway, attempts: Vec<(String, &'static str)>) {
    let barrier = std::sync::Barrier::new(attempts.len());
    std::thread::scope(|s| {
        for (ip, login) in &attempts {
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                api_login(gw, ip, login, "wrong", None)
            });
        }
    });
}

#[test]
fn parallel_attempts_cannot_all_pass_the_checks_before_one_is_counted() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, &throttle(3, 0, "15m", 1000));
    gw.add_user("bob@example.com", "bob@example.com", "Bob", &[]);
    let one_address = (0..20)
        .map(|_| ("127.0.0.91".to_string(), "alice@example.com"))
        .collect();
    at_once(&gw, one_address);
    assert_eq!(
        gw.metric(HASHES),
        3.0,
        "only the attempts below the CAPTCHA threshold hash"
    );
    assert_eq!(gw.metric(&attempts("invalid_credentials")), 3.0);
    assert_eq!(gw.metric(&attempts("captcha_required")), 17.0);

    let many_addresses = (0..20)
        .map(|i| (format!("127.0.1.{}", i + 1), "bob@example.com"))
        .collect();
    at_once(&gw, many_addresses);
    assert_eq!(
        gw.metric(HASHES),
        6.0,
        "three more for bob, from twenty addresses"
    );
}

#[test]
fn failures_count_against_the_account_whichever_identifier_is_typed() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, &throttle(3, 0, "15m", 1000));
    gw.add_user("+15550100", "dave@example.com", "Dave", &[]);
    for (ip, typed) in [
        ("127.0.0.92", "+15550100"),
        ("127.0.0.93", "+15550100"),
        ("127.0.0.94", "DAVE@example.com"),
    ] {
        assert_eq!(api_login(&gw, ip, typed, "wrong", None).status, 401);
    }
    for typed in ["+15550100", "dave@example.com"] {
        let r = api_login(&gw, "127.0.0.95", typed, PASSWORD, None);
        assert_eq!(
            (r.status, error(&r).as_str()),
            (401, "captcha_required"),
            "{typed}"
        );
    }
}

#[test]
fn too_many_attempts_from_one_address_get_429_with_retry_after() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, &throttle(0, 0, "15m", 5));
    for _ in 0..5 {
        let r = api_login(&gw, "127.0.0.51", "alice@example.com", "wrong", None);
        assert_eq!(r.status, 401);
    }
    let hashes = gw.metric(HASHES);
    let r = api_login(&gw, "127.0.0.51", "alice@example.com", PASSWORD, None);
    assert_eq!(
        (r.status, error(&r).as_str()),
        (429, "throttled"),
        "{}",
        r.body
    );
    let wait = r.json()["retry_after"].as_u64().expect("retry_after");
    // Five a minute: one comes back every 12 s.
    assert!((1..=12).contains(&wait), "retry_after {wait}");
    assert_eq!(r.header("retry-after"), Some(wait.to_string().as_str()));
    let mut b = Browser::from_ip("127.0.0.51");
    let page = b.login_form(&gw, "alice@example.com", PASSWORD, false, "/");
    assert_eq!(page.status, 429);
    assert!(
        page.body
            .contains("Too many failed attempts. Try again later")
    );
    assert!(page.header("retry-after").is_some());
    assert_eq!(
        gw.metric(HASHES),
        hashes,
        "a throttled attempt is not hashed"
    );
    assert_eq!(gw.metric(&attempts("throttled")), 2.0);
    gw.assert_stored(&["throttled", "127.0.0.51"]);

    // Other addresses are not affected.
    let r = api_login(&gw, "127.0.0.52", "alice@example.com", PASSWORD, None);
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn counters_survive_a_restart() {
    let up = Upstream::start();
    let mut gw = Gateway::start(up.addr, &throttle(2, 0, "15m", 1000));
    for ip in ["127.0.0.61", "127.0.0.62"] {
        assert_eq!(
            api_login(&gw, ip, "alice@example.com", "wrong", None).status,
            401
        );
    }
    gw.restart();
    let r = api_login(&gw, "127.0.0.63", "alice@example.com", PASSWORD, None);
    assert_eq!((r.status, error(&r).as_str()), (401, "captcha_required"));
}

#[test]
fn an_unknown_login_and_a_wrong_password_take_the_same_path() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, &throttle(2, 0, "15m", 1000));
    let mut replies = Vec::new();
    for (login, ip) in [
        ("alice@example.com", "127.0.0.71"),
        ("nobody@example.com", "127.0.0.72"),
    ] {
        let before = gw.metric(HASHES);
        let r = api_login(&gw, ip, login, "wrong", None);
        assert_eq!(
            gw.metric(HASHES),
            before + 1.0,
            "{login}: one hash computed"
        );
        replies.push((r.status, r.body));
    }
    assert_eq!(replies[0], replies[1], "same status and body");
    assert_eq!(replies[0].0, 401);

    let mut b = Browser::from_ip("127.0.0.73");
    let known = b.login_form(&gw, "alice@example.com", "wrong", false, "/");
    let unknown = b.login_form(&gw, "nobody@example.com", "wrong", false, "/");
    assert_eq!(known.status, unknown.status);
    assert!(known.body.contains("Incorrect login or password"));
    assert!(unknown.body.contains("Incorrect login or password"));

    // Both escalate at the same count, so escalation does not reveal which logins exist.
    for login in ["alice@example.com", "nobody@example.com"] {
        let r = api_login(&gw, "127.0.0.74", login, "wrong", None);
        assert_eq!(
            (r.status, error(&r).as_str()),
            (401, "captcha_required"),
            "{login}"
        );
    }
    gw.assert_stored(&["wrong_password", "unknown_login"]);
}

#[test]
fn the_login_form_walks_through_the_captcha_step_without_javascript() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, &throttle(1, 0, "15m", 1000));
    let mut b = Browser::from_ip("127.0.0.81");
    let r = b.login_form(&gw, "alice@example.com", "wrong", false, "/inbox");
    assert_eq!(r.status, 401);
    assert!(r.body.contains("Incorrect login or password"));
    assert!(r.body.contains("<img class=\"captcha\""), "{}", r.body);

    // From another address the login still needs the picture; a wrong answer shows a new one.
    let mut b = Browser::from_ip("127.0.0.82");
    let page = b.get(&gw.url("/_portcullis/login"));
    let csrf = b.csrf_cookie().unwrap();
    assert!(
        !page.body.contains("captcha_answer"),
        "this address has no failures"
    );
    let form = |id: &str, answer: &str| {
        vec![
            ("login", "alice@example.com".to_string()),
            ("password", PASSWORD.to_string()),
            ("csrf", csrf.clone()),
            ("rd", "/inbox".to_string()),
            ("captcha_id", id.to_string()),
            ("captcha_answer", answer.to_string()),
        ]
    };
    let post = |b: &mut Browser, fields: Vec<(&str, String)>| {
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        b.post_form(&gw.url("/_portcullis/login"), &fields)
    };
    let r = post(&mut b, form("", ""));
    assert_eq!(r.status, 401);
    assert!(r.body.contains("Enter the characters shown in the picture"));
    let shown = r
        .body
        .split("captcha/")
        .nth(1)
        .and_then(|s| s.split(".png").next())
        .unwrap()
        .to_string();
    let r = post(&mut b, form(&shown, "nope"));
    assert!(r.body.contains("Enter the characters shown in the picture"));
    assert!(
        !r.body.contains(&shown),
        "a new picture after a wrong answer"
    );
    assert_eq!(image(&gw, &shown).status(), 404);

    let minted = gw.mint_captcha("HX3K7P");
    let r = post(&mut b, form(&minted, "hx3k7p"));
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location"), Some("/inbox"));
}
