//! The event log: what happened, to whom, from where. Events go to the store; nothing secret
//! (password, token, CAPTCHA answer) is ever part of one, and writing one never blocks the proxy.

use std::sync::Arc;

use serde::Serialize;

use crate::store::{Store, UnixTime};

/// Every kind of event of SPEC §10.
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
}

impl EventKind {
    pub const ALL: [EventKind; 16] = [
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
        }
    }

    pub fn parse(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// One line of the event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
}

/// Writes events without holding up the caller.
#[derive(Clone)]
pub struct Audit {
    store: Arc<dyn Store>,
    /// Keys of events recorded in the last minute, for events a scanner could repeat at will.
    recent: moka::sync::Cache<String, ()>,
}

impl Audit {
    pub fn new(store: Arc<dyn Store>) -> Audit {
        Audit {
            store,
            recent: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(std::time::Duration::from_secs(60))
                .build(),
        }
    }

    /// Records `event` unless one with the same `key` was recorded in the last minute, so that
    /// a flood of refused requests cannot flood the store.
    pub fn record_once_per_minute(&self, key: String, event: Event) {
        // One atomic check-and-insert: two refused requests at once record one event.
        if self.recent.entry(key).or_insert(()).is_fresh() {
            self.record(event);
        }
    }

    /// Records in the background; a failure is logged, never silently dropped.
    pub fn record(&self, event: Event) {
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(e) = store.record_event(&event).await {
                tracing::error!(event = %event.event, error = %e, "could not store an event");
            }
        });
    }

    /// Records and waits: for commands that exit right after.
    pub async fn record_now(&self, event: Event) {
        if let Err(e) = self.store.record_event(&event).await {
            tracing::error!(event = %event.event, error = %e, "could not store an event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_round_trip() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(EventKind::parse("nope"), None);
    }
}
