//! Two-step verification (docs/reference.md, Two-step verification) with the real binary:
//! codes come from `oathtool` (Debian's OATH Toolkit), an implementation independent of the
//! gateway's, reading the key the setup page shows as a person would type it into an app.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{Value, json};

const PERIOD: u64 = 30;
const ALICE: &str = "alice@example.com";

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An authenticator app: the key typed in from the setup page, codes from `oathtool`, and (as
/// with a person) each period's code used at most once.
struct App {
    secret: String,
    last: Option<u64>,
}

impl App {
    fn new(grouped: &str) -> App {
        App {
            secret: grouped.split_whitespace().collect(),
            last: None,
        }
    }

    fn code_of(&self, step: u64) -> String {
        let out = Command::new("oathtool")
            .args(["--totp", "-b", "-N", &format!("@{}", step * PERIOD)])
            .arg(&self.secret)
            .output()
            .expect("oathtool (make test installs it)");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// A code the gateway accepts now (its period or one either side) of a period not used
    /// before; waits for the clock only when those three are used up.
    fn next(&mut self) -> String {
        loop {
            let now = unix_now();
            let current = now / PERIOD;
            // The previous period, unless this one ends within 3 s (it would then fall out of
            // the window before the gateway sees it).
            let earliest = if now % PERIOD < PERIOD - 3 {
                current - 1
            } else {
                current
            };
            let step = self.last.map_or(earliest, |l| (l + 1).max(earliest));
            if step <= current + 1 {
                self.last = Some(step);
                return self.code_of(step);
            }
            // The gateway takes `step` once the period before it has begun.
            std::thread::sleep(Duration::from_secs((step - 1) * PERIOD - now));
        }
    }

    /// The code last used, again.
    fn last_code(&self) -> String {
        self.code_of(self.last.expect("a code was used"))
    }

    /// Six digits that are no code of the gateway's window now.
    fn wrong(&self) -> String {
        let current = unix_now() / PERIOD;
        let near: Vec<String> = (current - 2..=current + 2)
            .map(|s| self.code_of(s))
            .collect();
        ["000000", "111111", "222222"]
            .into_iter()
            .find(|c| !near.iter().any(|n| n == c))
            .unwrap()
            .to_string()
    }
}

/// The text of the first `<tag id="id">…</tag>` or the value of the hidden field `name`.
fn between<'a>(html: &'a str, start: &str, end: &str) -> &'a str {
    let from = html
        .find(start)
        .unwrap_or_else(|| panic!("no {start} in:\n{html}"))
        + start.len();
    let len = html[from..].find(end).unwrap();
    &html[from..from + len]
}

fn field<'a>(html: &'a str, name: &str) -> &'a str {
    between(html, &format!("name=\"{name}\" value=\""), "\"")
}

fn as_pairs<'a>(fields: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    fields.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The backup codes a page shows.
fn codes_on(html: &str) -> Vec<String> {
    html.split("<li><code>")
        .skip(1)
        .map(|s| s.split("</code>").next().unwrap().to_string())
        .collect()
}

/// The setup page's form, posted with the code `app` makes; the answer.
fn confirm(b: &mut Browser, gw: &Gateway, page: &str, code: &str) -> Resp {
    let fields = [
        ("csrf", field(page, "csrf")),
        ("rd", field(page, "rd")),
        ("enrolment", field(page, "enrolment")),
        ("code", code),
    ];
    b.post_form(&gw.url("/_portcullis/2fa/setup"), &fields)
}

/// Sets up two-step verification for the signed-in browser `b`; the app and backup codes.
fn enrol(b: &mut Browser, gw: &Gateway) -> (App, Vec<String>) {
    let page = b.get(&gw.url("/_portcullis/2fa/setup"));
    assert_eq!(page.status, 200, "{}", page.body);
    let mut app = App::new(between(&page.body, "<code id=\"secret\">", "</code>"));
    let done = confirm(b, gw, &page.body, &app.next());
    assert_eq!(done.status, 200, "{}", done.body);
    let codes = codes_on(&done.body);
    assert_eq!(codes.len(), 10, "{}", done.body);
    (app, codes)
}

/// The password step in the browser, "Stay signed in" or not; the answer.
fn password_step(b: &mut Browser, gw: &Gateway, remember: bool, rd: &str) -> Resp {
    b.login_form(gw, ALICE, PASSWORD, remember, rd)
}

/// Posts `code` to the second step with the form the 2fa page served.
fn second_step(b: &mut Browser, gw: &Gateway, code: &str) -> Resp {
    let page = b.get(&gw.url("/_portcullis/2fa?rd=%2Fportal"));
    assert_eq!(page.status, 200, "{}", page.body);
    let csrf = field(&page.body, "csrf").to_string();
    let rd = field(&page.body, "rd").to_string();
    b.post_form(
        &gw.url("/_portcullis/2fa"),
        &[("csrf", &csrf), ("rd", &rd), ("code", code)],
    )
}

