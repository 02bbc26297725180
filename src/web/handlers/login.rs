//! Signing in: the login page, the form it posts, and `api/login` for scripts and apps. The
//! checks themselves are the sign-in service's; here are the forms, the login CSRF token and the
//! cookies a success sets.

use serde::Deserialize;
use serde_json::json;

use super::{Handled, Site, current};
use crate::config::Config;
use crate::core::identity::Identity;
use crate::core::secret::{self, BackupCode, OneTimeCode, PENDING_LIFETIME, Password, Pending};
use crate::policy::origin::Origin;
use crate::policy::route::safe_redirect;
use crate::policy::throttle;
use crate::service::captcha;
use crate::service::sessions::{Ended, Issued};
use crate::service::signin::{Attempt, CaptchaReply, Outcome};
use crate::web::pages::{self, LoginView, messages};
use crate::web::reply::Reply;
use crate::web::request::{Facts, Request};

/// The login form's CSRF cookie: reused while it is ours, for this client, with an hour left;
/// made anew otherwise.
pub fn csrf_cookie(site: &Site, cfg: &Config, facts: &Facts) -> (String, Option<String>) {
    let names = &cfg.cookies;
    let (client, now) = (throttle::addr_key(&facts.addr), site.clock.now());
    let reusable = facts.cookie(&names.csrf).filter(|v| {
        secret::login_csrf_left(&site.csrf_key, v, &client, now).is_some_and(|left| left > 3600)
    });
    match reusable {
        Some(existing) => (existing.to_string(), None),
        None => {
            let fresh = secret::login_csrf(&site.csrf_key, &client, now);
            let set = names.set(&names.csrf, fresh.expose(), None);
            (fresh.expose().to_string(), Some(set))
        }
    }
}

/// Whether the login form posted is one this gateway served to this client: sent from our own
/// page (or a client that does not say), with the token of its cookie, ours, unexpired, for
/// this client's address.
pub fn csrf_ok(site: &Site, cfg: &Config, req: &Request<'_>) -> bool {
    let posted = req.field("csrf");
    let client = throttle::addr_key(&req.facts.addr);
    req.origin(cfg) != Origin::CrossSite
        && req
            .cookie(&cfg.cookies.csrf)
            .is_some_and(|c| secret::same_token(c, &posted))
        && secret::login_csrf_left(&site.csrf_key, &posted, &client, site.clock.now()).is_some()
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

fn render(site: &Site, cfg: &Config, facts: &Facts, page: FormPage) -> Reply {
    let (csrf, set) = csrf_cookie(site, cfg, facts);
    let html = pages::login_page(&LoginView {
        error: page.error,
        notice: page.notice,
        login: page.login,
        rd: safe_redirect(page.rd),
        csrf: &csrf,
        remember_offered: cfg.session.remember_me.is_some(),
        remember_checked: page.remember,
        captcha: page.captcha,
        forgot_offered: super::recovery::offered(cfg),
    });
    Reply::html(page.status, html).cookies(set)
}

/// `GET login`: the form, or straight on to `rd` with a live session.
pub async fn page(site: &Site, cfg: &Config, req: &Request<'_>) -> Reply {
    let rd = req.query("rd").unwrap_or_else(|| "/".into());
    if let Ok(Some(_)) = current(site, cfg, req.facts).await {
        return Reply::redirect(302, safe_redirect(&rd));
    }
    let notice = if req.query("expired").is_some() {
        Some(messages::EXPIRED)
    } else if req.query("signed_out").is_some() {
        Some(messages::SIGNED_OUT)
    } else if req.query("reset").is_some() {
        Some(messages::PASSWORD_RESET)
    } else if req.query("registered").is_some() {
        Some(messages::REGISTERED)
    } else {
        None
    };
    let captcha = site
        .signin
        .page_captcha(cfg, &req.facts.addr)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not draw a CAPTCHA for the login page");
            None
        });
    let view = FormPage {
        status: 200,
        error: None,
        notice,
        login: "",
        rd: &rd,
        remember: false,
        captcha: captcha.as_deref(),
    };
    render(site, cfg, req.facts, view)
}

