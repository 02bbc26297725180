//! One sign-in attempt, in the order of SPEC §6: the address's attempt rate, the login's lock,
//! the CAPTCHA (attempts from one address and for one account take turns from here until a
//! failure is counted), and only then the password (on the hashing pool; a dummy hash for unknown
//! logins, so both cost the same), dismissal, and the IP restriction last, so that its refusal
//! reveals nothing without the password. A refusal before the password never hashes it.

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::allowlist::ClientAddr;
use crate::audit::{Event, EventKind};
use crate::captcha;
use crate::config::Config;
use crate::gateway::App;
use crate::network;
use crate::password::{HashError, Password};
use crate::session::{Client, Identity, Issued};
use crate::store::StoreError;
use crate::throttle::{self, Counter, Millis, Scope};

/// What someone typed into the form or sent to the API.
#[derive(Debug)]
pub struct Attempt {
    pub login: String,
    pub password: Password,
    pub remember: bool,
    pub client: Client,
    /// Rate-limited and escalated, and checked against the user's IP restrictions once the
    /// password is known to be right.
    pub addr: ClientAddr,
    pub captcha: Option<CaptchaReply>,
}

/// The answer to a CAPTCHA challenge sent with an attempt.
pub struct CaptchaReply {
    pub id: String,
    pub answer: String,
}

impl std::fmt::Debug for CaptchaReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CaptchaReply({}, [redacted])", self.id)
    }
}

pub enum Outcome {
    Success {
        issued: Issued,
    },
    /// Wrong password or unknown login. `captcha`: the challenge the next attempt must answer,
    /// when this failure reached the threshold.
    InvalidCredentials {
        captcha: Option<String>,
    },
    /// A CAPTCHA is needed and was missing or answered wrong (`wrong`); `captcha` is a new one.
    CaptchaRequired {
        captcha: String,
        wrong: bool,
    },
    /// The login is locked; seconds until it opens.
    Locked {
        retry_after: u64,
    },
    /// Too many attempts from the address, or the hashing pool is saturated.
    Throttled {
        retry_after: u64,
    },
    Dismissed,
    /// Right password, but the user may not sign in from this address.
    IpRestricted,
}

impl Outcome {
    /// The `result` label of `portcullis_login_attempts_total`.
    pub fn result(&self) -> &'static str {
        match self {
            Outcome::Success { .. } => "success",
            Outcome::InvalidCredentials { .. } => "invalid_credentials",
            Outcome::CaptchaRequired { wrong: false, .. } => "captcha_required",
            Outcome::CaptchaRequired { wrong: true, .. } => "captcha_failed",
            Outcome::Locked { .. } => "locked",
            Outcome::Throttled { .. } => "throttled",
            Outcome::Dismissed => "dismissed",
            Outcome::IpRestricted => "ip_restricted",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hash(HashError),
}

/// Logins longer than this cannot exist; they are hashed against the dummy like any unknown one.
const MAX_LOGIN: usize = 254;
/// Passwords longer than this are refused before hashing, so nobody can make us hash megabytes.
const MAX_PASSWORD: usize = 1024;

pub async fn attempt(app: &App, cfg: &Config, attempt: Attempt) -> Result<Outcome, LoginError> {
    let outcome = run(app, cfg, attempt).await?;
    app.metrics.login_attempt(outcome.result());
    Ok(outcome)
}

/// One attempt's facts, for the checks and the event log.
struct Ctx<'a> {
    app: &'a App,
    cfg: &'a Config,
    now: Millis,
    login: String,
    addr_key: String,
    attempt: &'a Attempt,
}

impl Ctx<'_> {
    fn secs(&self) -> i64 {
        self.now.div_euclid(1000)
    }

    fn event(&self, kind: EventKind) -> Event {
        let c = &self.attempt.client;
        Event::new(kind, self.secs())
            .login(&self.login)
            .client(&c.ip, &c.user_agent)
    }

    async fn challenge(&self) -> Result<String, StoreError> {
        let limit = self.cfg.throttle.captcha_limit;
        captcha::issue(self.app.store.as_ref(), self.secs(), limit).await
    }
}

