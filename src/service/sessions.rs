//! Sessions: issuing, finding, sliding and ending them. A moka cache with time-to-idle sits in
//! front of the store so that a request never waits on the store while its session is hot;
//! `last_seen` reaches the store lazily (at most `idle_timeout / 24` behind).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use moka::sync::Cache;

use crate::config::{SessionConfig, TwoFactorConfig};
use crate::core::event::{Event, EventKind};
use crate::core::identity::{Client, Identity, User};
use crate::core::secret::{RememberToken, SessionHash, SessionToken, same_token, session_handle};
use crate::core::time::{Clock, UnixTime};
use crate::policy::device;
use crate::policy::expiry::{Expiry, expiry, touch_interval};
use crate::policy::totp;
use crate::service::audit::Audit;
use crate::service::metrics::Metrics;
use crate::store::{
    Purged, RememberRecord, Revoked, SessionBounds, SessionRecord, Store, StoreError, StoreResult,
    UserChange,
};

/// A session in the cache.
#[derive(Debug)]
pub struct LiveSession {
    pub hash: SessionHash,
    pub identity: Arc<Identity>,
    pub created_at: UnixTime,
    pub remember_selector: Option<String>,
    last_seen: AtomicI64,
    stored_last_seen: AtomicI64,
    /// When the store last confirmed the session (read it, or took its `last_seen`). A cached
    /// session unconfirmed for longer than the idle timeout is asked about again: during a
    /// store outage it keeps working that long at most.
    confirmed: AtomicI64,
}

impl LiveSession {
    /// A session as the store had it at `now`.
    fn from_record(rec: &SessionRecord, identity: Arc<Identity>, now: UnixTime) -> LiveSession {
        LiveSession {
            hash: rec.hash,
            identity,
            created_at: rec.created_at,
            remember_selector: rec.remember_selector.clone(),
            last_seen: AtomicI64::new(rec.last_seen),
            stored_last_seen: AtomicI64::new(rec.last_seen),
            confirmed: AtomicI64::new(now),
        }
    }

    pub fn last_seen(&self) -> UnixTime {
        self.last_seen.load(Ordering::Relaxed)
    }

    /// Whether the cached copy may be trusted without asking the store: it was confirmed no
    /// longer than an idle timeout ago.
    fn recently_confirmed(&self, now: UnixTime, cfg: &SessionConfig) -> bool {
        now - self.confirmed.load(Ordering::Relaxed) <= cfg.idle_timeout.as_secs() as i64
    }

    /// Seconds left before idle expiry (or the absolute limit, if sooner).
    pub fn expires_in(&self, now: UnixTime, cfg: &SessionConfig) -> i64 {
        let idle = self.last_seen() + cfg.idle_timeout.as_secs() as i64 - now;
        match cfg.absolute_timeout {
            Some(abs) => idle.min(self.created_at + abs.as_secs() as i64 - now),
            None => idle,
        }
        .max(0)
    }
}

pub enum Lookup {
    Live(Arc<LiveSession>),
    Expired(Expiry),
    Unknown,
}

/// "Stay signed in" for a session being issued: for how long, and whether the sign-in had a
/// second factor (`RememberRecord::second_factor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RememberFor {
    pub lifetime: Duration,
    pub second_factor: bool,
}

/// A freshly issued session (and remember-me token, when asked for).
pub struct Issued {
    pub token: SessionToken,
    pub remember: Option<RememberToken>,
    pub live: Arc<LiveSession>,
}

/// How long the validator a rotation replaced still renews, for the parallel requests of one
/// browser that carried it; it gets them the rotation's own result, never a session of its own.
pub const REMEMBER_GRACE: i64 = 10;

/// Which validator a remember-me cookie presented.
enum Step {
    /// The current one: this request rotates it.
    Current,
    /// The one a parallel request just replaced, within the grace.
    Raced,
}

/// Whether `presented` is the validator the last rotation replaced, within the grace, and that
/// rotation was its own (the record now holds `next`, derived from it), not a later one.
fn raced(
    rec: &RememberRecord,
    presented: &RememberToken,
    next: &RememberToken,
    now: UnixTime,
) -> bool {
    rec.previous_hash
        .as_deref()
        .is_some_and(|prev| presented.matches(prev))
        && now - rec.rotated_at <= REMEMBER_GRACE
        && next.matches(&rec.validator_hash)
}

