//! The Pingora glue: builds the application state from the services below, and wires the
//! proxy phases, the admin listener, the connection guard and the background tasks into one
//! server. Decisions are not made here; the gateway only carries them out.

mod admin;
mod connection;
mod prefixed;
mod proxy;
mod redirect;
mod reload;
mod tasks;
pub mod tls;
mod upgrade;
mod write;

use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::apps::http_app::HttpServer;
use pingora::server::Server;
use pingora::server::configuration::ServerConf;
use pingora::services::ServiceWithDependents;
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::config::Config;
use crate::core::time::{Clock, SystemClock};
use crate::service::account::Account;
use crate::service::audit::{Audit, EventWriter};
use crate::service::hasher::{HashError, Hasher};
use crate::service::metrics::Metrics;
use crate::service::recovery::{Keys, Recovery};
use crate::service::sessions::Sessions;
use crate::service::signin::SignIn;
use crate::service::two_factor::{self, KeyError, TwoFactor};
use crate::store::{self, Store, StoreError};
use crate::web::handlers::Site;

/// The running gateway's state: the configuration in force (swapped whole on reload), the
/// store, and the services, which the web layer reaches through `site`.
pub struct App {
    pub config: ArcSwap<Config>,
    pub store: Arc<dyn Store>,
    pub sessions: Arc<Sessions>,
    pub audit: Audit,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    pub site: Site,
    /// What the TLS listeners serve, when `tls` is set; replaced on reload.
    pub certificate: Option<Arc<tls::Certificate>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hasher(#[from] HashError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("cannot listen on {addr}: {error}")]
    Listen { addr: String, error: std::io::Error },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
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
        let pair = tls::check(&config)?;
        let store = store::open(&config.store).await?;
        let metrics = Arc::new(Metrics::new());
        if let Some(pair) = &pair {
            metrics.certificate_expiry(pair.not_after);
            tls::warn_doubts(&config, pair, clock.now());
        }
        let (audit, events) =
            Audit::start(store.clone(), config.audit.file.as_ref(), metrics.clone())
                .map_err(|e| StartError::Runtime(e.to_string()))?;
        let sessions = Arc::new(
            Sessions::new(
                store.clone(),
                store.secret("remember_me").await?,
                audit.clone(),
                clock.clone(),
                config.session.idle_timeout,
                metrics.clone(),
            )
            .with_cache_capacity(config.session.cache_capacity, config.session.idle_timeout),
        );
        let hasher = Arc::new(Hasher::new(
            config.passwords.argon2,
            hash_threads(),
            HASH_QUEUE_PER_THREAD * hash_threads(),
            metrics.password_hash_seconds.clone(),
        )?);
        let key = two_factor::load_key(&config.two_factor.secret_key_file, store.as_ref()).await?;
        // From the key file, not the store: reading the database must not let anyone make a
        // pending sign-in (one that stands for a right password).
        let pending_key = key.digest(b"pending sign-in key", b"");
        let keys = Keys {
            sms_code: key.digest(b"sms code key", b""),
            email_change: key.digest(b"email change key", b""),
            phone_change: key.digest(b"phone change key", b""),
        };
        let two_factor = Arc::new(TwoFactor::new(
            store.clone(),
            key,
            audit.clone(),
            metrics.clone(),
            clock.clone(),
        ));
        let signin = Arc::new(SignIn::new(
            store.clone(),
            hasher,
            two_factor.clone(),
            sessions.clone(),
            audit.clone(),
            metrics.clone(),
            clock.clone(),
        ));
        let recovery = Arc::new(Recovery::new(
            store.clone(),
            signin.clone(),
            audit.clone(),
            metrics.clone(),
            clock.clone(),
            keys,
        ));
        let account = Arc::new(Account::new(
            store.clone(),
            signin.clone(),
            two_factor.clone(),
            sessions.clone(),
            recovery.clone(),
            audit.clone(),
            clock.clone(),
        ));
        let site = Site {
            sessions: sessions.clone(),
            signin,
            captchas: store.clone(),
            audit: audit.clone(),
            metrics: metrics.clone(),
            clock: clock.clone(),
            csrf_key: store.secret("login_csrf").await?,
            pending_key,
            two_factor,
            recovery,
            account,
        };
        let app = App {
            config: ArcSwap::from_pointee(config),
            store,
            sessions,
            audit,
            metrics,
            clock,
            site,
            certificate: pair.map(tls::Certificate::new),
        };
        Ok((app, events))
    }
}

/// How `serve` takes its listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listeners {
    /// Binds them.
    Bind,
    /// Takes them over from the running gateway (`serve --upgrade`, docs: upgrades).
    Upgrade,
}

