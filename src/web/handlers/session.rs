//! `api/session`: who is signed in, without extending the session.

use serde_json::json;

use super::login::identity_json;
use super::{Handled, Site, current};
use crate::config::Config;
use crate::policy::route::LOGIN_PATH;
use crate::web::reply::Reply;
use crate::web::request::Request;

pub async fn api_session(site: &Site, cfg: &Config, req: &Request<'_>) -> Handled {
    Ok(match current(site, cfg, req.facts).await? {
        Some((_, live)) => {
            let expires_in = live.expires_in(site.sessions.now(), &cfg.session);
            Reply::json(200, identity_json(&live.identity, expires_in))
        }
        None => Reply::json(
            401,
            json!({"error": "unauthenticated", "login_url": LOGIN_PATH}),
        ),
    })
}
