//! Password recovery (SPEC §13) against real parts: Debian's aiosmtpd as the SMTP server (its
//! Maildir read and decoded by Python's own e-mail parser), an HTTP receiver for the SMS
//! webhook, the real binary on a real SQLite file.

mod common;

use std::time::Duration;

use common::smtp::{Mail, Smtp};
use common::*;

const SENT_EMAIL: &str = "If this account exists, we have sent instructions to its e-mail address";
const SENT_SMS: &str = "If this account exists, we have sent a code to its phone";
const INVALID: &str = "Invalid checkword. Request a new link";
const REFUSED: &str = "Incorrect or expired code";
const CHANGED: &str = "Your password has been changed. Sign in with your new password";
const NEW_PASSWORD: &str = "a brand new passphrase";
const LINK: &str = "http://portal.example/_portcullis/reset?token=";

/// The token of the reset link in a message's text, which its HTML carries too.
fn token_of(mail: &Mail) -> String {
    let at = mail.text.find(LINK).expect("a reset link") + LINK.len();
    let token = mail.text[at..at + 43].to_string();
    assert!(
        mail.html.contains(&format!("{LINK}{token}")),
        "{}",
        mail.html
    );
    token
}

/// A form's fields.
type Fields<'a> = &'a [(&'a str, &'a str)];

fn post_forgot(b: &mut Browser, gw: &Gateway, login: &str) -> Resp {
    let page = b.get(&gw.url("/_portcullis/forgot"));
    assert_eq!(page.status, 200, "{}", page.body);
    let csrf = b.csrf_cookie().unwrap();
    b.post_form(
        &gw.url("/_portcullis/forgot"),
        &[("login", login), ("csrf", &csrf)],
    )
}

fn open_link(b: &mut Browser, gw: &Gateway, token: &str) -> Resp {
    b.get(&gw.url(&format!("/_portcullis/reset?token={token}")))
}

fn post_reset(b: &mut Browser, gw: &Gateway, token: &str, password: &str, again: &str) -> Resp {
    let csrf = b.csrf_cookie().unwrap_or_default();
    b.post_form(
        &gw.url("/_portcullis/reset"),
        &[
            ("token", token),
            ("password", password),
            ("password2", again),
            ("csrf", &csrf),
        ],
    )
}

/// The page without the values that differ between any two answers (CSRF tokens).
fn without_csrf(body: &str) -> String {
    body.split("name=\"csrf\" value=\"")
        .map(|part| part.split_once('"').map_or(part, |(_, rest)| rest))
        .collect()
}

