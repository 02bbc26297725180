//! Configuration: the YAML file (`raw`) validated into typed values (`Config`). Every problem is
//! collected with its line and column; request-time code only ever sees a valid `Config`,
//! swapped whole on reload, and never parses anything again.

mod cookies;
mod locate;
mod raw;
mod recovery;
mod tls;
mod two_factor;

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use http::HeaderName;

use crate::core::addr::AddrSet;

pub use cookies::CookieNames;
pub use recovery::{
    InvitationsConfig, MailConfig, MailTransport, RecoveryConfig, SmsConfig, SmtpConfig,
    SmtpSecurity, parse_headers, parse_mailbox,
};
pub use tls::TlsConfig;
pub use two_factor::{TotpParams, TwoFactorConfig};

use locate::Locator;
pub use locate::Position;
use raw::{OneOrMany, RawConfig, Scalar};

/// One problem in a configuration file, printed as `FILE:LINE:COL: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub pos: Position,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Position { line, col } = self.pos;
        write!(f, "{}:{line}:{col}: {}", self.file, self.message)
    }
}

/// Every problem found in one file, in the order they appear.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Vec<SocketAddr>,
    pub public_url: Option<PublicUrl>,
    pub upstream: Upstream,
    pub admin_listen: SocketAddr,
    pub store: StoreConfig,
    pub session: SessionConfig,
    pub public_paths: Vec<String>,
    pub network: NetworkConfig,
    pub throttle: ThrottleConfig,
    pub timeouts: Timeouts,
    pub identity_headers: IdentityHeaders,
    /// The gateway's cookie names, derived once from `session.cookie_name` and `public_url`.
    pub cookies: CookieNames,
    pub passwords: PasswordPolicy,
    pub audit: AuditConfig,
    pub two_factor: TwoFactorConfig,
    pub mail: MailConfig,
    pub sms: SmsConfig,
    pub recovery: RecoveryConfig,
    pub invitations: InvitationsConfig,
    /// When set, every `listen` address serves HTTPS.
    pub tls: Option<TlsConfig>,
    /// A plain listener that only redirects to `public_url`.
    pub redirect_http: Option<SocketAddr>,
    pub watch: bool,
    /// The file this was read from, for reloads and messages.
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl {
    pub https: bool,
    /// `host[:port]` as written.
    pub authority: String,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub tls: bool,
    /// Host name for TLS SNI and certificate checks.
    pub sni: String,
    /// The CA file the portal's certificate must chain to (`upstream_ca`); the system's roots
    /// when `None`.
    pub ca: Option<PathBuf>,
}

#[derive(Clone, PartialEq, Eq)]
pub enum StoreConfig {
    Sqlite { path: PathBuf },
    Postgres { url: String },
}

/// By hand: a PostgreSQL URL may hold a password, and configs end up in debug output.
impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreConfig::Sqlite { path } => f.debug_struct("Sqlite").field("path", path).finish(),
            StoreConfig::Postgres { .. } => f.debug_struct("Postgres").finish_non_exhaustive(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The name as configured, without the `__Host-` prefix.
    pub cookie_name: String,
    pub idle_timeout: Duration,
    pub absolute_timeout: Option<Duration>,
    pub remember_me: Option<Duration>,
    /// Sessions one gateway keeps in memory; more are read from the store.
    pub cache_capacity: u64,
}

/// Sessions one gateway keeps in memory unless `session.cache_capacity` says otherwise.
pub const DEFAULT_SESSION_CACHE: u64 = 1_000_000;

#[derive(Debug, Clone, Default)]
pub struct NetworkConfig {
    pub trusted_proxies: AddrSet,
    /// The one header the trusted proxies set; no other forwarding header is read.
    pub forwarded_header: ForwardedHeader,
    /// Empty: everyone may reach the gateway.
    pub allow: AddrSet,
    pub restrictions: Vec<Restriction>,
}

#[derive(Debug, Clone, Copy)]
pub struct ThrottleConfig {
    pub captcha_after: u32,
    pub lock_after: u32,
    pub lock_duration: Duration,
    pub ip_attempts_per_minute: u32,
    /// Password checks per second on this gateway, whatever the address; 0 = no limit but the
    /// hashing pool's.
    pub password_checks_per_second: u32,
    /// Live CAPTCHA challenges in the store, all gateways together.
    pub captcha_limit: u32,
}

