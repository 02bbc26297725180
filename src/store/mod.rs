//! The store: one trait per aggregate (users, sessions and their revocations, remember-me
//! tokens, throttle counters, CAPTCHA challenges, events, secrets), each implemented for
//! SQLite (embedded) and PostgreSQL (shared by a cluster) with migrations of its own, so that
//! callers never know which database is underneath and a new aggregate arrives as a new trait.
//! It keeps hashes of secrets only, never the secrets.

mod migrations;
mod postgres;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

use crate::config::StoreConfig;
use crate::core::counter::Counter;
use crate::core::event::Event;
use crate::core::identity::{NewUser, User, phone_key};
use crate::core::secret::SessionHash;
use crate::core::time::UnixTime;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique login or email is taken; the message is meant for people.
    #[error("{0}")]
    Duplicate(String),
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error("the store holds an unreadable row: {0}")]
    Corrupt(String),
    /// The account's password changed, or it was dismissed, while a session was being made
    /// for it: the session was ended again.
    #[error("the account changed while a session was being made for it")]
    Changed,
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub hash: SessionHash,
    pub user_id: i64,
    pub created_at: UnixTime,
    pub last_seen: UnixTime,
    /// The remember-me token this session was issued with or renewed from.
    pub remember_selector: Option<String>,
    pub ip: String,
    pub user_agent: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RememberRecord {
    pub selector: String,
    pub validator_hash: Vec<u8>,
    pub user_id: i64,
    pub expires_at: UnixTime,
    /// The validator hash before the last rotation, and when that was: parallel requests that
    /// still carry it are given the rotation's result for a few seconds (`session::renew`).
    pub previous_hash: Option<Vec<u8>>,
    pub rotated_at: UnixTime,
    /// Made at a sign-in with a second factor (and kept through rotations): a token made with
    /// the password alone does not renew sessions once the user's factor is asked.
    pub second_factor: bool,
}

/// What changes about a user together with the end of their sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserChange {
    Nothing,
    /// A new password hash.
    Password(String),
    Dismissed,
    /// Two-step verification removed: the factor and the backup codes.
    SecondFactorReset,
}

/// What a revocation ends: every session of a user, or one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    User(i64),
    Session(SessionHash),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub seq: i64,
    pub what: Revoked,
    /// Why sessions were ended, as a `portcullis_sessions_ended_total` reason.
    pub reason: String,
    /// Sessions it ended that no gateway has counted yet.
    pub uncounted: u64,
}

/// A CAPTCHA challenge: its picture and the hash of its answer (never the answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptchaRecord {
    pub id: String,
    pub answer_hash: Vec<u8>,
    pub png: Vec<u8>,
    pub expires_at: UnixTime,
}

/// A change to one throttle counter, applied inside the store's transaction so that concurrent
/// attempts (from several gateways, later) never lose a count. `None` in: no row yet; `None`
/// out: delete the row.
pub type CounterUpdate = Box<dyn FnOnce(Option<Counter>) -> Option<Counter> + Send>;

/// Where live sessions end: older than either bound, a session has expired.
#[derive(Debug, Clone, Copy)]
pub struct SessionBounds {
    pub idle_before: UnixTime,
    pub created_before: Option<UnixTime>,
}

/// Sessions deleted by a purge, by why they had expired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub idle: u64,
    pub absolute: u64,
}

/// Filters for reading the event log back.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub login: Option<String>,
    pub event: Option<String>,
    pub since: Option<UnixTime>,
    pub limit: Option<u32>,
    /// Events whose address key (`core::addr::ip_key`) is in one of these inclusive ranges,
    /// and events not keyed yet (written before keys were, until `key_events` reaches them):
    /// a superset for the caller to check each address of.
    pub ip_ranges: Option<Vec<([u8; 16], [u8; 16])>>,
}

/// A user's second factor as the store keeps it: the TOTP secret sealed with the master key
/// (never in clear), the last period accepted, and how many backup codes are left.
#[derive(Clone, PartialEq, Eq)]
pub struct SecondFactorRecord {
    pub user_id: i64,
    pub sealed_secret: Vec<u8>,
    pub enrolled_at: UnixTime,
    /// The period of the last code accepted (a code works once).
    pub last_step: Option<i64>,
    /// Until then, the password alone lets the user in (`user 2fa disable --for`).
    pub disabled_until: UnixTime,
    pub backup_codes_left: u64,
}

