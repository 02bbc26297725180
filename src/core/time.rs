//! Time, injected: the gateway reads the system clock, tests set their own. Owns the two
//! units the project counts in (seconds and milliseconds since the Unix epoch) and their
//! calendar form; nothing here reads anything but the clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch.
pub type UnixTime = i64;

/// Milliseconds since the Unix epoch: the per-address rate needs finer steps than seconds.
pub type Millis = i64;

pub trait Clock: Send + Sync {
    fn now_millis(&self) -> Millis;

    fn now(&self) -> UnixTime {
        self.now_millis().div_euclid(1000)
    }
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> Millis {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }
}

/// `t` as an RFC 3339 UTC timestamp, e.g. `2026-11-21T09:05:00Z` (the `time` crate's
/// calendar; a time it cannot show, beyond year 9999, is shown as the epoch seconds).
pub fn rfc3339(t: UnixTime) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

/// A clock that moves only when told to.
#[derive(Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn at(t: UnixTime) -> Arc<ManualClock> {
        Arc::new(ManualClock(AtomicI64::new(t * 1000)))
    }

    pub fn advance(&self, secs: i64) {
        self.advance_millis(secs * 1000);
    }

    pub fn advance_millis(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        for (t, text) in [
            (0, "1970-01-01T00:00:00Z"),
            (-1, "1969-12-31T23:59:59Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_795_000_000, "2026-11-18T11:06:40Z"),
            (4_107_542_399, "2100-02-28T23:59:59Z"),
            (4_107_542_400, "2100-03-01T00:00:00Z"),
        ] {
            assert_eq!(rfc3339(t), text, "{t}");
        }
    }
}
