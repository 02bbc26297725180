//! Password recovery in the browser (SPEC §13): "Forgot your password?" (`forgot`), the link
//! from the e-mail and the new password (`reset`), and the SMS code (a `reset` post with a
//! phone and a code instead of a token). No JavaScript; every form carries the login CSRF
//! token. The answers never tell whether an account exists.

use super::login::{csrf_cookie, csrf_ok};
use super::{Handled, Site, budget_spent};
use crate::config::Config;
use crate::core::secret::{Password, RecoveryToken};
use crate::policy::recovery::Channel;
use crate::policy::route::LOGIN_PATH;
use crate::service::messenger::spoken;
use crate::service::recovery::{CodeCheck, Link, Requested, Reset};
use crate::web::pages::{self, CodePage, ForgotView, ResetPage, messages};
use crate::web::reply::Reply;
use crate::web::request::Request;

/// Whether people can ask for a way back in themselves: mail or SMS is configured. (A link
/// from `user send-reset --print-link` works either way.)
pub fn offered(cfg: &Config) -> bool {
    cfg.mail.enabled() || cfg.sms.webhook.is_some()
}

fn not_offered() -> Reply {
    Reply::page(
        404,
        "Not available",
        "Password recovery is not available here. Contact your administrator.",
    )
}

fn forgot(site: &Site, cfg: &Config, req: &Request<'_>, status: u16, view: ForgotView) -> Reply {
    let (csrf, set) = csrf_cookie(site, cfg, req.facts);
    let view = ForgotView {
        csrf: &csrf,
        sms: cfg.sms.webhook.is_some(),
        ..view
    };
    Reply::html(status, pages::forgot_page(&view)).cookies(set)
}

fn error_view<'a>(error: &'a str, login: &'a str) -> ForgotView<'a> {
    ForgotView {
        error: Some(error),
        login,
        ..ForgotView::default()
    }
}

/// `GET forgot`.
pub fn forgot_page(site: &Site, cfg: &Config, req: &Request<'_>) -> Reply {
    if !offered(cfg) {
        return not_offered();
    }
    forgot(site, cfg, req, 200, ForgotView::default())
}

/// `POST forgot`: queues a link or a code, and says the same whoever was named.
pub async fn forgot_form(site: &Site, cfg: &Config, req: &Request<'_>) -> Handled {
    if !offered(cfg) {
        return Ok(not_offered());
    }
    let typed = req.field("login");
    let typed = typed.trim();
    if !csrf_ok(site, cfg, req) {
        return Ok(forgot(
            site,
            cfg,
            req,
            403,
            error_view(messages::FORM_EXPIRED, typed),
        ));
    }
    if typed.is_empty() {
        let error = "Enter your login, e-mail or phone number";
        return Ok(forgot(site, cfg, req, 400, error_view(error, typed)));
    }
    let is_phone = crate::core::identity::phone_key(typed).is_some();
    if Channel::of(is_phone, cfg.sms.webhook.is_some()) == Channel::Email && !cfg.mail.enabled() {
        let view = error_view(messages::NO_EMAIL_RECOVERY, typed);
        return Ok(forgot(site, cfg, req, 400, view));
    }
    let (client, addr) = (&req.facts.client, &req.facts.addr);
    Ok(
        match site.recovery.request(cfg, typed, client, addr).await? {
            Requested::Sent(Channel::Email) => {
                let view = ForgotView {
                    notice: Some(messages::SENT_EMAIL),
                    ..ForgotView::default()
                };
                forgot(site, cfg, req, 200, view)
            }
            Requested::Sent(Channel::Sms) => code_form(site, cfg, req, 200, typed, None),
            Requested::Wait(seconds) => {
                let wait = messages::wait(seconds);
                forgot(site, cfg, req, 429, error_view(&wait, typed))
                    .header("Retry-After", seconds.to_string())
            }
            Requested::Throttled(seconds) => {
                forgot(site, cfg, req, 429, error_view(messages::TOO_MANY, typed))
                    .header("Retry-After", seconds.to_string())
            }
        },
    )
}

fn code_form(
    site: &Site,
    cfg: &Config,
    req: &Request<'_>,
    status: u16,
    phone: &str,
    error: Option<&str>,
) -> Reply {
    let (csrf, set) = csrf_cookie(site, cfg, req.facts);
    let lifetime = spoken(cfg.recovery.sms_code_lifetime);
    let html = pages::code_page(&CodePage {
        title: "Enter the code",
        error,
        notice: error.is_none().then_some(messages::SENT_SMS),
        csrf: &csrf,
        phone,
        lifetime: &lifetime,
    });
    Reply::html(status, html).cookies(set)
}

/// Whose new password the form sets, and how they got here (for the metrics only).
struct ResetFor<'a> {
    token: &'a RecoveryToken,
    login: &'a str,
    via: Channel,
}

