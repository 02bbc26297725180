//! The Debian package as an administrator meets it: scripts/deb.sh packages the binary under
//! test, and dpkg installs, upgrades, removes and purges it on this machine (as root, or
//! through passwordless sudo). Whatever fails, the machine is left as the test found it.

use std::fs::{File, TryLockError};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");
const VERSION: &str = env!("CARGO_PKG_VERSION");
const DEB_SH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/deb.sh");
const REPO_UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/portcullis.service");

const CONFIG: &str = "/etc/portcullis/portcullis.yaml";
const STATE: &str = "/var/lib/portcullis";
const UNIT: &str = "/lib/systemd/system/portcullis.service";
/// Everything the package installs that is not a directory.
const FILES: [&str; 5] = [
    CONFIG,
    UNIT,
    "/usr/bin/portcullis",
    "/usr/share/doc/portcullis/changelog.gz",
    "/usr/share/doc/portcullis/copyright",
];
/// Directories of the package's own, gone after a purge.
const DIRS: [&str; 4] = [
    "/etc/portcullis",
    STATE,
    "/run/portcullis",
    "/usr/share/doc/portcullis",
];

/// dpkg's database is the machine's, whichever checkout or user runs the test: one package
/// test at a time.
const LOCK: &str = "/run/lock/portcullis-package-test.lock";
const LOCK_WAIT: Duration = Duration::from_secs(300);
/// Each command run as root: dpkg, a maintainer script, the CLI.
const COMMAND_LIMIT: Duration = Duration::from_secs(60);
/// scripts/deb.sh: it strips and compresses a debug binary of some hundred MB.
const BUILD_LIMIT: Duration = Duration::from_secs(300);

const UPGRADE_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "+upgrade1");
const ALICE: &str = "alice@example.com";
const PASSWORD: &str = "correct horse battery";

#[test]
fn the_package_installs_upgrades_removes_and_purges_without_a_trace() {
    let root = Root::get();
    let debs = tempfile::tempdir().unwrap();
    let first = build_deb(debs.path(), None);
    let upgrade = build_deb(debs.path(), Some(UPGRADE_VERSION));
    let _lock = machine_lock();
    assert_absent(&root);
    let _cleanup = Cleanup(&root);

    root.ok(&["dpkg", "-i", &first], None);
    check_installed(&root);
    let store = add_alice(&root);
    upgrade_keeps_the_store(&root, &upgrade, &store);
    remove_and_purge_keep_the_store(&root, &store);

    // Installed again, the package finds the kept store; a plain purge then takes it all.
    root.ok(&["dpkg", "-i", &first], None);
    check_installed(&root);
    assert!(as_gateway(&root, &["user", "list"], None).contains(ALICE));
    root.ok(&["dpkg", "--purge", "portcullis"], None);
    assert_gone(&root);
}

/// The unit's sandbox (deploy/README.md): an exposure of at most 2.0 ("OK" on
/// systemd-analyze's scale), so that a hardening line lost in an edit fails here.
#[test]
fn the_unit_keeps_its_hardening() {
    let argv = [
        "systemd-analyze",
        "security",
        "--offline=true",
        "--threshold=20",
        REPO_UNIT,
    ];
    let out = bounded(&argv, None, COMMAND_LIMIT, false).unwrap();
    assert!(out.status.success(), "{}", describe(&argv, &out));
}

/// scripts/deb.sh with fast compression, from the binary under test; the package's path.
fn build_deb(dir: &Path, version: Option<&str>) -> String {
    let version = version.map(|v| format!("PORTCULLIS_DEB_VERSION={v}"));
    let dir = dir.display().to_string();
    let mut argv = vec!["env"];
    argv.extend(version.as_deref());
    argv.extend([DEB_SH, "--fast", BIN, &dir]);
    let out = bounded(&argv, None, BUILD_LIMIT, false).unwrap();
    assert!(out.status.success(), "{}", describe(&argv, &out));
    String::from_utf8(out.stdout)
        .unwrap()
        .trim_end()
        .to_string()
}