/// The status, message, next challenge and `Retry-After` seconds of a refused sign-in.
pub struct Refusal {
    pub status: u16,
    pub error: &'static str,
    pub message: &'static str,
    captcha: Option<String>,
    retry_after: Option<u64>,
}

/// Where a sign-in attempt leads.
pub enum Next {
    /// A session; and the backup codes of a factor set up on the way (shown once).
    Issued(Issued, Vec<BackupCode>),
    /// The right password: the second step comes next (`pending.setup`: set up the factor
    /// first), carried by the browser's pending cookie.
    SecondStep(Pending),
    /// A pending sign-in that no longer fits the account: back to the password.
    Restart,
    Refused(Refusal),
}

pub fn next_of(outcome: Outcome) -> Next {
    let r = |status, error, message| Refusal {
        status,
        error,
        message,
        captcha: None,
        retry_after: None,
    };
    Next::Refused(match outcome {
        Outcome::Success {
            issued,
            backup_codes,
        } => return Next::Issued(issued, backup_codes),
        Outcome::TwoFactorRequired { pending } | Outcome::TwoFactorSetupRequired { pending } => {
            return Next::SecondStep(pending);
        }
        Outcome::PendingStale => return Next::Restart,
        Outcome::InvalidCode { replay: false } => r(401, "invalid_code", messages::INCORRECT_CODE),
        Outcome::InvalidCode { replay: true } => r(401, "invalid_code", messages::CODE_USED),
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
        Outcome::Invited => r(403, "invited", messages::INVITED),
        Outcome::IpRestricted => r(403, "ip_restricted", messages::IP_RESTRICTED),
    })
}

impl Refusal {
    pub fn retry_header(&self, reply: Reply) -> Reply {
        match self.retry_after {
            Some(s) => reply.header("Retry-After", s.to_string()),
            None => reply,
        }
    }

