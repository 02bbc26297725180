//! When a session ends by itself: idle for `idle_timeout` since its last request, or older than
//! `absolute_timeout`; and how far behind the store's `last_seen` may lag. Pure arithmetic on
//! times.

use crate::config::SessionConfig;
use crate::core::time::UnixTime;

/// Why a session stopped being valid by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Idle,
    Absolute,
}

impl Expiry {
    pub fn as_str(self) -> &'static str {
        match self {
            Expiry::Idle => "idle",
            Expiry::Absolute => "absolute",
        }
    }
}

/// Whether a session seen at `last_seen` and created at `created_at` has expired at `now`.
/// A session is valid for exactly `idle_timeout` seconds after its last request.
pub fn expiry(
    now: UnixTime,
    created_at: UnixTime,
    last_seen: UnixTime,
    cfg: &SessionConfig,
) -> Option<Expiry> {
    if let Some(abs) = cfg.absolute_timeout
        && now - created_at >= abs.as_secs() as i64
    {
        return Some(Expiry::Absolute);
    }
    (now - last_seen >= cfg.idle_timeout.as_secs() as i64).then_some(Expiry::Idle)
}

/// How far the store's `last_seen` may lag behind the truth: `idle_timeout / 24`, at least 1 s.
pub fn touch_interval(cfg: &SessionConfig) -> i64 {
    (cfg.idle_timeout.as_secs() as i64 / 24).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg(idle: u64, absolute: Option<u64>) -> SessionConfig {
        SessionConfig {
            cookie_name: "s".into(),
            idle_timeout: Duration::from_secs(idle),
            absolute_timeout: absolute.map(Duration::from_secs),
            remember_me: None,
            cache_capacity: crate::config::DEFAULT_SESSION_CACHE,
        }
    }

    #[test]
    fn expiry_table() {
        // (now, created, last_seen, idle, absolute, expected)
        let cases = [
            (100, 0, 100, 60, None, None),
            (159, 0, 100, 60, None, None),
            (160, 0, 100, 60, None, Some(Expiry::Idle)),
            (1000, 0, 990, 60, Some(1000), Some(Expiry::Absolute)),
            (999, 0, 990, 60, Some(1000), None),
            (2000, 0, 1000, 60, Some(1000), Some(Expiry::Absolute)),
        ];
        for (now, created, seen, idle, abs, want) in cases {
            assert_eq!(
                expiry(now, created, seen, &cfg(idle, abs)),
                want,
                "now={now}"
            );
        }
    }

    #[test]
    fn lazy_write_interval_is_a_twenty_fourth_of_idle() {
        assert_eq!(touch_interval(&cfg(24 * 60, None)), 60);
        assert_eq!(touch_interval(&cfg(3, None)), 1);
    }
}