async fn run(app: &App, cfg: &Config, attempt: Attempt) -> Result<Outcome, LoginError> {
    let typed = attempt.login.trim();
    let too_long = typed.chars().count() > MAX_LOGIN;
    let mut ctx = Ctx {
        app,
        cfg,
        now: app.clock.now_millis(),
        login: typed.chars().take(MAX_LOGIN).collect(),
        addr_key: throttle::addr_key(&attempt.addr),
        attempt: &attempt,
    };
    if let Err(refused) = take_from_budget(&ctx).await? {
        return Ok(refused);
    }
    // A lookup, not a hash: it lets failures count against the account whichever of its
    // identifiers (login or email) was typed. Unknown logins count under what was typed.
    let user = if ctx.login.is_empty() || too_long {
        None
    } else {
        app.store.find_user(&ctx.login).await?
    };
    if let Some(u) = &user {
        // Events name the account, so `audit --user` finds them whichever identifier was typed.
        ctx.login = u.login.clone();
    }
    let login_key = throttle::login_key(&ctx.login);
    // From here to the counting of a failure, attempts from one address and for one account
    // run one at a time, so parallel requests cannot all pass a check before any is counted.
    let Some(_turn) = app.login_gates.enter(&ctx.addr_key, &login_key).await else {
        return Ok(busy(&ctx));
    };
    let addr = app.store.counter(&ctx.addr_key).await?.unwrap_or_default();
    let login = app.store.counter(&login_key).await?.unwrap_or_default();
    if let Some(until) = throttle::locked_until(&login, ctx.now) {
        app.audit
            .record(ctx.event(EventKind::LoginFailure).detail("locked"));
        return Ok(Outcome::Locked {
            retry_after: throttle::seconds_until(until, ctx.now),
        });
    }
    if let Some(refused) = check_captcha(&ctx, &login, &addr).await? {
        return Ok(refused);
    }
    if !app
        .login_gates
        .take_check(ctx.now, cfg.throttle.password_checks_per_second)
    {
        return Ok(busy(&ctx));
    }
    let password = if attempt.password.expose().len() > MAX_PASSWORD {
        Password::new("")
    } else {
        attempt.password.clone()
    };
    let verified = match app
        .hasher
        .verify(password, user.as_ref().map(|u| u.password_hash.clone()))
        .await
    {
        Ok(ok) => ok,
        Err(HashError::Busy) => return Ok(busy(&ctx)),
        Err(e) => return Err(LoginError::Hash(e)),
    };
    let user = match user {
        Some(user) if verified => user,
        known => {
            let reason = if known.is_some() {
                "wrong_password"
            } else {
                "unknown_login"
            };
            app.audit
                .record(ctx.event(EventKind::LoginFailure).detail(reason));
            let captcha = count_failure(&ctx, &login_key).await?;
            return Ok(Outcome::InvalidCredentials { captcha });
        }
    };
    if user.dismissed {
        app.audit
            .record(ctx.event(EventKind::LoginFailure).detail("dismissed"));
        return Ok(Outcome::Dismissed);
    }
    if !network::user_allowed(
        &cfg.network.restrictions,
        &Identity::of(&user),
        &attempt.addr,
    ) {
        app.audit
            .record(ctx.event(EventKind::IpRestricted).detail("sign-in"));
        return Ok(Outcome::IpRestricted);
    }
    app.store
        .update_counter(&login_key, Box::new(|_| None))
        .await?;
    let remember_for = cfg.session.remember_me.filter(|_| attempt.remember);
    let issued = app
        .sessions
        .issue(&user, remember_for, &attempt.client)
        .await?;
    app.audit.record(
        Event::new(EventKind::LoginSuccess, ctx.secs())
            .login(&user.login)
            .client(&attempt.client.ip, &attempt.client.user_agent)
            .session(issued.live.hash.short())
            .detail(if issued.remember.is_some() {
                "remember"
            } else {
                ""
            }),
    );
    Ok(Outcome::Success { issued })
}