fn sign_out(b: &mut Browser, gw: &Gateway) {
    let r = b.post_json(&gw.url("/_portcullis/api/logout"), &json!({}));
    assert!(r.status < 300, "{}", r.body);
    b.jar.clear();
}

fn api_login(b: &mut Browser, gw: &Gateway, body: Value) -> (u16, Value) {
    let r = b.post_json(&gw.url("/_portcullis/api/login"), &body);
    let json = r.json();
    (r.status, json)
}

fn events(gw: &Gateway, event: &str) -> Vec<Value> {
    let out = gw.cli(&["audit", "--json", "--event", event], None);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn details(gw: &Gateway, event: &str) -> Vec<String> {
    events(gw, event)
        .iter()
        .map(|e| e["detail"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn enrol_then_sign_in_with_a_code_once_and_with_backup_codes() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "audit:\n  file: events.jsonl\n");
    let mut b = Browser::new();
    b.sign_in(&gw, false);

    // The setup page: a QR code drawn here, the key in groups of four, the otpauth:// link.
    let page = b.get(&gw.url("/_portcullis/2fa/setup"));
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<svg") && !page.body.contains("<script"));
    let grouped = between(&page.body, "<code id=\"secret\">", "</code>").to_string();
    assert!(
        grouped.split(' ').all(|g| g.len() == 4) && grouped.len() >= 39,
        "{grouped}"
    );
    let uri = between(&page.body, "<code id=\"otpauth\">", "</code>").replace("&amp;", "&");
    let secret: String = grouped.split(' ').collect();
    assert_eq!(
        uri,
        format!("otpauth://totp/Portcullis:alice%40example.com?secret={secret}&issuer=Portcullis")
    );
    let mut app = App::new(&grouped);

    // A wrong first code changes nothing; the right one turns it on and shows the codes once.
    let wrong = confirm(&mut b, &gw, &page.body, &app.wrong());
    assert_eq!(wrong.status, 401);
    assert!(wrong.body.contains("Incorrect code"));
    assert_eq!(
        field(&wrong.body, "enrolment"),
        field(&page.body, "enrolment")
    );
    let done = confirm(&mut b, &gw, &page.body, &app.next());
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.body.contains("they are not shown again"));
    let codes = codes_on(&done.body);
    assert_eq!(codes.len(), 10);
    let alphabet = "abcdefghjkmnpqrstuvwxyz23456789";
    for c in &codes {
        let (a, z) = c.split_once('-').unwrap();
        assert!(a.len() == 5 && z.len() == 5, "{c}");
        assert!(
            a.chars().chain(z.chars()).all(|ch| alphabet.contains(ch)),
            "{c}"
        );
    }
    let status = b.get(&gw.url("/_portcullis/2fa/setup"));
    assert!(
        status.body.contains("You have 10 backup codes left"),
        "{}",
        status.body
    );
    sign_out(&mut b, &gw);

    // The password alone makes no session: a pending sign-in, then the code.
    let r = password_step(&mut b, &gw, true, "/portal");
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/_portcullis/2fa?rd=%2Fportal"));
    let pending = r
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("portcullis_session_pending="))
        .expect("a pending cookie")
        .to_string();
    assert!(
        pending.contains("HttpOnly") && pending.contains("Max-Age=300"),
        "{pending}"
    );
    assert!(b.session().is_none() && b.remember().is_none());
    assert_eq!(b.get(&gw.url("/portal")).status, 302, "no session yet");
    let form = b.get(&gw.url("/_portcullis/2fa?rd=%2Fportal"));
    assert!(
        form.body
            .contains("Enter the code from your authenticator app")
    );
    assert!(form.body.contains("autocomplete=\"one-time-code\""));
    assert!(form.body.contains("inputmode=\"numeric\""));
    assert!(form.body.contains("Use a backup code"));

    let r = second_step(&mut b, &gw, &app.wrong());
    assert_eq!(r.status, 401);
    assert!(r.body.contains("Incorrect code") && b.session().is_none());
    let code = app.next();
    let r = second_step(&mut b, &gw, &code);
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location"), Some("/portal"));
    assert!(b.session().is_some(), "signed in");
    assert!(
        b.remember().is_some(),
        "\"Stay signed in\" of the password step honoured"
    );
    assert!(!b.jar.contains_key("portcullis_session_pending"));
    assert_eq!(b.get(&gw.url("/portal")).echo()["path"], "/portal");

    // The session ends; the remember-me cookie renews it without asking again.
    b.jar.remove("portcullis_session");
    let renewed = b.get(&gw.url("/portal"));
    assert_eq!(renewed.echo()["path"], "/portal");
    assert!(b.session().is_some());
    sign_out(&mut b, &gw);

    // The same code again: refused as used, in its window.
    assert_eq!(password_step(&mut b, &gw, false, "/portal").status, 303);
    let r = second_step(&mut b, &gw, &code);
    assert_eq!(r.status, 401);
    assert!(
        r.body
            .contains("This code has already been used. Wait for the next one"),
        "{}",
        r.body
    );
    assert!(b.session().is_none());

    // A backup code instead: once.
    let backup_form = b.get(&gw.url("/_portcullis/2fa?backup=1&rd=%2Fportal"));
    assert!(backup_form.body.contains("placeholder=\"xxxxx-xxxxx\""));
    let r = second_step(&mut b, &gw, &codes[3].to_uppercase());
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(b.session().is_some());
    let status = b.get(&gw.url("/_portcullis/2fa/setup"));
    assert!(
        status.body.contains("You have 9 backup codes left"),
        "{}",
        status.body
    );

    // A new set replaces the old, after the password again.
    let csrf = field(&status.body, "csrf").to_string();
    let codes_form = |password: &str| {
        vec![
            ("csrf", csrf.clone()),
            ("rd", "/".to_string()),
            ("action", "codes".to_string()),
            ("password", password.to_string()),
        ]
    };
    let url = gw.url("/_portcullis/2fa/setup");
    for password in ["", "wrong password"] {
        let refused = b.post_form(&url, &as_pairs(&codes_form(password)));
        assert_eq!(refused.status, 401, "{}", refused.body);
        assert!(refused.body.contains("Incorrect password") && codes_on(&refused.body).is_empty());
    }
    let fresh = b.post_form(&url, &as_pairs(&codes_form(PASSWORD)));
    let new_codes = codes_on(&fresh.body);
    assert_eq!(new_codes.len(), 10);
    assert!(new_codes.iter().all(|c| !codes.contains(c)));
    sign_out(&mut b, &gw);
    for (old, expected) in [(&codes[3], 401), (&codes[4], 401), (&new_codes[0], 303)] {
        assert_eq!(password_step(&mut b, &gw, false, "/").status, 303);
        let r = second_step(&mut b, &gw, old);
        assert_eq!(r.status, expected, "{old}: {}", r.body);
        b.jar.clear();
    }

    // Events and metrics.
    assert_eq!(events(&gw, "two_factor_enrolled").len(), 1);
    let successes = details(&gw, "login_success");
    for d in [
        "password",
        "password+totp",
        "remember_me",
        "password+backup_code",
    ] {
        assert!(successes.iter().any(|s| s == d), "{d} in {successes:?}");
    }
    let failures = details(&gw, "two_factor_failure");
    assert!(failures.iter().any(|d| d == "wrong") && failures.iter().any(|d| d == "replay"));
    assert_eq!(details(&gw, "backup_code_used")[0], "9 left");
    assert_eq!(events(&gw, "backup_codes_regenerated").len(), 1);
    let wrong = details(&gw, "login_failure");
    assert_eq!(
        wrong.iter().filter(|d| *d == "wrong_password").count(),
        2,
        "{wrong:?}"
    );
    let m = |r: &str| gw.metric(&format!("portcullis_two_factor_total{{result=\"{r}\"}}"));
    // Failures: a wrong code at setup and at sign-in, two old backup codes.
    let counts = [m("success"), m("replay"), m("backup_code"), m("failure")];
    assert_eq!(counts, [2.0, 1.0, 2.0, 4.0]);
    let attempts = |r: &str| {
        gw.metric(&format!(
            "portcullis_login_attempts_total{{result=\"{r}\"}}"
        ))
    };
    assert_eq!(
        attempts("invalid_code"),
        4.0,
        "a wrong code, a replay, two old backup codes"
    );
    assert_eq!(
        attempts("two_factor_required"),
        5.0,
        "each password step after setup"
    );

    // Neither the key nor any code is kept in clear: the store file and its WAL, the logs,
    // the event file.
    let raw_key = base32_decode(&secret);
    let db = gw.db_bytes();
    let mut clear: Vec<String> = vec![secret.clone(), grouped.clone(), code.clone(), uri.clone()];
    clear.extend(codes.iter().chain(&new_codes).cloned());
    let texts = [
        String::from_utf8_lossy(&db).into_owned(),
        without_timestamps(&gw.logs()),
        std::fs::read_to_string(gw.dir.path().join("events.jsonl")).unwrap(),
    ];
    for needle in &clear {
        for (text, place) in texts.iter().zip(["store", "logs", "events"]) {
            assert!(!text.contains(needle.as_str()), "{needle} in the {place}");
        }
    }
    assert!(
        !db.windows(raw_key.len()).any(|w| w == raw_key),
        "raw key in the store"
    );
    assert!(!gw.logs().contains(&secret.to_lowercase()));
}

