//! Password recovery (SPEC §13): requests queue a message in the store and answer at once,
//! whether the account exists or not; the outbox worker makes the link or code when it sends
//! it (so the queue never holds a usable secret) and tries again while the message is useful;
//! a link or a right SMS code leads to a new password, which ends every session of the user.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Notify;

use crate::config::Config;
use crate::core::addr::ClientAddr;
use crate::core::counter::Counter;
use crate::core::event::{Event, EventKind};
use crate::core::identity::{Client, User, phone_key};
use crate::core::secret::{ContactChange, Password, RecoveryToken, SmsCode, link_hash};
use crate::core::time::{Clock, Millis, UnixTime};
use crate::policy::recovery::{Channel, PasswordRefusal, check_new_password, retry_delay};
use crate::service::audit::Audit;
use crate::service::hasher::HashError;
use crate::service::messenger::{self, SendError};
use crate::service::metrics::Metrics;
use crate::service::sessions::Ended;
use crate::service::signin::SignIn;
use crate::store::{
    Gate, NewJob, OutboxJob, RecoveryKind, RecoveryRecord, Store, StoreError, UserChange,
};

/// Queue kinds.
const RESET_LINK: &str = "reset_link";
/// A link an administrator asked for (`user send-reset`): not held back by the gates.
const ADMIN_LINK: &str = "admin_link";
const SMS_CODE: &str = "sms_code";
const PASSWORD_CHANGED: &str = "password_changed";
/// An invitation (`user invite`): the token is made when it is sent.
const INVITATION: &str = "invitation";
/// The link that confirms a new e-mail address (the payload), sent to that address.
pub const CONFIRM_EMAIL: &str = "confirm_email";
/// The code that confirms a new phone number (the payload), sent to that number.
pub const CONFIRM_PHONE: &str = "confirm_phone";
/// How long a link confirming a new e-mail address works.
pub const EMAIL_CHANGE_LIFETIME: Duration = Duration::from_secs(3600);

/// How long a worker's claim on a message holds: far longer than sending one takes
/// (`messenger::SMTP_TIMEOUT`), so that only a crashed worker's messages are taken over.
const LEASE: i64 = 120;
/// Messages a worker takes at once: one, so that a slow server never holds others' claims.
const BATCH: u32 = 1;
/// Longest one message may take to send (SMTP's whole conversation, the webhook's call);
/// well within `LEASE`.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// Wrong SMS codes one account may have in a day, all codes together.
const WRONG_CODES_PER_DAY: u32 = 10;
/// SMS codes sent to one account in a day.
const SMS_PER_DAY: u32 = 10;
const DAY_MILLIS: Millis = 86_400_000;
/// How long a "your password was changed" notice is worth sending.
const NOTICE_USEFUL: i64 = 86_400;
/// How long the link made for a right SMS code lasts: time to type a new password twice.
const LINK_AFTER_CODE: i64 = 600;
/// Tries of an SMS code.
pub const CODE_TRIES: u32 = 3;
/// A user id no user has (ids start at 1).
const NOBODY: i64 = 0;
/// Longest text looked up as a login; longer cannot exist.
const MAX_TYPED: usize = 254;

/// What a request for a way back in led to. The same for an account that does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    /// Queued (or, for nobody, pretended to be).
    Sent(Channel),
    /// Another request for the same account came less than `resend_after` ago.
    Wait(u64),
    /// The address's budget is spent: seconds until it has room.
    Throttled(u64),
}

/// Where a link stands.
#[derive(Debug)]
pub enum Link {
    Live(User),
    Invalid,
}

/// What a new password led to.
#[derive(Debug)]
pub enum Reset {
    Done,
    /// The password breaks the policy; the link still works (for `login`).
    Refused {
        refusal: PasswordRefusal,
        login: String,
    },
    Invalid,
}

/// Where an invitation's link stands.
#[derive(Debug)]
pub enum Invitation {
    Live(User),
    Expired,
    /// Unknown, replaced by a newer one, used, or its user dismissed or registered.
    Invalid,
}

/// What accepting an invitation led to.
#[derive(Debug)]
pub enum Accepted {
    /// The password is set: the user may be signed in.
    Done(User),
    Refused {
        refusal: PasswordRefusal,
        login: String,
    },
    Expired,
    Invalid,
}

/// Why a link's new password was not taken.
enum NotTaken {
    Policy(PasswordRefusal),
    /// Used meanwhile (or never live).
    Used,
}