/// The refusal when the gateway cannot take the attempt now (its turn or a hashing thread did
/// not come in time): recorded like a spent budget, once per address and minute.
fn busy(ctx: &Ctx<'_>) -> Outcome {
    ctx.app.audit.record_once_per_minute(
        format!("busy {}", ctx.addr_key),
        ctx.event(EventKind::LoginFailure).detail("busy"),
    );
    Outcome::Throttled { retry_after: 1 }
}

/// Takes one attempt from the address's per-minute budget; `Err` holds the refusal when the
/// budget is spent.
async fn take_from_budget(ctx: &Ctx<'_>) -> Result<Result<(), Outcome>, StoreError> {
    let (_, spent) = spend(ctx.app, ctx.cfg, &ctx.addr_key, ctx.now).await?;
    match spent {
        Ok(()) => Ok(Ok(())),
        Err(at) => {
            // A flood of refused attempts leaves one event per address and minute.
            ctx.app.audit.record_once_per_minute(
                format!("throttled {}", ctx.addr_key),
                ctx.event(EventKind::LoginFailure).detail("throttled"),
            );
            Ok(Err(Outcome::Throttled {
                retry_after: throttle::seconds_until(at, ctx.now),
            }))
        }
    }
}

/// Turns at the password check: one attempt at a time per address and per account. A turn
/// not given within `WAIT` is refused as throttled.
pub struct Gates {
    locks: Cache<String, Arc<Mutex<()>>>,
    /// This gateway's budget of password checks (`throttle.password_checks_per_second`).
    checks: std::sync::Mutex<Counter>,
}

impl Gates {
    const WAIT: Duration = Duration::from_secs(2);

    pub fn new() -> Gates {
        Gates {
            locks: Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(60))
                .build(),
            checks: std::sync::Mutex::new(Counter::default()),
        }
    }

    /// Takes one password check from this gateway's budget of `per_second`, whatever the
    /// address: many addresses (a /48 of IPv6 holds 65 536 address budgets) cannot make it hash
    /// more than that.
    fn take_check(&self, now: Millis, per_second: u32) -> bool {
        let Ok(mut budget) = self.checks.lock() else {
            return false;
        };
        match throttle::take_from_budget(*budget, now, per_second, 1000) {
            Ok(next) => {
                *budget = next;
                true
            }
            Err(_) => false,
        }
    }

    /// Waits for the address's turn, then the account's (always in this order, so two
    /// attempts can never wait for each other).
    async fn enter(&self, addr_key: &str, login_key: &str) -> Option<[OwnedMutexGuard<()>; 2]> {
        let addr = self.locks.get_with(addr_key.to_string(), Default::default);
        let login = self.locks.get_with(login_key.to_string(), Default::default);
        let both = async { [addr.lock_owned().await, login.lock_owned().await] };
        tokio::time::timeout(Self::WAIT, both).await.ok()
    }
}

impl Default for Gates {
    fn default() -> Gates {
        Gates::new()
    }
}

/// Takes one attempt from an address's budget, atomically in the store. Returns the counter as
/// it was and, when the budget was already spent, when it will have room again.
async fn spend(
    app: &App,
    cfg: &Config,
    addr_key: &str,
    now: Millis,
) -> Result<(Counter, Result<(), Millis>), StoreError> {
    let per_minute = cfg.throttle.ip_attempts_per_minute;
    let before = app
        .store
        .update_counter(
            addr_key,
            Box::new(move |c| {
                let c = c.unwrap_or_default();
                Some(throttle::take_attempt(c, now, per_minute).unwrap_or(c))
            }),
        )
        .await?
        .unwrap_or_default();
    let spent = throttle::take_attempt(before, now, per_minute).map(drop);
    Ok((before, spent))
}

