//! Pure decisions, table-tested, with no I/O: where a request goes (`route`), who the client is
//! and where they may come from (`network`), which headers are trusted (`headers`), where a form
//! comes from (`origin`), throttle arithmetic (`throttle`), when a session ends (`expiry`), the
//! order of the sign-in checks (`signin`), how a browser is named (`device`), and the rules of
//! password recovery (`recovery`).

pub mod device;
pub mod expiry;
pub mod headers;
pub mod network;
pub mod origin;
pub mod recovery;
pub mod route;
pub mod signin;
pub mod throttle;
pub mod totp;
