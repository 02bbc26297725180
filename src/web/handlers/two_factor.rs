//! Two-step verification in the browser: the second step of a sign-in (`2fa`: the code from
//! an app, or a backup code) and setting up the factor (`2fa/setup`: right after the password
//! for a user who must, or signed in), each without JavaScript and readable on a phone. A
//! pending sign-in (`core::secret::Pending`, an HttpOnly cookie of at most 5 minutes) carries
//! the first step; the forms carry the login CSRF token, or the session's when signed in.

use super::login::{Next, csrf_cookie, csrf_ok, next_of, session_cookies, signed_in};
use super::{Handled, Site, current};
use crate::config::Config;
use crate::core::identity::User;
use crate::core::secret::{OneTimeCode, Password, Pending, SessionToken};
use crate::policy::origin::Origin;
use crate::policy::route::{LOGIN_PATH, safe_redirect};
use crate::service::signin::{Outcome, SecondInput};
use crate::service::two_factor::Enrolment;
use crate::web::pages::{self, SetupView, TwoFactorView, messages};
use crate::web::reply::Reply;
use crate::web::request::Request;

/// The pending sign-in the browser carries, if it is ours and alive.
fn pending(site: &Site, cfg: &Config, req: &Request<'_>) -> Option<Pending> {
    let cookie = req.cookie(&cfg.cookies.pending)?;
    Pending::open(&site.pending_key, cookie, site.clock.now())
}

/// Where to go afterwards: `rd` of the query (a page) or of the form (a post).
fn rd(req: &Request<'_>) -> String {
    req.query("rd")
        .or_else(|| Some(req.field("rd")).filter(|r| !r.is_empty()))
        .map_or_else(|| "/".to_string(), |r| safe_redirect(&r).to_string())
}

/// No pending sign-in (never made, expired, or done): back to the login page.
fn to_login(rd: &str, method_post: bool) -> Reply {
    let rd: String = form_urlencoded::byte_serialize(rd.as_bytes()).collect();
    let status = if method_post { 303 } else { 302 };
    Reply::redirect(status, &format!("{LOGIN_PATH}?rd={rd}&expired=1"))
}

fn code_page(
    site: &Site,
    cfg: &Config,
    req: &Request<'_>,
    status: u16,
    error: Option<&str>,
) -> Reply {
    let (csrf, set) = csrf_cookie(site, cfg, req.facts);
    let rd = rd(req);
    let backup = req.query("backup").is_some()
        || (req.method() == http::Method::POST
            && OneTimeCode::new(req.field("code")).digits().is_none());
    let html = pages::two_factor_page(&TwoFactorView {
        error,
        csrf: &csrf,
        rd: &rd,
        backup,
    });
    Reply::html(status, html).cookies(set)
}

/// `GET 2fa`.
pub async fn page(site: &Site, cfg: &Config, req: &Request<'_>) -> Handled {
    match pending(site, cfg, req) {
        Some(p) if !p.setup => Ok(code_page(site, cfg, req, 200, None)),
        _ => Ok(to_login(&rd(req), false)),
    }
}

/// `POST 2fa`: the code (or a backup code) for a pending sign-in.
pub async fn form(site: &Site, cfg: &Config, req: &Request<'_>) -> Handled {
    if !csrf_ok(site, cfg, req) {
        return Ok(code_page(site, cfg, req, 403, Some(messages::FORM_EXPIRED)));
    }
    let Some(p) = pending(site, cfg, req).filter(|p| !p.setup) else {
        return Ok(to_login(&rd(req), true));
    };
    let code = OneTimeCode::new(req.field("code"));
    let (client, addr) = (&req.facts.client, req.facts.addr);
    let input = SecondInput::Code(Some(&code));
    let outcome = site.signin.resume(cfg, &p, input, client, addr).await?;
    Ok(match next_of(outcome) {
        Next::Issued(issued, _) => signed_in(site, cfg, req, issued, &rd(req)).await,
        Next::SecondStep(_) => code_page(site, cfg, req, 401, Some(messages::ENTER_CODE)),
        Next::Restart => {
            to_login(&rd(req), true).cookies([cfg.cookies.clear(&cfg.cookies.pending)])
        }
        Next::Refused(r) if r.error == "invalid_code" || r.status == 423 || r.status == 429 => {
            r.retry_header(code_page(site, cfg, req, r.status, Some(r.message)))
        }
        // The account can no longer sign in (dismissed, restricted, gone): the attempt ends.
        Next::Refused(r) => Reply::page(r.status, "Sign-in refused", r.message)
            .cookies([cfg.cookies.clear(&cfg.cookies.pending)]),
    })
}

/// Who is setting up a factor: someone signed in (`codes_left`: the factor is on already,
/// with that many backup codes), or a pending sign-in that must.
enum Enroller {
    SignedIn {
        token: SessionToken,
        user: User,
        codes_left: Option<u64>,
    },
    Pending {
        pending: Pending,
        user: User,
    },
}

