//! Plain Pingora pass-through: the smallest `ProxyHttp` that forwards every request to one
//! upstream with keep-alive, and nothing else (no routing, metrics, logs or request id). It is
//! the baseline that shows what payguard's own request phases cost on top of Pingora.
//!
//! Usage: `bench_passthrough LISTEN_ADDR UPSTREAM_ADDR [threads]` (default 1 thread). Used by
//! `scripts/bench-proxy`; see docs/benchmarks.md. It uses the allocator the payguard binary
//! uses, so the comparison measures payguard's work, not the allocators'.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;

use async_trait::async_trait;
use pingora::prelude::{HttpPeer, Session};
use pingora::proxy::{http_proxy_service, ProxyHttp};
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};

struct PassThrough {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for PassThrough {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> pingora::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen = args
        .next()
        .ok_or("usage: bench_passthrough LISTEN UPSTREAM [threads]")?;
    let upstream: SocketAddr = args.next().ok_or("missing UPSTREAM")?.parse()?;
    let threads: usize = args.next().map(|t| t.parse()).transpose()?.unwrap_or(1);
    // Same pool size as payguard's default `upstream.pool_size`, so the comparison is fair.
    let conf = ServerConf {
        threads,
        upstream_keepalive_pool_size: 128,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(&server.configuration, PassThrough { upstream });
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    eprintln!("bench_passthrough listening on {listen} -> {upstream}");
    server.run(RunArgs::default());
    Ok(())
}
