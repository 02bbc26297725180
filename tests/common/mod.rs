//! Test harness: a real echo upstream over loopback, the real `portcullis` binary with a real
//! SQLite file in a temp dir, and a small cookie-keeping HTTP client.

#![allow(dead_code)]

pub mod pg;
pub mod smtp;
pub mod tls;

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const BIN: &str = env!("CARGO_BIN_EXE_portcullis");
pub const PASSWORD: &str = "correct horse battery";
/// What the upstream's `/hsts…` paths send as `Strict-Transport-Security`.
pub const PORTAL_HSTS: &str = "max-age=63072000; includeSubDomains; preload";
/// The size of the upstream's `/static/big`.
pub const BIG_FILE: usize = 64 << 20;

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body_len: usize,
    pub body_sha256: String,
    /// The body as text, when it is at most 64 KiB (e.g. a webhook's JSON).
    pub body: String,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        let canon = |s: &str| s.to_ascii_lowercase().replace('_', "-");
        self.headers
            .iter()
            .filter(|(k, _)| canon(k) == canon(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A real HTTP/1.1 server on 127.0.0.1 that answers every request with a JSON echo of it.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Upstream {
    pub fn start() -> Upstream {
        Upstream::start_at(SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// An upstream on a given address, e.g. the one a stopped upstream had.
    pub fn start_at(addr: SocketAddr) -> Upstream {
        let listener = TcpListener::bind(addr).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let log = seen.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    tokio::select! {
                        _ = &mut rx => return,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let log = log.clone();
                            tokio::spawn(async move {
                                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                                    let log = log.clone();
                                    async move {
                                        let (parts, body) = req.into_parts();
                                        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                                        let seen = Seen {
                                            method: parts.method.to_string(),
                                            path: parts.uri.to_string(),
                                            headers: parts.headers.iter().map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect(),
                                            body_len: body.len(),
                                            body_sha256: hex::encode(Sha256::digest(&body)),
                                            body: if body.len() <= 65536 { String::from_utf8_lossy(&body).into_owned() } else { String::new() },
                                        };
                                        let reply = json!({
                                            "method": seen.method, "path": seen.path,
                                            "headers": seen.headers, "body_len": seen.body_len, "body_sha256": seen.body_sha256,
                                        });
                                        // `/static/big`: a large file (64 MiB), for clients that stop reading.
                                        let body = if seen.path == "/static/big" {
                                            Bytes::from(vec![b'x'; BIG_FILE])
                                        } else {
                                            Bytes::from(reply.to_string())
                                        };
                                        let mut resp = hyper::Response::builder()
                                            .header("Content-Type", "application/json");
                                        // `/hsts…`: the portal sends an HSTS policy of its own.
                                        if seen.path.starts_with("/hsts") {
                                            resp = resp.header("Strict-Transport-Security", PORTAL_HSTS);
                                        }
                                        log.lock().unwrap().push(seen);
                                        Ok::<_, Infallible>(resp.body(Full::new(body)).unwrap())
                                    }
                                });
                                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                            });
                        }
                    }
                }
            });
        });
        Upstream {
            addr,
            seen,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the upstream saw no request")
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A port for a gateway to listen on. Taken from below the kernel's ephemeral range (so no
/// `bind(0)` or outgoing connection of a parallel test can grab it between our check and the
/// gateway's bind), one at a time per process, and checked free on IPv4 and IPv6.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id() % 6000;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < 6000, "no free port left below the ephemeral range");
        let port = 20000 + ((start + n) % 12000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() && TcpListener::bind(("::", port)).is_ok()
        {
            return port;
        }
    }
}

/// The real binary, serving a config in a temp dir.
pub struct Gateway {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    child: Option<Child>,
    restarts: usize,
    base: String,
    serve_args: Vec<String>,
    /// The binary run: the built one unless a test copies it (an upgrade test replaces it).
    pub bin: PathBuf,
    env: Vec<(String, String)>,
}

impl Gateway {
    /// Starts a gateway in front of `upstream` with `extra` YAML appended to the config.
    pub fn start(upstream: SocketAddr, extra: &str) -> Gateway {
        Gateway::start_on("127.0.0.1", upstream, extra)
    }

