//! The messages the gateway sends and how they leave: e-mail in plain text and HTML (no
//! tracking, no external images) by SMTP or as `.eml` files, SMS by a webhook. Secrets in a
//! message (a link, a code) are never part of an error or a log line.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{MailConfig, MailTransport, SmsConfig, SmtpConfig, SmtpSecurity};
use crate::core::identity::User;
use crate::core::time::{Clock, SystemClock, UnixTime, rfc3339};

/// Longest a conversation with the SMTP server may take; well within the outbox's lease, so
/// that no other gateway claims a message while this one is still sending it.
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// One e-mail's words: the subject, and the body as plain text and as HTML.
pub struct Letter {
    pub subject: String,
    text: String,
    html: String,
}

#[derive(askama::Template)]
#[template(path = "mail.html")]
struct MailHtml<'a> {
    portal: &'a str,
    subject: &'a str,
    before: &'a [String],
    link: Option<&'a str>,
    button: &'a str,
    after: &'a [String],
}

/// Why a message was not sent. Never holds the message itself.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("`{0}` is not an e-mail address")]
    Address(String),
    #[error("no e-mail transport is configured")]
    NoMail,
    #[error("no SMS webhook is configured")]
    NoSms,
    #[error("cannot read {path}: {error}")]
    Secret { path: String, error: String },
    #[error("SMTP: {0}")]
    Smtp(String),
    /// The server refused the message for good (a 5xx answer): trying again cannot help.
    #[error("SMTP refused it: {0}")]
    Rejected(String),
    #[error("cannot write the message file: {0}")]
    File(#[from] std::io::Error),
    #[error("SMS webhook: {0}")]
    Sms(String),
}

impl SendError {
    /// Whether trying again later cannot help.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            SendError::Address(_) | SendError::NoMail | SendError::NoSms | SendError::Rejected(_)
        )
    }
}

/// Whether an e-mail to `to` could leave as configured, before anything is made for it.
pub fn check_mail(cfg: &MailConfig, to: &str) -> Result<(), SendError> {
    if !cfg.enabled() {
        return Err(SendError::NoMail);
    }
    to.parse::<Mailbox>()
        .map(drop)
        .map_err(|_| SendError::Address(to.to_string()))
}