/// Runs the gateway (plus any `extra` services, e.g. the demo portal) until it is told to
/// stop. Never returns on success.
pub fn serve(
    config: Config,
    extra: Vec<Box<dyn ServiceWithDependents>>,
    listeners: Listeners,
) -> Result<(), StartError> {
    if listeners == Listeners::Bind {
        let plain = config.redirect_http.iter();
        for addr in config
            .listen
            .iter()
            .chain([&config.admin_listen])
            .chain(plain)
        {
            std::net::TcpListener::bind(addr).map_err(|error| StartError::Listen {
                addr: addr.to_string(),
                error,
            })?;
        }
    }
    let setup = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| StartError::Runtime(e.to_string()))?;
    let (app, events) = setup.block_on(App::new(config.clone(), Arc::new(SystemClock)))?;
    let app = Arc::new(app);
    setup
        .block_on(async { reload::claim_sighup().and_then(|()| upgrade::claim_sigusr2()) })
        .map_err(|e| StartError::Runtime(format!("cannot handle SIGHUP or SIGUSR2: {e}")))?;
    drop(setup);

    let upgrade_socket = upgrade::socket_path(store_dir(&config).as_deref());
    if upgrade_socket.is_none() && listeners == Listeners::Upgrade {
        return Err(StartError::Runtime(
            "cannot take the listeners over: no private directory to meet the running gateway in"
                .into(),
        ));
    }
    let conf = ServerConf {
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(5),
        // Without a private place, a path that cannot exist: a SIGQUIT then hands nothing to
        // anyone (Pingora's default is a shared /tmp path).
        upgrade_sock: upgrade_socket.as_ref().map_or_else(
            || "/nonexistent/portcullis_upgrade.sock".into(),
            |p| p.display().to_string(),
        ),
        // Read once, here: a change of `upstream_ca` takes a restart (docs: TLS).
        ca_file: config.upstream.ca.as_ref().map(|p| p.display().to_string()),
        ..ServerConf::default()
    };
    let opt = pingora::server::configuration::Opt {
        upgrade: listeners == Listeners::Upgrade,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
    server.bootstrap();

    server.add_service(public_service(&server, &app, &config)?);
    let mut admin = Service::new(
        "portcullis admin".to_string(),
        HttpServer::new_app(admin::Admin::new(app.clone())),
    );
    admin.add_tcp(&config.admin_listen.to_string());
    server.add_service(admin);
    if let Some(addr) = config.redirect_http {
        let mut plain = Service::new(
            "portcullis redirect".to_string(),
            redirect::Redirect::new(app.clone()),
        );
        plain.add_tcp(&addr.to_string());
        server.add_service(plain);
    }
    add_tasks(&mut server, &app, &config, events, upgrade_socket);
    server.add_services(extra);
    tracing::info!(
        listen = ?config.listen,
        tls = config.tls.is_some(),
        admin = %config.admin_listen,
        upstream = %config.upstream.addr,
        "portcullis is running"
    );
    server.run_forever();
}

/// The public listeners: the proxy behind the connection guard, which makes the TLS
/// handshakes itself when `tls` is set.
fn public_service(
    server: &Server,
    app: &Arc<App>,
    config: &Config,
) -> Result<Service<connection::Guarded>, StartError> {
    let mut gateway =
        pingora::proxy::http_proxy(&server.configuration, proxy::Gateway::new(app.clone()));
    // An HTTP/2 connection with no request in flight is closed like an idle HTTP/1 one (read
    // at start: a reload does not change it for HTTP/2).
    let mut options = pingora::apps::HttpServerOptions::default();
    options.h2_idle_timeout = Some(config.timeouts.keepalive);
    gateway.server_options = Some(options);
    let acceptor = match &app.certificate {
        Some(certificate) => Some(
            certificate
                .acceptor()
                .map_err(|e| StartError::Runtime(format!("TLS settings: {e}")))?,
        ),
        None => None,
    };
    let mut proxy = Service::new(
        "portcullis".to_string(),
        connection::Guarded::new(gateway, app.clone(), acceptor),
    );
    for addr in &config.listen {
        proxy.add_tcp(&addr.to_string());
    }
    Ok(proxy)
}

fn add_tasks(
    server: &mut Server,
    app: &Arc<App>,
    config: &Config,
    events: EventWriter,
    upgrade_socket: Option<std::path::PathBuf>,
) {
    if let Some(path) = config.source.clone() {
        let reloader = reload::Reloader {
            app: app.clone(),
            path,
        };
        server.add_service(background_service("portcullis reload", reloader));
    }
    server.add_service(background_service(
        "portcullis housekeeping",
        tasks::Housekeeping { app: app.clone() },
    ));
    server.add_service(background_service(
        "portcullis outbox",
        tasks::Outbox { app: app.clone() },
    ));
    server.add_service(background_service(
        "portcullis upkeep",
        tasks::Upkeep { app: app.clone() },
    ));
    server.add_service(background_service(
        "portcullis events",
        tasks::Events(std::sync::Mutex::new(Some(events))),
    ));
    server.add_service(background_service(
        "portcullis upgrade",
        upgrade::Upgrader {
            socket: upgrade_socket,
        },
    ));
}

fn store_dir(config: &Config) -> Option<std::path::PathBuf> {
    match &config.store {
        crate::config::StoreConfig::Sqlite { path } => path.parent().map(|p| p.to_path_buf()),
        crate::config::StoreConfig::Postgres { .. } => None,
    }
}
