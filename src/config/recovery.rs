//! `mail`, `sms` and `recovery`: how the gateway sends e-mail (SMTP, `.eml` files, or not at
//! all) and SMS (a webhook), and how long recovery links and codes live. Secrets (the SMTP
//! password, the webhook's headers) stay in files named here, read when a message is sent.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Validator;
use super::raw::{RawMail, RawRecovery, RawSms};

/// How e-mail leaves the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailTransport {
    /// No e-mail: recovery by e-mail is off (`user send-reset --print-link` still works).
    None,
    Smtp(SmtpConfig),
    /// One `.eml` file per message in this directory: for trials and the demo.
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    /// Empty: no AUTH.
    pub username: String,
    /// The password for AUTH, in a file of its own (never in the YAML).
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
    /// Plain text: a relay on the same host or a private network only.
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailConfig {
    pub transport: MailTransport,
    /// `Name <address>` or `address`, as written.
    pub from: String,
    /// The name in `from`, which the messages call the portal ("Portal" when none).
    pub portal_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsConfig {
    /// `POST` JSON `{"to","text"}` here; `None`: no SMS.
    pub webhook: Option<String>,
    /// `Name: value` lines sent with each call (an API token).
    pub headers_file: Option<PathBuf>,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryConfig {
    pub link_lifetime: Duration,
    pub resend_after: Duration,
    pub sms_code_lifetime: Duration,
}

/// `invitations`: how long an invitation's link works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvitationsConfig {
    pub lifetime: Duration,
}

impl MailConfig {
    pub fn enabled(&self) -> bool {
        self.transport != MailTransport::None
    }
}

impl Validator<'_> {
    pub(super) fn mail(&mut self, raw: RawMail, base: &Path, has_public_url: bool) -> MailConfig {
        let from = raw.from.unwrap_or_default();
        let transport = match raw.transport.as_deref().unwrap_or("none") {
            "none" => MailTransport::None,
            "file" => MailTransport::File(base.join(raw.dir.as_deref().unwrap_or("data/outbox"))),
            "smtp" => MailTransport::Smtp(self.smtp(raw.smtp, base)),
            other => {
                self.error(
                    "mail.transport",
                    format!("`{other}` is not a transport; use smtp, file or none"),
                );
                MailTransport::None
            }
        };
        let portal_name = match parse_mailbox(&from) {
            Some((name, _)) => name.unwrap_or("Portal").to_string(),
            None if transport == MailTransport::None && from.is_empty() => "Portal".into(),
            None => {
                self.error(
                    "mail.from",
                    format!("`{from}` must be an address, e.g. \"Portal <no-reply@example.com>\""),
                );
                "Portal".into()
            }
        };
        if transport != MailTransport::None && !has_public_url {
            self.error(
                "mail.transport",
                "needs public_url: the links in the messages point there (never to the Host a request names)",
            );
        }
        MailConfig {
            transport,
            from,
            portal_name,
        }
    }

    fn smtp(&mut self, raw: super::raw::RawSmtp, base: &Path) -> SmtpConfig {
        let host = raw.host.unwrap_or_default();
        if host.trim().is_empty() {
            self.error("mail.smtp.host", "is required with transport: smtp");
        }
        let security = match raw.security.as_deref().unwrap_or("starttls") {
            "starttls" => SmtpSecurity::StartTls,
            "tls" => SmtpSecurity::Tls,
            "none" => SmtpSecurity::None,
            other => {
                self.error(
                    "mail.smtp.security",
                    format!("`{other}` is not one of starttls, tls, none"),
                );
                SmtpSecurity::StartTls
            }
        };
        let default_port = if security == SmtpSecurity::Tls {
            465
        } else {
            587
        };
        let port = raw.port.unwrap_or(default_port);
        if port == 0 {
            self.error("mail.smtp.port", "must be a port between 1 and 65535");
        }
        let username = raw.username.unwrap_or_default();
        let password_file = raw
            .password_file
            .filter(|p| !p.is_empty())
            .map(|p| base.join(p));
        match (&password_file, username.is_empty()) {
            (Some(path), _) => self.readable("mail.smtp.password_file", path),
            (None, false) => self.error(
                "mail.smtp.password_file",
                "is required with a username: the password is read from this file, never from the YAML",
            ),
            (None, true) => {}
        }
        let loopback = ["localhost", "127.0.0.1", "::1", "[::1]"].contains(&host.trim())
            || host.trim().starts_with("127.");
        if security == SmtpSecurity::None && password_file.is_some() && !loopback {
            self.error(
                "mail.smtp.security",
                "none would send the password in clear to another host; use starttls or tls (none is for a relay on this host)",
            );
        }
        SmtpConfig {
            host,
            port,
            security,
            username,
            password_file,
        }
    }

    pub(super) fn sms(&mut self, raw: RawSms, base: &Path) -> SmsConfig {
        let webhook = raw.webhook.filter(|w| !w.is_empty());
        if let Some(url) = &webhook
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            self.error(
                "sms.webhook",
                format!("`{url}` must be an http:// or https:// URL"),
            );
        }
        let headers_file = raw
            .headers_file
            .filter(|p| !p.is_empty())
            .map(|p| base.join(p));
        if let Some(path) = &headers_file {
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    if let Err(line) = parse_headers(&text) {
                        self.error(
                            "sms.headers_file",
                            format!("line {line} of {} is not `Name: value`", path.display()),
                        );
                    }
                }
                Err(e) => self.error(
                    "sms.headers_file",
                    format!("cannot read {}: {e}", path.display()),
                ),
            }
        }
        let timeout = self.duration("sms.timeout", raw.timeout, Duration::from_secs(10));
        if timeout.is_zero() || timeout > Duration::from_secs(60) {
            self.error("sms.timeout", "must be between 1s and 60s");
        }
        SmsConfig {
            webhook,
            headers_file,
            timeout,
        }
    }

    pub(super) fn recovery(&mut self, raw: RawRecovery) -> RecoveryConfig {
        let mut within = |path: &str, value, default: u64, min: u64, max: u64, what: &str| {
            let d = self.duration(path, value, Duration::from_secs(default));
            if d.as_secs() < min || d.as_secs() > max {
                self.error(path, format!("must be between {what}"));
            }
            d
        };
        RecoveryConfig {
            link_lifetime: within(
                "recovery.link_lifetime",
                raw.link_lifetime,
                3600,
                10,
                7 * 86400,
                "10s and 7d",
            ),
            resend_after: within(
                "recovery.resend_after",
                raw.resend_after,
                60,
                0,
                3600,
                "0s and 1h",
            ),
            sms_code_lifetime: within(
                "recovery.sms_code_lifetime",
                raw.sms_code_lifetime,
                60,
                10,
                900,
                "10s and 15m",
            ),
        }
    }

    pub(super) fn invitations(&mut self, raw: super::raw::RawInvitations) -> InvitationsConfig {
        let lifetime = self.duration(
            "invitations.lifetime",
            raw.lifetime,
            Duration::from_secs(7 * 86_400),
        );
        if lifetime.as_secs() < 10 || lifetime.as_secs() > 90 * 86_400 {
            self.error("invitations.lifetime", "must be between 10s and 90d");
        }
        InvitationsConfig { lifetime }
    }

    fn readable(&mut self, path: &str, file: &Path) {
        if let Err(e) = std::fs::read(file) {
            self.error(path, format!("cannot read {}: {e}", file.display()));
        }
    }
}

