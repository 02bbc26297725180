//! `portcullis demo`: the gateway in front of a small built-in portal that shows the identity
//! headers it receives, with a `demo` user whose fresh password is printed. State lives in
//! `./demo-data`, so the demo survives a restart like the real thing. Mail goes to `.eml` files
//! in `./demo-data/outbox`, which the portal lists at `/outbox/` (a public path), so a reset
//! link can be followed without a mail server.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::{HttpServer, ServeHttp};
use pingora::protocols::http::ServerSession;
use pingora::services::listening::Service;

use crate::cli::CliError;
use crate::config::Config;
use crate::service::accounts::{Accounts, Profile};
use crate::store;

/// The built-in portal: one page listing what the gateway told it, and the mail "sent".
pub struct DemoPortal {
    pub outbox: PathBuf,
}

/// Where the demo's mail is written, and the portal's public page listing it.
const OUTBOX_DIR: &str = "demo-data/outbox";
const OUTBOX_PATH: &str = "/outbox/";
/// Messages the outbox page shows, newest first.
const OUTBOX_SHOWN: usize = 20;

#[derive(askama::Template)]
#[template(path = "demo_outbox.html")]
struct OutboxPage {
    messages: Vec<Sent>,
}

/// One `.eml` file as the outbox page shows it.
struct Sent {
    to: String,
    subject: String,
    links: Vec<String>,
}

/// The demo's outbox: the newest messages, each with its links to the gateway.
pub fn outbox_page(dir: &Path) -> String {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "eml"));
    // Named `<millis>-<random>.eml`: by name is by time.
    files.sort();
    let messages = files
        .iter()
        .rev()
        .take(OUTBOX_SHOWN)
        .filter_map(|p| std::fs::read(p).ok())
        .map(|raw| read_eml(&raw))
        .collect();
    askama::Template::render(&OutboxPage { messages })
        .unwrap_or_else(|e| format!("The outbox could not be shown: {e}"))
}

/// The header fields and reset links of a message (its text is quoted-printable or plain).
fn read_eml(raw: &[u8]) -> Sent {
    let text = String::from_utf8_lossy(raw)
        .replace("=\r\n", "")
        .replace("=3D", "=");
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let mut links: Vec<String> = text
        .match_indices("http://")
        .map(|(at, _)| &text[at..])
        .filter_map(|rest| {
            rest.split(|c: char| c.is_whitespace() || c == '"' || c == '<')
                .next()
        })
        .filter(|url| url.contains("/_portcullis/reset?token="))
        .map(str::to_string)
        .collect();
    links.dedup();
    Sent {
        to: field("To: "),
        subject: field("Subject: "),
        links,
    }
}

const SHOWN: [&str; 8] = [
    "x-remote-user",
    "x-remote-email",
    "x-remote-name",
    "x-remote-groups",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "cookie",
];

#[derive(askama::Template)]
#[template(path = "demo_portal.html")]
struct PortalPage {
    user: String,
    rows: Vec<(&'static str, String)>,
}

pub fn portal_page(headers: &http::HeaderMap) -> String {
    let rows = SHOWN
        .iter()
        .map(|name| {
            let value = headers
                .get(*name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_else(|| "(not sent)".into());
            (*name, value)
        })
        .collect();
    let user = headers
        .get("x-remote-name")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("stranger")
        .to_string();
    askama::Template::render(&PortalPage { user, rows })
        .unwrap_or_else(|e| format!("The demo page could not be shown: {e}"))
}

#[async_trait]
impl ServeHttp for DemoPortal {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let head = session.req_header();
        let body = if head.uri.path() == OUTBOX_PATH {
            outbox_page(&self.outbox)
        } else {
            portal_page(&head.headers)
        }
        .into_bytes();
        Response::builder()
            .status(200)
            .header("Content-Type", "text/html; charset=utf-8")
            .header("Content-Length", body.len())
            .body(body)
            .unwrap_or_default()
    }
}

fn free_port() -> Result<u16, CliError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| CliError::runtime(format!("cannot find a free local port: {e}")))
}

pub fn run(port: u16) -> Result<(), CliError> {
    let portal = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let yaml = format!(
        "listen: 127.0.0.1:{port}\npublic_url: http://127.0.0.1:{port}\nupstream: http://{portal}\nadmin_listen: {admin}\nstore:\n  path: demo-data/portcullis.db\npublic_paths: [/favicon.ico, /static/, {OUTBOX_PATH}]\ntwo_factor:\n  issuer: Portcullis demo\n  secret_key_file: demo-data/secret.key\nmail:\n  transport: file\n  dir: {OUTBOX_DIR}\n  from: \"Demo portal <no-reply@demo.example>\"\n"
    );
    let config = Config::parse(&yaml, "demo", Path::new("."))
        .map_err(|e| CliError::runtime(e.to_string()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::runtime)?;
    let password = rt.block_on(async {
        let store = store::open(&config.store).await?;
        let profile = Profile {
            login: "demo".into(),
            email: "demo@example.com".into(),
            name: "Demo User".into(),
            phone: String::new(),
            groups: vec!["staff".into(), "demo".into()],
        };
        Accounts::new(store.as_ref(), &config)
            .ensure(profile)
            .await
            .map_err(CliError::from)
    })?;
    drop(rt);
    println!("Portcullis demo");
    println!("  open      http://127.0.0.1:{port}/");
    println!("  login     demo");
    println!("  password  {}", password.expose());
    println!(
        "  mail      http://127.0.0.1:{port}{OUTBOX_PATH} (what the demo \"sent\": public, reset links included; a demo only)"
    );
    println!("  health    http://{admin}/healthz");
    println!("  data      ./demo-data (delete it to start over)");
    println!("Press Ctrl-C to stop.");
    let mut service = Service::new(
        "demo portal".to_string(),
        HttpServer::new_app(DemoPortal {
            outbox: PathBuf::from(OUTBOX_DIR),
        }),
    );
    service.add_tcp(&portal.to_string());
    crate::gateway::serve(
        config,
        vec![Box::new(service)],
        crate::gateway::Listeners::Bind,
    )
    .map_err(CliError::runtime)
}
