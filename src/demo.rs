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

use crate::channels::registry::ChannelConfig;
use crate::channels::{ChannelKind, EventKind, SimulateKeys, SimulateSpec, SimulatedNotification};
use crate::config::{self, Config, FileConfig};
use crate::proxy::routes::PolicyKind;

/// What the demo backend saw of one request.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    /// Method and target.
    pub(crate) request_line: String,
    /// Body length.
    pub(crate) body_len: usize,
    /// Body bytes.
    pub(crate) body: Bytes,
    /// `x-pg-risk` as received (order rules that tagged the request).
    pub(crate) risk: Option<String>,
}

/// A tiny backend that answers `200 {"ok":true,...}` and remembers what it received.
#[derive(Debug, Clone, Default)]
pub(crate) struct DemoBackend {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl DemoBackend {
    /// Serves on `addr` until the runtime stops.
    pub(crate) async fn serve(&self, addr: SocketAddr) -> anyhow::Result<()> {
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
                            let header = |name: &str| {
                                req.headers()
                                    .get(name)
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_string)
                            };
                            let risk = header("x-pg-risk");
                            let body = body_bytes(req.into_body()).await;
                            let reply = serde_json::json!({"ok": true, "backend": "payguard demo backend", "received_bytes": body.len()});
                            if let Ok(mut s) = seen.lock() {
                                s.push(Seen {
                                    request_line,
                                    body_len: body.len(),
                                    body: body.clone(),
                                    risk,
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
    pub(crate) fn seen(&self) -> Vec<Seen> {
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
pub(crate) fn run(config_path: &Path, once: bool) -> anyhow::Result<()> {
    let (file, cfg) = config::load_file(config_path).map_err(|e| anyhow::anyhow!("{}:\n{e}", config_path.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(walkthrough(config_path, &file, &cfg, once))
}

async fn walkthrough(config_path: &Path, file: &FileConfig, cfg: &Config, once: bool) -> anyhow::Result<()> {
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

    let demo = Walk {
        client: &client,
        backend: &backend,
        proxy: cfg.listen,
    };
    println!("\n── client calls through payguard ──");
    demo.step("pass route", "GET", "/api/hello?name=demo", &[], b"").await?;
    let order = br#"{"user_id":"u-1001","sku":"tea-42","qty":2,"amount":"88.80"}"#;
    match signing_key(file) {
        Some((key, secret)) => {
            let headers = signed_headers(&key, &secret, "POST", "/api/orders", order)?;
            demo.step("signed order", "POST", "/api/orders", &headers, order)
                .await?;
            demo.step("same request replayed", "POST", "/api/orders", &headers, order)
                .await?;
            let mut tampered = order.to_vec();
            tampered.extend_from_slice(b" ");
            demo.step("body changed after signing", "POST", "/api/orders", &headers, &tampered)
                .await?;
        }
        None => println!("(no guard.signature key in this config: signed calls skipped)"),
    }
    demo.step("unsigned order", "POST", "/api/orders", &[], order).await?;
    demo.step("unrouted path", "GET", "/nowhere-routed", &[], b"").await?;

    if let Some((path, secret)) = stripe_route(file, cfg) {
        println!("\n── payment notifications through payguard (Stripe) ──");
        let n = stripe_notification(&secret)?;
        let mut headers: Vec<(String, String)> = n.headers.clone();
        headers.push(("content-type".into(), n.content_type.clone()));
        demo.step("payment_intent.succeeded", "POST", &path, &headers, &n.body)
            .await?;
        demo.step("the same notification again", "POST", &path, &headers, &n.body)
            .await?;
        let mut tampered = n.body.clone();
        if let Some(b) = tampered.iter_mut().find(|b| b.is_ascii_digit()) {
            *b = if *b == b'9' { b'1' } else { *b + 1 };
        }
        demo.step("tampered notification", "POST", &path, &headers, &tampered)
            .await?;
    }

    let metrics_req =
        hyper::Request::get(format!("http://{}/metrics", cfg.admin_listen)).body(Full::new(Bytes::new()))?;
    if let Ok(resp) = client.request(metrics_req).await {
        let text = body_bytes(resp.into_body()).await;
        println!("\n── metrics ──");
        for line in String::from_utf8_lossy(&text).lines().filter(|l| {
            [
                "payguard_requests_total",
                "payguard_notifications_total",
                "payguard_rule_decisions_total",
            ]
            .iter()
            .any(|m| l.starts_with(m))
        }) {
            println!("{line}");
        }
    }

    if once {
        return Ok(());
    }
    let proxy = cfg.listen;
    println!("\npayguard keeps serving on http://{proxy} — try: curl -i http://{proxy}/api/hello   (Ctrl-C stops)");
    tokio::signal::ctrl_c().await?;
    Ok(())
}

type DemoClient = hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// One walkthrough: sends requests through payguard and shows what the backend saw.
struct Walk<'a> {
    client: &'a DemoClient,
    backend: &'a DemoBackend,
    proxy: SocketAddr,
}

impl Walk<'_> {
    async fn step(
        &self,
        what: &str,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> anyhow::Result<()> {
        let before = self.backend.seen().len();
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.proxy));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let resp = self
            .client
            .request(req.body(Full::new(Bytes::copy_from_slice(body)))?)
            .await
            .context("request through payguard")?;
        let status = resp.status();
        let text = body_bytes(resp.into_body()).await;
        println!("{what}: {method} {path} → {status}");
        if !text.is_empty() {
            println!("      answer: {}", String::from_utf8_lossy(&text));
        }
        match self.backend.seen().get(before) {
            Some(s) => {
                println!("      backend received: {} ({} body bytes)", s.request_line, s.body_len);
                if let Some(risk) = &s.risk {
                    println!("      with X-PG-Risk: {risk}");
                }
                if s.request_line.contains("payment-events") {
                    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&s.body) {
                        println!(
                            "      normalized event: id={} kind={} out_trade_no={} amount_minor={} currency={}",
                            v["id"], v["kind"], v["out_trade_no"], v["amount_minor"], v["currency"]
                        );
                    }
                }
            }
            None => println!("      backend received nothing"),
        }
        Ok(())
    }
}

/// The first access key and secret of the guard's signature section, if any.
fn signing_key(file: &FileConfig) -> Option<(String, Vec<u8>)> {
    let key = file.guard.as_ref()?.signature.as_ref()?.keys.first()?;
    let secret = key.secrets.first()?.resolve().ok()?;
    Some((key.id.clone(), secret.expose().to_vec()))
}

fn signed_headers(
    key: &str,
    secret: &[u8],
    method: &str,
    path: &str,
    body: &[u8],
) -> anyhow::Result<Vec<(String, String)>> {
    let ts = jiff::Timestamp::now().as_second().to_string();
    let nonce = crate::guard::signature::new_nonce();
    let sig = crate::guard::signature::sign_request(secret, method, path, None, &ts, &nonce, body)
        .map_err(|e| anyhow::anyhow!("signing: {e}"))?;
    Ok(vec![
        ("content-type".into(), "application/json".into()),
        ("x-pg-key".into(), key.to_string()),
        ("x-pg-timestamp".into(), ts),
        ("x-pg-nonce".into(), nonce),
        ("x-pg-signature".into(), sig),
    ])
}

/// Path and first endpoint secret of the first Stripe notify route, if any.
fn stripe_route(file: &FileConfig, cfg: &Config) -> Option<(String, Vec<u8>)> {
    let _ = cfg;
    file.routes
        .iter()
        .filter(|r| r.policy == PolicyKind::Notify)
        .find_map(|r| {
            let notify = r.notify.as_ref()?;
            // The route's own Stripe keys, or those of the Stripe account it names.
            let secrets = match (&notify.channel, &notify.merchant) {
                (Some(ChannelConfig::Stripe(stripe)), _) => &stripe.endpoint_secrets,
                (None, Some(name)) => match file.merchants.get(name)? {
                    crate::egress::MerchantConfig::Stripe(stripe) => &stripe.endpoint_secrets,
                    _ => return None,
                },
                _ => return None,
            };
            let secret = secrets.first()?.resolve().ok()?;
            Some((r.matcher.path.clone()?, secret.expose().to_vec()))
        })
}

fn stripe_notification(secret: &[u8]) -> anyhow::Result<SimulatedNotification> {
    let spec = SimulateSpec {
        out_trade_no: "demo-1001".into(),
        amount_minor: 8880,
        currency: "cny".into(),
        kind: EventKind::PaymentSucceeded,
        out_refund_no: None,
        refund_amount_minor: None,
        channel_txn_id: "pi_3DemoIntent".into(),
        at: jiff::Timestamp::now(),
        notification_id: "evt_1DemoEvent".into(),
        app_id: None,
        mch_id: None,
    };
    let keys = SimulateKeys {
        secret: Some(secret.to_vec()),
        ..Default::default()
    };
    crate::channels::registry::simulate(ChannelKind::Stripe, &spec, &keys).map_err(|e| anyhow::anyhow!(e))
}

/// The whole body, or nothing if it could not be read (the demo only displays it).
async fn body_bytes<B: hyper::body::Body>(body: B) -> Bytes {
    body.collect().await.map(|b| b.to_bytes()).unwrap_or_default()
}
