//! The account page's services (SPEC §14): a user's own sessions and recent sign-ins, ending
//! one session or all of them, and a new password while signed in. Every ending goes through
//! the store, so every gateway drops the session within 2 s.

use std::sync::Arc;

use crate::config::Config;
use crate::core::addr::ClientAddr;
use crate::core::event::{Event, EventKind};
use crate::core::identity::{Client, NewUser, User, phone_key};
use crate::core::secret::{ContactChange, OneTimeCode, Password, link_hash};
use crate::core::time::Clock;
use crate::policy::recovery::{PasswordRefusal, check_new_password};
use crate::policy::totp;
use crate::service::audit::Audit;
use crate::service::recovery::Recovery;
use crate::service::sessions::{Ended, Issued, Sessions};
use crate::service::signin::{LoginError, Outcome, SignIn};
use crate::service::two_factor::{Checked, TwoFactor};
use crate::store::{EventFilter, RecoveryKind, Store, StoreError, UserChange};

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

/// What turning two-step verification off led to.
pub enum TurnOff {
    /// Off; every session ended, and this browser goes on with a new one.
    Done(Issued),
    /// The current password was not right (or throttled, or locked).
    Refused(Outcome),
    /// The code was wrong or used.
    WrongCode,
    /// The user's groups require it (`two_factor.required_groups`), or it is not on.
    NotAllowed,
}

/// Why a new e-mail address or phone number was not queued for confirmation.
pub enum NotQueued {
    /// Another request came less than `resend_after` ago.
    Wait(u64),
    /// The current password was not right (or the attempt was throttled or locked).
    Refused(Outcome),
    /// Not an address or number, the same one, or taken: the message says which.
    Invalid(String),
}

/// What a code for a new phone number led to.
pub enum PhoneConfirmed {
    Done(User),
    Wrong,
    /// No code, or its tries or time are spent, or the form does not fit the account.
    Invalid,
    Throttled(u64),
}

/// What following a confirmation link led to.
pub enum EmailConfirmed {
    Done(User),
    /// Someone else has the address now.
    Taken,
    /// Expired, altered, already used, or the account changed since.
    Invalid,
}

pub struct Account {
    store: Arc<dyn Store>,
    signin: Arc<SignIn>,
    two_factor: Arc<TwoFactor>,
    sessions: Arc<Sessions>,
    recovery: Arc<Recovery>,
    audit: Audit,
    clock: Arc<dyn Clock>,
}