/// What an SMS code led to.
#[derive(Debug)]
pub enum CodeCheck {
    /// Right: a link token to set `login`'s new password with.
    Right {
        token: RecoveryToken,
        login: String,
    },
    Wrong,
    /// No code, or its tries or its time are spent.
    Ended,
    Throttled(u64),
}

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hash(#[from] HashError),
}

/// Keys derived from the key file (never kept in the store), so the database alone can
/// neither test SMS codes nor make links.
#[derive(Clone, Copy)]
pub struct Keys {
    /// Keys the SMS codes' hashes.
    pub sms_code: [u8; 32],
    /// Signs the links that confirm a new e-mail address (`core::secret::ContactChange`).
    pub email_change: [u8; 32],
    /// Signs the code forms of a new phone number (`core::secret::ContactChange`).
    pub phone_change: [u8; 32],
}

/// The recovery service, and the outbox worker of this gateway.
pub struct Recovery {
    store: Arc<dyn Store>,
    signin: Arc<SignIn>,
    audit: Audit,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    keys: Keys,
    wake: Notify,
    /// This process's name on the claims it makes.
    worker: String,
}

impl Recovery {
    pub fn new(
        store: Arc<dyn Store>,
        signin: Arc<SignIn>,
        audit: Audit,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
        keys: Keys,
    ) -> Recovery {
        Recovery {
            store,
            signin,
            audit,
            metrics,
            clock,
            keys,
            wake: Notify::new(),
            worker: format!("{}-{:08x}", std::process::id(), rand::random::<u32>()),
        }
    }

    fn event(&self, kind: EventKind, login: &str, client: &Client, detail: &str) {
        self.audit.record(
            Event::new(kind, self.clock.now())
                .login(login)
                .client(&client.ip, &client.user_agent)
                .detail(detail),
        );
    }

    /// `forgot`: queues a link (or a code, for a phone number when SMS is configured) for the
    /// account `typed` names. Unknown and dismissed accounts take the same path (a queued job
    /// for nobody, dropped unsent), so neither the answer nor its time tells them apart.
    pub async fn request(
        &self,
        cfg: &Config,
        typed: &str,
        client: &Client,
        addr: &ClientAddr,
    ) -> Result<Requested, StoreError> {
        let typed: String = typed.trim().chars().take(MAX_TYPED).collect();
        let phone = phone_key(&typed);
        let channel = Channel::of(phone.is_some(), cfg.sms.webhook.is_some());
        let throttled = |login: &str| {
            self.metrics.recovery(channel.as_str(), "throttled");
            self.event(EventKind::RecoveryRequested, login, client, "throttled");
        };
        if let Err(wait) = self.signin.spend_address(cfg, addr).await? {
            throttled(&typed);
            return Ok(Requested::Throttled(wait));
        }
        let user = match (&phone, channel) {
            (Some(key), Channel::Sms) => self.store.find_user_by_phone(key).await?,
            _ => self.store.find_user(&typed).await?,
        }
        // Nobody to send to: dismissed, or no address for this channel.
        // An invited account registers with its invitation, not with a reset.
        .filter(|u| {
            !u.dismissed && !u.is_invited() && (channel == Channel::Sms || !u.email.is_empty())
        });
        let now = self.clock.now();
        let (kind, lifetime) = match channel {
            Channel::Email => (RESET_LINK, cfg.recovery.link_lifetime),
            Channel::Sms => (SMS_CODE, cfg.recovery.sms_code_lifetime),
        };
        // The gate people see is on the text typed (as the store compares it), the same for
        // an account that exists and one that does not; the account's own gate is passed
        // silently when the message is sent (`deliver`).
        let typed_key = phone.clone().unwrap_or_else(|| typed.to_lowercase());
        let gate = Gate {
            key: format!("recovery:{}", hex::encode(Sha256::digest(typed_key))),
            gap: cfg.recovery.resend_after.as_secs() as i64,
        };
        let job = NewJob {
            kind: kind.into(),
            user_id: user.as_ref().map(|u| u.id),
            not_after: now + lifetime.as_secs() as i64,
            payload: String::new(),
        };
        let login = user.as_ref().map_or(typed.as_str(), |u| u.login.as_str());
        if let Err(wait) = self.store.enqueue(&job, Some(&gate), now).await? {
            throttled(login);
            return Ok(Requested::Wait(wait));
        }
        self.wake.notify_one();
        self.metrics.recovery(channel.as_str(), "requested");
        let detail = if user.is_some() {
            channel.as_str()
        } else {
            "unknown"
        };
        self.event(EventKind::RecoveryRequested, login, client, detail);
        Ok(Requested::Sent(channel))
    }

