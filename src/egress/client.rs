//! The HTTPS client of egress calls: rustls with the system's root certificates (plus an extra CA
//! file for sandboxes and tests), HTTP/1.1 through hyper, a connect timeout, a whole-answer
//! timeout and a cap on the answer body.
//!
//! Connections are kept for reuse: at most [`MAX_IDLE`] idle ones per merchant account, each for
//! at most [`IDLE_FOR`]. A request that a kept connection could not take (closed by the channel
//! meanwhile) goes out on a new one; hyper hands it back unsent, so this is safe for any method.
//! A GET or HEAD whose exchange failed after it was sent is tried once more on a new connection,
//! within the same timeout; any other method is not repeated (payguard cannot know whether the
//! channel acted on it).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};

/// A channel's base URL: `https://host[:port]`, no path (the channel signs the path it receives,
/// so payguard sends exactly the path it signed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BaseUrl {
    host: String,
    port: u16,
    /// `host` or `host:port` as the `Host` header carries it.
    authority: String,
}

impl BaseUrl {
    /// Parses `https://host[:port]` (a trailing `/` allowed).
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let uri: http::Uri = text.parse().map_err(|_| format!("`{text}` is not a URL"))?;
        if uri.scheme_str() != Some("https") {
            return Err(format!("`{text}` must start with https://"));
        }
        let authority = uri.authority().ok_or_else(|| format!("`{text}` has no host"))?;
        if authority.as_str().contains('@') {
            return Err("must not carry user information".into());
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!(
                "`{text}` must be scheme and host only, without a path or query"
            ));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        Ok(Self {
            port: authority.port_u16().unwrap_or(443),
            authority: authority.as_str().to_string(),
            host,
        })
    }

    /// The URL as configured, for logs.
    pub(crate) fn display(&self) -> String {
        format!("https://{}", self.authority)
    }
}

/// The client of a merchant account's `base_url` and `extra_ca` keys; problems are added to
/// `issues` under those keys.
pub(crate) fn channel_client(
    base_url: &str,
    extra_ca: Option<&crate::secret::SecretRef>,
    issues: &mut Vec<crate::issue::ConfigIssue>,
) -> Option<ChannelClient> {
    use crate::issue::ConfigIssue;
    let base = BaseUrl::parse(base_url)
        .map_err(|e| issues.push(ConfigIssue::new("base_url", e)))
        .ok()?;
    let ca = match extra_ca.map(|source| source.resolve()).transpose() {
        Ok(ca) => ca,
        Err(e) => {
            issues.push(ConfigIssue::new("extra_ca", e));
            return None;
        }
    };
    ChannelClient::new(base, ca.as_ref().map(|s| s.expose()))
        .map_err(|e| issues.push(ConfigIssue::new("extra_ca", e)))
        .ok()
}

/// Transport settings of one egress route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// TCP connect plus TLS handshake.
    pub(crate) connect_timeout: Duration,
    /// The whole exchange, from connecting to the last byte of the answer.
    pub(crate) timeout: Duration,
    /// Largest answer body read; a larger one is refused, not relayed.
    pub(crate) max_answer_bytes: usize,
}

/// Idle connections kept per merchant account.
const MAX_IDLE: usize = 8;
/// How long an idle connection is kept (channels close theirs after a minute or more).
const IDLE_FOR: Duration = Duration::from_secs(20);

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// One channel's HTTPS endpoint, the TLS trust used to reach it, and its idle connections.
#[derive(Clone)]
pub(crate) struct ChannelClient {
    base: BaseUrl,
    tls: tokio_rustls::TlsConnector,
    idle: Arc<std::sync::Mutex<Vec<(Sender, std::time::Instant)>>>,
}

impl std::fmt::Debug for ChannelClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// A request as payguard sends it to the channel (already signed).
#[derive(Debug)]
pub(crate) struct ChannelRequest {
    pub(crate) method: http::Method,
    /// Path and query as signed.
    pub(crate) path_and_query: String,
    pub(crate) headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub(crate) body: Bytes,
}

