//! Accounts: the rules for creating a user, setting a password, dismissing, restoring and
//! ending every session of one, in one place for the command line, the demo and (later)
//! self-service and invitations. Each change that ends sessions does so in the store's
//! transaction, so running gateways drop them within 2 s; every change is an event.

use crate::config::{Config, EventFile, PasswordPolicy};
use crate::core::event::{Event, EventKind};
use crate::core::identity::{NewUser, User};
use crate::core::secret::Password;
use crate::core::time::{Clock, SystemClock, UnixTime};
use crate::service::audit;
use crate::service::hasher;
use crate::service::recovery;
use crate::service::sessions::Ended;
use crate::store::{Store, StoreError, UserChange};

/// Users whose sessions `dismiss_all` ends in one store transaction: a storm of thousands
/// holds the store's write lock a few times briefly rather than once long.
const DISMISS_BATCH: usize = 500;

/// Why an account change was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The input breaks a rule; the message says which, for people.
    #[error("{0}")]
    Invalid(String),
    #[error("there is no user `{0}`")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hash(#[from] hasher::HashError),
}

/// What `user edit` changes: `None` keeps the field (`groups: Some(vec![])` empties it).
#[derive(Debug, Clone, Default)]
pub struct Edit {
    pub login: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub groups: Option<Vec<String>>,
}

/// What a new user is given.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    pub login: String,
    pub email: String,
    pub name: String,
    pub phone: String,
    pub groups: Vec<String>,
}

/// The account rules over one store, with the configuration's password policy and event file.
pub struct Accounts<'a> {
    store: &'a dyn Store,
    config: &'a Config,
    passwords: &'a PasswordPolicy,
    event_file: Option<&'a EventFile>,
}

