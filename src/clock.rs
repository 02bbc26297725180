//! Time, injected: the gateway reads the system clock, tests set their own.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::store::UnixTime;
use crate::throttle::Millis;

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