/// What a first install and a reinstall leave: the files with their owners and modes, the
/// system user, a valid config that the user can read, a unit systemd accepts.
fn check_installed(root: &Root) {
    let account = account(root).expect("no user portcullis after the install");
    assert!(account.uid < 1000, "not a system user: {account:?}");
    assert_eq!(account.home, STATE, "{account:?}");
    assert!(account.shell.ends_with("/nologin"), "{account:?}");
    let gid = group_id(root).expect("no group portcullis after the install");
    assert_eq!(account.gid, gid, "{account:?}");

    assert_eq!(owner_and_mode("/usr/bin/portcullis"), (0, 0, 0o755));
    assert_eq!(owner_and_mode(CONFIG), (0, gid, 0o640));
    assert_eq!(owner_and_mode(STATE), (account.uid, gid, 0o750));
    assert_eq!(owner_and_mode(UNIT), (0, 0, 0o644));
    let listed = root.ok(&["dpkg", "-L", "portcullis"], None);
    let mut files: Vec<&str> = listed.lines().filter(|p| Path::new(p).is_file()).collect();
    files.sort();
    assert_eq!(files, FILES);

    let version = root.ok(&["/usr/bin/portcullis", "--version"], None);
    assert_eq!(version, format!("portcullis {VERSION}\n"));
    assert_eq!(as_gateway(root, &["check-config"], None), "ok\n");
    let config = root.ok(&["cat", CONFIG], None);
    let settings: Vec<&str> = config
        .lines()
        .map(|l| l.split(" #").next().unwrap_or_default().trim_end())
        .collect();
    for setting in [
        "  path: /var/lib/portcullis/portcullis.db",
        "  secret_key_file: /var/lib/portcullis/secret.key",
    ] {
        assert!(settings.contains(&setting), "{CONFIG} has no `{setting}`");
    }

    let unit = std::fs::read_to_string(UNIT).unwrap();
    assert!(
        unit.contains("\nExecStart=/usr/bin/portcullis serve -c /etc/portcullis/portcullis.yaml\n")
    );
    let verify = ["systemd-analyze", "verify", UNIT];
    let out = root.run(&verify, None);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        describe(&verify, &out)
    );
}

/// Makes a store the way an administrator does, as the gateway's user; its digest.
fn add_alice(root: &Root) -> String {
    let add = ["user", "add", ALICE, "--email", ALICE, "--password-stdin"];
    as_gateway(root, &add, Some(PASSWORD));
    let owner = root.ok(
        &["stat", "-c", "%U:%G", "/var/lib/portcullis/portcullis.db"],
        None,
    );
    assert_eq!(owner, "portcullis:portcullis\n");
    state(root)
}

fn upgrade_keeps_the_store(root: &Root, deb: &str, store: &str) {
    root.ok(&["dpkg", "-i", deb], None);
    let installed = root.ok(&["dpkg-query", "-W", "-f=${Version}", "portcullis"], None);
    assert_eq!(installed, UPGRADE_VERSION);
    assert_eq!(state(root), store, "the upgrade changed {STATE}");
    assert!(as_gateway(root, &["user", "list"], None).contains(ALICE));
}

/// `dpkg -r` keeps the config and the state; a purge with PORTCULLIS_KEEP_STATE=1 the state
/// and the user.
fn remove_and_purge_keep_the_store(root: &Root, store: &str) {
    root.ok(&["dpkg", "-r", "portcullis"], None);
    assert!(!Path::new("/usr/bin/portcullis").exists());
    assert!(Path::new(CONFIG).exists(), "dpkg -r removed the config");
    assert_eq!(state(root), store, "dpkg -r changed {STATE}");

    let purge = [
        "env",
        "PORTCULLIS_KEEP_STATE=1",
        "dpkg",
        "--purge",
        "portcullis",
    ];
    // A file of the administrator's in /etc/portcullis (a TLS key) outlives the purge.
    let mine = "/etc/portcullis/privkey.pem";
    root.ok(&["sh", "-c", &format!("echo key > {mine}")], None);
    root.ok(&purge, None);
    assert!(!Path::new(CONFIG).exists(), "the purge kept the config");
    assert!(
        Path::new(mine).exists(),
        "the purge deleted the administrator's file"
    );
    root.ok(&["rm", mine], None);
    root.ok(&["rmdir", "/etc/portcullis"], None);
    assert_eq!(
        state(root),
        store,
        "the purge keeping state changed {STATE}"
    );
    assert!(
        account(root).is_some(),
        "the purge keeping state removed the user"
    );
}

