//! Observability (docs/reference.md, Metrics and Events) end to end: every flow moves exactly its own metric series,
//! `promtool` accepts the live metrics and the shipped rules, readiness follows the upstream, the
//! event log reaches the store and `audit.file`, `portcullis audit` filters it, old events are
//! pruned, and no secret used here turns up in the store, the logs or the event file.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// The series that moved between two scrapes, by how much. Histogram buckets and sums, the
/// session gauge and `process_*` are left out: counts and counters are what flows must match.
fn moved(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .filter(|(k, _)| {
            k.starts_with("portcullis_")
                && !k.contains("_bucket{")
                && !k.ends_with("_sum")
                && !k.starts_with("portcullis_sessions_active")
        })
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0.0);
            (d != 0.0).then(|| (k.clone(), d))
        })
        .collect()
}

/// Runs `action` and asserts that exactly `expected` moved, each by exactly its amount.
#[track_caller]
fn exactly(gw: &Gateway, expected: &[(&str, f64)], action: impl FnOnce()) {
    let before = gw.scrape();
    action();
    let after = gw.scrape();
    let want: BTreeMap<String, f64> = expected.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    assert_eq!(moved(&before, &after), want);
}

const PUBLIC: &str = "portcullis_requests_total{decision=\"public\"}";
const PROXIED: &str = "portcullis_requests_total{decision=\"proxied\"}";
const LOCAL: &str = "portcullis_requests_total{decision=\"local\"}";
const REDIRECT: &str = "portcullis_requests_total{decision=\"login_redirect\"}";
const UNAUTH: &str = "portcullis_requests_total{decision=\"unauthenticated\"}";
const UPSTREAM: &str = "portcullis_upstream_seconds_count";
const HASHED: &str = "portcullis_password_hash_seconds_count";
const HIT: &str = "portcullis_session_cache_total{result=\"hit\"}";
const MISS: &str = "portcullis_session_cache_total{result=\"miss\"}";

fn login(result: &str) -> String {
    format!("portcullis_login_attempts_total{{result=\"{result}\"}}")
}

fn ended(reason: &str) -> String {
    format!("portcullis_sessions_ended_total{{reason=\"{reason}\"}}")
}

#[test]
fn each_request_and_sign_in_flow_moves_exactly_its_own_series() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "public_paths: [/static/]\n");
    let mut b = Browser::from_ip("127.0.0.11");

    exactly(&gw, &[(PUBLIC, 1.0), (UPSTREAM, 1.0)], || {
        assert_eq!(b.get(&gw.url("/static/app.css")).status, 200);
    });
    exactly(&gw, &[(REDIRECT, 1.0)], || {
        assert_eq!(b.get(&gw.url("/reports")).status, 302);
    });
    exactly(&gw, &[(UNAUTH, 1.0)], || {
        assert_eq!(b.api_get(&gw.url("/api/items")).status, 401);
    });
    // The sign-in form: the page and the post are the gateway's own; one hash, one success.
    exactly(
        &gw,
        &[(LOCAL, 2.0), (&login("success"), 1.0), (HASHED, 1.0)],
        || b.sign_in(&gw, false),
    );
    assert_eq!(gw.metric("portcullis_sessions_active"), 1.0);
    exactly(&gw, &[(PROXIED, 1.0), (UPSTREAM, 1.0), (HIT, 1.0)], || {
        b.get(&gw.url("/reports")).echo();
    });
    exactly(
        &gw,
        &[
            (LOCAL, 1.0),
            (&login("invalid_credentials"), 1.0),
            (HASHED, 1.0),
        ],
        || {
            let r = Browser::from_ip("127.0.0.12").api_sign_in(&gw, "wrong-guess-1");
            assert_eq!(r.status, 401);
        },
    );
    // Signing out ends the session by its cookie; no lookup, so no cache count.
    exactly(&gw, &[(LOCAL, 1.0), (&ended("logout"), 1.0)], || {
        let r = b.post_json(&gw.url("/_portcullis/api/logout"), &json!({}));
        assert_eq!(r.status, 200);
    });
    assert_eq!(gw.metric("portcullis_sessions_active"), 0.0);

    // A dismissed user's correct password is hashed, then refused.
    let out = gw.cli(&["user", "dismiss", "alice@example.com"], None);
    assert!(out.status.success());
    exactly(
        &gw,
        &[(LOCAL, 1.0), (&login("dismissed"), 1.0), (HASHED, 1.0)],
        || assert_eq!(Browser::new().api_sign_in(&gw, PASSWORD).status, 403),
    );
}