/// How long a client may take (docs/reference.md, Configuration: `timeouts`): past these the
/// connection closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// A request's whole head, from its first byte (on a new connection, from the accept).
    pub request_header: Duration,
    /// The whole body of a request the gateway answers itself; for proxied bodies, Pingora's
    /// own limit on a pause between reads applies.
    pub request_body: Duration,
    /// An idle connection between two requests.
    pub keepalive: Duration,
    /// The longest a client may take to accept one write of a response (a chunk of at most
    /// 64 KiB): a client that stops reading is disconnected.
    pub send: Duration,
}

#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    pub user: HeaderName,
    pub email: HeaderName,
    pub name: HeaderName,
    pub groups: HeaderName,
}

impl IdentityHeaders {
    pub fn all(&self) -> [&HeaderName; 4] {
        [&self.user, &self.email, &self.name, &self.groups]
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordPolicy {
    pub min_length: usize,
    pub argon2: Argon2Params,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Params {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

/// Where `audit.file` copies events to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventFile {
    Stdout,
    Path(PathBuf),
}

impl std::fmt::Display for EventFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EventFile::Stdout => f.write_str("standard output"),
            EventFile::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// The one header the trusted proxies set (`network.forwarded_header`); no other is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, …`: nginx's `$proxy_add_x_forwarded_for`, most load
    /// balancers.
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1`.
    Forwarded,
    /// `X-Real-IP: client`, set (not appended) by the proxy: exactly one value.
    XRealIp,
}

impl ForwardedHeader {
    pub const NAMES: [&'static str; 3] = ["X-Forwarded-For", "Forwarded", "X-Real-IP"];

    /// The header's name, as `http` stores it (made at compile time: nothing to parse per
    /// request).
    pub fn name(self) -> &'static HeaderName {
        static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
        static FORWARDED: HeaderName = http::header::FORWARDED;
        static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
        match self {
            ForwardedHeader::XForwardedFor => &X_FORWARDED_FOR,
            ForwardedHeader::Forwarded => &FORWARDED,
            ForwardedHeader::XRealIp => &X_REAL_IP,
        }
    }

    /// Case-insensitive, as operators write header names.
    pub fn parse(text: &str) -> Option<ForwardedHeader> {
        [
            ForwardedHeader::XForwardedFor,
            ForwardedHeader::Forwarded,
            ForwardedHeader::XRealIp,
        ]
        .into_iter()
        .find(|h| h.name().as_str().eq_ignore_ascii_case(text.trim()))
    }
}

/// One `network.restrictions` entry, validated.
#[derive(Debug, Clone)]
pub struct Restriction {
    pub name: String,
    /// Lower-cased.
    pub groups: Vec<String>,
    /// Lower-cased logins or emails.
    pub users: Vec<String>,
    pub allow: AddrSet,
}

#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub file: Option<EventFile>,
    /// `None`: events are kept for ever.
    pub retention: Option<Duration>,
}

impl Config {
    /// Reads and validates `path`. Relative paths inside (the store path) are taken relative
    /// to the directory of `path`, so the gateway behaves the same whatever its working directory.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let file = path.display().to_string();
        let source = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: file.clone(),
                pos: Position::START,
                message: format!("cannot read the file: {e}"),
            }])
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut config = Config::parse(&source, &file, base)?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Validates YAML text; `file` names it in errors and `base` anchors relative paths.
    pub fn parse(source: &str, file: &str, base: &Path) -> Result<Config, ConfigErrors> {
        let raw: RawConfig = if source.trim().is_empty() {
            RawConfig::default()
        } else {
            serde_yaml::from_str(source).map_err(|e| {
                let pos = e.location().map_or(Position::START, |l| Position {
                    line: l.line(),
                    col: l.column(),
                });
                ConfigErrors(vec![ConfigError {
                    file: file.to_string(),
                    pos,
                    message: serde_message(&e),
                }])
            })?
        };
        let mut v = Validator {
            file,
            locator: Locator::new(source),
            errors: Vec::new(),
        };
        let config = v.config(raw, base);
        if v.errors.is_empty() {
            Ok(config)
        } else {
            v.errors.sort_by_key(|e| (e.pos.line, e.pos.col));
            Err(ConfigErrors(v.errors))
        }
    }

    /// Whether cookies must carry `Secure` and the `__Host-` prefix (an https `public_url` or
    /// `tls`, decided once, where the cookie names are derived).
    pub fn secure_cookies(&self) -> bool {
        self.cookies.secure
    }
}

/// serde_yaml appends " at line L column C" to its messages; we print the position in front.
fn serde_message(e: &serde_yaml::Error) -> String {
    let text = e.to_string();
    match text.find(" at line ") {
        Some(cut) => text[..cut].to_string(),
        None => text,
    }
}

struct Validator<'a> {
    file: &'a str,
    locator: Locator,
    errors: Vec<ConfigError>,
}

impl Validator<'_> {
    fn error(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_string(),
            pos: self.locator.find(path),
            message: format!("{path}: {}", message.into()),
        });
    }

    fn config(&mut self, raw: RawConfig, base: &Path) -> Config {
        let listen = match raw.listen {
            None => vec![SocketAddr::from(([0, 0, 0, 0], 8080))],
            Some(OneOrMany::One(s)) => self.socket_addr("listen", &s).into_iter().collect(),
            Some(OneOrMany::Many(list)) => {
                if list.is_empty() {
                    self.error("listen", "at least one address is needed");
                }
                list.iter()
                    .enumerate()
                    .filter_map(|(i, s)| self.socket_addr(&format!("listen[{i}]"), s))
                    .collect()
            }
        };
        let admin_listen = match raw.admin_listen {
            None => SocketAddr::from(([127, 0, 0, 1], 9090)),
            Some(s) => self
                .socket_addr("admin_listen", &s)
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9090))),
        };
        if listen.contains(&admin_listen) {
            self.error(
                "admin_listen",
                "must differ from every `listen` address: /metrics and /readyz are never served on the public listener",
            );
        }
        let public_url = raw.public_url.and_then(|u| self.public_url(&u));
        let upstream = self.upstream(raw.upstream.as_deref());
        let network = self.network(raw.network);
        let session = self.session(raw.session);
        let tls = self.tls(raw.tls, base);
        self.tls_agrees(tls.as_ref(), public_url.as_ref());
        let mut taken = listen.clone();
        taken.push(admin_listen);
        let redirect_http = self.redirect_http(raw.redirect_http, public_url.as_ref(), &taken);
        let mut upstream = upstream;
        upstream.ca = self.upstream_ca(raw.upstream_ca, upstream.tls, base);
        // Cookies are Secure (and `__Host-`) whenever browsers reach the gateway over HTTPS.
        let secure = public_url.as_ref().is_some_and(|u| u.https) || tls.is_some();
        let has_public_url = public_url.is_some();
        let cookies = CookieNames::new(&session.cookie_name, secure);
        Config {
            listen,
            public_url,
            upstream,
            admin_listen,
            store: self.store(raw.store, base),
            session,
            public_paths: self.public_paths(raw.public_paths),
            network,
            throttle: self.throttle(raw.throttle),
            timeouts: self.timeouts(raw.timeouts),
            identity_headers: self.identity_headers(raw.identity_headers),
            cookies,
            passwords: self.passwords(raw.passwords),
            audit: self.audit(raw.audit, base),
            two_factor: self.two_factor(raw.two_factor, base),
            mail: self.mail(raw.mail, base, has_public_url),
            sms: self.sms(raw.sms, base),
            recovery: self.recovery(raw.recovery),
            invitations: self.invitations(raw.invitations),
            tls,
            redirect_http,
            watch: raw.watch.unwrap_or(false),
            source: None,
        }
    }

    fn socket_addr(&mut self, path: &str, text: &str) -> Option<SocketAddr> {
        match text.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.error(
                    path,
                    format!(
                        "`{text}` is not an address with a port, e.g. 0.0.0.0:8080 or \"[::]:8080\""
                    ),
                );
                None
            }
        }
    }

    fn public_url(&mut self, text: &str) -> Option<PublicUrl> {
        let (https, rest) = if let Some(r) = text.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = text.strip_prefix("http://") {
            (false, r)
        } else {
            self.error(
                "public_url",
                format!("`{text}` must start with https:// or http://"),
            );
            return None;
        };
        let authority = rest.trim_end_matches('/');
        if !crate::core::addr::valid_host(authority) {
            self.error(
                "public_url",
                format!("`{text}` must be a scheme and host only, e.g. https://portal.example.com"),
            );
            return None;
        }
        Some(PublicUrl {
            https,
            authority: authority.to_string(),
        })
    }

    fn upstream(&mut self, text: Option<&str>) -> Upstream {
        let fallback = Upstream {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: false,
            sni: String::new(),
            ca: None,
        };
        let Some(text) = text else {
            self.error(
                "upstream",
                "is required: the URL of the protected portal, e.g. http://127.0.0.1:8081",
            );
            return fallback;
        };
        let (tls, rest, default_port) = if let Some(r) = text.strip_prefix("https://") {
            (true, r, 443)
        } else if let Some(r) = text.strip_prefix("http://") {
            (false, r, 80)
        } else {
            self.error(
                "upstream",
                format!("`{text}` must start with http:// or https://"),
            );
            return fallback;
        };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
            self.error(
                "upstream",
                format!("`{text}` must be a scheme, host and port only (no path)"),
            );
            return fallback;
        }
        let (host, with_port) = split_host_port(authority, default_port);
        match with_port.to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(addr)) => Upstream {
                addr,
                tls,
                sni: host.to_string(),
                ca: None,
            },
            _ => {
                self.error("upstream", format!("cannot resolve `{authority}`"));
                fallback
            }
        }
    }

    fn store(&mut self, raw: raw::RawStore, base: &Path) -> StoreConfig {
        match raw.kind.as_deref().unwrap_or("sqlite") {
            "sqlite" => {
                if raw.url.is_some() {
                    self.error("store.url", "is for kind: postgres; sqlite uses `path`");
                }
                let path = raw.path.unwrap_or_else(|| "data/portcullis.db".into());
                StoreConfig::Sqlite {
                    path: base.join(path),
                }
            }
            "postgres" => {
                if raw.path.is_some() {
                    self.error("store.path", "is for kind: sqlite; postgres uses `url`");
                }
                let url = raw.url.unwrap_or_default();
                if url.is_empty() {
                    self.error("store.url", "is required for kind: postgres, e.g. postgres://portcullis@db.internal/portcullis");
                } else {
                    // The URL itself is never repeated: it may hold a password.
                    match tokio_postgres::Config::from_str(&url) {
                        Err(e) => self.error("store.url", format!("is not a PostgreSQL URL: {e}")),
                        Ok(c) if c.get_ssl_mode() == tokio_postgres::config::SslMode::Require => {
                            self.error(
                                "store.url",
                                "sslmode=require: TLS to PostgreSQL is not supported by this version; reach the database over a private network (sslmode=disable or prefer)",
                            )
                        }
                        Ok(_) => {}
                    }
                }
                StoreConfig::Postgres { url }
            }
            other => {
                self.error(
                    "store.kind",
                    format!("`{other}` is not a store; use sqlite or postgres"),
                );
                StoreConfig::Sqlite {
                    path: PathBuf::new(),
                }
            }
        }
    }

    fn duration(&mut self, path: &str, value: Option<Scalar>, default: Duration) -> Duration {
        match value {
            None => default,
            Some(v) => match parse_duration(&v.text()) {
                Ok(d) => d,
                Err(msg) => {
                    self.error(path, msg.to_string());
                    default
                }
            },
        }
    }

    fn session(&mut self, raw: raw::RawSession) -> SessionConfig {
        let cookie_name = raw
            .cookie_name
            .unwrap_or_else(|| "portcullis_session".into());
        if cookie_name.is_empty()
            || cookie_name.starts_with("__")
            || !cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            self.error(
                "session.cookie_name",
                format!("`{cookie_name}` must be letters, digits, `_` or `-` and must not start with `__` (the __Host- prefix is added for you)"),
            );
        }
        let idle_timeout = self.duration(
            "session.idle_timeout",
            raw.idle_timeout,
            Duration::from_secs(24 * 60),
        );
        if idle_timeout.is_zero() {
            self.error("session.idle_timeout", "must be longer than 0s");
        }
        let absolute_timeout = self.duration(
            "session.absolute_timeout",
            raw.absolute_timeout,
            Duration::ZERO,
        );
        let remember_me = self.duration(
            "session.remember_me",
            raw.remember_me,
            Duration::from_secs(30 * 86400),
        );
        let cache_capacity = raw.cache_capacity.unwrap_or(DEFAULT_SESSION_CACHE);
        if cache_capacity > 100_000_000 {
            self.error(
                "session.cache_capacity",
                "at most 100000000 (about 60 GB of memory); sessions beyond it are read from the store",
            );
        }
        SessionConfig {
            cookie_name,
            idle_timeout,
            absolute_timeout: non_zero(absolute_timeout),
            remember_me: non_zero(remember_me),
            cache_capacity,
        }
    }

    fn public_paths(&mut self, raw: Option<Vec<String>>) -> Vec<String> {
        let paths = raw.unwrap_or_else(|| vec!["/favicon.ico".into(), "/static/".into()]);
        for (i, p) in paths.iter().enumerate() {
            if !p.starts_with('/') {
                self.error(
                    &format!("public_paths[{i}]"),
                    format!("`{p}` must start with /"),
                );
            } else if p.starts_with("/_portcullis") {
                self.error(
                    &format!("public_paths[{i}]"),
                    "/_portcullis/ is reserved for the gateway's own pages",
                );
            } else if p == "/" {
                self.error(
                    &format!("public_paths[{i}]"),
                    "`/` would make the whole portal public; remove the gateway instead",
                );
            }
        }
        paths
    }

    fn addr_set(&mut self, path: &str, entries: &[String]) -> AddrSet {
        match AddrSet::parse(entries.iter().map(String::as_str)) {
            Ok(set) => set,
            Err(errors) => {
                for (i, msg) in errors {
                    self.error(&format!("{path}[{i}]"), msg);
                }
                AddrSet::default()
            }
        }
    }

    fn network(&mut self, raw: raw::RawNetwork) -> NetworkConfig {
        let trusted_proxies = self.addr_set("network.trusted_proxies", &raw.trusted_proxies);
        let forwarded_header = match raw.forwarded_header.as_deref() {
            None => ForwardedHeader::default(),
            Some(text) => ForwardedHeader::parse(text).unwrap_or_else(|| {
                self.error(
                    "network.forwarded_header",
                    format!(
                        "`{text}` is not a forwarding header; use {}",
                        ForwardedHeader::NAMES.join(", ")
                    ),
                );
                ForwardedHeader::default()
            }),
        };
        let allow = self.addr_set("network.allow", &raw.allow);
        let mut restrictions = Vec::new();
        for (i, r) in raw.restrictions.into_iter().enumerate() {
            let path = format!("network.restrictions[{i}]");
            if r.groups.is_empty() && r.users.is_empty() {
                self.error(
                    &path,
                    "names no `groups` or `users`, so it restricts nobody",
                );
            }
            if r.allow.is_empty() {
                self.error(
                    &path,
                    "`allow` is empty; to keep people out entirely, use `portcullis user dismiss`",
                );
            }
            let allow = self.addr_set(&format!("{path}.allow"), &r.allow);
            let lower = |v: Vec<String>| v.into_iter().map(|s| s.trim().to_lowercase()).collect();
            restrictions.push(Restriction {
                name: r.name.unwrap_or_else(|| format!("restriction {}", i + 1)),
                groups: lower(r.groups),
                users: lower(r.users),
                allow,
            });
        }
        NetworkConfig {
            trusted_proxies,
            forwarded_header,
            allow,
            restrictions,
        }
    }

    fn throttle(&mut self, raw: raw::RawThrottle) -> ThrottleConfig {
        let lock_duration = self.duration(
            "throttle.lock_duration",
            raw.lock_duration,
            Duration::from_secs(15 * 60),
        );
        // It is also how long an address's failures are remembered, so 0 would turn off the
        // per-address CAPTCHA as well as the lock.
        if lock_duration.is_zero() {
            self.error("throttle.lock_duration", "must be longer than 0s");
        }
        let captcha_limit = raw.captcha_limit.unwrap_or(10_000);
        if captcha_limit == 0 {
            self.error(
                "throttle.captcha_limit",
                "must be at least 1; to never ask for a CAPTCHA, set captcha_after: 0",
            );
        }
        ThrottleConfig {
            captcha_after: raw.captcha_after.unwrap_or(10),
            lock_after: raw.lock_after.unwrap_or(100),
            lock_duration,
            ip_attempts_per_minute: raw.ip_attempts_per_minute.unwrap_or(30),
            password_checks_per_second: raw.password_checks_per_second.unwrap_or(50),
            captcha_limit,
        }
    }

    fn timeouts(&mut self, raw: raw::RawTimeouts) -> Timeouts {
        let mut positive = |path: &str, value, default_secs| {
            let d = self.duration(path, value, Duration::from_secs(default_secs));
            if d.is_zero() {
                self.error(path, "must be longer than 0s");
            }
            d
        };
        Timeouts {
            request_header: positive("timeouts.request_header", raw.request_header, 10),
            request_body: positive("timeouts.request_body", raw.request_body, 10),
            keepalive: positive("timeouts.keepalive", raw.keepalive, 60),
            send: positive("timeouts.send", raw.send, 30),
        }
    }

    fn header(&mut self, path: &str, value: Option<String>, default: &'static str) -> HeaderName {
        let text = value.unwrap_or_else(|| default.to_string());
        match HeaderName::from_bytes(text.as_bytes()) {
            Ok(h) => h,
            Err(_) => {
                self.error(path, format!("`{text}` is not a valid header name"));
                HeaderName::from_static(default_lower(default))
            }
        }
    }

    fn identity_headers(&mut self, raw: raw::RawIdentityHeaders) -> IdentityHeaders {
        let headers = IdentityHeaders {
            user: self.header("identity_headers.user", raw.user, "X-Remote-User"),
            email: self.header("identity_headers.email", raw.email, "X-Remote-Email"),
            name: self.header("identity_headers.name", raw.name, "X-Remote-Name"),
            groups: self.header("identity_headers.groups", raw.groups, "X-Remote-Groups"),
        };
        let names = headers.all();
        for (i, h) in names.iter().enumerate() {
            if names[..i].contains(h) {
                self.error("identity_headers", format!("`{h}` is used twice"));
            }
        }
        headers
    }

    fn passwords(&mut self, raw: raw::RawPasswords) -> PasswordPolicy {
        let min_length = raw.min_length.unwrap_or(8) as usize;
        if min_length < 8 {
            self.error("passwords.min_length", "must be at least 8 (NIST 800-63B)");
        }
        let argon2 = Argon2Params {
            memory_kib: raw.argon2.memory_kib.unwrap_or(19456),
            iterations: raw.argon2.iterations.unwrap_or(2),
            parallelism: raw.argon2.parallelism.unwrap_or(1),
        };
        if argon2.memory_kib < 19456 {
            self.error(
                "passwords.argon2.memory_kib",
                "must be at least 19456 (the OWASP minimum)",
            );
        }
        if argon2.iterations < 2 {
            self.error(
                "passwords.argon2.iterations",
                "must be at least 2 (the OWASP minimum)",
            );
        }
        if !(1..=16).contains(&argon2.parallelism) {
            self.error("passwords.argon2.parallelism", "must be between 1 and 16");
        }
        PasswordPolicy { min_length, argon2 }
    }

    fn audit(&mut self, raw: raw::RawAudit, base: &Path) -> AuditConfig {
        let file = match raw.file.as_deref() {
            None | Some("") => None,
            Some("-") => Some(EventFile::Stdout),
            Some(path) => Some(EventFile::Path(base.join(path))),
        };
        AuditConfig {
            file,
            retention: non_zero(self.duration(
                "audit.retention",
                raw.retention,
                Duration::from_secs(180 * 86400),
            )),
        }
    }
}

fn non_zero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

fn default_lower(name: &'static str) -> &'static str {
    match name {
        "X-Remote-User" => "x-remote-user",
        "X-Remote-Email" => "x-remote-email",
        "X-Remote-Name" => "x-remote-name",
        _ => "x-remote-groups",
    }
}

/// `host:port` → (host, "host:port"), adding the scheme's port when none is written.
fn split_host_port(authority: &str, default_port: u16) -> (&str, String) {
    if let Some(rest) = authority.strip_prefix('[') {
        // [v6]:port
        let host = rest.split(']').next().unwrap_or(rest);
        if authority.contains("]:") {
            return (host, authority.to_string());
        }
        return (host, format!("{authority}:{default_port}"));
    }
    match authority.rsplit_once(':') {
        Some((host, _)) => (host, authority.to_string()),
        None => (authority, format!("{authority}:{default_port}")),
    }
}

/// A duration that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a duration; write e.g. 90s, 24m, 12h or 30d")]
pub struct DurationError(pub String);

/// `90s`, `24m`, `12h`, `30d`, or `0`.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let bad = || DurationError(text.to_string());
    let unit = text.chars().last().ok_or_else(bad)?;
    let seconds: u64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86400,
        _ => return Err(bad()),
    };
    let number: u64 = text[..text.len() - 1].parse().map_err(|_| bad())?;
    number
        .checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(bad)
}

/// `src` after a minimal `upstream`, as if read from `/etc/portcullis/t.yaml`: for the tests
/// of each section's validation.
#[cfg(test)]
pub(crate) fn parse_for_test(src: &str) -> Result<Config, String> {
    Config::parse(
        &format!("upstream: http://127.0.0.1:1\n{src}"),
        "t.yaml",
        Path::new("/etc/portcullis"),
    )
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<Config, ConfigErrors> {
        Config::parse(src, "t.yaml", Path::new("/etc/portcullis"))
    }

    #[test]
    fn durations() {
        let cases: [(&str, Option<u64>); 9] = [
            ("90s", Some(90)),
            ("24m", Some(1440)),
            ("12h", Some(43200)),
            ("30d", Some(2_592_000)),
            ("0", Some(0)),
            ("", None),
            ("5", None),
            ("m", None),
            ("-1s", None),
        ];
        for (text, want) in cases {
            assert_eq!(
                parse_duration(text).ok().map(|d| d.as_secs()),
                want,
                "{text}"
            );
        }
    }

    #[test]
    fn minimal_config_gets_the_documented_defaults() {
        let c = parse("upstream: http://127.0.0.1:8081\n").unwrap();
        assert_eq!(c.listen, vec!["0.0.0.0:8080".parse().unwrap()]);
        assert_eq!(c.admin_listen, "127.0.0.1:9090".parse().unwrap());
        assert_eq!(c.session.idle_timeout, Duration::from_secs(1440));
        assert_eq!(c.session.absolute_timeout, None);
        assert_eq!(c.session.remember_me, Some(Duration::from_secs(30 * 86400)));
        assert_eq!(
            c.store,
            StoreConfig::Sqlite {
                path: PathBuf::from("/etc/portcullis/data/portcullis.db")
            }
        );
        assert_eq!(c.identity_headers.user.as_str(), "x-remote-user");
        assert!(!c.secure_cookies());
        assert_eq!(c.passwords.argon2.memory_kib, 19456);
    }

    #[test]
    fn every_error_is_reported_with_its_position() {
        let src = "upstream: ftp://x\nsession:\n  idle_timeout: 24 minutes\n  remember_me: 3w\npublic_paths: [static/]\n";
        let errors = parse(src).unwrap_err().0;
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            vec![
                "t.yaml:1:11: upstream: `ftp://x` must start with http:// or https://",
                "t.yaml:3:17: session.idle_timeout: `24 minutes` is not a duration; write e.g. 90s, 24m, 12h or 30d",
                "t.yaml:4:16: session.remember_me: `3w` is not a duration; write e.g. 90s, 24m, 12h or 30d",
                "t.yaml:5:16: public_paths[0]: `static/` must start with /",
            ]
        );
    }

    #[test]
    fn unknown_keys_are_errors_with_position() {
        let errors = parse("upstream: http://127.0.0.1:1\nsession:\n  idle: 5m\n")
            .unwrap_err()
            .0;
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].pos, Position { line: 3, col: 3 });
        assert!(
            errors[0].message.contains("unknown field `idle`"),
            "{}",
            errors[0].message
        );
    }

    #[test]
    fn https_public_url_makes_cookies_secure() {
        let c = parse("upstream: http://127.0.0.1:1\npublic_url: https://portal.example.com/\n")
            .unwrap();
        assert!(c.secure_cookies());
        assert_eq!(c.public_url.unwrap().authority, "portal.example.com");
    }

    #[test]
    fn address_errors_point_at_the_entry() {
        let src = "upstream: http://127.0.0.1:1\nnetwork:\n  allow: [10.0.0.1, 10.0.0.300]\n  restrictions:\n    - name: office\n      groups: [staff]\n      allow:\n        - 192.168.0.0/16\n        - 10.1.2.3/8\n";
        let shown: Vec<String> = parse(src)
            .unwrap_err()
            .0
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            shown,
            vec![
                "t.yaml:3:21: network.allow[1]: `10.0.0.300` is not an IP address, a CIDR block or a FIRST-LAST range",
                "t.yaml:9:11: network.restrictions[0].allow[1]: `10.1.2.3/8` has host bits set; did you mean 10.0.0.0/8?",
            ]
        );
    }

    #[test]
    fn throttle_defaults_and_a_zero_lock_duration() {
        let c = parse("upstream: http://127.0.0.1:1\n").unwrap();
        let t = c.throttle;
        assert_eq!(
            (t.captcha_after, t.lock_after, t.ip_attempts_per_minute),
            (10, 100, 30)
        );
        assert_eq!(t.lock_duration, Duration::from_secs(900));
        let e = parse("upstream: http://127.0.0.1:1\nthrottle:\n  lock_duration: 0\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.yaml:3:18: throttle.lock_duration: must be longer than 0s"
        );
    }

    #[test]
    fn a_postgres_store_needs_a_url_that_parses_and_never_echoes_it() {
        let cfg = |store: &str| parse(&format!("upstream: http://127.0.0.1:1\nstore:\n{store}"));
        let ok = cfg("  kind: postgres\n  url: postgres://gw:pw@db.internal/portcullis\n").unwrap();
        assert_eq!(
            ok.store,
            StoreConfig::Postgres {
                url: "postgres://gw:pw@db.internal/portcullis".into()
            }
        );
        assert!(!format!("{ok:?}").contains("pw@"), "Debug shows no URL");
        for (store, message) in [
            (
                "  kind: postgres\n",
                "store.url: is required for kind: postgres",
            ),
            (
                "  kind: postgres\n  url: postgres://u:pw@h/db\n  path: x.db\n",
                "store.path: is for kind: sqlite",
            ),
            (
                "  kind: postgres\n  url: \"host=h password=pw2 sslmode=nonsense\"\n",
                "store.url: is not a PostgreSQL URL",
            ),
            (
                "  kind: postgres\n  url: postgres://u:pw@h/db?sslmode=require\n",
                "store.url: sslmode=require: TLS to PostgreSQL is not supported",
            ),
        ] {
            let e = cfg(store).unwrap_err().to_string();
            assert!(e.contains(message), "{e}");
            assert!(!e.contains("pw2") && !e.contains("u:pw"), "{e}");
        }
    }

    #[test]
    fn admin_listener_must_not_be_public() {
        let e = parse("upstream: http://127.0.0.1:1\nlisten: 127.0.0.1:9090\n").unwrap_err();
        assert!(e.to_string().contains("admin_listen: must differ"), "{e}");
    }

    #[test]
    fn missing_upstream_is_an_error() {
        let e = parse("").unwrap_err();
        assert_eq!(e.0.len(), 1);
        assert!(
            e.to_string()
                .starts_with("t.yaml:1:1: upstream: is required"),
            "{e}"
        );
    }
}