    /// Whether a link still works, without using it; a dead one is recorded.
    pub async fn open_link(
        &self,
        token: Option<&RecoveryToken>,
        client: &Client,
    ) -> Result<Link, StoreError> {
        let record = match token {
            Some(t) => self.store.recovery_by_hash(&t.hash()).await?,
            None => None,
        };
        let now = self.clock.now();
        let dead = match &record {
            None => Some("invalid"),
            Some(r) if r.kind != RecoveryKind::Link => Some("invalid"),
            Some(r) if r.used_at.is_some() => Some("used"),
            Some(r) if r.expires_at <= now => Some("expired"),
            Some(_) => None,
        };
        let user = match (&record, dead) {
            (Some(r), None) => self
                .store
                .get_user(r.user_id)
                .await?
                .filter(|u| !u.dismissed),
            _ => None,
        };
        match user {
            Some(user) => Ok(Link::Live(user)),
            None => {
                let login = match &record {
                    Some(r) => self.store.get_user(r.user_id).await?.map(|u| u.login),
                    None => None,
                };
                self.metrics.recovery("email", "invalid");
                let detail = dead.unwrap_or("invalid");
                self.event(
                    EventKind::RecoveryFailed,
                    &login.unwrap_or_default(),
                    client,
                    detail,
                );
                Ok(Link::Invalid)
            }
        }
    }

    /// The new password, typed twice, for a live link: set, every session and remember-me
    /// token of the user ended (on every gateway, through the store), the notice queued.
    pub async fn reset(
        &self,
        cfg: &Config,
        token: Option<&RecoveryToken>,
        password: Password,
        again: &str,
        channel: Channel,
        client: &Client,
    ) -> Result<Reset, RecoveryError> {
        let user = match self.open_link(token, client).await? {
            Link::Live(user) => user,
            Link::Invalid => return Ok(Reset::Invalid),
        };
        let taken = self.take_link(cfg, &user, token, RecoveryKind::Link, password, again);
        let phc = match taken.await? {
            Ok(phc) => phc,
            Err(NotTaken::Policy(refusal)) => {
                return Ok(Reset::Refused {
                    refusal,
                    login: user.login,
                });
            }
            Err(NotTaken::Used) => {
                self.metrics.recovery("email", "invalid");
                self.event(EventKind::RecoveryFailed, &user.login, client, "used");
                return Ok(Reset::Invalid);
            }
        };
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
        self.notify_password_changed(cfg, &user).await?;
        self.metrics.recovery(channel.as_str(), "completed");
        self.event(EventKind::PasswordReset, &user.login, client, "");
        let detail = format!("password reset, {ended} sessions");
        self.event(EventKind::SessionsRevoked, &user.login, client, &detail);
        Ok(Reset::Done)
    }

    /// A new password through a link of `kind`: the policy, the hash (on the hashing
    /// threads), then the link used up atomically, so that two posts of one link set one
    /// password. The new password's PHC string.
    async fn take_link(
        &self,
        cfg: &Config,
        user: &User,
        token: Option<&RecoveryToken>,
        kind: RecoveryKind,
        password: Password,
        again: &str,
    ) -> Result<Result<String, NotTaken>, RecoveryError> {
        let min = cfg.passwords.min_length;
        if let Err(refusal) =
            check_new_password(password.expose(), again, min, &user.login, &user.email)
        {
            return Ok(Err(NotTaken::Policy(refusal)));
        }
        let phc = self.signin.hash_new(password).await?;
        let used = match token {
            Some(t) => {
                let now = self.clock.now();
                self.store.use_recovery(&t.hash(), kind, now).await?
            }
            None => false,
        };
        Ok(if used { Ok(phc) } else { Err(NotTaken::Used) })
    }

    /// Whether an invitation's link still works, without using it.
    pub async fn open_invite(
        &self,
        token: Option<&RecoveryToken>,
    ) -> Result<Invitation, StoreError> {
        let record = match token {
            Some(t) => self.store.recovery_by_hash(&t.hash()).await?,
            None => None,
        };
        let Some(record) = record.filter(|r| r.kind == RecoveryKind::Invite && r.used_at.is_none())
        else {
            return Ok(Invitation::Invalid);
        };
        if record.expires_at <= self.clock.now() {
            return Ok(Invitation::Expired);
        }
        let user = self.store.get_user(record.user_id).await?;
        Ok(match user.filter(|u| u.is_invited() && !u.dismissed) {
            Some(user) => Invitation::Live(user),
            None => Invitation::Invalid,
        })
    }

