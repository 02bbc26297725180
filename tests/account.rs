//! The account page (SPEC §14) with the real binary: a user's sessions from three browsers on
//! two gateways of one store, ending one, ending all, another user's handle, a new password,
//! the JSON API, and cross-site posts.

mod common;

use std::time::Duration;

use common::smtp::Smtp;
use common::*;
use serde_json::json;

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0";
const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1";
const NEW_PASSWORD: &str = "another fine passphrase";

/// The account page's CSRF token (the session's).
fn page_csrf(page: &str) -> String {
    page.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a CSRF field")
        .to_string()
}

fn account(b: &mut Browser, gw: &Gateway) -> Resp {
    b.get(&gw.url("/_portcullis/account"))
}

fn post_account(b: &mut Browser, gw: &Gateway, fields: &[(&str, &str)]) -> Resp {
    let page = account(b, gw);
    assert_eq!(page.status, 200, "{}", page.body);
    let csrf = page_csrf(&page.body);
    let mut all = vec![("csrf", csrf.as_str())];
    all.extend_from_slice(fields);
    b.post_form(&gw.url("/_portcullis/account"), &all)
}

/// Waits at most 2 s for `b`'s session to be refused on `url`.
fn ends_within_2s(b: &mut Browser, url: &str) -> bool {
    within(Duration::from_secs(2), || b.get(url).status == 302).is_some()
}

fn sessions_json(b: &mut Browser, gw: &Gateway) -> Vec<serde_json::Value> {
    let r = b.api_get(&gw.url("/_portcullis/api/account/sessions"));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["sessions"].as_array().unwrap().clone()
}