/// `Name <local@domain>` or `local@domain` → (the name, the address).
pub fn parse_mailbox(text: &str) -> Option<(Option<&str>, &str)> {
    let text = text.trim();
    let (name, addr) = match text.rsplit_once('<') {
        Some((name, rest)) => {
            let addr = rest.strip_suffix('>')?;
            let name = name.trim().trim_matches('"').trim();
            ((!name.is_empty()).then_some(name), addr.trim())
        }
        None => (None, text),
    };
    let (local, domain) = addr.split_once('@')?;
    let plain = |s: &str| !s.is_empty() && !s.contains(['<', '>', ' ', ',', '@', '"']);
    (plain(local) && plain(domain) && domain.contains('.')).then_some((name, addr))
}

/// `Name: value` lines (blank lines and `#` comments skipped); `Err(line number)` at the first
/// line that is not one.
pub fn parse_headers(text: &str) -> Result<Vec<(String, String)>, usize> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(i + 1);
        };
        let name = name.trim();
        let token = |c: char| c.is_ascii_alphanumeric() || "-_".contains(c);
        if name.is_empty() || !name.chars().all(token) || value.contains(['\r', '\n']) {
            return Err(i + 1);
        }
        out.push((name.to_string(), value.trim().to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::parse_for_test as parse;

    #[test]
    fn defaults_need_nothing_and_send_nothing() {
        let c = parse("").unwrap();
        assert_eq!(c.mail.transport, MailTransport::None);
        assert_eq!(c.mail.portal_name, "Portal");
        assert_eq!(c.sms.webhook, None);
        assert_eq!(c.recovery.link_lifetime, Duration::from_secs(3600));
        assert_eq!(c.recovery.resend_after, Duration::from_secs(60));
        assert_eq!(c.recovery.sms_code_lifetime, Duration::from_secs(60));
    }

    #[test]
    fn smtp_with_its_defaults_and_the_portal_name_from_the_sender() {
        let c = parse(
            "public_url: https://portal.example.com\nmail:\n  transport: smtp\n  from: \"Acme Portal <no-reply@acme.example>\"\n  smtp: {host: relay.internal}\n",
        )
        .unwrap();
        let MailTransport::Smtp(smtp) = &c.mail.transport else {
            panic!("smtp");
        };
        assert_eq!(
            (smtp.port, smtp.security, smtp.password_file.clone()),
            (587, SmtpSecurity::StartTls, None)
        );
        assert_eq!(c.mail.portal_name, "Acme Portal");
        let file =
            parse("public_url: https://p.example\nmail: {transport: file, from: a@b.example}\n")
                .unwrap();
        assert_eq!(
            file.mail.transport,
            MailTransport::File("/etc/portcullis/data/outbox".into())
        );
    }

    #[test]
    fn mistakes_are_reported_where_they_are() {
        let e = parse(
            "mail:\n  transport: smtp\n  from: nobody\n  smtp: {username: u, security: ssl}\nsms:\n  webhook: ftp://x\n  timeout: 5m\nrecovery:\n  link_lifetime: 5s\n",
        )
        .unwrap_err();
        for needle in [
            "t.yaml:3:14: mail.transport: needs public_url",
            "mail.from: `nobody` must be an address",
            "mail.smtp.host: is required",
            "mail.smtp.security: `ssl` is not one of starttls, tls, none",
            "mail.smtp.password_file: is required with a username",
            "sms.webhook: `ftp://x` must be an http:// or https:// URL",
            "sms.timeout: must be between 1s and 60s",
            "recovery.link_lifetime: must be between 10s and 7d",
        ] {
            assert!(e.contains(needle), "{needle} in:\n{e}");
        }
        // A password in clear goes only to this host.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "secret\n").unwrap();
        let smtp = |host: &str| {
            let yaml = format!(
                "upstream: http://127.0.0.1:1\npublic_url: https://p.example\nmail:\n  transport: smtp\n  from: a@b.example\n  smtp: {{host: {host}, security: none, username: u, password_file: pw}}\n"
            );
            crate::config::Config::parse(&yaml, "t.yaml", dir.path())
        };
        assert!(smtp("127.0.0.1").is_ok());
        let e = smtp("mail.example.com").unwrap_err().to_string();
        assert!(
            e.contains("mail.smtp.security: none would send the password in clear"),
            "{e}"
        );
    }

    #[test]
    fn mailboxes_and_header_files() {
        assert_eq!(
            parse_mailbox("Portal <no-reply@example.com>"),
            Some((Some("Portal"), "no-reply@example.com"))
        );
        assert_eq!(
            parse_mailbox("\"The Portal\" <a@b.example>"),
            Some((Some("The Portal"), "a@b.example"))
        );
        assert_eq!(parse_mailbox("a@b.example"), Some((None, "a@b.example")));
        for bad in ["", "a@b", "<a@b.example", "a b@c.example", "Portal <>"] {
            assert_eq!(parse_mailbox(bad), None, "{bad}");
        }
        assert_eq!(
            parse_headers("# token\nAuthorization: Bearer x:y\n\nX-Key: 1\n"),
            Ok(vec![
                ("Authorization".into(), "Bearer x:y".into()),
                ("X-Key".into(), "1".into())
            ])
        );
        assert_eq!(parse_headers("X-Key: 1\nno colon\n"), Err(2));
        assert_eq!(parse_headers("Bad Name: 1\n"), Err(1));
    }
}