fn audit(gw: &Gateway) -> String {
    let out = gw.cli(&["audit", "--json"], None);
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

fn outbox_empty(gw: &Gateway) -> bool {
    use portcullis::store::{OutboxStore, SqliteStore};
    let path = gw.dir.path().join("data/portcullis.db");
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(async {
            SqliteStore::open(&path)
                .await
                .unwrap()
                .count_jobs()
                .await
                .unwrap()
                == 0
        })
}

fn wait_outbox_empty(gw: &Gateway) {
    let done = within(Duration::from_secs(15), || outbox_empty(gw));
    assert!(done.is_some(), "the outbox was never emptied");
}

#[test]
fn an_emailed_link_works_once_and_only_the_newest_one_works() {
    let smtp = Smtp::start();
    let up = Upstream::start();
    let gw = Gateway::start(
        up.addr,
        &format!("{}recovery:\n  resend_after: 3s\n", smtp.yaml()),
    );
    let mut b = Browser::from_ip("127.0.0.31");

    let login = b.get(&gw.url("/_portcullis/login"));
    assert!(
        login.body.contains("href=\"/_portcullis/forgot\""),
        "{}",
        login.body
    );
    let r = post_forgot(&mut b, &gw, "alice@example.com");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains(SENT_EMAIL), "{}", r.body);
    let first = &smtp.wait_for(1)[0];
    assert_eq!(first.to, "alice@example.com");
    assert_eq!(first.subject, "Reset your password");
    for words in ["Intranet", "within 60 minutes", "Hello Alice Liddell"] {
        assert!(first.text.contains(words), "{words} in {}", first.text);
    }
    assert!(!first.html.contains("<img") && !first.html.contains("<script"));
    let old = token_of(first);

    // Within resend_after: nothing is queued, and the page says how long to wait.
    let again = post_forgot(&mut b, &gw, "alice@example.com");
    assert_eq!(again.status, 429, "{}", again.body);
    let wait: u64 = again.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=3).contains(&wait), "{wait}");
    assert!(again.body.contains(&format!(
        "You can send another request after {wait} seconds"
    )));
    std::thread::sleep(Duration::from_secs(wait));
    let r = post_forgot(&mut b, &gw, "alice@example.com");
    assert!(r.body.contains(SENT_EMAIL), "{}", r.body);
    let mails = smtp.wait_for(2);
    assert_eq!(mails.len(), 2, "the refused request sent nothing");
    let new = token_of(&mails[1]);
    assert_ne!(old, new);

    // The older link is dead; the newer one leads to the form, whatever the browser holds.
    let mut other = Browser::from_ip("127.0.0.32");
    other.sign_in(&gw, false);
    let r = open_link(&mut other, &gw, &old);
    assert_eq!(r.status, 400);
    assert!(r.body.contains(INVALID), "{}", r.body);
    let form = open_link(&mut other, &gw, &new);
    assert_eq!(form.status, 200, "{}", form.body);
    assert!(form.body.contains("Choose a new password"));

    // The policy, in its words; the link survives a refused password.
    let cases = [
        ("short", "short", "Password must be at least 8 characters"),
        (NEW_PASSWORD, "something else", "Passwords do not match"),
        (
            "alice@example.com",
            "alice@example.com",
            "must not be your login",
        ),
    ];
    for (password, again, message) in cases {
        let r = post_reset(&mut other, &gw, &new, password, again);
        assert_eq!(r.status, 400, "{password}");
        assert!(r.body.contains(message), "{message} in {}", r.body);
    }
    let done = post_reset(&mut other, &gw, &new, NEW_PASSWORD, NEW_PASSWORD);
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(done.header("location"), Some("/_portcullis/login?reset=1"));
    let login = other.get(&gw.url("/_portcullis/login?reset=1"));
    assert!(login.body.contains(CHANGED), "{}", login.body);

    // Used: the link works once.
    for r in [
        post_reset(
            &mut other,
            &gw,
            &new,
            "another passphrase",
            "another passphrase",
        ),
        open_link(&mut other, &gw, &new),
    ] {
        assert_eq!(r.status, 400);
        assert!(r.body.contains(INVALID));
    }
    let mut fresh = Browser::from_ip("127.0.0.33");
    assert_eq!(
        fresh
            .login_form(&gw, "alice@example.com", PASSWORD, false, "/")
            .status,
        401
    );
    let r = fresh.login_form(&gw, "alice@example.com", NEW_PASSWORD, false, "/");
    assert_eq!(r.status, 303, "the new password works");

    let notice = &smtp.wait_for(3)[2];
    assert_eq!(notice.subject, "Your password was changed");
    assert!(notice.text.contains("signed out"), "{}", notice.text);

    let events = audit(&gw);
    for needle in [
        "\"recovery_requested\"",
        "\"detail\":\"email\"",
        "\"detail\":\"throttled\"",
        "\"recovery_failed\"",
        "\"detail\":\"used\"",
        "\"password_reset\"",
    ] {
        assert!(events.contains(needle), "{needle} in {events}");
    }
    wait_outbox_empty(&gw);
    assert_eq!(
        gw.metric("portcullis_recovery_total{channel=\"email\",result=\"requested\"}"),
        2.0
    );
    assert_eq!(
        gw.metric("portcullis_recovery_total{channel=\"email\",result=\"throttled\"}"),
        1.0
    );
    assert_eq!(
        gw.metric("portcullis_recovery_total{channel=\"email\",result=\"completed\"}"),
        1.0
    );
    assert_eq!(gw.metric("portcullis_mail_total{result=\"sent\"}"), 3.0);
    assert_eq!(smtp.files().len(), 3, "nothing was sent twice");

    // Nothing secret in clear: not in the store (with its WAL), the logs or the events.
    let db = String::from_utf8_lossy(&gw.db_bytes()).into_owned();
    let logs = gw.logs();
    for secret in [old.as_str(), new.as_str(), NEW_PASSWORD] {
        assert!(!db.contains(secret), "the store holds a secret");
        assert!(!logs.contains(secret), "the logs hold a secret");
        assert!(!events.contains(secret), "the events hold a secret");
    }
}

