//! The gateway's own endpoints under `/_portcullis/`: the login form, logout, and the JSON API.
//! Each handler returns a `Reply`; reading the body is capped so a login post cannot be used
//! to make the gateway buffer megabytes.

use std::sync::Arc;

use pingora::proxy::Session;
use serde::Deserialize;
use serde_json::json;

use super::App;
use super::proxy::{Facts, header_str, logout_event};
use super::reply::Reply;
use crate::captcha;
use crate::config::Config;
use crate::decision::{Endpoint, LOGIN_PATH, safe_redirect};
use crate::login::{self, Attempt, CaptchaReply, Outcome};
use crate::network;
use crate::origin::{self, Origin};
use crate::pages::{self, LoginView, messages};
use crate::password::Password;
use crate::session::{Ended, Identity, Issued, LiveSession};
use crate::throttle;
use crate::token::{self, RememberToken, SessionToken};

/// Largest login or logout body accepted; real forms are a few hundred bytes.
pub const MAX_BODY: usize = 16 * 1024;

pub async fn handle(
    app: &App,
    cfg: &Config,
    endpoint: Endpoint,
    session: &mut Session,
    facts: &Facts,
) -> Reply {
    let result = match endpoint {
        Endpoint::LoginPage => Ok(login_page(app, cfg, session, facts).await),
        Endpoint::LoginForm => login_form(app, cfg, session, facts).await,
        Endpoint::Logout => logout(app, cfg, session, facts, false).await,
        Endpoint::ApiLogin => api_login(app, cfg, session, facts).await,
        Endpoint::ApiSession => api_session(app, cfg, facts).await,
        Endpoint::ApiLogout => logout(app, cfg, session, facts, true).await,
        Endpoint::CaptchaImage(id) => Ok(captcha_image(app, &id).await),
        Endpoint::NotFound => Ok(Reply::page(404, "Not found", "There is no such page.")),
        Endpoint::MethodNotAllowed => Ok(Reply::page(
            405,
            "Method not allowed",
            "This address does not accept that kind of request.",
        )),
    };
    result.unwrap_or_else(|e| e)
}

/// A reply that ends the handler early: a refusal or a failure.
type Handled = Result<Reply, Reply>;

fn service_unavailable(e: impl std::fmt::Display) -> Reply {
    tracing::error!(error = %e, "a sign-in request failed");
    Reply::page(
        503,
        "Service unavailable",
        "Sign-in is temporarily unavailable. Please try again in a minute.",
    )
}

/// The body of a request to the gateway: at most `MAX_BODY` bytes, all of it within
/// `timeouts.request_body` (a client dripping it is answered `408` and disconnected).
async fn read_body(session: &mut Session, cfg: &Config) -> Result<Vec<u8>, Reply> {
    let too_large = || Reply::page(413, "Request too large", "The form sent was too large.");
    let declared = header_str(session.req_header(), "content-length")
        .and_then(|v| v.trim().parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    let whole = async {
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_BODY {
                        return Err(too_large());
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(()),
                Err(_) => {
                    return Err(Reply::page(
                        400,
                        "Bad request",
                        "The request could not be read.",
                    ));
                }
            }
        }
    };
    let read = tokio::time::timeout(cfg.timeouts.request_body, whole).await;
    let outcome = read.unwrap_or_else(|_| {
        Err(Reply::page(
            408,
            "Request timeout",
            "The form took too long to arrive. Please try again.",
        ))
    });
    if outcome.is_err() {
        // What is left of the body is never read: the connection cannot be used again.
        session.set_keepalive(None);
    }
    outcome.map(|()| body)
}

fn form(body: &[u8]) -> impl Fn(&str) -> String + '_ {
    move |key| {
        form_urlencoded::parse(body)
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    }
}