    /// The invitee's password, typed twice, for a live invitation: set, the link used up.
    pub async fn accept_invite(
        &self,
        cfg: &Config,
        token: Option<&RecoveryToken>,
        password: Password,
        again: &str,
        client: &Client,
    ) -> Result<Accepted, RecoveryError> {
        let user = match self.open_invite(token).await? {
            Invitation::Live(user) => user,
            Invitation::Expired => return Ok(Accepted::Expired),
            Invitation::Invalid => return Ok(Accepted::Invalid),
        };
        let taken = self.take_link(cfg, &user, token, RecoveryKind::Invite, password, again);
        let phc = match taken.await? {
            Ok(phc) => phc,
            Err(NotTaken::Policy(refusal)) => {
                return Ok(Accepted::Refused {
                    refusal,
                    login: user.login,
                });
            }
            Err(NotTaken::Used) => return Ok(Accepted::Invalid),
        };
        self.store.set_password_hash(user.id, &phc).await?;
        self.event(EventKind::InvitationAccepted, &user.login, client, "");
        let user = self.store.get_user(user.id).await?.unwrap_or(user);
        Ok(Accepted::Done(user))
    }

    /// The key of the links that confirm a new e-mail address.
    pub fn email_change_key(&self) -> &[u8; 32] {
        &self.keys.email_change
    }

    /// Queues the link that confirms `new_email` for `user`, at most one per `resend_after`:
    /// `Err(seconds)` to wait.
    pub async fn queue_email_confirmation(
        &self,
        cfg: &Config,
        user: &User,
        new_email: &str,
    ) -> Result<Result<(), u64>, StoreError> {
        let lifetime = EMAIL_CHANGE_LIFETIME;
        self.queue_confirmation(cfg, CONFIRM_EMAIL, user, new_email, lifetime)
            .await
    }

    /// Queues a confirmation of `kind` (its payload the new value), at most one per
    /// `resend_after` and kind for the user.
    async fn queue_confirmation(
        &self,
        cfg: &Config,
        kind: &str,
        user: &User,
        value: &str,
        lifetime: Duration,
    ) -> Result<Result<(), u64>, StoreError> {
        let now = self.clock.now();
        let job = NewJob {
            kind: kind.into(),
            user_id: Some(user.id),
            not_after: now + lifetime.as_secs() as i64,
            payload: value.to_string(),
        };
        let gate = Gate {
            key: format!("{kind}:{}", user.id),
            gap: cfg.recovery.resend_after.as_secs() as i64,
        };
        let queued = self.store.enqueue(&job, Some(&gate), now).await?;
        if queued.is_ok() {
            self.wake.notify_one();
        }
        Ok(queued)
    }

    /// The key of the code forms of a new phone number.
    pub fn phone_change_key(&self) -> &[u8; 32] {
        &self.keys.phone_change
    }

    /// Queues the code that confirms `new_phone` for `user`, at most one per `resend_after`.
    pub async fn queue_phone_confirmation(
        &self,
        cfg: &Config,
        user: &User,
        new_phone: &str,
    ) -> Result<Result<(), u64>, StoreError> {
        let lifetime = cfg.recovery.sms_code_lifetime;
        self.queue_confirmation(cfg, CONFIRM_PHONE, user, new_phone, lifetime)
            .await
    }

    /// Takes one try of the code sent to a new phone: whether it was right (`None`: no live
    /// code with a try left).
    pub async fn try_phone_code(
        &self,
        user: &User,
        number: &str,
        code: &str,
    ) -> Result<Option<bool>, StoreError> {
        let now = self.clock.now();
        let Some(before) = self
            .store
            .try_sms_code(user.id, RecoveryKind::Phone, now)
            .await?
        else {
            return Ok(None);
        };
        let number = phone_key(number).unwrap_or_default();
        let right = SmsCode::parse(code).is_some_and(|c| {
            let hash = c.hash_for(&self.keys.sms_code, user.id, &number);
            bool::from(hash.ct_eq(&before.secret_hash))
        });
        if right {
            // Used: the code ends.
            self.store
                .put_recovery(&RecoveryRecord {
                    tries_left: 0,
                    ..before
                })
                .await?;
        }
        Ok(Some(right))
    }

