//! The proxy listener's connection limits: how many client connections payguard holds at once,
//! how large a request head may be and how long a client may take to send it, and how long an
//! idle keep-alive connection stays open.
//!
//! Pingora 0.9.1 fixes its own head limits (1 MiB, 256 fields, no deadline for the whole head, no
//! idle limit between keep-alive requests) and has no connection limit. [`Limited`] wraps the
//! proxy application: it admits a connection only while fewer than `max_connections` are open,
//! and reads the connection through [`HeadGuard`], which watches each request head as it arrives
//! and ends the connection (with `431` or `408`) as soon as a limit is passed, before Pingora has
//! buffered more than the limit. Bodies are not watched here; their pace is checked per request
//! (`server.body`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream, UniqueID, UniqueIDType,
};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};

use crate::config::ConnectionLimits;
use crate::metrics::Metrics;

/// Why a connection was ended by a limit (the `reason` label of
/// `payguard_connection_refusals_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `max_connections` connections were already open.
    MaxConnections,
    /// The request head passed `head.max_bytes`.
    HeadTooLarge,
    /// The request head had more than `head.max_fields` header fields.
    TooManyFields,
    /// The request head was not complete within `head.timeout`.
    HeadTimeout,
}

impl Refusal {
    /// Every value, for metrics initialised at zero.
    pub(crate) const ALL: [Refusal; 4] = [
        Refusal::MaxConnections,
        Refusal::HeadTooLarge,
        Refusal::TooManyFields,
        Refusal::HeadTimeout,
    ];

    /// The metric label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Refusal::MaxConnections => "max_connections",
            Refusal::HeadTooLarge => "head_too_large",
            Refusal::TooManyFields => "too_many_header_fields",
            Refusal::HeadTimeout => "head_timeout",
        }
    }

    /// The answer written before the connection is closed.
    fn answer(self) -> &'static [u8] {
        match self {
            Refusal::MaxConnections => {
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nretry-after: 1\r\nconnection: close\r\n\r\n"
            }
            Refusal::HeadTooLarge | Refusal::TooManyFields => {
                b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            }
            Refusal::HeadTimeout => b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        }
    }
}

/// The proxy application behind the connection limits.
pub(crate) struct Limited<A> {
    app: Arc<A>,
    permits: Arc<Semaphore>,
    limits: ConnectionLimits,
    metrics: Metrics,
}