/// The channel's answer, not yet verified.
#[derive(Debug)]
pub(crate) struct ChannelAnswer {
    pub(crate) status: u16,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: Bytes,
}

/// Why a call got no complete answer. Messages name the endpoint, never a header or body.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// Connecting, the TLS handshake or the HTTP exchange failed.
    #[error("{0}")]
    Unreachable(String),
    /// The connect or whole-call timeout passed.
    #[error("{0}")]
    Timeout(String),
    /// The answer body is larger than `max_answer_bytes`.
    #[error("the answer body exceeds {0} bytes")]
    TooLarge(usize),
}

impl ChannelClient {
    /// A client for `base` trusting the system roots and, when given, the PEM certificates of
    /// `extra_ca_pem` (a sandbox's or a test's own CA).
    pub(crate) fn new(base: BaseUrl, extra_ca_pem: Option<&[u8]>) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        // A system without a usable root store still reaches a channel whose CA is configured.
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        if let Some(pem) = extra_ca_pem {
            let ders = crate::channels::keys::certificate_ders(pem)?;
            for der in ders {
                roots
                    .add(CertificateDer::from(der))
                    .map_err(|e| format!("CA certificate refused: {e}"))?;
            }
        }
        if roots.is_empty() {
            return Err("no trusted root certificate: the system has none and no extra CA is configured".into());
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(crate::listener_tls::crypto_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            base,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            idle: Arc::default(),
        })
    }

    /// The path and query of `url` when it is an `https://` URL of this client's host and port
    /// (a download link the channel gave, which payguard then signs: never for another host).
    pub(crate) fn same_origin_target(&self, url: &str) -> Option<String> {
        let uri: http::Uri = url.parse().ok()?;
        let authority = uri.authority()?;
        let same = uri.scheme_str() == Some("https")
            && !authority.as_str().contains('@')
            && authority.host().eq_ignore_ascii_case(&self.base.host)
            && authority.port_u16().unwrap_or(443) == self.base.port;
        same.then(|| {
            uri.path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".into())
        })
    }

    /// A client of `host` (port 443) with the trust of this one; `extra_ca_pem` as given to
    /// [`Self::new`].
    pub(crate) fn for_host(&self, host: &str, extra_ca_pem: Option<&[u8]>) -> Result<Self, String> {
        Self::new(BaseUrl::parse(&format!("https://{host}"))?, extra_ca_pem)
    }

    /// Sends `req` and reads the whole answer, within `limits`.
    pub(crate) async fn send(&self, req: ChannelRequest, limits: Limits) -> Result<ChannelAnswer, SendError> {
        let endpoint = self.base.display();
        match tokio::time::timeout(limits.timeout, self.exchange(req, limits)).await {
            Ok(result) => result,
            Err(_) => Err(SendError::Timeout(format!(
                "{endpoint} did not answer within {}ms",
                limits.timeout.as_millis()
            ))),
        }
    }

    async fn exchange(&self, req: ChannelRequest, limits: Limits) -> Result<ChannelAnswer, SendError> {
        let endpoint = self.base.display();
        let repeatable = matches!(req.method, http::Method::GET | http::Method::HEAD);
        let mut request = self.request(&req)?;
        // A read may be sent twice in all; anything else once.
        let mut retry_left = repeatable;
        // A kept connection first; one that cannot take the request hands it back unsent.
        while let Some(mut sender) = self.take_idle() {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => return self.answer(sender, response, limits).await,
                Err(mut e) => match e.take_message() {
                    Some(unsent) => request = unsent,
                    None if retry_left => {
                        tracing::debug!(target: "payguard::egress", endpoint = %endpoint, error = %e.error(), "kept connection failed; trying a new one");
                        retry_left = false;
                        request = self.request(&req)?;
                        break;
                    }
                    None => return Err(SendError::Unreachable(format!("{endpoint}: HTTP: {}", e.error()))),
                },
            }
        }
        let first = self.exchange_on_new_connection(request, limits).await;
        match first {
            Err(SendError::Unreachable(reason)) if retry_left => {
                tracing::debug!(target: "payguard::egress", endpoint = %endpoint, reason = %reason, "retrying a read once");
                self.exchange_on_new_connection(self.request(&req)?, limits).await
            }
            other => other,
        }
    }

    /// The HTTP request of `req` (rebuilt for a retry; the body is shared, not copied).
    fn request(&self, req: &ChannelRequest) -> Result<http::Request<Full<Bytes>>, SendError> {
        let mut request = http::Request::builder()
            .method(req.method.clone())
            .uri(req.path_and_query.as_str())
            .header(http::header::HOST, self.base.authority.as_str())
            .body(Full::new(req.body.clone()))
            .map_err(|e| SendError::Unreachable(format!("{}: request: {e}", self.base.display())))?;
        for (name, value) in &req.headers {
            request.headers_mut().append(name.clone(), value.clone());
        }
        Ok(request)
    }

    /// The newest idle connection still within [`IDLE_FOR`]; older ones are dropped.
    fn take_idle(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|(sender, since)| since.elapsed() < IDLE_FOR && !sender.is_closed());
        idle.pop().map(|(sender, _)| sender)
    }

    async fn exchange_on_new_connection(
        &self,
        request: http::Request<Full<Bytes>>,
        limits: Limits,
    ) -> Result<ChannelAnswer, SendError> {
        let endpoint = self.base.display();
        let unreachable =
            |what: &str, e: &dyn std::fmt::Display| SendError::Unreachable(format!("{endpoint}: {what}: {e}"));
        let server_name = ServerName::try_from(self.base.host.clone()).map_err(|e| unreachable("host name", &e))?;
        let connect = async {
            let tcp = tokio::net::TcpStream::connect((self.base.host.as_str(), self.base.port))
                .await
                .map_err(|e| unreachable("connect", &e))?;
            let _ = tcp.set_nodelay(true);
            self.tls
                .connect(server_name, tcp)
                .await
                .map_err(|e| unreachable("TLS handshake", &e))
        };
        let tls = match tokio::time::timeout(limits.connect_timeout, connect).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(SendError::Timeout(format!(
                    "{endpoint}: no connection within {}ms",
                    limits.connect_timeout.as_millis()
                )))
            }
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| unreachable("HTTP", &e))?;
        // The connection task runs as long as the connection is open or kept.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| unreachable("HTTP", &e))?;
        self.answer(sender, response, limits).await
    }

    /// Reads the whole answer (capped), then keeps the connection for the next call.
    async fn answer(
        &self,
        sender: Sender,
        response: http::Response<hyper::body::Incoming>,
        limits: Limits,
    ) -> Result<ChannelAnswer, SendError> {
        let (parts, body) = response.into_parts();
        let body = match Limited::new(body, limits.max_answer_bytes).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(SendError::TooLarge(limits.max_answer_bytes))
            }
            Err(e) => {
                return Err(SendError::Unreachable(format!(
                    "{}: answer body: {e}",
                    self.base.display()
                )))
            }
        };
        if !sender.is_closed() {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < MAX_IDLE {
                idle.push((sender, std::time::Instant::now()));
            }
        }
        Ok(ChannelAnswer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_is_https_host_and_port_only() {
        let url = BaseUrl::parse("https://api.mch.weixin.qq.com").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("api.mch.weixin.qq.com", 443));
        let url = BaseUrl::parse("https://127.0.0.1:8443/").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.authority.as_str()),
            ("127.0.0.1", 8443, "127.0.0.1:8443")
        );
        for (bad, why) in [
            ("http://api.mch.weixin.qq.com", "https://"),
            ("https://api.mch.weixin.qq.com/v3", "without a path"),
            ("https://user:pw@example.com", "user information"),
            ("api.mch.weixin.qq.com", "https://"),
            ("not a url", "not a URL"),
        ] {
            let err = BaseUrl::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
