//! What happens to a request before it may reach the portal (docs/reference.md, What happens
//! to a request): its framing, the global allowlist, the route, and for a protected path the
//! session (cache, store, or a silent remember-me renewal), the user's IP restrictions and the
//! redirect or refusal without one. The one place request-time IP restrictions are applied.

use std::sync::Arc;

use http::header;
use http::request::Parts;
use serde_json::json;

use crate::config::Config;
use crate::core::event::{Event, EventKind};
use crate::core::identity::Identity;
use crate::core::secret::{RememberToken, SessionToken};
use crate::policy::headers::{self, BadFraming, Framing};
use crate::policy::network;
use crate::policy::route::{self, Decision, Endpoint, Route, SessionState};
use crate::policy::throttle;
use crate::service::sessions::{Ended, LiveSession, Lookup, Renewal};
use crate::store::StoreError;
use crate::web::pages::messages;
use crate::web::reply::Reply;
use crate::web::request::{Facts, header_str};
use crate::web::site::Site;

/// What to do with a request.
#[derive(Debug)]
pub enum Verdict {
    /// Answer with this, and read nothing more from the connection (its framing is in doubt).
    Close(Reply),
    /// Answer with this.
    Reply(Reply),
    /// One of the gateway's own endpoints.
    Local(Endpoint),
    /// On to the portal, as `identity` (none on a public path), adding `set_cookies` (a silent
    /// remember-me renewal) to the portal's answer.
    Forward {
        identity: Option<Arc<Identity>>,
        set_cookies: Vec<String>,
    },
}

/// Decides what happens to a request; counts it in `portcullis_requests_total`.
pub async fn decide(site: &Site, cfg: &Config, head: &Parts, facts: &Facts) -> Verdict {
    if framing(head).is_some() {
        let reply = Reply::page(400, "Bad request", "The request could not be read.");
        return Verdict::Close(reply);
    }
    let html = route::accepts_html(header_str(head, header::ACCEPT));
    if !network::globally_allowed(&cfg.network.allow, &facts.addr) {
        site.audit.record_once_per_minute(
            format!("ip_denied {}", throttle::addr_key(&facts.addr)),
            Event::new(EventKind::IpDenied, site.sessions.now())
                .client(&facts.client.ip, &facts.client.user_agent),
        );
        site.metrics.request("ip_denied");
        let message = messages::IP_DENIED;
        return Verdict::Reply(Reply::refusal(
            html,
            403,
            "ip_denied",
            "Access denied",
            message,
        ));
    }
    let has_body = facts.unannounced_body
        || head.headers.contains_key(header::TRANSFER_ENCODING)
        || header_str(head, header::CONTENT_LENGTH).is_some_and(|n| n != "0");
    let method = head.method.as_str();
    match route::route(method, head.uri.path(), has_body, &cfg.public_paths) {
        Route::Local(endpoint) => {
            site.metrics.request("local");
            Verdict::Local(endpoint)
        }
        Route::Public => {
            site.metrics.request("public");
            Verdict::Forward {
                identity: None,
                set_cookies: Vec::new(),
            }
        }
        Route::Protected => match resolve(site, cfg, facts).await {
            Ok(resolved) => protected(site, cfg, head, facts, resolved, html).await,
            Err(e) => {
                tracing::error!(error = %e, "session lookup failed");
                Verdict::Reply(Reply::unavailable())
            }
        },
    }
}

/// A protected request with the session it carries (or none): IP restrictions, then forward,
/// redirect to the login page, or `401`.
async fn protected(
    site: &Site,
    cfg: &Config,
    head: &Parts,
    facts: &Facts,
    resolved: Resolved,
    html: bool,
) -> Verdict {
    if let Some(live) = &resolved.live
        && !allowed_here(cfg, live, facts)
    {
        restricted(site, live, facts).await;
        site.metrics.request("ip_restricted");
        let names = &cfg.cookies;
        let message = messages::IP_RESTRICTED;
        let reply = Reply::refusal(html, 403, "ip_restricted", "Access restricted", message)
            .cookies([names.clear(&names.session)]);
        return Verdict::Reply(reply);
    }
    let path_and_query = head.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let decided = route::decide(head.method.as_str(), path_and_query, html, resolved.state);
    site.metrics.request(match decided {
        Decision::Forward => "proxied",
        Decision::LoginRedirect { .. } => "login_redirect",
        Decision::Unauthenticated { .. } => "unauthenticated",
    });
    match decided {
        Decision::Forward => Verdict::Forward {
            identity: resolved.live.map(|l| l.identity.clone()),
            set_cookies: resolved.set_cookies,
        },
        Decision::LoginRedirect { location } => {
            Verdict::Reply(Reply::redirect(302, &location).cookies(resolved.set_cookies))
        }
        Decision::Unauthenticated { login_url } => {
            let body = json!({"error": "unauthenticated", "login_url": login_url});
            Verdict::Reply(Reply::json(401, body).cookies(resolved.set_cookies))
        }
    }
}

