//! Login throttling arithmetic: failure counters per login and per client address, what they
//! escalate to (a CAPTCHA, a temporary lock) and the per-address attempt rate. Pure functions of
//! a counter and the time, table-tested with an injected clock; the store keeps the counters.

use std::net::IpAddr;
use std::time::Duration;

use crate::config::ThrottleConfig;
use crate::core::addr::ClientAddr;
use crate::core::counter::Counter;
use crate::core::time::Millis;

/// A login's failures are forgotten after this long without a new one (a success forgets
/// them at once). Long, so that guessing below the CAPTCHA threshold yields a few tries a day.
pub const LOGIN_MEMORY: Duration = Duration::from_secs(24 * 60 * 60);

/// Whose counter: the two are escalated differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Reset by a success; can lock.
    Login,
    /// Never reset by a success (one's own account would clear a spraying address); forgotten
    /// after `lock_duration` without a failure; never locks, only asks for a CAPTCHA.
    Address,
}

/// The store key of a login: trimmed and case-folded, whether or not such a user exists, so
/// unknown logins escalate exactly like known ones.
pub fn login_key(login: &str) -> String {
    format!("login:{}", login.trim().to_lowercase())
}

/// The store key of an address. IPv6 clients are counted per /64, the block one subscriber
/// usually holds, so rotating through it does not reset the count.
pub fn addr_key(addr: &ClientAddr) -> String {
    match addr.ip() {
        IpAddr::V4(v4) => format!("addr:{v4}"),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
            format!("addr:{net}/64")
        }
    }
}

fn millis(d: Duration) -> Millis {
    Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX)
}

/// Whole seconds until `until`, rounded up, at least one: what `Retry-After` says.
pub fn seconds_until(until: Millis, now: Millis) -> u64 {
    let ms = until.saturating_sub(now).max(1);
    u64::try_from((ms + 999) / 1000).unwrap_or(1)
}

/// Takes one attempt from an address's budget of `per_minute` (0 = unlimited): all of it may be
/// spent at once, then it refills one attempt every `60 s / per_minute`. `Err` holds when the
/// next attempt will be accepted.
pub fn take_attempt(c: Counter, now: Millis, per_minute: u32) -> Result<Counter, Millis> {
    take_from_budget(c, now, per_minute, 60_000)
}

/// The budget arithmetic (the generic cell rate algorithm): `n` per `window` milliseconds, all
/// of them at once if unused, then one every `window / n`; 0 = unlimited.
pub fn take_from_budget(
    c: Counter,
    now: Millis,
    n: u32,
    window: Millis,
) -> Result<Counter, Millis> {
    if n == 0 {
        return Ok(c);
    }
    let step = (window / Millis::from(n)).max(1);
    let tolerance = window - step;
    let full_at = c.budget_full_at.max(now);
    if full_at - now > tolerance {
        return Err(full_at - tolerance);
    }
    Ok(Counter {
        budget_full_at: full_at + step,
        ..c
    })
}

/// How long a login stays locked, if it is.
pub fn locked_until(c: &Counter, now: Millis) -> Option<Millis> {
    (c.locked_until > now).then_some(c.locked_until)
}

/// Failures that still count at `now`.
pub fn live_failures(c: &Counter, now: Millis, scope: Scope, policy: &ThrottleConfig) -> u32 {
    let memory = match scope {
        Scope::Login => LOGIN_MEMORY,
        Scope::Address => policy.lock_duration,
    };
    if now.saturating_sub(c.last_failure) >= millis(memory) {
        0
    } else {
        c.failures
    }
}

/// Which counters demand a CAPTCHA, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Escalation {
    pub login: bool,
    pub address: bool,
}

impl Escalation {
    /// For the event log: which counter asked.
    pub fn reason(&self) -> &'static str {
        match (self.login, self.address) {
            (true, true) => "login and address",
            (true, false) => "login",
            _ => "address",
        }
    }
}

/// Whether the next attempt for this login from this address needs a CAPTCHA.
pub fn captcha_needed(
    login: &Counter,
    addr: &Counter,
    now: Millis,
    policy: &ThrottleConfig,
) -> Option<Escalation> {
    if policy.captcha_after == 0 {
        return None;
    }
    let over = |c, scope| live_failures(c, now, scope, policy) >= policy.captcha_after;
    let e = Escalation {
        login: over(login, Scope::Login),
        address: over(addr, Scope::Address),
    };
    (e.login || e.address).then_some(e)
}

