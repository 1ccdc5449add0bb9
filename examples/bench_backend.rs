//! A minimal HTTP/1.1 backend for load tests: answers every request `200 ok` (2 bytes), with
//! keep-alive, after reading the whole request body. It stands in for "the app" so a load run
//! measures the proxy, not the backend.
//!
//! Usage: `bench_backend 127.0.0.1:PORT [worker_threads]` (default 1 worker thread; pin the process
//! with `taskset`). Used by `scripts/bench-proxy`; see docs/benchmarks.md.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

async fn answer(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // Read the body like a real app would (notify forwards are POSTs with a JSON event).
    let _ = req.into_body().collect().await;
    let mut resp = Response::new(Full::new(Bytes::from_static(b"ok")));
    resp.headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
    Ok(resp)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args.next().ok_or("usage: bench_backend ADDR [threads]")?.parse()?;
    let threads: usize = args.next().map(|t| t.parse()).transpose()?.unwrap_or(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(addr).await?;
        eprintln!("bench_backend listening on {}", listener.local_addr()?);
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(answer))
                    .await;
            });
        }
    })
}
