//! End to end in a real browser: `portcullis demo` serves its portal, headless Chromium
//! (Debian's, driven by Playwright) signs in through the login page and lands on the portal.
//! Also checks the demo's one-command promise over plain HTTP, and walks the CAPTCHA step,
//! two-step verification (codes from `oathtool`) and password recovery through the demo's outbox,
//! and a sign-in over HTTPS and HTTP/2.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Demo {
    child: Child,
    port: u16,
    password: String,
    _dir: tempfile::TempDir,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_demo() -> Demo {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(BIN)
        .args(["demo", "--port", &port.to_string()])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut password = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(pw) = line.trim().strip_prefix("password") {
            password = pw.trim().to_string();
        }
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    assert_eq!(
        password.len(),
        16,
        "the demo prints the demo user's password"
    );
    assert!(dir.path().join("demo-data/portcullis.db").exists());
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the demo did not start listening"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Demo {
        child,
        port,
        password,
        _dir: dir,
    }
}

#[test]
fn the_demo_shows_the_identity_the_portal_receives() {
    let demo = start_demo();
    let base = format!("http://127.0.0.1:{}", demo.port);
    let mut b = Browser::new();
    assert_eq!(b.get(&format!("{base}/")).status, 302);
    b.get(&format!("{base}/_portcullis/login"));
    let csrf = b.csrf_cookie().unwrap();
    let r = b.post_form(
        &format!("{base}/_portcullis/login"),
        &[
            ("login", "demo"),
            ("password", &demo.password),
            ("csrf", &csrf),
        ],
    );
    assert_eq!(r.status, 303);
    let page = b.get(&format!("{base}/"));
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Hello, Demo User."));
    assert!(
        page.body
            .contains("<th>x-remote-groups</th><td>staff,demo</td>")
    );
}

/// Runs a Playwright script from `tests/e2e/` with `args` and the screenshot directory
/// (`PORTCULLIS_SCREENSHOTS`, may be empty) last; returns what it printed once it succeeded.
fn run_e2e(script: &str, args: &[&str]) -> String {
    let path = format!("{}/tests/e2e/{script}", env!("CARGO_MANIFEST_DIR"));
    let shots = std::env::var("PORTCULLIS_SCREENSHOTS").unwrap_or_default();
    let out = Command::new("node")
        .arg(path)
        .args(args)
        .arg(shots)
        .output()
        .expect("node is needed for the browser test (make test installs it)");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "browser test failed:\n{stdout}\n{stderr}"
    );
    stdout.into_owned()
}

#[test]
fn chromium_signs_in_through_the_login_page_and_lands_on_the_portal() {
    let demo = start_demo();
    let base = format!("http://127.0.0.1:{}", demo.port);
    let stdout = run_e2e("login.mjs", &[&base, "demo", &demo.password]);
    assert!(stdout.contains("ok: signed in"), "{stdout}");
}

#[test]
fn chromium_sets_up_two_step_verification_and_signs_in_with_a_code() {
    let demo = start_demo();
    let base = format!("http://127.0.0.1:{}", demo.port);
    let stdout = run_e2e("two_factor.mjs", &[&base, "demo", &demo.password]);
    assert!(stdout.contains("ok: enrolled from the page"), "{stdout}");
}

#[test]
fn chromium_resets_a_forgotten_password_through_the_demos_outbox() {
    let demo = start_demo();
    let base = format!("http://127.0.0.1:{}", demo.port);
    let outbox = demo._dir.path().join("demo-data/outbox");
    let outbox = outbox.to_str().unwrap();
    let stdout = run_e2e("recovery.mjs", &[&base, "demo", outbox]);
    assert!(stdout.contains("ok: reset the password"), "{stdout}");
}

#[test]
fn chromium_ends_another_session_and_changes_the_password_on_the_account_page() {
    let demo = start_demo();
    let base = format!("http://127.0.0.1:{}", demo.port);
    // Another device, signed in before the browser comes.
    let mut other = Browser::from_ip("127.0.0.88");
    other.agent = Some("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36".into());
    other.get(&format!("{base}/_portcullis/login"));
    let csrf = other.csrf_cookie().unwrap();
    let fields = [
        ("login", "demo"),
        ("password", demo.password.as_str()),
        ("csrf", &csrf),
    ];
    assert_eq!(
        other
            .post_form(&format!("{base}/_portcullis/login"), &fields)
            .status,
        303
    );
    let new_password = "a new demo passphrase";
    let stdout = run_e2e(
        "account.mjs",
        &[&base, "demo", &demo.password, new_password],
    );
    assert!(stdout.contains("ok: ended another session"), "{stdout}");
    assert_eq!(
        other.get(&format!("{base}/")).status,
        302,
        "the other device is signed out"
    );
}

#[test]
fn chromium_shows_the_captcha_picture_and_signs_in_with_the_answer() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "throttle:\n  captcha_after: 1\n");
    let known = gw.mint_captcha("K7WXAP");
    let base = format!("http://{}", gw.addr);
    let stdout = run_e2e(
        "captcha.mjs",
        &[&base, "alice@example.com", PASSWORD, &known, "K7WXAP"],
    );
    assert!(
        stdout.contains("ok: signed in through the CAPTCHA step"),
        "{stdout}"
    );
}

#[test]
fn chromium_signs_in_over_https_and_http2() {
    let ca = common::tls::Ca::new();
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, &ca.leaf(20).yaml());
    let base = format!("https://{}", gw.addr);
    let stdout = run_e2e("https.mjs", &[&base, "alice@example.com", PASSWORD]);
    assert!(stdout.contains("ok: signed in over HTTPS"), "{stdout}");
    let seen = up.seen.lock().unwrap();
    let reports: Vec<_> = seen.iter().filter(|s| s.path == "/reports").collect();
    assert!(!reports.is_empty());
    for s in reports {
        assert_eq!(s.headers_named("x-remote-user"), ["alice@example.com"]);
        assert_eq!(s.header("x-forwarded-proto"), Some("https"));
    }
}
