//! HTTP meaning without Pingora: the facts of a request (`request`), the replies the gateway
//! writes (`reply`), cookies, pages, and the handlers of `/_portcullis/` as functions from
//! facts to a `Reply`, unit-testable without sockets.

pub mod cookies;
pub mod gate;
pub mod handlers;
pub mod pages;
pub mod reply;
pub mod request;
pub mod site;
