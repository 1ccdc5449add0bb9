//! A pooled HTTP/1.1 client to the backend, for the paths where payguard itself sends the request
//! after checking it: guarded API calls whose body must be verified before anything reaches the
//! backend (their answer is streamed back chunk by chunk, [`HttpBackend::start`]), and payment
//! notifications whose acknowledgement depends on the backend's answer (read whole,
//! [`Backend::send`]). `pass` routes, and guard routes that need no body, use Pingora's own
//! proxying.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Hop-by-hop headers (RFC 9110 §7.6.1) are never forwarded in either direction.
pub(crate) const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// True for headers that must not be forwarded: hop-by-hop ones, the length (recomputed from
/// the exact bytes sent) and `Expect` (payguard already holds the whole body).
pub(crate) fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        || name.eq_ignore_ascii_case("content-length")
        || name.eq_ignore_ascii_case("expect")
}

/// A request payguard sends to the backend.
#[derive(Debug, Clone)]
pub(crate) struct BackendRequest {
    /// HTTP method.
    pub(crate) method: http::Method,
    /// Path and query.
    pub(crate) path_and_query: String,
    /// Headers (hop-by-hop ones are dropped; `Content-Length` is set from `body`). `Host` is
    /// kept as the client sent it, as on a streamed `pass` route; only when absent does the
    /// client fill in the backend address.
    pub(crate) headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Exact body bytes.
    pub(crate) body: Bytes,
    /// For [`Backend::send`]: the whole exchange (connect, send, response header and body).
    /// For [`HttpBackend::start`]: the wait for the response header, and then for each chunk of
    /// the response body.
    pub(crate) timeout: Duration,
}

/// The backend's answer, read whole (at most [`MAX_BUFFERED_RESPONSE`] bytes).
#[derive(Debug, Clone)]
pub(crate) struct BackendResponse {
    /// Status code.
    pub(crate) status: u16,
    /// Headers (hop-by-hop ones removed).
    pub(crate) headers: http::HeaderMap,
    /// Body.
    pub(crate) body: Bytes,
}

/// Why the backend exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BackendError {
    /// No answer within the timeout.
    #[error("backend timed out after {0:?}")]
    Timeout(Duration),
    /// Connection refused, reset, or protocol error.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The response body was larger than payguard buffers.
    #[error("backend response larger than {0} bytes")]
    TooLarge(usize),
}

/// Anything that can carry a request to the backend and bring back its whole answer (the real
/// client, or a test double in unit tests of pure state machines).
#[async_trait]
pub(crate) trait Backend: Send + Sync + std::fmt::Debug {
    /// Sends `req` to the backend at `addr` and reads the whole answer.
    async fn send(&self, addr: SocketAddr, req: BackendRequest) -> Result<BackendResponse, BackendError>;
}

/// Largest backend answer payguard reads whole: the reply to a forwarded notification, which a
/// channel acknowledgement never needs more of. Guarded API answers are streamed instead.
pub(crate) const MAX_BUFFERED_RESPONSE: usize = 1024 * 1024;

/// Pooled hyper client.
#[derive(Debug, Clone)]
pub(crate) struct HttpBackend {
    client: Client<HttpConnector, Full<Bytes>>,
}

/// A backend answer whose body is still on its way: status and headers now, the body chunk by
/// chunk as the caller asks for it (so a slow reader slows the backend, not payguard's memory).
#[derive(Debug)]
pub(crate) struct StreamingResponse {
    /// Status code.
    pub(crate) status: u16,
    /// Headers (hop-by-hop ones removed).
    pub(crate) headers: http::HeaderMap,
    body: hyper::body::Incoming,
    idle: Duration,
}

impl StreamingResponse {
    /// The next chunk of the body; `None` at its end. A chunk that takes longer than the idle
    /// timeout to arrive is a [`BackendError::Timeout`].
    pub(crate) async fn next_chunk(&mut self) -> Result<Option<Bytes>, BackendError> {
        loop {
            let frame = match tokio::time::timeout(self.idle, self.body.frame()).await {
                Err(_) => return Err(BackendError::Timeout(self.idle)),
                Ok(None) => return Ok(None),
                Ok(Some(frame)) => frame.map_err(|e| BackendError::Unavailable(e.to_string()))?,
            };
            // Trailers are not forwarded (they are hop-by-hop for payguard's purposes).
            if let Ok(data) = frame.into_data() {
                if !data.is_empty() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

impl HttpBackend {
    /// A client with keep-alive pooling.
    pub(crate) fn new(connect_timeout: Duration, idle_timeout: Duration, pool_size: usize) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(idle_timeout)
            .pool_max_idle_per_host(pool_size)
            .build(connector);
        Self { client }
    }

    /// Sends `req` and returns once the response header arrived (within `req.timeout`); the
    /// body is read with [`StreamingResponse::next_chunk`], each chunk within `req.timeout`.
    pub(crate) async fn start(&self, addr: SocketAddr, req: BackendRequest) -> Result<StreamingResponse, BackendError> {
        let timeout = req.timeout;
        let request = build_request(addr, req)?;
        let resp = match tokio::time::timeout(timeout, self.client.request(request)).await {
            Err(_) => return Err(BackendError::Timeout(timeout)),
            Ok(r) => r.map_err(|e| BackendError::Unavailable(e.to_string()))?,
        };
        let (parts, body) = resp.into_parts();
        let mut headers = parts.headers;
        for h in HOP_BY_HOP {
            headers.remove(*h);
        }
        Ok(StreamingResponse {
            status: parts.status.as_u16(),
            headers,
            body,
            idle: timeout,
        })
    }
}

fn build_request(addr: SocketAddr, req: BackendRequest) -> Result<http::Request<Full<Bytes>>, BackendError> {
    let uri = format!("http://{addr}{}", req.path_and_query);
    let mut builder = http::Request::builder().method(req.method).uri(uri);
    if let Some(h) = builder.headers_mut() {
        for (k, v) in req.headers {
            if !is_hop_by_hop(k.as_str()) {
                h.append(k, v);
            }
        }
        h.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(req.body.len()));
    }
    builder
        .body(Full::new(req.body))
        .map_err(|e| BackendError::Unavailable(format!("invalid request: {e}")))
}

#[async_trait]
impl Backend for HttpBackend {
    async fn send(&self, addr: SocketAddr, req: BackendRequest) -> Result<BackendResponse, BackendError> {
        let timeout = req.timeout;
        let exchange = async {
            let mut resp = self.start(addr, req).await?;
            let mut body = bytes::BytesMut::new();
            while let Some(chunk) = resp.next_chunk().await? {
                if body.len() + chunk.len() > MAX_BUFFERED_RESPONSE {
                    return Err(BackendError::TooLarge(MAX_BUFFERED_RESPONSE));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(BackendResponse {
                status: resp.status,
                headers: resp.headers,
                body: body.freeze(),
            })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(BackendError::Timeout(timeout)),
        }
    }
}
