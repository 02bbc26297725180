//! Portcullis: an authenticating reverse proxy on Pingora. The code is in layers, each of
//! which imports only from the layers below it (docs/architecture.md; `tests/layers.rs`
//! checks it), bottom to top:
//!
//! - `core`: leaf types (time, addresses, identities, events, secrets, counters);
//! - `config`: the YAML file, validated into one typed `Config`;
//! - `store`: one trait per aggregate, for SQLite and PostgreSQL;
//! - `policy`: pure decisions, table-tested (routing, address rules, throttle arithmetic,
//!   session expiry, CSRF and Origin, the sign-in step machine);
//! - `service`: async orchestration with narrow dependencies (sessions, sign-in, accounts,
//!   hashing, CAPTCHA, the event log, metrics);
//! - `web`: HTTP meaning without Pingora (request facts, replies, pages, handlers);
//! - `gateway`: the Pingora glue (phases, listeners, background tasks, reload, assembly);
//! - `cli`: the command line and the demo.

pub mod core;

pub mod config;

pub mod store;

pub mod policy;

pub mod service;

pub mod web;

pub mod gateway;

pub mod cli;