pub enum Renewal {
    Renewed(Issued),
    /// A known selector with a wrong validator: every session of `login` was ended.
    Theft {
        login: String,
    },
    Invalid,
}

pub struct Sessions {
    store: Arc<dyn Store>,
    /// The key of `RememberToken::successor`, shared by every gateway through the store.
    remember_key: [u8; 32],
    audit: Audit,
    clock: Arc<dyn Clock>,
    cache: Cache<SessionHash, Arc<LiveSession>>,
    metrics: Arc<Metrics>,
}

/// One session as its user sees it on the account page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    /// The public handle (never the token or its hash).
    pub handle: String,
    /// "Firefox 133 on Linux".
    pub device: String,
    pub ip: String,
    pub signed_in: UnixTime,
    pub last_active: UnixTime,
    pub this_device: bool,
}

/// Why a session ended here, for `portcullis_sessions_ended_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Signed out, or replaced by a new sign-in in the same browser.
    Logout,
    Expired(Expiry),
    /// Ended with all of its user's sessions (a replayed remember-me token).
    Revoked,
    Dismissed,
    IpRestricted,
}

impl Ended {
    pub fn as_str(self) -> &'static str {
        match self {
            Ended::Logout => "logout",
            Ended::Expired(why) => why.as_str(),
            Ended::Revoked => "revoked",
            Ended::Dismissed => "dismissed",
            Ended::IpRestricted => "ip_restricted",
        }
    }
}

fn cache(capacity: u64, idle_timeout: Duration) -> Cache<SessionHash, Arc<LiveSession>> {
    Cache::builder()
        .max_capacity(capacity)
        .time_to_idle(idle_timeout)
        // `forget_users`: no walk over a million sessions for a few users.
        .support_invalidation_closures()
        .build()
}

