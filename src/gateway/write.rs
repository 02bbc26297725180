//! Between a Pingora session and the web layer's values: the one place a `Reply` becomes bytes
//! on a connection, and the one place the body of a request to the gateway is read (whole,
//! capped, within `timeouts.request_body`).

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

use crate::config::Timeouts;
use crate::web::handlers::{BodyError, MAX_BODY};
use crate::web::reply::{HSTS, PAGE_HEADERS, Reply};

pub async fn write(session: &mut Session, reply: Reply) -> Result<()> {
    let mut resp = ResponseHeader::build(reply.status, Some(reply.headers.len() + 8))?;
    resp.insert_header("Content-Type", reply.content_type)?;
    resp.insert_header("Content-Length", reply.body.len().to_string())?;
    for (name, value) in PAGE_HEADERS {
        resp.insert_header(name, value)?;
    }
    if over_tls(session) {
        resp.insert_header(HSTS.0, HSTS.1)?;
    }
    for (name, value) in reply.headers {
        resp.append_header(name, value)?;
    }
    let head_only = session.req_header().method == http::Method::HEAD || reply.body.is_empty();
    session
        .write_response_header(Box::new(resp), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(reply.body), true).await?;
    }
    Ok(())
}

/// Whether the client's connection is TLS (it is on every listener when `tls` is set).
pub fn over_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

/// The whole body of a request to the gateway. When it cannot be read, what is left of it
/// never is: the connection is not used again.
pub async fn read_body(session: &mut Session, limits: &Timeouts) -> Result<Bytes, BodyError> {
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    let result = match declared {
        Some(n) if n > MAX_BODY => Err(BodyError::TooLarge),
        _ => tokio::time::timeout(limits.request_body, collect(session))
            .await
            .unwrap_or(Err(BodyError::TooSlow)),
    };
    if result.is_err() {
        session.set_keepalive(None);
    }
    result
}

async fn collect(session: &mut Session) -> Result<Bytes, BodyError> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(BodyError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body.into()),
            Err(_) => return Err(BodyError::Unreadable),
        }
    }
}
