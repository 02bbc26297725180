//! The account page (SPEC §14) and its JSON API: the profile, the user's own sessions with an
//! End button each, "Log out on all devices", a new password, two-step verification's state,
//! and the recent sign-ins. Forms carry the session's CSRF token (always: a same-origin
//! request without it is refused too); the API takes JSON from our own origin only.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;

use super::login::{csrf_cookie, csrf_ok, session_cookies};
use super::{Failure, Handled, Site, current};
use crate::config::Config;
use crate::core::identity::User;
use crate::core::secret::{ContactChange, OneTimeCode, Password, SessionToken};
use crate::core::time::rfc3339;
use crate::policy::device;
use crate::policy::origin::Origin;
use crate::policy::route::LOGIN_PATH;
use crate::policy::totp;
use crate::service::account::{
    EmailConfirmed, NewPassword, NotQueued, PasswordChange, PhoneConfirmed, TurnOff,
};
use crate::service::sessions::{LiveSession, SessionView};
use crate::service::signin::Outcome;
use crate::web::pages::{
    self, AccountView, ActivityRow, EmailConfirmPage, SessionRow, messages, shown_time,
};
use crate::web::reply::Reply;
use crate::web::request::Request;

const ACCOUNT_PATH: &str = "/_portcullis/account";

/// The signed-in user, with the session's token and state.
struct Me {
    token: SessionToken,
    live: Arc<LiveSession>,
    user: User,
}

async fn me(site: &Site, cfg: &Config, req: &Request<'_>) -> Result<Option<Me>, Failure> {
    let Some((token, live)) = current(site, cfg, req.facts).await? else {
        return Ok(None);
    };
    let user = site.sessions.user(live.identity.user_id).await?;
    Ok(user
        .filter(|u| !u.dismissed)
        .map(|user| Me { token, live, user }))
}

fn to_login(status: u16) -> Reply {
    let rd: String = form_urlencoded::byte_serialize(ACCOUNT_PATH.as_bytes()).collect();
    Reply::redirect(status, &format!("{LOGIN_PATH}?rd={rd}"))
}

/// The page, with a notice or an error.
async fn render(
    site: &Site,
    cfg: &Config,
    me: &Me,
    status: u16,
    notice: Option<&str>,
    error: Option<&str>,
) -> Handled {
    render_with(site, cfg, me, status, notice, error, None).await
}

/// The page, and (`phone_change`) the form for the code sent to a new phone.
async fn render_with(
    site: &Site,
    cfg: &Config,
    me: &Me,
    status: u16,
    notice: Option<&str>,
    error: Option<&str>,
    phone_change: Option<&str>,
) -> Handled {
    let sessions = site
        .sessions
        .of_user(me.user.id, &me.live.hash, &cfg.session)
        .await?
        .into_iter()
        .map(|s| SessionRow {
            signed_in: shown_time(s.signed_in),
            last_active: shown_time(s.last_active),
            handle: s.handle,
            device: s.device,
            ip: s.ip,
            this_device: s.this_device,
        })
        .collect();
    let activity = site
        .account
        .recent(&me.user)
        .await?
        .into_iter()
        .map(|e| ActivityRow {
            what: if e.event == "login_success" {
                "Signed in"
            } else {
                "Failed sign-in"
            },
            when: shown_time(e.ts),
            device: device::summary(&e.user_agent),
            ip: e.ip,
        })
        .collect();
    let two_step = site.two_factor.status(&me.user).await?;
    let csrf = me.token.csrf();
    let html = pages::account_page(&AccountView {
        notice,
        error,
        csrf: csrf.expose(),
        user: &me.user,
        codes_left: two_step.enrolled.then_some(two_step.codes_left),
        sessions,
        activity,
        min_length: cfg.passwords.min_length,
        mail: cfg.mail.enabled(),
        sms: cfg.sms.webhook.is_some(),
        phone_change,
        two_step_required: totp::required(&cfg.two_factor, &me.user.groups),
        turned_off_until: two_step.disabled_until.map(shown_time),
    });
    Ok(Reply::html(status, html))
}

/// `GET account`.
pub async fn page(site: &Site, cfg: &Config, req: &Request<'_>) -> Handled {
    let Some(me) = me(site, cfg, req).await? else {
        return Ok(to_login(302));
    };
    let notice = if req.query("changed").is_some() {
        Some(messages::PASSWORD_CHANGED)
    } else if req.query("ended").is_some() {
        Some(messages::SESSION_ENDED)
    } else if req.query("email_sent").is_some() {
        Some(messages::EMAIL_LINK_SENT)
    } else if req.query("email_changed").is_some() {
        Some(messages::EMAIL_CHANGED)
    } else if req.query("phone_changed").is_some() {
        Some(messages::PHONE_CHANGED)
    } else if req.query("two_step_off").is_some() {
        Some(messages::TWO_STEP_OFF)
    } else {
        None
    };
    render(site, cfg, &me, 200, notice, None).await
}

