//! Each HTTP/1 connection of the public listener, before Pingora sees a request: the gateway
//! reads every request head itself, under `timeouts` (docs: slow clients), and hands the bytes
//! to the proxy. A client that drips a head, or sits idle between requests, is closed; Pingora's
//! own limits apply per read only, so a byte every few seconds would hold a connection for ever.
//! With `tls`, the TLS handshake is made here too, under the same limit. HTTP/2 connections
//! (ALPN `h2`) then go to Pingora whole.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::listeners::tls::Acceptor;
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as L4Stream;

use super::prefixed::Prefixed;
use crate::web::reply::HSTS;
use pingora::protocols::{ALPN, Stream};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::App;
use super::proxy::Gateway;
use crate::config::Timeouts;

/// The largest request head accepted (`431` beyond): request line, headers, cookies.
pub const MAX_HEAD: usize = 64 * 1024;

pub struct Guarded {
    proxy: Arc<HttpProxy<Gateway>>,
    app: Arc<App>,
    /// Set when the listeners serve HTTPS.
    tls: Option<Acceptor>,
}

impl Guarded {
    pub fn new(proxy: HttpProxy<Gateway>, app: Arc<App>, tls: Option<Acceptor>) -> Guarded {
        Guarded {
            proxy: Arc::new(proxy),
            app,
            tls,
        }
    }

    /// The TLS handshake on a new connection, done by `until` (the accept plus
    /// `timeouts.request_header`): a client that never finishes one is closed like one that
    /// never sends a request head.
    async fn handshake(acceptor: &Acceptor, stream: Stream, until: Instant) -> Option<Stream> {
        let Ok(tcp) = stream.into_any().downcast::<L4Stream>() else {
            tracing::error!("a public connection is not a TCP stream; closed");
            return None;
        };
        match tokio::time::timeout_at(until, acceptor.tls_handshake(*tcp)).await {
            Ok(Ok(tls)) => Some(Box::new(tls)),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!("TLS handshake not done in time; closed");
                None
            }
        }
    }
}

/// What an HTTP/2 client sends first (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An HTTP/2 connection's preface, read by `until`: Pingora would wait for it for ever. The
/// bytes are given back to Pingora with the connection; a connection that is not HTTP/2 after
/// all, or too slow, is closed. Once it runs, an HTTP/2 connection with no request in flight
/// for `timeouts.keepalive` is closed by Pingora (`h2_idle_timeout`).
async fn h2_preface(mut stream: Stream, until: Instant) -> Option<Stream> {
    let mut preface = [0u8; 24];
    match tokio::time::timeout_at(until, stream.read_exact(&mut preface)).await {
        Ok(Ok(_)) if &preface == H2_PREFACE => Some(Box::new(Prefixed::new(
            bytes::Bytes::copy_from_slice(&preface),
            stream,
        ))),
        Ok(Ok(_)) => {
            tracing::debug!("not an HTTP/2 preface; closed");
            None
        }
        Ok(Err(_)) => None,
        Err(_) => {
            tracing::debug!("HTTP/2 preface not sent in time; closed");
            None
        }
    }
}

/// How reading one request head ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Head {
    /// A whole head is in the buffer (perhaps with the start of its body).
    Ready,
    /// The client closed, or nothing came within the idle limit, or the server is stopping.
    Gone,
    /// Part of a head came, the rest not in time: `408`.
    TooSlow,
    /// `431`.
    TooLarge,
}