/// Log lines without their leading timestamp (whose microseconds could read as a code).
fn without_timestamps(logs: &str) -> String {
    logs.lines()
        .map(|l| match l.split_once(' ') {
            Some((ts, rest)) if ts.starts_with("20") && ts.ends_with('Z') => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// RFC 4648 base32, as authenticator apps read the key.
fn base32_decode(text: &str) -> Vec<u8> {
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bits = 0u64;
    let mut n = 0;
    let mut out = Vec::new();
    for c in text.trim_end_matches('=').chars() {
        bits = (bits << 5) | alphabet.find(c).expect("base32") as u64;
        n += 5;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

#[test]
fn required_groups_lead_to_setup_before_any_session() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "two_factor:\n  required_groups: [OPS]\n");
    gw.add_user("bob@example.com", "bob@example.com", "Bob", &["staff"]);

    // bob is not in the group: the password is enough.
    let mut bob = Browser::new();
    let r = bob.login_form(&gw, "bob@example.com", PASSWORD, false, "/");
    assert_eq!(r.status, 303);
    assert!(bob.session().is_some());

    // alice is: straight to setup, no session until it is done, by any route.
    let mut b = Browser::new();
    let r = password_step(&mut b, &gw, true, "/portal");
    assert_eq!(r.status, 303);
    assert_eq!(
        r.header("location"),
        Some("/_portcullis/2fa/setup?rd=%2Fportal")
    );
    assert!(b.session().is_none() && b.remember().is_none());
    assert_eq!(b.get(&gw.url("/portal")).status, 302);
    assert_eq!(
        b.get(&gw.url("/_portcullis/2fa")).status,
        302,
        "not the code step"
    );
    let (status, body) = api_login(
        &mut Browser::new(),
        &gw,
        json!({"login": ALICE, "password": PASSWORD}),
    );
    assert_eq!(
        (status, body),
        (403, json!({"error": "two_factor_setup_required"}))
    );

    let page = b.get(&gw.url("/_portcullis/2fa/setup?rd=%2Fportal"));
    assert!(
        page.body
            .contains("Set up two-step verification to continue"),
        "{}",
        page.body
    );
    let mut app = App::new(between(&page.body, "<code id=\"secret\">", "</code>"));
    let wrong = confirm(&mut b, &gw, &page.body, &app.wrong());
    assert_eq!(wrong.status, 401);
    assert!(b.session().is_none());
    let done = confirm(&mut b, &gw, &page.body, &app.next());
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(codes_on(&done.body).len(), 10);
    assert!(done.body.contains("href=\"/portal\""));
    assert!(b.session().is_some() && b.remember().is_some());
    assert_eq!(b.get(&gw.url("/portal")).echo()["path"], "/portal");

    // The enrolment form cannot be posted again from the pending sign-in to get a second
    // session; from now on the code is asked.
    sign_out(&mut b, &gw);
    assert_eq!(
        password_step(&mut b, &gw, false, "/").header("location"),
        Some("/_portcullis/2fa?rd=%2F")
    );
    let r = second_step(&mut b, &gw, &app.next());
    assert_eq!(r.status, 303);
    assert_eq!(
        details(&gw, "login_success")
            .iter()
            .filter(|d| *d == "password+totp")
            .count(),
        2
    );
}

#[test]
fn the_api_asks_for_the_code_and_wrong_codes_lock_the_login() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "throttle:\n  lock_after: 4\n  lock_duration: 1m\n");
    gw.add_user("bob@example.com", "bob@example.com", "Bob", &["staff"]);
    let mut b = Browser::new();
    b.sign_in(&gw, false);
    let (mut app, _) = enrol(&mut b, &gw);

    let mut api = Browser::new();
    let login = |code: Option<&str>, password: &str| {
        let mut body = json!({"login": ALICE, "password": password});
        if let Some(c) = code {
            body["code"] = json!(c);
        }
        body
    };
    assert_eq!(
        api_login(&mut api, &gw, login(None, PASSWORD)),
        (401, json!({"error": "two_factor_required"}))
    );
    // A wrong password says the same with a code or without, enrolled or not.
    let bob = json!({"login": "bob@example.com", "password": "wrong password", "code": "123456"});
    for body in [
        login(Some(&app.wrong()), "wrong password"),
        login(None, "nope"),
        bob,
    ] {
        assert_eq!(
            api_login(&mut api, &gw, body),
            (401, json!({"error": "invalid_credentials"}))
        );
    }
    assert_eq!(
        api_login(&mut api, &gw, login(Some(&app.wrong()), PASSWORD)),
        (401, json!({"error": "invalid_code"}))
    );
    let (status, body) = api_login(&mut api, &gw, login(Some(&app.next()), PASSWORD));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"], ALICE);
    let replayed = app.last_code();
    assert_eq!(
        api_login(&mut Browser::new(), &gw, login(Some(&replayed), PASSWORD)),
        (401, json!({"error": "invalid_code"}))
    );

    // Four wrong codes in a row (the replay was one; the success before reset the count)
    // lock the login: the right code too is refused then, in the API and in the browser.
    for _ in 0..3 {
        let (status, _) = api_login(&mut api, &gw, login(Some(&app.wrong()), PASSWORD));
        assert_eq!(status, 401);
    }
    let (status, body) = api_login(&mut api, &gw, login(Some(&app.next()), PASSWORD));
    assert_eq!((status, &body["error"]), (423, &json!("locked")), "{body}");
    let mut browser = Browser::new();
    let r = password_step(&mut browser, &gw, false, "/");
    assert_eq!(r.status, 423, "{}", r.body);
    assert!(browser.session().is_none());
    assert_eq!(events(&gw, "account_locked").len(), 1);
}

#[test]
fn the_second_step_counts_against_the_address_budget() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "throttle:\n  ip_attempts_per_minute: 4\n");
    let mut b = Browser::new();
    b.sign_in(&gw, false);
    let (app, _) = enrol(&mut b, &gw);

    // From another address: the password (1), wrong codes (2, 3, 4), then throttled, even
    // for the pending sign-in the password step made.
    let mut guesser = Browser::from_ip("127.0.0.77");
    assert_eq!(password_step(&mut guesser, &gw, false, "/").status, 303);
    for _ in 0..3 {
        assert_eq!(second_step(&mut guesser, &gw, &app.wrong()).status, 401);
    }
    let r = second_step(&mut guesser, &gw, &app.wrong());
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.header("retry-after").is_some());
    assert!(guesser.session().is_none());

    // Without the pending sign-in, the second step leads back to the login page: it tells
    // nobody anything about a password.
    let mut stranger = Browser::from_ip("127.0.0.78");
    let r = stranger.get(&gw.url("/_portcullis/2fa"));
    assert_eq!(r.status, 302);
    assert!(
        r.header("location")
            .unwrap()
            .starts_with("/_portcullis/login")
    );
    let mut forged = Browser::from_ip("127.0.0.78");
    forged.jar.insert(
        "portcullis_session_pending".into(),
        "eyJ1c2VyX2lkIjoxfQ.AAAA".into(),
    );
    assert_eq!(forged.get(&gw.url("/_portcullis/2fa")).status, 302);
    assert_eq!(forged.get(&gw.url("/_portcullis/2fa/setup")).status, 302);
}

