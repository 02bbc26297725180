//! The proxy phases: route the request, resolve its session, carry out the decision, and on the
//! way upstream strip what clients must not send (identity headers, the gateway's cookies) and
//! add what the portal needs (identity, X-Forwarded-*).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, header};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::HttpModules;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};

use super::App;
use super::write;
use crate::config::{Config, CookieNames, IdentityHeaders};
use crate::core::identity::Identity;
use crate::policy::headers;
use crate::web::cookies;
use crate::web::gate::{self, Verdict};
use crate::web::handlers::{self, takes_body};
use crate::web::reply::{HSTS, Reply};
use crate::web::request::{Facts, Request, header_str};

pub struct Gateway {
    app: Arc<App>,
}

impl Gateway {
    pub fn new(app: Arc<App>) -> Gateway {
        Gateway { app }
    }

    /// One of the gateway's own endpoints: the body read first (for a `POST`), then the
    /// handler.
    async fn local(
        &self,
        session: &mut Session,
        cfg: &Config,
        endpoint: crate::policy::route::Endpoint,
        facts: &Facts,
    ) -> Reply {
        let body = match takes_body(&session.req_header().method) {
            true => match write::read_body(session, &cfg.timeouts).await {
                Ok(body) => body,
                Err(why) => return handlers::body_refused(&endpoint, why),
            },
            false => Bytes::new(),
        };
        let req = Request {
            head: session.req_header(),
            facts,
            body: &body,
        };
        handlers::handle(&self.app.site, cfg, endpoint, &req).await
    }
}

/// Per-request state carried between phases.
#[derive(Default)]
pub struct Ctx {
    identity: Option<Arc<Identity>>,
    /// `Set-Cookie` values to add to the upstream's response (a silent remember-me renewal).
    set_cookies: Vec<String>,
    /// The client's address as text, for the address headers sent upstream.
    client_ip: String,
    /// When the request went upstream, for `portcullis_upstream_seconds`.
    sent_upstream: Option<std::time::Instant>,
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    /// None: the gateway never compresses, and Pingora's default, a disabled compression
    /// module, would still be set up and run for every request.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let cfg = self.app.config.load_full();
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
        let mut facts = Facts::of(session.req_header(), peer, &cfg.network);
        let http2 = session.req_header().version == http::Version::HTTP_2;
        // HTTP/2 may send DATA frames with no content-length: a body all the same.
        facts.unannounced_body = http2 && !session.is_body_empty();
        let verdict = gate::decide(&self.app.site, &cfg, session.req_header(), &facts).await;
        let reply = match verdict {
            Verdict::Forward {
                identity,
                set_cookies,
            } => {
                ctx.identity = identity;
                ctx.set_cookies = set_cookies;
                ctx.client_ip = facts.client.ip;
                return Ok(false);
            }
            Verdict::Reply(reply) => reply,
            Verdict::Close(reply) => {
                // Framing the portal might read differently: answer, and never read on.
                session.set_keepalive(None);
                reply
            }
            Verdict::Local(endpoint) => self.local(session, &cfg, endpoint, &facts).await,
        };
        write::write(session, reply).await?;
        // An HTTP/2 client may still be sending the body of a request answered without it. Ending
        // the stream now would reset it (RST_STREAM with NO_ERROR, as RFC 9113 §8.1 allows), which
        // some clients report as a failure although the answer came whole (curl 7.88, Debian 12's:
        // curl/curl#22984); so what is left is read and dropped first, within `request_body`.
        if http2 {
            let _ =
                tokio::time::timeout(cfg.timeouts.request_body, session.drain_request_body()).await;
        }
        Ok(true)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let cfg = self.app.config.load();
        let up = &cfg.upstream;
        let mut peer = HttpPeer::new(up.addr, up.tls, up.sni.clone());
        peer.options.connection_timeout = Some(std::time::Duration::from_secs(5));
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let cfg = self.app.config.load();
        strip_untrusted(upstream, &cfg.identity_headers);
        if let Some(identity) = &ctx.identity {
            set_identity(upstream, &cfg.identity_headers, identity)?;
        }
        strip_gateway_cookies(upstream, &cfg.cookies)?;
        let host = forwarded_host(&cfg, session.req_header());
        // Cloned, not taken: Pingora calls this again when it retries on a new connection.
        forwarded(upstream, ctx.client_ip.clone(), cfg.secure_cookies(), host)?;
        ctx.sent_upstream = Some(std::time::Instant::now());
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(sent) = ctx.sent_upstream.take() {
            self.app.metrics.upstream(sent.elapsed());
        }
        // The portal's own policy stands when it sends one (a longer max-age, preload).
        if write::over_tls(session) && !response.headers.contains_key(HSTS.0) {
            response.insert_header(HSTS.0, HSTS.1)?;
        }
        for c in ctx.set_cookies.drain(..) {
            response.append_header("Set-Cookie", c)?;
        }
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, _ctx: &mut Ctx) -> FailToProxy {
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        if code == 502 {
            tracing::warn!(error = %e, "the portal did not answer");
            let page = Reply::page(
                502,
                "The portal is not responding",
                "The gateway could not reach the portal. Please try again in a few moments.",
            );
            if let Err(err) = write::write(session, page).await {
                tracing::debug!(error = %err, "could not send the 502 page");
            }
        } else if code > 0 {
            let mut resp = ResponseHeader::build(code, Some(3))
                .unwrap_or_else(|_| ResponseHeader::build(500, None).expect("a fixed status"));
            let _ = resp.insert_header("Content-Length", "0");
            let _ = resp.insert_header("Connection", "close");
            if write::over_tls(session) {
                let _ = resp.insert_header(HSTS.0, HSTS.1);
            }
            session.set_keepalive(None);
            let _ = session.write_response_header(Box::new(resp), true).await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }
}

