//! The admin listener: `/healthz`, `/readyz` and `/metrics`. It is a
//! separate listener, never the public one, and reads nothing from the request but its path.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use super::App;

pub struct Admin {
    app: Arc<App>,
}

impl Admin {
    pub fn new(app: Arc<App>) -> Admin {
        Admin { app }
    }

    /// `Ok` when the store answers and the upstream accepts a connection; otherwise which not.
    async fn readiness(&self) -> Result<(), NotReady> {
        let probe = Duration::from_secs(2);
        let silent = "no answer within 2s".to_string();
        match tokio::time::timeout(probe, self.app.store.ping()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(NotReady::Store(e.to_string())),
            Err(_) => return Err(NotReady::Store(silent)),
        }
        let upstream = self.app.config.load().upstream.addr;
        let why = match tokio::time::timeout(probe, tokio::net::TcpStream::connect(upstream)).await
        {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => e.to_string(),
            Err(_) => silent,
        };
        Err(NotReady::Upstream { upstream, why })
    }
}

/// What `/readyz` reports missing.
#[derive(Debug, thiserror::Error)]
enum NotReady {
    #[error("store: {0}")]
    Store(String),
    #[error("upstream {upstream}: {why}")]
    Upstream {
        upstream: std::net::SocketAddr,
        why: String,
    },
}

fn text(status: u16, body: String) -> Response<Vec<u8>> {
    reply(status, "text/plain; charset=utf-8", body)
}

fn reply(status: u16, content_type: &str, body: String) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("Content-Type", content_type)
        .header("Content-Length", body.len())
        .header("Cache-Control", "no-store")
        .body(body.into_bytes())
        .unwrap_or_default()
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        match session.req_header().uri.path() {
            "/healthz" => text(200, "ok\n".into()),
            "/readyz" => match self.readiness().await {
                Ok(()) => text(200, "ready\n".into()),
                Err(reason) => text(503, format!("not ready: {reason}\n")),
            },
            "/metrics" => {
                // The gauge is read from the store at scrape time, so it counts sessions
                // started on every gateway of a cluster, once.
                let cfg = self.app.config.load();
                match self.app.sessions.count_live(&cfg.session).await {
                    Ok(n) => self.app.metrics.set_sessions_active(n),
                    Err(e) => tracing::warn!(error = %e, "cannot count sessions for /metrics"),
                }
                reply(
                    200,
                    crate::service::metrics::CONTENT_TYPE,
                    self.app.metrics.render(),
                )
            }
            _ => text(404, "not found\n".into()),
        }
    }
}