/// When either counter asks for a CAPTCHA: the refusal, unless the attempt carries the right
/// answer to a live challenge. Either way the challenge is used up.
async fn check_captcha(
    ctx: &Ctx<'_>,
    login: &Counter,
    addr: &Counter,
) -> Result<Option<Outcome>, StoreError> {
    let Some(escalation) = throttle::captcha_needed(login, addr, ctx.now, &ctx.cfg.throttle) else {
        return Ok(None);
    };
    let wrong = match &ctx.attempt.captcha {
        None => {
            ctx.app.audit.record(
                ctx.event(EventKind::CaptchaRequired)
                    .detail(escalation.reason()),
            );
            false
        }
        Some(reply) => {
            let store = ctx.app.store.as_ref();
            if captcha::solve(store, &reply.id, &reply.answer, ctx.secs()).await? {
                return Ok(None);
            }
            ctx.app
                .audit
                .record(ctx.event(EventKind::LoginFailure).detail("captcha_failed"));
            true
        }
    };
    Ok(Some(Outcome::CaptchaRequired {
        captcha: ctx.challenge().await?,
        wrong,
    }))
}

/// Counts a wrong password against the login and the address; records the CAPTCHA escalation
/// or the lock it causes.
/// Returns the challenge the next attempt will need, if this failure made one necessary.
async fn count_failure(ctx: &Ctx<'_>, login_key: &str) -> Result<Option<String>, StoreError> {
    let (now, policy) = (ctx.now, ctx.cfg.throttle);
    let update = move |scope| -> Box<dyn FnOnce(Option<Counter>) -> Option<Counter> + Send> {
        Box::new(move |c| Some(throttle::failed(c.unwrap_or_default(), now, scope, &policy)))
    };
    let store = &ctx.app.store;
    let login_before = store
        .update_counter(login_key, update(Scope::Login))
        .await?
        .unwrap_or_default();
    let addr_before = store
        .update_counter(&ctx.addr_key, update(Scope::Address))
        .await?
        .unwrap_or_default();
    let login = throttle::failed(login_before, now, Scope::Login, &policy);
    let addr = throttle::failed(addr_before, now, Scope::Address, &policy);
    if throttle::newly_locked(&login_before, &login, now) {
        ctx.app.audit.record(
            ctx.event(EventKind::AccountLocked)
                .detail(&format!("{} failures", login.failures)),
        );
    }
    let Some(escalation) = throttle::captcha_needed(&login, &addr, now, &policy) else {
        return Ok(None);
    };
    if throttle::captcha_needed(&login_before, &addr_before, now, &policy).is_none() {
        // This failure is the one that brings the CAPTCHA: the audit trail shows when, and why.
        ctx.app.audit.record(
            ctx.event(EventKind::CaptchaRequired)
                .detail(escalation.reason()),
        );
    }
    Ok(Some(ctx.challenge().await?))
}

/// The challenge the login page shows before anyone types a login: when the address itself has
/// reached the threshold. Drawing one costs an attempt from the address's budget, so reloading
/// the page cannot fill the store with pictures; a spent budget shows the page without one.
pub async fn page_captcha(
    app: &App,
    cfg: &Config,
    addr: &ClientAddr,
) -> Result<Option<String>, StoreError> {
    let now = app.clock.now_millis();
    let key = throttle::addr_key(addr);
    let counter = app.store.counter(&key).await?.unwrap_or_default();
    let needed = throttle::captcha_needed(&Counter::default(), &counter, now, &cfg.throttle);
    if needed.is_none() {
        return Ok(None);
    }
    if spend(app, cfg, &key, now).await?.1.is_err() {
        return Ok(None);
    }
    let limit = cfg.throttle.captcha_limit;
    Ok(Some(
        captcha::issue(app.store.as_ref(), now.div_euclid(1000), limit).await?,
    ))
}