impl Sessions {
    pub fn new(
        store: Arc<dyn Store>,
        remember_key: [u8; 32],
        audit: Audit,
        clock: Arc<dyn Clock>,
        idle_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Sessions {
        Sessions {
            store,
            remember_key,
            audit,
            clock,
            metrics,
            cache: cache(crate::config::DEFAULT_SESSION_CACHE, idle_timeout),
        }
    }

    /// At most `capacity` sessions in memory (`session.cache_capacity`); one pushed out, least
    /// recently used first, is read from the store at its next request, never lost.
    pub fn with_cache_capacity(mut self, capacity: u64, idle_timeout: Duration) -> Sessions {
        self.cache = cache(capacity, idle_timeout);
        self
    }

    pub fn now(&self) -> UnixTime {
        self.clock.now()
    }

    /// The user a session or a pending sign-in names, unless gone or dismissed.
    pub async fn user(&self, id: i64) -> StoreResult<Option<User>> {
        Ok(self.store.get_user(id).await?.filter(|u| !u.dismissed))
    }

    /// Finds the session for a cookie, sliding its expiry. Cache first, then the store.
    pub async fn lookup(&self, token: &SessionToken, cfg: &SessionConfig) -> StoreResult<Lookup> {
        let now = self.clock.now();
        let hash = token.hash();
        let cached = self.cache.get(&hash);
        self.metrics.session_cache(cached.is_some());
        if let Some(live) = cached {
            match expiry(now, live.created_at, live.last_seen(), cfg) {
                None if live.recently_confirmed(now, cfg) => {
                    self.slide(&live, now, cfg);
                    return Ok(Lookup::Live(live));
                }
                _ => self.cache.invalidate(&hash),
            }
        }
        // Not cached, or expired here: the store is the judge (another gateway may have seen
        // the session more recently).
        let Some(rec) = self.store.get_session(&hash).await? else {
            return Ok(Lookup::Unknown);
        };
        if let Some(why) = expiry(now, rec.created_at, rec.last_seen, cfg) {
            // Parallel requests of one browser may all get here: the one that ends the session
            // counts and records it.
            if !self.store.end_session(&hash, now).await? {
                return Ok(Lookup::Expired(why));
            }
            self.metrics.sessions_ended(Ended::Expired(why).as_str(), 1);
            let login = match self.store.get_user(rec.user_id).await? {
                Some(u) => u.login,
                None => String::new(),
            };
            self.audit.record(
                Event::new(EventKind::SessionExpired, now)
                    .login(&login)
                    .client(&rec.ip, &rec.user_agent)
                    .session(hash.short())
                    .detail(why.as_str()),
            );
            return Ok(Lookup::Expired(why));
        }
        let Some(user) = self.store.get_user(rec.user_id).await? else {
            return Ok(Lookup::Unknown);
        };
        if user.dismissed {
            if self.store.end_session(&hash, now).await? {
                self.metrics.sessions_ended(Ended::Dismissed.as_str(), 1);
            }
            return Ok(Lookup::Unknown);
        }
        let live = Arc::new(LiveSession::from_record(
            &rec,
            Arc::new(Identity::of(&user)),
            now,
        ));
        self.slide(&live, now, cfg);
        self.cache.insert(hash, live.clone());
        Ok(Lookup::Live(live))
    }

    /// Like `lookup` but without extending the session (for `GET api/session`).
    pub async fn peek(
        &self,
        token: &SessionToken,
        cfg: &SessionConfig,
    ) -> StoreResult<Option<Arc<LiveSession>>> {
        let now = self.clock.now();
        if let Some(live) = self.cache.get(&token.hash())
            && live.recently_confirmed(now, cfg)
        {
            return Ok(expiry(now, live.created_at, live.last_seen(), cfg)
                .is_none()
                .then_some(live));
        }
        let Some(rec) = self.store.get_session(&token.hash()).await? else {
            return Ok(None);
        };
        if expiry(now, rec.created_at, rec.last_seen, cfg).is_some() {
            return Ok(None);
        }
        let Some(user) = self
            .store
            .get_user(rec.user_id)
            .await?
            .filter(|u| !u.dismissed)
        else {
            return Ok(None);
        };
        Ok(Some(Arc::new(LiveSession::from_record(
            &rec,
            Arc::new(Identity::of(&user)),
            now,
        ))))
    }

    /// Records activity; writes `last_seen` to the store only when it lags by the interval.
    fn slide(&self, live: &Arc<LiveSession>, now: UnixTime, cfg: &SessionConfig) {
        live.last_seen.fetch_max(now, Ordering::Relaxed);
        let stored = live.stored_last_seen.load(Ordering::Relaxed);
        if now - stored >= touch_interval(cfg)
            && live
                .stored_last_seen
                .compare_exchange(stored, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let (store, cache, live) = (self.store.clone(), self.cache.clone(), live.clone());
            tokio::spawn(async move {
                match store.touch_session(&live.hash, now).await {
                    Ok(true) => {
                        live.confirmed.fetch_max(now, Ordering::Relaxed);
                    }
                    // Ended or its user dismissed, and the revocation not seen here (yet).
                    Ok(false) => cache.invalidate(&live.hash),
                    Err(e) => {
                        // Not written: the next request tries again.
                        let _ = live.stored_last_seen.compare_exchange(
                            now,
                            stored,
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        );
                        tracing::warn!(error = %e, "could not record session activity");
                    }
                }
            });
        }
    }

    /// Issues a new session (never reusing an id the client sent: no fixation).
    pub async fn issue(
        &self,
        user: &User,
        remember_for: Option<RememberFor>,
        client: &Client,
    ) -> StoreResult<Issued> {
        let now = self.clock.now();
        let remember = match remember_for {
            Some(RememberFor {
                lifetime,
                second_factor,
            }) => {
                let token = RememberToken::generate();
                self.store
                    .insert_remember(&RememberRecord {
                        selector: token.selector.clone(),
                        validator_hash: token.validator_hash().to_vec(),
                        user_id: user.id,
                        expires_at: now + lifetime.as_secs() as i64,
                        previous_hash: None,
                        rotated_at: 0,
                        second_factor,
                    })
                    .await?;
                Some(token)
            }
            None => None,
        };
        let selector = remember.as_ref().map(|t| t.selector.clone());
        let (token, live) = self.start(user, selector, client, now).await?;
        // A password change (or a dismissal) that committed while this sign-in was checking
        // the old password must not leave it a session: one that commits later ends it with
        // the others; one that committed before shows here, and this one ends at once.
        let now_stored = self.store.fresh_user(user.id).await?;
        if now_stored.is_none_or(|u| u.password_hash != user.password_hash || u.dismissed) {
            self.end(&live, Ended::Revoked).await?;
            return Err(StoreError::Changed);
        }
        Ok(Issued {
            token,
            remember,
            live,
        })
    }

    async fn start(
        &self,
        user: &User,
        remember_selector: Option<String>,
        client: &Client,
        now: UnixTime,
    ) -> StoreResult<(SessionToken, Arc<LiveSession>)> {
        let token = SessionToken::generate();
        let live = self
            .start_with(&token, user, remember_selector, client, now)
            .await?;
        Ok((token, live))
    }

    async fn start_with(
        &self,
        token: &SessionToken,
        user: &User,
        remember_selector: Option<String>,
        client: &Client,
        now: UnixTime,
    ) -> StoreResult<Arc<LiveSession>> {
        let rec = SessionRecord {
            hash: token.hash(),
            user_id: user.id,
            created_at: now,
            last_seen: now,
            remember_selector,
            ip: client.ip.clone(),
            user_agent: client.user_agent.chars().take(256).collect(),
        };
        self.store.insert_session(&rec).await?;
        let live = Arc::new(LiveSession::from_record(
            &rec,
            Arc::new(Identity::of(user)),
            now,
        ));
        self.cache.insert(rec.hash, live.clone());
        Ok(live)
    }

    /// Trades a remember-me cookie for a new session, rotating its validator. The session id
    /// and the new validator are derived from the presented validator, so parallel requests of
    /// one browser that all carry it (after a restart, a page with many assets) end up with the
    /// same session whichever wins: the others, arriving with the validator just replaced, get
    /// the winner's result for `REMEMBER_GRACE`. Any other validator for a known selector, or
    /// the replaced one later than that, is a stolen token replayed. Where two-step
    /// verification is missing (`second_factor_missing`), the user signs in again instead.
    pub async fn renew(
        &self,
        presented: &RememberToken,
        two_factor: &TwoFactorConfig,
        client: &Client,
    ) -> StoreResult<Renewal> {
        let now = self.clock.now();
        let Some(rec) = self.store.get_remember(&presented.selector).await? else {
            return Ok(Renewal::Invalid);
        };
        if rec.expires_at <= now {
            self.store.delete_remember(&rec.selector).await?;
            return Ok(Renewal::Invalid);
        }
        let Some(user) = self.store.get_user(rec.user_id).await? else {
            return Ok(Renewal::Invalid);
        };
        let (token, next) = presented.successor(&self.remember_key);
        let step = if presented.matches(&rec.validator_hash) {
            Step::Current
        } else if raced(&rec, presented, &next, now) {
            Step::Raced
        } else {
            return self.theft(user, client, now).await;
        };
        if user.dismissed || self.second_factor_missing(two_factor, &user, &rec).await? {
            return Ok(Renewal::Invalid);
        }
        let live = match step {
            Step::Current => {
                self.rotate(&rec, presented, &next, &token, &user, client, now)
                    .await?
            }
            Step::Raced => self.raced_session(&token, &user, now).await?,
        };
        Ok(match live {
            Some(live) => Renewal::Renewed(Issued {
                token,
                remember: Some(next),
                live,
            }),
            None => Renewal::Invalid,
        })
    }

    /// Whether two-step verification stands in the way of renewing `rec`: the user must set
    /// a factor up and has none, or has one that is asked (not turned off) while the token
    /// was made with the password alone (before the factor, or while it was turned off).
    async fn second_factor_missing(
        &self,
        two_factor: &TwoFactorConfig,
        user: &User,
        rec: &RememberRecord,
    ) -> StoreResult<bool> {
        Ok(match self.store.second_factor(user.id).await? {
            None => totp::required(two_factor, &user.groups),
            Some(f) => !rec.second_factor && f.disabled_until <= self.clock.now(),
        })
    }

    /// The winner's part: the session first, the rotation second (if the rotation cannot be
    /// made, the browser's validator stays the valid one). Losing the rotation to a parallel
    /// request with the same token is no loss: it derived the same session.
    #[allow(clippy::too_many_arguments)]
    async fn rotate(
        &self,
        rec: &RememberRecord,
        presented: &RememberToken,
        next: &RememberToken,
        token: &SessionToken,
        user: &User,
        client: &Client,
        now: UnixTime,
    ) -> StoreResult<Option<Arc<LiveSession>>> {
        let live = self
            .start_with(token, user, Some(rec.selector.clone()), client, now)
            .await?;
        let rotated = self
            .store
            .rotate_remember(
                &rec.selector,
                &rec.validator_hash,
                &next.validator_hash(),
                now,
            )
            .await?;
        if rotated {
            // A session issued without a password: `login_success` says by what.
            for (kind, detail) in [
                (EventKind::SessionRenewed, ""),
                (EventKind::LoginSuccess, "remember_me"),
            ] {
                let event = Event::new(kind, now)
                    .login(&user.login)
                    .client(&client.ip, &client.user_agent)
                    .session(live.hash.short())
                    .detail(detail);
                self.audit.record(event);
            }
            return Ok(Some(live));
        }
        // Someone rotated it first: a parallel request with this token (then the record now
        // says so), or anything else (then this session is never handed out).
        let again = self.store.get_remember(&rec.selector).await?;
        if again.is_some_and(|r| raced(&r, presented, next, now)) {
            return Ok(Some(live));
        }
        self.cache.invalidate(&live.hash);
        self.store.end_session(&live.hash, now).await?;
        Ok(None)
    }

    /// A parallel request's part: the session the winner made, if it still exists.
    async fn raced_session(
        &self,
        token: &SessionToken,
        user: &User,
        now: UnixTime,
    ) -> StoreResult<Option<Arc<LiveSession>>> {
        let hash = token.hash();
        if let Some(live) = self.cache.get(&hash) {
            return Ok(Some(live));
        }
        let Some(rec) = self.store.get_session(&hash).await? else {
            return Ok(None);
        };
        let live = Arc::new(LiveSession::from_record(
            &rec,
            Arc::new(Identity::of(user)),
            now,
        ));
        self.cache.insert(hash, live.clone());
        Ok(Some(live))
    }

    /// A replayed token: every session and remember-me token of the user ends.
    async fn theft(&self, user: User, client: &Client, now: UnixTime) -> StoreResult<Renewal> {
        self.end_user(user.id, Ended::Revoked).await?;
        self.audit.record(
            Event::new(EventKind::SessionsRevoked, now)
                .login(&user.login)
                .client(&client.ip, &client.user_agent)
                .detail("remember-me token replayed"),
        );
        Ok(Renewal::Theft { login: user.login })
    }

    /// Ends one session and the remember-me token it came with.
    pub async fn end(&self, live: &LiveSession, why: Ended) -> StoreResult<()> {
        self.cache.invalidate(&live.hash);
        if let Some(selector) = &live.remember_selector {
            self.store.delete_remember(selector).await?;
        }
        if self.store.end_session(&live.hash, self.clock.now()).await? {
            self.metrics.sessions_ended(why.as_str(), 1);
        }
        Ok(())
    }

    /// The public handle of a session (`core::secret::session_handle`).
    pub fn handle(&self, hash: &SessionHash) -> String {
        session_handle(&self.remember_key, hash)
    }

    /// A user's live sessions, most recently active first, as the account page lists them;
    /// `current` is marked as this device. The last activity is this gateway's when it holds
    /// the session, else the store's (which lags by at most the touch interval).
    pub async fn of_user(
        &self,
        user_id: i64,
        current: &SessionHash,
        cfg: &SessionConfig,
    ) -> StoreResult<Vec<SessionView>> {
        let records = self
            .store
            .user_sessions(user_id, self.bounds(cfg, 0))
            .await?;
        let mut views: Vec<SessionView> = records
            .iter()
            .map(|r| {
                let last_active = self
                    .cache
                    .get(&r.hash)
                    .map_or(r.last_seen, |live| live.last_seen().max(r.last_seen));
                SessionView {
                    handle: self.handle(&r.hash),
                    device: device::summary(&r.user_agent),
                    ip: r.ip.clone(),
                    signed_in: r.created_at,
                    last_active,
                    this_device: r.hash == *current,
                }
            })
            .collect();
        views.sort_by_key(|v| (!v.this_device, std::cmp::Reverse(v.last_active)));
        Ok(views)
    }

    /// Ends the session of `user_id` whose handle is `handle`, and its remember-me token, on
    /// every gateway. Only that user's sessions are looked at: another user's handle matches
    /// nothing. Returns the session that ended.
    pub async fn end_handle(
        &self,
        user_id: i64,
        handle: &str,
        cfg: &SessionConfig,
    ) -> StoreResult<Option<SessionRecord>> {
        let records = self
            .store
            .user_sessions(user_id, self.bounds(cfg, 0))
            .await?;
        let Some(record) = records
            .into_iter()
            .find(|r| same_token(handle, &self.handle(&r.hash)))
        else {
            return Ok(None);
        };
        self.cache.invalidate(&record.hash);
        if let Some(selector) = &record.remember_selector {
            self.store.delete_remember(selector).await?;
        }
        if self
            .store
            .end_session(&record.hash, self.clock.now())
            .await?
        {
            self.metrics.sessions_ended(Ended::Revoked.as_str(), 1);
        }
        Ok(Some(record))
    }

    /// Forgets a remember-me token presented without a session (e.g. at logout).
    pub async fn forget_remember(&self, token: &RememberToken) -> StoreResult<()> {
        if let Some(rec) = self.store.get_remember(&token.selector).await?
            && token.matches(&rec.validator_hash)
        {
            self.store.delete_remember(&rec.selector).await?;
        }
        Ok(())
    }

    /// Ends every session and remember-me token of a user, here and (through the store's
    /// revocation feed, which also counts them) on every gateway.
    pub async fn end_user(&self, user_id: i64, why: Ended) -> StoreResult<u64> {
        let n = self
            .store
            .end_user_sessions(user_id, self.clock.now(), why.as_str(), UserChange::Nothing)
            .await?;
        self.forget_user(user_id);
        Ok(n)
    }

    /// Drops a user's sessions from this gateway's cache (they are read again from the store).
    pub fn forget_user(&self, user_id: i64) {
        self.forget_users(HashSet::from([user_id]));
    }

    /// The same for many users at once. The cache never returns their sessions from the moment
    /// this returns, and removes them in the background: the cost does not grow with the
    /// sessions cached.
    fn forget_users(&self, user_ids: HashSet<i64>) {
        if user_ids.is_empty() {
            return;
        }
        let gone = Arc::new(user_ids);
        let theirs = gone.clone();
        let registered = self
            .cache
            .invalidate_entries_if(move |_, live| theirs.contains(&live.identity.user_id));
        if let Err(e) = registered {
            // Only if the cache were built without closures: walk it instead.
            tracing::error!(error = %e, "cannot register a cache invalidation; walking the cache");
            for (hash, live) in self.cache.iter() {
                if gone.contains(&live.identity.user_id) {
                    self.cache.invalidate(hash.as_ref());
                }
            }
        }
    }

    /// Applies revocations published after `seq` to the cache; returns the new high mark.
    /// Sessions ended wholesale (by a command, or on any gateway) are counted here, by the one
    /// gateway that claims them. A batch (a storm of dismissals) costs one invalidation and one
    /// store call for the counts, whatever its size.
    pub async fn apply_revocations(&self, seq: i64) -> StoreResult<i64> {
        let mut high = seq;
        let mut users = HashSet::new();
        let mut uncounted = Vec::new();
        for r in self.store.revocations_since(seq).await? {
            match r.what {
                Revoked::User(id) => {
                    users.insert(id);
                }
                Revoked::Session(hash) => self.cache.invalidate(&hash),
            }
            let reason = crate::service::metrics::END_REASONS
                .iter()
                .find(|known| **known == r.reason);
            if let Some(reason) = reason
                && r.uncounted > 0
            {
                uncounted.push((r.seq, *reason));
            }
            high = high.max(r.seq);
        }
        self.forget_users(users);
        if !uncounted.is_empty() {
            let seqs: Vec<i64> = uncounted.iter().map(|(seq, _)| *seq).collect();
            let claimed = self.store.claim_ended(&seqs).await?;
            for ((_, reason), n) in uncounted.iter().zip(claimed) {
                self.metrics.sessions_ended(reason, n);
            }
        }
        Ok(high)
    }

    /// Where sessions in the store stop being live: `idle_timeout` after their `last_seen`,
    /// which the store may have up to `touch_interval` late, plus `slack`.
    fn bounds(&self, cfg: &SessionConfig, slack: i64) -> SessionBounds {
        let now = self.clock.now();
        let idle = cfg.idle_timeout.as_secs() as i64;
        let margin = touch_interval(cfg) + slack;
        SessionBounds {
            idle_before: now - idle - margin,
            created_before: cfg.absolute_timeout.map(|a| now - a.as_secs() as i64),
        }
    }

    /// Deletes sessions from the store that can no longer be valid. Whichever gateway deletes
    /// a session counts it, so a cluster counts each once.
    pub async fn purge(&self, cfg: &SessionConfig) -> StoreResult<Purged> {
        // A minute of slack for clocks of a cluster a little apart.
        let purged = self.store.purge_sessions(self.bounds(cfg, 60)).await?;
        self.metrics
            .sessions_ended(Ended::Expired(Expiry::Idle).as_str(), purged.idle);
        self.metrics
            .sessions_ended(Ended::Expired(Expiry::Absolute).as_str(), purged.absolute);
        Ok(purged)
    }

    /// Sessions in the store, from every gateway, that are not past their expiry.
    pub async fn count_live(&self, cfg: &SessionConfig) -> StoreResult<u64> {
        self.store.count_sessions(self.bounds(cfg, 0)).await
    }

    pub fn cached(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(idle: u64, absolute: Option<u64>) -> SessionConfig {
        SessionConfig {
            cookie_name: "s".into(),
            idle_timeout: Duration::from_secs(idle),
            absolute_timeout: absolute.map(Duration::from_secs),
            remember_me: None,
            cache_capacity: crate::config::DEFAULT_SESSION_CACHE,
        }
    }

    use crate::core::identity::NewUser;
    use crate::core::time::ManualClock;
    use crate::store::SqliteStore;

    async fn setup(clock: Arc<ManualClock>) -> (tempfile::TempDir, Arc<dyn Store>, Sessions, User) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&dir.path().join("s.db")).await.unwrap());
        let user = store
            .create_user(
                NewUser {
                    login: "ann".into(),
                    email: "ann@example.com".into(),
                    name: "Ann".into(),
                    phone: String::new(),
                    groups: vec!["staff".into()],
                    password_hash: "x".into(),
                },
                clock.now(),
            )
            .await
            .unwrap();
        let metrics = Arc::new(Metrics::new());
        let (audit, events) = Audit::start(store.clone(), None, metrics.clone()).unwrap();
        tokio::spawn(events.run());
        let sessions = Sessions::new(
            store.clone(),
            [9; 32],
            audit,
            clock,
            Duration::from_secs(240),
            metrics,
        );
        (dir, store, sessions, user)
    }

    #[tokio::test]
    async fn sessions_that_end_unseen_are_counted_when_purged_and_no_longer_live() {
        let clock = ManualClock::at(1_000_000);
        let (_dir, _store, sessions, user) = setup(clock.clone()).await;
        let (idle, absolute) = (cfg(240, None), cfg(240, Some(600)));
        let client = Client::default();
        sessions.issue(&user, None, &client).await.unwrap();
        clock.advance(500);
        sessions.issue(&user, None, &client).await.unwrap();
        assert_eq!(sessions.count_live(&idle).await.unwrap(), 1);
        // 240 s idle, plus the margin (10 s lazy writes + 60 s), have passed for the first.
        assert_eq!(
            sessions.purge(&idle).await.unwrap(),
            Purged {
                idle: 1,
                absolute: 0
            }
        );
        clock.advance(200);
        assert_eq!(sessions.count_live(&absolute).await.unwrap(), 1);
        clock.advance(401);
        // Created 601 s ago: past the absolute lifetime, though seen recently enough.
        sessions.issue(&user, None, &client).await.unwrap();
        assert_eq!(sessions.count_live(&absolute).await.unwrap(), 1);
        assert_eq!(
            sessions.purge(&absolute).await.unwrap(),
            Purged {
                idle: 0,
                absolute: 1
            }
        );
        let text = sessions.metrics.render();
        assert!(text.contains("portcullis_sessions_ended_total{reason=\"idle\"} 1"));
        assert!(text.contains("portcullis_sessions_ended_total{reason=\"absolute\"} 1"));
    }

    #[tokio::test]
    async fn last_seen_reaches_the_store_lazily_and_the_cache_slides_exactly() {
        let clock = ManualClock::at(1_000_000);
        let (_dir, store, sessions, user) = setup(clock.clone()).await;
        let cfg = cfg(240, None); // lazy interval: 10 s
        let issued = sessions
            .issue(&user, None, &Client::default())
            .await
            .unwrap();
        let hash = issued.token.hash();
        let stored = |store: Arc<dyn Store>| async move {
            store.get_session(&hash).await.unwrap().unwrap().last_seen
        };
        for step in 1..=9 {
            clock.advance(1);
            assert!(matches!(
                sessions.lookup(&issued.token, &cfg).await.unwrap(),
                Lookup::Live(_)
            ));
            tokio::task::yield_now().await;
            assert_eq!(
                stored(store.clone()).await,
                1_000_000,
                "written after {step} s"
            );
        }
        clock.advance(1);
        sessions.lookup(&issued.token, &cfg).await.unwrap();
        let mut written = 0;
        for _ in 0..100 {
            written = stored(store.clone()).await;
            if written == 1_000_010 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(written, 1_000_010, "one write after the interval");
        // Sliding is exact from the cache: alive at 239 s after the last request, dead at 240.
        clock.advance(239);
        assert!(matches!(
            sessions.lookup(&issued.token, &cfg).await.unwrap(),
            Lookup::Live(_)
        ));
        clock.advance(240);
        assert!(matches!(
            sessions.lookup(&issued.token, &cfg).await.unwrap(),
            Lookup::Expired(Expiry::Idle)
        ));
        assert!(
            store.get_session(&hash).await.unwrap().is_none(),
            "an expired session leaves the store"
        );
    }

    #[tokio::test]
    async fn revocations_published_elsewhere_empty_the_cache() {
        let clock = ManualClock::at(2_000_000);
        let (_dir, store, sessions, user) = setup(clock.clone()).await;
        let cfg = cfg(240, None);
        let issued = sessions
            .issue(&user, None, &Client::default())
            .await
            .unwrap();
        let seq = store.last_revocation().await.unwrap();
        // Another process (the CLI) ends the user's sessions in the store.
        store
            .end_user_sessions(user.id, clock.now(), "revoked", UserChange::Nothing)
            .await
            .unwrap();
        assert!(
            matches!(
                sessions.lookup(&issued.token, &cfg).await.unwrap(),
                Lookup::Live(_)
            ),
            "still cached"
        );
        sessions.apply_revocations(seq).await.unwrap();
        assert!(matches!(
            sessions.lookup(&issued.token, &cfg).await.unwrap(),
            Lookup::Unknown
        ));
    }

    #[tokio::test]
    async fn a_session_the_store_no_longer_has_leaves_the_cache_at_its_next_write() {
        let clock = ManualClock::at(3_000_000);
        let (_dir, store, sessions, user) = setup(clock.clone()).await;
        let cfg = cfg(240, None); // lazy interval: 10 s
        let issued = sessions
            .issue(&user, None, &Client::default())
            .await
            .unwrap();
        // Gone from the store with no revocation to say so (as if the feed missed it).
        let everything = SessionBounds {
            idle_before: i64::MAX,
            created_before: None,
        };
        store.purge_sessions(everything).await.unwrap();
        clock.advance(11);
        let lookup = sessions.lookup(&issued.token, &cfg).await.unwrap();
        assert!(
            matches!(lookup, Lookup::Live(_)),
            "served from the cache once"
        );
        // That use wrote `last_seen`, which found no session: the copy is dropped.
        let gone = async {
            while sessions.cached() > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(2), gone)
            .await
            .unwrap();
        assert!(matches!(
            sessions.lookup(&issued.token, &cfg).await.unwrap(),
            Lookup::Unknown
        ));
    }
}