    /// Queues the "Your password was changed" e-mail (when mail is on and the user has an
    /// address); never held back by a gate.
    pub async fn notify_password_changed(
        &self,
        cfg: &Config,
        user: &User,
    ) -> Result<(), StoreError> {
        if !cfg.mail.enabled() || user.email.is_empty() {
            return Ok(());
        }
        let now = self.clock.now();
        let job = NewJob {
            kind: PASSWORD_CHANGED.into(),
            user_id: Some(user.id),
            not_after: now + NOTICE_USEFUL,
            payload: String::new(),
        };
        let _ = self.store.enqueue(&job, None, now).await?;
        self.wake.notify_one();
        Ok(())
    }

    /// An SMS code typed for `phone`: three tries, then it is over. A right one is exchanged
    /// for a short-lived link token (the code itself ends).
    pub async fn check_code(
        &self,
        cfg: &Config,
        phone: &str,
        code: &str,
        client: &Client,
        addr: &ClientAddr,
    ) -> Result<CodeCheck, StoreError> {
        if let Err(wait) = self.signin.spend_address(cfg, addr).await? {
            self.metrics.recovery("sms", "throttled");
            return Ok(CodeCheck::Throttled(wait));
        }
        let user = match phone_key(phone) {
            Some(key) => self.store.find_user_by_phone(&key).await?,
            None => None,
        }
        .filter(|u| !u.dismissed);
        let now = self.clock.now();
        let failed = |login: &str, detail| {
            self.metrics.recovery("sms", "invalid");
            self.event(EventKind::RecoveryFailed, login, client, detail);
        };
        // An unknown phone takes the same store write as a known one (for no user), so the
        // time does not tell them apart either.
        let tried = self
            .store
            .try_sms_code(
                user.as_ref().map_or(NOBODY, |u| u.id),
                RecoveryKind::Sms,
                now,
            )
            .await?;
        let Some(user) = user else {
            failed("", "invalid");
            return Ok(CodeCheck::Wrong);
        };
        let wrong_key = format!("recovery-wrong-codes:{}", user.id);
        let spent = self.store.counter(&wrong_key).await?;
        if daily(spent, self.clock.now_millis()) >= WRONG_CODES_PER_DAY {
            failed(&user.login, "invalid");
            return Ok(CodeCheck::Ended);
        }
        let Some(before) = tried else {
            failed(&user.login, "expired");
            return Ok(CodeCheck::Ended);
        };
        let right = SmsCode::parse(code).is_some_and(|c| {
            bool::from(
                c.hash(&self.keys.sms_code, user.id)
                    .ct_eq(&before.secret_hash),
            )
        });
        if !right {
            self.count_daily(&wrong_key).await?;
            failed(&user.login, "invalid");
            return Ok(if before.tries_left > 1 {
                CodeCheck::Wrong
            } else {
                CodeCheck::Ended
            });
        }
        let token = RecoveryToken::generate();
        let after_code = LINK_AFTER_CODE.min(cfg.recovery.link_lifetime.as_secs() as i64);
        self.store
            .put_recovery(&link_record(user.id, &token, now, after_code))
            .await?;
        Ok(CodeCheck::Right {
            token,
            login: user.login,
        })
    }

    /// Resolves when a request has queued something for this gateway to send.
    pub async fn queued(&self) {
        self.wake.notified().await;
    }

