//! Signing out: the `logout` form and `api/logout`. Both end the session and its remember-me
//! token and clear the cookies; the CSRF rule is `policy::origin::may_sign_out`.

use serde_json::json;

use super::{Handled, Site, current};
use crate::config::Config;
use crate::core::event::{Event, EventKind};
use crate::core::secret::RememberToken;
use crate::policy::origin;
use crate::policy::route::LOGIN_PATH;
use crate::service::sessions::Ended;
use crate::web::reply::Reply;
use crate::web::request::Request;

pub async fn logout(site: &Site, cfg: &Config, req: &Request<'_>, api: bool) -> Handled {
    let current = current(site, cfg, req.facts).await?;
    if let Some((token, _)) = &current {
        let token_ok = token.csrf().matches(&req.field("csrf"));
        if !origin::may_sign_out(req.origin(cfg), api, req.is_json(), token_ok) {
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
        site.sessions.end(live, Ended::Logout).await?;
        let client = &req.facts.client;
        site.audit.record(
            Event::new(EventKind::Logout, site.sessions.now())
                .login(&live.identity.login)
                .client(&client.ip, &client.user_agent)
                .session(live.hash.short()),
        );
    }
    if let Some(remember) = req.cookie(&names.remember).and_then(RememberToken::parse) {
        site.sessions.forget_remember(&remember).await?;
    }
    // A pending sign-in too: on a shared computer, nobody after may finish it.
    let cleared = [
        names.clear(&names.session),
        names.clear(&names.remember),
        names.clear(&names.pending),
    ];
    Ok(if api {
        Reply::json(200, json!({"ok": true})).cookies(cleared)
    } else {
        Reply::redirect(303, &format!("{LOGIN_PATH}?signed_out=1")).cookies(cleared)
    })
}
