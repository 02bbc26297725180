//! The services the web layer uses, handed to it by the gateway's assembly: the narrow set the
//! handlers and the gate need, nothing else of the running gateway.

use std::sync::Arc;

use crate::core::time::Clock;
use crate::service::account::Account;
use crate::service::audit::Audit;
use crate::service::metrics::Metrics;
use crate::service::recovery::Recovery;
use crate::service::sessions::Sessions;
use crate::service::signin::SignIn;
use crate::service::two_factor::TwoFactor;
use crate::store::CaptchaStore;

/// The services the handlers (and the gate in front of the portal) use.
pub struct Site {
    pub sessions: Arc<Sessions>,
    pub signin: Arc<SignIn>,
    pub captchas: Arc<dyn CaptchaStore>,
    pub audit: Audit,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    /// The key of the login form's CSRF tokens, shared through the store by every gateway.
    pub csrf_key: [u8; 32],
    /// The key of pending sign-ins (`core::secret::Pending`), derived from the key file that
    /// every gateway of a cluster shares (never kept in the store).
    pub pending_key: [u8; 32],
    pub two_factor: Arc<TwoFactor>,
    pub recovery: Arc<Recovery>,
    pub account: Arc<Account>,
}