    /// Sends what is due: claims a batch and sends each, or schedules its next try, or gives
    /// it up. Returns how many were handled.
    pub async fn send_due(&self, cfg: &Config) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let kinds = sendable(cfg);
        let jobs = self
            .store
            .claim_jobs(&self.worker, &kinds, now, LEASE, BATCH)
            .await?;
        let n = jobs.len();
        for job in jobs {
            // One job's trouble is its own: it stays claimed until its lease runs out.
            if let Err(e) = self.deliver(cfg, &job).await {
                tracing::warn!(error = %e, kind = %job.kind, "a queued message could not be handled");
            }
        }
        Ok(n)
    }

    /// Counts one more under `key` in a day's window.
    async fn count_daily(&self, key: &str) -> Result<u32, StoreError> {
        let now = self.clock.now_millis();
        let before = self
            .store
            .update_counter(
                key,
                Box::new(move |c| {
                    let failures = daily(c, now) + 1;
                    Some(Counter {
                        failures,
                        last_failure: now,
                        ..Counter::default()
                    })
                }),
            )
            .await?;
        Ok(daily(before, now) + 1)
    }

    async fn deliver(&self, cfg: &Config, job: &OutboxJob) -> Result<(), StoreError> {
        let now = self.clock.now();
        let sms = job.kind == SMS_CODE;
        if now > job.not_after {
            // No longer useful (whatever the store says of its user).
            if job.user_id.is_some() {
                self.gave_up(sms, "", &format!("{}: not sent in time", job.kind), now);
            }
            return self.store.finish_job(job.id).await;
        }
        let user = match job.user_id {
            Some(id) => self.store.get_user(id).await?,
            None => None,
        };
        // A request that named nobody, or an account dismissed since: nothing is sent.
        let Some(user) = user.filter(|u| !u.dismissed) else {
            return self.store.finish_job(job.id).await;
        };
        if !self.may_send(cfg, job, &user, now).await? {
            return self.store.finish_job(job.id).await;
        }
        let sent = match tokio::time::timeout(SEND_TIMEOUT, self.send(cfg, job, &user, now)).await {
            Ok(sent) => sent,
            Err(_) => Err(SendError::Smtp(format!(
                "no answer within {SEND_TIMEOUT:?}"
            ))),
        };
        match sent {
            Ok(()) => {
                match sms {
                    true => self.metrics.sms(true),
                    false => self.metrics.mail("sent"),
                }
                self.store.finish_job(job.id).await
            }
            Err(e) => {
                let at = now + retry_delay(job.attempts);
                tracing::warn!(error = %e, kind = %job.kind, login = %user.login, "a message was not sent");
                if at <= job.not_after && !e.is_final() {
                    if !sms {
                        self.metrics.mail("retried");
                    }
                    return self.store.retry_job(job.id, at).await;
                }
                self.gave_up(sms, &user.login, &format!("{}: {e}", job.kind), now);
                self.store.finish_job(job.id).await
            }
        }
    }

    fn gave_up(&self, sms: bool, login: &str, detail: &str, now: UnixTime) {
        match sms {
            true => self.metrics.sms(false),
            false => self.metrics.mail("failed"),
        }
        self.audit.record(
            Event::new(EventKind::MailFailed, now)
                .login(login)
                .detail(detail),
        );
    }

    /// The account's own gates, passed silently (the person asking saw the same answer
    /// either way): one link or code per ¾ `resend_after` however the account was named, and
    /// at most `SMS_PER_DAY` codes a day to one phone.
    async fn may_send(
        &self,
        cfg: &Config,
        job: &OutboxJob,
        user: &User,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        // An invitation accepted meanwhile (or replaced by a password) needs no more sending.
        if job.kind == INVITATION {
            return Ok(user.is_invited());
        }
        // Codes to a new phone count toward the account's SMS of the day too.
        if job.kind == CONFIRM_PHONE && job.attempts == 0 {
            let sent = self
                .count_daily(&format!("recovery-sms:{}", user.id))
                .await?;
            return Ok(sent <= SMS_PER_DAY);
        }
        // Once per message, at its first try: a retry passed its gates already.
        if (job.kind != RESET_LINK && job.kind != SMS_CODE) || job.attempts > 0 {
            return Ok(true);
        }
        // Three quarters of the gap people see: it holds back the same account named another
        // way, never a request the page said could be made.
        let gate = Gate {
            key: format!("recovery-sent:{}", user.id),
            gap: cfg.recovery.resend_after.as_secs() as i64 * 3 / 4,
        };
        if self.store.pass_gate(&gate, now).await?.is_err() {
            tracing::info!(login = %user.login, "a recovery message was not sent: another one went out within resend_after");
            return Ok(false);
        }
        if job.kind == SMS_CODE
            && self
                .count_daily(&format!("recovery-sms:{}", user.id))
                .await?
                > SMS_PER_DAY
        {
            tracing::warn!(login = %user.login, "an SMS code was not sent: the account's daily limit is reached");
            return Ok(false);
        }
        Ok(true)
    }

    async fn send(
        &self,
        cfg: &Config,
        job: &OutboxJob,
        user: &User,
        now: UnixTime,
    ) -> Result<(), SendError> {
        match job.kind.as_str() {
            RESET_LINK | ADMIN_LINK => self.send_link(cfg, user, RecoveryKind::Link, now).await,
            INVITATION => self.send_link(cfg, user, RecoveryKind::Invite, now).await,
            SMS_CODE => {
                let to = user.phone.clone();
                self.send_code(cfg, user, RecoveryKind::Sms, &to, now).await
            }
            CONFIRM_PHONE => {
                let to = &job.payload;
                self.send_code(cfg, user, RecoveryKind::Phone, to, now)
                    .await
            }
            CONFIRM_EMAIL => self.send_email_confirmation(cfg, job, user, now).await,
            PASSWORD_CHANGED => {
                let portal = &cfg.mail.portal_name;
                let letter = messenger::changed_letter(portal, user, job.created_at);
                messenger::send_mail(&cfg.mail, &user.email, &letter).await
            }
            other => Err(SendError::Smtp(format!("unknown message kind `{other}`"))),
        }
    }

    /// A reset link or an invitation, made now. Nothing is made for a message that cannot
    /// leave: a link made for nobody would still void the user's older one.
    async fn send_link(
        &self,
        cfg: &Config,
        user: &User,
        kind: RecoveryKind,
        now: UnixTime,
    ) -> Result<(), SendError> {
        messenger::check_mail(&cfg.mail, &user.email)?;
        let lifetime = match kind {
            RecoveryKind::Invite => cfg.invitations.lifetime,
            _ => cfg.recovery.link_lifetime,
        };
        let link = mint_link(self.store.as_ref(), cfg, user, kind, lifetime, now)
            .await
            .map_err(|e| SendError::Smtp(format!("store: {e}")))?;
        let portal = &cfg.mail.portal_name;
        let letter = match kind {
            RecoveryKind::Invite => messenger::invitation_letter(portal, user, &link, lifetime),
            _ => messenger::reset_letter(portal, user, &link, lifetime),
        };
        messenger::send_mail(&cfg.mail, &user.email, &letter).await
    }

    /// A 6-digit code by SMS to `to`: a recovery code (`Sms`) or the confirmation of a new
    /// number (`Phone`, its hash bound to that number), kept as a keyed hash with 3 tries.
    async fn send_code(
        &self,
        cfg: &Config,
        user: &User,
        kind: RecoveryKind,
        to: &str,
        now: UnixTime,
    ) -> Result<(), SendError> {
        if cfg.sms.webhook.is_none() {
            return Err(SendError::NoSms);
        }
        let lifetime = cfg.recovery.sms_code_lifetime;
        let code = SmsCode::generate();
        let bound = match kind {
            RecoveryKind::Phone => phone_key(to).unwrap_or_default(),
            _ => String::new(),
        };
        let record = RecoveryRecord {
            kind,
            secret_hash: code.hash_for(&self.keys.sms_code, user.id, &bound),
            tries_left: CODE_TRIES,
            ..link_record(
                user.id,
                &RecoveryToken::generate(),
                now,
                lifetime.as_secs() as i64,
            )
        };
        self.store
            .put_recovery(&record)
            .await
            .map_err(|e| SendError::Sms(format!("store: {e}")))?;
        let portal = &cfg.mail.portal_name;
        let text = match kind {
            RecoveryKind::Phone => format!(
                "{portal}: your code to confirm this phone number is {}. It is valid for {}.",
                code.expose(),
                messenger::spoken(lifetime)
            ),
            _ => messenger::sms_text(portal, code.expose(), lifetime),
        };
        messenger::send_sms(&cfg.sms, to, &text).await
    }

    /// The link that confirms a new e-mail address (the job's payload), sent to it; kept as a
    /// hash, so that it works once and a newer request, a new password or a reset replaces it.
    async fn send_email_confirmation(
        &self,
        cfg: &Config,
        job: &OutboxJob,
        user: &User,
        now: UnixTime,
    ) -> Result<(), SendError> {
        messenger::check_mail(&cfg.mail, &job.payload)?;
        let change = ContactChange {
            user_id: user.id,
            expires_at: job.created_at + EMAIL_CHANGE_LIFETIME.as_secs() as i64,
            old: ContactChange::address_digest(&user.email),
            new_value: job.payload.clone(),
        };
        let token = change.seal(&self.keys.email_change);
        let record = RecoveryRecord {
            kind: RecoveryKind::Email,
            secret_hash: link_hash(&token),
            expires_at: change.expires_at,
            ..link_record(user.id, &RecoveryToken::generate(), now, 0)
        };
        self.store
            .put_recovery(&record)
            .await
            .map_err(|e| SendError::Smtp(format!("store: {e}")))?;
        let base = link_base(cfg).unwrap_or_default();
        let link = format!("{base}/_portcullis/account/email?token={token}");
        let portal = &cfg.mail.portal_name;
        let letter = messenger::confirm_email_letter(portal, user, &link, EMAIL_CHANGE_LIFETIME);
        messenger::send_mail(&cfg.mail, &job.payload, &letter).await
    }
}