/// Whether a live session may be used from this request's address (the user's IP
/// restrictions, read from the configuration in force now).
pub fn allowed_here(cfg: &Config, live: &LiveSession, facts: &Facts) -> bool {
    network::user_allowed(&cfg.network.restrictions, &live.identity, &facts.addr)
}

/// A live session used from outside its user's allowed ranges ends here.
async fn restricted(site: &Site, live: &LiveSession, facts: &Facts) {
    if let Err(e) = site.sessions.end(live, Ended::IpRestricted).await {
        tracing::error!(error = %e, "could not end an IP-restricted session");
    }
    site.audit.record(
        Event::new(EventKind::IpRestricted, site.sessions.now())
            .login(&live.identity.login)
            .client(&facts.client.ip, &facts.client.user_agent)
            .session(live.hash.short())
            .detail("session"),
    );
}

/// The session a protected request has, and the cookies to set or clear on the way.
struct Resolved {
    state: SessionState,
    live: Option<Arc<LiveSession>>,
    set_cookies: Vec<String>,
}

/// Session cookie first; failing that, a remember-me cookie renews silently.
async fn resolve(site: &Site, cfg: &Config, facts: &Facts) -> Result<Resolved, StoreError> {
    let names = &cfg.cookies;
    let mut resolved = Resolved {
        state: SessionState::Missing,
        live: None,
        set_cookies: Vec::new(),
    };
    if let Some(token) = facts.cookie(&names.session).and_then(SessionToken::parse) {
        match site.sessions.lookup(&token, &cfg.session).await? {
            Lookup::Live(live) => {
                resolved.state = SessionState::Live;
                resolved.live = Some(live);
                return Ok(resolved);
            }
            Lookup::Expired(_) => resolved.state = SessionState::Expired,
            Lookup::Unknown => {}
        }
        resolved.set_cookies.push(names.clear(&names.session));
    }
    let Some(raw) = facts.cookie(&names.remember) else {
        return Ok(resolved);
    };
    let renewal = match RememberToken::parse(raw) {
        Some(token) if cfg.session.remember_me.is_some() => {
            site.sessions
                .renew(&token, &cfg.two_factor, &facts.client)
                .await?
        }
        _ => Renewal::Invalid,
    };
    match renewal {
        Renewal::Renewed(issued) => {
            let remember = issued.remember.map(|r| r.expose()).unwrap_or_default();
            resolved.set_cookies = vec![
                names.set(&names.session, issued.token.expose(), None),
                names.set(&names.remember, &remember, cfg.session.remember_me),
            ];
            resolved.state = SessionState::Live;
            resolved.live = Some(issued.live);
        }
        Renewal::Theft { login } => {
            tracing::warn!(%login, ip = %facts.client.ip, "a replayed remember-me token ended every session of the user");
            resolved.set_cookies.push(names.clear(&names.remember));
        }
        Renewal::Invalid => resolved.set_cookies.push(names.clear(&names.remember)),
    }
    Ok(resolved)
}

/// A request whose framing a portal might read otherwise than the gateway.
pub fn framing(head: &Parts) -> Option<BadFraming> {
    let all = |name| -> Vec<&[u8]> {
        head.headers
            .get_all(name)
            .iter()
            .map(|v| v.as_bytes())
            .collect()
    };
    let (hosts, lengths) = (all(header::HOST), all(header::CONTENT_LENGTH));
    headers::framing_problem(Framing {
        needs_host: head.version == http::Version::HTTP_11,
        hosts: &hosts,
        content_lengths: &lengths,
        transfer_encoding: head.headers.contains_key(header::TRANSFER_ENCODING),
        underscored: head
            .headers
            .keys()
            .any(|k| headers::underscored_framing(k.as_str())),
    })
}