#[test]
fn sessions_are_listed_and_ended_one_by_one_or_all_at_once_on_every_gateway() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "");
    let second = Gateway::start_sharing(&gw, up.addr);
    let mut laptop = Browser::with_agent("127.0.0.91", FIREFOX);
    laptop.sign_in(&gw, true);
    let mut desktop = Browser::with_agent("127.0.0.92", CHROME);
    desktop.sign_in(&gw, false);
    let mut phone = Browser::with_agent("127.0.0.93", IPHONE);
    phone.sign_in(&second, false);

    let page = account(&mut laptop, &gw);
    assert_eq!(page.status, 200);
    for shown in [
        "Firefox 121 on Linux",
        "Chrome 120 on Windows",
        "Safari 17 on iOS",
        "127.0.0.91",
        "127.0.0.92",
        "127.0.0.93",
        "Alice Liddell",
        "staff, ops",
    ] {
        assert!(page.body.contains(shown), "{shown} on the page");
    }
    assert_eq!(page.body.matches("This device").count(), 1);
    let this = page.body.find("This device").unwrap();
    let firefox = page.body.find("Firefox 121 on Linux").unwrap();
    assert!(
        firefox < this && this - firefox < 100,
        "This device is the laptop"
    );
    // Recent sign-ins: three of them, with their addresses.
    let activity = &page.body[page.body.find("id=\"activity\"").unwrap()..];
    assert_eq!(activity.matches("Signed in").count(), 3);

    let list = sessions_json(&mut laptop, &gw);
    assert_eq!(list.len(), 3);
    let by_ip = |ip: &str| list.iter().find(|s| s["ip"] == ip).unwrap().clone();
    assert_eq!(by_ip("127.0.0.91")["this_device"], true);
    assert_eq!(by_ip("127.0.0.93")["device"], "Safari 17 on iOS");
    let desktop_id = by_ip("127.0.0.92")["id"].as_str().unwrap().to_string();
    assert_eq!(desktop_id.len(), 16);
    for s in &list {
        let id = s["id"].as_str().unwrap();
        for secret in [laptop.session(), desktop.session(), phone.session()] {
            assert!(!secret.unwrap().contains(id), "a handle is not the token");
        }
    }

    // Another user's handles end nothing, by the form or the API.
    gw.add_user("bob", "bob@example.com", "Bob", &["staff"]);
    let mut bob = Browser::with_agent("127.0.0.94", FIREFOX);
    let r = bob.login_form(&gw, "bob", PASSWORD, false, "/");
    assert_eq!(r.status, 303);
    let bobs = sessions_json(&mut bob, &gw)[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = laptop.send(
        laptop
            .request(
                "DELETE",
                &gw.url(&format!("/_portcullis/api/account/sessions/{bobs}")),
            )
            .header("Accept", "application/json"),
    );
    assert_eq!(r.status, 404);
    post_account(&mut laptop, &gw, &[("action", "end"), ("session", &bobs)]);
    assert_eq!(
        bob.get(&gw.url("/page")).status,
        200,
        "bob is still signed in"
    );

    // Cross-site, or without the token: refused, nothing ends.
    let csrf = page_csrf(&account(&mut laptop, &gw).body);
    let forged = [
        (None, "logout_all", ""),
        (Some("http://evil.example"), "logout_all", csrf.as_str()),
        (None, "logout_all", "not-the-token"),
    ];
    for (origin, action, token) in forged {
        let mut req = laptop
            .request("POST", &gw.url("/_portcullis/account"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(format!("action={action}&csrf={token}"));
        if let Some(o) = origin {
            req = req.header("Origin", o);
        }
        assert_eq!(laptop.send(req).status, 403, "{origin:?} {token:?}");
    }
    let r = laptop.send(
        laptop
            .request(
                "DELETE",
                &gw.url(&format!("/_portcullis/api/account/sessions/{desktop_id}")),
            )
            .header("Origin", "http://evil.example"),
    );
    assert_eq!(r.status, 403);
    let r = laptop.post_form(&gw.url("/_portcullis/api/account/logout-all"), &[]);
    assert_eq!(r.status, 415, "a form cannot reach the API");
    assert_eq!(desktop.get(&gw.url("/page")).status, 200);

    // End one: only that one.
    let r = post_account(
        &mut laptop,
        &gw,
        &[("action", "end"), ("session", &desktop_id)],
    );
    assert_eq!(r.status, 303);
    assert!(ends_within_2s(&mut desktop, &gw.url("/page")));
    assert_eq!(phone.get(&second.url("/page")).status, 200);
    assert_eq!(laptop.get(&gw.url("/page")).status, 200);
    assert_eq!(r.header("location"), Some("/_portcullis/account?ended=1"));
    let after = laptop.get(&gw.url("/_portcullis/account?ended=1"));
    assert!(after.body.contains("The session has ended"));
    assert_eq!(after.body.matches("class=\"session\"").count(), 2);

    // All of them, the remember-me token too, on both gateways.
    let remember_only = {
        let mut b = Browser::with_agent("127.0.0.91", FIREFOX);
        b.jar.insert(
            "portcullis_session_remember".into(),
            laptop.remember().unwrap(),
        );
        b
    };
    let r = post_account(&mut laptop, &gw, &[("action", "logout_all")]);
    assert_eq!(r.status, 303);
    assert_eq!(
        r.header("location"),
        Some("/_portcullis/login?signed_out=1")
    );
    let mut laptop_after = Browser::with_agent("127.0.0.91", FIREFOX);
    laptop_after.jar = laptop.jar.clone();
    for (mut b, url) in [
        (phone, second.url("/page")),
        (remember_only, gw.url("/page")),
        (laptop_after, gw.url("/page")),
    ] {
        assert!(ends_within_2s(&mut b, &url), "{url}");
    }
}

#[test]
fn a_new_password_ends_the_other_sessions_and_keeps_this_one() {
    let smtp = Smtp::start();
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, &smtp.yaml());
    let mut here = Browser::with_agent("127.0.0.95", FIREFOX);
    here.sign_in(&gw, false);
    let mut there = Browser::with_agent("127.0.0.96", CHROME);
    there.sign_in(&gw, true);

    let cases = [
        (
            "wrong current",
            NEW_PASSWORD,
            NEW_PASSWORD,
            401,
            "Incorrect password",
        ),
        (
            PASSWORD,
            NEW_PASSWORD,
            "a different one",
            400,
            "Passwords do not match",
        ),
        (
            PASSWORD,
            "short",
            "short",
            400,
            "Password must be at least 8 characters",
        ),
    ];
    for (current, new, again, status, message) in cases {
        let r = post_account(
            &mut here,
            &gw,
            &[
                ("action", "password"),
                ("current", current),
                ("password", new),
                ("password2", again),
            ],
        );
        assert_eq!(r.status, status, "{current} {new} {again}");
        assert!(r.body.contains(message), "{message}");
    }
    let before = here.session().unwrap();
    let there_remember = there.remember().unwrap();
    let r = post_account(
        &mut here,
        &gw,
        &[
            ("action", "password"),
            ("current", PASSWORD),
            ("password", NEW_PASSWORD),
            ("password2", NEW_PASSWORD),
        ],
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert_ne!(
        here.session().unwrap(),
        before,
        "this browser goes on with a new session"
    );
    assert_eq!(r.header("location"), Some("/_portcullis/account?changed=1"));
    let page = here.get(&gw.url("/_portcullis/account?changed=1"));
    assert!(page.body.contains("Your password has been changed"));
    assert_eq!(here.get(&gw.url("/page")).status, 200, "this one stays");
    assert!(
        ends_within_2s(&mut there, &gw.url("/page")),
        "the other one ends"
    );
    let mut remembered = Browser::with_agent("127.0.0.96", CHROME);
    remembered
        .jar
        .insert("portcullis_session_remember".into(), there_remember);
    assert_eq!(
        remembered.get(&gw.url("/page")).status,
        302,
        "its remember-me too"
    );

    let mut fresh = Browser::from_ip("127.0.0.97");
    assert_eq!(
        fresh
            .login_form(&gw, "alice@example.com", PASSWORD, false, "/")
            .status,
        401
    );
    assert_eq!(
        fresh
            .login_form(&gw, "alice@example.com", NEW_PASSWORD, false, "/")
            .status,
        303
    );
    let mail = &smtp.wait_for(1)[0];
    assert_eq!(mail.subject, "Your password was changed");

    // The API: JSON only, the current password first.
    let api = |b: &mut Browser, current: &str, new: &str| {
        b.post_json(
            &gw.url("/_portcullis/api/account/password"),
            &json!({"current": current, "password": new, "password2": new}),
        )
    };
    let r = api(&mut here, "not it", "yet another passphrase");
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (401, json!("invalid_credentials"))
    );
    let once = here.post_json(
        &gw.url("/_portcullis/api/account/password"),
        &json!({"current": NEW_PASSWORD, "password": "yet another passphrase"}),
    );
    assert_eq!(once.status, 400, "the new password twice, as on the page");
    let r = api(&mut here, NEW_PASSWORD, "yet another passphrase");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        here.api_get(&gw.url("/_portcullis/api/account")).json()["user"],
        "alice@example.com"
    );

    let events = String::from_utf8(gw.cli(&["audit", "--json"], None).stdout).unwrap();
    assert!(events.contains("\"password_changed\""));
    assert!(events.contains("\"detail\":\"by the user\""));
    let db = String::from_utf8_lossy(&gw.db_bytes()).into_owned();
    assert!(!db.contains(NEW_PASSWORD) && !gw.logs().contains(NEW_PASSWORD));
}