    /// Like `start`, listening on `host` (e.g. `"[::]"` for a dual-stack listener); clients
    /// still connect to 127.0.0.1.
    pub fn start_on(host: &str, upstream: SocketAddr, extra: &str) -> Gateway {
        Gateway::start_with(host, upstream, extra, &[])
    }

    /// Like `start_on`, with more arguments for `serve`, e.g. `--log-format json`.
    pub fn start_with(host: &str, upstream: SocketAddr, extra: &str, args: &[&str]) -> Gateway {
        let store = "store:\n  path: data/portcullis.db\n";
        let mut gw = Gateway::configure(host, upstream, extra, args, store);
        gw.add_alice();
        gw.spawn();
        gw
    }

    /// Like `start`, running a copy of the binary in the gateway's directory (`bin`), which
    /// the test may replace as a package upgrade would, with `env` added to its environment.
    pub fn start_copy(upstream: SocketAddr, extra: &str, env: &[(&str, &str)]) -> Gateway {
        let store = "store:\n  path: data/portcullis.db\n";
        let mut gw = Gateway::configure("127.0.0.1", upstream, extra, &[], store);
        gw.bin = gw.dir.path().join("portcullis");
        std::fs::copy(BIN, &gw.bin).unwrap();
        gw.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        gw.add_alice();
        gw.spawn();
        gw
    }