/// After the last purge: no package, no file or directory of it, no user, no group.
fn assert_gone(root: &Root) {
    let status = root.run(&["dpkg", "-s", "portcullis"], None);
    assert!(!status.status.success());
    assert!(String::from_utf8_lossy(&status.stderr).contains("is not installed"));
    for path in FILES.iter().chain(&DIRS) {
        assert!(
            Path::new(path).symlink_metadata().is_err(),
            "{path} is left"
        );
    }
    assert!(account(root).is_none(), "the user portcullis is left");
    assert!(group_id(root).is_none(), "the group portcullis is left");
}

/// The test purges what it finds, so it refuses to start where Portcullis is in use.
fn assert_absent(root: &Root) {
    let mut found = Vec::new();
    if root
        .run(&["dpkg", "-s", "portcullis"], None)
        .status
        .success()
    {
        found.push("the package portcullis".to_string());
    }
    if account(root).is_some() || group_id(root).is_some() {
        found.push("a user or group portcullis".to_string());
    }
    found.extend(
        DIRS.iter()
            .filter(|d| Path::new(d).exists())
            .map(|d| d.to_string()),
    );
    assert!(
        found.is_empty(),
        "this machine has Portcullis already ({}); the package test would purge it. \
         Run the test on a machine without it, or remove it first (dpkg --purge portcullis)",
        found.join(", ")
    );
}

/// Every file under the state directory with its SHA-256, one per line, sorted.
fn state(root: &Root) -> String {
    let listing = root.ok(
        &["find", STATE, "-type", "f", "-exec", "sha256sum", "{}", "+"],
        None,
    );
    let mut lines: Vec<&str> = listing.lines().collect();
    lines.sort();
    lines.join("\n")
}

/// The installed CLI, run as the gateway's user on the packaged config.
fn as_gateway(root: &Root, args: &[&str], stdin: Option<&str>) -> String {
    let mut argv = vec!["runuser", "-u", "portcullis", "--", "/usr/bin/portcullis"];
    argv.extend(args);
    argv.extend(["-c", CONFIG]);
    root.ok(&argv, stdin)
}

fn owner_and_mode(path: &str) -> (u32, u32, u32) {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    (meta.uid(), meta.gid(), meta.mode() & 0o7777)
}

#[derive(Debug)]
struct Account {
    uid: u32,
    gid: u32,
    home: String,
    shell: String,
}

/// The user `portcullis` in the password database, if there is one.
fn account(root: &Root) -> Option<Account> {
    let entry = getent(root, "passwd")?;
    let fields: Vec<&str> = entry.trim_end().split(':').collect();
    let [_, _, uid, gid, _, home, shell] = fields[..] else {
        panic!("an unreadable passwd entry: {entry}");
    };
    Some(Account {
        uid: uid.parse().unwrap(),
        gid: gid.parse().unwrap(),
        home: home.to_string(),
        shell: shell.to_string(),
    })
}

/// The id of the group `portcullis`, if there is one.
fn group_id(root: &Root) -> Option<u32> {
    let entry = getent(root, "group")?;
    let gid = entry.split(':').nth(2).expect("a group entry has a gid");
    Some(gid.parse().unwrap())
}

/// The entry `portcullis` of `database`; getent says 2 when there is none.
fn getent(root: &Root, database: &str) -> Option<String> {
    let argv = ["getent", database, "portcullis"];
    let out = root.run(&argv, None);
    match out.status.code() {
        Some(0) => Some(String::from_utf8(out.stdout).unwrap()),
        Some(2) => None,
        _ => panic!("{}", describe(&argv, &out)),
    }
}

