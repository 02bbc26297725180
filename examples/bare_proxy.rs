//! The floor that `benches/load.sh` measures Portcullis against: a Pingora proxy that does
//! nothing but forward, used the way the gateway uses Pingora (same release profile, allocator,
//! thread count and modules), so that the gap between the two rows is the gateway's own cost.
//!
//! `bare_proxy LISTEN UPSTREAM`, e.g. `bare_proxy 127.0.0.1:8080 127.0.0.1:8081`.

use std::net::SocketAddr;

use async_trait::async_trait;
use pingora::modules::http::HttpModules;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::ServerConf;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Bare {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, upstream] = args.as_slice() else {
        eprintln!("usage: bare_proxy LISTEN UPSTREAM");
        std::process::exit(2);
    };
    let upstream = upstream.parse().unwrap_or_else(|e| {
        eprintln!("bare_proxy: {upstream}: {e}");
        std::process::exit(2);
    });
    // As the gateway's, shutdown included: the benches stop it with SIGTERM.
    let conf = ServerConf {
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(5),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, Bare { upstream });
    proxy.add_tcp(listen);
    server.add_service(proxy);
    server.run_forever();
}
