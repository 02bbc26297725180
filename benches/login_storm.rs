//! Proxied-request latency with and without a concurrent wrong-password storm, measured side by
//! side in one run against the real (release) binary over loopback:
//!
//! 1. calm: signed-in clients only;
//! 2. the same signed-in clients while 500 requests a second without a session arrive from 32
//!    addresses, sent without waiting for the answers: what a storm costs as plain traffic,
//!    the baseline for the next two;
//! 3. storm, throttling off (`captcha_after: 0`, `lock_after: 0`, unlimited rate): the same
//!    500 requests a second are wrong-password attempts; each costs a full argon2id hash until
//!    the bounded hashing queue is full, then a 429;
//! 4. storm, default throttling: the same storm, now rate-limited per address and escalated to
//!    a CAPTCHA, so that most attempts are refused before any hashing.
//!
//! Run with `cargo bench --bench login_storm` (`STORM_SECONDS`, default 8, per phase). It prints
//! a table and the ratios to the calm run; it asserts nothing.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");
const PASSWORD: &str = "correct horse battery";
/// Signed-in clients, each with its own keep-alive connection.
const CLIENTS: usize = 4;
/// Storm addresses, each sending wrong passwords at `STORM_RATE / STORMERS` a second without
/// waiting for answers (an open loop: both storm phases get the same offered load).
const STORMERS: usize = 32;
const STORM_RATE: f64 = 500.0;

/// A tiny upstream: 200 and a short body.
async fn upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                        Bytes::from_static(b"portal page\n"),
                    )))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Gateway {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cli(config: &Path, args: &[&str], stdin: &str) {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(args)
        .arg("-c")
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "{args:?} failed");
}

async fn start_gateway(upstream: SocketAddr, throttle: &str) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let config = dir.path().join("portcullis.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: {addr}\nadmin_listen: {admin}\nupstream: http://{upstream}\nstore:\n  path: data/p.db\n{throttle}"
        ),
    )
    .unwrap();
    let args = [
        "user",
        "add",
        "alice",
        "--email",
        "alice@example.com",
        "--password-stdin",
    ];
    cli(&config, &args, PASSWORD);
    let child = Command::new(BIN)
        .args(["serve", "-c"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "the gateway did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Gateway {
        child,
        addr,
        _dir: dir,
    }
}

