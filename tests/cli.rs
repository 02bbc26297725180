//! The command line as operators use it: config validation with positions, user management,
//! password hashing, exit codes.

mod common;

use common::*;

fn text(out: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_shipped_example_config_is_valid() {
    let out = run_cli(
        &["check-config", "-c", "config/portcullis.yaml"],
        None,
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    assert_eq!(text(&out).0, "ok\n");
}

#[test]
fn invalid_configs_list_every_problem_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "upstream: http://127.0.0.1:8081\nsession:\n  idle_timeout: soon\n  remember_me: 3w\npublic_paths: [static]\n",
    )
    .unwrap();
    let file = path.display().to_string();
    for cmd in ["check-config", "serve"] {
        let out = run_cli(&[cmd, "-c", &file], None, None);
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let (_, err) = text(&out);
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 3, "{cmd}: {err}");
        assert!(
            lines[0].contains(&format!(
                "{file}:3:17: session.idle_timeout: `soon` is not a duration"
            )),
            "{err}"
        );
        assert!(
            lines[1].contains(&format!("{file}:4:16: session.remember_me")),
            "{err}"
        );
        assert!(
            lines[2].contains(&format!("{file}:5:16: public_paths[0]")),
            "{err}"
        );
    }
    std::fs::write(&path, "upstream: http://127.0.0.1:8081\nsesion: {}\n").unwrap();
    let out = run_cli(&["check-config", "-c", &file], None, None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out)
            .1
            .contains(&format!("{file}:2:1: unknown field `sesion`")),
        "{:?}",
        text(&out)
    );
    let out = run_cli(
        &["check-config", "-c", "/nonexistent/portcullis.yaml"],
        None,
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("cannot read the file"));
}

fn config_in(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("portcullis.yaml");
    std::fs::write(
        &path,
        "upstream: http://127.0.0.1:8081\nstore:\n  path: state/users.db\n",
    )
    .unwrap();
    path
}

#[test]
fn users_are_created_before_the_first_serve_and_emails_are_unique() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_in(dir.path());
    let add = |login: &str, email: &str, pw: Option<&str>| {
        let mut args = vec![
            "user", "add", login, "--email", email, "--name", "Carol", "--group", "staff",
            "--group", "hr",
        ];
        if pw.is_some() {
            args.push("--password-stdin");
        }
        run_cli(&args, Some(&cfg), pw)
    };
    let out = add(
        "carol@example.com",
        "carol@example.com",
        Some("long enough pw\n"),
    );
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    assert!(
        dir.path().join("state/users.db").exists(),
        "the store is created next to the config"
    );
    let dup = add("carol2", "CAROL@Example.com", Some("long enough pw"));
    assert_eq!(dup.status.code(), Some(2));
    assert!(
        text(&dup)
            .1
            .contains("A user with this email already exists"),
        "{:?}",
        text(&dup)
    );
    let generated = add("dave", "dave@example.com", None);
    assert_eq!(generated.status.code(), Some(0));
    assert!(
        text(&generated).0.contains("Password: "),
        "a generated password is printed once"
    );
    let short = add("erin", "erin@example.com", Some("short"));
    assert_eq!(short.status.code(), Some(2));
    assert!(text(&short).1.contains("at least 8 characters"));
    let bad_email = add("frank", "not-an-email", Some("long enough pw"));
    assert_eq!(bad_email.status.code(), Some(2));

    let list = run_cli(&["user", "list"], Some(&cfg), None);
    let (out, _) = text(&list);
    assert!(
        out.contains("carol@example.com") && out.contains("dave") && out.contains("staff,hr"),
        "{out}"
    );
    let show = run_cli(&["user", "show", "CAROL@EXAMPLE.COM"], Some(&cfg), None);
    assert!(
        text(&show).0.contains("groups:  staff, hr"),
        "{:?}",
        text(&show)
    );
    let missing = run_cli(&["user", "show", "nobody"], Some(&cfg), None);
    assert_eq!(missing.status.code(), Some(2));
    assert_eq!(text(&missing).1.lines().count(), 1, "one clear line");

    let dismiss = run_cli(&["user", "dismiss", "dave"], Some(&cfg), None);
    assert_eq!(dismiss.status.code(), Some(0));
    assert!(
        text(&run_cli(&["user", "show", "dave"], Some(&cfg), None))
            .0
            .contains("status:  dismissed")
    );
    let db = std::fs::read(dir.path().join("state/users.db")).unwrap();
    assert!(
        !db.windows(14).any(|w| w == b"long enough pw"),
        "passwords are stored hashed"
    );
}

#[test]
fn hash_password_prints_a_verifiable_argon2id_string() {
    let out = run_cli(&["hash-password"], None, Some("s3cret passphrase\n"));
    assert_eq!(out.status.code(), Some(0));
    let phc = text(&out).0.trim().to_string();
    assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
    let pw = portcullis::core::secret::Password::new("s3cret passphrase");
    assert!(portcullis::service::hasher::verify_now(&pw, &phc));
    let empty = run_cli(&["hash-password"], None, Some(""));
    assert_eq!(empty.status.code(), Some(2));
}

#[test]
fn bad_usage_exits_2() {
    assert_eq!(run_cli(&["frobnicate"], None, None).status.code(), Some(2));
    assert_eq!(run_cli(&["serve"], None, None).status.code(), Some(2));
    assert_eq!(run_cli(&["--help"], None, None).status.code(), Some(0));
}

#[test]
fn serve_reports_a_busy_port_in_one_line_and_exits_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: {}\nadmin_listen: 127.0.0.1:{}\nupstream: http://127.0.0.1:1\n",
            taken.local_addr().unwrap(),
            free_port()
        ),
    )
    .unwrap();
    let out = run_cli(&["serve", "-c", &path.display().to_string()], None, None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).1.contains("cannot listen on"),
        "{:?}",
        text(&out)
    );
}
