//! One sign-in attempt, driven through the step machine of `policy::signin` (docs/reference.md,
//! Sign-in): this service does the I/O of each step (the address's budget and the counters in
//! the store, the CAPTCHA answer, the password on the hashing pool, with a dummy hash for
//! unknown logins so both cost the same), records the events, counts failures, and issues the
//! session. Attempts from one address and for one account take turns from the lock check until
//! a failure is counted. A refusal before the password never hashes it.

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::config::Config;
use crate::core::addr::ClientAddr;
use crate::core::counter::Counter;
use crate::core::event::{Event, EventKind};
use crate::core::identity::{Client, Identity, User};
use crate::core::secret::Password;
use crate::core::time::{Clock, Millis};
use crate::policy::network;
use crate::policy::signin::{self, CaptchaAnswer, Refusal};
use crate::policy::throttle::{self, Scope};
use crate::service::audit::Audit;
use crate::service::captcha;
use crate::service::hasher::{HashError, Hasher};
use crate::service::metrics::Metrics;
use crate::service::sessions::{Issued, Sessions};
use crate::store::{Store, StoreError};

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

/// The sign-in service: what an attempt needs, and nothing else.
pub struct SignIn {
    store: Arc<dyn Store>,
    hasher: Arc<Hasher>,
    sessions: Arc<Sessions>,
    audit: Audit,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    gates: Gates,
}

/// One attempt's facts, for the checks and the event log.
struct Ctx<'a> {
    cfg: &'a Config,
    now: Millis,
    /// The account's login once it is known; what was typed until then.
    login: String,
    /// Whether the login names an account (for the event's detail only).
    known: bool,
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
}

