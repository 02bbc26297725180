//! A response the gateway writes itself (pages, redirects, refusals, JSON, pictures), as a
//! value: handlers return one and `gateway` turns it into bytes. `Debug` hides `Set-Cookie`
//! values, which carry session ids.

use bytes::Bytes;
use serde_json::json;

use crate::web::pages;

/// Headers of every reply of the gateway's own: its pages are never framed, cached, sniffed or
/// leaked through a referrer (a reset or invitation link carries its token), and run no script.
pub const PAGE_HEADERS: [(&str, &str); 5] = [
    ("Cache-Control", "no-store"),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
];

/// On every response over TLS, the gateway's and the portal's: browsers come back over HTTPS
/// only, for a year.
pub const HSTS: (&str, &str) = ("Strict-Transport-Security", "max-age=31536000");

#[derive(Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Bytes,
    pub headers: Vec<(&'static str, String)>,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| match k.eq_ignore_ascii_case("set-cookie") {
                true => (*k, v.split('=').next().unwrap_or("")),
                false => (*k, v.as_str()),
            })
            .collect();
        f.debug_struct("Reply")
            .field("status", &self.status)
            .field("content_type", &self.content_type)
            .field("headers", &headers)
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl Reply {
    pub fn html(status: u16, body: String) -> Reply {
        Reply {
            status,
            content_type: "text/html; charset=utf-8",
            body: body.into(),
            headers: Vec::new(),
        }
    }

    /// A page with a title and one sentence.
    pub fn page(status: u16, title: &str, message: &str) -> Reply {
        Reply::html(status, pages::message_page(title, message))
    }

    pub fn json(status: u16, value: serde_json::Value) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: value.to_string().into(),
            headers: Vec::new(),
        }
    }

    /// A CAPTCHA picture.
    pub fn png(body: Vec<u8>) -> Reply {
        Reply {
            status: 200,
            content_type: "image/png",
            body: body.into(),
            headers: Vec::new(),
        }
    }

    /// `303 See Other` (after a form post) or `302 Found` (a navigation).
    pub fn redirect(status: u16, location: &str) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: Bytes::new(),
            headers: vec![("Location", location.to_string())],
        }
    }

    /// A refusal as a page for browsers and as JSON `{"error": code}` for everything else.
    pub fn refusal(html: bool, status: u16, code: &str, title: &str, message: &str) -> Reply {
        if html {
            Reply::page(status, title, message)
        } else {
            Reply::json(status, json!({"error": code}))
        }
    }

    /// The store or the hashing pool failed: sign-in is unavailable for now.
    pub fn unavailable() -> Reply {
        Reply::page(
            503,
            "Service unavailable",
            "Sign-in is temporarily unavailable. Please try again in a minute.",
        )
    }

    pub fn cookie(mut self, set_cookie: String) -> Reply {
        self.headers.push(("Set-Cookie", set_cookie));
        self
    }

    pub fn cookies(mut self, set_cookies: impl IntoIterator<Item = String>) -> Reply {
        for c in set_cookies {
            self.headers.push(("Set-Cookie", c));
        }
        self
    }

    pub fn header(mut self, name: &'static str, value: String) -> Reply {
        self.headers.push((name, value));
        self
    }

    /// The value of a header of the reply (the first, for `Set-Cookie`).
    pub fn header_value(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every `Set-Cookie` of the reply.
    pub fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_a_cookie_value() {
        let r = Reply::redirect(303, "/").cookie("portcullis_session=SECRET; Path=/".into());
        let shown = format!("{r:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(shown.contains("portcullis_session"));
    }
}