/// The kinds of message this gateway can send, as configured.
fn sendable(cfg: &Config) -> Vec<&'static str> {
    let mut kinds = Vec::new();
    if cfg.mail.enabled() {
        kinds.extend([
            RESET_LINK,
            ADMIN_LINK,
            PASSWORD_CHANGED,
            INVITATION,
            CONFIRM_EMAIL,
        ]);
    }
    if cfg.sms.webhook.is_some() {
        kinds.extend([SMS_CODE, CONFIRM_PHONE]);
    }
    kinds
}

/// A counter's count within the last day (0 once a day has passed since its last one).
fn daily(counter: Option<Counter>, now: Millis) -> u32 {
    counter
        .filter(|c| c.last_failure > now - DAY_MILLIS)
        .map_or(0, |c| c.failures)
}

fn link_record(
    user_id: i64,
    token: &RecoveryToken,
    now: UnixTime,
    lifetime: i64,
) -> RecoveryRecord {
    RecoveryRecord {
        user_id,
        kind: RecoveryKind::Link,
        secret_hash: token.hash(),
        created_at: now,
        expires_at: now + lifetime,
        tries_left: 1,
        used_at: None,
    }
}

/// `<public_url>`, or `None` without one.
pub fn link_base(cfg: &Config) -> Option<String> {
    let url = cfg.public_url.as_ref()?;
    let scheme = if url.https { "https" } else { "http" };
    Some(format!("{scheme}://{}", url.authority))
}

