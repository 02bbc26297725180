//! Invitations and the administrator's corrections (SPEC §15) with the real binary: an
//! invitation from the command line arrives through a real SMTP server, sets the password
//! once and signs the invitee in; expired, replaced and dismissed invitations are dead;
//! `user edit` reaches live sessions (identity headers, IP restrictions) on every gateway.

mod common;

use std::time::Duration;

use common::smtp::Smtp;
use common::*;

const INVITE: &str = "http://portal.example/_portcullis/invite?token=";
const INVITED: &str = "Finish your registration with the link in your invitation";
const NO_LONGER: &str =
    "This invitation is no longer valid. Ask your administrator to send a new one";
const EXPIRED: &str = "This invitation has expired. Ask your administrator to send a new one";
const CHOSEN: &str = "the invitee's own passphrase";

fn token_in(text: &str) -> String {
    let at = text.find(INVITE).expect("an invitation link") + INVITE.len();
    text[at..at + 43].to_string()
}

fn invite(gw: &Gateway, args: &[&str]) -> String {
    let mut all = vec!["user", "invite"];
    all.extend_from_slice(args);
    let out = gw.cli(&all, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn open(b: &mut Browser, gw: &Gateway, token: &str) -> Resp {
    b.get(&gw.url(&format!("/_portcullis/invite?token={token}")))
}

fn accept(b: &mut Browser, gw: &Gateway, token: &str, password: &str, again: &str) -> Resp {
    let csrf = b.csrf_cookie().unwrap_or_default();
    let fields = [
        ("token", token),
        ("password", password),
        ("password2", again),
        ("csrf", csrf.as_str()),
    ];
    b.post_form(&gw.url("/_portcullis/invite"), &fields)
}

fn list(gw: &Gateway) -> String {
    String::from_utf8(gw.cli(&["user", "list"], None).stdout).unwrap()
}

fn line_of<'a>(table: &'a str, login: &str) -> &'a str {
    table.lines().find(|l| l.starts_with(login)).unwrap_or("")
}