#[async_trait]
impl ServerApp for Guarded {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // A new connection must be through its TLS handshake, the HTTP/2 preface or its first
        // request head within `request_header` of the accept; a kept-alive one may wait
        // `keepalive` for its next request, then has `request_header` for it.
        let first_by = Instant::now() + self.app.config.load().timeouts.request_header;
        let stream = match &self.tls {
            Some(acceptor) => Guarded::handshake(acceptor, stream, first_by).await?,
            None => stream,
        };
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            let stream = h2_preface(stream, first_by).await?;
            return ServerApp::process_new(&self.proxy, stream, shutdown).await;
        }
        let mut stream = stream;
        let mut buf = BytesMut::with_capacity(4096);
        let mut fresh = Some(first_by);
        loop {
            let limits = self.app.config.load().timeouts;
            let head = read_head(&mut stream, &mut buf, fresh, limits, shutdown).await;
            match head {
                Head::Ready => {}
                Head::Gone => return None,
                Head::TooSlow => return refuse(stream, "408 Request Timeout").await,
                Head::TooLarge => {
                    return refuse(stream, "431 Request Header Fields Too Large").await;
                }
            }
            let mut session = ServerSession::new_http1(stream);
            session.set_keepalive(if *shutdown.borrow() {
                None
            } else {
                Some(limits.keepalive.as_secs().max(1))
            });
            // A body the gateway does not read (a refusal, a redirect) is drained before the
            // connection is used again: within `request_body`, or the connection closes.
            session.set_total_drain_timeout(Some(limits.request_body));
            // A client that stops reading a response is let go, and the portal with it.
            session.set_write_timeout(Some(limits.send));
            session.set_pipelined_prefix(std::mem::take(&mut buf));
            // The settings carried over hold nothing the gateway uses: keep-alive is set above
            // and pipelining, the only source of carried-over bytes, is never enabled.
            let (next, _settings) = self
                .proxy
                .process_new_http(session, shutdown)
                .await?
                .consume();
            stream = next;
            fresh = None;
        }
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(self.proxy.as_ref()).await;
    }
}

/// How long a kept-alive connection may still bring a request once the server stops (it is
/// answered with `Connection: close`): a client that sent one just as the stop began, an
/// upgrade's above all, gets its answer instead of a closed connection.
const LAST_CALL: Duration = Duration::from_secs(1);

/// Reads until `buf` holds a whole request head: on a `fresh` connection, the whole head by
/// the time given; on a kept-alive one, the first byte within `keepalive` and the whole head
/// within `request_header` of it.
pub(super) async fn read_head(
    stream: &mut Stream,
    buf: &mut BytesMut,
    fresh: Option<Instant>,
    limits: Timeouts,
    shutdown: &ShutdownWatch,
) -> Head {
    let whole = limits.request_header;
    let mut stopping = shutdown.clone();
    let mut deadline = fresh;
    let mut idle_until = fresh.unwrap_or_else(|| Instant::now() + limits.keepalive);
    let mut last_call = *shutdown.borrow();
    if last_call {
        idle_until = idle_until.min(Instant::now() + LAST_CALL);
    }
    let mut scan = Scan::default();
    loop {
        match head_end(buf, &mut scan) {
            Some(end) if end <= MAX_HEAD => return Head::Ready,
            Some(_) => return Head::TooLarge,
            None if buf.len() > MAX_HEAD => return Head::TooLarge,
            None => {}
        }
        let until = deadline.unwrap_or(idle_until);
        let waiting = buf.is_empty();
        tokio::select! {
            // The read first: a fair draw between the branches costs a random number per
            // request and changes nothing here.
            biased;
            read = stream.read_buf(buf) => match read {
                Ok(0) | Err(_) => return Head::Gone,
                Ok(_) => {
                    deadline.get_or_insert_with(|| Instant::now() + whole);
                }
            },
            () = tokio::time::sleep_until(until) => {
                return if waiting { Head::Gone } else { Head::TooSlow };
            }
            // Between requests, a stopping server waits `LAST_CALL` at most.
            _ = stopping.changed(), if waiting && !last_call => {
                last_call = true;
                idle_until = idle_until.min(Instant::now() + LAST_CALL);
            }
        }
    }
}