fn query_param(session: &Session, key: &str) -> Option<String> {
    let query = session.req_header().uri.query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// The session a request to a local endpoint carries, without extending it. A session used
/// from outside its user's IP restrictions counts as none here; the proxy ends it on its next
/// proxied request.
async fn current(
    app: &App,
    cfg: &Config,
    facts: &Facts,
) -> Result<Option<(SessionToken, Arc<LiveSession>)>, Reply> {
    let names = &cfg.cookies;
    let Some(token) = facts.cookie(&names.session).and_then(SessionToken::parse) else {
        return Ok(None);
    };
    let live = app
        .sessions
        .peek(&token, &cfg.session)
        .await
        .map_err(service_unavailable)?;
    Ok(live
        .filter(|l| network::user_allowed(&cfg.network.restrictions, &l.identity, &facts.addr))
        .map(|l| (token, l)))
}

/// The login form's CSRF cookie: reused while it is ours, for this client, with an hour left;
/// made anew otherwise.
fn csrf_cookie(app: &App, cfg: &Config, facts: &Facts) -> (String, Option<String>) {
    let names = &cfg.cookies;
    let (client, now) = (throttle::addr_key(&facts.addr), app.clock.now());
    let reusable = facts.cookie(&names.csrf).filter(|v| {
        token::login_csrf_left(&app.csrf_key, v, &client, now).is_some_and(|left| left > 3600)
    });
    match reusable {
        Some(existing) => (existing.to_string(), None),
        None => {
            let fresh = token::login_csrf(&app.csrf_key, &client, now);
            let set = names.set(&names.csrf, &fresh, None);
            (fresh, Some(set))
        }
    }
}

/// Whether the login form posted is one this gateway served to this client: the token in the
/// form is the one in the cookie, and it is ours, unexpired, for this client's address.
fn login_csrf_ok(app: &App, cfg: &Config, facts: &Facts, posted: &str) -> bool {
    let client = throttle::addr_key(&facts.addr);
    facts
        .cookie(&cfg.cookies.csrf)
        .is_some_and(|c| token::same_token(c, posted))
        && token::login_csrf_left(&app.csrf_key, posted, &client, app.clock.now()).is_some()
}

struct FormPage<'a> {
    status: u16,
    error: Option<&'a str>,
    notice: Option<&'a str>,
    login: &'a str,
    rd: &'a str,
    remember: bool,
    captcha: Option<&'a str>,
}

fn render_login(app: &App, cfg: &Config, facts: &Facts, page: FormPage) -> Reply {
    let (csrf, set) = csrf_cookie(app, cfg, facts);
    let html = pages::login_page(&LoginView {
        error: page.error,
        notice: page.notice,
        login: page.login,
        rd: safe_redirect(page.rd),
        csrf: &csrf,
        remember_offered: cfg.session.remember_me.is_some(),
        remember_checked: page.remember,
        captcha: page.captcha,
    });
    Reply::html(page.status, html).cookies(set)
}

async fn login_page(app: &App, cfg: &Config, session: &Session, facts: &Facts) -> Reply {
    let rd = query_param(session, "rd").unwrap_or_else(|| "/".into());
    if let Ok(Some(_)) = current(app, cfg, facts).await {
        return Reply::redirect(302, safe_redirect(&rd));
    }
    let notice = if query_param(session, "expired").is_some() {
        Some(messages::EXPIRED)
    } else if query_param(session, "signed_out").is_some() {
        Some(messages::SIGNED_OUT)
    } else {
        None
    };
    let captcha = login::page_captcha(app, cfg, &facts.addr)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not draw a CAPTCHA for the login page");
            None
        });
    render_login(
        app,
        cfg,
        facts,
        FormPage {
            status: 200,
            error: None,
            notice,
            login: "",
            rd: &rd,
            remember: false,
            captcha: captcha.as_deref(),
        },
    )
}

async fn captcha_image(app: &App, id: &str) -> Reply {
    match app.store.captcha_image(id, app.clock.now()).await {
        Ok(Some(png)) => Reply::png(png),
        Ok(None) => Reply::page(
            404,
            "Picture expired",
            "This picture is no longer valid. Reload the sign-in page for a new one.",
        ),
        Err(e) => service_unavailable(e),
    }
}

/// The status, message, next challenge and `Retry-After` seconds of a refused sign-in.
struct Refusal {
    status: u16,
    error: &'static str,
    message: &'static str,
    captcha: Option<String>,
    retry_after: Option<u64>,
}

fn issued_or_refusal(outcome: Outcome) -> Result<Issued, Refusal> {
    let r = |status, error, message| Refusal {
        status,
        error,
        message,
        captcha: None,
        retry_after: None,
    };
    Err(match outcome {
        Outcome::Success { issued } => return Ok(issued),
        Outcome::InvalidCredentials { captcha } => Refusal {
            captcha,
            ..r(401, "invalid_credentials", messages::INVALID_CREDENTIALS)
        },
        Outcome::CaptchaRequired { captcha, .. } => Refusal {
            captcha: Some(captcha),
            ..r(401, "captcha_required", messages::CAPTCHA)
        },
        Outcome::Locked { retry_after } => Refusal {
            retry_after: Some(retry_after),
            ..r(423, "locked", messages::TOO_MANY)
        },
        Outcome::Throttled { retry_after } => Refusal {
            retry_after: Some(retry_after),
            ..r(429, "throttled", messages::TOO_MANY)
        },
        Outcome::Dismissed => r(403, "dismissed", messages::DISMISSED),
        Outcome::IpRestricted => r(403, "ip_restricted", messages::IP_RESTRICTED),
    })
}

