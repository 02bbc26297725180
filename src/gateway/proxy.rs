//! The proxy phases: route the request, resolve its session, carry out the decision, and on the
//! way upstream strip what clients must not send (identity headers, the gateway's cookies) and
//! add what the portal needs (identity, X-Forwarded-*).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, header};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::HttpModules;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use serde_json::json;

use super::App;
use super::local;
use super::reply::{self, Reply};
use crate::allowlist::ClientAddr;
use crate::audit::{Event, EventKind};
use crate::config::{Config, IdentityHeaders, NetworkConfig};
use crate::decision::{self, Decision, Route, SessionState};
use crate::headers::{self, Framing};
use crate::network::{self, Forwarding, PeerAddr};
use crate::pages::messages;
use crate::session::cookie::{self, CookieNames};
use crate::session::{Client, Ended, Identity, LiveSession, Lookup, Renewal};
use crate::token::{RememberToken, SessionToken};
use std::net::{IpAddr, Ipv4Addr};

pub struct Gateway {
    app: Arc<App>,
}

impl Gateway {
    pub fn new(app: Arc<App>) -> Gateway {
        Gateway { app }
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

/// The facts about a request that the gateway's decisions use.
pub struct Facts {
    pub addr: ClientAddr,
    pub client: Client,
    /// The `Cookie` headers (shared with the request, not copied).
    cookies: Vec<HeaderValue>,
}

impl Facts {
    pub fn of(session: &Session, network: &NetworkConfig) -> Facts {
        let req = session.req_header();
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
        let values: Vec<&[u8]> = req
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
        let user_agent = header_str(req, header::USER_AGENT)
            .unwrap_or_default()
            .to_string();
        Facts {
            addr,
            client: Client {
                ip: addr.to_string(),
                user_agent,
            },
            cookies: req
                .headers
                .get_all(header::COOKIE)
                .iter()
                .cloned()
                .collect(),
        }
    }

    pub fn cookie(&self, name: &str) -> Option<&str> {
        cookie::find(self.cookies.iter().filter_map(|v| v.to_str().ok()), name)
    }
}

pub fn header_str(req: &RequestHeader, name: impl http::header::AsHeaderName) -> Option<&str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

/// The outcome of looking for a session on a protected request.
struct Resolved {
    state: SessionState,
    live: Option<Arc<LiveSession>>,
    set_cookies: Vec<String>,
}

impl Gateway {
    /// Session cookie first; failing that, a remember-me cookie renews silently.
    async fn resolve(
        &self,
        facts: &Facts,
        cfg: &Config,
    ) -> Result<Resolved, crate::store::StoreError> {
        let names = &cfg.cookies;
        let mut state = SessionState::Missing;
        let mut set_cookies = Vec::new();
        if let Some(token) = facts.cookie(&names.session).and_then(SessionToken::parse) {
            match self.app.sessions.lookup(&token, &cfg.session).await? {
                Lookup::Live(live) => {
                    return Ok(Resolved {
                        state: SessionState::Live,
                        live: Some(live),
                        set_cookies,
                    });
                }
                Lookup::Expired(_) => state = SessionState::Expired,
                Lookup::Unknown => {}
            }
            set_cookies.push(names.clear(&names.session));
        }
        let Some(raw) = facts.cookie(&names.remember) else {
            return Ok(Resolved {
                state,
                live: None,
                set_cookies,
            });
        };
        let renewal = match RememberToken::parse(raw) {
            Some(token) if cfg.session.remember_me.is_some() => {
                self.app.sessions.renew(&token, &facts.client).await?
            }
            _ => Renewal::Invalid,
        };
        match renewal {
            Renewal::Renewed(issued) => {
                let set = vec![
                    names.set(&names.session, issued.token.expose(), None),
                    names.set(
                        &names.remember,
                        &issued.remember.map(|r| r.expose()).unwrap_or_default(),
                        cfg.session.remember_me,
                    ),
                ];
                Ok(Resolved {
                    state: SessionState::Live,
                    live: Some(issued.live),
                    set_cookies: set,
                })
            }
            Renewal::Theft { login } => {
                tracing::warn!(%login, ip = %facts.client.ip, "a replayed remember-me token ended every session of the user");
                set_cookies.push(names.clear(&names.remember));
                Ok(Resolved {
                    state,
                    live: None,
                    set_cookies,
                })
            }
            Renewal::Invalid => {
                set_cookies.push(names.clear(&names.remember));
                Ok(Resolved {
                    state,
                    live: None,
                    set_cookies,
                })
            }
        }
    }
}

impl Gateway {
    /// A live session used from outside its user's allowed ranges ends here (SPEC §3 step 7).
    async fn restricted(&self, live: &LiveSession, facts: &Facts) {
        if let Err(e) = self.app.sessions.end(live, Ended::IpRestricted).await {
            tracing::error!(error = %e, "could not end an IP-restricted session");
        }
        self.app.audit.record(
            Event::new(EventKind::IpRestricted, self.app.sessions.now())
                .login(&live.identity.login)
                .client(&facts.client.ip, &facts.client.user_agent)
                .session(live.hash.short())
                .detail("session"),
        );
    }
}

/// A refusal as a page for browsers and as JSON `{"error": code}` for everything else.
pub fn refusal(session: &Session, status: u16, code: &str, title: &str, message: &str) -> Reply {
    let req = session.req_header();
    if decision::accepts_html(header_str(req, header::ACCEPT)) {
        Reply::page(status, title, message)
    } else {
        Reply::json(status, json!({"error": code}))
    }
}

fn unavailable() -> Reply {
    Reply::page(
        503,
        "Service unavailable",
        "Sign-in is temporarily unavailable. Please try again in a minute.",
    )
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
        if bad_framing(session.req_header()).is_some() {
            // Framing the portal might read differently: answer, and never read on.
            session.set_keepalive(None);
            let reply = Reply::page(400, "Bad request", "The request could not be read.");
            reply::write(session, reply).await?;
            return Ok(true);
        }
        let cfg = self.app.config.load_full();
        let req = session.req_header();
        let method = req.method.clone();
        let method = method.as_str();
        let has_body = req.headers.contains_key(header::TRANSFER_ENCODING)
            || header_str(req, header::CONTENT_LENGTH).is_some_and(|n| n != "0");
        let route = decision::route(method, req.uri.path(), has_body, &cfg.public_paths);
        let facts = Facts::of(session, &cfg.network);
        if !network::globally_allowed(&cfg.network.allow, &facts.addr) {
            self.app.audit.record_once_per_minute(
                format!("ip_denied {}", crate::throttle::addr_key(&facts.addr)),
                Event::new(EventKind::IpDenied, self.app.sessions.now())
                    .client(&facts.client.ip, &facts.client.user_agent),
            );
            let reply = refusal(
                session,
                403,
                "ip_denied",
                "Access denied",
                messages::IP_DENIED,
            );
            self.app.metrics.request("ip_denied");
            reply::write(session, reply).await?;
            return Ok(true);
        }
        if !matches!(route, Route::Local(_)) {
            ctx.client_ip = facts.client.ip.clone();
        }
        let protected = match route {
            Route::Local(endpoint) => {
                self.app.metrics.request("local");
                let reply = local::handle(&self.app, &cfg, endpoint, session, &facts).await;
                reply::write(session, reply).await?;
                return Ok(true);
            }
            Route::Public => {
                self.app.metrics.request("public");
                return Ok(false);
            }
            Route::Protected => self.resolve(&facts, &cfg).await,
        };
        let resolved = match protected {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "session lookup failed");
                reply::write(session, unavailable()).await?;
                return Ok(true);
            }
        };
        let req = session.req_header();
        let path_and_query = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let accepts_html = decision::accepts_html(header_str(req, header::ACCEPT));
        if let Some(live) = &resolved.live
            && !network::user_allowed(&cfg.network.restrictions, &live.identity, &facts.addr)
        {
            self.restricted(live, &facts).await;
            let names = &cfg.cookies;
            let reply = refusal(
                session,
                403,
                "ip_restricted",
                "Access restricted",
                messages::IP_RESTRICTED,
            )
            .cookies([names.clear(&names.session)]);
            self.app.metrics.request("ip_restricted");
            reply::write(session, reply).await?;
            return Ok(true);
        }
        let decided = decision::decide(method, path_and_query, accepts_html, resolved.state);
        self.app.metrics.request(match decided {
            Decision::Forward => "proxied",
            Decision::LoginRedirect { .. } => "login_redirect",
            Decision::Unauthenticated { .. } => "unauthenticated",
        });
        match decided {
            Decision::Forward => {
                ctx.identity = resolved.live.map(|l| l.identity.clone());
                ctx.set_cookies = resolved.set_cookies;
                Ok(false)
            }
            Decision::LoginRedirect { location } => {
                let reply = Reply::redirect(302, &location).cookies(resolved.set_cookies);
                reply::write(session, reply).await?;
                Ok(true)
            }
            Decision::Unauthenticated { login_url } => {
                let reply = Reply::json(
                    401,
                    json!({"error": "unauthenticated", "login_url": login_url}),
                )
                .cookies(resolved.set_cookies);
                reply::write(session, reply).await?;
                Ok(true)
            }
        }
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
        forwarded(upstream, &ctx.client_ip, cfg.secure_cookies(), host)?;
        ctx.sent_upstream = Some(std::time::Instant::now());
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(sent) = ctx.sent_upstream.take() {
            self.app.metrics.upstream(sent.elapsed());
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
            if let Err(err) = reply::write(session, page).await {
                tracing::debug!(error = %err, "could not send the 502 page");
            }
        } else if code > 0 {
            let _ = session
                .respond_error_with_body(code, Bytes::from_static(b""))
                .await;
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
    let doomed: Vec<HeaderName> = req
        .headers
        .keys()
        .filter(|k| {
            headers::is_forgeable(k.as_str())
                || identity
                    .all()
                    .iter()
                    .any(|h| headers::same_cgi_name(h.as_str(), k.as_str()))
        })
        .cloned()
        .collect();
    for name in doomed {
        req.remove_header(&name);
    }
}

/// SPEC §3: a request whose framing a portal might read otherwise than the gateway.
fn bad_framing(req: &RequestHeader) -> Option<headers::BadFraming> {
    let all = |name| -> Vec<&[u8]> {
        req.headers
            .get_all(name)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect()
    };
    let (hosts, lengths) = (all(header::HOST), all(header::CONTENT_LENGTH));
    headers::framing_problem(Framing {
        needs_host: req.version == http::Version::HTTP_11,
        hosts: &hosts,
        content_lengths: &lengths,
        transfer_encoding: req.headers.contains_key(header::TRANSFER_ENCODING),
        underscored: req
            .headers
            .keys()
            .any(|k| headers::underscored_framing(k.as_str())),
    })
}

/// The host the portal is told was asked for: `public_url`'s when configured, else the
/// request's own (already checked by `bad_framing`), else none.
fn forwarded_host(cfg: &Config, req: &RequestHeader) -> Option<String> {
    if let Some(url) = &cfg.public_url {
        return Some(url.authority.clone());
    }
    let host = header_str(req, header::HOST).or_else(|| req.uri.authority().map(|a| a.as_str()));
    host.filter(|h| headers::valid_host(h)).map(str::to_string)
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
    let values: Vec<&[u8]> = req
        .headers
        .get_all(header::COOKIE)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    let kept = match values.as_slice() {
        [] => return Ok(()),
        [one] => cookie::without(one, &names.all()),
        many => cookie::without(&many.join(&b"; "[..]), &names.all()),
    };
    req.remove_header(&header::COOKIE);
    if let Some(kept) = kept {
        let value = HeaderValue::from_bytes(&kept).map_err(|_| {
            Error::explain(ErrorType::InvalidHTTPHeader, "unreadable Cookie header")
        })?;
        req.insert_header(header::COOKIE, value)?;
    }
    Ok(())
}

/// The address headers the portal receives, all the gateway's own truth (every client-sent
/// copy was removed by `strip_untrusted`): the resolved client, the scheme and the host.
fn forwarded(
    req: &mut RequestHeader,
    client: &str,
    https: bool,
    host: Option<String>,
) -> Result<()> {
    let proto = if https { "https" } else { "http" };
    let node = if client.contains(':') {
        format!("\"[{client}]\"")
    } else {
        client.to_string()
    };
    let mut rfc7239 = format!("for={node};proto={proto}");
    if let Some(h) = &host {
        rfc7239.push_str(&format!(";host=\"{h}\""));
        req.insert_header("X-Forwarded-Host", h.as_str())?;
    }
    req.insert_header("X-Forwarded-For", client)?;
    req.insert_header("X-Real-IP", client)?;
    req.insert_header("X-Forwarded-Proto", proto)?;
    req.insert_header("Forwarded", rfc7239)?;
    Ok(())
}

/// Records the end of a session by the person who owned it.
pub fn logout_event(app: &App, identity: &Identity, client: &Client, short: String) {
    app.audit.record(
        Event::new(EventKind::Logout, app.sessions.now())
            .login(&identity.login)
            .client(&client.ip, &client.user_agent)
            .session(short),
    );
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
        forwarded(&mut req, "2001:db8::1", true, Some("portal.example".into())).unwrap();
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