#[test]
fn a_session_first_seen_after_a_restart_is_a_cache_miss() {
    let up = Upstream::start();
    let mut gw = Gateway::start(up.addr, "");
    let mut b = Browser::new();
    b.sign_in(&gw, false);
    gw.restart();
    exactly(&gw, &[(PROXIED, 1.0), (UPSTREAM, 1.0), (MISS, 1.0)], || {
        b.get(&gw.url("/")).echo();
    });
    exactly(&gw, &[(PROXIED, 1.0), (UPSTREAM, 1.0), (HIT, 1.0)], || {
        b.get(&gw.url("/")).echo();
    });
}

#[test]
fn idle_and_absolute_expiry_are_counted_by_reason() {
    let up = Upstream::start();
    // Idle past the timeout: gone from the cache, so the store is asked and ends it. Past the
    // absolute lifetime: still cached (24 min idle), but ended all the same.
    for (config, lookup, reason) in [
        ("session:\n  idle_timeout: 1s\n", MISS, "idle"),
        ("session:\n  absolute_timeout: 1s\n", HIT, "absolute"),
    ] {
        let gw = Gateway::start(up.addr, config);
        let mut b = Browser::new();
        b.sign_in(&gw, false);
        std::thread::sleep(Duration::from_millis(2100));
        exactly(
            &gw,
            &[(REDIRECT, 1.0), (lookup, 1.0), (&ended(reason), 1.0)],
            || assert_eq!(b.get(&gw.url("/")).status, 302),
        );
    }
}

#[test]
fn a_replayed_remember_token_counts_the_sessions_it_revokes() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "session:\n  remember_me: 1d\n");
    let mut victim = Browser::new();
    victim.sign_in(&gw, true);
    let stolen = victim.remember().unwrap();
    victim.jar.remove("portcullis_session");
    victim.get(&gw.url("/")).echo(); // renews: a second session, a rotated validator
    // Renewed again: the stolen validator is now two rotations old, past any grace.
    victim.jar.remove("portcullis_session");
    victim.get(&gw.url("/")).echo();
    let mut thief = Browser::new();
    thief
        .jar
        .insert("portcullis_session_remember".into(), stolen);
    // All three sessions of the victim end: the two renewed ones and the first, still in the
    // store. The revocation feed counts them (so a cluster counts them once), within its 500 ms
    // poll.
    exactly(&gw, &[(UNAUTH, 1.0), (&ended("revoked"), 3.0)], || {
        assert_eq!(thief.api_get(&gw.url("/")).status, 401);
        assert!(
            within(Duration::from_secs(2), || gw.metric(&ended("revoked"))
                == 3.0)
            .is_some()
        );
    });
}

#[test]
fn two_gateways_on_one_store_count_a_command_s_revocation_once() {
    let up = Upstream::start();
    let first = Gateway::start(up.addr, "");
    let second = Gateway::start_sharing(&first, up.addr);
    let mut laptop = Browser::new();
    laptop.sign_in(&first, false);
    let mut phone = Browser::new();
    phone.sign_in(&second, false);
    assert_eq!(
        phone.get(&first.url("/")).status,
        200,
        "one store, one session"
    );
    let revoked = ended("revoked");
    let out = first.cli(&["user", "logout-all", "alice@example.com"], None);
    assert!(out.status.success());
    let both = || first.metric(&revoked) + second.metric(&revoked);
    assert!(within(Duration::from_secs(2), || both() == 2.0).is_some());
    // Both have read the revocation by now (they poll every 500 ms); still 2 in all.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(both(), 2.0);
    assert_eq!(phone.api_get(&second.url("/")).status, 401);
    assert_eq!(laptop.api_get(&second.url("/")).status, 401);
}

#[test]
fn sessions_ended_by_commands_are_counted_once_by_the_gateway() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "");
    let (mut laptop, mut phone) = (Browser::new(), Browser::new());
    laptop.sign_in(&gw, false);
    phone.sign_in(&gw, false);
    for (command, reason, n) in [
        ("logout-all", "revoked", 2.0),
        ("dismiss", "dismissed", 1.0),
    ] {
        if command == "dismiss" {
            laptop.sign_in(&gw, false);
        }
        exactly(&gw, &[(&ended(reason), n)], || {
            let out = gw.cli(&["user", command, "alice@example.com"], None);
            assert!(out.status.success());
            assert!(within(Duration::from_secs(2), || gw.metric(&ended(reason)) == n).is_some());
            // Later polls of the feed do not count them again.
            std::thread::sleep(Duration::from_millis(1100));
        });
    }
}