impl std::fmt::Debug for SecondFactorRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecondFactorRecord")
            .field("user_id", &self.user_id)
            .field("sealed_secret", &"[sealed]")
            .field("enrolled_at", &self.enrolled_at)
            .field("last_step", &self.last_step)
            .field("disabled_until", &self.disabled_until)
            .field("backup_codes_left", &self.backup_codes_left)
            .finish()
    }
}

#[async_trait]
pub trait Store:
    UserStore
    + SessionStore
    + RememberStore
    + ThrottleStore
    + CaptchaStore
    + EventStore
    + SecretStore
    + SecondFactorStore
    + RecoveryStore
    + OutboxStore
{
    /// Cheap round trip, for readiness checks.
    async fn ping(&self) -> StoreResult<()>;
}

/// Users: logins and emails share one case-insensitive namespace.
#[async_trait]
pub trait UserStore: Send + Sync {
    async fn create_user(&self, user: NewUser, now: UnixTime) -> StoreResult<User>;

    /// Finds a user by login or by email, case-insensitively.
    async fn find_user(&self, login_or_email: &str) -> StoreResult<Option<User>>;

    async fn get_user(&self, id: i64) -> StoreResult<Option<User>>;
    /// The user as committed after any change in progress (a password change, a dismissal):
    /// PostgreSQL waits for such a change to commit; SQLite's writes are serial already.
    async fn fresh_user(&self, id: i64) -> StoreResult<Option<User>> {
        self.get_user(id).await
    }

    async fn list_users(&self) -> StoreResult<Vec<User>>;

    async fn set_password_hash(&self, user_id: i64, hash: &str) -> StoreResult<()>;

    async fn set_dismissed(&self, user_id: i64, dismissed: bool) -> StoreResult<()>;
    /// Corrects a user's login, email, name, phone and groups (`user edit`, an accepted
    /// change of e-mail): logins and emails stay one case-insensitive namespace (`Duplicate`).
    /// Every gateway drops the user's cached sessions within 2 s and reads them again, so the
    /// new identity (headers, IP restrictions) applies at their next request.
    async fn update_user(
        &self,
        user_id: i64,
        profile: &NewUser,
        now: UnixTime,
    ) -> StoreResult<User>;

    /// The user whose phone number is `key` (`core::identity::phone_key`), if exactly one has
    /// it. Every user is read: recovery by SMS asks rarely, and the time does not depend on
    /// whether anyone matches.
    async fn find_user_by_phone(&self, key: &str) -> StoreResult<Option<User>> {
        let mut found = self
            .list_users()
            .await?
            .into_iter()
            .filter(|u| phone_key(&u.phone).as_deref() == Some(key));
        Ok(match (found.next(), found.next()) {
            (Some(user), None) => Some(user),
            _ => None,
        })
    }
}

/// Sessions, and the revocation feed that tells every gateway which ones ended.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Adds a session; a session with the same hash already there is kept as it is (a
    /// remember-me renewal raced by the same browser derives the same id).
    async fn insert_session(&self, session: &SessionRecord) -> StoreResult<()>;

    async fn get_session(&self, hash: &SessionHash) -> StoreResult<Option<SessionRecord>>;

    /// Moves `last_seen` forward (never back). False when the session is gone or its user is
    /// dismissed: the caller must stop trusting its copy.
    async fn touch_session(&self, hash: &SessionHash, last_seen: UnixTime) -> StoreResult<bool>;

    /// Deletes one session and publishes its revocation; true if it existed.
    async fn end_session(&self, hash: &SessionHash, now: UnixTime) -> StoreResult<bool>;

    /// Makes `change` to a user, deletes every session and remember-me token of theirs and
    /// publishes the revocation, with `reason` and the number of sessions ended, which it
    /// returns: all in one transaction.
    async fn end_user_sessions(
        &self,
        user_id: i64,
        now: UnixTime,
        reason: &str,
        change: UserChange,
    ) -> StoreResult<u64> {
        let ended = self
            .end_users_sessions(&[user_id], now, reason, change)
            .await?;
        Ok(ended.iter().sum())
    }

    /// `end_user_sessions` for each of `user_ids`, all in one transaction (a batch of
    /// dismissals); the sessions ended, user by user.
    async fn end_users_sessions(
        &self,
        user_ids: &[i64],
        now: UnixTime,
        reason: &str,
        change: UserChange,
    ) -> StoreResult<Vec<u64>>;

    /// Deletes sessions created before `created_before` (counted as `absolute`), then those
    /// idle since before `idle_before` (counted as `idle`).
    async fn purge_sessions(&self, bounds: SessionBounds) -> StoreResult<Purged>;

    /// Sessions seen since `idle_before` and created since `created_before`.
    async fn count_sessions(&self, bounds: SessionBounds) -> StoreResult<u64>;
    /// One user's sessions within `bounds`, most recently seen first (the account page).
    async fn user_sessions(
        &self,
        user_id: i64,
        bounds: SessionBounds,
    ) -> StoreResult<Vec<SessionRecord>>;

    /// Revocations published after `seq`, oldest first. Sequence numbers become visible in
    /// order: none can appear later below one already read.
    async fn revocations_since(&self, seq: i64) -> StoreResult<Vec<Revocation>>;

    /// Takes the counts of sessions the revocations `seqs` ended, leaving 0: of several
    /// gateways reading the feed, exactly one gets each. The counts come in the order of `seqs`.
    async fn claim_ended(&self, seqs: &[i64]) -> StoreResult<Vec<u64>>;

    /// Deletes revocations made before `before`: they only need to outlive the gateways' reads.
    async fn purge_revocations(&self, before: UnixTime) -> StoreResult<u64>;

    async fn last_revocation(&self) -> StoreResult<i64>;

    /// Bumped whenever revocations may have been published, for stores that can say so
    /// (PostgreSQL's LISTEN/NOTIFY); the feed is also read on a timer either way.
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}

