//! The gateway's background tasks: the event writer, revocations applied to the session cache
//! as soon as they are published, and the housekeeping that deletes what can no longer matter.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::App;
use crate::service::audit::EventWriter;
use crate::service::recovery::OUTBOX_POLL;

/// Runs the event writer on a runtime of its own.
pub struct Events(pub std::sync::Mutex<Option<EventWriter>>);

#[async_trait]
impl BackgroundService for Events {
    async fn start(&self, _shutdown: ShutdownWatch) {
        // Runs until the other services have stopped and let go of the application state:
        // the events of requests still finishing after a stop signal are written too.
        let writer = self.0.lock().ok().and_then(|mut w| w.take());
        if let Some(writer) = writer {
            writer.run().await;
        }
    }
}

/// How often revocations made elsewhere (the CLI, another gateway) are picked up.
const REVOCATION_POLL: Duration = Duration::from_millis(500);
/// The same, for a store that announces revocations as they happen.
const REVOCATION_CATCH_UP: Duration = Duration::from_secs(1);
const PURGE_EVERY: Duration = Duration::from_secs(60);
/// Revocations are kept an hour: far longer than any gateway takes to read them.
const REVOCATION_KEPT: i64 = 3600;
/// Events deleted per store call when the retention purge runs, and the pause between calls.
const EVENT_PURGE_SLICE: u32 = 10_000;
const EVENT_PURGE_PAUSE: Duration = Duration::from_millis(100);

/// Applies revocations to the cache, and does nothing else, so that nothing slow delays them.
pub struct Upkeep {
    pub app: Arc<App>,
}

#[async_trait]
impl BackgroundService for Upkeep {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut seq = match self.app.store.last_revocation().await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot read revocations; starting from the beginning");
                0
            }
        };
        // A store that announces revocations is read at once when it does, and on a slower
        // timer too, so that a lost announcement delays a revocation by a second at most.
        let mut changes = self.app.store.changes();
        let every = if changes.is_some() {
            REVOCATION_CATCH_UP
        } else {
            REVOCATION_POLL
        };
        let mut poll = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = poll.tick() => self.apply_revocations(&mut seq).await,
                () = announced(&mut changes) => self.apply_revocations(&mut seq).await,
            }
        }
    }
}

/// Resolves when the store announces a change; never, for a store that does not.
async fn announced(changes: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    let announced = match changes {
        Some(rx) => rx.changed().await.is_ok(),
        None => false,
    };
    if !announced {
        std::future::pending::<()>().await;
    }
}

impl Upkeep {
    async fn apply_revocations(&self, seq: &mut i64) {
        match self.app.sessions.apply_revocations(*seq).await {
            Ok(next) => *seq = next,
            Err(e) => tracing::warn!(error = %e, "cannot read revocations"),
        }
    }
}

/// Sends the queued mail and SMS: at once when a request on this gateway queues one, and
/// every `OUTBOX_POLL` for those queued elsewhere (the command line, another gateway) and for
/// retries that come due. A message being sent when a stop comes is finished first.
pub struct Outbox {
    pub app: Arc<App>,
}

#[async_trait]
impl BackgroundService for Outbox {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let recovery = &self.app.site.recovery;
        loop {
            let cfg = self.app.config.load_full();
            match recovery.send_due(&cfg).await {
                // A full batch: there may be more.
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read the outbox"),
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                () = recovery.queued() => {}
                () = tokio::time::sleep(OUTBOX_POLL) => {}
            }
        }
    }
}

/// Deletes what can no longer matter, at start and every minute after, on a task of its own:
/// dead sessions, spent CAPTCHA challenges, forgotten throttle counters, revocations every
/// gateway has read, and events older than `audit.retention` (in slices with pauses between,
/// so that a first purge of a large log never holds the store for long).
pub struct Housekeeping {
    pub app: Arc<App>,
}

#[async_trait]
impl BackgroundService for Housekeeping {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut purge = tokio::time::interval(PURGE_EVERY);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = purge.tick() => self.purge().await,
            }
        }
    }
}

impl Housekeeping {
    async fn purge(&self) {
        let cfg = self.app.config.load();
        if let Err(e) = self.app.sessions.purge(&cfg.session).await {
            tracing::warn!(error = %e, "cannot purge expired sessions");
        }
        let store = &self.app.store;
        let now = self.app.clock.now_millis();
        let forgotten = crate::policy::throttle::forgotten_before(now, &cfg.throttle);
        if let Err(e) = store.purge_counters(forgotten, now).await {
            tracing::warn!(error = %e, "cannot purge throttle counters");
        }
        let secs = now.div_euclid(1000);
        if let Err(e) = store.purge_captchas(secs).await {
            tracing::warn!(error = %e, "cannot purge CAPTCHA challenges");
        }
        if let Err(e) = store.purge_revocations(secs - REVOCATION_KEPT).await {
            tracing::warn!(error = %e, "cannot purge old revocations");
        }
        self.purge_events().await;
        self.key_events().await;
    }

    /// Events written before addresses were keyed get their key, so that `audit --ip` finds
    /// them by index too (until then it reads them all, and checks each).
    async fn key_events(&self) {
        let store = &self.app.store;
        in_slices("key old events by address", || {
            store.key_events(EVENT_PURGE_SLICE)
        })
        .await;
    }

    async fn purge_events(&self) {
        let Some(retention) = self.app.config.load().audit.retention else {
            return;
        };
        let retention = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
        let before = self.app.clock.now().saturating_sub(retention);
        let store = &self.app.store;
        in_slices("purge old events", || {
            store.purge_events(before, EVENT_PURGE_SLICE)
        })
        .await;
    }
}

/// Calls `step` (which handles at most `EVENT_PURGE_SLICE` events) until one call handles
/// fewer, pausing between calls so that requests get the store too; a failure is logged.
async fn in_slices<F, Fut>(what: &str, mut step: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = crate::store::StoreResult<u64>>,
{
    loop {
        match step().await {
            Ok(n) if n == u64::from(EVENT_PURGE_SLICE) => {
                tokio::time::sleep(EVENT_PURGE_PAUSE).await;
            }
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot {what}");
                return;
            }
        }
    }
}