#[test]
fn refused_addresses_restrictions_reloads_throttling_and_locks_are_counted() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "");
    let mut inside = Browser::from_ip("127.0.0.21");
    inside.sign_in(&gw, false);

    let reloads_ok = "portcullis_config_reloads_total{result=\"ok\"}";
    let restricted = "network:\n  restrictions:\n    - name: desk\n      groups: [staff]\n      allow: [127.0.0.22]\n";
    exactly(&gw, &[(reloads_ok, 1.0)], || {
        gw.rewrite(restricted);
        gw.sighup();
        assert!(within(Duration::from_secs(5), || gw.metric(reloads_ok) == 1.0).is_some());
    });
    // A live session from an address its user may not use: refused and ended.
    exactly(
        &gw,
        &[
            ("portcullis_requests_total{decision=\"ip_restricted\"}", 1.0),
            (HIT, 1.0),
            (&ended("ip_restricted"), 1.0),
        ],
        || assert_eq!(inside.get(&gw.url("/")).status, 403),
    );
    exactly(
        &gw,
        &[(LOCAL, 1.0), (&login("ip_restricted"), 1.0), (HASHED, 1.0)],
        || {
            let mut fresh = Browser::from_ip("127.0.0.21");
            assert_eq!(fresh.api_sign_in(&gw, PASSWORD).status, 403);
        },
    );

    let reloads_error = "portcullis_config_reloads_total{result=\"error\"}";
    exactly(&gw, &[(reloads_error, 1.0)], || {
        gw.rewrite("network:\n  allow: [not-an-address]\n");
        gw.sighup();
        assert!(within(Duration::from_secs(5), || gw.metric(reloads_error) == 1.0).is_some());
    });
    gw.rewrite("network:\n  allow: [127.0.0.23]\nthrottle:\n  captcha_after: 0\n  lock_after: 1\n  ip_attempts_per_minute: 2\n");
    gw.sighup();
    assert!(within(Duration::from_secs(5), || gw.metric(reloads_ok) == 2.0).is_some());
    exactly(
        &gw,
        &[("portcullis_requests_total{decision=\"ip_denied\"}", 1.0)],
        || assert_eq!(Browser::from_ip("127.0.0.24").get(&gw.url("/")).status, 403),
    );
    let mut guesser = Browser::from_ip("127.0.0.23");
    exactly(
        &gw,
        &[
            (LOCAL, 1.0),
            (&login("invalid_credentials"), 1.0),
            (HASHED, 1.0),
        ],
        || assert_eq!(guesser.api_sign_in(&gw, "wrong-guess-2").status, 401),
    );
    // lock_after 1: the account is locked now; no hash is spent on it.
    exactly(&gw, &[(LOCAL, 1.0), (&login("locked"), 1.0)], || {
        assert_eq!(guesser.api_sign_in(&gw, PASSWORD).status, 423);
    });
    // Two attempts a minute from one address: the third is turned away before anything else.
    exactly(&gw, &[(LOCAL, 1.0), (&login("throttled"), 1.0)], || {
        assert_eq!(guesser.api_sign_in(&gw, PASSWORD).status, 429);
    });
}