/// "Stay signed in" tokens: a selector and the hash of its validator.
#[async_trait]
pub trait RememberStore: Send + Sync {
    async fn insert_remember(&self, token: &RememberRecord) -> StoreResult<()>;

    async fn get_remember(&self, selector: &str) -> StoreResult<Option<RememberRecord>>;

    /// Replaces the validator hash only if it is still `old`, keeping `old` as the previous one
    /// with the time `now`; false if another use won the race.
    async fn rotate_remember(
        &self,
        selector: &str,
        old: &[u8],
        new: &[u8],
        now: UnixTime,
    ) -> StoreResult<bool>;

    async fn delete_remember(&self, selector: &str) -> StoreResult<()>;
}

/// Throttle counters per login and per address, changed atomically.
#[async_trait]
pub trait ThrottleStore: Send + Sync {
    async fn counter(&self, key: &str) -> StoreResult<Option<Counter>>;

    /// Applies `update` atomically and returns the counter as it was before.
    async fn update_counter(
        &self,
        key: &str,
        update: CounterUpdate,
    ) -> StoreResult<Option<Counter>>;

    /// Deletes counters with no failure since `failed_before` and nothing pending at `now`.
    async fn purge_counters(&self, failed_before: i64, now: i64) -> StoreResult<u64>;
}

/// CAPTCHA challenges: the picture and the hash of the answer.
#[async_trait]
pub trait CaptchaStore: Send + Sync {
    /// Adds a challenge, first deleting expired ones and then, while `limit` or more remain
    /// (from every gateway), the oldest (the first to expire, then the first made): the table never holds more than `limit`, and the
    /// newest challenges, those people are answering, are the ones kept. Returns how many
    /// live challenges were pushed out.
    async fn insert_captcha(
        &self,
        challenge: &CaptchaRecord,
        limit: u32,
        now: UnixTime,
    ) -> StoreResult<u64>;

    /// The picture of a challenge that is neither used nor expired.
    async fn captcha_image(&self, id: &str, now: UnixTime) -> StoreResult<Option<Vec<u8>>>;

    /// Removes a challenge and returns it: each can be answered once.
    async fn take_captcha(&self, id: &str) -> StoreResult<Option<CaptchaRecord>>;

    async fn purge_captchas(&self, now: UnixTime) -> StoreResult<u64>;
}

/// An event's address key as stored (`core::addr::ip_key`); empty for an event without an
/// address, so that it counts as keyed.
pub(crate) fn event_ip_key(ip: &str) -> Vec<u8> {
    crate::core::addr::ip_key(ip).map_or_else(Vec::new, |k| k.to_vec())
}

/// The event log.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Stores `events` in one transaction: all or none.
    async fn record_events(&self, events: &[Event]) -> StoreResult<()>;

    /// Oldest first: deletes at most `limit` events older than `before`; returns how many.
    async fn purge_events(&self, before: UnixTime, limit: u32) -> StoreResult<u64>;

    async fn events(&self, filter: &EventFilter) -> StoreResult<Vec<Event>>;

    /// Gives at most `limit` events written before addresses were keyed their key (an empty
    /// one for an event without an address); returns how many. 0: all are keyed.
    async fn key_events(&self, limit: u32) -> StoreResult<u64>;
}