impl<'a> Accounts<'a> {
    pub fn new(store: &'a dyn Store, config: &'a Config) -> Accounts<'a> {
        Accounts {
            store,
            config,
            passwords: &config.passwords,
            event_file: config.audit.file.as_ref(),
        }
    }

    fn now() -> UnixTime {
        SystemClock.now()
    }

    pub async fn find(&self, login: &str) -> Result<User, AccountError> {
        self.store
            .find_user(login)
            .await?
            .ok_or_else(|| AccountError::NotFound(login.to_string()))
    }

    pub async fn list(&self) -> Result<Vec<User>, AccountError> {
        Ok(self.store.list_users().await?)
    }

    /// Records what was done. The change itself is made already, so a failure here is
    /// reported but does not undo it.
    pub async fn record(&self, kind: EventKind, login: &str, detail: &str) {
        self.record_all(vec![self.event(kind, login, detail)]).await;
    }

    fn event(&self, kind: EventKind, login: &str, detail: &str) -> Event {
        Event::new(kind, Self::now()).login(login).detail(detail)
    }

    async fn record_all(&self, events: Vec<Event>) {
        if let Err(e) = audit::record_directly(self.store, self.event_file, &events).await {
            tracing::warn!(error = %e, "an account change was made but not recorded");
            eprintln!("portcullis: warning: {e}");
        }
    }

    /// Creates a user with `password` (the policy applies). Logins and emails are unique,
    /// case-insensitively: "A user with this email already exists".
    pub async fn create(
        &self,
        profile: Profile,
        password: &Password,
    ) -> Result<User, AccountError> {
        check_profile(&profile)?;
        self.check_policy(password)?;
        let new = NewUser {
            login: profile.login,
            email: profile.email,
            name: profile.name,
            phone: profile.phone,
            groups: profile.groups,
            password_hash: hasher::hash_now(password, self.passwords.argon2)?,
        };
        let user = self.store.create_user(new, Self::now()).await?;
        self.record(EventKind::UserCreated, &user.login, "").await;
        Ok(user)
    }

    /// A new password; every session and remember-me token of the user ends. Returns how many
    /// sessions ended.
    pub async fn set_password(
        &self,
        user: &User,
        password: &Password,
        by: &str,
    ) -> Result<u64, AccountError> {
        self.check_policy(password)?;
        let phc = hasher::hash_now(password, self.passwords.argon2)?;
        let n = self
            .end_sessions(user, UserChange::Password(phc), "password changed")
            .await?;
        self.record(EventKind::PasswordChanged, &user.login, by)
            .await;
        Ok(n)
    }

    /// Invites `profile` (SPEC §15): the user is created without a password (invited), or an
    /// invited one gets a new link that replaces the old. The link is printed (`print`, made
    /// now) or queued for the gateways to e-mail. Returns the user and the printed link.
    pub async fn invite(
        &self,
        profile: Profile,
        print: bool,
    ) -> Result<(User, Option<String>), AccountError> {
        check_profile(&profile)?;
        let cfg = self.config;
        if print && recovery::link_base(cfg).is_none() {
            return Err(AccountError::Invalid(
                "--print-link needs public_url in the configuration: the link points there".into(),
            ));
        }
        if !print && !cfg.mail.enabled() {
            return Err(AccountError::Invalid(
                "mail.transport is none, so nothing would send the invitation; use --print-link"
                    .into(),
            ));
        }
        let user = match self.store.find_user(&profile.email).await? {
            Some(u) if u.dismissed => {
                return Err(AccountError::Invalid(format!(
                    "`{}` is dismissed; restore the account first",
                    u.login
                )));
            }
            Some(u) if !u.is_invited() => {
                return Err(AccountError::Invalid(
                    "A user with this email already exists".into(),
                ));
            }
            Some(u) => u,
            None => {
                let new = NewUser {
                    login: profile.login,
                    email: profile.email,
                    name: profile.name,
                    phone: profile.phone,
                    groups: profile.groups,
                    password_hash: String::new(),
                };
                self.store.create_user(new, Self::now()).await?
            }
        };
        let now = Self::now();
        let link = match print {
            true => Some(recovery::new_invite_link(self.store, cfg, &user, now).await?),
            false => {
                recovery::queue_invitation(self.store, cfg, &user, now).await?;
                None
            }
        };
        self.record(EventKind::UserInvited, &user.login, "").await;
        Ok((user, link))
    }

    /// Corrects `user` (`user edit`): the fields given replace theirs; logins and emails stay
    /// unique; the user's live sessions carry the new identity from their next request.
    pub async fn edit(&self, user: &User, change: Edit) -> Result<User, AccountError> {
        let mut fields = Vec::new();
        let mut pick = |name: &'static str, new: Option<String>, old: &str| match new {
            Some(v) if v != old => {
                fields.push(name);
                v
            }
            _ => old.to_string(),
        };
        let profile = Profile {
            login: pick("login", change.login, &user.login),
            email: pick("email", change.email, &user.email),
            name: pick("name", change.name, &user.name),
            phone: pick("phone", change.phone, &user.phone),
            groups: match change.groups {
                Some(g) if g != user.groups => {
                    fields.push("groups");
                    g
                }
                _ => user.groups.clone(),
            },
        };
        check_profile(&profile)?;
        if fields.is_empty() {
            return Ok(user.clone());
        }
        let new = NewUser {
            login: profile.login,
            email: profile.email,
            name: profile.name,
            phone: profile.phone,
            groups: profile.groups,
            password_hash: String::new(),
        };
        let updated = self.store.update_user(user.id, &new, Self::now()).await?;
        self.record(EventKind::UserUpdated, &updated.login, &fields.join(", "))
            .await;
        Ok(updated)
    }

    /// An administrator's reset link for `user` (SPEC §13): made now and returned (`print`),
    /// or queued for the gateways to e-mail. Either way every older link stops working.
    pub async fn send_reset(
        &self,
        user: &User,
        print: bool,
    ) -> Result<Option<String>, AccountError> {
        let cfg = self.config;
        if user.dismissed {
            return Err(AccountError::Invalid(format!(
                "`{}` is dismissed; restore the account first",
                user.login
            )));
        }
        if user.is_invited() {
            return Err(AccountError::Invalid(format!(
                "`{}` has not accepted the invitation yet; send a new one with user invite",
                user.login
            )));
        }
        let now = Self::now();
        if print {
            if recovery::link_base(cfg).is_none() {
                return Err(AccountError::Invalid(
                    "--print-link needs public_url in the configuration: the link points there"
                        .into(),
                ));
            }
            let link = recovery::new_link(self.store, cfg, user, now).await?;
            self.record(
                EventKind::RecoveryRequested,
                &user.login,
                "administrator, link printed",
            )
            .await;
            return Ok(Some(link));
        }
        if !cfg.mail.enabled() {
            return Err(AccountError::Invalid(
                "mail.transport is none, so nothing would send the link; use --print-link".into(),
            ));
        }
        if user.email.is_empty() {
            return Err(AccountError::Invalid(format!(
                "`{}` has no e-mail address; use --print-link",
                user.login
            )));
        }
        recovery::queue_link(self.store, cfg, user, now).await?;
        self.record(EventKind::RecoveryRequested, &user.login, "administrator")
            .await;
        Ok(None)
    }

    /// Blocks sign-in for `users` and ends their sessions (`user dismiss`, one login or many
    /// from `--stdin`): one store transaction per `DISMISS_BATCH` users, each batch read by
    /// every gateway at once. `done` hears of each user and the sessions ended as their batch
    /// is committed (so that a failure later leaves a true account of what was done); a user
    /// given twice counts once.
    pub async fn dismiss_all(
        &self,
        users: &[User],
        done: &mut dyn FnMut(&User, u64),
    ) -> Result<(), AccountError> {
        let mut seen = std::collections::HashSet::new();
        let users: Vec<&User> = users.iter().filter(|u| seen.insert(u.id)).collect();
        for batch in users.chunks(DISMISS_BATCH) {
            let ids: Vec<i64> = batch.iter().map(|u| u.id).collect();
            let counts = self
                .store
                .end_users_sessions(
                    &ids,
                    Self::now(),
                    Ended::Dismissed.as_str(),
                    UserChange::Dismissed,
                )
                .await?;
            let mut events = Vec::with_capacity(2 * batch.len());
            for (u, n) in batch.iter().zip(counts) {
                events.push(self.event(EventKind::SessionsRevoked, &u.login, "dismissed"));
                events.push(self.event(EventKind::UserDismissed, &u.login, ""));
                done(u, n);
            }
            self.record_all(events).await;
        }
        Ok(())
    }

    pub async fn restore(&self, user: &User) -> Result<(), AccountError> {
        self.store.set_dismissed(user.id, false).await?;
        self.record(EventKind::UserRestored, &user.login, "").await;
        Ok(())
    }

    /// Ends every session and remember-me token of the user, on every gateway.
    pub async fn logout_all(&self, user: &User) -> Result<u64, AccountError> {
        self.end_sessions(user, UserChange::Nothing, "logout-all")
            .await
    }

    /// Makes `change` and ends the user's sessions on every gateway, at once; the gateways
    /// count them as dismissed or revoked.
    async fn end_sessions(
        &self,
        user: &User,
        change: UserChange,
        why: &str,
    ) -> Result<u64, AccountError> {
        let reason = match change {
            UserChange::Dismissed => Ended::Dismissed,
            _ => Ended::Revoked,
        };
        let n = self
            .store
            .end_user_sessions(user.id, Self::now(), reason.as_str(), change)
            .await?;
        self.record(EventKind::SessionsRevoked, &user.login, why)
            .await;
        Ok(n)
    }

    /// Creates `profile`'s user, or gives the existing one a new password and restores it; the
    /// password is generated and returned (the demo's `demo` user).
    pub async fn ensure(&self, profile: Profile) -> Result<Password, AccountError> {
        let password = Password::generate();
        match self.store.find_user(&profile.login).await? {
            Some(u) => {
                let phc = hasher::hash_now(&password, self.passwords.argon2)?;
                self.store.set_password_hash(u.id, &phc).await?;
                self.store.set_dismissed(u.id, false).await?;
            }
            None => {
                self.create(profile, &password).await?;
            }
        }
        Ok(password)
    }

    fn check_policy(&self, password: &Password) -> Result<(), AccountError> {
        let min = self.passwords.min_length;
        if password.len() < min {
            return Err(AccountError::Invalid(format!(
                "the password must be at least {min} characters long"
            )));
        }
        Ok(())
    }
}