fn cli_ok(gw: &Gateway, args: &[&str]) -> String {
    let out = gw.cli(args, None);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_administrator_resets_and_turns_it_off_for_a_while() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "");
    let status = cli_ok(&gw, &["user", "2fa", ALICE, "status"]);
    assert!(status.contains("enrolled:       no"), "{status}");
    let out = gw.cli(&["user", "2fa", ALICE, "disable", "--for", "1h"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no two-step verification"));

    let mut b = Browser::new();
    b.sign_in(&gw, false);
    let (mut app, _) = enrol(&mut b, &gw);
    let mut signed = Browser::new();
    assert_eq!(password_step(&mut signed, &gw, true, "/").status, 303);
    assert_eq!(second_step(&mut signed, &gw, &app.next()).status, 303);
    assert!(signed.session().is_some() && signed.remember().is_some());
    let status = cli_ok(&gw, &["user", "2fa", ALICE, "status"]);
    assert!(
        status.contains("enrolled:       yes") && status.contains("backup codes:   10"),
        "{status}"
    );

    // reset: the factor, the codes, every session and remember-me token go, within 2 s.
    cli_ok(&gw, &["user", "2fa", ALICE, "reset"]);
    let ended = within(Duration::from_secs(2), || {
        signed.api_get(&gw.url("/")).status == 401
    });
    assert!(
        ended.is_some(),
        "a session (or its remember-me token) outlived the reset by 2 s"
    );
    assert_eq!(b.api_get(&gw.url("/")).status, 401);
    assert!(cli_ok(&gw, &["user", "2fa", ALICE, "status"]).contains("enrolled:       no"));
    assert_eq!(events(&gw, "two_factor_reset").len(), 1);
    assert!(details(&gw, "sessions_revoked").contains(&"two-step verification reset".to_string()));

    // The password alone now; set up again (a new phone).
    let mut again = Browser::new();
    again.sign_in(&gw, false);
    let (mut app, _) = enrol(&mut again, &gw);

    // disable --for 2s: the password alone, then the kept factor is asked again by itself.
    let off = cli_ok(&gw, &["user", "2fa", ALICE, "disable", "--for", "2s"]);
    assert!(off.contains("is off until"), "{off}");
    assert!(cli_ok(&gw, &["user", "2fa", ALICE, "status"]).contains("turned off:     until"));
    let mut quick = Browser::new();
    assert_eq!(
        password_step(&mut quick, &gw, false, "/").header("location"),
        Some("/")
    );
    assert!(quick.session().is_some());
    let over = within(Duration::from_secs(5), || {
        cli_ok(&gw, &["user", "2fa", ALICE, "status"]).contains("turned off:     no")
    });
    assert!(over.is_some(), "the turn-off did not end");
    let mut later = Browser::new();
    let r = password_step(&mut later, &gw, false, "/");
    assert_eq!(r.header("location"), Some("/_portcullis/2fa?rd=%2F"));
    assert_eq!(second_step(&mut later, &gw, &app.next()).status, 303);
    let disabled = details(&gw, "two_factor_disabled");
    assert!(
        disabled.len() == 1 && disabled[0].starts_with("until "),
        "{disabled:?}"
    );
}

/// Runs `serve` on `gw`'s config, expecting it to refuse to start; its error output.
fn refused_start(gw: &Gateway) -> String {
    let mut child = Command::new(BIN)
        .args(["serve", "-c"])
        .arg(&gw.config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let exited = within(Duration::from_secs(20), || {
        child.try_wait().unwrap().is_some()
    });
    if exited.is_none() {
        let _ = child.kill();
        panic!("the gateway started");
    }
    let out = child.wait_with_output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_key_file_is_made_private_and_never_silently_replaced() {
    let up = Upstream::start();
    let mut gw = Gateway::start(up.addr, "");
    let key = gw.dir.path().join("data/secret.key");
    let meta = std::fs::metadata(&key).expect("made at first start");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.len(), 32);

    // Another key file on the same store (a second gateway the file was not copied to):
    // refused even before anyone has set up a factor, and no file is left behind.
    gw.terminate();
    gw.rewrite("two_factor:\n  secret_key_file: other.key\n");
    let err = refused_start(&gw);
    assert!(
        err.contains("is not the key file of the gateway that first used this store"),
        "{err}"
    );
    assert!(!gw.dir.path().join("other.key").exists());
    gw.rewrite("");
    gw.restart();

    let mut b = Browser::new();
    b.sign_in(&gw, false);
    let (mut app, _) = enrol(&mut b, &gw);
    gw.terminate();

    // Missing (with secrets in the store), another key, a damaged one: a clear start-up error.
    let kept = std::fs::read(&key).unwrap();
    std::fs::remove_file(&key).unwrap();
    let err = refused_start(&gw);
    assert!(
        err.contains("secret_key_file") && err.contains("is missing"),
        "{err}"
    );
    assert!(!key.exists(), "no new key made over the old secrets");
    std::fs::write(&key, [7u8; 32]).unwrap();
    let err = refused_start(&gw);
    assert!(err.contains("does not open the two-step secrets"), "{err}");
    std::fs::write(&key, &kept[..16]).unwrap();
    let err = refused_start(&gw);
    assert!(err.contains("must hold 32 bytes"), "{err}");

    // The right key back: the codes work again.
    std::fs::write(&key, &kept).unwrap();
    gw.restart();
    let mut b = Browser::new();
    assert_eq!(password_step(&mut b, &gw, false, "/").status, 303);
    assert_eq!(second_step(&mut b, &gw, &app.next()).status, 303);
}

#[test]
fn two_gateways_on_one_postgres_refuse_a_code_replayed_on_the_other() {
    let up = Upstream::start();
    let Some(server) = pg::server() else {
        return;
    };
    let db = pg::Database::create(&server);
    let store = format!("store:\n  kind: postgres\n  url: {}\n", db.url);
    let a = Gateway::start_on_store(up.addr, &store, "", true);
    let key = a.dir.path().join("data/secret.key");
    let shared = format!("two_factor:\n  secret_key_file: {}\n", key.display());
    let b_gw = Gateway::start_on_store(up.addr, &store, &shared, false);

    let mut b = Browser::new();
    b.sign_in(&a, false);
    let (mut app, _) = enrol(&mut b, &a);
    let code = app.next();
    let mut on_a = Browser::new();
    assert_eq!(password_step(&mut on_a, &a, false, "/").status, 303);
    assert_eq!(second_step(&mut on_a, &a, &code).status, 303);

    // The same code on the other gateway: refused as used.
    let mut on_b = Browser::new();
    assert_eq!(password_step(&mut on_b, &b_gw, false, "/").status, 303);
    let r = second_step(&mut on_b, &b_gw, &code);
    assert_eq!(r.status, 401);
    assert!(
        r.body.contains("This code has already been used"),
        "{}",
        r.body
    );
    let (status, body) = api_login(
        &mut Browser::new(),
        &b_gw,
        json!({"login": ALICE, "password": PASSWORD, "code": code}),
    );
    assert_eq!((status, body), (401, json!({"error": "invalid_code"})));
    // The next code works there: both gateways read the same key.
    assert_eq!(second_step(&mut on_b, &b_gw, &app.next()).status, 303);
    assert!(on_b.session().is_some());

    // Both racing with one fresh code: exactly one wins.
    let code = app.next();
    let mut pair = [Browser::new(), Browser::new()];
    assert_eq!(password_step(&mut pair[0], &a, false, "/").status, 303);
    assert_eq!(password_step(&mut pair[1], &b_gw, false, "/").status, 303);
    let [p, q] = &mut pair;
    let won = std::thread::scope(|s| {
        let x = s.spawn(|| second_step(p, &a, &code).status);
        let y = s.spawn(|| second_step(q, &b_gw, &code).status);
        [x.join().unwrap(), y.join().unwrap()]
    });
    let mut sorted = won;
    sorted.sort();
    assert_eq!(sorted, [303, 401], "{won:?}");
}

#[test]
fn a_remember_me_token_does_not_skip_a_setup_that_became_required() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "");
    let mut b = Browser::new();
    b.sign_in(&gw, true);
    b.jar.remove("portcullis_session");
    assert_eq!(
        b.get(&gw.url("/")).status,
        200,
        "renewed while not required"
    );

    gw.rewrite("two_factor:\n  required_groups: [ops]\n");
    gw.sighup();
    let reloaded = within(Duration::from_secs(5), || {
        gw.metric("portcullis_config_reloads_total{result=\"ok\"}") >= 1.0
    });
    assert!(reloaded.is_some());
    b.jar.remove("portcullis_session");
    let r = b.get(&gw.url("/"));
    assert_eq!(
        r.status, 302,
        "a remember-me cookie renewed a session that needs setup first"
    );
    assert!(b.session().is_none() && b.remember().is_none());
    let r = password_step(&mut b, &gw, true, "/");
    assert_eq!(r.header("location"), Some("/_portcullis/2fa/setup?rd=%2F"));
}

