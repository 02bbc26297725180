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
use crate::core::secret::{BackupCode, OneTimeCode, PENDING_LIFETIME, Pending};
use crate::core::time::{Clock, Millis};
use crate::policy::network;
use crate::policy::signin::{
    self, AccountStatus, CaptchaAnswer, CodeOutcome, Factors, Refusal, SecondFactorFacts,
};
use crate::policy::throttle::{self, Scope};
use crate::service::audit::Audit;
use crate::service::captcha;
use crate::service::hasher::{HashError, Hasher};
use crate::service::metrics::Metrics;
use crate::service::sessions::{Issued, RememberFor, Sessions};
use crate::service::two_factor::{Checked, Need, TwoFactor};
use crate::store::{Store, StoreError};
use subtle::ConstantTimeEq;

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
    /// A second-step code sent with the password (`api/login`'s `code`).
    pub code: Option<OneTimeCode>,
}

/// What the second step brings: a code, or the confirmation of a factor being set up (the
/// sealed secret of the enrolment form and its first code).
#[derive(Debug, Clone, Copy)]
pub enum SecondInput<'a> {
    Code(Option<&'a OneTimeCode>),
    Enrol {
        sealed: &'a str,
        code: &'a OneTimeCode,
    },
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
    /// A session; `backup_codes` when the sign-in set up two-step verification (shown once).
    Success {
        issued: Issued,
        backup_codes: Vec<BackupCode>,
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
    /// The account was invited and has not set its password yet (`user invite`).
    Invited,
    /// Right password, but the user may not sign in from this address.
    IpRestricted,
    /// Right password, every check passed; a code is needed (the second step), for which the
    /// browser keeps `pending`.
    TwoFactorRequired {
        pending: Pending,
    },
    /// Right password; the user must set up two-step verification before any session.
    TwoFactorSetupRequired {
        pending: Pending,
    },
    /// A pending sign-in that no longer fits the account (the factor was reset, set up or
    /// turned off meanwhile, or the password changed): start again from the password.
    PendingStale,
    /// The second step's code was wrong, or (`replay`) already used.
    InvalidCode {
        replay: bool,
    },
}

impl Outcome {
    /// The `result` label of `portcullis_login_attempts_total` (`""` for a stale pending
    /// sign-in, which is not counted: nothing was checked).
    pub fn result(&self) -> &'static str {
        match self {
            Outcome::Success { .. } => "success",
            Outcome::InvalidCredentials { .. } => "invalid_credentials",
            Outcome::CaptchaRequired { wrong: false, .. } => "captcha_required",
            Outcome::CaptchaRequired { wrong: true, .. } => "captcha_failed",
            Outcome::Locked { .. } => "locked",
            Outcome::Throttled { .. } => "throttled",
            Outcome::Dismissed => "dismissed",
            Outcome::Invited => "invited",
            Outcome::IpRestricted => "ip_restricted",
            Outcome::TwoFactorRequired { .. } | Outcome::TwoFactorSetupRequired { .. } => {
                "two_factor_required"
            }
            Outcome::InvalidCode { .. } => "invalid_code",
            Outcome::PendingStale => "",
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
const MAX_PASSWORD: usize = crate::policy::recovery::MAX_PASSWORD_BYTES;

/// The sign-in service: what an attempt needs, and nothing else.
pub struct SignIn {
    store: Arc<dyn Store>,
    hasher: Arc<Hasher>,
    two_factor: Arc<TwoFactor>,
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
    /// The account's id once it is known.
    user_id: i64,
    /// `Pending::credential` of the account's password, once it is known.
    credential: [u8; 16],
    addr_key: String,
    addr: ClientAddr,
    client: &'a Client,
    /// "Stay signed in" was ticked.
    remember: bool,
}

impl Ctx<'_> {
    fn secs(&self) -> i64 {
        self.now.div_euclid(1000)
    }

    /// The sign-in waiting for its second step (or for setting the factor up).
    fn pending(&self, setup: bool) -> Pending {
        Pending {
            user_id: self.user_id,
            remember: self.remember,
            setup,
            expires_at: self.secs() + PENDING_LIFETIME,
            credential: self.credential,
        }
    }

    fn event(&self, kind: EventKind) -> Event {
        let c = self.client;
        Event::new(kind, self.secs())
            .login(&self.login)
            .client(&c.ip, &c.user_agent)
    }
}

impl SignIn {
    pub fn new(
        store: Arc<dyn Store>,
        hasher: Arc<Hasher>,
        two_factor: Arc<TwoFactor>,
        sessions: Arc<Sessions>,
        audit: Audit,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> SignIn {
        SignIn {
            store,
            hasher,
            two_factor,
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
            user_id: 0,
            credential: [0; 16],
            addr_key: throttle::addr_key(&attempt.addr),
            addr: attempt.addr,
            client: &attempt.client,
            remember: attempt.remember,
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
            ctx.user_id = u.id;
            ctx.credential = Pending::credential(&u.password_hash);
        }
        // From here to the counting of a failure (of the password or of a code), attempts
        // from one address and for one account run one at a time.
        let login_key = throttle::login_key(&ctx.login);
        let Some(_turn) = self.gates.enter(&ctx.addr_key, &login_key).await else {
            return Ok(self.busy(&ctx));
        };
        // An invitation not yet accepted has no password to check: it says so (the
        // invitation's e-mail went to the account's own address).
        if user
            .as_ref()
            .is_some_and(|u| u.is_invited() && !u.dismissed)
        {
            self.audit
                .record(ctx.event(EventKind::LoginFailure).detail("invited"));
            return Ok(Outcome::Invited);
        }
        let status = match self
            .password_steps(
                &ctx,
                lock,
                user.as_ref(),
                &attempt.password,
                attempt.captcha.as_ref(),
            )
            .await?
        {
            Ok(status) => status,
            Err(outcome) => return Ok(outcome),
        };
        let Some(user) = user else {
            return Err(LoginError::Hash(HashError::Failed(
                "a password verified without a user".into(),
            )));
        };
        let code = SecondInput::Code(attempt.code.as_ref());
        self.finish(&ctx, status, &user, code).await
    }

    /// The lock, the CAPTCHA and the password; the caller holds the turn of the address and
    /// the account (`Gates::enter`) until any failure is counted, so parallel requests cannot
    /// all pass a check first. `Err`: the refusal, recorded and counted.
    async fn password_steps(
        &self,
        ctx: &Ctx<'_>,
        lock: signin::Lock,
        user: Option<&User>,
        password: &Password,
        captcha_reply: Option<&CaptchaReply>,
    ) -> Result<Result<AccountStatus, Outcome>, LoginError> {
        let login_key = throttle::login_key(&ctx.login);
        let addr = self.store.counter(&ctx.addr_key).await?.unwrap_or_default();
        let login = self.store.counter(&login_key).await?.unwrap_or_default();
        let captcha = match lock.check(&login, &addr, ctx.now, &ctx.cfg.throttle) {
            Ok(next) => next,
            Err(refusal) => return self.refused(ctx, refusal).await.map(Err),
        };
        let answer = match captcha.needed() {
            Some(_) => self.captcha_answer(ctx, captcha_reply).await?,
            None => CaptchaAnswer::Missing,
        };
        let first = match captcha.check(answer) {
            Ok(next) => next,
            Err(refusal) => return self.refused(ctx, refusal).await.map(Err),
        };
        let Some(verified) = self.verify(ctx, password, user).await? else {
            return Ok(Err(self.busy(ctx)));
        };
        match first.check(verified) {
            Ok(status) => Ok(Ok(status)),
            Err(refusal) => self.refused(ctx, refusal).await.map(Err),
        }
    }

    /// The password typed again by someone signed in, before a change to their two-step
    /// verification (a new phone, new backup codes): the address's budget, the lock, the
    /// CAPTCHA threshold (this form has no picture: a CAPTCHA due refuses it) and the
    /// counting of a sign-in, so a stolen session cannot guess its way to the factor.
    /// `None`: right; else the refusal.
    pub async fn reconfirm(
        &self,
        cfg: &Config,
        user: &User,
        password: &Password,
        client: &Client,
        addr: ClientAddr,
    ) -> Result<Option<Outcome>, LoginError> {
        let ctx = Ctx {
            cfg,
            now: self.clock.now_millis(),
            login: user.login.clone(),
            known: true,
            user_id: user.id,
            credential: [0; 16],
            addr_key: throttle::addr_key(&addr),
            addr,
            client,
            remember: false,
        };
        let spent = self.spend(cfg, &ctx.addr_key, ctx.now).await?.1;
        let lock = match signin::start().check(spent, ctx.now) {
            Ok(next) => next,
            Err(refusal) => return self.refused(&ctx, refusal).await.map(Some),
        };
        let login_key = throttle::login_key(&ctx.login);
        let Some(_turn) = self.gates.enter(&ctx.addr_key, &login_key).await else {
            return Ok(Some(self.busy(&ctx)));
        };
        let steps = self.password_steps(&ctx, lock, Some(user), password, None);
        Ok(steps.await?.err())
    }

    /// The second step of a pending sign-in (`Pending`, made after the right password): the
    /// address's budget and the login's lock again, then the account, the IP rule and the code
    /// (or the confirmation of a factor being set up). Counted like an attempt.
    pub async fn resume(
        &self,
        cfg: &Config,
        pending: &Pending,
        input: SecondInput<'_>,
        client: &Client,
        addr: ClientAddr,
    ) -> Result<Outcome, LoginError> {
        let outcome = self.resumed(cfg, pending, input, client, addr).await?;
        if !matches!(outcome, Outcome::PendingStale) {
            self.metrics.login_attempt(outcome.result());
        }
        Ok(outcome)
    }

    async fn resumed(
        &self,
        cfg: &Config,
        pending: &Pending,
        input: SecondInput<'_>,
        client: &Client,
        addr: ClientAddr,
    ) -> Result<Outcome, LoginError> {
        let mut ctx = Ctx {
            cfg,
            now: self.clock.now_millis(),
            login: String::new(),
            known: false,
            user_id: 0,
            credential: [0; 16],
            addr_key: throttle::addr_key(&addr),
            addr,
            client,
            remember: pending.remember,
        };
        let spent = self.spend(cfg, &ctx.addr_key, ctx.now).await?.1;
        let lock = match signin::resume(pending).check(spent, ctx.now) {
            Ok(next) => next,
            Err(refusal) => return self.refused(&ctx, refusal).await,
        };
        let Some(user) = self.store.get_user(pending.user_id).await? else {
            return Ok(Outcome::PendingStale);
        };
        (ctx.login, ctx.known, ctx.user_id) = (user.login.clone(), true, user.id);
        ctx.credential = Pending::credential(&user.password_hash);
        if !self.still_fits(&ctx, pending, &user, &input).await? {
            return Ok(Outcome::PendingStale);
        }
        let login_key = throttle::login_key(&ctx.login);
        let Some(_turn) = self.gates.enter(&ctx.addr_key, &login_key).await else {
            return Ok(self.busy(&ctx));
        };
        let login = self.store.counter(&login_key).await?.unwrap_or_default();
        match lock.check(&login, ctx.now) {
            Ok(status) => self.finish(&ctx, status, &user, input).await,
            Err(refusal) => self.refused(&ctx, refusal).await,
        }
    }

    /// Whether a pending sign-in still fits the account: the same password, and the step it
    /// was made for still the one needed (a code for a factor, or setting one up). Otherwise a
    /// reset, a new factor or a turn-off came in between, and it starts again from the password.
    async fn still_fits(
        &self,
        ctx: &Ctx<'_>,
        pending: &Pending,
        user: &User,
        input: &SecondInput<'_>,
    ) -> Result<bool, LoginError> {
        if !bool::from(pending.credential.ct_eq(&ctx.credential)) {
            return Ok(false);
        }
        let need = self.two_factor.need(&ctx.cfg.two_factor, user).await?;
        Ok(match (need, input) {
            (Need::Code(_), SecondInput::Code(_)) => !pending.setup,
            (Need::Setup, SecondInput::Enrol { .. }) => pending.setup,
            _ => false,
        })
    }

    /// After the right password: the account, the IP rule, the second factor, the session.
    async fn finish(
        &self,
        ctx: &Ctx<'_>,
        status: AccountStatus,
        user: &User,
        input: SecondInput<'_>,
    ) -> Result<Outcome, LoginError> {
        let cfg = ctx.cfg;
        let allowed =
            network::user_allowed(&cfg.network.restrictions, &Identity::of(user), &ctx.addr);
        let second = match status.check(user.dismissed).and_then(|r| r.check(allowed)) {
            Ok(next) => next,
            Err(refusal) => return self.refused(ctx, refusal).await,
        };
        let (facts, codes) = self.second_factor(ctx, user, input).await?;
        match second.check(facts) {
            Ok(issue) => self.issue(ctx, user, issue.factors, codes).await,
            Err(refusal) => self.refused(ctx, refusal).await,
        }
    }

    /// What the user's second factor asks, and the input checked against it; the backup codes
    /// of a factor set up here.
    async fn second_factor(
        &self,
        ctx: &Ctx<'_>,
        user: &User,
        input: SecondInput<'_>,
    ) -> Result<(SecondFactorFacts, Vec<BackupCode>), LoginError> {
        let tf = &ctx.cfg.two_factor;
        let need = self.two_factor.need(tf, user).await?;
        Ok(match (need, input) {
            (Need::Nothing, SecondInput::Code(_)) => (SecondFactorFacts::NotNeeded, Vec::new()),
            (Need::Setup, SecondInput::Code(_)) => (SecondFactorFacts::SetupRequired, Vec::new()),
            // Setting a factor up at sign-in is only for a user who must and has none
            // (`still_fits` sends anyone else back to the password).
            (Need::Code(_) | Need::Nothing, SecondInput::Enrol { .. }) => {
                (SecondFactorFacts::SetupRequired, Vec::new())
            }
            (Need::Setup, SecondInput::Enrol { sealed, code }) => {
                match self
                    .two_factor
                    .confirm(tf, user, sealed, code, ctx.client)
                    .await?
                {
                    Some(codes) => (SecondFactorFacts::Code(Some(CodeOutcome::Totp)), codes),
                    None => (
                        SecondFactorFacts::Code(Some(CodeOutcome::Wrong)),
                        Vec::new(),
                    ),
                }
            }
            (Need::Code(_), SecondInput::Code(None)) => (SecondFactorFacts::Code(None), Vec::new()),
            (Need::Code(record), SecondInput::Code(Some(code))) => {
                let checked = self
                    .two_factor
                    .check(tf, user, &record, code, ctx.client)
                    .await?;
                let outcome = match checked {
                    Checked::Totp => CodeOutcome::Totp,
                    Checked::Backup { .. } => CodeOutcome::Backup,
                    Checked::Wrong => CodeOutcome::Wrong,
                    Checked::Replay => CodeOutcome::Replay,
                };
                (SecondFactorFacts::Code(Some(outcome)), Vec::new())
            }
        })
    }

    /// The password, on the hashing pool: `None` when this gateway's budget of checks or its
    /// pool is full. Unknown logins are verified against a dummy, at the same cost.
    async fn verify(
        &self,
        ctx: &Ctx<'_>,
        password: &Password,
        user: Option<&User>,
    ) -> Result<Option<bool>, LoginError> {
        if !self
            .gates
            .take_check(ctx.now, ctx.cfg.throttle.password_checks_per_second)
        {
            return Ok(None);
        }
        let password = if password.expose().len() > MAX_PASSWORD {
            Password::new("")
        } else {
            password.clone()
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
        factors: Factors,
        backup_codes: Vec<BackupCode>,
    ) -> Result<Outcome, LoginError> {
        let login_key = throttle::login_key(&ctx.login);
        self.store
            .update_counter(&login_key, Box::new(|_| None))
            .await?;
        let remember_for = ctx
            .cfg
            .session
            .remember_me
            .filter(|_| ctx.remember)
            .map(|lifetime| RememberFor {
                lifetime,
                second_factor: factors != Factors::Password,
            });
        let issued = self.sessions.issue(user, remember_for, ctx.client).await?;
        self.audit.record(
            ctx.event(EventKind::LoginSuccess)
                .session(issued.live.hash.short())
                .detail(factors.as_str()),
        );
        Ok(Outcome::Success {
            issued,
            backup_codes,
        })
    }

    /// A wrong or used code counts against the login toward `lock_after` (not toward the
    /// CAPTCHA of the address: the second step has none).
    /// A wrong or used second-step code typed by someone signed in (turning the factor off):
    /// a failure of the login toward `lock_after`, as at sign-in.
    pub async fn code_failed(
        &self,
        cfg: &Config,
        user: &User,
        client: &Client,
        addr: ClientAddr,
    ) -> Result<(), StoreError> {
        let ctx = Ctx {
            cfg,
            now: self.clock.now_millis(),
            login: user.login.clone(),
            known: true,
            user_id: user.id,
            credential: [0; 16],
            addr_key: throttle::addr_key(&addr),
            addr,
            client,
            remember: false,
        };
        self.count_code_failure(&ctx).await
    }

    async fn count_code_failure(&self, ctx: &Ctx<'_>) -> Result<(), StoreError> {
        let (now, policy) = (ctx.now, ctx.cfg.throttle);
        let key = throttle::login_key(&ctx.login);
        let before = self
            .store
            .update_counter(
                &key,
                Box::new(move |c| {
                    Some(throttle::failed(
                        c.unwrap_or_default(),
                        now,
                        Scope::Login,
                        &policy,
                    ))
                }),
            )
            .await?
            .unwrap_or_default();
        let after = throttle::failed(before, now, Scope::Login, &policy);
        if throttle::newly_locked(&before, &after, now) {
            self.audit.record(
                ctx.event(EventKind::AccountLocked)
                    .detail(&format!("{} failures", after.failures)),
            );
        }
        Ok(())
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
            Refusal::TwoFactorRequired => Outcome::TwoFactorRequired {
                pending: ctx.pending(false),
            },
            Refusal::TwoFactorSetupRequired => Outcome::TwoFactorSetupRequired {
                pending: ctx.pending(true),
            },
            Refusal::InvalidCode { replay } => {
                self.count_code_failure(ctx).await?;
                Outcome::InvalidCode { replay }
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
    async fn captcha_answer(
        &self,
        ctx: &Ctx<'_>,
        reply: Option<&CaptchaReply>,
    ) -> Result<CaptchaAnswer, StoreError> {
        let Some(reply) = reply else {
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

    /// Takes one attempt from the address's budget (`throttle.ip_attempts_per_minute`) for
    /// something other than a password (a recovery request, an SMS code): `Err(seconds)` to
    /// wait when it is spent.
    pub async fn spend_address(
        &self,
        cfg: &Config,
        addr: &ClientAddr,
    ) -> Result<Result<(), u64>, StoreError> {
        let now = self.clock.now_millis();
        let spent = self.spend(cfg, &throttle::addr_key(addr), now).await?.1;
        Ok(spent.map_err(|at| u64::try_from((at - now + 999) / 1000).unwrap_or(1).max(1)))
    }

    /// Hashes a new password on the hashing threads (never on the proxy's).
    pub async fn hash_new(&self, password: Password) -> Result<String, HashError> {
        self.hasher.hash(password).await
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
            code: None,
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
            if let Outcome::Success { issued, .. } = outcome {
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

    /// Enrols alice (the fixture's clock, the code of now); her backup codes.
    async fn enrol(s: &Services) -> Vec<BackupCode> {
        let cfg = &s.config.two_factor;
        let e = s.two_factor.start_enrolment(cfg, &s.alice);
        let now = u64::try_from(s.clock.now()).unwrap();
        let code = crate::policy::totp::code_at(&e.secret, &cfg.totp, now).unwrap();
        let client = Client::default();
        let codes = s
            .two_factor
            .confirm(cfg, &s.alice, &e.sealed, &OneTimeCode::new(code), &client)
            .await
            .unwrap()
            .expect("the first code confirms");
        assert_eq!(codes.len(), cfg.backup_codes as usize);
        codes
    }

    /// The second-factor rows of the sign-in table, through the real service: what a
    /// password with (or without) a code gets, and what it leaves behind.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn second_factor_rows() {
        let s = Services::start("two_factor: {required_groups: [admins]}\n").await;
        let codes = enrol(&s).await;
        let with = |code: Option<&str>| {
            let mut a = attempt("alice@example.com", PASSWORD, "192.0.2.1");
            a.code = code.map(OneTimeCode::new);
            a
        };
        let run = |a: Attempt| async { name(&s.signin.attempt(&s.config, a).await.unwrap()) };
        assert_eq!(
            run(with(None)).await,
            "two_factor_required",
            "a code is asked"
        );
        assert_eq!(run(with(Some("000000"))).await, "invalid_code");
        // The code of the period enrolment used is spent; the next period's is fresh.
        s.clock.advance(30);
        let s = &s;
        let secret_code = |at: i64| async move {
            let record = s.store.second_factor(s.alice.id).await.unwrap().unwrap();
            let key = crate::core::key::MasterKey::from_bytes([6; 32]);
            let secret = key
                .open(
                    format!("totp:{}", s.alice.id).as_bytes(),
                    &record.sealed_secret,
                )
                .unwrap();
            let secret = crate::core::secret::TotpSecret::from_bytes(secret);
            crate::policy::totp::code_at(&secret, &s.config.two_factor.totp, at as u64).unwrap()
        };
        let now_code = secret_code(s.clock.now()).await;
        let outcome = s
            .signin
            .attempt(&s.config, with(Some(&now_code)))
            .await
            .unwrap();
        assert_eq!(name(&outcome), "success");
        assert_eq!(
            run(with(Some(&now_code))).await,
            "invalid_code",
            "the same code again"
        );
        let backup = codes[0].display();
        assert_eq!(run(with(Some(&backup))).await, "success", "a backup code");
        assert_eq!(run(with(Some(&backup))).await, "invalid_code", "once only");
        assert_eq!(
            s.store
                .second_factor(s.alice.id)
                .await
                .unwrap()
                .unwrap()
                .backup_codes_left,
            codes.len() as u64 - 1
        );
        // An administrator's timed turn-off: the password alone, until it ends.
        let until = s.clock.now() + 60;
        s.store
            .disable_second_factor_until(s.alice.id, until)
            .await
            .unwrap();
        assert_eq!(run(with(None)).await, "success");
        s.clock.advance(61);
        assert_eq!(
            run(with(None)).await,
            "two_factor_required",
            "the kept factor again"
        );
        // Wrong codes count toward the lock: lock_after failures lock the login.
        let locking = Services::start("throttle: {lock_after: 3, captcha_after: 0}\n").await;
        enrol(&locking).await;
        for _ in 0..3 {
            let mut a = attempt("alice@example.com", PASSWORD, "192.0.2.1");
            a.code = Some(OneTimeCode::new("111111"));
            let o = locking.signin.attempt(&locking.config, a).await.unwrap();
            assert_eq!(name(&o), "invalid_code");
        }
        let o = locking
            .signin
            .attempt(
                &locking.config,
                attempt("alice@example.com", PASSWORD, "192.0.2.1"),
            )
            .await
            .unwrap();
        assert_eq!(name(&o), "locked");
    }

    /// The second step of a pending sign-in that sets the factor up, with `code`.
    async fn enrol_step(
        s: &Services,
        pending: &Pending,
        sealed: &str,
        code: &OneTimeCode,
    ) -> Outcome {
        let input = SecondInput::Enrol { sealed, code };
        let addr = ClientAddr::new("192.0.2.1".parse().unwrap());
        let client = Client::default();
        let o = s.signin.resume(&s.config, pending, input, &client, addr);
        o.await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_required_group_must_set_up_before_any_session() {
        let s = Services::start("two_factor: {required_groups: [Staff]}\n").await;
        let o = s
            .signin
            .attempt(
                &s.config,
                attempt("alice@example.com", PASSWORD, "192.0.2.1"),
            )
            .await
            .unwrap();
        let Outcome::TwoFactorSetupRequired { pending } = o else {
            panic!("led to setup");
        };
        assert_eq!((pending.user_id, pending.setup), (s.alice.id, true));
        assert_eq!(pending.expires_at, s.clock.now() + 300);
        let pending = Pending {
            remember: true,
            ..pending
        };
        let cfg = &s.config.two_factor;
        let e = s.two_factor.start_enrolment(cfg, &s.alice);
        let now = u64::try_from(s.clock.now()).unwrap();
        let code =
            OneTimeCode::new(crate::policy::totp::code_at(&e.secret, &cfg.totp, now).unwrap());
        let o = enrol_step(&s, &pending, &e.sealed, &OneTimeCode::new("123456")).await;
        assert_eq!(name(&o), "invalid_code");
        // A pending sign-in that does not fit: of another password, or for the code step.
        for stale in [
            Pending {
                credential: Pending::credential("another hash"),
                ..pending
            },
            Pending {
                setup: false,
                ..pending
            },
        ] {
            let o = enrol_step(&s, &stale, &e.sealed, &code).await;
            assert!(matches!(o, Outcome::PendingStale));
        }
        let o = enrol_step(&s, &pending, &e.sealed, &code).await;
        let Outcome::Success {
            issued,
            backup_codes,
        } = o
        else {
            panic!("enrolled and signed in");
        };
        assert_eq!(backup_codes.len(), 10);
        assert!(
            issued.remember.is_some(),
            "Stay signed in, chosen at the password, is kept"
        );
    }
}