impl Enroller {
    fn user(&self) -> &User {
        match self {
            Enroller::SignedIn { user, .. } | Enroller::Pending { user, .. } => user,
        }
    }

    /// Changing a factor that is on asks for the password again.
    fn replacing(&self) -> bool {
        matches!(
            self,
            Enroller::SignedIn {
                codes_left: Some(_),
                ..
            }
        )
    }
}

async fn enroller(
    site: &Site,
    cfg: &Config,
    req: &Request<'_>,
) -> Result<Option<Enroller>, super::Failure> {
    if let Some((token, live)) = current(site, cfg, req.facts).await? {
        let Some(user) = site.sessions.user(live.identity.user_id).await? else {
            return Ok(None);
        };
        let codes_left = site.two_factor.codes_left(&user).await?;
        return Ok(Some(Enroller::SignedIn {
            token,
            user,
            codes_left,
        }));
    }
    let Some(pending) = pending(site, cfg, req).filter(|p| p.setup) else {
        return Ok(None);
    };
    let user = site.sessions.user(pending.user_id).await?;
    Ok(user.map(|user| Enroller::Pending { pending, user }))
}

/// The CSRF token of the enroller's forms: the session's, or the login form's.
fn form_token(
    site: &Site,
    cfg: &Config,
    req: &Request<'_>,
    who: &Enroller,
) -> (String, Option<String>) {
    match who {
        Enroller::SignedIn { token, .. } => (token.csrf().expose().to_string(), None),
        Enroller::Pending { .. } => csrf_cookie(site, cfg, req.facts),
    }
}

fn setup_reply(
    site: &Site,
    cfg: &Config,
    req: &Request<'_>,
    who: &Enroller,
    enrolment: &Enrolment,
    status: u16,
    error: Option<&str>,
) -> Reply {
    let (csrf, set) = form_token(site, cfg, req, who);
    let notice = match who {
        Enroller::Pending { .. } => messages::SET_UP,
        Enroller::SignedIn {
            codes_left: None, ..
        } => "Protect your account with a code from your phone at each sign-in.",
        Enroller::SignedIn { .. } => {
            "Move two-step verification to a new phone: the old one stops working."
        }
    };
    let html = pages::setup_page(&SetupView {
        notice,
        error,
        csrf: &csrf,
        rd: &rd(req),
        uri: &enrolment.uri,
        grouped: &enrolment.grouped,
        sealed: &enrolment.sealed,
        digits: cfg.two_factor.totp.digits,
        ask_password: who.replacing(),
    });
    Reply::html(status, html).cookies(set)
}

fn status_reply(
    req: &Request<'_>,
    token: &SessionToken,
    left: u64,
    refused: Option<(u16, &str)>,
) -> Reply {
    let (status, error) = refused.map_or((200, None), |(s, e)| (s, Some(e)));
    let csrf = token.csrf();
    Reply::html(
        status,
        pages::two_factor_status_page(left, error, csrf.expose(), &rd(req)),
    )
}

/// `GET 2fa/setup`: the QR code, the key and the form; for someone signed in whose factor is
/// on already, how many backup codes are left (and, `?new=1`, a move to a new phone: the help
/// articles' "update two-step verification on a new phone").
pub async fn setup_page(site: &Site, cfg: &Config, req: &Request<'_>) -> Handled {
    let Some(who) = enroller(site, cfg, req).await? else {
        return Ok(to_login(&rd(req), false));
    };
    if let Enroller::SignedIn {
        token,
        codes_left: Some(left),
        ..
    } = &who
        && req.query("new").is_none()
    {
        return Ok(status_reply(req, token, *left, None));
    }
    let enrolment = site.two_factor.start_enrolment(&cfg.two_factor, who.user());
    Ok(setup_reply(site, cfg, req, &who, &enrolment, 200, None))
}

/// Whether a form of the enroller's came from our own page: the session's token (or a
/// same-origin request) when signed in, the login form's checks otherwise.
fn form_ok(site: &Site, cfg: &Config, req: &Request<'_>, who: &Enroller) -> bool {
    match who {
        Enroller::SignedIn { token, .. } => {
            let origin = req.origin(cfg);
            origin != Origin::CrossSite
                && (origin == Origin::SameOrigin || token.csrf().matches(&req.field("csrf")))
        }
        Enroller::Pending { .. } => csrf_ok(site, cfg, req),
    }
}

/// The password typed again before a change to a factor that is on: `None` when right, else
/// the status and message to show.
async fn reconfirmed(
    site: &Site,
    cfg: &Config,
    req: &Request<'_>,
    who: &Enroller,
) -> Result<Option<(u16, &'static str)>, super::Failure> {
    if !who.replacing() {
        return Ok(None);
    }
    let password = Password::new(req.field("password"));
    let (client, addr) = (&req.facts.client, req.facts.addr);
    let refusal = site
        .signin
        .reconfirm(cfg, who.user(), &password, client, addr)
        .await?;
    Ok(refusal.map(|outcome| match outcome {
        Outcome::InvalidCredentials { .. } => (401, messages::INCORRECT_PASSWORD),
        Outcome::Locked { .. } => (423, messages::TOO_MANY),
        _ => (429, messages::TOO_MANY),
    }))
}

