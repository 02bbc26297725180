//! The plain listener of `redirect_http` (docs: TLS): every request, whatever it asks, is
//! answered with a redirect to the same path under `public_url`, then the connection closes.
//! It reads nothing but the request head (within `timeouts.request_header`), sets no cookie
//! and never reaches the portal.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::ServerApp;
use pingora::http::ResponseHeader;
use pingora::protocols::Stream;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use tokio::time::Instant;

use super::App;
use super::connection::{Head, read_head};

pub struct Redirect {
    app: Arc<App>,
}

impl Redirect {
    pub fn new(app: Arc<App>) -> Redirect {
        Redirect { app }
    }
}

/// `https://` + the public authority + the request's path and query (`/` for `*`).
fn location(authority: &str, uri: &http::Uri) -> String {
    let path = uri
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| p.starts_with('/'))
        .unwrap_or("/");
    format!("https://{authority}{path}")
}

impl Redirect {
    /// The redirect for one request head.
    fn answer(
        &self,
        head: &pingora::http::RequestHeader,
    ) -> pingora::Result<(ResponseHeader, String)> {
        // Only these two keep their method through a 301 in every client; anything else
        // gets 308, which keeps it.
        let status = match head.method {
            http::Method::GET | http::Method::HEAD => 301,
            _ => 308,
        };
        let authority = self
            .app
            .config
            .load()
            .public_url
            .as_ref()
            .map(|u| u.authority.clone())
            .unwrap_or_default();
        let to = location(&authority, &head.uri);
        let body = format!("{to}\n");
        let mut resp = ResponseHeader::build(status, Some(5))?;
        resp.insert_header("Location", &to)?;
        resp.insert_header("Content-Type", "text/plain; charset=utf-8")?;
        resp.insert_header("Cache-Control", "no-store")?;
        resp.insert_header("Content-Length", body.len().to_string())?;
        resp.insert_header("Connection", "close")?;
        Ok((resp, body))
    }
}

/// One request per connection, its head read under `timeouts.request_header` like the public
/// listener's (`connection::read_head`); answered, then closed. A body is never read.
#[async_trait]
impl ServerApp for Redirect {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let limits = self.app.config.load().timeouts;
        let mut buf = BytesMut::with_capacity(1024);
        let first_by = Some(Instant::now() + limits.request_header);
        let head = read_head(&mut stream, &mut buf, first_by, limits, shutdown).await;
        if head != Head::Ready {
            return None;
        }
        let mut session = ServerSession::new_http1(stream);
        session.set_pipelined_prefix(buf);
        session.set_keepalive(None);
        session.set_write_timeout(Some(limits.send));
        if !matches!(session.read_request().await, Ok(true)) {
            return None;
        }
        let written = async {
            let (resp, body) = self.answer(session.req_header())?;
            let head_only = session.req_header().method == http::Method::HEAD;
            session.write_response_header(Box::new(resp)).await?;
            if !head_only {
                session.write_response_body(body.into(), true).await?;
            }
            session.finish_body().await
        };
        if let Err(e) = written.await {
            tracing::debug!(error = %e, "could not send a redirect");
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_goes_to_the_same_path_under_public_url() {
        let cases = [
            ("/", "https://p.example/"),
            ("/a/b?x=1&y=%20", "https://p.example/a/b?x=1&y=%20"),
            ("http://evil.example/steal?x", "https://p.example/steal?x"),
            ("//evil.example/x", "https://p.example//evil.example/x"),
            ("*", "https://p.example/"),
        ];
        for (uri, want) in cases {
            let uri: http::Uri = uri.parse().unwrap();
            assert_eq!(location("p.example", &uri), want, "{uri}");
        }
    }
}