#[test]
fn promtool_accepts_the_live_metrics_and_every_series_is_there_from_the_start() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "");
    let mut b = Browser::new();
    b.sign_in(&gw, false);
    b.get(&gw.url("/")).echo();
    let r = reqwest::blocking::get(format!("http://{}/metrics", gw.admin)).unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = r.text().unwrap();
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (scripts/bootstrap.sh --tests installs it)");
    use std::io::Write;
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // docs/reference.md (Metrics), series by series, plus the drop counter of the event log.
    let spec: &[(&str, &str, &[&str])] = &[
        (
            "portcullis_requests_total",
            "decision",
            &[
                "proxied",
                "public",
                "login_redirect",
                "unauthenticated",
                "ip_denied",
                "ip_restricted",
                "local",
            ],
        ),
        (
            "portcullis_login_attempts_total",
            "result",
            &[
                "success",
                "invalid_credentials",
                "captcha_required",
                "captcha_failed",
                "throttled",
                "locked",
                "dismissed",
                "ip_restricted",
            ],
        ),
        (
            "portcullis_sessions_ended_total",
            "reason",
            &[
                "logout",
                "idle",
                "absolute",
                "revoked",
                "dismissed",
                "ip_restricted",
            ],
        ),
        ("portcullis_session_cache_total", "result", &["hit", "miss"]),
        (
            "portcullis_config_reloads_total",
            "result",
            &["ok", "error"],
        ),
        (
            "portcullis_events_dropped_total",
            "sink",
            &["store", "file"],
        ),
    ];
    for (name, label, values) in spec {
        assert!(text.contains(&format!("# TYPE {name} counter")), "{name}");
        for v in *values {
            assert!(
                text.contains(&format!("{name}{{{label}=\"{v}\"}} ")),
                "{name} {v}"
            );
        }
    }
    assert!(text.contains("# TYPE portcullis_sessions_active gauge"));
    for h in [
        "portcullis_password_hash_seconds",
        "portcullis_upstream_seconds",
    ] {
        assert!(text.contains(&format!("# TYPE {h} histogram")), "{h}");
    }
    for p in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(text.contains(&format!("\n{p} ")), "{p}");
    }
    // The public listener never serves them.
    let public = Browser::new().api_get(&gw.url("/metrics"));
    assert!(!public.body.contains("portcullis_requests_total"));
}

/// Every `portcullis_*` metric named in `text`.
fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("portcullis_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn the_shipped_alert_rules_and_dashboard_pass_promtool_and_use_served_metrics() {
    let root = env!("CARGO_MANIFEST_DIR");
    for args in [
        ["check", "rules", "deploy/prometheus/portcullis-alerts.yml"],
        [
            "test",
            "rules",
            "deploy/prometheus/portcullis-alerts.test.yml",
        ],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(root)
            .output()
            .expect("promtool");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Over TLS: the certificate's expiry is served only when there is a certificate.
    let ca = common::tls::Ca::new();
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, &ca.leaf(20).yaml());
    let served: Vec<String> = gw
        .scrape()
        .keys()
        .map(|k| k.split('{').next().unwrap().to_string())
        .collect();
    let dashboard =
        std::fs::read_to_string(format!("{root}/deploy/grafana/portcullis-dashboard.json"))
            .unwrap();
    let parsed: Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    assert!(parsed["panels"].as_array().is_some_and(|p| p.len() >= 10));
    let rules =
        std::fs::read_to_string(format!("{root}/deploy/prometheus/portcullis-alerts.yml")).unwrap();
    let mut used = metric_names(&dashboard);
    used.extend(metric_names(&rules));
    assert!(used.len() > 20);
    for name in used {
        assert!(served.contains(&name), "{name} is used but not served");
    }
}

#[test]
fn readiness_says_which_dependency_failed_and_recovers() {
    let up = Upstream::start();
    let upstream = up.addr;
    let gw = Gateway::start(up.addr, "");
    let ready = || {
        let r = reqwest::blocking::get(format!("http://{}/readyz", gw.admin)).unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    assert_eq!(ready(), (200, "ready\n".to_string()));
    drop(up);
    let (status, body) = ready();
    assert_eq!(status, 503);
    assert!(
        body.starts_with(&format!("not ready: upstream {upstream}: ")),
        "{body}"
    );
    let _up = Upstream::start_at(upstream);
    assert_eq!(ready(), (200, "ready\n".to_string()));
    // Liveness never depended on the upstream.
    let health = reqwest::blocking::get(format!("http://{}/healthz", gw.admin)).unwrap();
    assert_eq!(health.status(), 200);
}

fn audit(gw: &Gateway, args: &[&str]) -> std::process::Output {
    let mut all = vec!["audit"];
    all.extend_from_slice(args);
    gw.cli(&all, None)
}

/// `portcullis audit --json` with `args`, as (event, login, ip) triples, oldest first.
fn audit_json(gw: &Gateway, args: &[&str]) -> Vec<(String, String, String)> {
    let mut all = args.to_vec();
    all.push("--json");
    let out = audit(gw, &all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("a JSON line");
            let s = |k: &str| v[k].as_str().unwrap().to_string();
            (s("event"), s("login"), s("ip"))
        })
        .collect()
}

const CHROME_WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";