/// `POST 2fa/setup`: the first code confirms the factor (then the backup codes, once), or
/// (`action=codes`, signed in) a new set of backup codes. Changing a factor that is on (a new
/// phone, new codes) needs the password again.
pub async fn setup_form(site: &Site, cfg: &Config, req: &Request<'_>) -> Handled {
    let Some(who) = enroller(site, cfg, req).await? else {
        return Ok(to_login(&rd(req), true));
    };
    if !form_ok(site, cfg, req, &who) {
        return Ok(Reply::page(403, "Form expired", messages::FORM_EXPIRED));
    }
    if req.field("action") == "codes" {
        return new_codes(site, cfg, req, &who).await;
    }
    let sealed = req.field("enrolment");
    let user = who.user();
    let Some(enrolment) = site
        .two_factor
        .resume_enrolment(&cfg.two_factor, user, &sealed)
    else {
        let fresh = site.two_factor.start_enrolment(&cfg.two_factor, user);
        return Ok(setup_reply(
            site,
            cfg,
            req,
            &who,
            &fresh,
            400,
            Some(messages::FORM_EXPIRED),
        ));
    };
    if let Some((status, message)) = reconfirmed(site, cfg, req, &who).await? {
        return Ok(setup_reply(
            site,
            cfg,
            req,
            &who,
            &enrolment,
            status,
            Some(message),
        ));
    }
    let code = OneTimeCode::new(req.field("code"));
    let Enroller::Pending { pending, .. } = &who else {
        let client = &req.facts.client;
        let confirmed = site
            .two_factor
            .confirm(&cfg.two_factor, user, &sealed, &code, client);
        return Ok(match confirmed.await? {
            Some(codes) => codes_reply(codes, &rd(req)),
            None => setup_reply(
                site,
                cfg,
                req,
                &who,
                &enrolment,
                401,
                Some(messages::INCORRECT_CODE),
            ),
        });
    };
    let input = SecondInput::Enrol {
        sealed: &sealed,
        code: &code,
    };
    enrolled_at_sign_in(site, cfg, req, pending, input, |status, message| {
        setup_reply(site, cfg, req, &who, &enrolment, status, Some(message))
    })
    .await
}

/// A factor set up in the middle of a sign-in (a user who must): the session and the backup
/// codes, or `wrong` (the setup page again, with the message) when the code is wrong.
async fn enrolled_at_sign_in(
    site: &Site,
    cfg: &Config,
    req: &Request<'_>,
    pending: &Pending,
    input: SecondInput<'_>,
    wrong: impl Fn(u16, &str) -> Reply,
) -> Handled {
    let next = rd(req);
    let (client, addr) = (&req.facts.client, req.facts.addr);
    let outcome = site
        .signin
        .resume(cfg, pending, input, client, addr)
        .await?;
    let end_pending = || [cfg.cookies.clear(&cfg.cookies.pending)];
    Ok(match next_of(outcome) {
        Next::Issued(issued, codes) => {
            super::login::end_previous(site, cfg, req.facts).await;
            codes_reply(codes, &next).cookies(session_cookies(cfg, &issued))
        }
        Next::Refused(r) if r.error == "invalid_code" || r.status == 423 || r.status == 429 => {
            r.retry_header(wrong(r.status, r.message))
        }
        Next::SecondStep(_) => wrong(401, messages::SET_UP),
        Next::Restart => to_login(&next, true).cookies(end_pending()),
        Next::Refused(r) => {
            Reply::page(r.status, "Sign-in refused", r.message).cookies(end_pending())
        }
    })
}

/// `action=codes`: a new set of backup codes for someone signed in whose factor is on, after
/// the password again.
async fn new_codes(site: &Site, cfg: &Config, req: &Request<'_>, who: &Enroller) -> Handled {
    let Enroller::SignedIn {
        token,
        user,
        codes_left: Some(left),
    } = who
    else {
        return Ok(Reply::redirect(303, "/_portcullis/2fa/setup"));
    };
    if let Some(refused) = reconfirmed(site, cfg, req, who).await? {
        return Ok(status_reply(req, token, *left, Some(refused)));
    }
    let client = &req.facts.client;
    let codes = site
        .two_factor
        .regenerate_codes(&cfg.two_factor, user, client)
        .await?;
    Ok(codes_reply(codes, &rd(req)))
}

fn codes_reply(codes: Vec<crate::core::secret::BackupCode>, next: &str) -> Reply {
    let shown = codes.iter().map(|c| c.display()).collect();
    Reply::html(200, pages::backup_codes_page(shown, next))
}