/// Counts one more failure. A login that reaches `lock_after` (0 = never) is locked for
/// `lock_duration`, and again after every further failure until a success resets it.
pub fn failed(c: Counter, now: Millis, scope: Scope, policy: &ThrottleConfig) -> Counter {
    let failures = live_failures(&c, now, scope, policy).saturating_add(1);
    let lock = scope == Scope::Login && policy.lock_after > 0 && failures >= policy.lock_after;
    Counter {
        failures,
        last_failure: now,
        locked_until: if lock {
            now.saturating_add(millis(policy.lock_duration))
        } else {
            c.locked_until
        },
        ..c
    }
}

/// Whether a failure just locked the login (it was not locked before it).
pub fn newly_locked(before: &Counter, after: &Counter, now: Millis) -> bool {
    locked_until(after, now).is_some() && locked_until(before, now).is_none()
}

/// When a counter has nothing left to remember and its row can go.
pub fn forgotten_before(now: Millis, policy: &ThrottleConfig) -> Millis {
    now.saturating_sub(millis(LOGIN_MEMORY.max(policy.lock_duration)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Millis = 1_700_000_000_000;
    const SEC: Millis = 1000;

    fn policy(captcha_after: u32, lock_after: u32, lock_secs: u64) -> ThrottleConfig {
        ThrottleConfig {
            captcha_after,
            lock_after,
            lock_duration: Duration::from_secs(lock_secs),
            ip_attempts_per_minute: 30,
            password_checks_per_second: 50,
            captcha_limit: 10_000,
        }
    }

    fn fail_times(
        mut c: Counter,
        n: u32,
        now: Millis,
        scope: Scope,
        p: &ThrottleConfig,
    ) -> Counter {
        for _ in 0..n {
            c = failed(c, now, scope, p);
        }
        c
    }

    #[test]
    fn the_per_minute_budget_is_spent_at_once_then_refills_evenly() {
        let mut c = Counter::default();
        for i in 0..30 {
            c = take_attempt(c, T0, 30).unwrap_or_else(|_| panic!("attempt {i} refused"));
        }
        // The 31st within the same instant waits one refill step: 60 s / 30 = 2 s.
        assert_eq!(take_attempt(c, T0, 30), Err(T0 + 2 * SEC));
        assert_eq!(seconds_until(T0 + 2 * SEC, T0), 2);
        assert!(take_attempt(c, T0 + 2 * SEC - 1, 30).is_err());
        let c = take_attempt(c, T0 + 2 * SEC, 30).expect("one attempt refilled");
        assert!(take_attempt(c, T0 + 2 * SEC, 30).is_err());
        // After a quiet minute the whole budget is back.
        let mut c = c;
        for _ in 0..30 {
            c = take_attempt(c, T0 + 62 * SEC, 30).expect("budget whole again");
        }
        assert!(take_attempt(c, T0 + 62 * SEC, 30).is_err());
    }

    #[test]
    fn a_per_second_budget_refills_every_twentieth_of_a_second_at_twenty() {
        let mut c = Counter::default();
        for _ in 0..20 {
            c = take_from_budget(c, T0, 20, SEC).expect("20 at once");
        }
        assert_eq!(take_from_budget(c, T0, 20, SEC), Err(T0 + 50));
        assert!(take_from_budget(c, T0 + 50, 20, SEC).is_ok());
    }

    #[test]
    fn budgets_above_sixty_per_minute_and_unlimited() {
        let mut c = Counter::default();
        for _ in 0..600 {
            c = take_attempt(c, T0, 600).expect("600 at once");
        }
        assert_eq!(take_attempt(c, T0, 600), Err(T0 + 100));
        assert_eq!(
            seconds_until(T0 + 100, T0),
            1,
            "Retry-After is at least one second"
        );
        let c = Counter::default();
        for _ in 0..10_000 {
            assert_eq!(take_attempt(c, T0, 0), Ok(c), "0 means no limit");
        }
    }

    #[test]
    fn captcha_from_the_threshold_on_for_either_counter() {
        let p = policy(3, 0, 900);
        let none = Counter::default();
        let cases = [
            // (login failures, address failures, expected)
            (0, 0, None),
            (2, 2, None),
            (3, 0, Some((true, false))),
            (0, 3, Some((false, true))),
            (5, 9, Some((true, true))),
        ];
        for (login, addr, want) in cases {
            let l = fail_times(none, login, T0, Scope::Login, &p);
            let a = fail_times(none, addr, T0, Scope::Address, &p);
            let got = captcha_needed(&l, &a, T0, &p).map(|e| (e.login, e.address));
            assert_eq!(got, want, "login {login}, address {addr}");
        }
        let off = policy(0, 0, 900);
        let many = fail_times(none, 1000, T0, Scope::Login, &off);
        assert_eq!(captcha_needed(&many, &many, T0, &off), None, "0 disables");
    }

    #[test]
    fn address_failures_fade_after_a_quiet_lock_duration_login_failures_after_a_day() {
        let p = policy(3, 0, 900);
        let a = fail_times(Counter::default(), 3, T0, Scope::Address, &p);
        assert_eq!(live_failures(&a, T0 + 899 * SEC, Scope::Address, &p), 3);
        assert_eq!(live_failures(&a, T0 + 900 * SEC, Scope::Address, &p), 0);
        // A failure within the window keeps the run going; after it, counting starts over.
        let a2 = failed(a, T0 + 899 * SEC, Scope::Address, &p);
        assert_eq!(a2.failures, 4);
        let a3 = failed(a, T0 + 900 * SEC, Scope::Address, &p);
        assert_eq!(a3.failures, 1);

        let l = fail_times(Counter::default(), 3, T0, Scope::Login, &p);
        let day = millis(LOGIN_MEMORY);
        assert_eq!(live_failures(&l, T0 + day - 1, Scope::Login, &p), 3);
        assert_eq!(live_failures(&l, T0 + day, Scope::Login, &p), 0);
    }

    #[test]
    fn a_login_locks_at_lock_after_and_again_on_each_later_failure() {
        let p = policy(2, 4, 60);
        let three = fail_times(Counter::default(), 3, T0, Scope::Login, &p);
        assert_eq!(locked_until(&three, T0), None);
        let four = failed(three, T0, Scope::Login, &p);
        assert_eq!(locked_until(&four, T0), Some(T0 + 60 * SEC));
        assert!(newly_locked(&three, &four, T0));
        assert_eq!(locked_until(&four, T0 + 60 * SEC), None, "the lock expires");
        // Still over the threshold: the next failure locks again at once.
        let five = failed(four, T0 + 61 * SEC, Scope::Login, &p);
        assert_eq!(five.failures, 5);
        assert_eq!(locked_until(&five, T0 + 61 * SEC), Some(T0 + 121 * SEC));
        assert!(newly_locked(&four, &five, T0 + 61 * SEC));
    }

    #[test]
    fn addresses_never_lock_and_zero_never_locks_a_login() {
        let p = policy(2, 4, 60);
        let a = fail_times(Counter::default(), 50, T0, Scope::Address, &p);
        assert_eq!(locked_until(&a, T0), None);
        let never = policy(2, 0, 60);
        let l = fail_times(Counter::default(), 500, T0, Scope::Login, &never);
        assert_eq!(locked_until(&l, T0), None);
    }

    #[test]
    fn keys_fold_case_and_group_ipv6_by_64() {
        assert_eq!(login_key("  Alice@Example.COM "), "login:alice@example.com");
        let v4 = ClientAddr::new("192.0.2.7".parse().unwrap());
        assert_eq!(addr_key(&v4), "addr:192.0.2.7");
        let mapped = ClientAddr::new("::ffff:192.0.2.7".parse().unwrap());
        assert_eq!(addr_key(&mapped), "addr:192.0.2.7");
        let a = ClientAddr::new("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = ClientAddr::new("2001:db8:1:2:ffff::9".parse().unwrap());
        assert_eq!(addr_key(&a), "addr:2001:db8:1:2::/64");
        assert_eq!(addr_key(&a), addr_key(&b));
    }
}