impl<A> Limited<A> {
    /// Wraps `app` with `limits`, counting refusals and open connections in `metrics`.
    pub(crate) fn new(app: A, limits: ConnectionLimits, metrics: Metrics) -> Self {
        Self {
            app: Arc::new(app),
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            limits,
            metrics,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Limited<A> {
    async fn process_new(self: &Arc<Self>, mut stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let Ok(_permit) = self.permits.clone().try_acquire_owned() else {
            self.metrics
                .connection_refusals
                .with_label_values(&[Refusal::MaxConnections.as_str()])
                .inc();
            let answer = Refusal::MaxConnections.answer();
            let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(answer)).await;
            return None;
        };
        let _open = OpenConnection::new(&self.metrics);
        let mut stream: Stream = Box::new(HeadGuard::new(stream, self.limits, self.metrics.clone()));
        // The whole life of the connection runs here, so the permit is held until it closes.
        // (Pingora serves an HTTP/1.1 connection's kept-alive requests inside one call; should
        // it hand the connection back, it is served again here.)
        while let Some(reused) = self.app.process_new(stream, shutdown).await {
            stream = reused;
        }
        None
    }

    async fn cleanup(&self) {
        self.app.cleanup().await
    }
}

/// Holds `payguard_connections_open` up while a connection lives.
struct OpenConnection(prometheus::IntGauge);

impl OpenConnection {
    fn new(metrics: &Metrics) -> Self {
        metrics.connections_open.inc();
        Self(metrics.connections_open.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Where the connection is in its request stream.
#[derive(Debug)]
enum Phase {
    /// Reading a request head: bytes and line breaks so far, and the length of the line being
    /// read (with its last byte, to see `\r\n` split across reads).
    Head {
        bytes: usize,
        lines: usize,
        line_len: usize,
        last: u8,
    },
    /// The head is complete; the rest belongs to the body (not watched here).
    Body,
    /// Between two requests of a kept-alive connection, nothing read yet.
    Idle,
}

impl Phase {
    fn head() -> Self {
        Phase::Head {
            bytes: 0,
            lines: 0,
            line_len: 0,
            last: 0,
        }
    }
}

/// What reading a piece of a request head showed.
#[derive(Debug, PartialEq, Eq)]
enum Scan {
    /// The head goes on.
    More,
    /// The head ended in this piece.
    Complete,
    /// A limit was passed.
    Refused(Refusal),
}

/// A client connection read through the head limits.
#[derive(Debug)]
pub(crate) struct HeadGuard {
    inner: Stream,
    limits: ConnectionLimits,
    phase: Phase,
    /// Set by [`request_done`] when a request on this connection has been answered: what is
    /// read next is the head of the next request.
    next_request: AtomicBool,
    /// When the head being read must be complete (`head.timeout`), or when an idle kept-alive
    /// connection is closed (`keepalive_timeout`); armed only once a read has to wait.
    deadline: Option<Pin<Box<Sleep>>>,
    /// For the first request, the head's deadline counts from the connection's start.
    first_deadline: Option<Instant>,
    metrics: Metrics,
}

impl HeadGuard {
    fn new(inner: Stream, limits: ConnectionLimits, metrics: Metrics) -> Self {
        Self {
            inner,
            limits,
            phase: Phase::head(),
            next_request: AtomicBool::new(false),
            deadline: None,
            first_deadline: Some(Instant::now() + limits.head_timeout),
            metrics,
        }
    }

    /// Counts `why`, writes its answer if the socket takes it at once, and gives the error that
    /// ends the connection.
    fn refuse(&mut self, cx: &mut Context<'_>, why: Refusal) -> io::Error {
        self.metrics
            .connection_refusals
            .with_label_values(&[why.as_str()])
            .inc();
        let answer = why.answer();
        if let Poll::Ready(Ok(n)) = Pin::new(&mut self.inner).poll_write(cx, answer) {
            if n == answer.len() {
                let _ = Pin::new(&mut self.inner).poll_flush(cx);
            }
        }
        tracing::debug!(reason = why.as_str(), "connection closed by a request head limit");
        let kind = if why == Refusal::HeadTimeout {
            io::ErrorKind::TimedOut
        } else {
            io::ErrorKind::InvalidData
        };
        io::Error::new(kind, format!("request head refused: {}", why.as_str()))
    }
}

/// Tells the connection under `session` that its request has been answered, so the limits
/// apply to the next head read from it (and `keepalive_timeout` to the wait for it). Called at
/// the end of every request; a connection that is not read through [`HeadGuard`] is left alone.
pub(crate) fn request_done(session: &pingora::protocols::http::ServerSession) {
    let guard = session.stream().and_then(|s| s.as_any().downcast_ref::<HeadGuard>());
    if let Some(guard) = guard {
        guard.next_request.store(true, Ordering::Relaxed);
    }
}

/// Reads `data`, the next bytes of a request head, against `limits`, updating `phase`.
fn scan(phase: &mut Phase, limits: &ConnectionLimits, data: &[u8]) -> Scan {
    let Phase::Head {
        bytes,
        lines,
        line_len,
        last,
    } = phase
    else {
        return Scan::More;
    };
    let max_bytes = limits.head_max_bytes;
    let mut start = 0;
    for nl in memchr::memchr_iter(b'\n', data) {
        let len = *line_len + (nl - start);
        let before = if nl > 0 { data[nl - 1] } else { *last };
        // An empty line ends the head, except before the request line (a client may send a
        // stray CRLF before it, RFC 9112 section 2.2).
        let empty = len == 0 || (len == 1 && before == b'\r');
        if *bytes + nl + 1 > max_bytes {
            return Scan::Refused(Refusal::HeadTooLarge);
        }
        if empty && *lines > 0 {
            return Scan::Complete;
        }
        if !empty {
            *lines += 1;
            // The request line is not a field.
            if *lines > limits.head_max_fields + 1 {
                return Scan::Refused(Refusal::TooManyFields);
            }
        }
        *line_len = 0;
        start = nl + 1;
    }
    *bytes += data.len();
    *line_len += data.len() - start;
    if let Some(&b) = data.last() {
        *last = b;
    }
    if *bytes > max_bytes {
        return Scan::Refused(Refusal::HeadTooLarge);
    }
    Scan::More
}

impl AsyncRead for HeadGuard {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.next_request.swap(false, Ordering::Relaxed) {
            this.phase = Phase::Idle;
            this.deadline = None;
            this.first_deadline = None;
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                if new.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                if matches!(this.phase, Phase::Idle) {
                    this.phase = Phase::head();
                    this.deadline = None;
                }
                match scan(&mut this.phase, &this.limits, new) {
                    Scan::More => {}
                    Scan::Complete => {
                        this.phase = Phase::Body;
                        this.deadline = None;
                    }
                    Scan::Refused(why) => return Poll::Ready(Err(this.refuse(cx, why))),
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if matches!(this.phase, Phase::Body) {
                    return Poll::Pending;
                }
                let (limits, phase, first) = (this.limits, &this.phase, this.first_deadline);
                let deadline = this.deadline.get_or_insert_with(|| {
                    let at = match phase {
                        Phase::Idle => Instant::now() + limits.keepalive_timeout,
                        _ => first.unwrap_or_else(|| Instant::now() + limits.head_timeout),
                    };
                    Box::pin(tokio::time::sleep_until(at))
                });
                if deadline.as_mut().poll(cx).is_ready() {
                    this.deadline = None;
                    if matches!(this.phase, Phase::Idle) {
                        // An idle kept-alive connection simply ends, as if the client closed it.
                        return Poll::Ready(Ok(()));
                    }
                    let error = this.refuse(cx, Refusal::HeadTimeout);
                    if matches!(this.phase, Phase::Head { bytes: 0, .. }) {
                        // Nothing of a head arrived: an end of stream closes the connection
                        // without Pingora logging a read error for it.
                        return Poll::Ready(Ok(()));
                    }
                    return Poll::Ready(Err(error));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for HeadGuard {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for HeadGuard {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(&mut *self.inner).await
    }
}

impl UniqueID for HeadGuard {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeadGuard {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<pingora::protocols::ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeadGuard {
    fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeadGuard {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for HeadGuard {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, socket_digest: SocketDigest) {
        self.inner.set_socket_digest(socket_digest)
    }
}

#[async_trait]
impl Peek for HeadGuard {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_bytes: usize, max_fields: usize) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: 10,
            head_max_bytes: max_bytes,
            head_max_fields: max_fields,
            head_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
        }
    }

    /// Feeds `pieces` one after another, as reads would deliver them.
    fn scan_all(l: &ConnectionLimits, pieces: &[&[u8]]) -> Vec<Scan> {
        let mut phase = Phase::head();
        pieces.iter().map(|p| scan(&mut phase, l, p)).collect()
    }

    #[test]
    fn a_head_ends_at_its_blank_line_in_any_split() {
        let head: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\nbody after the head";
        let l = limits(1024, 10);
        for cut in 0..head.len() {
            let got = scan_all(&l, &[&head[..cut], &head[cut..]]);
            let complete_at = if cut >= 36 { 0 } else { 1 };
            assert_eq!(got[complete_at], Scan::Complete, "cut at {cut}: {got:?}");
        }
        assert_eq!(scan_all(&l, &[b"GET / HTTP/1.1\nHost: x\n\n"]), [Scan::Complete]);
    }

    #[test]
    fn blank_lines_before_the_request_line_do_not_end_the_head() {
        let l = limits(1024, 10);
        assert_eq!(scan_all(&l, &[b"\r\n\r\nGET / HTTP/1.1\r\n"]), [Scan::More]);
        assert_eq!(scan_all(&l, &[b"\r\n", b"\r\n"]), [Scan::More, Scan::More]);
        // They still count towards the size.
        assert_eq!(
            scan_all(&limits(1024, 10), &[&b"\r\n".repeat(600)]),
            [Scan::Refused(Refusal::HeadTooLarge)]
        );
    }

    #[test]
    fn a_head_over_the_byte_limit_is_refused_before_its_end() {
        let l = limits(1024, 100);
        let long = format!("GET / HTTP/1.1\r\nX-Fill: {}\r\n", "a".repeat(1000));
        assert_eq!(scan_all(&l, &[long.as_bytes()]), [Scan::Refused(Refusal::HeadTooLarge)]);
        // Without any line break: refused once the bytes pass the limit.
        let got = scan_all(&l, &[&[b'a'; 1000], &[b'a'; 100]]);
        assert_eq!(got, [Scan::More, Scan::Refused(Refusal::HeadTooLarge)]);
        // Exactly at the limit is allowed; the body after the head is not counted.
        let head = format!("GET / HTTP/1.1\r\nX-Fill: {}\r\n\r\n", "a".repeat(1024 - 28));
        assert_eq!(head.len(), 1024);
        let with_body = format!("{head}{}", "b".repeat(5000));
        assert_eq!(scan_all(&l, &[with_body.as_bytes()]), [Scan::Complete]);
    }

    #[test]
    fn more_fields_than_allowed_are_refused() {
        let l = limits(65536, 3);
        let head = |n: usize| {
            let mut h = String::from("GET / HTTP/1.1\r\n");
            for i in 0..n {
                h.push_str(&format!("X-{i}: v\r\n"));
            }
            h + "\r\n"
        };
        assert_eq!(scan_all(&l, &[head(3).as_bytes()]), [Scan::Complete]);
        assert_eq!(
            scan_all(&l, &[head(4).as_bytes()]),
            [Scan::Refused(Refusal::TooManyFields)]
        );
    }

    #[test]
    fn after_the_head_nothing_is_scanned() {
        let l = limits(1024, 1);
        let mut phase = Phase::Body;
        assert_eq!(scan(&mut phase, &l, &[b'x'; 100_000]), Scan::More);
    }
}
