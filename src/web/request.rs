//! The facts of a request as the gateway's decisions and handlers use them, read from the
//! `http` crate's request head (Pingora's `RequestHeader` is one): who the client is, after
//! trusted-proxy resolution, its cookies, the few headers that matter, and for a request to the
//! gateway itself its body. Nothing here reads a socket.

use std::net::IpAddr;

use http::header::{self, AsHeaderName};
use http::request::Parts;
use http::{HeaderValue, Method};

use crate::config::{Config, NetworkConfig};
use crate::core::addr::{ClientAddr, PeerAddr};
use crate::core::identity::Client;
use crate::policy::network::{self, Forwarding};
use crate::policy::origin::{self, Origin};
use crate::policy::route;
use crate::web::cookies;

/// The facts about a request that every decision uses.
pub struct Facts {
    pub addr: ClientAddr,
    pub client: Client,
    /// The `Cookie` headers (shared with the request, not copied).
    cookies: Vec<HeaderValue>,
    /// A body comes without a header saying so: an HTTP/2 request whose HEADERS frame does
    /// not end the stream (the connection knows; `of` cannot, so the gateway sets it).
    pub unannounced_body: bool,
}

impl Facts {
    /// `peer`: the TCP peer's address (`0.0.0.0` when the socket has none).
    pub fn of(head: &Parts, peer: IpAddr, network: &NetworkConfig) -> Facts {
        let values: Vec<&[u8]> = head
            .headers
            .get_all(network.forwarded_header.name())
            .iter()
            .map(HeaderValue::as_bytes)
            .collect();
        let addr = network::resolve(
            PeerAddr(peer),
            &network.trusted_proxies,
            Forwarding {
                header: network.forwarded_header,
                values: &values,
            },
        );
        let user_agent = header_str(head, header::USER_AGENT)
            .unwrap_or_default()
            .to_string();
        Facts {
            addr,
            client: Client {
                ip: addr.text(),
                user_agent,
            },
            cookies: head
                .headers
                .get_all(header::COOKIE)
                .iter()
                .cloned()
                .collect(),
            unannounced_body: false,
        }
    }

    pub fn cookie(&self, name: &str) -> Option<&str> {
        cookies::find(self.cookies.iter().filter_map(|v| v.to_str().ok()), name)
    }
}

/// A header's value as text, if it is there and readable.
pub fn header_str(head: &Parts, name: impl AsHeaderName) -> Option<&str> {
    head.headers.get(name).and_then(|v| v.to_str().ok())
}

/// A request to one of the gateway's own endpoints, with its body (read whole, within limits,
/// by the gateway before the handler runs).
pub struct Request<'a> {
    pub head: &'a Parts,
    pub facts: &'a Facts,
    pub body: &'a [u8],
}

impl Request<'_> {
    pub fn header(&self, name: impl AsHeaderName) -> Option<&str> {
        header_str(self.head, name)
    }

    pub fn method(&self) -> &Method {
        &self.head.method
    }

    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.facts.cookie(name)
    }

    /// A parameter of the query string, decoded.
    pub fn query(&self, key: &str) -> Option<String> {
        let query = self.head.uri.query()?;
        form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }

    /// A field of a form body, decoded; empty when absent.
    pub fn field(&self, key: &str) -> String {
        form_urlencoded::parse(self.body)
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    }

    /// A browser navigation: the client says it accepts HTML.
    pub fn accepts_html(&self) -> bool {
        route::accepts_html(self.header(header::ACCEPT))
    }

    /// `Content-Type: application/json`, which a cross-site form cannot send without a CORS
    /// preflight.
    pub fn is_json(&self) -> bool {
        self.header(header::CONTENT_TYPE).is_some_and(|c| {
            c.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        })
    }

    /// Where the browser says the request comes from (`policy::origin`).
    pub fn origin(&self, cfg: &Config) -> Origin {
        let authority = cfg.public_url.as_ref().map(|u| u.authority.as_str());
        // HTTP/2 names the host in `:authority`, which Pingora keeps in the URI.
        let host = self
            .header(header::HOST)
            .or_else(|| self.head.uri.authority().map(|a| a.as_str()));
        let own = origin::own(cfg.secure_cookies(), authority, host);
        origin::judge(
            self.header("sec-fetch-site"),
            self.header(header::ORIGIN),
            &own,
        )
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A request head for tests: `GET /` unless told otherwise.
    pub fn head(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn facts_believe_only_the_configured_header_of_trusted_proxies() {
        let cfg = Config::parse(
            "upstream: http://127.0.0.1:1\nnetwork:\n  trusted_proxies: [10.0.0.1]\n",
            "t",
            std::path::Path::new("."),
        )
        .unwrap();
        let h = head(
            "GET",
            "/",
            &[
                ("X-Forwarded-For", "203.0.113.9"),
                ("Cookie", "a=1; portcullis_session=x"),
                ("User-Agent", "curl/8"),
            ],
        );
        let via_proxy = Facts::of(&h, "10.0.0.1".parse().unwrap(), &cfg.network);
        assert_eq!(via_proxy.client.ip, "203.0.113.9");
        assert_eq!(via_proxy.client.user_agent, "curl/8");
        assert_eq!(via_proxy.cookie("portcullis_session"), Some("x"));
        let direct = Facts::of(&h, "198.51.100.1".parse().unwrap(), &cfg.network);
        assert_eq!(direct.addr.to_string(), "198.51.100.1");
    }
}
