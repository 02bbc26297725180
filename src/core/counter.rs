//! A throttle counter as the store keeps it: failures and budgets under one key (a login or an
//! address). The arithmetic on it is `policy::throttle`'s.

use crate::core::time::Millis;

/// What the store keeps under one key (a login or an address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counter {
    /// Consecutive failures.
    pub failures: u32,
    pub last_failure: Millis,
    /// Logins only: no attempt is looked at before this time.
    pub locked_until: Millis,
    /// Addresses only: when the per-minute budget is whole again (the "theoretical arrival
    /// time" of the generic cell rate algorithm).
    pub budget_full_at: Millis,
}