/// Waits (at most LOCK_WAIT) until no other package test runs on this machine.
fn machine_lock() -> File {
    let file = File::options()
        .create(true)
        .append(true)
        .open(LOCK)
        .or_else(|_| File::open(LOCK))
        .unwrap_or_else(|e| panic!("cannot open the lock file {LOCK}: {e}"));
    let start = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return file,
            Err(TryLockError::WouldBlock) if start.elapsed() < LOCK_WAIT => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(TryLockError::WouldBlock) => {
                panic!("another package test has held {LOCK} for {LOCK_WAIT:?}")
            }
            Err(TryLockError::Error(e)) => panic!("cannot lock {LOCK}: {e}"),
        }
    }
}

/// Runs commands as root, each within COMMAND_LIMIT: directly when the test runs as root,
/// else through passwordless sudo.
struct Root {
    sudo: bool,
}

impl Root {
    fn get() -> Root {
        // /proc/self belongs to the effective user.
        let uid = std::fs::metadata("/proc/self").unwrap().uid();
        if uid == 0 {
            return Root { sudo: false };
        }
        let sudo = bounded(&["sudo", "-n", "true"], None, COMMAND_LIMIT, false)
            .is_ok_and(|out| out.status.success());
        assert!(
            sudo,
            "the package test installs and purges a Debian package, so it needs root: run it as \
             root, or as a user with passwordless sudo (`sudo -n true` failed for uid {uid})"
        );
        Root { sudo: true }
    }

    fn try_run(&self, argv: &[&str], stdin: Option<&str>) -> std::io::Result<Output> {
        bounded(argv, stdin, COMMAND_LIMIT, self.sudo)
    }

    fn run(&self, argv: &[&str], stdin: Option<&str>) -> Output {
        self.try_run(argv, stdin)
            .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", argv.join(" ")))
    }

    /// Runs `argv`, which must succeed; its standard output.
    fn ok(&self, argv: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(argv, stdin);
        assert!(out.status.success(), "{}", describe(argv, &out));
        String::from_utf8(out.stdout).unwrap()
    }
}

/// Purges the package, its state and its user when the test ends, whatever failed.
struct Cleanup<'a>(&'a Root);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let root = self.0;
        let _ = root.try_run(&["dpkg", "--purge", "portcullis"], None);
        let _ = root.try_run(
            &["rm", "-rf", "/etc/portcullis", STATE, "/run/portcullis"],
            None,
        );
        let _ = root.try_run(&["userdel", "portcullis"], None);
        let _ = root.try_run(&["groupdel", "portcullis"], None);
    }
}

/// Runs `argv` to its end, at most `limit` (coreutils `timeout` then kills it and its
/// children), through `sudo -n` when `sudo`; `stdin` is written to it, then a newline. Of the
/// PORTCULLIS_* variables, the command sees only those `argv` sets.
fn bounded(
    argv: &[&str],
    stdin: Option<&str>,
    limit: Duration,
    sudo: bool,
) -> std::io::Result<Output> {
    let limit = format!("{}s", limit.as_secs());
    let mut full = Vec::with_capacity(argv.len() + 5);
    if sudo {
        // sudo first, so that `timeout` runs as root and can kill what it started.
        full.extend(["sudo", "-n"]);
    }
    full.extend(["timeout", "--kill-after=5s", &limit]);
    full.extend(argv);
    let mut command = Command::new(full[0]);
    command.args(&full[1..]);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PORTCULLIS_") {
            command.env_remove(name);
        }
    }
    let input = if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    let mut child = command
        .stdin(input)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(format!("{text}\n").as_bytes())?;
    }
    child.wait_with_output()
}

fn describe(argv: &[&str], out: &Output) -> String {
    let what = match out.status.code() {
        Some(124) => "did not finish in time".to_string(),
        _ => format!("failed ({})", out.status),
    };
    format!(
        "`{}` {what}:\n{}{}",
        argv.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
