//! A pooled HTTP/1.1 client to the backend, for the paths where payguard answers the client
//! itself after consulting the backend (guarded API calls whose body must be verified before
//! anything reaches the backend, and payment notifications whose acknowledgement depends on the
//! backend's answer). `pass` routes use Pingora's own proxying.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Hop-by-hop headers (RFC 9110 §7.6.1) are never forwarded in either direction.
pub const HOP_BY_HOP: &[&str] = &[
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
pub fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        || name.eq_ignore_ascii_case("content-length")
        || name.eq_ignore_ascii_case("expect")
}

/// A request payguard sends to the backend.
#[derive(Debug, Clone)]
pub struct BackendRequest {
    /// HTTP method.
    pub method: http::Method,
    /// Path and query.
    pub path_and_query: String,
    /// Headers (hop-by-hop ones are dropped; `Content-Length` is set from `body`). `Host` is
    /// kept as the client sent it, as on a streamed `pass` route; only when absent does the
    /// client fill in the backend address.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Exact body bytes.
    pub body: Bytes,
    /// Whole-exchange timeout (connect, send, response header and body).
    pub timeout: Duration,
}

/// The backend's answer.
#[derive(Debug, Clone)]
pub struct BackendResponse {
    /// Status code.
    pub status: u16,
    /// Headers (hop-by-hop ones removed).
    pub headers: http::HeaderMap,
    /// Body.
    pub body: Bytes,
}

/// Why the backend exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
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

/// Anything that can carry a request to the backend (the real client, or a test double in
/// unit tests of pure state machines).
#[async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Sends `req` to the backend at `addr`.
    async fn send(&self, addr: SocketAddr, req: BackendRequest) -> Result<BackendResponse, BackendError>;
}

/// Largest backend response payguard buffers on these paths.
pub const MAX_BACKEND_RESPONSE: usize = 8 * 1024 * 1024;

/// Pooled hyper client.
#[derive(Debug, Clone)]
pub struct HttpBackend {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl HttpBackend {
    /// A client with keep-alive pooling.
    pub fn new(connect_timeout: Duration, idle_timeout: Duration, pool_size: usize) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(idle_timeout)
            .pool_max_idle_per_host(pool_size)
            .build(connector);
        Self { client }
    }
}

#[async_trait]
impl Backend for HttpBackend {
    async fn send(&self, addr: SocketAddr, req: BackendRequest) -> Result<BackendResponse, BackendError> {
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
        let request = builder
            .body(Full::new(req.body))
            .map_err(|e| BackendError::Unavailable(format!("invalid request: {e}")))?;
        let exchange = async {
            let resp = self
                .client
                .request(request)
                .await
                .map_err(|e| BackendError::Unavailable(e.to_string()))?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_BACKEND_RESPONSE)
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                        BackendError::TooLarge(MAX_BACKEND_RESPONSE)
                    } else {
                        BackendError::Unavailable(e.to_string())
                    }
                })?
                .to_bytes();
            let mut headers = parts.headers;
            for h in HOP_BY_HOP {
                headers.remove(*h);
            }
            Ok(BackendResponse {
                status: parts.status.as_u16(),
                headers,
                body,
            })
        };
        match tokio::time::timeout(req.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(BackendError::Timeout(req.timeout)),
        }
    }
}