#[test]
fn a_new_phone_needs_the_password_again_and_the_old_one_stops_working() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "");
    let mut b = Browser::new();
    b.sign_in(&gw, false);
    let (mut old_app, _) = enrol(&mut b, &gw);
    let page = b.get(&gw.url("/_portcullis/2fa/setup?new=1"));
    assert!(
        page.body.contains("autocomplete=\"current-password\""),
        "{}",
        page.body
    );
    let mut new_app = App::new(between(&page.body, "<code id=\"secret\">", "</code>"));
    let post = |b: &mut Browser, password: &str, code: &str| {
        let fields = [
            ("csrf", field(&page.body, "csrf")),
            ("rd", "/"),
            ("enrolment", field(&page.body, "enrolment")),
            ("password", password),
            ("code", code),
        ];
        b.post_form(&gw.url("/_portcullis/2fa/setup"), &fields)
    };
    // A session alone (stolen, or a computer left signed in) cannot move the factor.
    let refused = post(&mut b, "not the password", &new_app.next());
    assert_eq!(refused.status, 401);
    assert!(refused.body.contains("Incorrect password"));
    assert_eq!(
        field(&refused.body, "enrolment"),
        field(&page.body, "enrolment")
    );
    let moved = post(&mut b, PASSWORD, &new_app.next());
    assert_eq!(moved.status, 200, "{}", moved.body);
    assert_eq!(codes_on(&moved.body).len(), 10);
    // The same form again: refused (it is the factor already).
    let again = post(&mut b, PASSWORD, &new_app.next());
    assert_eq!(again.status, 401);
    assert_eq!(events(&gw, "two_factor_enrolled").len(), 2);

    let mut signing = Browser::new();
    assert_eq!(password_step(&mut signing, &gw, false, "/").status, 303);
    let r = second_step(&mut signing, &gw, &old_app.next());
    assert_eq!(r.status, 401, "the old phone's code");
    assert_eq!(second_step(&mut signing, &gw, &new_app.next()).status, 303);
}