impl SignIn {
    pub fn new(
        store: Arc<dyn Store>,
        hasher: Arc<Hasher>,
        sessions: Arc<Sessions>,
        audit: Audit,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> SignIn {
        SignIn {
            store,
            hasher,
            sessions,
            audit,
            metrics,
            clock,
            gates: Gates::new(),
        }
    }

    /// Runs one attempt and counts its outcome in `portcullis_login_attempts_total`.
    pub async fn attempt(&self, cfg: &Config, attempt: Attempt) -> Result<Outcome, LoginError> {
        let outcome = self.run(cfg, &attempt).await?;
        self.metrics.login_attempt(outcome.result());
        Ok(outcome)
    }

    async fn run(&self, cfg: &Config, attempt: &Attempt) -> Result<Outcome, LoginError> {
        let typed = attempt.login.trim();
        let too_long = typed.chars().count() > MAX_LOGIN;
        let mut ctx = Ctx {
            cfg,
            now: self.clock.now_millis(),
            login: typed.chars().take(MAX_LOGIN).collect(),
            known: false,
            addr_key: throttle::addr_key(&attempt.addr),
            attempt,
        };
        let spent = self.spend(cfg, &ctx.addr_key, ctx.now).await?.1;
        let lock = match signin::start().check(spent, ctx.now) {
            Ok(next) => next,
            Err(refusal) => return self.refused(&ctx, refusal).await,
        };
        // A lookup, not a hash: it lets failures count against the account whichever of its
        // identifiers (login or email) was typed. Unknown logins count under what was typed.
        let user = match ctx.login.is_empty() || too_long {
            true => None,
            false => self.store.find_user(&ctx.login).await?,
        };
        if let Some(u) = &user {
            // Events name the account, so `audit --user` finds them whichever was typed.
            ctx.login = u.login.clone();
            ctx.known = true;
        }
        let login_key = throttle::login_key(&ctx.login);
        // From here to the counting of a failure, attempts from one address and for one
        // account run one at a time, so parallel requests cannot all pass a check first.
        let Some(_turn) = self.gates.enter(&ctx.addr_key, &login_key).await else {
            return Ok(self.busy(&ctx));
        };
        let addr = self.store.counter(&ctx.addr_key).await?.unwrap_or_default();
        let login = self.store.counter(&login_key).await?.unwrap_or_default();
        let captcha = match lock.check(&login, &addr, ctx.now, &cfg.throttle) {
            Ok(next) => next,
            Err(refusal) => return self.refused(&ctx, refusal).await,
        };
        let answer = match captcha.needed() {
            Some(_) => self.captcha_answer(&ctx).await?,
            None => CaptchaAnswer::Missing,
        };
        let first = match captcha.check(answer) {
            Ok(next) => next,
            Err(refusal) => return self.refused(&ctx, refusal).await,
        };
        let Some(verified) = self.verify(&ctx, user.as_ref()).await? else {
            return Ok(self.busy(&ctx));
        };
        let second = match first.check(verified) {
            Ok(next) => next,
            Err(refusal) => return self.refused(&ctx, refusal).await,
        };
        let Some(user) = user else {
            return Err(LoginError::Hash(HashError::Failed(
                "a password verified without a user".into(),
            )));
        };
        let allowed = network::user_allowed(
            &cfg.network.restrictions,
            &Identity::of(&user),
            &attempt.addr,
        );
        let issue = second
            .check()
            .check(user.dismissed)
            .and_then(|rule| rule.check(allowed));
        match issue {
            Ok(_) => self.issue(&ctx, &user, &login_key).await,
            Err(refusal) => self.refused(&ctx, refusal).await,
        }
    }

    /// The password, on the hashing pool: `None` when this gateway's budget of checks or its
    /// pool is full. Unknown logins are verified against a dummy, at the same cost.
    async fn verify(&self, ctx: &Ctx<'_>, user: Option<&User>) -> Result<Option<bool>, LoginError> {
        if !self
            .gates
            .take_check(ctx.now, ctx.cfg.throttle.password_checks_per_second)
        {
            return Ok(None);
        }
        let password = if ctx.attempt.password.expose().len() > MAX_PASSWORD {
            Password::new("")
        } else {
            ctx.attempt.password.clone()
        };
        let known = user.map(|u| u.password_hash.clone());
        match self.hasher.verify(password, known).await {
            Ok(ok) => Ok(Some(ok && user.is_some())),
            Err(HashError::Busy) => Ok(None),
            Err(e) => Err(LoginError::Hash(e)),
        }
    }

    /// Every check passed: the login's failures are forgotten and a session is issued.
    async fn issue(
        &self,
        ctx: &Ctx<'_>,
        user: &User,
        login_key: &str,
    ) -> Result<Outcome, LoginError> {
        self.store
            .update_counter(login_key, Box::new(|_| None))
            .await?;
        let remember_for = ctx.cfg.session.remember_me.filter(|_| ctx.attempt.remember);
        let client = &ctx.attempt.client;
        let issued = self.sessions.issue(user, remember_for, client).await?;
        self.audit.record(
            ctx.event(EventKind::LoginSuccess)
                .session(issued.live.hash.short())
                .detail(if issued.remember.is_some() {
                    "remember"
                } else {
                    ""
                }),
        );
        Ok(Outcome::Success { issued })
    }

    /// A refusal of the step machine as an outcome, with its event; a wrong password is
    /// counted against the login and the address.
    async fn refused(&self, ctx: &Ctx<'_>, refusal: Refusal) -> Result<Outcome, LoginError> {
        let record = |detail: &str| {
            self.audit
                .record(ctx.event(EventKind::LoginFailure).detail(detail))
        };
        Ok(match refusal {
            Refusal::Throttled { retry_after } => {
                // A flood of refused attempts leaves one event per address and minute.
                self.audit.record_once_per_minute(
                    format!("throttled {}", ctx.addr_key),
                    ctx.event(EventKind::LoginFailure).detail("throttled"),
                );
                Outcome::Throttled { retry_after }
            }
            Refusal::Locked { retry_after } => {
                record("locked");
                Outcome::Locked { retry_after }
            }
            Refusal::CaptchaRequired { wrong, why } => {
                match wrong {
                    true => record("captcha_failed"),
                    false => self
                        .audit
                        .record(ctx.event(EventKind::CaptchaRequired).detail(why.reason())),
                }
                let captcha = self.challenge(ctx).await?;
                Outcome::CaptchaRequired { captcha, wrong }
            }
            Refusal::InvalidCredentials => {
                record(if ctx.known {
                    "wrong_password"
                } else {
                    "unknown_login"
                });
                let key = throttle::login_key(&ctx.login);
                Outcome::InvalidCredentials {
                    captcha: self.count_failure(ctx, &key).await?,
                }
            }
            Refusal::Dismissed => {
                record("dismissed");
                Outcome::Dismissed
            }
            Refusal::IpRestricted => {
                self.audit
                    .record(ctx.event(EventKind::IpRestricted).detail("sign-in"));
                Outcome::IpRestricted
            }
        })
    }

    /// The refusal when the gateway cannot take the attempt now (its turn, its budget of
    /// password checks or a hashing thread did not come in time): recorded like a spent
    /// budget, once per address and minute.
    fn busy(&self, ctx: &Ctx<'_>) -> Outcome {
        self.audit.record_once_per_minute(
            format!("busy {}", ctx.addr_key),
            ctx.event(EventKind::LoginFailure).detail("busy"),
        );
        Outcome::Throttled { retry_after: 1 }
    }

    /// The attempt's answer to the challenge it names (used up either way).
    async fn captcha_answer(&self, ctx: &Ctx<'_>) -> Result<CaptchaAnswer, StoreError> {
        let Some(reply) = &ctx.attempt.captcha else {
            return Ok(CaptchaAnswer::Missing);
        };
        let solved =
            captcha::solve(self.store.as_ref(), &reply.id, &reply.answer, ctx.secs()).await?;
        Ok(if solved {
            CaptchaAnswer::Right
        } else {
            CaptchaAnswer::Wrong
        })
    }

    async fn challenge(&self, ctx: &Ctx<'_>) -> Result<String, StoreError> {
        let limit = ctx.cfg.throttle.captcha_limit;
        captcha::issue(self.store.as_ref(), ctx.secs(), limit).await
    }
    /// Takes one attempt from an address's budget, atomically in the store. Returns the counter as
    /// it was and, when the budget was already spent, when it will have room again.
    async fn spend(
        &self,
        cfg: &Config,
        addr_key: &str,
        now: Millis,
    ) -> Result<(Counter, Result<(), Millis>), StoreError> {
        let per_minute = cfg.throttle.ip_attempts_per_minute;
        let before = self
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

    /// Counts a wrong password against the login and the address; records the CAPTCHA escalation
    /// or the lock it causes.
    /// Returns the challenge the next attempt will need, if this failure made one necessary.
    async fn count_failure(
        &self,
        ctx: &Ctx<'_>,
        login_key: &str,
    ) -> Result<Option<String>, StoreError> {
        let (now, policy) = (ctx.now, ctx.cfg.throttle);
        let update = move |scope| -> Box<dyn FnOnce(Option<Counter>) -> Option<Counter> + Send> {
            Box::new(move |c| Some(throttle::failed(c.unwrap_or_default(), now, scope, &policy)))
        };
        let store = &self.store;
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
            self.audit.record(
                ctx.event(EventKind::AccountLocked)
                    .detail(&format!("{} failures", login.failures)),
            );
        }
        let Some(escalation) = throttle::captcha_needed(&login, &addr, now, &policy) else {
            return Ok(None);
        };
        if throttle::captcha_needed(&login_before, &addr_before, now, &policy).is_none() {
            // This failure is the one that brings the CAPTCHA: the audit trail shows when, and why.
            self.audit.record(
                ctx.event(EventKind::CaptchaRequired)
                    .detail(escalation.reason()),
            );
        }
        Ok(Some(self.challenge(ctx).await?))
    }

    /// The challenge the login page shows before anyone types a login: when the address itself has
    /// reached the threshold. Drawing one costs an attempt from the address's budget, so reloading
    /// the page cannot fill the store with pictures; a spent budget shows the page without one.
    pub async fn page_captcha(
        &self,
        cfg: &Config,
        addr: &ClientAddr,
    ) -> Result<Option<String>, StoreError> {
        let now = self.clock.now_millis();
        let key = throttle::addr_key(addr);
        let counter = self.store.counter(&key).await?.unwrap_or_default();
        let needed = throttle::captcha_needed(&Counter::default(), &counter, now, &cfg.throttle);
        if needed.is_none() {
            return Ok(None);
        }
        if self.spend(cfg, &key, now).await?.1.is_err() {
            return Ok(None);
        }
        let limit = cfg.throttle.captcha_limit;
        Ok(Some(
            captcha::issue(self.store.as_ref(), now.div_euclid(1000), limit).await?,
        ))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::fixture::{PASSWORD, Services};

    fn attempt(login: &str, password: &str, ip: &str) -> Attempt {
        Attempt {
            login: login.into(),
            password: Password::new(password),
            remember: false,
            client: Client {
                ip: ip.into(),
                user_agent: "test".into(),
            },
            addr: ClientAddr::new(ip.parse().unwrap()),
            captcha: None,
        }
    }

    fn name(o: &Outcome) -> &'static str {
        o.result()
    }

    /// Each refusal at its step, in the order of the step machine, without a socket: what was
    /// refused, and how many passwords were hashed for the last attempt.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_sign_in_order_as_a_table() {
        type Setup = fn(&Services) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + '_>>;
        let nothing: Setup = |_| Box::pin(async {});
        let fail_once: Setup = |s| {
            Box::pin(async move {
                let a = attempt("alice@example.com", "wrong", "192.0.2.1");
                s.signin.attempt(&s.config, a).await.unwrap();
            })
        };
        let dismiss: Setup = |s| {
            Box::pin(async move {
                s.store.set_dismissed(s.alice.id, true).await.unwrap();
            })
        };
        // (case, config, setup, login, password, outcome, hashes for the attempt)
        let cases: [(&str, &str, Setup, &str, &str, &str, u64); 9] = [
            (
                "success",
                "",
                nothing,
                "alice@example.com",
                PASSWORD,
                "success",
                1,
            ),
            (
                "wrong password",
                "",
                nothing,
                "alice@example.com",
                "nope",
                "invalid_credentials",
                1,
            ),
            (
                "unknown login: one hash all the same",
                "",
                nothing,
                "bob@example.com",
                PASSWORD,
                "invalid_credentials",
                1,
            ),
            (
                "throttled before anything",
                "throttle: {ip_attempts_per_minute: 1}\n",
                fail_once,
                "alice@example.com",
                PASSWORD,
                "throttled",
                0,
            ),
            (
                "locked, the right password unread",
                "throttle: {lock_after: 1, captcha_after: 0}\n",
                fail_once,
                "alice@example.com",
                PASSWORD,
                "locked",
                0,
            ),
            (
                "CAPTCHA required before the password",
                "throttle: {captcha_after: 1}\n",
                fail_once,
                "alice@example.com",
                PASSWORD,
                "captcha_required",
                0,
            ),
            (
                "dismissed, after the password",
                "",
                dismiss,
                "alice@example.com",
                PASSWORD,
                "dismissed",
                1,
            ),
            (
                "IP restricted, last",
                "network:\n  restrictions:\n    - {groups: [staff], allow: [10.0.0.0/8]}\n",
                nothing,
                "alice@example.com",
                PASSWORD,
                "ip_restricted",
                1,
            ),
            (
                "email as login",
                "",
                nothing,
                "ALICE@example.com",
                PASSWORD,
                "success",
                1,
            ),
        ];
        for (case, yaml, setup, login, password, want, hashes) in cases {
            let s = Services::start(yaml).await;
            setup(&s).await;
            let before = s.hashes();
            let outcome = s
                .signin
                .attempt(&s.config, attempt(login, password, "192.0.2.1"))
                .await
                .unwrap();
            assert_eq!(name(&outcome), want, "{case}");
            assert_eq!(s.hashes() - before, hashes, "{case}: hashes");
            if let Outcome::Success { issued } = outcome {
                let found = s
                    .sessions
                    .peek(&issued.token, &s.config.session)
                    .await
                    .unwrap();
                assert!(found.is_some(), "{case}: the session is in the store");
            }
        }
    }

    /// A wrong CAPTCHA answer is refused before the password, and uses the challenge up.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wrong_captcha_answer_is_refused_before_the_password() {
        let s = Services::start("throttle: {captcha_after: 1}\n").await;
        let first = s
            .signin
            .attempt(
                &s.config,
                attempt("alice@example.com", "wrong", "192.0.2.1"),
            )
            .await
            .unwrap();
        let Outcome::InvalidCredentials { captcha: Some(id) } = first else {
            panic!("the failure that reaches the threshold brings a picture");
        };
        let before = s.hashes();
        let mut answered = attempt("alice@example.com", PASSWORD, "192.0.2.1");
        answered.captcha = Some(CaptchaReply {
            id: id.clone(),
            answer: "WRONG1".into(),
        });
        let outcome = s.signin.attempt(&s.config, answered).await.unwrap();
        assert_eq!(name(&outcome), "captcha_failed");
        assert_eq!(s.hashes(), before, "no hash for a wrong answer");
        assert_eq!(
            s.store.captcha_image(&id, s.clock.now()).await.unwrap(),
            None
        );
    }
}