    /// The process id of the running gateway this harness started.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("not running").id()
    }

    /// Sends a signal (`-USR2`, `-QUIT`, …) to the gateway's process.
    pub fn send(&self, which: &str) {
        self.signal(which);
    }

    /// Waits at most `limit` for the process this harness started to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// A second gateway on `other`'s SQLite file: two gateways sharing one store.
    pub fn start_sharing(other: &Gateway, upstream: SocketAddr) -> Gateway {
        let path = other.dir.path().join("data/portcullis.db");
        let store = format!("store:\n  path: {}\n", path.display());
        let mut gw = Gateway::configure("127.0.0.1", upstream, "", &[], &store);
        std::fs::create_dir_all(gw.dir.path().join("data")).unwrap();
        let key = "data/secret.key";
        std::fs::copy(other.dir.path().join(key), gw.dir.path().join(key)).unwrap();
        gw.spawn();
        gw
    }

    /// The gateways of one store share its key file (`two_factor.secret_key_file`), as an
    /// operator copies it: the first one's is put where the next one's default is.
    fn share_key(&self, store: &str) {
        static KEYS: Mutex<Option<HashMap<String, Vec<u8>>>> = Mutex::new(None);
        let path = self.dir.path().join("data/secret.key");
        let mut keys = KEYS.lock().unwrap();
        let keys = keys.get_or_insert_with(HashMap::new);
        match (keys.get(store), std::fs::read(&path)) {
            (Some(key), _) => {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, key).unwrap();
            }
            (None, Ok(made)) => {
                keys.insert(store.to_string(), made);
            }
            (None, Err(_)) => {}
        }
    }

    /// A gateway on the store `store` (its YAML, e.g. a PostgreSQL `url`), with `extra` YAML;
    /// `add_alice` creates the usual user first (the first gateway of a cluster does).
    pub fn start_on_store(
        upstream: SocketAddr,
        store: &str,
        extra: &str,
        add_alice: bool,
    ) -> Gateway {
        let mut gw = Gateway::configure("127.0.0.1", upstream, extra, &[], store);
        if add_alice {
            gw.add_alice();
        }
        gw.share_key(store);
        gw.spawn();
        gw.share_key(store);
        gw
    }

    fn configure(
        host: &str,
        upstream: SocketAddr,
        extra: &str,
        args: &[&str],
        store: &str,
    ) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = dir.path().join("portcullis.yaml");
        let base = format!(
            "listen: \"{host}:{port}\"\nadmin_listen: {admin}\nupstream: http://{upstream}\n{store}"
        );
        // `{gateway}` in the extra YAML stands for this gateway's address (e.g. in public_url).
        let extra = extra.replace("{gateway}", &addr.to_string());
        std::fs::write(&config, format!("{base}{extra}")).unwrap();
        Gateway {
            dir,
            config,
            addr,
            admin,
            child: None,
            restarts: 0,
            base,
            serve_args: args.iter().map(|a| a.to_string()).collect(),
            bin: PathBuf::from(BIN),
            env: Vec::new(),
        }
    }

    pub fn log_path(&self, n: usize) -> PathBuf {
        self.dir.path().join(format!("gateway-{n}.log"))
    }

    /// Everything the gateway processes have written to stderr and stdout.
    pub fn logs(&self) -> String {
        (0..=self.restarts)
            .map(|n| std::fs::read_to_string(self.log_path(n)).unwrap_or_default())
            .collect()
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.log_path(self.restarts)).unwrap();
        let child = Command::new(&self.bin)
            .args(["serve", "-c"])
            .arg(&self.config)
            .args(&self.serve_args)
            .env("RUST_LOG", "debug")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = reqwest::blocking::Client::new();
        while Instant::now() < deadline {
            let health = client
                .get(format!("http://{}/healthz", self.admin))
                .timeout(Duration::from_secs(1))
                .send();
            let public =
                std::net::TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
            if health.is_ok_and(|r| r.status() == 200) && public.is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("the gateway exited with {status}:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the gateway did not become healthy:\n{}", self.logs());
    }

    /// Rewrites the config file with new `extra` YAML (the listeners and store stay).
    pub fn rewrite(&self, extra: &str) {
        let tmp = self.dir.path().join("next.yaml");
        std::fs::write(&tmp, format!("{}{extra}", self.base)).unwrap();
        std::fs::rename(tmp, &self.config).unwrap();
    }

    /// Writes `text` as the whole config file.
    pub fn rewrite_raw(&self, text: &str) {
        std::fs::write(&self.config, text).unwrap();
    }

    pub fn sighup(&self) {
        self.signal("-HUP");
    }

    fn signal(&self, which: &str) {
        let pid = self.child.as_ref().expect("not running").id().to_string();
        let sent = Command::new("kill").args([which, &pid]).status().unwrap();
        assert!(sent.success(), "kill {which} {pid}");
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Asks the process to stop (SIGTERM, a graceful shutdown) and waits, at most 15 s, for it
    /// to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("-TERM");
        let mut child = self.child.take().expect("not running");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the gateway did not stop within 15 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process (no graceful shutdown) and starts it again on the same config.
    pub fn restart(&mut self) {
        self.kill();
        self.restarts += 1;
        self.spawn();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Runs a CLI command against this gateway's config (`-c` is appended).
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        run_cli(args, Some(&self.config), stdin)
    }

    /// The user most tests sign in as: alice, in groups staff and ops, with `PASSWORD`.
    pub fn add_alice(&self) {
        self.add_user(
            "alice@example.com",
            "alice@example.com",
            "Alice Liddell",
            &["staff", "ops"],
        );
    }

    pub fn add_user(&self, login: &str, email: &str, name: &str, groups: &[&str]) {
        let mut args = vec![
            "user",
            "add",
            login,
            "--email",
            email,
            "--name",
            name,
            "--password-stdin",
        ];
        for g in groups {
            args.extend(["--group", g]);
        }
        let out = self.cli(&args, Some(PASSWORD));
        assert!(
            out.status.success(),
            "user add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Waits (at most 2 s: events are written in the background) until the store file holds
    /// every one of `needles`, e.g. an event name and an address.
    pub fn assert_stored(&self, needles: &[&str]) {
        let found = within(Duration::from_secs(2), || {
            let db = String::from_utf8_lossy(&self.db_bytes()).into_owned();
            needles.iter().all(|n| db.contains(n))
        });
        assert!(found.is_some(), "the store never held {needles:?}");
    }

    /// One series from the admin listener's `/metrics`, e.g.
    /// `portcullis_login_attempts_total{result="success"}`.
    pub fn metric(&self, series: &str) -> f64 {
        let all = self.scrape();
        *all.get(series)
            .unwrap_or_else(|| panic!("no {series} in:\n{all:#?}"))
    }

    /// The admin listener's `/metrics` as text.
    pub fn metrics_text(&self) -> String {
        reqwest::blocking::get(format!("http://{}/metrics", self.admin))
            .and_then(|r| r.text())
            .expect("metrics")
    }

    /// Every series of `/metrics` and its value.
    pub fn scrape(&self) -> std::collections::BTreeMap<String, f64> {
        self.metrics_text()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                let (series, value) = l.rsplit_once(' ').expect("series and value");
                (series.to_string(), value.parse().expect("a number"))
            })
            .collect()
    }

    /// Puts a CAPTCHA challenge whose answer the test knows into the gateway's store, through
    /// the store interface, and returns its id. (The gateway's own challenges are only ever
    /// stored hashed, so a test cannot answer them.)
    pub fn mint_captcha(&self, answer: &str) -> String {
        use portcullis::store::{CaptchaRecord, CaptchaStore, SqliteStore};
        let id = portcullis::core::secret::challenge_id();
        let expires_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            + 300;
        let record = CaptchaRecord {
            answer_hash: portcullis::service::captcha::answer_hash(&id, answer),
            id: id.clone(),
            png: Vec::new(),
            expires_at,
        };
        let path = self.dir.path().join("data/portcullis.db");
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(async {
                let store = SqliteStore::open(&path).await.unwrap();
                store.insert_captcha(&record, u32::MAX, 0).await.unwrap();
            });
        id
    }

    pub fn db_bytes(&self) -> Vec<u8> {
        let mut all = Vec::new();
        for suffix in ["", "-wal"] {
            let p = self.dir.path().join(format!("data/portcullis.db{suffix}"));
            all.extend(std::fs::read(p).unwrap_or_default());
        }
        all
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn run_cli(args: &[&str], config: Option<&std::path::Path>, stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    if let Some(c) = config {
        cmd.arg("-c").arg(c);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
    }
    child.wait_with_output().unwrap()
}

/// A response, read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The upstream's echo of the request.
    pub fn echo(&self) -> Value {
        assert_eq!(
            self.status, 200,
            "not proxied: {} {}",
            self.status, self.body
        );
        self.json()
    }
}

/// A browser-like client: keeps cookies, never follows redirects.
pub struct Browser {
    client: reqwest::blocking::Client,
    pub jar: HashMap<String, String>,
    /// The `User-Agent` sent with every request, if any.
    pub agent: Option<String>,
}

impl Default for Browser {
    fn default() -> Self {
        Browser::new()
    }
}

impl Browser {
    pub fn new() -> Browser {
        Browser::with(None)
    }

    /// A client whose connections come from `ip` (127.0.0.N or ::1).
    pub fn from_ip(ip: &str) -> Browser {
        Browser::with(Some(ip.parse().unwrap()))
    }

    fn with(local: Option<std::net::IpAddr>) -> Browser {
        let client = reqwest::blocking::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .local_address(local)
            .build()
            .unwrap();
        Browser {
            client,
            jar: HashMap::new(),
            agent: None,
        }
    }

    /// A client from `ip` that names itself `agent` (a browser's User-Agent).
    pub fn with_agent(ip: &str, agent: &str) -> Browser {
        let mut b = Browser::from_ip(ip);
        b.agent = Some(agent.to_string());
        b
    }

    /// The same cookies, sent from another address.
    pub fn moved_to(&self, ip: &str) -> Browser {
        let mut b = Browser::from_ip(ip);
        b.jar = self.jar.clone();
        b
    }

    pub fn cookie_header(&self) -> String {
        let mut pairs: Vec<String> = self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
        pairs.sort();
        pairs.join("; ")
    }

    fn absorb(&mut self, resp: &reqwest::blocking::Response) {
        for v in resp.headers().get_all("set-cookie") {
            let text = v.to_str().unwrap();
            let (pair, attrs) = text.split_once(';').unwrap_or((text, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if attrs.contains("Max-Age=0") {
                self.jar.remove(name.trim());
            } else {
                self.jar
                    .insert(name.trim().to_string(), value.trim().to_string());
            }
        }
    }

    pub fn send(&mut self, req: reqwest::blocking::RequestBuilder) -> Resp {
        let mut req = req;
        if !self.jar.is_empty() {
            req = req.header("Cookie", self.cookie_header());
        }
        if let Some(agent) = &self.agent {
            req = req.header("User-Agent", agent);
        }
        let resp = req.send().expect("request failed");
        self.absorb(&resp);
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().unwrap_or_default();
        Resp {
            status,
            headers,
            body,
        }
    }

    pub fn get(&mut self, url: &str) -> Resp {
        let req = self
            .client
            .get(url)
            .header("Accept", "text/html,application/xhtml+xml,*/*;q=0.8");
        self.send(req)
    }

    pub fn api_get(&mut self, url: &str) -> Resp {
        let req = self.client.get(url).header("Accept", "application/json");
        self.send(req)
    }

    pub fn request(&self, method: &str, url: &str) -> reqwest::blocking::RequestBuilder {
        self.client.request(method.parse().unwrap(), url)
    }

    pub fn post_form(&mut self, url: &str, fields: &[(&str, &str)]) -> Resp {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let req = self
            .client
            .post(url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body);
        self.send(req)
    }

    pub fn post_json(&mut self, url: &str, value: &Value) -> Resp {
        let req = self
            .client
            .post(url)
            .header("Content-Type", "application/json")
            .body(value.to_string());
        self.send(req)
    }

    /// Loads the login page (for its CSRF cookie) and posts the form.
    pub fn login_form(
        &mut self,
        gw: &Gateway,
        login: &str,
        password: &str,
        remember: bool,
        rd: &str,
    ) -> Resp {
        let page = self.get(&gw.url(&format!("/_portcullis/login?rd={}", urlencode(rd))));
        assert_eq!(page.status, 200, "{}", page.body);
        let csrf = self
            .csrf_cookie()
            .expect("the login page set no CSRF cookie");
        let mut fields = vec![
            ("login", login),
            ("password", password),
            ("csrf", csrf.as_str()),
            ("rd", rd),
        ];
        if remember {
            fields.push(("remember", "1"));
        }
        self.post_form(&gw.url("/_portcullis/login"), &fields)
    }

    /// Signs in as alice through the JSON API with `password`; the answer, whatever it is.
    pub fn api_sign_in(&mut self, gw: &Gateway, password: &str) -> Resp {
        self.post_json(
            &gw.url("/_portcullis/api/login"),
            &json!({"login": "alice@example.com", "password": password}),
        )
    }

    /// Signs in as alice and checks that it worked.
    pub fn sign_in(&mut self, gw: &Gateway, remember: bool) {
        let r = self.login_form(gw, "alice@example.com", PASSWORD, remember, "/");
        assert_eq!(r.status, 303, "sign-in failed: {}", r.body);
        assert!(self.session().is_some());
    }

    pub fn csrf_cookie(&self) -> Option<String> {
        self.jar.get("portcullis_session_csrf").cloned()
    }

    pub fn session(&self) -> Option<String> {
        self.jar.get("portcullis_session").cloned()
    }

    pub fn remember(&self) -> Option<String> {
        self.jar.get("portcullis_session_remember").cloned()
    }
}

pub fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Polls `check` every 50 ms until it is true or `limit` passes; returns the time it took.
pub fn within(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() <= limit {
        if check() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Sends bytes as they are and returns the whole answer as text.
pub fn raw_request(addr: SocketAddr, request: &str) -> String {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// A plain TCP connection to `addr` from the source address `ip` (127.0.0.N), blocking, with a
/// 10 s read timeout.
pub fn connect_from(ip: &str, addr: SocketAddr) -> std::net::TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::new(ip.parse().unwrap(), 0))
            .unwrap();
        socket.connect(addr).await.unwrap().into_std().unwrap()
    });
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Sends `request` as it is from `ip` and returns the whole answer (the connection is read
/// until the gateway closes it, at most 10 s).
pub fn raw_request_from(ip: &str, addr: SocketAddr, request: &[u8]) -> String {
    use std::io::Read;
    let mut stream = connect_from(ip, addr);
    stream.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of an HTTP/1.1 answer read as text, or 0.
pub fn status_of(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}