impl Refusal {
    fn retry_header(&self, reply: Reply) -> Reply {
        match self.retry_after {
            Some(s) => reply.header("Retry-After", s.to_string()),
            None => reply,
        }
    }

    /// SPEC §4: `{"error": ...}`, with the challenge when one is needed next and the seconds
    /// to wait when locked or throttled.
    fn json(&self) -> Reply {
        let mut body = json!({"error": self.error});
        if let Some(id) = &self.captcha {
            body["captcha"] = json!({"id": id, "image": captcha::image_path(id)});
        }
        if let Some(s) = self.retry_after {
            body["retry_after"] = json!(s);
        }
        self.retry_header(Reply::json(self.status, body))
    }
}

async fn login_form(app: &App, cfg: &Config, session: &mut Session, facts: &Facts) -> Handled {
    let body = read_body(session, cfg).await?;
    let field = form(&body);
    let (login, rd, remember) = (field("login"), field("rd"), !field("remember").is_empty());
    let page = |status, error, captcha| FormPage {
        status,
        error: Some(error),
        notice: None,
        login: &login,
        rd: &rd,
        remember,
        captcha,
    };
    let names = &cfg.cookies;
    // Login CSRF: a page of another site must not sign the browser in (as its author).
    let csrf_ok = origin_of(session, cfg) != Origin::CrossSite
        && login_csrf_ok(app, cfg, facts, &field("csrf"));
    if !csrf_ok {
        return Ok(render_login(
            app,
            cfg,
            facts,
            page(403, messages::FORM_EXPIRED, None),
        ));
    }
    let attempt = Attempt {
        login: login.clone(),
        password: Password::new(field("password")),
        remember,
        client: facts.client.clone(),
        addr: facts.addr,
        captcha: captcha_reply(field("captcha_id"), field("captcha_answer")),
    };
    let outcome = login::attempt(app, cfg, attempt)
        .await
        .map_err(service_unavailable)?;
    let issued = match issued_or_refusal(outcome) {
        Ok(issued) => issued,
        Err(r) => {
            let view = page(r.status, r.message, r.captcha.as_deref());
            return Ok(r.retry_header(render_login(app, cfg, facts, view)));
        }
    };
    end_previous(app, cfg, facts).await;
    let reply = Reply::redirect(303, safe_redirect(&rd)).cookie(names.set(
        &names.session,
        issued.token.expose(),
        None,
    ));
    Ok(match issued.remember {
        Some(r) => reply.cookie(names.set(&names.remember, &r.expose(), cfg.session.remember_me)),
        None => reply.cookie(names.clear(&names.remember)),
    })
}

fn captcha_reply(id: String, answer: String) -> Option<CaptchaReply> {
    (!id.is_empty()).then_some(CaptchaReply { id, answer })
}

/// A sign-in replaces whatever session the browser had: the old one is ended, not reused.
async fn end_previous(app: &App, cfg: &Config, facts: &Facts) {
    if let Ok(Some((_, live))) = current(app, cfg, facts).await
        && let Err(e) = app.sessions.end(&live, Ended::Logout).await
    {
        tracing::warn!(error = %e, "could not end the previous session");
    }
}

#[derive(Deserialize)]
struct ApiLoginBody {
    #[serde(default)]
    login: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    remember: bool,
    #[serde(default)]
    captcha_id: String,
    #[serde(default)]
    captcha_answer: String,
}

fn is_json(session: &Session) -> bool {
    header_str(session.req_header(), "content-type").is_some_and(|c| {
        c.trim_start()
            .to_ascii_lowercase()
            .starts_with("application/json")
    })
}

fn identity_json(identity: &Identity, expires_in: i64) -> serde_json::Value {
    json!({
        "user": identity.login,
        "email": identity.email,
        "name": identity.name,
        "groups": identity.groups,
        "expires_in": expires_in,
    })
}