#[test]
fn an_invitation_arrives_sets_the_password_once_and_signs_the_invitee_in() {
    let smtp = Smtp::start();
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, &smtp.yaml());
    let said = invite(
        &gw,
        &[
            "new@example.com",
            "--name",
            "New Person",
            "--group",
            "staff",
        ],
    );
    assert!(said.contains("Invited new@example.com"), "{said}");
    let mail = &smtp.wait_for(1)[0];
    assert_eq!(mail.to, "new@example.com");
    assert_eq!(mail.subject, "You are invited to Intranet");
    assert!(mail.text.contains("within 7 days"), "{}", mail.text);
    let token = token_in(&mail.text);
    assert!(mail.html.contains(&format!("{INVITE}{token}")));

    // Not before the invitation is accepted.
    let mut early = Browser::from_ip("127.0.0.101");
    let r = early.login_form(&gw, "new@example.com", "any password at all", false, "/");
    assert_eq!(r.status, 403);
    assert!(r.body.contains(INVITED), "{}", r.body);
    assert!(line_of(&list(&gw), "new@example.com").contains("invited"));

    let mut b = Browser::from_ip("127.0.0.102");
    let form = open(&mut b, &gw, &token);
    assert_eq!(form.status, 200, "{}", form.body);
    assert!(form.body.contains("new@example.com"));
    // Without the form's token, or from another site: refused, nothing set.
    let forged = b.send(
        b.request("POST", &gw.url("/_portcullis/invite"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Origin", "http://evil.example")
            .body(format!(
                "token={token}&password=x{CHOSEN}&password2=x{CHOSEN}"
            )),
    );
    assert_eq!(forged.status, 403);
    let r = accept(&mut b, &gw, &token, CHOSEN, "not the same");
    assert_eq!(r.status, 400);
    assert!(r.body.contains("Passwords do not match"));
    let r = accept(&mut b, &gw, &token, CHOSEN, CHOSEN);
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location"), Some("/"));
    assert_eq!(b.get(&gw.url("/page")).status, 200, "signed in");
    assert_eq!(up.last().header("x-remote-user"), Some("new@example.com"));
    assert_eq!(up.last().header("x-remote-groups"), Some("staff"));

    // Single use.
    let mut again = Browser::from_ip("127.0.0.103");
    for r in [
        open(&mut again, &gw, &token),
        accept(&mut b, &gw, &token, "x second try", "x second try"),
    ] {
        assert_eq!(r.status, 410);
        assert!(r.body.contains(NO_LONGER), "{}", r.body);
    }
    let r = again.login_form(&gw, "new@example.com", CHOSEN, false, "/");
    assert_eq!(r.status, 303, "the chosen password signs in");
    assert!(line_of(&list(&gw), "new@example.com").contains("active"));

    // A new invitation replaces the old link; a dismissed user's invitation is dead.
    let first = token_in(&invite(&gw, &["later@example.com", "--print-link"]));
    let second = token_in(&invite(&gw, &["later@example.com", "--print-link"]));
    assert_eq!(open(&mut again, &gw, &first).status, 410);
    assert_eq!(open(&mut again, &gw, &second).status, 200);
    assert!(
        gw.cli(&["user", "dismiss", "later@example.com"], None)
            .status
            .success()
    );
    assert_eq!(open(&mut again, &gw, &second).status, 410);
    let out = gw.cli(
        &["user", "invite", "later@example.com", "--print-link"],
        None,
    );
    assert!(
        !out.status.success(),
        "a dismissed user is not invited again"
    );
    // A mistyped address corrected with user edit: the link sent there dies with it.
    let mistyped = token_in(&invite(&gw, &["jhon@example.com", "--print-link"]));
    let out = gw.cli(
        &[
            "user",
            "edit",
            "jhon@example.com",
            "--email",
            "john@example.com",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        open(&mut again, &gw, &mistyped).status,
        410,
        "the mistyped address's link"
    );
    let fixed = token_in(&invite(&gw, &["john@example.com", "--print-link"]));
    assert_eq!(open(&mut again, &gw, &fixed).status, 200);
    // An active user is not invited.
    let out = gw.cli(
        &["user", "invite", "alice@example.com", "--print-link"],
        None,
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("A user with this email already exists"));

    let events = String::from_utf8(gw.cli(&["audit", "--json"], None).stdout).unwrap();
    for needle in [
        "\"user_invited\"",
        "\"invitation_accepted\"",
        "\"detail\":\"invitation\"",
        "\"detail\":\"invited\"",
    ] {
        assert!(events.contains(needle), "{needle}");
    }
    let db = String::from_utf8_lossy(&gw.db_bytes()).into_owned();
    for secret in [token.as_str(), first.as_str(), second.as_str(), CHOSEN] {
        assert!(!db.contains(secret) && !gw.logs().contains(secret));
    }
}

#[test]
fn an_expired_invitation_says_so() {
    let up = Upstream::start();
    let gw = Gateway::start(
        up.addr,
        "public_url: http://portal.example\ninvitations:\n  lifetime: 10s\n",
    );
    let token = token_in(&invite(&gw, &["late@example.com", "--print-link"]));
    let mut b = Browser::from_ip("127.0.0.104");
    assert_eq!(open(&mut b, &gw, &token).status, 200);
    std::thread::sleep(Duration::from_secs(11));
    let r = open(&mut b, &gw, &token);
    assert_eq!(r.status, 410);
    assert!(r.body.contains(EXPIRED), "{}", r.body);
    let r = accept(&mut b, &gw, &token, CHOSEN, CHOSEN);
    assert!(r.body.contains(EXPIRED));
}

#[test]
fn user_edit_corrects_and_live_sessions_follow_on_every_gateway() {
    let up = Upstream::start();
    let gw = Gateway::start(
        up.addr,
        "network:\n  restrictions:\n    - name: finance desks\n      groups: [finance]\n      allow: [127.0.0.250]\n",
    );
    let second = Gateway::start_sharing(&gw, up.addr);
    let mut here = Browser::from_ip("127.0.0.105");
    here.sign_in(&gw, false);
    let mut there = Browser::from_ip("127.0.0.106");
    there.sign_in(&second, false);
    assert_eq!(here.get(&gw.url("/page")).status, 200);
    assert_eq!(up.last().header("x-remote-groups"), Some("staff,ops"));

    let out = gw.cli(
        &[
            "user",
            "edit",
            "alice@example.com",
            "--name",
            "Alice L.",
            "--group",
            "staff",
            "--group",
            "hr",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("groups:  staff, hr"));
    for (b, g) in [(&mut here, &gw), (&mut there, &second)] {
        let follows = within(Duration::from_secs(2), || {
            b.get(&g.url("/page")).status == 200
                && up.last().header("x-remote-groups") == Some("staff,hr")
                && up.last().header("x-remote-name") == Some("Alice L.")
        });
        assert!(follows.is_some(), "the new identity reached {}", g.url("/"));
    }

    // Duplicates refused, in the SPEC's words.
    gw.add_user("bob", "bob@example.com", "Bob", &["staff"]);
    let out = gw.cli(
        &["user", "edit", "bob", "--email", "ALICE@example.com"],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("A user with this email already exists"));

    // A move to finance brings its IP restriction (configured on the first gateway): the
    // session ends at its next request there.
    let out = gw.cli(
        &["user", "edit", "alice@example.com", "--group", "finance"],
        None,
    );
    assert!(out.status.success());
    let ended = within(Duration::from_secs(2), || {
        here.get(&gw.url("/page")).status != 200
    });
    assert!(ended.is_some(), "the restriction reached the live session");
    let out = gw.cli(&["user", "edit", "alice@example.com", "--no-groups"], None);
    assert!(String::from_utf8_lossy(&out.stdout).contains("groups:  \n"));
    let events = String::from_utf8(gw.cli(&["audit", "--json"], None).stdout).unwrap();
    assert!(
        events.contains("\"user_updated\"") && events.contains("\"detail\":\"name, groups\""),
        "{events}"
    );
    let table = list(&gw);
    assert!(
        line_of(&table, "alice@example.com").contains("active")
            && line_of(&table, "alice@example.com").contains("off"),
        "{table}"
    );
}