fn password_form(
    site: &Site,
    cfg: &Config,
    req: &Request<'_>,
    status: u16,
    form: &ResetFor,
    error: Option<&str>,
) -> Reply {
    let (csrf, set) = csrf_cookie(site, cfg, req.facts);
    let html = pages::reset_page(&ResetPage {
        title: "Choose a new password",
        error,
        csrf: &csrf,
        token: form.token.expose(),
        via: form.via.as_str(),
        login: form.login,
        min_length: cfg.passwords.min_length,
    });
    Reply::html(status, html).cookies(set)
}

/// A link that does not work (any more): the forgot form, to ask for a new one, or a page
/// saying so where nobody can ask.
fn invalid(site: &Site, cfg: &Config, req: &Request<'_>) -> Reply {
    if !offered(cfg) {
        return Reply::page(400, "Invalid link", messages::INVALID_CHECKWORD);
    }
    forgot(
        site,
        cfg,
        req,
        400,
        error_view(messages::INVALID_CHECKWORD, ""),
    )
}

/// `GET reset?token=…`: the new password's form for a live link.
pub async fn reset_page(site: &Site, cfg: &Config, req: &Request<'_>) -> Handled {
    if let Some(refused) = budget_spent(site, cfg, req).await? {
        return Ok(refused);
    }
    let token = req.query("token").and_then(|t| RecoveryToken::parse(&t));
    match (
        site.recovery
            .open_link(token.as_ref(), &req.facts.client)
            .await?,
        token,
    ) {
        (Link::Live(user), Some(t)) => {
            let form = ResetFor {
                token: &t,
                login: &user.login,
                via: Channel::Email,
            };
            Ok(password_form(site, cfg, req, 200, &form, None))
        }
        _ => Ok(invalid(site, cfg, req)),
    }
}

/// `POST reset`: the new password for a link's token, or an SMS code for a phone.
pub async fn reset_form(site: &Site, cfg: &Config, req: &Request<'_>) -> Handled {
    let token_field = req.field("token");
    if token_field.is_empty() {
        return sms_code(site, cfg, req).await;
    }
    let token = RecoveryToken::parse(&token_field);
    let via = match req.field("via").as_str() {
        "sms" => Channel::Sms,
        _ => Channel::Email,
    };
    if !csrf_ok(site, cfg, req) {
        return Ok(match &token {
            Some(t) => {
                let form = ResetFor {
                    token: t,
                    login: "",
                    via,
                };
                password_form(site, cfg, req, 403, &form, Some(messages::FORM_EXPIRED))
            }
            None => invalid(site, cfg, req),
        });
    }
    if let Some(refused) = budget_spent(site, cfg, req).await? {
        return Ok(refused);
    }
    let password = Password::new(req.field("password"));
    let again = req.field("password2");
    let client = &req.facts.client;
    let result = site
        .recovery
        .reset(cfg, token.as_ref(), password, &again, via, client);
    Ok(match (result.await?, token) {
        (Reset::Done, _) => {
            let names = &cfg.cookies;
            // Whatever the browser held is over: the user's sessions all ended.
            Reply::redirect(303, &format!("{LOGIN_PATH}?reset=1")).cookies([
                names.clear(&names.session),
                names.clear(&names.remember),
                names.clear(&names.pending),
            ])
        }
        (Reset::Refused { refusal, login }, Some(t)) => {
            let message = refusal.message();
            let form = ResetFor {
                token: &t,
                login: &login,
                via,
            };
            password_form(site, cfg, req, 400, &form, Some(&message))
        }
        _ => invalid(site, cfg, req),
    })
}

/// `POST reset` with `phone` and `code`.
async fn sms_code(site: &Site, cfg: &Config, req: &Request<'_>) -> Handled {
    let phone = req.field("phone");
    if cfg.sms.webhook.is_none() || phone.is_empty() {
        return Ok(invalid(site, cfg, req));
    }
    if !csrf_ok(site, cfg, req) {
        return Ok(code_form(
            site,
            cfg,
            req,
            403,
            &phone,
            Some(messages::FORM_EXPIRED),
        ));
    }
    let (client, addr) = (&req.facts.client, &req.facts.addr);
    let code = req.field("code");
    Ok(
        match site
            .recovery
            .check_code(cfg, &phone, &code, client, addr)
            .await?
        {
            CodeCheck::Right { token, login } => {
                let form = ResetFor {
                    token: &token,
                    login: &login,
                    via: Channel::Sms,
                };
                password_form(site, cfg, req, 200, &form, None)
            }
            // One answer for a wrong code and a spent one: an unknown phone has no code to
            // spend, so telling them apart would tell which phones have an account.
            CodeCheck::Wrong | CodeCheck::Ended => {
                code_form(site, cfg, req, 401, &phone, Some(messages::CODE_REFUSED))
            }
            CodeCheck::Throttled(seconds) => {
                code_form(site, cfg, req, 429, &phone, Some(messages::TOO_MANY))
                    .header("Retry-After", seconds.to_string())
            }
        },
    )
}
