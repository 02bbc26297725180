//! A response the gateway writes itself (login page, redirects, refusals, JSON), as a value;
//! `write` is the one place that turns it into bytes on a Pingora session.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

use crate::pages;

/// Headers that keep the gateway's own pages from being framed, cached or leaking referrers.
const PAGE_HEADERS: [(&str, &str); 5] = [
    ("Cache-Control", "no-store"),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
];

#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Bytes,
    pub headers: Vec<(&'static str, String)>,
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
}

pub async fn write(session: &mut Session, reply: Reply) -> Result<()> {
    let mut resp = ResponseHeader::build(reply.status, Some(reply.headers.len() + 8))?;
    resp.insert_header("Content-Type", reply.content_type)?;
    resp.insert_header("Content-Length", reply.body.len().to_string())?;
    for (name, value) in PAGE_HEADERS {
        resp.insert_header(name, value)?;
    }
    for (name, value) in reply.headers {
        resp.append_header(name, value)?;
    }
    let head_only = session.req_header().method == http::Method::HEAD || reply.body.is_empty();
    session
        .write_response_header(Box::new(resp), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(reply.body), true).await?;
    }
    Ok(())
}
