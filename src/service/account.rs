//! The account page's services (SPEC §14): a user's own sessions and recent sign-ins, ending
//! one session or all of them, and a new password while signed in. Every ending goes through
//! the store, so every gateway drops the session within 2 s.

use std::sync::Arc;

use crate::config::Config;
use crate::core::addr::ClientAddr;
use crate::core::event::{Event, EventKind};
use crate::core::identity::{Client, User};
use crate::core::secret::Password;
use crate::core::time::Clock;
use crate::policy::recovery::{PasswordRefusal, check_new_password};
use crate::service::audit::Audit;
use crate::service::recovery::Recovery;
use crate::service::sessions::{Ended, Issued, Sessions};
use crate::service::signin::{LoginError, Outcome, SignIn};
use crate::store::{EventFilter, Store, StoreError, UserChange};

/// Sign-ins and failures the page shows.
pub const RECENT: usize = 20;

/// What a password change led to.
pub enum PasswordChange {
    /// Set; every session and remember-me token ended, and this browser has a new session.
    Done(Issued),
    /// The current password was not right (or the attempt was throttled or locked).
    Refused(Outcome),
    Invalid(PasswordRefusal),
}

/// The change-password form: the current password, and the new one twice.
pub struct NewPassword {
    pub current: Password,
    pub new: Password,
    pub again: Password,
}

pub struct Account {
    store: Arc<dyn Store>,
    signin: Arc<SignIn>,
    sessions: Arc<Sessions>,
    recovery: Arc<Recovery>,
    audit: Audit,
    clock: Arc<dyn Clock>,
}

impl Account {
    pub fn new(
        store: Arc<dyn Store>,
        signin: Arc<SignIn>,
        sessions: Arc<Sessions>,
        recovery: Arc<Recovery>,
        audit: Audit,
        clock: Arc<dyn Clock>,
    ) -> Account {
        Account {
            store,
            signin,
            sessions,
            recovery,
            audit,
            clock,
        }
    }

    fn event(&self, kind: EventKind, user: &User, client: &Client, detail: &str) {
        self.audit.record(
            Event::new(kind, self.clock.now())
                .login(&user.login)
                .client(&client.ip, &client.user_agent)
                .detail(detail),
        );
    }

    /// The user's last `RECENT` sign-ins and failed attempts, newest first.
    pub async fn recent(&self, user: &User) -> Result<Vec<Event>, StoreError> {
        let mut all = Vec::new();
        for kind in [EventKind::LoginSuccess, EventKind::LoginFailure] {
            let filter = EventFilter {
                login: Some(user.login.clone()),
                event: Some(kind.as_str().to_string()),
                since: None,
                limit: Some(RECENT as u32),
            };
            all.extend(self.store.events(&filter).await?);
        }
        all.sort_by_key(|e| std::cmp::Reverse(e.ts));
        all.truncate(RECENT);
        Ok(all)
    }

    /// "Log out on all devices": every session and remember-me token of the user, this one
    /// included. Returns how many sessions ended.
    pub async fn logout_all(&self, user: &User, client: &Client) -> Result<u64, StoreError> {
        let now = self.clock.now();
        let n = self
            .store
            .end_user_sessions(user.id, now, Ended::Revoked.as_str(), UserChange::Nothing)
            .await?;
        self.event(
            EventKind::SessionsRevoked,
            user,
            client,
            "logout on all devices",
        );
        Ok(n)
    }

    /// A new password, the current one first (checked like a sign-in: the address's budget,
    /// the lock, counted as a failure when wrong). Every session and remember-me token of the
    /// user ends on every gateway; this browser goes on with a new session.
    pub async fn change_password(
        &self,
        cfg: &Config,
        user: &User,
        form: NewPassword,
        client: &Client,
        addr: ClientAddr,
    ) -> Result<PasswordChange, LoginError> {
        if let Some(refusal) = self
            .signin
            .reconfirm(cfg, user, &form.current, client, addr)
            .await?
        {
            return Ok(PasswordChange::Refused(refusal));
        }
        let min = cfg.passwords.min_length;
        let (new, again) = (form.new, form.again.expose());
        if let Err(refusal) = check_new_password(new.expose(), again, min, &user.login, &user.email)
        {
            return Ok(PasswordChange::Invalid(refusal));
        }
        let phc = self.signin.hash_new(new).await.map_err(LoginError::Hash)?;
        let now = self.clock.now();
        let ended = self
            .store
            .end_user_sessions(
                user.id,
                now,
                Ended::Revoked.as_str(),
                UserChange::Password(phc),
            )
            .await?;
        let issued = self.sessions.issue(user, None, client).await?;
        self.recovery.notify_password_changed(cfg, user).await?;
        self.event(EventKind::PasswordChanged, user, client, "by the user");
        let detail = format!("password changed, {ended} sessions");
        self.event(EventKind::SessionsRevoked, user, client, &detail);
        Ok(PasswordChange::Done(issued))
    }
}