/// `POST account`: `action` = `end` (with `session`, a handle), `logout_all`, `password`,
/// `email`, `phone`, `phone_code` or `two_factor_off` (docs/reference.md, Endpoints).
pub async fn form(site: &Site, cfg: &Config, req: &Request<'_>) -> Handled {
    let Some(me) = me(site, cfg, req).await? else {
        return Ok(to_login(303));
    };
    if req.origin(cfg) == Origin::CrossSite || !me.token.csrf().matches(&req.field("csrf")) {
        return Ok(Reply::page(403, "Form expired", messages::FORM_EXPIRED));
    }
    let client = &req.facts.client;
    match req.field("action").as_str() {
        "end" => {
            let handle = req.field("session");
            let ended = site.account.end_one(cfg, &me.user, &handle, client).await?;
            let to = if ended {
                format!("{ACCOUNT_PATH}?ended=1")
            } else {
                ACCOUNT_PATH.to_string()
            };
            Ok(Reply::redirect(303, &to))
        }
        "logout_all" => {
            site.account.logout_all(&me.user, client).await?;
            let names = &cfg.cookies;
            Ok(Reply::redirect(303, &format!("{LOGIN_PATH}?signed_out=1"))
                .cookies([names.clear(&names.session), names.clear(&names.remember)]))
        }
        "password" => new_password(site, cfg, req, &me).await,
        "email" => email_change(site, cfg, req, &me).await,
        "phone" => phone_change(site, cfg, req, &me).await,
        "phone_code" => phone_code(site, cfg, req, &me).await,
        "two_factor_off" => two_factor_off(site, cfg, req, &me).await,
        _ => Ok(Reply::page(
            400,
            "Bad request",
            "The form could not be read.",
        )),
    }
}

/// `action=password`: the current password and the new one twice.
async fn new_password(site: &Site, cfg: &Config, req: &Request<'_>, me: &Me) -> Handled {
    let form = NewPassword {
        current: Password::new(req.field("current")),
        new: Password::new(req.field("password")),
        again: Password::new(req.field("password2")),
    };
    let (client, addr) = (&req.facts.client, req.facts.addr);
    let change = site
        .account
        .change_password(cfg, &me.user, form, client, addr);
    match change.await? {
        PasswordChange::Done(issued) => {
            Ok(Reply::redirect(303, &format!("{ACCOUNT_PATH}?changed=1"))
                .cookies(session_cookies(cfg, &issued)))
        }
        PasswordChange::Refused(outcome) => {
            let (status, message) = refusal(&outcome);
            render(site, cfg, me, status, None, Some(message)).await
        }
        PasswordChange::Invalid(refusal) => {
            let message = refusal.message();
            render(site, cfg, me, 400, None, Some(&message)).await
        }
    }
}

/// `action=email`: the new address and the current password; the link goes to the address.
async fn email_change(site: &Site, cfg: &Config, req: &Request<'_>, me: &Me) -> Handled {
    let (new_email, current) = (req.field("new_email"), Password::new(req.field("current")));
    let (client, addr) = (&req.facts.client, req.facts.addr);
    let change = site
        .account
        .request_email_change(cfg, &me.user, &new_email, &current, client, addr);
    match change.await? {
        Ok(()) => Ok(Reply::redirect(
            303,
            &format!("{ACCOUNT_PATH}?email_sent=1"),
        )),
        Err(why) => not_queued(site, cfg, me, why).await,
    }
}

/// A new e-mail address or phone number that was not queued: the page, saying why.
async fn not_queued(site: &Site, cfg: &Config, me: &Me, why: NotQueued) -> Handled {
    match why {
        NotQueued::Wait(seconds) => {
            let wait = messages::wait(seconds);
            Ok(render(site, cfg, me, 429, None, Some(&wait))
                .await?
                .header("Retry-After", seconds.to_string()))
        }
        NotQueued::Refused(outcome) => {
            let (status, message) = refusal(&outcome);
            render(site, cfg, me, status, None, Some(message)).await
        }
        NotQueued::Invalid(message) => render(site, cfg, me, 400, None, Some(&message)).await,
    }
}

