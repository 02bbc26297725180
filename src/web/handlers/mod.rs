//! The gateway's own endpoints under `/_portcullis/` (docs/reference.md, Endpoints), one file
//! per page family: each handler is a function from a request's facts to a `Reply`, with the
//! services it needs in `Site`. The gateway reads the body and writes the reply.

mod account;
mod captcha;
mod invite;
mod login;
mod logout;
mod recovery;
mod session;
mod two_factor;

use std::sync::Arc;

use http::Method;
use serde_json::json;

use crate::config::Config;
use crate::core::secret::SessionToken;
use crate::policy::route::Endpoint;
use crate::service::recovery::RecoveryError;
use crate::service::sessions::LiveSession;
use crate::service::signin::LoginError;
use crate::store::StoreError;
use crate::web::gate;
use crate::web::pages::messages;
use crate::web::reply::Reply;
use crate::web::request::{Facts, Request};
pub use crate::web::site::Site;

/// Largest body of a request to the gateway; real forms are a few hundred bytes.
pub const MAX_BODY: usize = 16 * 1024;

/// Whether the gateway reads a body for this request before handling it (every `POST`).
pub fn takes_body(method: &Method) -> bool {
    method == Method::POST
}

/// Why a body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Over `MAX_BODY`.
    TooLarge,
    /// Not all of it within `timeouts.request_body`.
    TooSlow,
    /// The connection broke, or the body was malformed.
    Unreadable,
}

/// The JSON endpoints, whose refusals and failures are JSON too.
fn is_api(endpoint: &Endpoint) -> bool {
    matches!(
        endpoint,
        Endpoint::ApiLogin
            | Endpoint::ApiLogout
            | Endpoint::ApiSession
            | Endpoint::ApiAccount
            | Endpoint::ApiSessions
            | Endpoint::ApiEndSession(_)
            | Endpoint::ApiLogoutAll
            | Endpoint::ApiPassword
    )
}

/// The reply to a body that could not be read: JSON for the API, a page otherwise.
pub fn body_refused(endpoint: &Endpoint, why: BodyError) -> Reply {
    let (status, code, title, message) = match why {
        BodyError::TooLarge => (
            413,
            "too_large",
            "Request too large",
            "The form sent was too large.",
        ),
        BodyError::TooSlow => (
            408,
            "timeout",
            "Request timeout",
            "The form took too long to arrive. Please try again.",
        ),
        BodyError::Unreadable => (
            400,
            "bad_request",
            "Bad request",
            "The request could not be read.",
        ),
    };
    match endpoint {
        e if is_api(e) => Reply::json(status, json!({"error": code})),
        _ => Reply::page(status, title, message),
    }
}

/// Answers one request to the gateway's own endpoints.
pub async fn handle(site: &Site, cfg: &Config, endpoint: Endpoint, req: &Request<'_>) -> Reply {
    let api = is_api(&endpoint);
    let result = match endpoint {
        Endpoint::LoginPage => Ok(login::page(site, cfg, req).await),
        Endpoint::LoginForm => login::form(site, cfg, req).await,
        Endpoint::Logout => logout::logout(site, cfg, req, false).await,
        Endpoint::ApiLogin => login::api(site, cfg, req).await,
        Endpoint::ApiSession => session::api_session(site, cfg, req).await,
        Endpoint::ApiLogout => logout::logout(site, cfg, req, true).await,
        Endpoint::CaptchaImage(id) => captcha::image(site, &id).await,
        Endpoint::TwoFactorPage => two_factor::page(site, cfg, req).await,
        Endpoint::TwoFactorForm => two_factor::form(site, cfg, req).await,
        Endpoint::SetupPage => two_factor::setup_page(site, cfg, req).await,
        Endpoint::SetupForm => two_factor::setup_form(site, cfg, req).await,
        Endpoint::ForgotPage => Ok(recovery::forgot_page(site, cfg, req)),
        Endpoint::ForgotForm => recovery::forgot_form(site, cfg, req).await,
        Endpoint::ResetPage => recovery::reset_page(site, cfg, req).await,
        Endpoint::ResetForm => recovery::reset_form(site, cfg, req).await,
        Endpoint::InvitePage => invite::page(site, cfg, req).await,
        Endpoint::InviteForm => invite::form(site, cfg, req).await,
        Endpoint::EmailConfirmPage => account::email_page(site, cfg, req).await,
        Endpoint::EmailConfirmForm => account::email_form(site, cfg, req).await,
        Endpoint::AccountPage => account::page(site, cfg, req).await,
        Endpoint::AccountForm => account::form(site, cfg, req).await,
        Endpoint::ApiAccount => account::api_account(site, cfg, req).await,
        Endpoint::ApiSessions => account::api_sessions(site, cfg, req).await,
        Endpoint::ApiEndSession(handle) => account::api_end_session(site, cfg, req, &handle).await,
        Endpoint::ApiLogoutAll => account::api_logout_all(site, cfg, req).await,
        Endpoint::ApiPassword => account::api_password(site, cfg, req).await,
        Endpoint::NotFound => Ok(Reply::page(404, "Not found", "There is no such page.")),
        Endpoint::MethodNotAllowed => Ok(Reply::page(
            405,
            "Method not allowed",
            "This address does not accept that kind of request.",
        )),
    };
    result.unwrap_or_else(|e| {
        tracing::error!(error = %e, "a request to the gateway failed");
        match api {
            true => Reply::json(503, json!({"error": "unavailable"})),
            false => Reply::unavailable(),
        }
    })
}

/// Why a handler could not finish (a refusal is a `Reply`, not a failure).
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    SignIn(#[from] LoginError),
    #[error(transparent)]
    Recovery(#[from] RecoveryError),
}

type Handled = Result<Reply, Failure>;

/// Spends one attempt of the address's budget for a look at a link (a reset, an invitation),
/// like a sign-in attempt: tokens cannot be tried in bulk, nor the event log flooded with dead
/// ones. `Some`: the `429` page, the budget being spent.
async fn budget_spent(
    site: &Site,
    cfg: &Config,
    req: &Request<'_>,
) -> Result<Option<Reply>, Failure> {
    Ok(
        match site.signin.spend_address(cfg, &req.facts.addr).await? {
            Ok(()) => None,
            Err(seconds) => Some(
                Reply::page(429, "Too many requests", messages::TOO_MANY)
                    .header("Retry-After", seconds.to_string()),
            ),
        },
    )
}

/// The session a request to the gateway carries, without extending it. A session used from
/// outside its user's IP restrictions counts as none here; the gate ends it on its next
/// request to the portal.
async fn current(
    site: &Site,
    cfg: &Config,
    facts: &Facts,
) -> Result<Option<(SessionToken, Arc<LiveSession>)>, StoreError> {
    let names = &cfg.cookies;
    let Some(token) = facts.cookie(&names.session).and_then(SessionToken::parse) else {
        return Ok(None);
    };
    let live = site.sessions.peek(&token, &cfg.session).await?;
    Ok(live
        .filter(|l| gate::allowed_here(cfg, l, facts))
        .map(|l| (token, l)))
}

#[cfg(test)]
mod tests;