#[test]
fn a_pending_sign_in_ends_with_a_reset_a_new_password_or_a_sign_out() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "");
    let mut b = Browser::new();
    b.sign_in(&gw, false);
    let (mut app, _) = enrol(&mut b, &gw);

    // The factor reset meanwhile: back to the password, which alone is enough now.
    let mut pending = Browser::new();
    assert_eq!(password_step(&mut pending, &gw, false, "/").status, 303);
    let page = pending.get(&gw.url("/_portcullis/2fa?rd=%2F"));
    cli_ok(&gw, &["user", "2fa", ALICE, "reset"]);
    let r = pending.post_form(
        &gw.url("/_portcullis/2fa"),
        &[
            ("csrf", field(&page.body, "csrf")),
            ("rd", "/"),
            ("code", &app.next()),
        ],
    );
    assert_eq!(r.status, 303);
    assert!(
        r.header("location")
            .unwrap()
            .starts_with("/_portcullis/login"),
        "{r:?}"
    );
    assert!(pending.session().is_none());
    assert!(!pending.jar.contains_key("portcullis_session_pending"));

    // A new password meanwhile: the pending sign-in of the old one is over.
    let mut b = Browser::new();
    b.sign_in(&gw, false);
    let (mut app, _) = enrol(&mut b, &gw);
    let mut pending = Browser::new();
    assert_eq!(password_step(&mut pending, &gw, false, "/").status, 303);
    let out = gw.cli(
        &["user", "set-password", ALICE, "--password-stdin"],
        Some(PASSWORD),
    );
    assert!(out.status.success());
    let r = second_step(&mut pending, &gw, &app.next());
    assert_eq!(r.status, 303);
    assert!(
        r.header("location")
            .unwrap()
            .starts_with("/_portcullis/login")
    );
    assert!(pending.session().is_none());

    // Signing out ends a pending sign-in too (a shared computer).
    let mut shared = Browser::new();
    assert_eq!(password_step(&mut shared, &gw, false, "/").status, 303);
    let r = shared.post_json(&gw.url("/_portcullis/api/logout"), &json!({}));
    let cleared = r
        .set_cookies()
        .iter()
        .any(|c| c.starts_with("portcullis_session_pending=") && c.contains("Max-Age=0"));
    assert!(cleared, "{:?}", r.set_cookies());
}

