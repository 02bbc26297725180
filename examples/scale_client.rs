//! The load client of `benches/scale.sh`: one pass over a range of session cookies, each sent
//! once, over keep-alive connections, then it stops and reports. (`wrk` cannot: a script may
//! stop its threads, but wrk still waits out its whole duration, so requests/s come out wrong.)
//!
//!     scale_client ADDR TOKENS FIRST LAST [WANT] [CONNECTIONS]
//!
//! Sends `GET /scale` with `Cookie: portcullis_session=<line>` for lines FIRST..=LAST (from 0)
//! of TOKENS to ADDR (`127.0.0.1:PORT`) over CONNECTIONS connections (default 32), on one
//! thread, as `wrk -t1` does. WANT is `200` (the default: every answer must be 200) or
//! `refused` (none may be 200). Prints one line:
//! `PASS requests=N wrong=W rps=R p99_ms=P`, where wrong counts answers not as wanted.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Pass {
    addr: String,
    tokens: Vec<String>,
    next: AtomicUsize,
    want_ok: bool,
}

#[derive(Default)]
struct Tally {
    wrong: usize,
    latencies_us: Vec<u32>,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        eprintln!("usage: scale_client ADDR TOKENS FIRST LAST [200|refused] [CONNECTIONS]");
        std::process::exit(2);
    }
    let (first, last): (usize, usize) = (number(&args[2]), number(&args[3]));
    let want_ok = match args.get(4).map(String::as_str) {
        None | Some("200") => true,
        Some("refused") => false,
        Some(other) => fail(&format!("WANT is 200 or refused, not {other}")),
    };
    let connections = args.get(5).map_or(32, |c| number(c));
    let text = std::fs::read_to_string(&args[1])
        .unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", args[1])));
    let tokens: Vec<String> = text
        .lines()
        .skip(first)
        .take(last + 1 - first)
        .map(str::to_owned)
        .collect();
    if tokens.is_empty() {
        fail("no tokens in that range");
    }
    let pass = Arc::new(Pass {
        addr: args[0].clone(),
        tokens,
        next: AtomicUsize::new(0),
        want_ok,
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let started = Instant::now();
    let tallies = runtime.block_on(async {
        let workers: Vec<_> = (0..connections)
            .map(|_| tokio::spawn(connection(pass.clone())))
            .collect();
        let mut tallies = Vec::new();
        for w in workers {
            tallies.push(w.await.expect("a connection task"));
        }
        tallies
    });
    let seconds = started.elapsed().as_secs_f64();
    let wrong: usize = tallies.iter().map(|t| t.wrong).sum();
    let mut latencies: Vec<u32> = tallies.into_iter().flat_map(|t| t.latencies_us).collect();
    latencies.sort_unstable();
    let p99 = latencies[(latencies.len() * 99).div_ceil(100).max(1) - 1];
    println!(
        "PASS requests={} wrong={} rps={:.0} p99_ms={:.2}",
        latencies.len(),
        wrong,
        latencies.len() as f64 / seconds,
        f64::from(p99) / 1000.0
    );
}

/// Sends requests until the pass's tokens run out; reconnects when the server closes.
async fn connection(pass: Arc<Pass>) -> Tally {
    let mut tally = Tally::default();
    let mut stream: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        let i = pass.next.fetch_add(1, Ordering::Relaxed);
        let Some(token) = pass.tokens.get(i) else {
            return tally;
        };
        let request = format!(
            "GET /scale HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: portcullis_session={token}\r\n\r\n"
        );
        let sent = Instant::now();
        let s = match stream.as_mut() {
            Some(s) => s,
            None => stream.insert(
                TcpStream::connect(&pass.addr)
                    .await
                    .unwrap_or_else(|e| fail(&format!("cannot connect to {}: {e}", pass.addr))),
            ),
        };
        s.write_all(request.as_bytes())
            .await
            .unwrap_or_else(|e| fail(&format!("send: {e}")));
        let (status, keep) = read_response(s, &mut buf).await;
        tally.latencies_us.push(sent.elapsed().as_micros() as u32);
        if (status == 200) != pass.want_ok {
            tally.wrong += 1;
        }
        if !keep {
            stream = None;
        }
    }
}

/// Reads one response (Content-Length, chunked, or to the end); returns its status and whether
/// the connection stays open.
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> (u16, bool) {
    buf.clear();
    let head_end = loop {
        if let Some(at) = find(buf, b"\r\n\r\n") {
            break at + 4;
        }
        read_more(s, buf).await;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status: u16 = head
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| fail("an answer without a status"));
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
    };
    let keep = header("connection:").is_none_or(|v| v != "close");
    if let Some(length) = header("content-length:") {
        let length: usize = length
            .parse()
            .unwrap_or_else(|_| fail("a bad content-length"));
        while buf.len() < head_end + length {
            read_more(s, buf).await;
        }
    } else if header("transfer-encoding:").is_some_and(|v| v.contains("chunked")) {
        while find(&buf[head_end..], b"0\r\n\r\n").is_none() {
            read_more(s, buf).await;
        }
    } else if status != 204 && status != 304 {
        while s.read_buf(buf).await.map(|n| n > 0).unwrap_or(false) {}
        return (status, false);
    }
    (status, keep)
}

async fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) {
    match s.read_buf(buf).await {
        Ok(0) => fail("the server closed the connection mid-answer"),
        Ok(_) => {}
        Err(e) => fail(&format!("receive: {e}")),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn number(s: &str) -> usize {
    s.parse()
        .unwrap_or_else(|_| fail(&format!("not a number: {s}")))
}

fn fail(why: &str) -> ! {
    eprintln!("scale_client: {why}");
    std::process::exit(1)
}