#[test]
fn events_reach_the_event_file_and_audit_filters_them() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "audit:\n  file: events.jsonl\n");
    let mut chrome = Browser::from_ip("127.0.0.31");
    let r = chrome.send(
        chrome
            .request("POST", &gw.url("/_portcullis/api/login"))
            .header("User-Agent", CHROME_WINDOWS)
            .header("Content-Type", "application/json")
            .body(json!({"login": "alice@example.com", "password": PASSWORD}).to_string()),
    );
    assert_eq!(r.status, 200);
    let mut other = Browser::from_ip("127.0.1.7");
    assert_eq!(other.api_sign_in(&gw, "wrong-guess-3").status, 401);
    let r = other.post_json(
        &gw.url("/_portcullis/api/login"),
        &json!({"login": "nobody@example.com", "password": "wrong-guess-4"}),
    );
    assert_eq!(r.status, 401);
    gw.assert_stored(&["unknown_login"]);

    // The file: one JSON object per line, the fields of docs/reference.md (Events), the
    // same events as the store.
    let file = gw.dir.path().join("events.jsonl");
    let written = || std::fs::read_to_string(&file).unwrap().lines().count();
    assert!(within(Duration::from_secs(2), || written() == 4).is_some());
    let lines: Vec<Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let kinds: Vec<&str> = lines.iter().map(|v| v["event"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "user_created",
            "login_success",
            "login_failure",
            "login_failure"
        ],
        "the user_created line comes from `user add`, a command"
    );
    for v in &lines {
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "detail",
                "event",
                "ip",
                "login",
                "session",
                "ts",
                "user_agent"
            ]
        );
        let ts = v["ts"].as_str().unwrap();
        assert!(
            ts.len() == 20 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
            "{ts}"
        );
    }
    assert_eq!(lines[1]["ip"], "127.0.0.31");
    assert_eq!(lines[1]["user_agent"], CHROME_WINDOWS);
    assert_eq!(lines[1]["session"].as_str().unwrap().len(), 8);
    assert_eq!(lines[2]["detail"], "wrong_password");
    assert_eq!(lines[3]["login"], "nobody@example.com");
    let from_file: Vec<(String, String, String)> = lines
        .iter()
        .map(|v| {
            let s = |k: &str| v[k].as_str().unwrap().to_string();
            (s("event"), s("login"), s("ip"))
        })
        .collect();
    assert_eq!(audit_json(&gw, &[]), from_file);

    // Filters, alone and together.
    let t = |e: &str, l: &str, ip: &str| (e.to_string(), l.to_string(), ip.to_string());
    assert_eq!(
        audit_json(&gw, &["--ip", "127.0.1.0/24"]),
        [
            t("login_failure", "alice@example.com", "127.0.1.7"),
            t("login_failure", "nobody@example.com", "127.0.1.7")
        ]
    );
    assert_eq!(
        audit_json(
            &gw,
            &["--user", "ALICE@example.com", "--event", "login_failure"]
        ),
        [t("login_failure", "alice@example.com", "127.0.1.7")]
    );
    assert_eq!(
        audit_json(&gw, &["--ip", "127.0.0.31", "--since", "1h"]),
        [t("login_success", "alice@example.com", "127.0.0.31")]
    );
    assert_eq!(audit_json(&gw, &["--event", "logout"]), []);
    assert_eq!(audit_json(&gw, &["--ip", "::1/128"]), []);

    // The table, for people.
    let out = audit(&gw, &["--user", "alice@example.com"]);
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 4, "{table}");
    assert!(
        rows[0].starts_with("TIME (UTC)") && rows[0].contains("BROWSER"),
        "{table}"
    );
    assert!(
        rows[1].contains("user_created") && rows[1].contains(" - "),
        "{table}"
    );
    assert!(
        rows[2].contains("login_success")
            && rows[2].contains("127.0.0.31")
            && rows[2].contains("Chrome 120 on Windows"),
        "{table}"
    );
    assert!(rows[3].trim_end().ends_with("wrong_password"), "{table}");

    // Bad filters: exit 2, one clear line, nothing printed.
    for (args, message) in [
        (
            vec!["--event", "login_sucess"],
            "--event: `login_sucess` is not an event",
        ),
        (
            vec!["--ip", "127.0.0.0/40"],
            "--ip: `127.0.0.0/40` is not an IP address",
        ),
        (
            vec!["--since", "yesterday"],
            "--since: `yesterday` is not a duration",
        ),
    ] {
        let out = audit(&gw, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.starts_with(&format!("portcullis: {message}")), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn old_events_are_pruned_after_the_retention() {
    use portcullis::core::event::{Event, EventKind};
    use portcullis::store::{EventStore, SqliteStore};
    let up = Upstream::start();
    let mut gw = Gateway::start(up.addr, "audit:\n  retention: 7d\n");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let path = gw.dir.path().join("data/portcullis.db");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let store = SqliteStore::open(&path).await.unwrap();
            let old = |login: &str, days: i64| {
                Event::new(EventKind::UserRestored, now - days * 86_400).login(login)
            };
            store
                .record_events(&[
                    old("eight-days@example.com", 8),
                    old("six-days@example.com", 6),
                ])
                .await
                .unwrap();
        });
    let restored = |gw: &Gateway| -> Vec<String> {
        audit_json(gw, &["--event", "user_restored"])
            .into_iter()
            .map(|(_, login, _)| login)
            .collect()
    };
    assert_eq!(
        restored(&gw),
        ["eight-days@example.com", "six-days@example.com"]
    );
    let since = |d: &str| audit_json(&gw, &["--event", "user_restored", "--since", d]).len();
    assert_eq!((since("9d"), since("7d"), since("5d")), (2, 1, 0));
    // The purge runs when the gateway starts and every minute after.
    gw.restart();
    let pruned = within(Duration::from_secs(5), || {
        restored(&gw) == ["six-days@example.com"]
    });
    assert!(pruned.is_some(), "{:?}", restored(&gw));
    assert_eq!(audit_json(&gw, &["--event", "user_created"]).len(), 1);
}