/// Removes every client-sent identity header (in every spelling, as CGI-style servers read
/// `X_Remote_User` as `X-Remote-User`) and every header that claims an address, a host or a
/// rewritten URL (`headers::is_forgeable`): the gateway sets its own afterwards.
fn strip_untrusted(req: &mut RequestHeader, identity: &IdentityHeaders) {
    let doomed = |k: &HeaderName| {
        headers::is_forgeable(k.as_str())
            || identity
                .all()
                .iter()
                .any(|h| headers::same_cgi_name(h.as_str(), k.as_str()))
    };
    // Most requests carry none: nothing to collect then.
    if !req.headers.keys().any(doomed) {
        return;
    }
    let doomed: Vec<HeaderName> = req.headers.keys().filter(|k| doomed(k)).cloned().collect();
    for name in doomed {
        req.remove_header(&name);
    }
}

/// The host the portal is told was asked for: `public_url`'s when configured, else the
/// request's own (already checked by `bad_framing`), else none.
fn forwarded_host<'a>(cfg: &'a Config, req: &'a RequestHeader) -> Option<&'a str> {
    if let Some(url) = &cfg.public_url {
        return Some(&url.authority);
    }
    let host = header_str(req, header::HOST).or_else(|| req.uri.authority().map(|a| a.as_str()));
    host.filter(|h| crate::core::addr::valid_host(h))
}

fn set_identity(req: &mut RequestHeader, headers: &IdentityHeaders, id: &Identity) -> Result<()> {
    let values = [
        (&headers.user, id.login.as_str()),
        (&headers.email, id.email.as_str()),
        (&headers.name, id.name.as_str()),
        (&headers.groups, &id.groups.join(",")),
    ];
    for (name, value) in values {
        let value = HeaderValue::from_str(value).map_err(|_| {
            Error::explain(
                ErrorType::InternalError,
                "identity is not a valid header value",
            )
        })?;
        req.insert_header(name.clone(), value)?;
    }
    Ok(())
}

/// Every `Cookie` header is rewritten, readable as text or not: the gateway's cookies (the
/// session id above all) must never reach the portal.
fn strip_gateway_cookies(req: &mut RequestHeader, names: &CookieNames) -> Result<()> {
    let mut values = req.headers.get_all(header::COOKIE).iter();
    let kept = match (values.next(), values.next()) {
        (None, _) => return Ok(()),
        (Some(one), None) => cookies::without(one.as_bytes(), &names.all()),
        (Some(_), Some(_)) => {
            let all: Vec<&[u8]> = req
                .headers
                .get_all(header::COOKIE)
                .iter()
                .map(|v| v.as_bytes())
                .collect();
            cookies::without(&all.join(&b"; "[..]), &names.all())
        }
    };
    match kept {
        // Replaces every `Cookie` header in place: cheaper than removing them and adding one.
        Some(kept) => {
            let value = HeaderValue::from_maybe_shared(Bytes::from(kept)).map_err(|_| {
                Error::explain(ErrorType::InvalidHTTPHeader, "unreadable Cookie header")
            })?;
            req.insert_header("Cookie", value)?;
        }
        None => {
            req.remove_header(&header::COOKIE);
        }
    }
    Ok(())
}