/// Random secrets the gateways of one store share (MAC keys).
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// A random 32-byte secret kept under `name`: made by whichever gateway (or command) asks
    /// first, then the same for every gateway of the store (e.g. the login form's CSRF key).
    async fn secret(&self, name: &str) -> StoreResult<[u8; 32]> {
        self.claim_secret(name, new_secret()).await
    }

    /// The value kept under `name`, which is `offered` if nobody claimed the name before.
    async fn claim_secret(&self, name: &str, offered: [u8; 32]) -> StoreResult<[u8; 32]>;
}

/// Two-step verification: sealed TOTP secrets, the last period used, backup code hashes.
#[async_trait]
pub trait SecondFactorStore: Send + Sync {
    async fn second_factor(&self, user_id: i64) -> StoreResult<Option<SecondFactorRecord>>;
    /// Sets a user's factor (replacing any) with `step` as the period already used (the
    /// confirming code) and a new set of backup code hashes, in one transaction.
    async fn enroll_second_factor(
        &self,
        user_id: i64,
        sealed_secret: &[u8],
        step: i64,
        codes: &[[u8; 32]],
        now: UnixTime,
    ) -> StoreResult<()>;
    /// Takes period `step` for the user: true only if it is later than the last one taken,
    /// atomically, whichever gateway asks (a code works once in a cluster too).
    async fn take_totp_step(&self, user_id: i64, step: i64) -> StoreResult<bool>;
    /// Uses up a backup code by its hash: how many are left, or `None` if it was not there.
    async fn use_backup_code(&self, user_id: i64, hash: &[u8; 32]) -> StoreResult<Option<u64>>;
    /// A new set of backup codes replaces the old one.
    async fn replace_backup_codes(&self, user_id: i64, codes: &[[u8; 32]]) -> StoreResult<()>;
    /// False when the user has no factor to turn off.
    async fn disable_second_factor_until(&self, user_id: i64, until: UnixTime)
    -> StoreResult<bool>;
    /// How many users have a factor (whether the key file is needed).
    async fn count_second_factors(&self) -> StoreResult<u64>;
    /// Any one user's factor, to check at start that the key file opens what the store holds.
    async fn any_second_factor(&self) -> StoreResult<Option<SecondFactorRecord>>;
}

/// What a recovery secret is: a link's (e-mailed, or given for a right SMS code) or an SMS
/// code's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryKind {
    Link,
    Sms,
    /// An invitation's link (`user invite`).
    Invite,
    /// A code sent to a new phone number, to confirm it (the account page).
    Phone,
    /// A link that confirms a new e-mail address (the account page): single use.
    Email,
}

impl RecoveryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecoveryKind::Link => "link",
            RecoveryKind::Sms => "sms",
            RecoveryKind::Invite => "invite",
            RecoveryKind::Phone => "phone",
            RecoveryKind::Email => "email",
        }
    }

    fn parse(text: &str) -> StoreResult<RecoveryKind> {
        match text {
            "link" => Ok(RecoveryKind::Link),
            "sms" => Ok(RecoveryKind::Sms),
            "invite" => Ok(RecoveryKind::Invite),
            "phone" => Ok(RecoveryKind::Phone),
            "email" => Ok(RecoveryKind::Email),
            other => Err(StoreError::Corrupt(format!("recovery kind `{other}`"))),
        }
    }
}

/// A user's way back in, by its hash: one per user, so a newer link or code replaces every
/// older one.
#[derive(Clone, PartialEq, Eq)]
pub struct RecoveryRecord {
    pub user_id: i64,
    pub kind: RecoveryKind,
    pub secret_hash: [u8; 32],
    pub created_at: UnixTime,
    pub expires_at: UnixTime,
    /// An SMS code's tries left (a link has one use).
    pub tries_left: u32,
    pub used_at: Option<UnixTime>,
}

impl std::fmt::Debug for RecoveryRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecoveryRecord")
            .field("user_id", &self.user_id)
            .field("kind", &self.kind)
            .field("expires_at", &self.expires_at)
            .field("tries_left", &self.tries_left)
            .field("used_at", &self.used_at)
            .finish_non_exhaustive()
    }
}

