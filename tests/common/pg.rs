//! PostgreSQL for tests: a throwaway database on the server named by `PORTCULLIS_TEST_POSTGRES`
//! (CI and `make test` set it), dropped afterwards; and a private server started with `pg_ctl`
//! for tests that stop and start it.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The server tests use, e.g. `postgres://postgres@127.0.0.1:5432/test`. Unset, the test
/// fails, unless `PORTCULLIS_SKIP_POSTGRES=1` says to skip it (then `None`): a PostgreSQL test
/// never passes without having run by accident.
pub fn server() -> Option<String> {
    match std::env::var("PORTCULLIS_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("PORTCULLIS_SKIP_POSTGRES").is_ok_and(|v| v == "1") => {
            eprintln!("PORTCULLIS_SKIP_POSTGRES=1: this PostgreSQL test is SKIPPED");
            None
        }
        _ => panic!(
            "set PORTCULLIS_TEST_POSTGRES=postgres://USER@HOST:PORT/DB (`make test` does), \
             or PORTCULLIS_SKIP_POSTGRES=1 to skip the PostgreSQL tests"
        ),
    }
}

/// Runs SQL through `psql` on the database named by `url`.
fn psql(url: &str, sql: &str) {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A database of its own for one test, dropped (connections and all) when it goes.
pub struct Database {
    admin: String,
    name: String,
    pub url: String,
}

impl Database {
    /// A fresh, empty database on the server at `server` (a URL ending in `/dbname`).
    pub fn create(server: &str) -> Database {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "portcullis_test_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let (base, _) = server.rsplit_once('/').expect("a URL ending in /dbname");
        psql(server, &format!("CREATE DATABASE {name}"));
        Database {
            admin: server.to_string(),
            url: format!("{base}/{name}"),
            name,
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                &self.admin,
                "-q",
                "-c",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}

/// Where Debian keeps the server programs (`initdb`, `pg_ctl`).
fn bin(program: &str) -> PathBuf {
    let root = PathBuf::from("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("/usr/lib/postgresql")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("a PostgreSQL version")
        .join("bin")
        .join(program)
}

/// A private PostgreSQL server on 127.0.0.1:`port`, with trust auth, that the test can stop
/// and start. It runs as the `postgres` user when the tests run as root (initdb refuses root).
pub struct Server {
    dir: tempfile::TempDir,
    pub port: u16,
}

impl Server {
    pub fn start(port: u16) -> Server {
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            let owner = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(owner.success());
        }
        let data = dir.path().join("data");
        run_as_postgres(
            bin("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        let server = Server { dir, port };
        server.resume();
        let url = server.url("postgres");
        psql(&url, "CREATE DATABASE portcullis");
        server
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Starts the server (again) and waits until it takes connections.
    pub fn resume(&self) {
        let data = self.dir.path().join("data");
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        run_as_postgres(
            bin("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &options,
                "-l",
                self.dir.path().join("log").to_str().unwrap(),
                "-w",
                "start",
            ],
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "PostgreSQL did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server at once (connections are cut, as in a crash of the network path).
    pub fn stop(&self) {
        let data = self.dir.path().join("data");
        run_as_postgres(
            bin("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = command_as_postgres(
            bin("pg_ctl"),
            &["-D", data.to_str().unwrap(), "-m", "immediate", "stop"],
        )
        .output();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

fn command_as_postgres(program: PathBuf, args: &[&str]) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program).args(args);
        c
    } else {
        let mut c = Command::new(program);
        c.args(args);
        c
    }
}

fn run_as_postgres(program: PathBuf, args: &[&str]) {
    let out = command_as_postgres(program.clone(), args).output().unwrap();
    assert!(
        out.status.success(),
        "{} {args:?}: {}{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