/// A new reset link for `user`, valid `recovery.link_lifetime`; every older one stops working.
/// Needs `public_url` (the configuration makes sure of it wherever mail is on).
pub async fn new_link(
    store: &dyn Store,
    cfg: &Config,
    user: &User,
    now: UnixTime,
) -> Result<String, StoreError> {
    let lifetime = cfg.recovery.link_lifetime;
    mint_link(store, cfg, user, RecoveryKind::Link, lifetime, now).await
}

/// A new invitation link for `user`, valid `invitations.lifetime`; an older one stops working.
pub async fn new_invite_link(
    store: &dyn Store,
    cfg: &Config,
    user: &User,
    now: UnixTime,
) -> Result<String, StoreError> {
    let lifetime = cfg.invitations.lifetime;
    mint_link(store, cfg, user, RecoveryKind::Invite, lifetime, now).await
}

/// A link of `kind` (a reset or an invitation) for `user`: its token kept hashed, replacing
/// every older link or code of the user.
async fn mint_link(
    store: &dyn Store,
    cfg: &Config,
    user: &User,
    kind: RecoveryKind,
    lifetime: Duration,
    now: UnixTime,
) -> Result<String, StoreError> {
    let token = RecoveryToken::generate();
    let record = RecoveryRecord {
        kind,
        ..link_record(user.id, &token, now, lifetime.as_secs() as i64)
    };
    store.put_recovery(&record).await?;
    let path = match kind {
        RecoveryKind::Invite => "invite",
        _ => "reset",
    };
    let base = link_base(cfg).unwrap_or_default();
    Ok(format!(
        "{base}/_portcullis/{path}?token={}",
        token.expose()
    ))
}

/// Queues an invitation for `user`, to be e-mailed by a running gateway.
pub async fn queue_invitation(
    store: &dyn Store,
    cfg: &Config,
    user: &User,
    now: UnixTime,
) -> Result<(), StoreError> {
    let lifetime = cfg.invitations.lifetime;
    queue_ungated(store, INVITATION, user, lifetime, now).await
}

/// Queues a reset link for `user` without the per-account gate (an administrator's request).
pub async fn queue_link(
    store: &dyn Store,
    cfg: &Config,
    user: &User,
    now: UnixTime,
) -> Result<(), StoreError> {
    let lifetime = cfg.recovery.link_lifetime;
    queue_ungated(store, ADMIN_LINK, user, lifetime, now).await
}

/// Queues `kind` for `user`, useful for `lifetime`, past every gate (an administrator's).
async fn queue_ungated(
    store: &dyn Store,
    kind: &str,
    user: &User,
    lifetime: Duration,
    now: UnixTime,
) -> Result<(), StoreError> {
    let job = NewJob {
        kind: kind.into(),
        user_id: Some(user.id),
        not_after: now + lifetime.as_secs() as i64,
        payload: String::new(),
    };
    let _ = store.enqueue(&job, None, now).await?;
    Ok(())
}

/// How long the outbox worker sleeps when nothing wakes it: jobs queued by the command line
/// or another gateway, and retries that come due, wait at most this long.
pub const OUTBOX_POLL: Duration = Duration::from_secs(1);