async fn sign_in(gw: &Gateway) -> String {
    let r = reqwest::Client::new()
        .post(format!("http://{}/_portcullis/api/login", gw.addr))
        .header("Content-Type", "application/json")
        .body(format!(r#"{{"login":"alice","password":"{PASSWORD}"}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("portcullis_session="))
        .expect("a session cookie");
    cookie.split(';').next().unwrap().to_string()
}

/// Wrong-password attempts (or, without `passwords`, as many requests without a session) until
/// `stop`, from addresses 127.0.1.1–127.0.1.32. Returns counters: [wrong password (hashed),
/// refused before hashing (CAPTCHA, lock, rate, full queue), other].
fn storm(gw: SocketAddr, passwords: bool, stop: Arc<AtomicBool>) -> Arc<[AtomicU64; 3]> {
    let counts: Arc<[AtomicU64; 3]> = Arc::new(Default::default());
    for i in 0..STORMERS {
        let (stop, counts) = (stop.clone(), counts.clone());
        tokio::spawn(async move {
            let local = IpAddr::from([127, 0, 1, 1 + i as u8]);
            let client = reqwest::Client::builder()
                .local_address(local)
                .build()
                .unwrap();
            let mut tick =
                tokio::time::interval(Duration::from_secs_f64(STORMERS as f64 / STORM_RATE));
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                n += 1;
                let (client, counts) = (client.clone(), counts.clone());
                tokio::spawn(async move {
                    let request = if passwords {
                        client
                            .post(format!("http://{gw}/_portcullis/api/login"))
                            .header("Content-Type", "application/json")
                            .body(format!(
                                r#"{{"login":"user{i}-{n}@example.com","password":"guess-{n}"}}"#
                            ))
                    } else {
                        client.get(format!("http://{gw}/inbox"))
                    };
                    let r = request.send().await;
                    let body = match r {
                        Ok(r) => r.text().await.unwrap_or_default(),
                        Err(_) => String::new(),
                    };
                    counts[outcome(&body)].fetch_add(1, Ordering::Relaxed);
                });
            }
        });
    }
    counts
}

/// 0: the password was hashed and wrong; 1: refused before hashing (CAPTCHA, lock, rate, full
/// hashing queue); 2: anything else.
fn outcome(body: &str) -> usize {
    if body.contains("invalid_credentials") {
        0
    } else if ["captcha_required", "locked", "throttled"]
        .iter()
        .any(|e| body.contains(e))
    {
        1
    } else {
        2
    }
}

struct Latencies {
    sorted: Vec<Duration>,
    elapsed: Duration,
}

impl Latencies {
    fn pct(&self, p: f64) -> Duration {
        let i = ((self.sorted.len() as f64 - 1.0) * p).round() as usize;
        self.sorted[i]
    }

    fn rps(&self) -> f64 {
        self.sorted.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// Signed-in GETs from `CLIENTS` keep-alive clients for `seconds`.
async fn proxied(gw: SocketAddr, cookie: &str, seconds: f64) -> Latencies {
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let cookie = cookie.to_string();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut seen = Vec::new();
            while Instant::now() < until {
                let t = Instant::now();
                let r = client
                    .get(format!("http://{gw}/inbox"))
                    .header("Cookie", &cookie)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "a proxied request failed");
                r.bytes().await.unwrap();
                seen.push(t.elapsed());
            }
            seen
        }));
    }
    let mut sorted = Vec::new();
    for t in tasks {
        sorted.extend(t.await.unwrap());
    }
    sorted.sort();
    Latencies {
        sorted,
        elapsed: start.elapsed(),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; a `cargo test --benches` run passes nothing and only
    // checks that this builds.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let seconds: f64 = std::env::var("STORM_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8.0);
    let up = upstream().await;
    let open = "throttle:\n  captcha_after: 0\n  lock_after: 0\n  ip_attempts_per_minute: 0\n";
    let mut rows = Vec::new();
    // (phase, throttle config, storm: None, or Some(with passwords))
    for (name, throttle, storm_kind) in [
        ("calm", open, None),
        ("same rate, no passwords", open, Some(false)),
        ("storm, throttling off", open, Some(true)),
        ("storm, default throttling", "", Some(true)),
    ] {
        let gw = start_gateway(up, throttle).await;
        let cookie = sign_in(&gw).await;
        proxied(gw.addr, &cookie, 1.0).await; // warm-up
        let stop = Arc::new(AtomicBool::new(false));
        let counts = storm_kind.map(|passwords| storm(gw.addr, passwords, stop.clone()));
        if counts.is_some() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let lat = proxied(gw.addr, &cookie, seconds).await;
        stop.store(true, Ordering::Relaxed);
        let attempts = counts.map(|c| {
            let n = |i: usize| c[i].load(Ordering::Relaxed) as f64 / (seconds + 0.5);
            (n(0), n(1), n(2))
        });
        rows.push((name, lat, attempts));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    println!(
        "\nProxied GET /inbox with a valid session, {CLIENTS} keep-alive clients, {seconds} s per phase; storm: {STORM_RATE} wrong passwords/s from {STORMERS} addresses\n"
    );
    println!(
        "{:<27} {:>9} {:>9} {:>9} {:>9}  {:>8} {:>8}  storm attempts/s: hashed | refused unhashed | other",
        "phase", "req/s", "p50 ms", "p99 ms", "max ms", "p50 ×", "p99 ×"
    );
    let (calm50, calm99) = (rows[0].1.pct(0.5), rows[0].1.pct(0.99));
    for (name, lat, attempts) in &rows {
        let storm = attempts.map_or("-".to_string(), |(a, r, o)| {
            format!("{a:.0} | {r:.0} | {o:.0}")
        });
        println!(
            "{:<27} {:>9.0} {:>9.2} {:>9.2} {:>9.2}  {:>8.2} {:>8.2}  {}",
            name,
            lat.rps(),
            ms(lat.pct(0.5)),
            ms(lat.pct(0.99)),
            ms(*lat.sorted.last().unwrap()),
            ms(lat.pct(0.5)) / ms(calm50),
            ms(lat.pct(0.99)) / ms(calm99),
            storm
        );
    }
}
