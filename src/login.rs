//! One sign-in attempt, in the order of SPEC §6: find the user, verify the password on the
//! hashing pool (a dummy hash for unknown logins, so both cost the same), then dismissal.
//! The IP restriction is checked last, so its refusal reveals nothing without the password.
//! Rate limits and CAPTCHA slot in before the hash; they come with the throttling work.

use crate::allowlist::ClientAddr;
use crate::audit::{Event, EventKind};
use crate::config::Config;
use crate::gateway::App;
use crate::network;
use crate::password::{HashError, Password};
use crate::session::{Client, Identity, Issued};
use crate::store::StoreError;

/// What someone typed into the form or sent to the API.
#[derive(Debug)]
pub struct Attempt {
    pub login: String,
    pub password: Password,
    pub remember: bool,
    pub client: Client,
    /// Checked against the user's IP restrictions once the password is known to be right.
    pub addr: ClientAddr,
}

pub enum Outcome {
    Success {
        issued: Issued,
    },
    InvalidCredentials,
    Dismissed,
    /// Right password, but the user may not sign in from this address.
    IpRestricted,
    /// The hashing pool is saturated; try again shortly.
    Busy,
}

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hash(HashError),
}

/// Logins longer than this are refused before any lookup (they cannot exist).
const MAX_LOGIN: usize = 254;
/// Passwords longer than this are refused before hashing, so nobody can make us hash megabytes.
const MAX_PASSWORD: usize = 1024;

pub async fn attempt(app: &App, cfg: &Config, attempt: Attempt) -> Result<Outcome, LoginError> {
    let now = app.sessions.now();
    let login = attempt.login.trim();
    let user = if login.is_empty() || login.len() > MAX_LOGIN {
        None
    } else {
        app.store.find_user(login).await?
    };
    let password = if attempt.password.expose().len() > MAX_PASSWORD {
        Password::new("")
    } else {
        attempt.password
    };
    let verified = match app
        .hasher
        .verify(password, user.as_ref().map(|u| u.password_hash.clone()))
        .await
    {
        Ok(ok) => ok,
        Err(HashError::Busy) => return Ok(Outcome::Busy),
        Err(e) => return Err(LoginError::Hash(e)),
    };
    let client = &attempt.client;
    let failure = |reason: &str| {
        Event::new(EventKind::LoginFailure, now)
            .login(login)
            .client(&client.ip, &client.user_agent)
            .detail(reason)
    };
    let user = match user {
        Some(user) if verified => user,
        Some(_) => {
            app.audit.record(failure("wrong_password"));
            return Ok(Outcome::InvalidCredentials);
        }
        None => {
            app.audit.record(failure("unknown_login"));
            return Ok(Outcome::InvalidCredentials);
        }
    };
    if user.dismissed {
        app.audit.record(failure("dismissed"));
        return Ok(Outcome::Dismissed);
    }
    if !network::user_allowed(
        &cfg.network.restrictions,
        &Identity::of(&user),
        &attempt.addr,
    ) {
        app.audit.record(
            Event::new(EventKind::IpRestricted, now)
                .login(&user.login)
                .client(&client.ip, &client.user_agent)
                .detail("sign-in"),
        );
        return Ok(Outcome::IpRestricted);
    }
    let remember_for = cfg.session.remember_me.filter(|_| attempt.remember);
    let issued = app.sessions.issue(&user, remember_for, client).await?;
    app.audit.record(
        Event::new(EventKind::LoginSuccess, now)
            .login(&user.login)
            .client(&client.ip, &client.user_agent)
            .session(issued.live.hash.short())
            .detail(if issued.remember.is_some() {
                "remember"
            } else {
                ""
            }),
    );
    Ok(Outcome::Success { issued })
}