#[test]
fn remember_me_made_with_the_password_alone_does_not_outlive_the_factor() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "");
    // Ticked before the factor was set up: it renews no session once the factor is on.
    let mut b = Browser::new();
    b.sign_in(&gw, true);
    let (mut app, _) = enrol(&mut b, &gw);
    b.jar.remove("portcullis_session");
    assert_eq!(
        b.get(&gw.url("/")).status,
        302,
        "a password-only token renewed a session"
    );

    // Ticked while an administrator had turned the factor off: good until the turn-off ends.
    cli_ok(&gw, &["user", "2fa", ALICE, "disable", "--for", "3s"]);
    let mut during = Browser::new();
    during.sign_in(&gw, true);
    during.jar.remove("portcullis_session");
    assert_eq!(
        during.get(&gw.url("/")).status,
        200,
        "renewed during the turn-off"
    );
    let over = within(Duration::from_secs(6), || {
        cli_ok(&gw, &["user", "2fa", ALICE, "status"]).contains("turned off:     no")
    });
    assert!(over.is_some());
    during.jar.remove("portcullis_session");
    assert_eq!(during.get(&gw.url("/")).status, 302);

    // Ticked at a sign-in with the code: renews.
    let mut with_code = Browser::new();
    assert_eq!(password_step(&mut with_code, &gw, true, "/").status, 303);
    assert_eq!(second_step(&mut with_code, &gw, &app.next()).status, 303);
    with_code.jar.remove("portcullis_session");
    assert_eq!(with_code.get(&gw.url("/")).status, 200);
}

