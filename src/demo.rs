//! `payguard demo`: everything on loopback with the embedded store and a built-in demo backend.
//! Starts payguard (as a child process running `payguard run`), sends requests through it and
//! shows what the backend received.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use crate::config::{self, Config};

/// What the demo backend saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method and target.
    pub request_line: String,
    /// Body length.
    pub body_len: usize,
    /// `x-request-id` as received.
    pub request_id: Option<String>,
}

/// A tiny backend that answers `200 {"ok":true,...}` and remembers what it received.
#[derive(Debug, Clone, Default)]
pub struct DemoBackend {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl DemoBackend {
    /// Serves on `addr` until the runtime stops.
    pub async fn serve(&self, addr: SocketAddr) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("the demo backend cannot listen on {addr} (is something else there?)"))?;
        let seen = self.seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        async move {
                            let request_line = format!("{} {}", req.method(), req.uri());
                            let request_id = req
                                .headers()
                                .get("x-request-id")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_string);
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let reply = serde_json::json!({"ok": true, "backend": "payguard demo backend", "received_bytes": body.len()});
                            if let Ok(mut s) = seen.lock() {
                                s.push(Seen {
                                    request_line,
                                    body_len: body.len(),
                                    request_id,
                                });
                            }
                            Ok::<_, Infallible>(
                                hyper::Response::builder()
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(reply.to_string())))
                                    .unwrap_or_default(),
                            )
                        }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        Ok(())
    }

    /// Requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the demo with `config_path`; `once` exits after the walkthrough instead of serving on.
pub fn run(config_path: &Path, once: bool) -> anyhow::Result<()> {
    let (_, cfg) = config::load_file(config_path).map_err(|e| anyhow::anyhow!("{}:\n{e}", config_path.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(walkthrough(config_path, &cfg, once))
}

async fn walkthrough(config_path: &Path, cfg: &Config, once: bool) -> anyhow::Result<()> {
    let backend = DemoBackend::default();
    backend.serve(cfg.upstream.socket).await?;
    println!("demo backend     http://{}", cfg.upstream.socket);

    let log_path: PathBuf = std::env::temp_dir().join(format!("payguard-demo-{}.log", std::process::id()));
    let log = std::fs::File::create(&log_path)?;
    let mut cmd = Command::new(std::env::current_exe()?);
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl only affects the child being spawned; the proxy must not outlive the demo.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
    }
    let child = cmd
        .arg("run")
        .arg("-c")
        .arg(config_path)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start payguard")?;
    let mut child = ChildGuard(child);
    println!(
        "payguard         http://{}   (admin http://{}, logs {})",
        cfg.listen,
        cfg.admin_listen,
        log_path.display()
    );

    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Full<Bytes>>();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(Some(status)) = child.0.try_wait() {
            anyhow::bail!("payguard exited with {status}; see {}", log_path.display());
        }
        let probe =
            hyper::Request::get(format!("http://{}/healthz", cfg.admin_listen)).body(Full::new(Bytes::new()))?;
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_millis(500), client.request(probe)).await {
            if r.status().is_success() {
                break;
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!("payguard did not become ready; see {}", log_path.display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    println!("\n── client calls through payguard ──");
    let proxy = cfg.listen;
    let calls: [(&str, &str, &[u8]); 3] = [
        ("GET", "/api/hello?name=demo", b""),
        ("POST", "/api/orders", br#"{"sku":"tea-42","qty":2,"amount":"88.80"}"#),
        ("GET", "/nowhere-routed", b""),
    ];
    for (method, path, body) in calls {
        let before = backend.seen().len();
        let req = hyper::Request::builder()
            .method(method)
            .uri(format!("http://{proxy}{path}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::copy_from_slice(body)))?;
        let resp = client.request(req).await.context("request through payguard")?;
        let status = resp.status();
        let rid = resp
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string();
        let text = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        println!("{method:<5} {path:<24} → {status}  x-request-id {rid}");
        println!("      answer: {}", String::from_utf8_lossy(&text));
        match backend.seen().get(before) {
            Some(s) => println!(
                "      backend received: {} ({} body bytes, x-request-id {})",
                s.request_line,
                s.body_len,
                s.request_id.as_deref().unwrap_or("-")
            ),
            None => println!("      backend received nothing (payguard answered itself)"),
        }
    }

    let metrics_req =
        hyper::Request::get(format!("http://{}/metrics", cfg.admin_listen)).body(Full::new(Bytes::new()))?;
    if let Ok(resp) = client.request(metrics_req).await {
        let text = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        println!("\n── metrics (payguard_requests_total) ──");
        for line in String::from_utf8_lossy(&text)
            .lines()
            .filter(|l| l.starts_with("payguard_requests_total"))
        {
            println!("{line}");
        }
    }

    if once {
        return Ok(());
    }
    println!("\npayguard keeps serving on http://{proxy} — try: curl -i http://{proxy}/api/hello   (Ctrl-C stops)");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
