//! The order of the sign-in checks (docs/reference.md, Sign-in) as a machine: address budget →
//! lock → CAPTCHA → first factor → second factor → account status → IP rule → issue. Each step
//! is a type whose `check` takes what the service found out for that step and returns the next
//! step or the refusal; only `start` makes the first one, so no step can be skipped or taken out
//! of turn. No I/O: the service does the lookups, hashing and counting between the steps.

use crate::config::ThrottleConfig;
use crate::core::counter::Counter;
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
    pub fn check(self, verified: bool) -> Result<SecondFactor, Refusal> {
        if verified {
            Ok(SecondFactor(()))
        } else {
            Err(Refusal::InvalidCredentials)
        }
    }
}

/// The slot for two-step verification: today every sign-in goes straight on.
#[derive(Debug)]
pub struct SecondFactor(());

impl SecondFactor {
    pub fn check(self) -> AccountStatus {
        AccountStatus(())
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

/// The user's IP restrictions, last, for the same reason.
#[derive(Debug)]
pub struct IpRule(());

impl IpRule {
    /// `allowed`: `policy::network::user_allowed` for this user and address.
    pub fn check(self, allowed: bool) -> Result<Issue, Refusal> {
        if allowed {
            Ok(Issue(()))
        } else {
            Err(Refusal::IpRestricted)
        }
    }
}

/// Every check passed: a session may be issued.
#[derive(Debug)]
pub struct Issue(());

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
        }
    }

    /// Runs the machine; the step names it passed, and how it ended.
    fn run(f: &Facts) -> (Vec<&'static str>, Result<(), Refusal>) {
        let mut passed = Vec::new();
        let result = (|| {
            let lock = start().check(f.spent, NOW)?;
            passed.push("budget");
            let captcha = lock.check(&f.login, &f.addr, NOW, &policy())?;
            passed.push("lock");
            let first = captcha.check(f.answer)?;
            passed.push("captcha");
            let second = first.check(f.verified)?;
            passed.push("first factor");
            let status = second.check();
            passed.push("second factor");
            let rule = status.check(f.dismissed)?;
            passed.push("account");
            rule.check(f.allowed)?;
            passed.push("ip rule");
            Ok(())
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
        let cases: Vec<(&str, Facts, usize, Result<(), Refusal>)> = vec![
            ("success", ok(), 7, Ok(())),
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
                Ok(()),
            ),
            (
                "a wrong answer when none is needed is never read",
                Facts {
                    answer: CaptchaAnswer::Wrong,
                    ..ok()
                },
                7,
                Ok(()),
            ),
            (
                "invalid credentials",
                Facts {
                    verified: false,
                    dismissed: true,
                    allowed: false,
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
                    ..ok()
                },
                5,
                Err(Refusal::Dismissed),
            ),
            (
                "IP restricted, last",
                Facts {
                    allowed: false,
                    ..ok()
                },
                6,
                Err(Refusal::IpRestricted),
            ),
        ];
        for (name, facts, steps, want) in cases {
            let (passed, got) = run(&facts);
            assert_eq!(got, want, "{name}");
            assert_eq!(passed.len(), steps, "{name}: passed {passed:?}");
        }
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
