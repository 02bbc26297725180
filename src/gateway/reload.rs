//! Configuration reloads on SIGHUP, and with `watch: true` on a change of the file or of the
//! certificate or key file: a valid file, with a valid certificate pair when `tls` is set,
//! replaces the whole config and the served certificate atomically; anything invalid is
//! refused, logged and counted, and the running config and certificate stay. Listeners and
//! the store are read only at start.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{SignalKind, signal};

use super::App;
use super::tls::Pair;
use crate::config::Config;
use crate::core::event::{Event, EventKind};

/// Makes SIGHUP harmless from the start (its default action ends the process); the reloader
/// listens for it once the server runs.
pub fn claim_sighup() -> std::io::Result<()> {
    signal(SignalKind::hangup()).map(drop)
}

/// Settings that a reload cannot change, by name, when they differ.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if old.listen != new.listen {
        keys.push("listen");
    }
    if old.admin_listen != new.admin_listen {
        keys.push("admin_listen");
    }
    if old.store != new.store {
        keys.push("store");
    }
    if old.audit.file != new.audit.file {
        keys.push("audit.file");
    }
    if old.session.cache_capacity != new.session.cache_capacity {
        keys.push("session.cache_capacity");
    }
    if old.upstream.ca != new.upstream.ca {
        keys.push("upstream_ca");
    }
    if old.redirect_http != new.redirect_http {
        keys.push("redirect_http");
    }
    keys
}

/// The config at `path` and, for TLS listeners, the certificate pair it names: both valid, or
/// every problem as text.
fn read(app: &App, path: &Path) -> Result<(Config, Option<Pair>), Vec<String>> {
    let new =
        Config::load(path).map_err(|e| e.0.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    // The listeners are TLS or not from the start; cookies (Secure, `__Host-`) follow `tls`,
    // so a file that turns it on or off would set cookies the listeners cannot carry.
    let pair = match (&app.certificate, &new.tls) {
        (Some(_), Some(tls)) => Some(Pair::load(tls).map_err(|e| vec![e.to_string()])?),
        (None, None) => None,
        (Some(_), None) | (None, Some(_)) => {
            return Err(vec![
                "tls: turning TLS on or off takes a restart; the running configuration stays"
                    .into(),
            ]);
        }
    };
    Ok((new, pair))
}

/// Reads `path` and swaps it in if valid. Returns whether it was.
pub fn reload(app: &App, path: &Path, why: &str) -> bool {
    let now = app.sessions.now();
    match read(app, path) {
        Ok((new, pair)) => {
            let old = app.config.load();
            let fixed = needs_restart(&old, &new);
            if !fixed.is_empty() {
                tracing::warn!(keys = ?fixed, "these settings changed but take effect only after a restart");
            }
            app.config.store(Arc::new(new));
            if let (Some(certificate), Some(pair)) = (&app.certificate, pair) {
                super::tls::warn_doubts(&app.config.load(), &pair, now);
                app.metrics.certificate_expiry(pair.not_after);
                certificate.replace(pair);
            }
            app.metrics.config_reload(true);
            tracing::info!(file = %path.display(), trigger = why, "configuration reloaded");
            app.audit
                .record(Event::new(EventKind::ConfigReloaded, now).detail(why));
            true
        }
        Err(problems) => {
            for problem in &problems {
                tracing::error!(%problem, "configuration refused; the running one stays");
            }
            app.metrics.config_reload(false);
            let first = problems.first().cloned().unwrap_or_default();
            app.audit
                .record(Event::new(EventKind::ConfigRejected, now).detail(&first));
            false
        }
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// What `watch: true` looks at: the config file and, with `tls`, the certificate and key
/// files (a renewal written in place is a change too).
fn stamps(app: &App, path: &Path) -> Vec<Option<SystemTime>> {
    let config = app.config.load();
    let tls = config
        .tls
        .iter()
        .flat_map(|t| [t.cert.as_path(), t.key.as_path()]);
    std::iter::once(path).chain(tls).map(modified).collect()
}

pub struct Reloader {
    pub app: Arc<App>,
    pub path: PathBuf,
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP; reloads are off");
                return;
            }
        };
        let mut seen = stamps(&self.app, &self.path);
        let mut poll = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = hup.recv() => {
                    // SIGHUP is also what log rotation sends: let go of a rotated event file.
                    self.app.audit.reopen_file();
                    reload(&self.app, &self.path, "SIGHUP");
                    seen = stamps(&self.app, &self.path);
                }
                _ = poll.tick() => {
                    let now = stamps(&self.app, &self.path);
                    if self.app.config.load().watch && now != seen {
                        reload(&self.app, &self.path, "file changed");
                        seen = stamps(&self.app, &self.path);
                    }
                }
            }
        }
    }
}