#[test]
fn the_account_page_needs_a_session() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "");
    let mut b = Browser::new();
    let r = b.get(&gw.url("/_portcullis/account"));
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location"),
        Some("/_portcullis/login?rd=%2F_portcullis%2Faccount")
    );
    let r = b.api_get(&gw.url("/_portcullis/api/account/sessions"));
    assert_eq!(r.status, 401);
    let r = b.post_form(&gw.url("/_portcullis/account"), &[("action", "logout_all")]);
    assert_eq!(r.status, 303);
}

const EMAIL_LINK: &str = "http://portal.example/_portcullis/account/email?token=";

#[test]
fn a_new_email_address_takes_effect_only_when_its_link_is_followed() {
    let smtp = Smtp::start();
    let up = Upstream::start();
    let gw = Gateway::start(
        up.addr,
        &format!("{}recovery:\n  resend_after: 3s\n", smtp.yaml()),
    );
    gw.add_user("bob", "bob@example.com", "Bob", &["staff"]);
    let mut me = Browser::from_ip("127.0.0.111");
    me.sign_in(&gw, false);
    let change = |b: &mut Browser, new: &str, current: &str| {
        post_account(
            b,
            &gw,
            &[
                ("action", "email"),
                ("new_email", new),
                ("current", current),
            ],
        )
    };
    let refused = [
        (
            "bob@example.com",
            PASSWORD,
            400,
            "A user with this email already exists",
        ),
        (
            "alice@example.com",
            PASSWORD,
            400,
            "This is already your e-mail address",
        ),
        (
            "alice<mallory@evil.example>",
            PASSWORD,
            400,
            "Enter a valid e-mail address",
        ),
        (
            "not an address",
            PASSWORD,
            400,
            "Enter a valid e-mail address",
        ),
        ("alice.new@example.com", "wrong", 401, "Incorrect password"),
    ];
    for (new, current, status, message) in refused {
        let r = change(&mut me, new, current);
        assert_eq!(r.status, status, "{new}");
        assert!(r.body.contains(message), "{message}");
    }
    let r = change(&mut me, "alice.new@example.com", PASSWORD);
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(
        r.header("location"),
        Some("/_portcullis/account?email_sent=1")
    );
    assert_eq!(
        change(&mut me, "alice.other@example.com", PASSWORD).status,
        429
    );
    let mail = &smtp.wait_for(1)[0];
    assert_eq!(mail.to, "alice.new@example.com");
    assert_eq!(mail.subject, "Confirm your new e-mail address");
    let at = mail.text.find(EMAIL_LINK).expect("a link") + EMAIL_LINK.len();
    let token: String = mail.text[at..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let api = |b: &mut Browser| b.api_get(&gw.url("/_portcullis/api/account")).json();
    assert_eq!(
        api(&mut me)["email"],
        "alice@example.com",
        "nothing changes before"
    );

    // The link, in any browser: a page with a button; a cross-site post does nothing.
    let mut inbox = Browser::from_ip("127.0.0.112");
    let page = inbox.get(&gw.url(&format!("/_portcullis/account/email?token={token}")));
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("alice.new@example.com"));
    let forged = inbox.send(
        inbox
            .request("POST", &gw.url("/_portcullis/account/email"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(format!("token={token}")),
    );
    assert_eq!(forged.status, 403);
    let csrf = inbox.csrf_cookie().unwrap();
    let fields = [("token", token.as_str()), ("csrf", csrf.as_str())];
    let done = inbox.post_form(&gw.url("/_portcullis/account/email"), &fields);
    assert_eq!(done.status, 303, "{}", done.body);

    // The login was the address: it follows, for the live session too.
    assert_eq!(api(&mut me)["email"], "alice.new@example.com");
    let follows = within(Duration::from_secs(2), || {
        me.get(&gw.url("/page")).status == 200
            && up.last().header("x-remote-user") == Some("alice.new@example.com")
            && up.last().header("x-remote-email") == Some("alice.new@example.com")
    });
    assert!(
        follows.is_some(),
        "the live session carries the new address"
    );
    let again = inbox.post_form(&gw.url("/_portcullis/account/email"), &fields);
    assert_eq!(again.status, 400, "a link works once");
    let mut fresh = Browser::from_ip("127.0.0.113");
    let r = fresh.login_form(&gw, "alice.new@example.com", PASSWORD, false, "/");
    assert_eq!(r.status, 303);

    // A pending change ends with a new password (or a reset, or Log out on all devices).
    std::thread::sleep(Duration::from_secs(3));
    let r = change(&mut fresh, "mallory@example.com", PASSWORD);
    assert_eq!(r.status, 303, "{}", r.body);
    let mail = &smtp.wait_for(2)[1];
    assert_eq!(mail.to, "mallory@example.com");
    let at = mail.text.find(EMAIL_LINK).expect("a link") + EMAIL_LINK.len();
    let pending: String = mail.text[at..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let r = fresh.post_json(
        &gw.url("/_portcullis/api/account/password"),
        &json!({"current": PASSWORD, "password": NEW_PASSWORD, "password2": NEW_PASSWORD}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let mut mallory = Browser::from_ip("127.0.0.114");
    mallory.get(&gw.url(&format!("/_portcullis/account/email?token={pending}")));
    let csrf = mallory.csrf_cookie().unwrap();
    let fields = [("token", pending.as_str()), ("csrf", csrf.as_str())];
    let r = mallory.post_form(&gw.url("/_portcullis/account/email"), &fields);
    assert_eq!(r.status, 400, "the password change cancelled it");
    assert_eq!(
        fresh.api_get(&gw.url("/_portcullis/api/account")).json()["email"],
        "alice.new@example.com"
    );
    let events = String::from_utf8(gw.cli(&["audit", "--json"], None).stdout).unwrap();
    assert!(events.contains("\"email_changed\""), "{events}");
}

#[test]
fn a_new_phone_number_takes_effect_only_with_the_code_sent_to_it() {
    let receiver = Upstream::start();
    let up = Upstream::start();
    let gw = Gateway::start(
        up.addr,
        &format!(
            "sms:\n  webhook: http://{}/sms\nrecovery:\n  resend_after: 0s\n  sms_code_lifetime: 5m\n",
            receiver.addr
        ),
    );
    let mut me = Browser::from_ip("127.0.0.121");
    me.sign_in(&gw, false);
    let ask = |b: &mut Browser, new: &str, current: &str| {
        post_account(
            b,
            &gw,
            &[
                ("action", "phone"),
                ("new_phone", new),
                ("current", current),
            ],
        )
    };
    let r = ask(&mut me, "+49 30 7654321", "wrong");
    assert_eq!(r.status, 401);
    let out = gw.cli(
        &[
            "user",
            "add",
            "dora",
            "--email",
            "dora@example.com",
            "--phone",
            "+49 30 5555555",
            "--password-stdin",
        ],
        Some(PASSWORD),
    );
    assert!(out.status.success());
    let r = ask(&mut me, "+49 (30) 555-5555", PASSWORD);
    assert_eq!(r.status, 400);
    assert!(
        r.body
            .contains("This phone number belongs to another account")
    );
    let r = ask(&mut me, "call me", PASSWORD);
    assert_eq!(r.status, 400);
    assert!(r.body.contains("Enter a phone number"));
    let r = ask(&mut me, "+49 30 7654321", PASSWORD);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("We have sent a code to the new number"));
    let change = r
        .body
        .split("name=\"change\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the code's form")
        .to_string();
    assert!(within(Duration::from_secs(10), || receiver.count() == 1).is_some());
    let sms: serde_json::Value = serde_json::from_str(&receiver.last().body).unwrap();
    assert_eq!(
        sms["to"], "+49 30 7654321",
        "the code goes to the new number"
    );
    let text = sms["text"].as_str().unwrap().to_string();
    let code: String = text.chars().filter(char::is_ascii_digit).take(6).collect();
    assert!(text.contains(&format!("is {code}")), "{text}");
    let phone_now =
        |b: &mut Browser| b.api_get(&gw.url("/_portcullis/api/account")).json()["phone"].clone();
    assert_eq!(phone_now(&mut me), "", "nothing changes before the code");

    let send = |b: &mut Browser, change: &str, code: &str| {
        post_account(
            b,
            &gw,
            &[("action", "phone_code"), ("change", change), ("code", code)],
        )
    };
    // A code sent to another number (asked for after this form) does not confirm this one.
    let other = ask(&mut me, "+49 30 1112223", PASSWORD);
    let other_form = other
        .body
        .split("name=\"change\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_string();
    assert!(within(Duration::from_secs(10), || receiver.count() == 2).is_some());
    let sms2: serde_json::Value = serde_json::from_str(&receiver.last().body).unwrap();
    assert_eq!(sms2["to"], "+49 30 1112223");
    let text2 = sms2["text"].as_str().unwrap();
    let code2: String = text2.chars().filter(char::is_ascii_digit).take(6).collect();
    assert_eq!(
        send(&mut me, &change, &code2).status,
        401,
        "a code for another number"
    );
    assert_eq!(phone_now(&mut me), "");
    // The newer request is the one that counts now.
    let (change, code) = (other_form, code2);
    let wrong = format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000);
    let r = send(&mut me, &change, &wrong);
    assert_eq!(r.status, 401);
    assert!(r.body.contains("Incorrect code"));
    let mut forged = change.clone();
    forged.replace_range(..2, if forged.starts_with("AA") { "BB" } else { "AA" });
    assert_eq!(send(&mut me, &forged, &code).status, 400, "an altered form");
    let r = send(&mut me, &change, &code);
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(phone_now(&mut me), "+49 30 1112223");
    assert_eq!(send(&mut me, &change, &code).status, 400, "once");
    let events = String::from_utf8(gw.cli(&["audit", "--json"], None).stdout).unwrap();
    assert!(events.contains("\"phone_changed\""));
    let db = String::from_utf8_lossy(&gw.db_bytes()).into_owned();
    // The code as the message said it (six digits alone could be anything in a log).
    let said = format!("is {code}");
    assert!(!db.contains(&said) && !gw.logs().contains(&said));
}