async fn api_login(app: &App, cfg: &Config, session: &mut Session, facts: &Facts) -> Handled {
    // Requiring JSON forces a CORS preflight on cross-site requests: no form can post here.
    if !is_json(session) {
        return Ok(Reply::json(415, json!({"error": "unsupported_media_type"})));
    }
    if origin_of(session, cfg) == Origin::CrossSite {
        return Ok(Reply::json(403, json!({"error": "csrf"})));
    }
    let body = read_body(session, cfg).await.map_err(|r| {
        Reply::json(
            r.status,
            json!({"error": match r.status {
                413 => "too_large",
                408 => "timeout",
                _ => "bad_request",
            }}),
        )
    })?;
    let Ok(req) = serde_json::from_slice::<ApiLoginBody>(&body) else {
        return Ok(Reply::json(400, json!({"error": "bad_request"})));
    };
    let attempt = Attempt {
        login: req.login,
        password: Password::new(req.password),
        remember: req.remember,
        client: facts.client.clone(),
        addr: facts.addr,
        captcha: captcha_reply(req.captcha_id, req.captcha_answer),
    };
    let outcome = login::attempt(app, cfg, attempt).await.map_err(|e| {
        tracing::error!(error = %e, "a sign-in request failed");
        Reply::json(503, json!({"error": "unavailable"}))
    })?;
    let issued = match issued_or_refusal(outcome) {
        Ok(issued) => issued,
        Err(r) => return Ok(r.json()),
    };
    end_previous(app, cfg, facts).await;
    let names = &cfg.cookies;
    let now = app.sessions.now();
    let mut reply = Reply::json(
        200,
        identity_json(
            &issued.live.identity,
            issued.live.expires_in(now, &cfg.session),
        ),
    )
    .cookie(names.set(&names.session, issued.token.expose(), None));
    if let Some(r) = issued.remember {
        reply = reply.cookie(names.set(&names.remember, &r.expose(), cfg.session.remember_me));
    }
    Ok(reply)
}

async fn api_session(app: &App, cfg: &Config, facts: &Facts) -> Handled {
    match current(app, cfg, facts).await {
        Ok(Some((_, live))) => {
            let expires_in = live.expires_in(app.sessions.now(), &cfg.session);
            Ok(Reply::json(200, identity_json(&live.identity, expires_in)))
        }
        Ok(None) => Ok(Reply::json(
            401,
            json!({"error": "unauthenticated", "login_url": LOGIN_PATH}),
        )),
        Err(_) => Ok(Reply::json(503, json!({"error": "unavailable"}))),
    }
}

/// Where the browser says a request comes from (`origin::judge`), against the gateway's own
/// origin: `public_url`'s when configured, else the scheme and the `Host` asked for.
fn origin_of(session: &Session, cfg: &Config) -> Origin {
    let req = session.req_header();
    let scheme = if cfg.secure_cookies() {
        "https"
    } else {
        "http"
    };
    let host = match &cfg.public_url {
        Some(url) => Some(url.authority.as_str()),
        None => header_str(req, "host"),
    };
    let own = format!("{scheme}://{}", host.unwrap_or_default());
    origin::judge(
        header_str(req, "sec-fetch-site"),
        header_str(req, "origin"),
        &own,
    )
}

async fn logout(
    app: &App,
    cfg: &Config,
    session: &mut Session,
    facts: &Facts,
    api: bool,
) -> Handled {
    let body = read_body(session, cfg).await?;
    let current = current(app, cfg, facts).await?;
    if let Some((token, _)) = &current {
        // The form carries the session's CSRF token; the API needs a JSON content type; a
        // same-origin Origin header also proves the request came from the portal's own pages.
        let origin = origin_of(session, cfg);
        let allowed = origin == Origin::SameOrigin
            || origin == Origin::Unknown
                && if api {
                    is_json(session)
                } else {
                    token::same_token(&form(&body)("csrf"), &token.csrf())
                };
        if !allowed {
            return Ok(if api {
                Reply::json(403, json!({"error": "csrf"}))
            } else {
                Reply::page(
                    403,
                    "Sign-out refused",
                    "Use the sign-out button of the portal to sign out.",
                )
            });
        }
    }
    let names = &cfg.cookies;
    if let Some((_, live)) = &current {
        app.sessions
            .end(live, Ended::Logout)
            .await
            .map_err(service_unavailable)?;
        logout_event(app, &live.identity, &facts.client, live.hash.short());
    }
    if let Some(remember) = facts.cookie(&names.remember).and_then(RememberToken::parse) {
        app.sessions
            .forget_remember(&remember)
            .await
            .map_err(service_unavailable)?;
    }
    let cleared = [names.clear(&names.session), names.clear(&names.remember)];
    Ok(if api {
        Reply::json(200, json!({"ok": true})).cookies(cleared)
    } else {
        Reply::redirect(303, &format!("{LOGIN_PATH}?signed_out=1")).cookies(cleared)
    })
}