/// "60 minutes", "2 hours", "1 day": a lifetime as a mail says it.
pub fn spoken(d: Duration) -> String {
    let s = d.as_secs();
    let (n, unit) = match s {
        _ if s >= 86_400 && s.is_multiple_of(86_400) => (s / 86_400, "day"),
        _ if s >= 7200 && s.is_multiple_of(3600) => (s / 3600, "hour"),
        _ if s >= 60 && s.is_multiple_of(60) => (s / 60, "minute"),
        _ => (s, "second"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

fn letter(
    portal: &str,
    subject: String,
    before: Vec<String>,
    link: Option<(&str, &str)>,
    after: Vec<String>,
) -> Letter {
    let mut text = format!("{portal}\n\n");
    for line in &before {
        text.push_str(line);
        text.push_str("\n\n");
    }
    if let Some((_, url)) = link {
        text.push_str(url);
        text.push_str("\n\n");
    }
    for line in &after {
        text.push_str(line);
        text.push_str("\n\n");
    }
    let html = MailHtml {
        portal,
        subject: &subject,
        before: &before,
        link: link.map(|(_, url)| url),
        button: link.map_or("", |(button, _)| button),
        after: &after,
    };
    let html = askama::Template::render(&html).unwrap_or_else(|e| {
        tracing::error!(error = %e, "an e-mail's HTML could not be rendered; sending text only");
        String::new()
    });
    Letter {
        subject,
        text: text.trim_end().to_string() + "\n",
        html,
    }
}

/// The reset link's e-mail.
pub fn reset_letter(portal: &str, user: &User, link: &str, lifetime: Duration) -> Letter {
    letter(
        portal,
        "Reset your password".into(),
        vec![
            format!("Hello {},", greeting(user)),
            format!(
                "Someone, probably you, asked to reset the password of your {portal} account ({}). To choose a new password, open this link within {}:",
                user.login,
                spoken(lifetime)
            ),
        ],
        Some(("Choose a new password", link)),
        vec!["The link works once. If you did not ask for it, ignore this message: your password stays as it is.".into()],
    )
}

/// The invitation's e-mail.
pub fn invitation_letter(portal: &str, user: &User, link: &str, lifetime: Duration) -> Letter {
    letter(
        portal,
        format!("You are invited to {portal}"),
        vec![
            format!("Hello {},", greeting(user)),
            format!(
                "an account on {portal} is waiting for you ({}). To finish your registration, choose a password within {}:",
                user.login,
                spoken(lifetime)
            ),
        ],
        Some(("Choose your password", link)),
        vec![
            "The link works once. If you did not expect this invitation, ignore this message."
                .into(),
        ],
    )
}

/// The link that confirms a new e-mail address, sent to that address.
pub fn confirm_email_letter(portal: &str, user: &User, link: &str, lifetime: Duration) -> Letter {
    letter(
        portal,
        "Confirm your new e-mail address".into(),
        vec![
            format!("Hello {},", greeting(user)),
            format!(
                "this address was given as the new e-mail address of your {portal} account ({}). To confirm it, open this link within {}:",
                user.login,
                spoken(lifetime)
            ),
        ],
        Some(("Confirm this address", link)),
        vec![
            "Until you do, nothing changes. If you did not ask for this, ignore this message."
                .into(),
        ],
    )
}

/// The notice that the password was changed.
pub fn changed_letter(portal: &str, user: &User, at: UnixTime) -> Letter {
    letter(
        portal,
        "Your password was changed".into(),
        vec![
            format!("Hello {},", greeting(user)),
            format!(
                "The password of your {portal} account ({}) was changed at {} (UTC), and every device signed in to it was signed out.",
                user.login,
                rfc3339(at)
            ),
        ],
        None,
        vec!["If you did not do this, contact your administrator at once.".into()],
    )
}

/// The SMS with a reset code.
pub fn sms_text(portal: &str, code: &str, lifetime: Duration) -> String {
    format!(
        "{portal}: your password reset code is {code}. It is valid for {}. Do not share it.",
        spoken(lifetime)
    )
}

fn greeting(user: &User) -> &str {
    if user.name.trim().is_empty() {
        &user.login
    } else {
        &user.name
    }
}

/// Sends `letter` to `to` as `cfg` says: SMTP, a file, or (transport none) not at all.
pub async fn send_mail(cfg: &MailConfig, to: &str, letter: &Letter) -> Result<(), SendError> {
    let from: Mailbox = cfg
        .from
        .parse()
        .map_err(|_| SendError::Address(cfg.from.clone()))?;
    let to: Mailbox = to.parse().map_err(|_| SendError::Address(to.to_string()))?;
    let builder = Message::builder()
        .from(from)
        .to(to)
        .subject(&letter.subject);
    let message = if letter.html.is_empty() {
        builder.singlepart(SinglePart::plain(letter.text.clone()))
    } else {
        builder.multipart(MultiPart::alternative_plain_html(
            letter.text.clone(),
            letter.html.clone(),
        ))
    }
    .map_err(|e| SendError::Smtp(e.to_string()))?;
    match &cfg.transport {
        MailTransport::None => Err(SendError::NoMail),
        MailTransport::File(dir) => write_eml(dir, &message.formatted()).await,
        MailTransport::Smtp(smtp) => {
            let transport = smtp_transport(smtp).await?;
            transport.send(message).await.map(drop).map_err(|e| {
                if e.is_permanent() {
                    SendError::Rejected(e.to_string())
                } else {
                    SendError::Smtp(e.to_string())
                }
            })
        }
    }
}

async fn smtp_transport(
    smtp: &SmtpConfig,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, SendError> {
    let smtp_error = |e: lettre::transport::smtp::Error| SendError::Smtp(e.to_string());
    let builder = match smtp.security {
        SmtpSecurity::StartTls => {
            AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host).map_err(smtp_error)?
        }
        SmtpSecurity::Tls => {
            AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host).map_err(smtp_error)?
        }
        SmtpSecurity::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host),
    };
    let mut builder = builder.port(smtp.port).timeout(Some(SMTP_TIMEOUT));
    if let Some(path) = &smtp.password_file {
        let password = read_secret(path).await?;
        builder = builder.credentials(Credentials::new(smtp.username.clone(), password));
    }
    Ok(builder.build())
}

/// A secret file's content without its final line break.
async fn read_secret(path: &std::path::Path) -> Result<String, SendError> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| SendError::Secret {
            path: path.display().to_string(),
            error: e.to_string(),
        })?;
    Ok(text.trim_end_matches(['\r', '\n']).to_string())
}