#[test]
fn unknown_and_dismissed_accounts_get_the_same_answers_and_no_mail() {
    let smtp = Smtp::start();
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, &smtp.yaml());
    gw.add_user("bob", "bob@example.com", "Bob", &["staff"]);
    assert!(gw.cli(&["user", "dismiss", "bob"], None).status.success());

    let mut answers = Vec::new();
    for (i, login) in [
        "alice@example.com",
        "nobody@example.com",
        "bob",
        "BOB@example.com",
    ]
    .iter()
    .enumerate()
    {
        let mut b = Browser::from_ip(&format!("127.0.0.{}", 41 + i));
        let first = post_forgot(&mut b, &gw, login);
        let second = post_forgot(&mut b, &gw, login);
        assert_eq!((first.status, second.status), (200, 429), "{login}");
        // The form shows back what was typed; the rest must be the same.
        let same = |body: &str| without_csrf(body).replace(login, "LOGIN");
        answers.push((same(&first.body), same(&second.body)));
    }
    assert!(answers[0].0.contains(SENT_EMAIL));
    assert!(answers[0].1.contains("You can send another request after"));
    for (i, a) in answers.iter().enumerate().skip(1) {
        assert_eq!(a.0, answers[0].0, "first answer of case {i}");
        // The seconds to wait may differ by one between two requests a second apart.
        let seconds = |s: &str| s.replace(char::is_numeric, "");
        assert_eq!(
            seconds(&a.1),
            seconds(&answers[0].1),
            "second answer of case {i}"
        );
    }
    assert_eq!(smtp.wait_for(1)[0].to, "alice@example.com");
    wait_outbox_empty(&gw);
    assert_eq!(
        smtp.files().len(),
        1,
        "unknown and dismissed accounts got no mail"
    );

    // One account named two ways (login, then e-mail) within resend_after: both answers say
    // "sent", as they would for two unknown names, and only one message goes out.
    gw.add_user("dave", "dave@example.com", "Dave", &["staff"]);
    let mut d = Browser::from_ip("127.0.0.48");
    for name in ["dave", "Dave@Example.com"] {
        let r = post_forgot(&mut d, &gw, name);
        assert_eq!(r.status, 200, "{name}");
        assert!(r.body.contains(SENT_EMAIL));
    }
    let again = post_forgot(&mut d, &gw, " DAVE ");
    assert_eq!(
        again.status, 429,
        "the same name, in another case, is the same request"
    );
    wait_outbox_empty(&gw);
    let mails = smtp.wait_for(2);
    assert_eq!(mails.len(), 2, "one message for dave however he was named");
    assert_eq!(mails[1].to, "dave@example.com");

    let events = audit(&gw);
    assert!(events.contains("\"detail\":\"unknown\""), "{events}");

    // Cross-site posts and posts without the form's token are refused, and queue nothing.
    let mut evil = Browser::from_ip("127.0.0.49");
    evil.get(&gw.url("/_portcullis/forgot"));
    let csrf = evil.csrf_cookie().unwrap();
    let cases: [(Fields, Option<&str>); 3] = [
        (&[("login", "alice@example.com")], None),
        (&[("login", "alice@example.com"), ("csrf", "x")], None),
        (
            &[("login", "alice@example.com"), ("csrf", &csrf)],
            Some("http://evil.example"),
        ),
    ];
    for (fields, origin) in cases {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let mut req = evil
            .request("POST", &gw.url("/_portcullis/forgot"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(o) = origin {
            req = req.header("Origin", o);
        }
        let r = evil.send(req);
        assert_eq!(r.status, 403, "{fields:?} {origin:?}");
        let reset = evil.send(
            evil.request("POST", &gw.url("/_portcullis/reset"))
                .header("Content-Type", "application/x-www-form-urlencoded")
                .header("Origin", "http://evil.example")
                .body(format!(
                    "token={}&password=x&password2=x&csrf={csrf}",
                    "A".repeat(43)
                )),
        );
        assert_eq!(reset.status, 403);
    }
    assert!(outbox_empty(&gw));
}

#[test]
fn a_reset_ends_every_session_and_remember_me_and_an_administrator_can_send_a_link() {
    let smtp = Smtp::start();
    let up = Upstream::start();
    let gw = Gateway::start(
        up.addr,
        &format!("{}session:\n  remember_me: 30d\n", smtp.yaml()),
    );
    let mut phone = Browser::from_ip("127.0.0.51");
    phone.sign_in(&gw, true);
    let remember_only = {
        let mut b = Browser::from_ip("127.0.0.51");
        b.jar.insert(
            "portcullis_session_remember".into(),
            phone.remember().expect("a remember-me cookie"),
        );
        b
    };
    let mut laptop = Browser::from_ip("127.0.0.52");
    laptop.sign_in(&gw, false);
    assert_eq!(laptop.get(&gw.url("/page")).status, 200);
    // A second gateway on the same store, with a session of its own.
    let second = Gateway::start_sharing(&gw, up.addr);
    let mut tablet = Browser::from_ip("127.0.0.54");
    tablet.sign_in(&second, false);
    assert_eq!(tablet.get(&second.url("/page")).status, 200);

    // The administrator's link, printed.
    let out = gw.cli(
        &["user", "send-reset", "alice@example.com", "--print-link"],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    let token = printed
        .trim()
        .strip_prefix(LINK)
        .expect("a link to public_url")
        .to_string();
    let mut b = Browser::from_ip("127.0.0.53");
    assert_eq!(open_link(&mut b, &gw, &token).status, 200);
    assert_eq!(
        post_reset(&mut b, &gw, &token, NEW_PASSWORD, NEW_PASSWORD).status,
        303
    );

    // Every session and the remember-me token end, on both gateways, within 2 s.
    let on = |g: &Gateway| g.url("/page");
    let cases = [
        (phone, on(&gw)),
        (laptop, on(&gw)),
        (remember_only, on(&gw)),
        (tablet, on(&second)),
    ];
    for (mut browser, url) in cases {
        let ended = within(Duration::from_secs(2), || browser.get(&url).status == 302);
        assert!(ended.is_some(), "a session outlived the reset: {url}");
    }
    let notice = &smtp.wait_for(1)[0];
    assert_eq!(notice.subject, "Your password was changed");

    // The link queued by the administrator arrives by mail, and works.
    let out = gw.cli(&["user", "send-reset", "alice@example.com"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mail = &smtp.wait_for(2)[1];
    assert_eq!(mail.subject, "Reset your password");
    let token = token_of(mail);
    assert_eq!(open_link(&mut b, &gw, &token).status, 200);

    // Without mail, only --print-link works; a dismissed account gets no link.
    let up2 = Upstream::start();
    let plain = Gateway::start(up2.addr, "");
    let out = plain.cli(&["user", "send-reset", "alice@example.com"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--print-link"));
    let out = plain.cli(
        &["user", "send-reset", "alice@example.com", "--print-link"],
        None,
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("public_url"));
    assert!(
        gw.cli(&["user", "dismiss", "alice@example.com"], None)
            .status
            .success()
    );
    let out = gw.cli(
        &["user", "send-reset", "alice@example.com", "--print-link"],
        None,
    );
    assert!(!out.status.success());
    // And the link mailed before the dismissal no longer works.
    assert_eq!(open_link(&mut b, &gw, &token).status, 400);
}

#[test]
fn an_smtp_outage_and_a_restart_lose_nothing_and_send_once() {
    let mut smtp = Smtp::down();
    let up = Upstream::start();
    let mut gw = Gateway::start(up.addr, &smtp.yaml());
    let mut b = Browser::from_ip("127.0.0.61");
    let r = post_forgot(&mut b, &gw, "alice@example.com");
    assert_eq!(r.status, 200, "the page answers with the SMTP server down");
    assert!(r.body.contains(SENT_EMAIL));
    let retried = within(Duration::from_secs(10), || {
        gw.metric("portcullis_mail_total{result=\"retried\"}") >= 1.0
    });
    assert!(retried.is_some(), "the gateway never tried to send");
    assert!(!outbox_empty(&gw), "the message waits in the outbox");

    // The gateway is killed, the SMTP server comes back, a new gateway process sends it.
    gw.kill();
    smtp.run();
    gw.restart();
    let mails = smtp.wait_for(1);
    assert_eq!(mails[0].subject, "Reset your password");
    wait_outbox_empty(&gw);
    assert_eq!(smtp.files().len(), 1, "sent once");
    let token = token_of(&mails[0]);
    assert_eq!(open_link(&mut b, &gw, &token).status, 200, "the link works");
}

#[test]
fn an_expired_link_says_so() {
    let smtp = Smtp::start();
    let up = Upstream::start();
    let gw = Gateway::start(
        up.addr,
        &format!("{}recovery:\n  link_lifetime: 10s\n", smtp.yaml()),
    );
    let mut b = Browser::from_ip("127.0.0.71");
    post_forgot(&mut b, &gw, "alice@example.com");
    let mail = &smtp.wait_for(1)[0];
    assert!(mail.text.contains("within 10 seconds"), "{}", mail.text);
    let token = token_of(mail);
    assert_eq!(open_link(&mut b, &gw, &token).status, 200);
    // Each look at a link spends from the address's budget: wait, then look once.
    std::thread::sleep(Duration::from_secs(11));
    let r = open_link(&mut b, &gw, &token);
    assert_eq!(r.status, 400, "the link outlived its lifetime");
    assert!(r.body.contains(INVALID));
    let r = post_reset(&mut b, &gw, &token, NEW_PASSWORD, NEW_PASSWORD);
    assert!(r.body.contains(INVALID));
    assert!(audit(&gw).contains("\"detail\":\"expired\""));
}

/// SMS through the webhook: what the receiver gets, the code, its tries and its lifetime.
#[test]
fn an_sms_code_works_three_wrong_tries_end_it_and_it_expires() {
    let receiver = Upstream::start();
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("sms-headers");
    std::fs::write(&headers, "Authorization: Bearer s3cret-api-token\n").unwrap();
    let gw = Gateway::start(
        up.addr,
        &format!(
            "sms:\n  webhook: http://{}/send\n  headers_file: {}\nrecovery:\n  resend_after: 0s\n  sms_code_lifetime: 10s\n",
            receiver.addr,
            headers.display()
        ),
    );
    let out = gw.cli(
        &[
            "user",
            "add",
            "carol",
            "--email",
            "carol@example.com",
            "--phone",
            "+49 30 1234567",
            "--password-stdin",
        ],
        Some(PASSWORD),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let phone = "+49 (30) 123-4567";

    let code_of = |n: usize| -> String {
        let got = within(Duration::from_secs(10), || receiver.count() >= n);
        assert!(got.is_some(), "SMS {n} never came");
        let seen = receiver.seen.lock().unwrap()[n - 1].clone();
        assert_eq!(seen.method, "POST");
        assert_eq!(seen.path, "/send");
        assert_eq!(
            seen.header("authorization"),
            Some("Bearer s3cret-api-token")
        );
        let json: serde_json::Value = serde_json::from_str(&seen.body).unwrap();
        assert_eq!(json["to"], "+49 30 1234567");
        let text = json["text"].as_str().unwrap();
        let code: String = text.chars().filter(char::is_ascii_digit).take(6).collect();
        assert!(text.contains(&format!("code is {code}")), "{text}");
        code
    };
    let send_code = |b: &mut Browser, code: &str| -> Resp {
        let csrf = b.csrf_cookie().unwrap();
        b.post_form(
            &gw.url("/_portcullis/reset"),
            &[("phone", phone), ("code", code), ("csrf", &csrf)],
        )
    };
    let wrong = |code: &str| format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000);

    // Three wrong tries end the code: the right one no longer works. A wrong code and a
    // spent one get one answer (an unknown phone, which has no code, gets it too).
    let mut b = Browser::from_ip("127.0.0.81");
    let r = post_forgot(&mut b, &gw, phone);
    assert!(r.body.contains(SENT_SMS), "{}", r.body);
    let code = code_of(1);
    for _ in 0..3 {
        let r = send_code(&mut b, &wrong(&code));
        assert_eq!(r.status, 401);
        assert!(r.body.contains(REFUSED), "{}", r.body);
    }
    let r = send_code(&mut b, &code);
    assert_eq!(r.status, 401, "the right code after three wrong ones");
    assert!(r.body.contains(REFUSED) && !r.body.contains("name=\"token\""));

    // A new code, right at once: the new password's form, then sign-in with it.
    post_forgot(&mut b, &gw, phone);
    let code = code_of(2);
    let r = send_code(&mut b, &code);
    assert_eq!(r.status, 200, "{}", r.body);
    let token = r.body.split("name=\"token\" value=\"").nth(1).unwrap()[..43].to_string();
    assert!(r.body.contains("name=\"via\" value=\"sms\""));
    let csrf = b.csrf_cookie().unwrap();
    let fields = [
        ("token", token.as_str()),
        ("via", "sms"),
        ("password", NEW_PASSWORD),
        ("password2", NEW_PASSWORD),
        ("csrf", &csrf),
    ];
    assert_eq!(
        b.post_form(&gw.url("/_portcullis/reset"), &fields).status,
        303
    );
    let mut c = Browser::from_ip("127.0.0.82");
    assert_eq!(
        c.login_form(&gw, "carol", NEW_PASSWORD, false, "/").status,
        303
    );
    assert!(
        send_code(&mut b, &code).body.contains(REFUSED),
        "a used code is over"
    );

    // An unknown phone gets the same pages and no SMS.
    let r = post_forgot(&mut b, &gw, "+1 555 0100 999");
    assert!(r.body.contains(SENT_SMS));
    for _ in 0..4 {
        let csrf = b.csrf_cookie().unwrap();
        let fields = [
            ("phone", "+1 555 0100 999"),
            ("code", "123456"),
            ("csrf", &csrf),
        ];
        let r = b.post_form(&gw.url("/_portcullis/reset"), &fields);
        assert_eq!(r.status, 401);
        assert!(r.body.contains(REFUSED));
    }

    // A code expires: one never tried, after its lifetime.
    post_forgot(&mut b, &gw, phone);
    let code = code_of(3);
    std::thread::sleep(Duration::from_secs(11));
    let r = send_code(&mut b, &code);
    assert_eq!(r.status, 401, "expired");
    assert!(r.body.contains(REFUSED) && !r.body.contains("name=\"token\""));
    assert_eq!(receiver.count(), 3, "no SMS to the unknown phone");

    let db = String::from_utf8_lossy(&gw.db_bytes()).into_owned();
    let logs = gw.logs();
    // The code as the message said it: six digits alone could be anything in a file or a log.
    let said = format!("code is {code}");
    for secret in [said.as_str(), token.as_str(), "s3cret-api-token"] {
        assert!(!db.contains(secret) && !logs.contains(secret));
    }
    assert_eq!(gw.metric("portcullis_sms_total{result=\"sent\"}"), 3.0);
    assert_eq!(
        gw.metric("portcullis_recovery_total{channel=\"sms\",result=\"completed\"}"),
        1.0
    );

    // New codes do not buy endless guesses: after 10 wrong codes in a day, even a right one
    // is refused (each code alone would have allowed 3 tries).
    let mut e = Browser::from_ip("127.0.0.83");
    for n in 4..=7 {
        post_forgot(&mut e, &gw, phone);
        let code = code_of(n);
        for _ in 0..3 {
            assert_eq!(send_code(&mut e, &wrong(&code)).status, 401);
        }
    }
    post_forgot(&mut e, &gw, phone);
    let code = code_of(8);
    let r = send_code(&mut e, &code);
    assert_eq!(r.status, 401, "a right code after a day's wrong ones");
    assert!(r.body.contains(REFUSED) && !r.body.contains("name=\"token\""));
}
