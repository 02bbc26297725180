//! The order of the sign-in checks (docs/reference.md, Sign-in) as a machine: address budget →
//! lock → CAPTCHA → first factor → account status → IP rule → second factor → issue. Each step
//! is a type whose `check` takes what the service found out for that step and returns the next
//! step or the refusal; only `start` makes the first one, so no step can be skipped or taken out
//! of turn. No I/O: the service does the lookups, hashing and counting between the steps.

use crate::config::ThrottleConfig;
use crate::core::counter::Counter;
use crate::core::secret::Pending;
use crate::core::time::Millis;
use crate::policy::throttle::{self, Escalation};

/// Why a sign-in attempt stops, and at which step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The address's attempts are spent; seconds until it has one again.
    Throttled {
        retry_after: u64,
    },
    /// The login is locked; seconds until it opens.
    Locked {
        retry_after: u64,
    },
    /// A CAPTCHA is needed and was missing (`wrong: false`) or answered wrong.
    CaptchaRequired {
        wrong: bool,
        why: Escalation,
    },
    /// Wrong password or unknown login: one answer for both.
    InvalidCredentials,
    Dismissed,
    /// The right password, from an address the user may not sign in from.
    IpRestricted,
    /// A second factor is needed and no code came: the second step comes next.
    TwoFactorRequired,
    /// The code was wrong, or (`replay`) right but already used.
    InvalidCode {
        replay: bool,
    },
    /// The user must set up two-step verification first.
    TwoFactorSetupRequired,
}

/// The factors a session was issued on, as the event log names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Factors {
    Password,
    PasswordTotp,
    PasswordBackupCode,
}

impl Factors {
    pub fn as_str(self) -> &'static str {
        match self {
            Factors::Password => "password",
            Factors::PasswordTotp => "password+totp",
            Factors::PasswordBackupCode => "password+backup_code",
        }
    }
}

/// The first step: the address's budget of attempts.
#[derive(Debug)]
pub struct AddressBudget(());

/// A sign-in attempt begins here.
pub fn start() -> AddressBudget {
    AddressBudget(())
}

impl AddressBudget {
    /// `spent`: the attempt taken from the address's budget, or when it will have room again.
    pub fn check(self, spent: Result<(), Millis>, now: Millis) -> Result<Lock, Refusal> {
        match spent {
            Ok(()) => Ok(Lock(())),
            Err(at) => Err(Refusal::Throttled {
                retry_after: throttle::seconds_until(at, now),
            }),
        }
    }
}

/// The login's lock; decided before any password is looked at.
#[derive(Debug)]
pub struct Lock(());

impl Lock {
    /// `login` and `addr`: the counters as the store has them now.
    pub fn check(
        self,
        login: &Counter,
        addr: &Counter,
        now: Millis,
        policy: &ThrottleConfig,
    ) -> Result<Captcha, Refusal> {
        if let Some(until) = throttle::locked_until(login, now) {
            return Err(Refusal::Locked {
                retry_after: throttle::seconds_until(until, now),
            });
        }
        Ok(Captcha {
            needed: throttle::captcha_needed(login, addr, now, policy),
        })
    }
}

/// What came with the attempt for a CAPTCHA that is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptchaAnswer {
    Missing,
    /// The answer to a live challenge, checked (and the challenge used up) by the service.
    Right,
    Wrong,
}

/// The CAPTCHA, when the login's or the address's failures ask for one.
#[derive(Debug)]
pub struct Captcha {
    needed: Option<Escalation>,
}

impl Captcha {
    /// Whether a challenge must be answered, and why; the service checks the answer only then.
    pub fn needed(&self) -> Option<Escalation> {
        self.needed
    }

    /// `answer` is read only when a CAPTCHA is needed.
    pub fn check(self, answer: CaptchaAnswer) -> Result<FirstFactor, Refusal> {
        match (self.needed, answer) {
            (None, _) | (Some(_), CaptchaAnswer::Right) => Ok(FirstFactor(())),
            (Some(why), CaptchaAnswer::Missing) => {
                Err(Refusal::CaptchaRequired { wrong: false, why })
            }
            (Some(why), CaptchaAnswer::Wrong) => Err(Refusal::CaptchaRequired { wrong: true, why }),
        }
    }
}

