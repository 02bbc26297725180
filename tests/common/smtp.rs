//! Debian's aiosmtpd as the tests' SMTP server, started on loopback, and the messages it
//! accepted, read back by Python's own e-mail parser.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, within};

/// Debian's aiosmtpd on loopback, keeping every message it accepts in a Maildir.
pub struct Smtp {
    pub port: u16,
    pub maildir: PathBuf,
    _dir: Option<tempfile::TempDir>,
    child: Option<Child>,
}

impl Smtp {
    pub fn start() -> Smtp {
        let dir = tempfile::tempdir().unwrap();
        let mut smtp = Smtp {
            port: free_port(),
            maildir: dir.path().join("maildir"),
            _dir: Some(dir),
            child: None,
        };
        smtp.run();
        smtp
    }

    /// A port where no SMTP server listens yet (`run` starts one there later).
    pub fn down() -> Smtp {
        let dir = tempfile::tempdir().unwrap();
        Smtp {
            port: free_port(),
            maildir: dir.path().join("maildir"),
            _dir: Some(dir),
            child: None,
        }
    }

    pub fn run(&mut self) {
        let child = Command::new("/usr/bin/python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{}", self.port))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&self.maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("Debian's python3-aiosmtpd (scripts/bootstrap.sh --tests installs it)");
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let up = within(Duration::from_secs(10), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        assert!(up.is_some(), "aiosmtpd did not start on {addr}");
    }

    pub fn yaml(&self) -> String {
        format!(
            "public_url: http://portal.example\nmail:\n  transport: smtp\n  from: \"Intranet <no-reply@portal.example>\"\n  smtp: {{host: 127.0.0.1, port: {}, security: none}}\n",
            self.port
        )
    }

    pub fn files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.maildir.join("new"))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        files
    }

    /// Waits (at most 15 s) until `n` messages have arrived, and returns them, oldest first.
    pub fn wait_for(&self, n: usize) -> Vec<Mail> {
        let arrived = within(Duration::from_secs(15), || self.files().len() >= n);
        assert!(
            arrived.is_some(),
            "{n} message(s) expected, {} arrived",
            self.files().len()
        );
        self.files().iter().map(|p| Mail::read(p)).collect()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One message as Python's e-mail parser reads it.
#[derive(Debug)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

const PARSE: &str = r#"
import email, sys, email.policy
m = email.message_from_binary_file(open(sys.argv[1], "rb"), policy=email.policy.default)
print(m["To"]); print(m["Subject"])
print(m.get_body(("plain",)).get_content()); print("\x00")
print(m.get_body(("html",)).get_content())
"#;

impl Mail {
    pub fn read(path: &Path) -> Mail {
        let out = Command::new("/usr/bin/python3")
            .args(["-c", PARSE])
            .arg(path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let all = String::from_utf8(out.stdout).unwrap();
        let mut lines = all.splitn(3, '\n');
        let (to, subject) = (lines.next().unwrap(), lines.next().unwrap());
        let (text, html) = lines.next().unwrap().split_once('\0').unwrap();
        Mail {
            to: to.into(),
            subject: subject.into(),
            text: text.into(),
            html: html.into(),
        }
    }
}