#[test]
fn an_event_file_that_cannot_be_written_is_counted_and_the_store_still_gets_every_event() {
    let up = Upstream::start();
    let gw = Gateway::start(up.addr, "audit:\n  file: /dev/full\n");
    let dropped = "portcullis_events_dropped_total{sink=\"file\"}";
    let mut b = Browser::new();
    b.sign_in(&gw, false);
    assert!(within(Duration::from_secs(2), || gw.metric(dropped) == 1.0).is_some());
    assert_eq!(
        gw.metric("portcullis_events_dropped_total{sink=\"store\"}"),
        0.0
    );
    assert_eq!(audit_json(&gw, &["--event", "login_success"]).len(), 1);
    assert!(
        gw.logs()
            .contains("events were not written to the event log")
    );
    // One more event, one more drop: each is counted, the log line is rate limited.
    assert_eq!(b.api_sign_in(&gw, "wrong-guess-5").status, 401);
    assert!(within(Duration::from_secs(2), || gw.metric(dropped) == 2.0).is_some());
    assert_eq!(
        gw.logs()
            .matches("events were not written to the event log")
            .count(),
        1
    );
}

#[test]
fn json_logs_and_events_on_stdout_never_carry_a_secret() {
    let up = Upstream::start();
    let gw = Gateway::start_with(
        "127.0.0.1",
        up.addr,
        "audit:\n  file: \"-\"\nsession:\n  remember_me: 1d\nthrottle:\n  captcha_after: 1\n",
        &["--log-format", "json"],
    );
    // A wrong password brings a CAPTCHA; a wrong answer, then a right one with the password.
    let wrong = "Wrong-Password-9";
    let mut b = Browser::from_ip("127.0.0.41");
    assert_eq!(b.api_sign_in(&gw, wrong).status, 401);
    let wrong_answer = "RW4XJT";
    let answer = "K7HM3P";
    let r = b.post_json(
        &gw.url("/_portcullis/api/login"),
        &json!({"login": "alice@example.com", "password": PASSWORD,
                "captcha_id": gw.mint_captcha(answer), "captcha_answer": wrong_answer}),
    );
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json()["error"], "captcha_required");
    let r = b.post_json(
        &gw.url("/_portcullis/api/login"),
        &json!({"login": "alice@example.com", "password": PASSWORD, "remember": true,
                "captcha_id": gw.mint_captcha(answer), "captcha_answer": answer}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let session = b.session().unwrap();
    let remember = b.remember().unwrap();
    b.get(&gw.url("/")).echo();
    assert_eq!(
        b.post_json(&gw.url("/_portcullis/api/logout"), &json!({}))
            .status,
        200
    );
    gw.assert_stored(&["logout"]);

    // stdout carries the events, stderr the log lines: both JSON, one object a line.
    let out = within(Duration::from_secs(2), || {
        gw.logs().contains("\"event\":\"logout\"")
    });
    assert!(out.is_some(), "{}", gw.logs());
    let logs = gw.logs();
    let mut events = 0;
    let mut log_lines = 0;
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        if v.get("event").is_some() && v.get("ts").is_some() {
            events += 1;
        } else {
            assert!(
                v["level"].is_string() && v["timestamp"].is_string(),
                "{line}"
            );
            log_lines += 1;
        }
    }
    assert!(
        events >= 5 && log_lines >= 3,
        "{events} events, {log_lines} log lines:\n{logs}"
    );
    assert!(logs.contains("\"event\":\"captcha_required\""));
    assert!(logs.contains("\"event\":\"login_success\""));

    let (_, validator) = remember.split_once('.').unwrap();
    let db = gw.db_bytes();
    let contains = |hay: &[u8], needle: &str| {
        hay.windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
    };
    for secret in [
        PASSWORD,
        wrong,
        answer,
        wrong_answer,
        &session,
        validator,
        &remember,
    ] {
        assert!(!contains(&db, secret), "the store holds {secret}");
        assert!(
            !contains(logs.as_bytes(), secret),
            "logs or events hold {secret}"
        );
    }
}