/// The password (LDAP and OpenID Connect will be other first factors). The service always
/// computes one hash, against a dummy for unknown logins, so both cost the same.
#[derive(Debug)]
pub struct FirstFactor(());

impl FirstFactor {
    /// `verified`: the login exists and the password is its password.
    pub fn check(self, verified: bool) -> Result<AccountStatus, Refusal> {
        if verified {
            Ok(AccountStatus(()))
        } else {
            Err(Refusal::InvalidCredentials)
        }
    }
}

/// The second step of a sign-in whose password was right (a pending sign-in): it begins again
/// with the address's budget and the login's lock, then the rest as for a first attempt. Only
/// a `Pending` (a sealed cookie the gateway made after the password) can start it.
pub fn resume(_password_was_right: &Pending) -> ResumedBudget {
    ResumedBudget(())
}

#[derive(Debug)]
pub struct ResumedBudget(());

impl ResumedBudget {
    pub fn check(self, spent: Result<(), Millis>, now: Millis) -> Result<ResumedLock, Refusal> {
        AddressBudget(()).check(spent, now).map(|_| ResumedLock(()))
    }
}

/// The lock, again: wrong codes count toward it. The CAPTCHA does not apply to this step.
#[derive(Debug)]
pub struct ResumedLock(());

impl ResumedLock {
    pub fn check(self, login: &Counter, now: Millis) -> Result<AccountStatus, Refusal> {
        match throttle::locked_until(login, now) {
            Some(until) => Err(Refusal::Locked {
                retry_after: throttle::seconds_until(until, now),
            }),
            None => Ok(AccountStatus(())),
        }
    }
}

/// Whether the account may sign in at all; only told after the right password, so a refusal
/// here reveals nothing to someone without it.
#[derive(Debug)]
pub struct AccountStatus(());

impl AccountStatus {
    pub fn check(self, dismissed: bool) -> Result<IpRule, Refusal> {
        if dismissed {
            Err(Refusal::Dismissed)
        } else {
            Ok(IpRule(()))
        }
    }
}

/// The user's IP restrictions, for the same reason after the password.
#[derive(Debug)]
pub struct IpRule(());

impl IpRule {
    /// `allowed`: `policy::network::user_allowed` for this user and address.
    pub fn check(self, allowed: bool) -> Result<SecondFactor, Refusal> {
        if allowed {
            Ok(SecondFactor(()))
        } else {
            Err(Refusal::IpRestricted)
        }
    }
}

/// What the user's second factor asks, and what the attempt brought for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecondFactorFacts {
    /// None enrolled and none required, or turned off by an administrator for now.
    NotNeeded,
    /// Enrolled; the attempt's code, checked (`None`: no code came).
    Code(Option<CodeOutcome>),
    /// Required by `two_factor.required_groups` and not set up yet.
    SetupRequired,
}

/// A code, as the service found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeOutcome {
    Totp,
    Backup,
    Wrong,
    Replay,
}

/// Two-step verification, last before the session: after every other check, so that whoever
/// is asked for a code has the right password and may sign in from here.
#[derive(Debug)]
pub struct SecondFactor(());

impl SecondFactor {
    pub fn check(self, facts: SecondFactorFacts) -> Result<Issue, Refusal> {
        let factors = match facts {
            SecondFactorFacts::NotNeeded => Factors::Password,
            SecondFactorFacts::SetupRequired => return Err(Refusal::TwoFactorSetupRequired),
            SecondFactorFacts::Code(None) => return Err(Refusal::TwoFactorRequired),
            SecondFactorFacts::Code(Some(CodeOutcome::Totp)) => Factors::PasswordTotp,
            SecondFactorFacts::Code(Some(CodeOutcome::Backup)) => Factors::PasswordBackupCode,
            SecondFactorFacts::Code(Some(CodeOutcome::Wrong)) => {
                return Err(Refusal::InvalidCode { replay: false });
            }
            SecondFactorFacts::Code(Some(CodeOutcome::Replay)) => {
                return Err(Refusal::InvalidCode { replay: true });
            }
        };
        Ok(Issue { factors })
    }
}