impl Account {
    pub fn new(
        store: Arc<dyn Store>,
        signin: Arc<SignIn>,
        two_factor: Arc<TwoFactor>,
        sessions: Arc<Sessions>,
        recovery: Arc<Recovery>,
        audit: Audit,
        clock: Arc<dyn Clock>,
    ) -> Account {
        Account {
            store,
            signin,
            two_factor,
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
                ip_ranges: None,
            };
            all.extend(self.store.events(&filter).await?);
        }
        all.sort_by_key(|e| std::cmp::Reverse(e.ts));
        all.truncate(RECENT);
        Ok(all)
    }

    /// Ends one of the user's sessions by its handle (the account page's End); recorded with
    /// who ended it. Returns whether one ended.
    pub async fn end_one(
        &self,
        cfg: &Config,
        user: &User,
        handle: &str,
        client: &Client,
    ) -> Result<bool, StoreError> {
        let Some(ended) = self
            .sessions
            .end_handle(user.id, handle, &cfg.session)
            .await?
        else {
            return Ok(false);
        };
        self.audit.record(
            Event::new(EventKind::Logout, self.clock.now())
                .login(&user.login)
                .client(&client.ip, &client.user_agent)
                .session(ended.hash.short())
                .detail("ended from the account page"),
        );
        Ok(true)
    }

    /// Turns two-step verification off, where the user's groups do not require it: the
    /// current password and a code (an app's or a backup code). The factor and its codes go,
    /// and every session and remember-me token of the user ends; this browser goes on.
    pub async fn turn_off_two_factor(
        &self,
        cfg: &Config,
        user: &User,
        current: &Password,
        code: &OneTimeCode,
        client: &Client,
        addr: ClientAddr,
    ) -> Result<TurnOff, LoginError> {
        if totp::required(&cfg.two_factor, &user.groups) {
            return Ok(TurnOff::NotAllowed);
        }
        let Some(record) = self.store.second_factor(user.id).await? else {
            return Ok(TurnOff::NotAllowed);
        };
        if let Some(refusal) = self
            .signin
            .reconfirm(cfg, user, current, client, addr)
            .await?
        {
            return Ok(TurnOff::Refused(refusal));
        }
        let checked = self
            .two_factor
            .check(&cfg.two_factor, user, &record, code, client)
            .await?;
        if matches!(checked, Checked::Wrong | Checked::Replay) {
            self.signin.code_failed(cfg, user, client, addr).await?;
            return Ok(TurnOff::WrongCode);
        }
        let now = self.clock.now();
        self.store
            .end_user_sessions(
                user.id,
                now,
                Ended::Revoked.as_str(),
                UserChange::SecondFactorReset,
            )
            .await?;
        self.sessions.forget_user(user.id);
        self.event(EventKind::TwoFactorDisabled, user, client, "by the user");
        let issued = self.sessions.issue(user, None, client).await?;
        Ok(TurnOff::Done(issued))
    }

    /// A new e-mail address, with the current password: nothing changes until the link sent
    /// to the new address is followed (`confirm_email`).
    pub async fn request_email_change(
        &self,
        cfg: &Config,
        user: &User,
        new_email: &str,
        current: &Password,
        client: &Client,
        addr: ClientAddr,
    ) -> Result<Result<(), NotQueued>, LoginError> {
        if let Some(refusal) = self
            .signin
            .reconfirm(cfg, user, current, client, addr)
            .await?
        {
            return Ok(Err(NotQueued::Refused(refusal)));
        }
        let new_email = new_email.trim();
        let invalid = |m: &str| Ok(Err(NotQueued::Invalid(m.to_string())));
        if crate::service::accounts::check_email(new_email).is_err() {
            return invalid("Enter a valid e-mail address");
        }
        if new_email.eq_ignore_ascii_case(&user.email) {
            return invalid("This is already your e-mail address");
        }
        if self
            .store
            .find_user(new_email)
            .await?
            .is_some_and(|other| other.id != user.id)
        {
            return invalid("A user with this email already exists");
        }
        let queued = self
            .recovery
            .queue_email_confirmation(cfg, user, new_email)
            .await?;
        Ok(queued.map_err(NotQueued::Wait))
    }

    /// A new phone number, with the current password: a code goes to the new number, and
    /// nothing changes until it is typed back (`confirm_phone`). Queued: the change, signed,
    /// for the form that takes the code.
    pub async fn request_phone_change(
        &self,
        cfg: &Config,
        user: &User,
        new_phone: &str,
        current: &Password,
        client: &Client,
        addr: ClientAddr,
    ) -> Result<Result<String, NotQueued>, LoginError> {
        if let Some(refusal) = self
            .signin
            .reconfirm(cfg, user, current, client, addr)
            .await?
        {
            return Ok(Err(NotQueued::Refused(refusal)));
        }
        let new_phone = new_phone.trim();
        let invalid = |m: &str| Ok(Err(NotQueued::Invalid(m.to_string())));
        let Some(key) = phone_key(new_phone).filter(|_| new_phone.chars().count() <= 32) else {
            return invalid("Enter a phone number, e.g. +49 30 1234567");
        };
        if phone_key(&user.phone).as_deref() == Some(key.as_str()) {
            return invalid("This is already your phone number");
        }
        // A number is one account's: two would leave recovery by SMS to neither.
        let taken = self.store.list_users().await?.iter().any(|other| {
            other.id != user.id && phone_key(&other.phone).as_deref() == Some(key.as_str())
        });
        if taken {
            return invalid("This phone number belongs to another account");
        }
        if let Err(wait) = self
            .recovery
            .queue_phone_confirmation(cfg, user, new_phone)
            .await?
        {
            return Ok(Err(NotQueued::Wait(wait)));
        }
        let lifetime = cfg.recovery.sms_code_lifetime.as_secs() as i64;
        let change = ContactChange {
            user_id: user.id,
            expires_at: self.clock.now() + lifetime,
            old: ContactChange::address_digest(&user.phone),
            new_value: new_phone.to_string(),
        };
        Ok(Ok(change.seal(self.recovery.phone_change_key())))
    }

    /// The code sent to the new phone, typed back with the form's signed change: the number
    /// changes. Each try spends the address's budget; three wrong ones end the code.
    pub async fn confirm_phone(
        &self,
        cfg: &Config,
        user: &User,
        change: &str,
        code: &str,
        client: &Client,
        addr: &ClientAddr,
    ) -> Result<PhoneConfirmed, StoreError> {
        if let Err(wait) = self.signin.spend_address(cfg, addr).await? {
            return Ok(PhoneConfirmed::Throttled(wait));
        }
        let key = self.recovery.phone_change_key();
        let Some(change) = ContactChange::open(key, change, self.clock.now()).filter(|c| {
            c.user_id == user.id && c.old == ContactChange::address_digest(&user.phone)
        }) else {
            return Ok(PhoneConfirmed::Invalid);
        };
        match self
            .recovery
            .try_phone_code(user, &change.new_value, code)
            .await?
        {
            None => return Ok(PhoneConfirmed::Invalid),
            Some(false) => return Ok(PhoneConfirmed::Wrong),
            Some(true) => {}
        }
        let profile = NewUser {
            login: user.login.clone(),
            email: user.email.clone(),
            name: user.name.clone(),
            phone: change.new_value.clone(),
            groups: user.groups.clone(),
            password_hash: String::new(),
        };
        let updated = self
            .store
            .update_user(user.id, &profile, self.clock.now())
            .await?;
        let detail = format!("{} -> {}", user.phone, updated.phone);
        self.event(EventKind::PhoneChanged, &updated, client, &detail);
        Ok(PhoneConfirmed::Done(updated))
    }

    /// Follows a confirmation link: the address changes (the login too, where it is the
    /// e-mail address), for every gateway at the next request.
    pub async fn confirm_email(
        &self,
        token: &str,
        client: &Client,
    ) -> Result<EmailConfirmed, StoreError> {
        let key = self.recovery.email_change_key();
        let Some(change) = ContactChange::open(key, token, self.clock.now()) else {
            return Ok(EmailConfirmed::Invalid);
        };
        let user = self
            .store
            .get_user(change.user_id)
            .await?
            .filter(|u| !u.dismissed && ContactChange::address_digest(&u.email) == change.old);
        let Some(user) = user else {
            return Ok(EmailConfirmed::Invalid);
        };
        // Once: a newer request, a new password or a reset has replaced it, or it was used.
        let now = self.clock.now();
        let hash = link_hash(token);
        if !self
            .store
            .use_recovery(&hash, RecoveryKind::Email, now)
            .await?
        {
            return Ok(EmailConfirmed::Invalid);
        }
        let login = match user.login.eq_ignore_ascii_case(&user.email) {
            true => change.new_value.clone(),
            false => user.login.clone(),
        };
        let profile = NewUser {
            login,
            email: change.new_value.clone(),
            name: user.name.clone(),
            phone: user.phone.clone(),
            groups: user.groups.clone(),
            password_hash: String::new(),
        };
        let updated = match self
            .store
            .update_user(user.id, &profile, self.clock.now())
            .await
        {
            Ok(updated) => updated,
            Err(StoreError::Duplicate(_)) => return Ok(EmailConfirmed::Taken),
            Err(e) => return Err(e),
        };
        let detail = format!("{} -> {}", user.email, updated.email);
        self.event(EventKind::EmailChanged, &updated, client, &detail);
        Ok(EmailConfirmed::Done(updated))
    }

    /// "Log out on all devices": every session and remember-me token of the user, this one
    /// included. Returns how many sessions ended.
    pub async fn logout_all(&self, user: &User, client: &Client) -> Result<u64, StoreError> {
        let now = self.clock.now();
        let n = self
            .store
            .end_user_sessions(user.id, now, Ended::Revoked.as_str(), UserChange::Nothing)
            .await?;
        // This gateway at once; the others within 2 s, through the store.
        self.sessions.forget_user(user.id);
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
        self.sessions.forget_user(user.id);
        self.event(EventKind::PasswordChanged, user, client, "by the user");
        let detail = format!("password changed, {ended} sessions");
        self.event(EventKind::SessionsRevoked, user, client, &detail);
        if let Err(e) = self.recovery.notify_password_changed(cfg, user).await {
            tracing::warn!(error = %e, login = %user.login, "the password-changed notice was not queued");
        }
        // The user as it is now (the new password), or the new session would be refused.
        let changed = self
            .store
            .get_user(user.id)
            .await?
            .ok_or(StoreError::Changed)?;
        let issued = self.sessions.issue(&changed, None, client).await?;
        Ok(PasswordChange::Done(issued))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::SessionConfig;
    use crate::core::identity::Client;
    use crate::service::fixture::Services;
    use crate::store::StoreError;

    fn client() -> Client {
        Client {
            ip: "192.0.2.9".into(),
            user_agent: "test".into(),
        }
    }

    /// A sign-in that checked the old password while the password changed gets no session:
    /// the one it made is ended at once.
    #[tokio::test]
    async fn no_session_outlives_a_password_change_made_meanwhile() {
        let s = Services::start("").await;
        let cfg: &SessionConfig = &s.config.session;
        s.store
            .set_password_hash(s.alice.id, "changed")
            .await
            .unwrap();
        let issued = s.sessions.issue(&s.alice, None, &client()).await;
        assert!(
            matches!(issued, Err(StoreError::Changed)),
            "{:?}",
            issued.err()
        );
        let here = crate::core::secret::SessionToken::generate().hash();
        assert!(
            s.sessions
                .of_user(s.alice.id, &here, cfg)
                .await
                .unwrap()
                .is_empty()
        );
        // With the user as it is now, a session is made.
        let now = s.store.get_user(s.alice.id).await.unwrap().unwrap();
        assert!(s.sessions.issue(&now, None, &client()).await.is_ok());
        assert_eq!(
            s.sessions
                .of_user(s.alice.id, &here, cfg)
                .await
                .unwrap()
                .len(),
            1
        );
    }
}
