//! What the event log holds: the kinds of events (docs/reference.md, Events) and one event
//! with its fields. Plain data; nothing secret is ever a field.

use crate::core::time::{UnixTime, rfc3339};

/// Every kind of event of docs/reference.md (Events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    LoginSuccess,
    LoginFailure,
    CaptchaRequired,
    AccountLocked,
    Logout,
    SessionExpired,
    SessionRenewed,
    IpDenied,
    IpRestricted,
    UserCreated,
    UserDismissed,
    UserRestored,
    PasswordChanged,
    SessionsRevoked,
    ConfigReloaded,
    ConfigRejected,
    TwoFactorEnrolled,
    TwoFactorFailure,
    BackupCodeUsed,
    BackupCodesRegenerated,
    TwoFactorReset,
    TwoFactorDisabled,
    RecoveryRequested,
    RecoveryFailed,
    PasswordReset,
    MailFailed,
    UserInvited,
    InvitationAccepted,
    UserUpdated,
    EmailChanged,
    PhoneChanged,
}

impl EventKind {
    pub const ALL: [EventKind; 31] = [
        EventKind::LoginSuccess,
        EventKind::LoginFailure,
        EventKind::CaptchaRequired,
        EventKind::AccountLocked,
        EventKind::Logout,
        EventKind::SessionExpired,
        EventKind::SessionRenewed,
        EventKind::IpDenied,
        EventKind::IpRestricted,
        EventKind::UserCreated,
        EventKind::UserDismissed,
        EventKind::UserRestored,
        EventKind::PasswordChanged,
        EventKind::SessionsRevoked,
        EventKind::ConfigReloaded,
        EventKind::ConfigRejected,
        EventKind::TwoFactorEnrolled,
        EventKind::TwoFactorFailure,
        EventKind::BackupCodeUsed,
        EventKind::BackupCodesRegenerated,
        EventKind::TwoFactorReset,
        EventKind::TwoFactorDisabled,
        EventKind::RecoveryRequested,
        EventKind::RecoveryFailed,
        EventKind::PasswordReset,
        EventKind::MailFailed,
        EventKind::UserInvited,
        EventKind::InvitationAccepted,
        EventKind::UserUpdated,
        EventKind::EmailChanged,
        EventKind::PhoneChanged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::LoginSuccess => "login_success",
            EventKind::LoginFailure => "login_failure",
            EventKind::CaptchaRequired => "captcha_required",
            EventKind::AccountLocked => "account_locked",
            EventKind::Logout => "logout",
            EventKind::SessionExpired => "session_expired",
            EventKind::SessionRenewed => "session_renewed",
            EventKind::IpDenied => "ip_denied",
            EventKind::IpRestricted => "ip_restricted",
            EventKind::UserCreated => "user_created",
            EventKind::UserDismissed => "user_dismissed",
            EventKind::UserRestored => "user_restored",
            EventKind::PasswordChanged => "password_changed",
            EventKind::SessionsRevoked => "sessions_revoked",
            EventKind::ConfigReloaded => "config_reloaded",
            EventKind::ConfigRejected => "config_rejected",
            EventKind::TwoFactorEnrolled => "two_factor_enrolled",
            EventKind::TwoFactorFailure => "two_factor_failure",
            EventKind::BackupCodeUsed => "backup_code_used",
            EventKind::BackupCodesRegenerated => "backup_codes_regenerated",
            EventKind::TwoFactorReset => "two_factor_reset",
            EventKind::TwoFactorDisabled => "two_factor_disabled",
            EventKind::RecoveryRequested => "recovery_requested",
            EventKind::RecoveryFailed => "recovery_failed",
            EventKind::PasswordReset => "password_reset",
            EventKind::MailFailed => "mail_failed",
            EventKind::UserInvited => "user_invited",
            EventKind::InvitationAccepted => "invitation_accepted",
            EventKind::UserUpdated => "user_updated",
            EventKind::EmailChanged => "email_changed",
            EventKind::PhoneChanged => "phone_changed",
        }
    }

    pub fn parse(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// One line of the event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub ts: UnixTime,
    pub event: String,
    pub login: String,
    pub ip: String,
    pub user_agent: String,
    /// First 8 hex characters of the session hash, or empty.
    pub session: String,
    pub detail: String,
}

impl Event {
    pub fn new(kind: EventKind, ts: UnixTime) -> Event {
        Event {
            ts,
            event: kind.as_str().to_string(),
            login: String::new(),
            ip: String::new(),
            user_agent: String::new(),
            session: String::new(),
            detail: String::new(),
        }
    }

    pub fn login(mut self, login: &str) -> Event {
        self.login = login.to_string();
        self
    }

    pub fn client(mut self, ip: &str, user_agent: &str) -> Event {
        self.ip = ip.to_string();
        // A user agent is client-chosen text: bound it so it cannot bloat the log.
        self.user_agent = user_agent.chars().take(256).collect();
        self
    }

    pub fn session(mut self, short_hash: String) -> Event {
        self.session = short_hash;
        self
    }

    pub fn detail(mut self, detail: &str) -> Event {
        self.detail = detail.to_string();
        self
    }

    /// One line of `audit.file` and of `portcullis audit --json`: the fields of
    /// docs/reference.md (Events), `ts` in
    /// RFC 3339 UTC.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "ts": rfc3339(self.ts),
            "event": self.event,
            "login": self.login,
            "ip": self.ip,
            "user_agent": self.user_agent,
            "session": self.session,
            "detail": self.detail,
        })
        .to_string()
    }
}
