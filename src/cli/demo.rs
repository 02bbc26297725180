//! `portcullis demo`: the gateway in front of a small built-in portal that shows the identity
//! headers it receives, with a `demo` user whose fresh password is printed. State lives in
//! `./demo-data`, so the demo survives a restart like the real thing.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::{HttpServer, ServeHttp};
use pingora::protocols::http::ServerSession;
use pingora::services::listening::Service;

use crate::cli::CliError;
use crate::config::Config;
use crate::service::accounts::{Accounts, Profile};
use crate::store;

/// The built-in portal: one page listing what the gateway told it.
pub struct DemoPortal;

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
        let body = portal_page(&session.req_header().headers).into_bytes();
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
        "listen: 127.0.0.1:{port}\nupstream: http://{portal}\nadmin_listen: {admin}\nstore:\n  path: demo-data/portcullis.db\ntwo_factor:\n  issuer: Portcullis demo\n  secret_key_file: demo-data/secret.key\n"
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
    println!("  health    http://{admin}/healthz");
    println!("  data      ./demo-data (delete it to start over)");
    println!("Press Ctrl-C to stop.");
    let mut service = Service::new("demo portal".to_string(), HttpServer::new_app(DemoPortal));
    service.add_tcp(&portal.to_string());
    crate::gateway::serve(config, vec![Box::new(service)]).map_err(CliError::runtime)
}