/// The address headers the portal receives, all the gateway's own truth (every client-sent
/// copy was removed by `strip_untrusted`): the resolved client, the scheme and the host.
fn forwarded(
    req: &mut RequestHeader,
    client: String,
    https: bool,
    host: Option<&str>,
) -> Result<()> {
    let proto = if https { "https" } else { "http" };
    let mut rfc7239 = String::with_capacity(client.len() + host.map_or(0, str::len) + 32);
    rfc7239.push_str("for=");
    if client.contains(':') {
        rfc7239.push_str("\"[");
        rfc7239.push_str(&client);
        rfc7239.push_str("]\"");
    } else {
        rfc7239.push_str(&client);
    }
    rfc7239.push_str(";proto=");
    rfc7239.push_str(proto);
    if let Some(h) = host {
        rfc7239.push_str(";host=\"");
        rfc7239.push_str(h);
        rfc7239.push('"');
        req.insert_header("X-Forwarded-Host", h)?;
    }
    // One copy of the address for both headers.
    let client = HeaderValue::from_maybe_shared(Bytes::from(client))
        .map_err(|_| Error::explain(ErrorType::InternalError, "unreadable client address"))?;
    req.insert_header("X-Forwarded-For", client.clone())?;
    req.insert_header("X-Real-IP", client)?;
    req.insert_header("X-Forwarded-Proto", HeaderValue::from_static(proto))?;
    req.insert_header("Forwarded", rfc7239)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers() -> IdentityHeaders {
        IdentityHeaders {
            user: HeaderName::from_static("x-remote-user"),
            email: HeaderName::from_static("x-remote-email"),
            name: HeaderName::from_static("x-remote-name"),
            groups: HeaderName::from_static("x-remote-groups"),
        }
    }

    #[test]
    fn forged_identity_headers_are_removed_in_every_spelling() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        for name in [
            "X-Remote-User",
            "x_remote_user",
            "X_REMOTE_EMAIL",
            "X-Remote-Groups",
            "X-Other",
        ] {
            req.append_header(name, "forged").unwrap();
        }
        strip_untrusted(&mut req, &headers());
        let left: Vec<&str> = req.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["x-other"]);
    }

    #[test]
    fn gateway_cookies_are_stripped_even_from_non_utf8_headers() {
        let names = CookieNames::new("portcullis_session", false);
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        let raw = b"portcullis_session=secret; pref=\xe9t\xe9";
        req.append_header("Cookie", http::HeaderValue::from_bytes(raw).unwrap())
            .unwrap();
        req.append_header("Cookie", "portcullis_session_remember=x; lang=fr")
            .unwrap();
        strip_gateway_cookies(&mut req, &names).unwrap();
        let left: Vec<&[u8]> = req
            .headers
            .get_all("cookie")
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        assert_eq!(left, vec![&b"pref=\xe9t\xe9; lang=fr"[..]]);
        // As the portal receives it: one `Cookie` line.
        let mut wire = bytes::BytesMut::new();
        req.header_to_h1_wire(&mut wire);
        assert_eq!(&wire[..], &b"Cookie: pref=\xe9t\xe9; lang=fr\r\n"[..]);
    }

    #[test]
    fn address_headers_are_the_gateways_own() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in [
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Real-IP", "6.6.6.6"),
            ("x_real_ip", "6.6.6.6"),
            ("Forwarded", "for=6.6.6.6"),
            ("True-Client-IP", "6.6.6.6"),
            ("X-Original-URL", "/admin"),
            ("X-Forwarded-Host", "evil.example"),
            ("X-Keep", "1"),
        ] {
            req.append_header(k, v).unwrap();
        }
        strip_untrusted(&mut req, &headers());
        forwarded(&mut req, "2001:db8::1".into(), true, Some("portal.example")).unwrap();
        let all = |name| -> Vec<&str> {
            req.headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect()
        };
        assert_eq!(all("x-forwarded-for"), ["2001:db8::1"]);
        assert_eq!(all("x-real-ip"), ["2001:db8::1"]);
        assert_eq!(all("x-forwarded-proto"), ["https"]);
        assert_eq!(all("x-forwarded-host"), ["portal.example"]);
        assert_eq!(
            all("forwarded"),
            ["for=\"[2001:db8::1]\";proto=https;host=\"portal.example\""]
        );
        assert!(all("true-client-ip").is_empty() && all("x-original-url").is_empty());
        assert_eq!(all("x-keep"), ["1"]);
    }
}