/// Where the head in `buf` ends, if it is whole: after any empty lines before the request
/// line (RFC 9112 §2.2), the end of the first empty line (`\n\n`, `\r\n\r\n`, or mixed).
/// `scan` keeps the work linear for a head that arrives a byte at a time, empty lines included.
fn head_end(buf: &[u8], scan: &mut Scan) -> Option<usize> {
    let start = match scan.start {
        Some(start) => start,
        None => {
            let Some(at) = buf[scan.scanned..]
                .iter()
                .position(|&b| b != b'\r' && b != b'\n')
            else {
                scan.scanned = buf.len();
                return None;
            };
            *scan.start.insert(scan.scanned + at)
        }
    };
    let from = scan.scanned.max(start);
    let found = memchr::memchr_iter(b'\n', &buf[from..]).find_map(|at| {
        let i = from + at;
        match buf.get(i + 1) {
            Some(b'\n') => Some(i + 2),
            Some(b'\r') if buf.get(i + 2) == Some(&b'\n') => Some(i + 3),
            _ => None,
        }
    });
    // The last two bytes may begin an ending that the next read completes.
    scan.scanned = buf.len().saturating_sub(2).max(start);
    found
}

/// How far `head_end` has looked into a buffer that only grows.
#[derive(Default)]
struct Scan {
    /// Where the request line begins, once a byte other than an empty line's has come.
    start: Option<usize>,
    /// Where the next look begins: everything before it holds no end of the head.
    scanned: usize,
}

/// Answers a head that came too slowly or too large, and closes. The client may not be
/// reading either: a second at most is spent on it.
async fn refuse(mut stream: Stream, status: &str) -> Option<Stream> {
    let hsts = match stream.get_ssl_digest() {
        Some(_) => format!("{}: {}\r\n", HSTS.0, HSTS.1),
        None => String::new(),
    };
    let reply =
        format!("HTTP/1.1 {status}\r\n{hsts}Connection: close\r\nContent-Length: 0\r\n\r\n");
    let write = async {
        stream.write_all(reply.as_bytes()).await?;
        stream.shutdown().await
    };
    if let Err(e) = tokio::time::timeout(Duration::from_secs(1), write)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
    {
        tracing::debug!(error = %e, status, "could not tell a slow client why it is closed");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_complete_at_the_first_empty_line() {
        let cases: [(&[u8], bool); 9] = [
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true),
            (b"GET / HTTP/1.1\nHost: a\n\n", true),
            (b"GET / HTTP/1.1\r\nHost: a\n\r\n", true),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody", true),
            (b"GET / HTTP/1.1\r\nHost: a\r\n", false),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r", false),
            (b"\r\n\r\n", false),
            (b"\r\n\r\nGET / HTTP/1.1\r\n", false),
            (b"\r\nGET / HTTP/1.1\r\n\r\n", true),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                head_end(bytes, &mut Scan::default()).is_some(),
                want,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn empty_lines_before_a_head_are_looked_at_once() {
        // 60 000 bytes of empty lines a byte at a time, then a head: each call looks only at
        // what came since the last (it looked at the whole buffer again before: quadratic).
        let mut bytes = b"\r\n".repeat(30_000);
        let mut scan = Scan::default();
        for n in 1..=bytes.len() {
            assert_eq!(head_end(&bytes[..n], &mut scan), None, "after {n} bytes");
            assert_eq!(
                scan.scanned, n,
                "after {n} bytes, the next look starts at the end"
            );
        }
        let lead = bytes.len();
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        for n in lead + 1..bytes.len() {
            assert_eq!(head_end(&bytes[..n], &mut scan), None, "after {n} bytes");
        }
        assert_eq!(head_end(&bytes, &mut scan), Some(bytes.len()));
        assert_eq!(scan.start, Some(lead));
    }

    #[test]
    fn a_head_arriving_a_byte_at_a_time_is_found_once_whole() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let mut scan = Scan::default();
        for n in 1..head.len() {
            assert_eq!(head_end(&head[..n], &mut scan), None, "after {n} bytes");
        }
        assert_eq!(head_end(head, &mut scan), Some(head.len()));
        let with_body = b"POST / HTTP/1.1\r\nHost: a\r\n\r\nbody";
        assert_eq!(
            head_end(with_body, &mut Scan::default()),
            Some(with_body.len() - 4)
        );
    }
}