/// Password recovery: each user's newest link or SMS code, kept hashed.
#[async_trait]
pub trait RecoveryStore: Send + Sync {
    /// Sets the user's recovery secret, replacing any older one.
    async fn put_recovery(&self, record: &RecoveryRecord) -> StoreResult<()>;
    /// The record of the secret hashing to `hash`, whatever its state (used, expired).
    async fn recovery_by_hash(&self, hash: &[u8; 32]) -> StoreResult<Option<RecoveryRecord>>;
    /// Uses up a link of `kind` (`Link` or `Invite`): true only if it was live and unused
    /// (atomically: a link works once, on whichever gateway).
    async fn use_recovery(
        &self,
        hash: &[u8; 32],
        kind: RecoveryKind,
        now: UnixTime,
    ) -> StoreResult<bool>;
    /// Takes one try of the user's live code of `kind` (`Sms`, `Phone`), atomically: the
    /// record as it was before, or `None` when there is no live code with a try left.
    async fn try_sms_code(
        &self,
        user_id: i64,
        kind: RecoveryKind,
        now: UnixTime,
    ) -> StoreResult<Option<RecoveryRecord>>;
}

/// What to send: `kind` (`reset_link`, `sms_code`, `password_changed`) to a user (`None`: the
/// request named nobody; the job is dropped unsent, so a request takes the same path either
/// way), while it is still useful.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    pub kind: String,
    pub user_id: Option<i64>,
    pub not_after: UnixTime,
    /// What the message needs besides its user, never a secret (a new e-mail address).
    pub payload: String,
}

/// A queued message, as a worker claimed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxJob {
    pub id: i64,
    pub kind: String,
    pub user_id: Option<i64>,
    pub created_at: UnixTime,
    pub not_after: UnixTime,
    pub attempts: u32,
    pub payload: String,
}

/// A queue entry passes `key` only once per `gap` seconds (`recovery.resend_after`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    pub key: String,
    pub gap: i64,
}

/// Mail and SMS waiting to be sent: jobs survive restarts, one gateway claims each.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Queues `job` in one transaction with passing `gate`; a gate passed less than its gap
    /// ago queues nothing: `Err(seconds until it opens)`.
    async fn enqueue(
        &self,
        job: &NewJob,
        gate: Option<&Gate>,
        now: UnixTime,
    ) -> StoreResult<Result<(), u64>>;
    /// Passes `gate` alone (no job): `Err(seconds until it opens)` when it is closed.
    async fn pass_gate(&self, gate: &Gate, now: UnixTime) -> StoreResult<Result<(), u64>>;
    /// Up to `limit` jobs due at `now` of the `kinds` this worker can send (and of any kind
    /// once past `not_after`, to be dropped), claimed by `worker` for `lease` seconds (a claim
    /// of another worker is respected until its lease runs out).
    async fn claim_jobs(
        &self,
        worker: &str,
        kinds: &[&str],
        now: UnixTime,
        lease: i64,
        limit: u32,
    ) -> StoreResult<Vec<OutboxJob>>;
    /// Sent, or given up: the job leaves the queue.
    async fn finish_job(&self, id: i64) -> StoreResult<()>;
    /// Not sent: tried again at `at`, by whichever worker claims it then.
    async fn retry_job(&self, id: i64, at: UnixTime) -> StoreResult<()>;
    /// Jobs in the queue.
    async fn count_jobs(&self) -> StoreResult<u64>;
}

/// The case-insensitive form under which logins and emails are unique and looked up.
fn key(s: &str) -> String {
    s.trim().to_lowercase()
}

/// 32 fresh random bytes, offered as a secret's value (the first offer stored wins).
fn new_secret() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    bytes
}

fn secret_from(bytes: Vec<u8>) -> StoreResult<[u8; 32]> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("a stored secret is not 32 bytes".into()))
}

/// A user's groups as stored (a JSON list). A row that cannot be read is an error: read as "no
/// groups" it would escape every group restriction.
fn groups_from(text: &str) -> StoreResult<Vec<String>> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("a user's groups are not a list of names: {e}")))
}

fn hash_from(bytes: Vec<u8>) -> StoreResult<SessionHash> {
    bytes
        .try_into()
        .map(SessionHash)
        .map_err(|_| StoreError::Corrupt("a session hash is not 32 bytes".into()))
}

/// For a name taken in the shared login/email namespace.
fn duplicate_message(value: &str) -> String {
    if value.contains('@') {
        "A user with this email already exists".into()
    } else {
        "A user with this login already exists".into()
    }
}

/// Opens (creating and migrating when needed) the configured store.
pub async fn open(config: &StoreConfig) -> StoreResult<Arc<dyn Store>> {
    match config {
        StoreConfig::Sqlite { path } => Ok(Arc::new(SqliteStore::open(path).await?)),
        StoreConfig::Postgres { url } => Ok(Arc::new(PostgresStore::open(url).await?)),
    }
}