/// `action=two_factor_off`: the current password and a code.
async fn two_factor_off(site: &Site, cfg: &Config, req: &Request<'_>, me: &Me) -> Handled {
    let (current, code) = (
        Password::new(req.field("current")),
        OneTimeCode::new(req.field("code")),
    );
    let (client, addr) = (&req.facts.client, req.facts.addr);
    let off = site
        .account
        .turn_off_two_factor(cfg, &me.user, &current, &code, client, addr);
    match off.await? {
        TurnOff::Done(issued) => Ok(Reply::redirect(
            303,
            &format!("{ACCOUNT_PATH}?two_step_off=1"),
        )
        .cookies(session_cookies(cfg, &issued))),
        TurnOff::Refused(outcome) => {
            let (status, message) = refusal(&outcome);
            render(site, cfg, me, status, None, Some(message)).await
        }
        TurnOff::WrongCode => {
            render(site, cfg, me, 401, None, Some(messages::INCORRECT_CODE)).await
        }
        TurnOff::NotAllowed => {
            let message = "Two-step verification cannot be turned off here";
            render(site, cfg, me, 403, None, Some(message)).await
        }
    }
}

/// `action=phone`: the new number and the current password; then the code's form.
async fn phone_change(site: &Site, cfg: &Config, req: &Request<'_>, me: &Me) -> Handled {
    let (new_phone, current) = (req.field("new_phone"), Password::new(req.field("current")));
    let (client, addr) = (&req.facts.client, req.facts.addr);
    let change = site
        .account
        .request_phone_change(cfg, &me.user, &new_phone, &current, client, addr);
    match change.await? {
        Ok(sealed) => {
            let notice = Some(messages::PHONE_CODE_SENT);
            render_with(site, cfg, me, 200, notice, None, Some(&sealed)).await
        }
        Err(why) => not_queued(site, cfg, me, why).await,
    }
}

/// `action=phone_code`: the code from the SMS, with the form's signed change.
async fn phone_code(site: &Site, cfg: &Config, req: &Request<'_>, me: &Me) -> Handled {
    let (change, code) = (req.field("change"), req.field("code"));
    let (client, addr) = (&req.facts.client, &req.facts.addr);
    let confirmed = site
        .account
        .confirm_phone(cfg, &me.user, &change, &code, client, addr);
    match confirmed.await? {
        PhoneConfirmed::Done(_) => Ok(Reply::redirect(
            303,
            &format!("{ACCOUNT_PATH}?phone_changed=1"),
        )),
        PhoneConfirmed::Wrong => {
            let error = Some(messages::INCORRECT_CODE);
            render_with(site, cfg, me, 401, None, error, Some(&change)).await
        }
        PhoneConfirmed::Invalid => {
            render(site, cfg, me, 400, None, Some(messages::CODE_REFUSED)).await
        }
        PhoneConfirmed::Throttled(seconds) => {
            Ok(render(site, cfg, me, 429, None, Some(messages::TOO_MANY))
                .await?
                .header("Retry-After", seconds.to_string()))
        }
    }
}

/// `GET account/email?token=…`: what the link would change, and a button (a mail scanner that
/// follows links changes nothing).
pub async fn email_page(site: &Site, cfg: &Config, req: &Request<'_>) -> Handled {
    let token = req.query("token").unwrap_or_default();
    let now = site.clock.now();
    let Some(change) = ContactChange::open(site.recovery.email_change_key(), &token, now) else {
        return Ok(Reply::page(
            400,
            "Invalid link",
            messages::EMAIL_LINK_INVALID,
        ));
    };
    let (csrf, set) = csrf_cookie(site, cfg, req.facts);
    let html = pages::email_confirm_page(&EmailConfirmPage {
        title: "Confirm your new e-mail address",
        csrf: &csrf,
        token: &token,
        new_email: &change.new_value,
    });
    Ok(Reply::html(200, html).cookies(set))
}

/// `POST account/email`: `token`, `csrf` (the login form's: the link works in any browser).
pub async fn email_form(site: &Site, cfg: &Config, req: &Request<'_>) -> Handled {
    if !csrf_ok(site, cfg, req) {
        return Ok(Reply::page(403, "Form expired", messages::FORM_EXPIRED));
    }
    let token = req.field("token");
    Ok(
        match site
            .account
            .confirm_email(&token, &req.facts.client)
            .await?
        {
            EmailConfirmed::Done(_) => {
                Reply::redirect(303, &format!("{ACCOUNT_PATH}?email_changed=1"))
            }
            EmailConfirmed::Taken => Reply::page(
                409,
                "Address taken",
                "A user with this email already exists",
            ),
            EmailConfirmed::Invalid => {
                Reply::page(400, "Invalid link", messages::EMAIL_LINK_INVALID)
            }
        },
    )
}

/// The status and message of a current password that was refused.
fn refusal(outcome: &Outcome) -> (u16, &'static str) {
    match outcome {
        Outcome::InvalidCredentials { .. } => (401, messages::INCORRECT_PASSWORD),
        Outcome::Locked { .. } => (423, messages::TOO_MANY),
        _ => (429, messages::TOO_MANY),
    }
}

fn unauthenticated() -> Reply {
    Reply::json(401, json!({"error": "unauthenticated"}))
}