/// Text that ends up in identity headers: no control characters, no commas in group names.
fn check_text(
    what: &str,
    value: &str,
    allow_empty: bool,
    forbid: &[char],
) -> Result<(), AccountError> {
    if !allow_empty && value.trim().is_empty() {
        return Err(AccountError::Invalid(format!(
            "the {what} must not be empty"
        )));
    }
    if value.chars().any(|c| c.is_control() || forbid.contains(&c)) || value.len() > 254 {
        return Err(AccountError::Invalid(format!(
            "the {what} `{value}` contains characters that are not allowed{}",
            if forbid.is_empty() {
                String::new()
            } else {
                format!(" (no {forbid:?})")
            }
        )));
    }
    Ok(())
}

pub fn check_email(email: &str) -> Result<(), AccountError> {
    // A bare address: no display name, quotes, comments or routes that would send mail
    // elsewhere than the address shown (`Name<a@b>`).
    check_text(
        "email",
        email,
        false,
        &[' ', ',', '<', '>', '"', '(', ')', ';', ':', '[', ']', '\\'],
    )?;
    match email.split_once('@') {
        Some((local, domain))
            if !local.is_empty() && domain.contains('.') && !domain.contains('@') =>
        {
            Ok(())
        }
        _ => Err(AccountError::Invalid(format!(
            "`{email}` is not an email address"
        ))),
    }
}

/// The rules a new user's fields must meet, checked before anything else (the password too).
pub fn check_profile(p: &Profile) -> Result<(), AccountError> {
    check_text("login", &p.login, false, &[','])?;
    if p.login.trim() != p.login {
        return Err(AccountError::Invalid(
            "the login must not start or end with a space".into(),
        ));
    }
    check_email(&p.email)?;
    check_text("name", &p.name, true, &[])?;
    check_text("phone", &p.phone, true, &[','])?;
    for g in &p.groups {
        check_text("group", g, false, &[','])?;
    }
    Ok(())
}