/// The account page turns two-step verification off with the password and a code, where the
/// user's groups do not require it; every other device is signed out.
#[test]
fn the_account_page_turns_it_off_with_the_password_and_a_code_unless_required() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "two_factor:\n  required_groups: [admins]\n");
    let mut b = Browser::from_ip("127.0.0.131");
    b.sign_in(&gw, false);
    let (mut app, _) = enrol(&mut b, &gw);
    let mut other = Browser::from_ip("127.0.0.132");
    assert_eq!(password_step(&mut other, &gw, false, "/").status, 303);
    assert_eq!(second_step(&mut other, &gw, &app.next()).status, 303);
    assert_eq!(other.get(&gw.url("/page")).status, 200);

    let off = |b: &mut Browser, current: &str, code: &str| {
        let page = b.get(&gw.url("/_portcullis/account"));
        assert!(
            page.body.contains("Turn off two-step verification"),
            "{}",
            page.body
        );
        let csrf = field(&page.body, "csrf").to_string();
        let fields = [
            ("csrf", csrf.as_str()),
            ("action", "two_factor_off"),
            ("current", current),
            ("code", code),
        ];
        b.post_form(&gw.url("/_portcullis/account"), &fields)
    };
    assert_eq!(off(&mut b, "wrong password", &app.next()).status, 401);
    let r = off(&mut b, PASSWORD, &app.wrong());
    assert_eq!(r.status, 401);
    assert!(r.body.contains("Incorrect code"));
    let r = off(&mut b, PASSWORD, &app.next());
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(b.get(&gw.url("/page")).status, 200, "this device stays");
    let gone = within(Duration::from_secs(2), || {
        other.get(&gw.url("/page")).status == 302
    });
    assert!(gone.is_some(), "the other device is signed out");
    let mut again = Browser::from_ip("127.0.0.133");
    assert_eq!(password_step(&mut again, &gw, false, "/").status, 303);
    assert_eq!(
        again.get(&gw.url("/page")).status,
        200,
        "the password alone now"
    );
    assert!(details(&gw, "two_factor_disabled").contains(&"by the user".to_string()));

    // Required by the user's groups: not offered, and refused when posted anyway.
    cli_ok(&gw, &["user", "edit", ALICE, "--group", "admins"]);
    let mut admin = Browser::from_ip("127.0.0.134");
    assert_eq!(password_step(&mut admin, &gw, false, "/").status, 303);
    let page = admin.get(&gw.url("/_portcullis/2fa/setup"));
    let mut app = App::new(between(&page.body, "<code id=\"secret\">", "</code>"));
    assert_eq!(
        confirm(&mut admin, &gw, &page.body, &app.next()).status,
        200
    );
    let page = admin.get(&gw.url("/_portcullis/account"));
    assert!(
        page.body.contains("Your groups require it"),
        "{}",
        page.body
    );
    let csrf = field(&page.body, "csrf").to_string();
    let fields = [
        ("csrf", csrf.as_str()),
        ("action", "two_factor_off"),
        ("current", PASSWORD),
        ("code", &app.next()),
    ];
    let r = admin.post_form(&gw.url("/_portcullis/account"), &fields);
    assert_eq!(r.status, 403);
    // An administrator's timed turn-off shows on the page.
    cli_ok(&gw, &["user", "2fa", ALICE, "disable", "--for", "1h"]);
    let page = admin.get(&gw.url("/_portcullis/account"));
    assert!(
        page.body.contains("Turned off by an administrator until"),
        "{}",
        page.body
    );
}
