//! A recording upstream HTTP/1.1 server: stores every request it receives (method, target,
//! headers, body bytes) and answers with a configurable status, headers, body and delay.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    /// All values of header `name` (lower case).
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The single value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_values(name).first().copied()
    }
}

/// How the upstream answers.
#[derive(Debug, Clone)]
pub struct Behavior {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub delay: Duration,
}

impl Default for Behavior {
    fn default() -> Self {
        Self {
            status: 200,
            headers: vec![("x-upstream".into(), "recording".into())],
            body: b"upstream ok".to_vec(),
            delay: Duration::ZERO,
        }
    }
}

/// A streamed answer: `chunks` chunks of `chunk_size` bytes (`None`: never ends), with `gap`
/// between them, with a Content-Length when it is known and `content_length` is set (otherwise
/// chunked). Bytes are generated as they are sent, so a 200 MB answer costs this server nothing.
#[derive(Debug, Clone)]
pub struct StreamAnswer {
    pub chunk_size: usize,
    pub chunks: Option<usize>,
    pub gap: Duration,
    pub content_length: bool,
}

struct Shared {
    requests: Mutex<Vec<Recorded>>,
    behavior: Mutex<Behavior>,
    stream: Mutex<Option<StreamAnswer>>,
    /// Body bytes handed to hyper by streamed answers, and how many streams ended because the
    /// peer went away.
    streamed_bytes: std::sync::atomic::AtomicU64,
    streams_cancelled: std::sync::atomic::AtomicU64,
}

/// The running upstream; stops on drop.
pub struct Upstream {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Upstream {
    /// Starts on a free loopback port.
    pub fn start() -> Self {
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            behavior: Mutex::new(Behavior::default()),
            stream: Mutex::new(None),
            streamed_bytes: Default::default(),
            streams_cancelled: Default::default(),
        });
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let sh = shared.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind upstream");
                addr_tx.send(listener.local_addr().expect("addr")).expect("send addr");
                loop {
                    tokio::select! {
                        _ = &mut stop_rx => break,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let sh = sh.clone();
                            tokio::spawn(async move {
                                let svc = service_fn(move |req| handle(sh.clone(), req));
                                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                            });
                        }
                    }
                }
            });
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(5)).expect("upstream started");
        Self {
            addr,
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Changes how it answers from now on.
    pub fn set_behavior(&self, b: Behavior) {
        *self.shared.behavior.lock().unwrap() = b;
    }

    /// Answers with a generated stream from now on (`None`: back to [`Behavior`]).
    pub fn set_stream(&self, s: Option<StreamAnswer>) {
        *self.shared.stream.lock().unwrap() = s;
    }

    /// Body bytes of streamed answers handed to the connection so far.
    pub fn streamed_bytes(&self) -> u64 {
        self.shared.streamed_bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Streamed answers that ended because the peer closed the connection.
    pub fn streams_cancelled(&self) -> u64 {
        self.shared.streams_cancelled.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Forgets recorded requests.
    pub fn clear(&self) {
        self.shared.requests.lock().unwrap().clear();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type AnswerBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn handle(sh: Arc<Shared>, req: Request<hyper::body::Incoming>) -> Result<Response<AnswerBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
    let headers = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    sh.requests.lock().unwrap().push(Recorded {
        method: parts.method.to_string(),
        target: parts.uri.to_string(),
        headers,
        body,
    });
    let stream = sh.stream.lock().unwrap().clone();
    if let Some(s) = stream {
        return Ok(streamed(sh, s));
    }
    let b = sh.behavior.lock().unwrap().clone();
    if !b.delay.is_zero() {
        tokio::time::sleep(b.delay).await;
    }
    let mut resp = Response::builder().status(b.status);
    for (k, v) in &b.headers {
        resp = resp.header(k, v);
    }
    Ok(resp.body(Full::new(Bytes::from(b.body)).boxed()).expect("response"))
}

/// A response whose body is produced chunk by chunk as hyper asks for it.
fn streamed(sh: Arc<Shared>, s: StreamAnswer) -> Response<AnswerBody> {
    use std::sync::atomic::Ordering;
    struct Counted {
        sh: Arc<Shared>,
        finished: bool,
    }
    impl Drop for Counted {
        // Dropped unfinished: hyper stopped polling the body because the connection is gone.
        fn drop(&mut self) {
            if !self.finished {
                self.sh.streams_cancelled.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let chunk = Bytes::from((0..s.chunk_size).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let state = (0usize, Counted { sh, finished: false });
    let (chunks, gap) = (s.chunks, s.gap);
    let frames = futures::stream::unfold(state, move |(sent, mut counted)| {
        let chunk = chunk.clone();
        async move {
            if chunks.is_some_and(|n| sent >= n) {
                counted.finished = true;
                drop(counted);
                return None;
            }
            if !gap.is_zero() && sent > 0 {
                tokio::time::sleep(gap).await;
            }
            counted
                .sh
                .streamed_bytes
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            Some((
                Ok::<_, Infallible>(hyper::body::Frame::data(chunk)),
                (sent + 1, counted),
            ))
        }
    });
    let mut resp = Response::builder().status(200).header("x-upstream", "streaming");
    if let (Some(n), true) = (s.chunks, s.content_length) {
        resp = resp.header("content-length", (n * s.chunk_size).to_string());
    }
    resp.body(http_body_util::StreamBody::new(frames).boxed())
        .expect("response")
}
