//! The Pingora shell: builds the application state, wires the proxy, the admin listener and the
//! background tasks into one server, and turns requests into facts for `decision`. Security
//! rules do not live here; this module only carries them out.

mod admin;
mod connection;
mod local;
mod proxy;
mod reload;
mod reply;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::apps::http_app::HttpServer;
use pingora::server::configuration::ServerConf;
use pingora::server::{Server, ShutdownWatch};
use pingora::services::ServiceWithDependents;
use pingora::services::background::{BackgroundService, background_service};
use pingora::services::listening::Service;

use crate::audit::{Audit, EventWriter};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::password::{HashError, Hasher};
use crate::session::Sessions;
use crate::store::{self, Store, StoreError};

/// Everything a request handler needs, shared by all of them.
pub struct App {
    pub config: ArcSwap<Config>,
    pub store: Arc<dyn Store>,
    pub sessions: Sessions,
    pub hasher: Hasher,
    pub audit: Audit,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    pub login_gates: crate::login::Gates,
    /// The key of the login form's CSRF tokens, shared through the store by every gateway.
    pub csrf_key: [u8; 32],
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hasher(#[from] HashError),
    #[error("cannot listen on {addr}: {error}")]
    Listen { addr: String, error: std::io::Error },
    #[error("cannot start: {0}")]
    Runtime(String),
}

/// Worker threads for password hashing: half the cores, so proxying always keeps the rest.
fn hash_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// Sign-ins that may wait for a hashing thread, per thread: at the OWASP minimum (≈ 25 ms a
/// hash) the last one waits under a second; beyond, a storm gets 429 instead of piling up
/// open connections.
const HASH_QUEUE_PER_THREAD: usize = 32;

impl App {
    /// The application state, and the event writer that must run beside it.
    pub async fn new(
        config: Config,
        clock: Arc<dyn Clock>,
    ) -> Result<(App, EventWriter), StartError> {
        let store = store::open(&config.store).await?;
        let metrics = Arc::new(Metrics::new());
        let (audit, events) =
            Audit::start(store.clone(), config.audit.file.as_ref(), metrics.clone())
                .map_err(|e| StartError::Runtime(e.to_string()))?;
        let sessions = Sessions::new(
            store.clone(),
            store.secret("remember_me").await?,
            audit.clone(),
            clock.clone(),
            config.session.idle_timeout,
            metrics.clone(),
        );
        let hasher = Hasher::new(
            config.passwords.argon2,
            hash_threads(),
            HASH_QUEUE_PER_THREAD * hash_threads(),
            metrics.password_hash_seconds.clone(),
        )?;
        let csrf_key = store.secret("login_csrf").await?;
        let app = App {
            csrf_key,
            config: ArcSwap::from_pointee(config),
            store,
            sessions,
            hasher,
            audit,
            metrics,
            clock,
            login_gates: crate::login::Gates::new(),
        };
        Ok((app, events))
    }
}

/// Runs the gateway (plus any `extra` services, e.g. the demo portal) until it is told to
/// stop. Never returns on success.
pub fn serve(config: Config, extra: Vec<Box<dyn ServiceWithDependents>>) -> Result<(), StartError> {
    for addr in config.listen.iter().chain([&config.admin_listen]) {
        std::net::TcpListener::bind(addr).map_err(|error| StartError::Listen {
            addr: addr.to_string(),
            error,
        })?;
    }
    let setup = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| StartError::Runtime(e.to_string()))?;
    let (app, events) = setup.block_on(App::new(config.clone(), Arc::new(SystemClock)))?;
    let app = Arc::new(app);
    setup
        .block_on(async { reload::claim_sighup() })
        .map_err(|e| StartError::Runtime(format!("cannot handle SIGHUP: {e}")))?;
    drop(setup);

    let mut conf = ServerConf {
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(5),
        ..ServerConf::default()
    };
    if let Some(dir) = store_dir(&config) {
        conf.pid_file = dir.join("portcullis.pid").display().to_string();
        conf.upgrade_sock = dir.join("portcullis_upgrade.sock").display().to_string();
    }
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let gateway =
        pingora::proxy::http_proxy(&server.configuration, proxy::Gateway::new(app.clone()));
    let mut proxy = Service::new(
        "portcullis".to_string(),
        connection::Guarded::new(gateway, app.clone()),
    );
    for addr in &config.listen {
        proxy.add_tcp(&addr.to_string());
    }
    let mut admin = Service::new(
        "portcullis admin".to_string(),
        HttpServer::new_app(admin::Admin::new(app.clone())),
    );
    admin.add_tcp(&config.admin_listen.to_string());

    server.add_service(proxy);
    server.add_service(admin);
    if let Some(path) = config.source.clone() {
        let reloader = reload::Reloader {
            app: app.clone(),
            path,
        };
        server.add_service(background_service("portcullis reload", reloader));
    }
    server.add_service(background_service(
        "portcullis housekeeping",
        Housekeeping { app: app.clone() },
    ));
    server.add_service(background_service("portcullis upkeep", Upkeep { app }));
    server.add_service(background_service(
        "portcullis events",
        Events(std::sync::Mutex::new(Some(events))),
    ));
    server.add_services(extra);
    tracing::info!(
        listen = ?config.listen,
        admin = %config.admin_listen,
        upstream = %config.upstream.addr,
        "portcullis is running"
    );
    server.run_forever();
}

fn store_dir(config: &Config) -> Option<std::path::PathBuf> {
    match &config.store {
        crate::config::StoreConfig::Sqlite { path } => path.parent().map(|p| p.to_path_buf()),
        crate::config::StoreConfig::Postgres { .. } => None,
    }
}

/// Runs the event writer on a runtime of its own.
struct Events(std::sync::Mutex<Option<EventWriter>>);

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
struct Upkeep {
    app: Arc<App>,
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

/// Deletes what can no longer matter, at start and every minute after, on a task of its own:
/// dead sessions, spent CAPTCHA challenges, forgotten throttle counters, revocations every
/// gateway has read, and events older than `audit.retention` (in slices with pauses between,
/// so that a first purge of a large log never holds the store for long).
struct Housekeeping {
    app: Arc<App>,
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
        let forgotten = crate::throttle::forgotten_before(now, &cfg.throttle);
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
    }

    async fn purge_events(&self) {
        let Some(retention) = self.app.config.load().audit.retention else {
            return;
        };
        let retention = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
        let before = self.app.clock.now().saturating_sub(retention);
        loop {
            match self.app.store.purge_events(before, EVENT_PURGE_SLICE).await {
                Ok(n) if n == u64::from(EVENT_PURGE_SLICE) => {
                    tokio::time::sleep(EVENT_PURGE_PAUSE).await;
                }
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot purge old events");
                    return;
                }
            }
        }
    }
}