/// Every check passed: a session may be issued, on these factors.
#[derive(Debug)]
pub struct Issue {
    pub factors: Factors,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const NOW: Millis = 1_700_000_000_000;

    fn policy() -> ThrottleConfig {
        ThrottleConfig {
            captcha_after: 3,
            lock_after: 5,
            lock_duration: Duration::from_secs(900),
            ip_attempts_per_minute: 30,
            password_checks_per_second: 50,
            captcha_limit: 10_000,
        }
    }

    fn failures(n: u32) -> Counter {
        Counter {
            failures: n,
            last_failure: NOW,
            ..Counter::default()
        }
    }

    /// What each step is told, for one attempt.
    struct Facts {
        spent: Result<(), Millis>,
        login: Counter,
        addr: Counter,
        answer: CaptchaAnswer,
        verified: bool,
        dismissed: bool,
        allowed: bool,
        second: SecondFactorFacts,
    }

    fn ok() -> Facts {
        Facts {
            spent: Ok(()),
            login: Counter::default(),
            addr: Counter::default(),
            answer: CaptchaAnswer::Missing,
            verified: true,
            dismissed: false,
            allowed: true,
            second: SecondFactorFacts::NotNeeded,
        }
    }

    /// Runs the machine; the step names it passed, and how it ended.
    fn run(f: &Facts) -> (Vec<&'static str>, Result<Factors, Refusal>) {
        let mut passed = Vec::new();
        let result = (|| {
            let lock = start().check(f.spent, NOW)?;
            passed.push("budget");
            let captcha = lock.check(&f.login, &f.addr, NOW, &policy())?;
            passed.push("lock");
            let first = captcha.check(f.answer)?;
            passed.push("captcha");
            let status = first.check(f.verified)?;
            passed.push("first factor");
            let rule = status.check(f.dismissed)?;
            passed.push("account");
            let second = rule.check(f.allowed)?;
            passed.push("ip rule");
            let issue = second.check(f.second)?;
            passed.push("second factor");
            Ok(issue.factors)
        })();
        (passed, result)
    }

