//! Portcullis: an authenticating reverse proxy on Pingora. Security decisions live in pure
//! modules (`decision`, `session`, `config`); `gateway` is the thin Pingora shell around them.

pub mod allowlist;
pub mod audit;
pub mod captcha;
pub mod cli;
pub mod clock;
pub mod config;
pub mod decision;
pub mod demo;
pub mod gateway;
pub mod headers;
pub mod login;
pub mod metrics;
pub mod network;
pub mod origin;
pub mod pages;
pub mod password;
pub mod session;
pub mod store;
pub mod throttle;
pub mod token;
pub mod useragent;