#[test]
fn a_graceful_stop_writes_every_queued_event_to_the_store_and_the_file() {
    let up = Upstream::start();
    let mut gw = Gateway::start(
        up.addr,
        "audit:\n  file: events.jsonl\nthrottle:\n  captcha_after: 0\n  ip_attempts_per_minute: 0\n",
    );
    // Thirty wrong passwords at once, each from an address of its own, then a stop at once.
    let addrs: Vec<String> = (100..130).map(|n| format!("127.0.0.{n}")).collect();
    let handles: Vec<_> = addrs
        .iter()
        .cloned()
        .map(|ip| {
            let url = gw.url("/_portcullis/api/login");
            std::thread::spawn(move || {
                let mut b = Browser::from_ip(&ip);
                let r = b.post_json(
                    &url,
                    &json!({"login": "alice@example.com", "password": "wrong-guess-6"}),
                );
                assert_eq!(r.status, 401);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let status = gw.terminate();
    assert!(status.success(), "{status:?}\n{}", gw.logs());
    let file = std::fs::read_to_string(gw.dir.path().join("events.jsonl")).unwrap();
    let failures = |text: &str| text.matches("\"event\":\"login_failure\"").count();
    assert_eq!(failures(&file), 30, "{file}");
    assert_eq!(audit_json(&gw, &["--event", "login_failure"]).len(), 30);
    assert!(file.ends_with('\n'));
}

#[test]
fn events_written_before_addresses_were_keyed_are_found_by_ip_and_keyed_at_start() {
    let up = Upstream::start();
    let mut gw = Gateway::start(up.addr, "");
    gw.kill();
    // Rows as an older Portcullis wrote them: no address key.
    let db = gw.dir.path().join("data/portcullis.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for (n, ip) in ["10.9.0.1", "::ffff:10.9.3.3", "192.0.2.5", ""]
        .iter()
        .enumerate()
    {
        conn.execute(
            "INSERT INTO events (ts, event, login, ip) VALUES (?1, 'ip_denied', 'old', ?2)",
            rusqlite::params![now - 100 + n as i64, ip],
        )
        .unwrap();
    }
    let unkeyed = |c: &rusqlite::Connection| -> i64 {
        c.query_row(
            "SELECT count(*) FROM events WHERE ip_key IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(unkeyed(&conn), 4);
    let found = |gw: &Gateway| -> Vec<String> {
        audit_json(gw, &["--ip", "10.9.0.0/16"])
            .into_iter()
            .map(|(_, _, ip)| ip)
            .collect()
    };
    assert_eq!(
        found(&gw),
        ["10.9.0.1", "::ffff:10.9.3.3"],
        "found before keying"
    );
    gw.restart();
    let keyed = within(Duration::from_secs(10), || unkeyed(&conn) == 0);
    assert!(keyed.is_some(), "not keyed at start:\n{}", gw.logs());
    assert_eq!(found(&gw), ["10.9.0.1", "::ffff:10.9.3.3"], "found by key");
}