/// Writes one message as `<millis>-<random>.eml`, whole or not at all (a temporary name, then
/// a rename), readable by its owner only: it holds a live link.
async fn write_eml(dir: &std::path::Path, bytes: &[u8]) -> Result<(), SendError> {
    use std::os::unix::fs::OpenOptionsExt;
    tokio::fs::create_dir_all(dir).await?;
    let millis = SystemClock.now_millis();
    let name = format!("{millis}-{:08x}", rand::random::<u32>());
    let (tmp, eml) = (
        dir.join(format!(".{name}.tmp")),
        dir.join(format!("{name}.eml")),
    );
    let bytes = bytes.to_vec();
    let tmp2 = tmp.clone();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp2)?;
        f.write_all(&bytes)?;
        f.sync_all()
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))??;
    tokio::fs::rename(&tmp, &eml).await?;
    Ok(())
}

/// Posts `{"to", "text"}` to the webhook, with the headers of `headers_file`, within the
/// configured time; any 2xx is sent.
pub async fn send_sms(cfg: &SmsConfig, to: &str, text: &str) -> Result<(), SendError> {
    let Some(url) = &cfg.webhook else {
        return Err(SendError::NoSms);
    };
    let headers = match &cfg.headers_file {
        Some(path) => crate::config::parse_headers(&read_secret(path).await?).map_err(|line| {
            SendError::Sms(format!(
                "{}: line {line} is not `Name: value`",
                path.display()
            ))
        })?,
        None => Vec::new(),
    };
    let body = serde_json::json!({"to": to, "text": text}).to_string();
    let mut request =
        http::Request::post(url.as_str()).header(http::header::CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| SendError::Sms(format!("a header of the headers file: {e}")))?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
        .map_err(|e| SendError::Sms(format!("no CA certificates: {e}")))?
        .https_or_http()
        .enable_http1()
        .build();
    let client = Client::builder(TokioExecutor::new()).build::<_, Full<Bytes>>(connector);
    // Errors name neither the URL (it may hold an API key) nor the message.
    let response = tokio::time::timeout(cfg.timeout, client.request(request))
        .await
        .map_err(|_| SendError::Sms(format!("no answer within {:?}", cfg.timeout)))?
        .map_err(|e| SendError::Sms(connect_error(&e)))?;
    match response.status() {
        s if s.is_success() => Ok(()),
        s => Err(SendError::Sms(format!("the webhook answered {s}"))),
    }
}

/// A client error in words, without the URL.
fn connect_error(e: &hyper_util::client::legacy::Error) -> String {
    use std::error::Error;
    match e.source() {
        Some(cause) if e.is_connect() => format!("cannot connect: {cause}"),
        Some(cause) => cause.to_string(),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_are_spoken_in_whole_units() {
        let cases = [
            (3600, "60 minutes"),
            (60, "1 minute"),
            (7200, "2 hours"),
            (86_400, "1 day"),
            (90, "90 seconds"),
            (45, "45 seconds"),
        ];
        for (secs, want) in cases {
            assert_eq!(spoken(Duration::from_secs(secs)), want);
        }
    }

    #[test]
    fn letters_escape_what_users_typed_and_carry_the_link() {
        let user = User {
            id: 1,
            login: "bob".into(),
            email: "bob@example.com".into(),
            name: "<b>Bob</b>".into(),
            phone: String::new(),
            groups: vec![],
            password_hash: String::new(),
            dismissed: false,
            created_at: 0,
        };
        let l = reset_letter(
            "Intranet & Co",
            &user,
            "https://p.example/_portcullis/reset?token=abc",
            Duration::from_secs(3600),
        );
        assert!(
            l.text
                .contains("https://p.example/_portcullis/reset?token=abc")
        );
        assert!(l.text.contains("within 60 minutes"));
        assert!(l.html.contains("&lt;b&gt;Bob&lt;/b&gt;") && !l.html.contains("<b>Bob"));
        assert!(l.html.contains("Intranet &amp; Co"));
        assert!(!l.html.contains("<img") && !l.html.contains("<script"));
    }
}