    #[test]
    fn each_refusal_at_its_step() {
        let locked = Counter {
            failures: 5,
            last_failure: NOW,
            locked_until: NOW + 60_000,
            ..Counter::default()
        };
        let code = |c| SecondFactorFacts::Code(c);
        let cases: Vec<(&str, Facts, usize, Result<Factors, Refusal>)> = vec![
            ("success", ok(), 7, Ok(Factors::Password)),
            (
                "throttled",
                Facts {
                    spent: Err(NOW + 1500),
                    ..ok()
                },
                0,
                Err(Refusal::Throttled { retry_after: 2 }),
            ),
            (
                "locked, even with every later fact right",
                Facts {
                    login: locked,
                    answer: CaptchaAnswer::Right,
                    ..ok()
                },
                1,
                Err(Refusal::Locked { retry_after: 60 }),
            ),
            (
                "CAPTCHA required for the login",
                Facts {
                    login: failures(3),
                    ..ok()
                },
                2,
                Err(Refusal::CaptchaRequired {
                    wrong: false,
                    why: Escalation {
                        login: true,
                        address: false,
                    },
                }),
            ),
            (
                "CAPTCHA answered wrong, for the address",
                Facts {
                    addr: failures(4),
                    answer: CaptchaAnswer::Wrong,
                    ..ok()
                },
                2,
                Err(Refusal::CaptchaRequired {
                    wrong: true,
                    why: Escalation {
                        login: false,
                        address: true,
                    },
                }),
            ),
            (
                "CAPTCHA answered right",
                Facts {
                    login: failures(3),
                    answer: CaptchaAnswer::Right,
                    ..ok()
                },
                7,
                Ok(Factors::Password),
            ),
            (
                "a wrong answer when none is needed is never read",
                Facts {
                    answer: CaptchaAnswer::Wrong,
                    ..ok()
                },
                7,
                Ok(Factors::Password),
            ),
            (
                "invalid credentials, nothing about the account or its factor told",
                Facts {
                    verified: false,
                    dismissed: true,
                    allowed: false,
                    second: SecondFactorFacts::SetupRequired,
                    ..ok()
                },
                3,
                Err(Refusal::InvalidCredentials),
            ),
            (
                "dismissed, only after the right password",
                Facts {
                    dismissed: true,
                    allowed: false,
                    second: code(None),
                    ..ok()
                },
                4,
                Err(Refusal::Dismissed),
            ),
            (
                "IP restricted, before any code is asked",
                Facts {
                    allowed: false,
                    second: code(None),
                    ..ok()
                },
                5,
                Err(Refusal::IpRestricted),
            ),
            (
                "a second factor and no code: the second step",
                Facts {
                    second: code(None),
                    ..ok()
                },
                6,
                Err(Refusal::TwoFactorRequired),
            ),
            (
                "a wrong code",
                Facts {
                    second: code(Some(CodeOutcome::Wrong)),
                    ..ok()
                },
                6,
                Err(Refusal::InvalidCode { replay: false }),
            ),
            (
                "a used code",
                Facts {
                    second: code(Some(CodeOutcome::Replay)),
                    ..ok()
                },
                6,
                Err(Refusal::InvalidCode { replay: true }),
            ),
            (
                "must set up first",
                Facts {
                    second: SecondFactorFacts::SetupRequired,
                    ..ok()
                },
                6,
                Err(Refusal::TwoFactorSetupRequired),
            ),
            (
                "an app's code",
                Facts {
                    second: code(Some(CodeOutcome::Totp)),
                    ..ok()
                },
                7,
                Ok(Factors::PasswordTotp),
            ),
            (
                "a backup code",
                Facts {
                    second: code(Some(CodeOutcome::Backup)),
                    ..ok()
                },
                7,
                Ok(Factors::PasswordBackupCode),
            ),
        ];
        for (name, facts, steps, want) in cases {
            let (passed, got) = run(&facts);
            assert_eq!(got, want, "{name}");
            assert_eq!(passed.len(), steps, "{name}: passed {passed:?}");
        }
    }

    #[test]
    fn the_second_step_begins_again_with_the_budget_and_the_lock_but_no_captcha() {
        let pending = Pending {
            user_id: 1,
            remember: false,
            setup: false,
            expires_at: 0,
            credential: [0; 16],
        };
        let locked = Counter {
            locked_until: NOW + 5000,
            ..failures(9)
        };
        assert!(matches!(
            resume(&pending).check(Err(NOW + 1000), NOW),
            Err(Refusal::Throttled { retry_after: 1 })
        ));
        let lock = resume(&pending).check(Ok(()), NOW).unwrap();
        assert_eq!(
            lock.check(&locked, NOW).unwrap_err(),
            Refusal::Locked { retry_after: 5 }
        );
        // Many failures, no CAPTCHA: straight to the account, the rule and the code.
        let lock = resume(&pending).check(Ok(()), NOW).unwrap();
        let issue = lock
            .check(&failures(50), NOW)
            .and_then(|s| s.check(false))
            .and_then(|r| r.check(true))
            .and_then(|f| f.check(SecondFactorFacts::Code(Some(CodeOutcome::Totp))))
            .unwrap();
        assert_eq!(issue.factors, Factors::PasswordTotp);
    }

    #[test]
    fn the_captcha_step_says_whether_it_needs_an_answer() {
        let lock = start().check(Ok(()), NOW).unwrap();
        let none = lock
            .check(&failures(2), &failures(2), NOW, &policy())
            .unwrap();
        assert_eq!(none.needed(), None);
        let lock = start().check(Ok(()), NOW).unwrap();
        let some = lock
            .check(&failures(2), &failures(3), NOW, &policy())
            .unwrap();
        assert!(some.needed().is_some_and(|e| e.address && !e.login));
    }
}