fn session_json(s: &SessionView) -> serde_json::Value {
    json!({
        "id": s.handle,
        "device": s.device,
        "ip": s.ip,
        "signed_in": rfc3339(s.signed_in),
        "last_active": rfc3339(s.last_active),
        "this_device": s.this_device,
    })
}

/// `GET api/account`.
pub async fn api_account(site: &Site, cfg: &Config, req: &Request<'_>) -> Handled {
    let Some(me) = me(site, cfg, req).await? else {
        return Ok(unauthenticated());
    };
    let codes_left = site.two_factor.codes_left(&me.user).await?;
    let u = &me.user;
    Ok(Reply::json(
        200,
        json!({
            "user": u.login,
            "email": u.email,
            "name": u.name,
            "phone": u.phone,
            "groups": u.groups,
            "two_factor": {"enabled": codes_left.is_some(), "backup_codes_left": codes_left},
        }),
    ))
}

/// `GET api/account/sessions`.
pub async fn api_sessions(site: &Site, cfg: &Config, req: &Request<'_>) -> Handled {
    let Some(me) = me(site, cfg, req).await? else {
        return Ok(unauthenticated());
    };
    let sessions = site
        .sessions
        .of_user(me.user.id, &me.live.hash, &cfg.session)
        .await?;
    let list: Vec<_> = sessions.iter().map(session_json).collect();
    Ok(Reply::json(200, json!({ "sessions": list })))
}

/// Whether a call that changes something may go on: never cross-site; a body must be JSON
/// (a form cannot send it without a preflight).
fn api_refused(cfg: &Config, req: &Request<'_>, needs_json: bool) -> Option<Reply> {
    if needs_json && !req.is_json() {
        return Some(Reply::json(415, json!({"error": "unsupported_media_type"})));
    }
    (req.origin(cfg) == Origin::CrossSite).then(|| Reply::json(403, json!({"error": "csrf"})))
}

/// `DELETE api/account/sessions/{id}`.
pub async fn api_end_session(
    site: &Site,
    cfg: &Config,
    req: &Request<'_>,
    handle: &str,
) -> Handled {
    let Some(me) = me(site, cfg, req).await? else {
        return Ok(unauthenticated());
    };
    if let Some(refused) = api_refused(cfg, req, false) {
        return Ok(refused);
    }
    Ok(
        match site
            .account
            .end_one(cfg, &me.user, handle, &req.facts.client)
            .await?
        {
            true => Reply::json(200, json!({"ok": true})),
            false => Reply::json(404, json!({"error": "not_found"})),
        },
    )
}

/// `POST api/account/logout-all`.
pub async fn api_logout_all(site: &Site, cfg: &Config, req: &Request<'_>) -> Handled {
    let Some(me) = me(site, cfg, req).await? else {
        return Ok(unauthenticated());
    };
    if let Some(refused) = api_refused(cfg, req, true) {
        return Ok(refused);
    }
    let ended = site.account.logout_all(&me.user, &req.facts.client).await?;
    let names = &cfg.cookies;
    Ok(Reply::json(200, json!({"ok": true, "ended": ended}))
        .cookies([names.clear(&names.session), names.clear(&names.remember)]))
}

#[derive(Deserialize)]
struct PasswordBody {
    #[serde(default)]
    current: String,
    #[serde(default)]
    password: String,
    /// The new password again.
    #[serde(default)]
    password2: Option<String>,
}

/// `POST api/account/password`: `{current, password, password2?}`.
pub async fn api_password(site: &Site, cfg: &Config, req: &Request<'_>) -> Handled {
    let Some(me) = me(site, cfg, req).await? else {
        return Ok(unauthenticated());
    };
    if let Some(refused) = api_refused(cfg, req, true) {
        return Ok(refused);
    }
    let Ok(body) = serde_json::from_slice::<PasswordBody>(req.body) else {
        return Ok(Reply::json(400, json!({"error": "bad_request"})));
    };
    let form = NewPassword {
        current: Password::new(body.current),
        again: Password::new(body.password2.unwrap_or_default()),
        new: Password::new(body.password),
    };
    let change =
        site.account
            .change_password(cfg, &me.user, form, &req.facts.client, req.facts.addr);
    Ok(match change.await? {
        PasswordChange::Done(issued) => {
            let names = &cfg.cookies;
            Reply::json(200, json!({"ok": true})).cookie(names.set(
                &names.session,
                issued.token.expose(),
                None,
            ))
        }
        PasswordChange::Refused(outcome) => {
            let (status, _) = refusal(&outcome);
            let error = if status == 401 {
                "invalid_credentials"
            } else {
                "throttled"
            };
            Reply::json(status, json!({"error": error}))
        }
        PasswordChange::Invalid(refusal) => Reply::json(
            400,
            json!({"error": "invalid_password", "message": refusal.message()}),
        ),
    })
}
