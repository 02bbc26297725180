//! Invitations (SPEC §15): the link from the invitation's e-mail (`invite?token=…`) and the
//! invitee's password, typed twice; then the invitee is signed in and lands on the portal (or,
//! where two-step verification is required, on the login page to sign in and set it up). The
//! form carries the login CSRF token; each look at a link spends from the address's budget.

use super::login::{csrf_cookie, csrf_ok, end_previous, session_cookies};
use super::{Handled, Site, budget_spent};
use crate::config::Config;
use crate::core::event::{Event, EventKind};
use crate::core::identity::{Identity, User};
use crate::core::secret::{Password, RecoveryToken};
use crate::policy::network;
use crate::policy::route::LOGIN_PATH;
use crate::service::recovery::{Accepted, Invitation};
use crate::service::two_factor::Need;
use crate::web::pages::{self, InvitePage, messages};
use crate::web::reply::Reply;
use crate::web::request::Request;

fn form_page(
    site: &Site,
    cfg: &Config,
    req: &Request<'_>,
    status: u16,
    token: &RecoveryToken,
    login: &str,
    error: Option<&str>,
) -> Reply {
    let (csrf, set) = csrf_cookie(site, cfg, req.facts);
    let html = pages::invite_page(&InvitePage {
        title: "Finish your registration",
        error,
        csrf: &csrf,
        token: token.expose(),
        login,
        min_length: cfg.passwords.min_length,
    });
    Reply::html(status, html).cookies(set)
}

fn dead(expired: bool) -> Reply {
    let message = match expired {
        true => messages::INVITATION_EXPIRED,
        false => messages::INVITATION_INVALID,
    };
    Reply::page(410, "Invitation", message)
}

/// `GET invite?token=…`.
pub async fn page(site: &Site, cfg: &Config, req: &Request<'_>) -> Handled {
    if let Some(refused) = budget_spent(site, cfg, req).await? {
        return Ok(refused);
    }
    let token = req.query("token").and_then(|t| RecoveryToken::parse(&t));
    Ok(
        match (site.recovery.open_invite(token.as_ref()).await?, &token) {
            (Invitation::Live(user), Some(t)) => {
                form_page(site, cfg, req, 200, t, &user.login, None)
            }
            (Invitation::Expired, _) => dead(true),
            _ => dead(false),
        },
    )
}

/// `POST invite`: `token`, `password`, `password2`, `csrf`.
pub async fn form(site: &Site, cfg: &Config, req: &Request<'_>) -> Handled {
    let Some(token) = RecoveryToken::parse(&req.field("token")) else {
        return Ok(dead(false));
    };
    if !csrf_ok(site, cfg, req) {
        let view = form_page(
            site,
            cfg,
            req,
            403,
            &token,
            "",
            Some(messages::FORM_EXPIRED),
        );
        return Ok(view);
    }
    if let Some(refused) = budget_spent(site, cfg, req).await? {
        return Ok(refused);
    }
    let password = Password::new(req.field("password"));
    let again = req.field("password2");
    let client = &req.facts.client;
    let accepted = site
        .recovery
        .accept_invite(cfg, Some(&token), password, &again, client);
    Ok(match accepted.await? {
        Accepted::Done(user) => signed_in(site, cfg, req, &user).await?,
        Accepted::Refused { refusal, login } => {
            let message = refusal.message();
            form_page(site, cfg, req, 400, &token, &login, Some(&message))
        }
        Accepted::Expired => dead(true),
        Accepted::Invalid => dead(false),
    })
}

/// The new user's first session, straight to the portal; where two-step verification is
/// required, the login page instead (the sign-in leads to setting it up first).
async fn signed_in(
    site: &Site,
    cfg: &Config,
    req: &Request<'_>,
    user: &User,
) -> Result<Reply, super::Failure> {
    if matches!(
        site.two_factor.need(&cfg.two_factor, user).await?,
        Need::Setup
    ) || !network::user_allowed(
        &cfg.network.restrictions,
        &Identity::of(user),
        &req.facts.addr,
    ) {
        return Ok(Reply::redirect(303, &format!("{LOGIN_PATH}?registered=1")));
    }
    end_previous(site, cfg, req.facts).await;
    let issued = site.sessions.issue(user, None, &req.facts.client).await?;
    let client = &req.facts.client;
    site.audit.record(
        Event::new(EventKind::LoginSuccess, site.sessions.now())
            .login(&user.login)
            .client(&client.ip, &client.user_agent)
            .session(issued.live.hash.short())
            .detail("invitation"),
    );
    Ok(Reply::redirect(303, "/").cookies(session_cookies(cfg, &issued)))
}
