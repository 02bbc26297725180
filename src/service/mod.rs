//! Async orchestration with narrow dependencies, between the pure policy below and the HTTP
//! layers above: sessions, sign-in, accounts, password hashing, CAPTCHA challenges, the event
//! log and metrics. No HTTP here.

pub mod accounts;
pub mod audit;
pub mod captcha;
pub mod hasher;
pub mod metrics;
pub mod sessions;
pub mod signin;
