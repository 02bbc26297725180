//! The plain listener of `redirect_http` (docs: TLS): every request, whatever it asks, is
//! answered with a redirect to the same path under `public_url`. It reads nothing else, sets
//! no cookie and never reaches the portal.

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use super::App;

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

#[async_trait]
impl ServeHttp for Redirect {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let head = session.req_header();
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
        Response::builder()
            .status(status)
            .header("Location", &to)
            .header("Content-Type", "text/plain; charset=utf-8")
            .header("Cache-Control", "no-store")
            .header("Content-Length", (to.len() + 1).to_string())
            .body(format!("{to}\n").into_bytes())
            .unwrap_or_default()
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