    /// `{"error": ...}`, with the challenge when one is needed next and the seconds to wait
    /// when locked or throttled.
    pub fn json(&self) -> Reply {
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

/// `POST login`: the form.
pub async fn form(site: &Site, cfg: &Config, req: &Request<'_>) -> Handled {
    let (login, rd) = (req.field("login"), req.field("rd"));
    let remember = !req.field("remember").is_empty();
    let page = |status, error, captcha| FormPage {
        status,
        error: Some(error),
        notice: None,
        login: &login,
        rd: &rd,
        remember,
        captcha,
    };
    // Login CSRF: a page of another site must not sign the browser in (as its author).
    if !csrf_ok(site, cfg, req) {
        let view = page(403, messages::FORM_EXPIRED, None);
        return Ok(render(site, cfg, req.facts, view));
    }
    let attempt = Attempt {
        login: login.clone(),
        password: Password::new(req.field("password")),
        remember,
        client: req.facts.client.clone(),
        addr: req.facts.addr,
        captcha: captcha_reply(req.field("captcha_id"), req.field("captcha_answer")),
        code: None,
    };
    let outcome = site.signin.attempt(cfg, attempt).await?;
    match next_of(outcome) {
        Next::Issued(issued, _) => Ok(signed_in(site, cfg, req, issued, &rd).await),
        Next::SecondStep(pending) => Ok(second_step(site, cfg, &pending, &rd)),
        // Only a second step can be stale; a first attempt never is.
        Next::Restart => Ok(render(
            site,
            cfg,
            req.facts,
            page(401, messages::FORM_EXPIRED, None),
        )),
        Next::Refused(r) => {
            let view = page(r.status, r.message, r.captcha.as_deref());
            Ok(r.retry_header(render(site, cfg, req.facts, view)))
        }
    }
}

/// A session issued to a browser: the one it had ends, the cookies are set, and it goes on to
/// `rd`.
pub async fn signed_in(
    site: &Site,
    cfg: &Config,
    req: &Request<'_>,
    issued: Issued,
    rd: &str,
) -> Reply {
    end_previous(site, cfg, req.facts).await;
    Reply::redirect(303, safe_redirect(rd)).cookies(session_cookies(cfg, &issued))
}

/// The cookies of a new session: the session, "Stay signed in" (or its removal), and the end
/// of a pending sign-in.
pub fn session_cookies(cfg: &Config, issued: &Issued) -> Vec<String> {
    let names = &cfg.cookies;
    let remember = match &issued.remember {
        Some(r) => names.set(&names.remember, &r.expose(), cfg.session.remember_me),
        None => names.clear(&names.remember),
    };
    vec![
        names.set(&names.session, issued.token.expose(), None),
        remember,
        names.clear(&names.pending),
    ]
}

/// The right password: a pending sign-in (an HttpOnly cookie of at most 5 minutes) and on to
/// the second step, or to setting up the factor.
fn second_step(site: &Site, cfg: &Config, pending: &Pending, rd: &str) -> Reply {
    let names = &cfg.cookies;
    let lifetime = Some(std::time::Duration::from_secs(PENDING_LIFETIME as u64));
    let cookie = names.set(
        &names.pending,
        pending.seal(&site.pending_key).expose(),
        lifetime,
    );
    let path = if pending.setup {
        "/_portcullis/2fa/setup"
    } else {
        "/_portcullis/2fa"
    };
    let rd: String = form_urlencoded::byte_serialize(safe_redirect(rd).as_bytes()).collect();
    Reply::redirect(303, &format!("{path}?rd={rd}")).cookie(cookie)
}

fn captcha_reply(id: String, answer: String) -> Option<CaptchaReply> {
    (!id.is_empty()).then_some(CaptchaReply { id, answer })
}

/// A sign-in replaces whatever session the browser had: the old one is ended, not reused.
pub async fn end_previous(site: &Site, cfg: &Config, facts: &Facts) {
    if let Ok(Some((_, live))) = current(site, cfg, facts).await
        && let Err(e) = site.sessions.end(&live, Ended::Logout).await
    {
        tracing::warn!(error = %e, "could not end the previous session");
    }
}

#[derive(Deserialize)]
struct ApiLoginBody {
    #[serde(default)]
    code: Option<String>,
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

/// What `api/login` and `api/session` say about a signed-in person.
pub fn identity_json(identity: &Identity, expires_in: i64) -> serde_json::Value {
    json!({
        "user": identity.login,
        "email": identity.email,
        "name": identity.name,
        "groups": identity.groups,
        "expires_in": expires_in,
    })
}

/// `POST api/login`: JSON in, JSON out.
pub async fn api(site: &Site, cfg: &Config, req: &Request<'_>) -> Handled {
    // Requiring JSON forces a CORS preflight on cross-site requests: no form can post here.
    if !req.is_json() {
        return Ok(Reply::json(415, json!({"error": "unsupported_media_type"})));
    }
    if req.origin(cfg) == Origin::CrossSite {
        return Ok(Reply::json(403, json!({"error": "csrf"})));
    }
    let Ok(body) = serde_json::from_slice::<ApiLoginBody>(req.body) else {
        return Ok(Reply::json(400, json!({"error": "bad_request"})));
    };
    let attempt = Attempt {
        login: body.login,
        password: Password::new(body.password),
        remember: body.remember,
        client: req.facts.client.clone(),
        addr: req.facts.addr,
        captcha: captcha_reply(body.captcha_id, body.captcha_answer),
        code: body.code.map(OneTimeCode::new),
    };
    let outcome = site.signin.attempt(cfg, attempt).await?;
    let issued = match next_of(outcome) {
        Next::Issued(issued, _) => issued,
        Next::SecondStep(Pending { setup: false, .. }) => {
            return Ok(Reply::json(401, json!({"error": "two_factor_required"})));
        }
        Next::SecondStep(Pending { setup: true, .. }) => {
            return Ok(Reply::json(
                403,
                json!({"error": "two_factor_setup_required"}),
            ));
        }
        Next::Restart => return Ok(Reply::json(401, json!({"error": "invalid_credentials"}))),
        Next::Refused(r) => return Ok(r.json()),
    };
    end_previous(site, cfg, req.facts).await;
    let names = &cfg.cookies;
    let expires_in = issued.live.expires_in(site.sessions.now(), &cfg.session);
    let mut reply = Reply::json(200, identity_json(&issued.live.identity, expires_in))
        .cookie(names.set(&names.session, issued.token.expose(), None));
    if let Some(r) = issued.remember {
        reply = reply.cookie(names.set(&names.remember, &r.expose(), cfg.session.remember_me));
    }
    Ok(reply)
}
