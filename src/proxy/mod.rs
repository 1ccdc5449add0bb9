//! The Pingora proxy: request lifecycle phases (`request_filter` → `upstream_peer` →
//! `response_filter` → `logging`) with a per-request [`RequestCtx`].

pub mod backend;
mod egress;
pub(crate) mod request_head;
pub mod routes;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::{HttpPeer, Session};
use pingora::proxy::{FailToProxy, ProxyHttp};
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::canonical::query::CanonicalQuery;
use crate::canonical::Refusal;
use crate::config::Config;
use crate::guard::signature::SignatureFailure;
use crate::outcome::{NotifyOutcome, RequestOutcome};
use crate::problem::{Problem, PROBLEM_CONTENT_TYPE};
use crate::state::SharedState;
use request_head::REQUEST_ID;
use routes::{DefaultAction, PolicyKind, Routed, DEFAULT_ROUTE_NAME};

/// The proxy service.
#[derive(Debug, Clone)]
pub(crate) struct PayguardProxy {
    state: Arc<SharedState>,
}

impl PayguardProxy {
    /// A proxy over shared state.
    pub(crate) fn new(state: Arc<SharedState>) -> Self {
        Self { state }
    }
}

/// Per-request state carried between phases.
#[derive(Debug)]
pub(crate) struct RequestCtx {
    started: Instant,
    /// Config snapshot this request runs under (reloads never change it mid-request).
    config: Option<Arc<Config>>,
    route: String,
    request_id: String,
    /// The canonical path; `None` until the head was canonicalized (or when it was refused).
    path: Option<crate::canonical::path::CanonicalPath>,
    /// The request target as sent, when payguard rewrote it (logged next to the canonical one).
    sent_target: Option<String>,
    outcome: RequestOutcome,
    /// Stable problem code when payguard answered with a rejection.
    code: Option<&'static str>,
    upstream_started: Option<Instant>,
    /// Guard results for the Pingora-proxied path (no body buffering needed).
    guard_request_headers: Vec<(http::HeaderName, http::HeaderValue)>,
    guard_response_headers: Vec<(http::HeaderName, http::HeaderValue)>,
    upstream_counters: Vec<crate::store::CounterSpec>,
    /// Length of a verified body that Pingora replays to the backend from its retry buffer.
    replayed_body_len: Option<usize>,
    /// How fast the request body arrives.
    pace: BodyPace,
    /// The client's address as the guard resolved it (`trusted_proxies`), for the access log.
    client_ip: Option<std::net::IpAddr>,
    /// The W3C trace id (the client's, or a new one; see [`crate::trace`]).
    trace_id: String,
    /// The access key id of a signed request (well-formed, not necessarily verified).
    access_key: Option<String>,
    /// The enforced guard rule that refused, challenged or tagged the request.
    rule: Option<Arc<str>>,
    /// The backend's status and its response-header latency, when the backend answered.
    upstream_status: Option<u16>,
    upstream_latency: Option<std::time::Duration>,
    /// Holds `payguard_requests_in_flight` up while the request lives.
    _in_flight: InFlight,
}

/// One request counted in `payguard_requests_in_flight` from its context's creation to its drop,
/// whichever way the request ends.
#[derive(Debug)]
struct InFlight(prometheus::IntGauge);

impl InFlight {
    fn enter(gauge: &prometheus::IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl RequestCtx {
    fn new(in_flight: InFlight) -> Self {
        Self {
            started: Instant::now(),
            config: None,
            route: DEFAULT_ROUTE_NAME.to_string(),
            request_id: String::new(),
            path: None,
            sent_target: None,
            outcome: RequestOutcome::Proxied,
            code: None,
            upstream_started: None,
            guard_request_headers: Vec::new(),
            guard_response_headers: Vec::new(),
            upstream_counters: Vec::new(),
            replayed_body_len: None,
            pace: BodyPace::default(),
            client_ip: None,
            trace_id: String::new(),
            access_key: None,
            rule: None,
            upstream_status: None,
            upstream_latency: None,
            _in_flight: in_flight,
        }
    }
}

/// A fresh request id: a random (v4) UUID from the thread's CSPRNG, without the system call per
/// id that `Uuid::new_v4` makes. Request ids only need to be unique, not secret.
pub(crate) fn new_request_id() -> String {
    let bytes: [u8; 16] = rand::random();
    uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
}

/// A client-sent request id is kept only if it is short visible ASCII (it lands in logs).
fn valid_request_id(v: &[u8]) -> bool {
    !v.is_empty() && v.len() <= 128 && v.iter().all(|b| b.is_ascii_graphic())
}

/// Writes a complete response that payguard makes itself.
pub(crate) async fn respond(
    session: &mut Session,
    status: u16,
    content_type: Option<&str>,
    extra_headers: &[(String, String)],
    request_id: &str,
    body: Vec<u8>,
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(4))?;
    if let Some(ct) = content_type {
        resp.insert_header("content-type", ct)?;
    }
    resp.insert_header("content-length", body.len().to_string())?;
    if !request_id.is_empty() {
        resp.insert_header(REQUEST_ID, request_id)?;
    }
    for (k, v) in extra_headers {
        resp.append_header(k.clone(), v.as_str())?;
    }
    session.write_response_header(Box::new(resp), body.is_empty()).await?;
    if !body.is_empty() {
        session.write_response_body(Some(Bytes::from(body)), true).await?;
    }
    Ok(())
}

async fn respond_problem(session: &mut Session, ctx: &RequestCtx, problem: Problem) -> Result<()> {
    let headers: Vec<(String, String)> = problem
        .headers
        .iter()
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_string(), v.to_string())))
        .collect();
    let body = problem.to_json_with_request_id(Some(&ctx.request_id));
    respond(
        session,
        problem.status,
        Some(PROBLEM_CONTENT_TYPE),
        &headers,
        &ctx.request_id,
        body,
    )
    .await
}

/// At most 2 KiB of a path for a log line (the request head may be far longer).
fn log_cut(path: &str) -> &str {
    const MAX: usize = 2048;
    if path.len() <= MAX {
        return path;
    }
    let mut end = MAX;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    &path[..end]
}

/// A request target split into path and query.
fn split_target(target: &str) -> (&str, Option<&str>) {
    match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    }
}

/// Whether the client waits for `100 Continue` before sending the body (RFC 9110 §10.1.1).
fn expects_continue(req: &pingora::http::RequestHeader) -> bool {
    req.version == http::Version::HTTP_11
        && req
            .headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// How fast a request body arrives, against `server.body` (the idle timeout itself is the
/// downstream read timeout, set when the request starts).
#[derive(Debug, Default)]
struct BodyPace {
    started: Option<Instant>,
    bytes: u64,
}

impl BodyPace {
    /// Counts a chunk of `n` bytes; an error once the body averages less than `min_rate` bytes
    /// per second after its first `idle_timeout`.
    fn chunk(&mut self, n: usize, limits: &crate::config::BodyLimits) -> Result<()> {
        let started = *self.started.get_or_insert_with(Instant::now);
        self.bytes = self.bytes.saturating_add(n as u64);
        let elapsed = started.elapsed();
        if limits.min_rate > 0
            && elapsed > limits.idle_timeout
            && u128::from(self.bytes) * 1000 < u128::from(limits.min_rate) * elapsed.as_millis()
        {
            return Error::e_explain(
                ErrorType::ReadTimedout,
                format!("request body below {} bytes/s", limits.min_rate),
            )
            .map_err(|e| e.into_down());
        }
        Ok(())
    }
}

/// Whether `e` is a request body that stalled or trickled (answered 408).
fn is_body_timeout(e: &Error) -> bool {
    e.esource() == &ErrorSource::Downstream && e.etype() == &ErrorType::ReadTimedout
}

/// Reads the whole request body, stopping once it exceeds `cap` bytes (`Err(len)`). Called only
/// after the header checks passed: a declared `Content-Length` over the cap is refused before
/// reading anything, and a client sending `Expect: 100-continue` is invited to send the body
/// only now (without it, curl stalls a second).
async fn read_body_capped(
    session: &mut Session,
    cap: usize,
    pace: &mut BodyPace,
    limits: &crate::config::BodyLimits,
) -> Result<std::result::Result<Bytes, usize>> {
    // Pingora keeps a copy of what is read now (up to its 64 KiB retry buffer) and sends it to
    // the backend after the request head, once this filter let the request through.
    session.as_mut().enable_retry_buffering();
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    if let Some(len) = declared.filter(|&len| len > cap) {
        return Ok(Err(len));
    }
    if expects_continue(session.req_header()) {
        session.write_continue_response().await?;
    }
    let mut buf = bytes::BytesMut::with_capacity(declared.unwrap_or(0).min(cap));
    // A read error here is the client's (Pingora leaves its source unset in request_filter).
    while let Some(chunk) = session.read_request_body().await.map_err(|e| e.into_down())? {
        pace.chunk(chunk.len(), limits)?;
        if buf.len() + chunk.len() > cap {
            return Ok(Err(buf.len() + chunk.len()));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Ok(buf.freeze()))
}

/// A failed exchange with the backend as the upstream error Pingora would have raised, so that
/// [`ProxyHttp::fail_to_proxy`] answers it (502 / 504) and counts it in one place for both paths.
fn upstream_error(e: crate::proxy::backend::BackendError) -> Box<Error> {
    use crate::proxy::backend::BackendError;
    let kind = match e {
        BackendError::Timeout(_) => ErrorType::ReadTimedout,
        BackendError::Unavailable(_) | BackendError::TooLarge(_) => ErrorType::ConnectError,
    };
    Error::explain(kind, e.to_string()).into_up()
}

/// Increments `count_on: upstream_2xx` order counters after the backend accepted the order.
async fn count_accepted_orders(state: &SharedState, counters: &[crate::store::CounterSpec]) {
    for c in counters {
        // The metered store counts the error in payguard_store_errors_total; only the log here.
        if let Err(e) = state.store.count(c).await {
            tracing::warn!(error = %e, "could not count an accepted order");
        }
    }
}

impl PayguardProxy {
    /// Records the guard's rule decisions in metrics, and the decisive one for the access log:
    /// the first enforced rule that did more than let the request through.
    fn record_decisions(&self, ctx: &mut RequestCtx, verdict: &crate::guard::Verdict) {
        use crate::guard::{verdict::Decision, Mode};
        let m = &self.state.metrics;
        if ctx.rule.is_none() {
            ctx.rule = verdict
                .decisions
                .iter()
                .find(|d| {
                    d.mode == Mode::Enforce
                        && !matches!(
                            d.decision,
                            Decision::Allow | Decision::Skipped | Decision::StoreErrorAllow
                        )
                })
                .map(|d| d.rule.clone());
        }
        for d in &verdict.decisions {
            m.rule_decisions
                .with_label_values(&[d.kind.as_str(), &d.rule, d.decision.as_str(), d.mode.as_str()])
                .inc();
        }
    }

    /// Counts one canonicalization step (`refused`, `rewritten`, `header_removed`).
    fn count_canonicalization(&self, action: &str, reason: &str) {
        self.state
            .metrics
            .canonicalization
            .with_label_values(&[action, reason])
            .inc();
    }

    /// Answers a request whose head payguard refuses to read (400 problem+json).
    async fn refuse(&self, session: &mut Session, ctx: &mut RequestCtx, refusal: Refusal) -> Result<bool> {
        self.count_canonicalization("refused", refusal.reason());
        self.reject(session, ctx, Problem::from(&refusal)).await
    }

    /// Answers a rejection verdict.
    async fn reject(&self, session: &mut Session, ctx: &mut RequestCtx, problem: Problem) -> Result<bool> {
        ctx.outcome = RequestOutcome::Rejected;
        ctx.code = Some(problem.code);
        respond_problem(session, ctx, problem).await?;
        Ok(true)
    }

    /// A `guard` route: IP rules → signature → nonce → rate rules → order
    /// rules. Cheap checks run on the headers before anything else; when the signature (or a
    /// `body:` key) needs the body, it is buffered up to the cap, verified, and only then sent
    /// to the backend — byte-identical, with a correct `Content-Length` — by payguard itself,
    /// so a forged or limited request never reaches the backend. Without a body check the
    /// request streams through Pingora as on a `pass` route. Returns `true` when answered.
    async fn handle_guard(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        config: &Config,
        guard: &crate::guard::Guard,
    ) -> Result<bool> {
        use crate::guard::request::RequestView;
        use crate::guard::Action;
        let now = self.state.clock.now();
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip())
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        let client_ip = guard.client_ip(peer, &session.req_header().headers);
        ctx.client_ip = Some(client_ip);

        if let Some(v) = guard.prelimit(client_ip).or_else(|| guard.check_ip(client_ip)) {
            self.record_decisions(ctx, &v);
            if let Action::Reject(p) = v.action {
                return self.reject(session, ctx, p).await;
            }
        }

        let signed = match guard.signature() {
            Some(verifier) => match verifier.verify_headers(&session.req_header().headers, now) {
                Ok(s) => {
                    ctx.access_key = Some(s.key_id.clone());
                    Some(s)
                }
                Err(failure) => return self.reject_signature(session, ctx, guard, &failure).await,
            },
            None => None,
        };

        let body = if guard.needs_body() {
            let cap = usize::try_from(guard.max_body_bytes()).unwrap_or(usize::MAX);
            match read_body_capped(session, cap, &mut ctx.pace, &config.body).await? {
                Ok(b) => Some(b),
                Err(_) => {
                    let v = guard.body_too_large();
                    self.record_decisions(ctx, &v);
                    if let Action::Reject(p) = v.action {
                        return self.reject(session, ctx, p).await;
                    }
                    None
                }
            }
        } else {
            None
        };

        // The query, read once; guard routes that read it forward its canonical text, so the
        // backend receives exactly what the signature and the rules covered.
        let query = if guard.reads_query() {
            match session.req_header().uri.query().map(CanonicalQuery::parse).transpose() {
                Ok(q) => q,
                Err(refusal) => return self.refuse(session, ctx, Refusal::from(refusal)).await,
            }
        } else {
            None
        };
        // The query as sent, kept only when it was rewritten (to explain a signature mismatch).
        let mut sent_query: Option<String> = None;
        if let Some(q) = &query {
            let sent = session.req_header().uri.query();
            if sent != Some(q.as_str()) {
                sent_query = sent.map(str::to_string);
                self.count_canonicalization("rewritten", "query");
                request_head::set_query(session.req_header_mut(), q.as_str())?;
            }
        }

        // Verify the body and plan the store call while borrowing the request head (no copies).
        let routing_path = ctx.path.as_ref().map_or("/", |p| p.routing());
        let planned = {
            let req = session.req_header();
            let (method, path) = (req.method.as_str(), req.uri.path());
            let canonical_query = query.as_ref().map_or("", |q| q.as_str());
            let bytes = body.as_deref().unwrap_or_default();
            let checked = match (guard.signature(), signed.as_ref()) {
                (Some(verifier), Some(s)) => {
                    verifier
                        .verify_body(s, method, path, canonical_query, bytes)
                        .map_err(|failure| match failure {
                            SignatureFailure::SignatureMismatch { .. } => {
                                let (sent_path, target_query) =
                                    ctx.sent_target.as_deref().map_or((path, None), split_target);
                                let sent_query = sent_query.as_deref().or(target_query).or(Some(canonical_query));
                                SignatureFailure::SignatureMismatch {
                                    hint: verifier.explain_mismatch(
                                        s,
                                        method,
                                        (sent_path, sent_query),
                                        (path, canonical_query),
                                        bytes,
                                    ),
                                }
                            }
                            other => other,
                        })
                }
                _ => Ok(()),
            };
            checked.map(|()| {
                let view = RequestView {
                    method,
                    routing_path,
                    query: query.as_ref(),
                    headers: &req.headers,
                    client_ip,
                    body: bytes,
                };
                guard.plan(&view, signed.as_ref(), Some(&ctx.route), now)
            })
        };
        let plan = match planned {
            Err(failure) => return self.reject_signature(session, ctx, guard, &failure).await,
            Ok(Err(v)) => {
                self.record_decisions(ctx, &v);
                return match v.action {
                    Action::Reject(p) => self.reject(session, ctx, p).await,
                    Action::Allow { .. } => Ok(false),
                };
            }
            Ok(Ok(plan)) => plan,
        };
        let verdict = if plan.needs_store() {
            match self.state.store.guard(plan.batch()).await {
                Ok(outcome) => plan.decide(&outcome),
                Err(e) => {
                    tracing::warn!(request_id = %ctx.request_id, error = %e, "store unavailable; applying on_store_error policies");
                    plan.on_store_error()
                }
            }
        } else {
            plan.decide(&Default::default())
        };
        self.record_decisions(ctx, &verdict);
        let (request_headers, response_headers) = match verdict.action {
            Action::Reject(p) => return self.reject(session, ctx, p).await,
            Action::Allow {
                extra_request_headers,
                response_headers,
            } => (extra_request_headers, response_headers),
        };
        // Added to the backend's answer and counted after a 2xx, on either forwarding path.
        ctx.guard_response_headers = response_headers;
        ctx.upstream_counters = plan.upstream_counters();
        // Back on Pingora's upstream path when it can carry the request: without a body check
        // (the body streams through), or with a checked body that fits Pingora's retry buffer,
        // which it sends after the request head — that head is written only after this filter
        // returned, so nothing reaches the backend before the checks passed. A larger checked
        // body is sent by payguard itself.
        let replayable = |s: &mut Session| s.as_mut().is_body_empty() || s.as_ref().get_retry_buffer().is_some();
        match body {
            None => {
                ctx.guard_request_headers = request_headers;
                Ok(false)
            }
            Some(body) if replayable(session) => {
                ctx.guard_request_headers = request_headers;
                ctx.replayed_body_len = Some(body.len());
                Ok(false)
            }
            Some(body) => {
                self.forward_verified(session, ctx, config, body, request_headers)
                    .await?;
                Ok(true)
            }
        }
    }

    async fn reject_signature(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        guard: &crate::guard::Guard,
        failure: &crate::guard::signature::SignatureFailure,
    ) -> Result<bool> {
        self.state
            .metrics
            .signature_failures
            .with_label_values(&[failure.reason()])
            .inc();
        let v = guard.signature_rejection(failure);
        self.record_decisions(ctx, &v);
        match v.action {
            crate::guard::Action::Reject(p) => self.reject(session, ctx, p).await,
            crate::guard::Action::Allow { .. } => Ok(false),
        }
    }

    /// Sends a verified, buffered request to the backend and streams its answer back, chunk by
    /// chunk: the backend is read only as fast as the client reads, so a large or endless answer
    /// costs one chunk of memory, not its size. Failures are returned as upstream errors, which
    /// [`ProxyHttp::fail_to_proxy`] maps to 502/504 as for a `pass` route.
    async fn forward_verified(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        config: &Config,
        body: Bytes,
        request_headers: Vec<(http::HeaderName, http::HeaderValue)>,
    ) -> Result<()> {
        use crate::proxy::backend::BackendRequest;
        let req = session.req_header();
        let mut headers: Vec<(http::HeaderName, http::HeaderValue)> =
            req.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (k, v) in request_headers {
            headers.retain(|(name, _)| *name != k);
            headers.push((k, v));
        }
        let head_request = req.method == http::Method::HEAD;
        let request = BackendRequest {
            method: req.method.clone(),
            path_and_query: req
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".into()),
            headers,
            body,
            timeout: config.upstream.read_timeout,
        };
        ctx.upstream_started = Some(Instant::now());
        let started = self.state.backend.start(config.upstream.socket, request).await;
        self.observe_upstream(ctx);
        let mut resp = started.map_err(upstream_error)?;

        let mut out = ResponseHeader::build(resp.status, Some(resp.headers.len() + 4))?;
        for (k, v) in resp.headers.iter() {
            out.append_header(k.clone(), v.clone())?;
        }
        self.finish_backend_answer(&mut out, ctx)?;
        // Framing (RFC 9110 §6.4.1, §8.6): HEAD, 1xx, 204 and 304 answers have no body; 1xx and
        // 204 carry no Content-Length, HEAD and 304 keep the backend's. Otherwise the backend's
        // Content-Length is kept and the body streamed as it arrives, or, without one, chunked.
        let bodiless = head_request || resp.status == 204 || resp.status == 304 || (100..200).contains(&resp.status);
        if resp.status == 204 || (100..200).contains(&resp.status) {
            out.remove_header("content-length");
        } else if !bodiless
            && out.headers.get(http::header::CONTENT_LENGTH).is_none()
            && session.req_header().version == http::Version::HTTP_11
        {
            out.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
        }
        session.write_response_header(Box::new(out), bodiless).await?;
        if bodiless {
            return Ok(());
        }
        while let Some(chunk) = resp.next_chunk().await.map_err(upstream_error)? {
            session.write_response_body(Some(chunk), false).await?;
        }
        session.write_response_body(None, true).await
    }

    /// Records the upstream latency (choosing the backend → its response header), once.
    fn observe_upstream(&self, ctx: &mut RequestCtx) {
        if let Some(t) = ctx.upstream_started.take() {
            let took = t.elapsed();
            ctx.upstream_latency = Some(took);
            self.state
                .metrics
                .upstream_duration
                .with_label_values(&[ctx.route.as_str()])
                .observe(took.as_secs_f64());
        }
    }

    /// What payguard adds to every backend answer, on Pingora's path and on its own: the request
    /// id unless the backend set one, the guard's response headers (`RateLimit`); and after a
    /// 2xx, the `count_on: upstream_2xx` order counters, counted without delaying the answer.
    fn finish_backend_answer(&self, resp: &mut ResponseHeader, ctx: &mut RequestCtx) -> Result<()> {
        ctx.upstream_status = Some(resp.status.as_u16());
        if resp.headers.get(REQUEST_ID).is_none() {
            resp.insert_header(REQUEST_ID, ctx.request_id.as_str())?;
        }
        for (k, v) in std::mem::take(&mut ctx.guard_response_headers) {
            resp.append_header(k, v)?;
        }
        let counters = std::mem::take(&mut ctx.upstream_counters);
        if resp.status.is_success() && !counters.is_empty() {
            let state = self.state.clone();
            tokio::spawn(async move { count_accepted_orders(&state, &counters).await });
        }
        Ok(())
    }

    /// A notification endpoint: payguard answers the channel itself after consulting the backend
    /// (the acknowledgement depends on the backend's answer), so nothing reaches the backend
    /// before verification and nothing is acknowledged before the backend accepted.
    async fn handle_notify(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        config: &Config,
        route: &crate::notify::NotifyRoute,
    ) -> Result<()> {
        ctx.outcome = RequestOutcome::Notification;
        let channel = route.channel.kind();
        let (reply, record) = if session.req_header().method != http::Method::POST {
            let mut record = crate::notify::NotifyRecord {
                outcome: NotifyOutcome::RejectedMethod,
                ..Default::default()
            };
            record.reason = Some(format!("method {} is not POST", session.req_header().method));
            (
                crate::notify::Reply::from(route.channel.failure_ack("method not allowed")),
                record,
            )
        } else {
            match read_body_capped(session, route.max_body, &mut ctx.pace, &config.body).await {
                // The notification log shows a stalled notification like any other.
                Err(e) if is_body_timeout(&e) => {
                    let record = crate::notify::NotifyRecord {
                        outcome: NotifyOutcome::ClientTimeout,
                        reason: Some(format!("the request body stalled: {e}")),
                        ..Default::default()
                    };
                    (crate::notify::Reply::from(Problem::request_timeout()), record)
                }
                Err(e) => return Err(e),
                Ok(Err(len)) => {
                    let record = crate::notify::NotifyRecord {
                        outcome: NotifyOutcome::BodyTooLarge,
                        reason: Some(format!("body exceeds {} bytes (read {len})", route.max_body)),
                        ..Default::default()
                    };
                    (
                        crate::notify::Reply::from(route.channel.failure_ack("body too large")),
                        record,
                    )
                }
                Ok(Ok(body)) => self.notify_with_body(session, ctx, config, route, body).await,
            }
        };
        self.finish_notify(session, ctx, channel, reply, record).await
    }

    async fn notify_with_body(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        config: &Config,
        route: &crate::notify::NotifyRoute,
        body: Bytes,
    ) -> (crate::notify::Reply, crate::notify::NotifyRecord) {
        {
            let headers = session.req_header().headers.clone();
            let path_and_query = session
                .req_header()
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_default();
            let io = crate::notify::NotifyIo {
                store: self.state.store.as_ref(),
                backend: &self.state.backend,
                upstream: config.upstream.socket,
                clock: self.state.clock.as_ref(),
            };
            let incoming = crate::notify::Incoming {
                path_and_query: &path_and_query,
                headers: &headers,
                body: &body,
                request_id: &ctx.request_id,
                source: crate::notify::EventSource::Notification,
            };
            crate::notify::handle_notification(route, io, incoming).await
        }
    }

    async fn finish_notify(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        channel: crate::channels::ChannelKind,
        reply: crate::notify::Reply,
        record: crate::notify::NotifyRecord,
    ) -> Result<()> {
        let m = &self.state.metrics;
        m.notifications
            .with_label_values(&[ctx.route.as_str(), channel.as_str(), record.outcome.as_str()])
            .inc();
        if let Some(latency) = record.backend_latency {
            m.notify_backend_duration
                .with_label_values(&[ctx.route.as_str()])
                .observe(latency.as_secs_f64());
        }
        crate::history::spawn_record(
            self.state.store.clone(),
            &record,
            crate::history::Place {
                route: ctx.route.as_str(),
                channel: channel.as_str(),
                source: crate::notify::EventSource::Notification,
                request_id: &ctx.request_id,
                answered: Some(reply.status),
            },
            self.state.clock.now(),
        );
        // The transaction log the shop's support team reads.
        tracing::info!(
            target: "payguard::notify",
            request_id = %ctx.request_id,
            route = %ctx.route,
            channel = channel.as_str(),
            outcome = record.outcome.as_str(),
            event_id = record.event_id.as_deref(),
            kind = record.kind,
            out_trade_no = record.out_trade_no.as_deref(),
            dedup = record.dedup,
            backend_status = record.backend_status,
            backend_latency_ms = record.backend_latency.map(|d| d.as_secs_f64() * 1000.0),
            reason = record.reason.as_deref(),
            store_data_loss = record.store_data_loss.map(|at| at.to_string()),
            answered = reply.status,
            "notification"
        );
        let content_type = reply
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.clone());
        // `respond` sets the content type, length and request id itself; a relayed backend
        // reply (passthrough) usually carries them too and must not produce a second copy.
        let extra: Vec<(String, String)> = reply
            .headers
            .into_iter()
            .filter(|(k, _)| {
                !["content-type", "content-length", REQUEST_ID]
                    .iter()
                    .any(|own| k.eq_ignore_ascii_case(own))
            })
            .collect();
        respond(
            session,
            reply.status,
            content_type.as_deref(),
            &extra,
            &ctx.request_id,
            reply.body,
        )
        .await
    }
}

#[async_trait]
impl ProxyHttp for PayguardProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> Self::CTX {
        RequestCtx::new(InFlight::enter(&self.state.metrics.in_flight))
    }

    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<()> {
        let config = self.state.config();
        // Pipelined requests are answered one after the other, in order (RFC 9112 §9.3.2),
        // instead of the connection closing under the second one.
        session.as_mut().set_pipelining_enabled(true);
        // A body that stalls longer than this is answered 408 (`server.body.idle_timeout`).
        session.as_mut().set_read_timeout(Some(config.body.idle_timeout));
        ctx.config = Some(config);
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        let config = ctx.config.get_or_insert_with(|| self.state.config()).clone();

        let req = session.req_header_mut();
        match req.headers.get(REQUEST_ID).map(|v| v.as_bytes()) {
            Some(v) if valid_request_id(v) && req.headers.get_all(REQUEST_ID).iter().count() == 1 => {
                ctx.request_id = String::from_utf8_lossy(v).into_owned();
            }
            _ => {
                ctx.request_id = new_request_id();
                req.insert_header(REQUEST_ID, ctx.request_id.as_str())?;
            }
        }

        match crate::trace::Trace::of(&req.headers) {
            crate::trace::Trace::Kept(id) => ctx.trace_id = id,
            crate::trace::Trace::New { traceparent, trace_id } => {
                req.remove_header(crate::trace::TRACESTATE);
                req.insert_header(crate::trace::TRACEPARENT, traceparent)?;
                ctx.trace_id = trace_id;
            }
        }

        // The canonical head (or a refusal) before anything routes on it: what payguard checks
        // below is exactly what the backend is sent.
        let head = match request_head::canonicalize(req, &config.request) {
            Ok(head) => head,
            Err(refusal) => {
                ctx.sent_target = Some(String::from_utf8_lossy(session.req_header().raw_path()).into_owned());
                return self.refuse(session, ctx, refusal).await;
            }
        };
        for (name, why) in &head.removed {
            self.count_canonicalization("header_removed", why.as_str());
            // Asserted and override headers from a client are an attempt; underscores are noise.
            if *why == crate::canonical::headers::Removal::Underscore {
                tracing::debug!(request_id = %ctx.request_id, header = %name, "removed a header with `_` in its name");
            } else {
                tracing::warn!(request_id = %ctx.request_id, header = %name, reason = why.as_str(), "removed a client-sent header");
            }
        }
        if head.sent.is_some() {
            self.count_canonicalization("rewritten", "path");
        }
        ctx.sent_target = head.sent;
        ctx.path = Some(head.path);
        let routed = config.routes.route(
            session.req_header().method.as_str(),
            ctx.path.as_ref().map_or("/", |p| p.routing()),
        );

        match routed {
            Routed::Route(route) => {
                ctx.route = route.name.clone();
                match (route.policy, route.notify.clone()) {
                    (PolicyKind::Pass, _) => Ok(false),
                    (PolicyKind::Guard, _) => match config.guard.clone() {
                        Some(guard) => self.handle_guard(session, ctx, &config, &guard).await,
                        None => {
                            ctx.outcome = RequestOutcome::Misconfigured;
                            respond_problem(session, ctx, Problem::new(500, "INTERNAL", "guard not configured"))
                                .await?;
                            Ok(true)
                        }
                    },
                    (PolicyKind::Notify, Some(notify)) => {
                        self.handle_notify(session, ctx, &config, &notify).await?;
                        Ok(true)
                    }
                    (PolicyKind::Egress, _) if route.egress.is_some() => {
                        let egress = route.egress.clone();
                        if let Some(egress) = egress {
                            self.handle_egress(session, ctx, &config, &egress).await?;
                        }
                        Ok(true)
                    }
                    // Rejected by config validation until their handlers exist.
                    _ => {
                        ctx.outcome = RequestOutcome::Misconfigured;
                        respond_problem(session, ctx, Problem::new(500, "INTERNAL", "route policy unavailable"))
                            .await?;
                        Ok(true)
                    }
                }
            }
            Routed::Default(DefaultAction::Pass) => Ok(false),
            Routed::Default(DefaultAction::NotFound) => {
                ctx.outcome = RequestOutcome::NotFound;
                respond_problem(session, ctx, Problem::not_found()).await?;
                Ok(true)
            }
        }
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let (Some(chunk), Some(config)) = (body.as_ref(), ctx.config.as_ref()) {
            ctx.pace.chunk(chunk.len(), &config.body)?;
        }
        Ok(())
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Self::CTX) -> Result<Box<HttpPeer>> {
        let config = ctx.config.clone().unwrap_or_else(|| self.state.config());
        let up = &config.upstream;
        let mut peer = HttpPeer::new(up.socket, false, String::new());
        peer.options.connection_timeout = Some(up.connect_timeout);
        peer.options.total_connection_timeout = Some(up.connect_timeout);
        peer.options.read_timeout = Some(up.read_timeout);
        peer.options.write_timeout = Some(up.write_timeout);
        peer.options.idle_timeout = Some(up.idle_timeout);
        ctx.upstream_started = Some(Instant::now());
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut pingora::http::RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        for (k, v) in std::mem::take(&mut ctx.guard_request_headers) {
            upstream_request.insert_header(k, v)?;
        }
        // Repeated identical Content-Length fields mean one length (RFC 9112 §6.3); the backend
        // gets it once (different ones never get this far: Pingora refuses them).
        let mut lengths = upstream_request.headers.get_all(http::header::CONTENT_LENGTH).iter();
        if let (Some(first), Some(_)) = (lengths.next(), lengths.next()) {
            let first = first.clone();
            if upstream_request
                .headers
                .get_all(http::header::CONTENT_LENGTH)
                .iter()
                .all(|v| *v == first)
            {
                upstream_request.insert_header(http::header::CONTENT_LENGTH, first)?;
            }
        }
        if let Some(len) = ctx.replayed_body_len {
            // The exact verified bytes, framed by their length whatever the client's framing
            // was; the client's `100-continue` was already answered.
            upstream_request.remove_header(&http::header::TRANSFER_ENCODING);
            upstream_request.remove_header(&http::header::EXPECT);
            upstream_request.insert_header(http::header::CONTENT_LENGTH, len.to_string())?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        self.observe_upstream(ctx);
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        self.finish_backend_answer(upstream_response, ctx)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Self::CTX) -> FailToProxy {
        let problem = match (e.esource(), e.etype()) {
            (_, ErrorType::HTTPStatus(code)) => {
                let code = *code;
                let p = Problem::new(code, "REQUEST_FAILED", "the request could not be processed");
                ctx.outcome = RequestOutcome::Error;
                Some(p)
            }
            (
                ErrorSource::Upstream,
                ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout,
            ) => {
                ctx.outcome = RequestOutcome::UpstreamTimeout;
                Some(Problem::upstream_timeout())
            }
            (ErrorSource::Upstream, _) => {
                ctx.outcome = RequestOutcome::UpstreamError;
                Some(Problem::upstream_unavailable())
            }
            (ErrorSource::Downstream, ErrorType::ReadTimedout) => {
                ctx.outcome = RequestOutcome::ClientTimeout;
                Some(Problem::request_timeout())
            }
            (ErrorSource::Downstream, ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed) => {
                ctx.outcome = RequestOutcome::ClientClosed;
                None
            }
            (ErrorSource::Downstream, _) => {
                ctx.outcome = RequestOutcome::BadRequest;
                Some(Problem::new(400, "BAD_REQUEST", "the request is not valid HTTP"))
            }
            _ => {
                ctx.outcome = RequestOutcome::Error;
                Some(Problem::new(500, "INTERNAL", "internal error"))
            }
        };
        let code = match problem {
            Some(p) => {
                let status = p.status;
                // The response header may already be on its way; then nothing more can be said.
                if session.response_written().is_none() {
                    if let Err(err) = respond_problem(session, ctx, p).await {
                        tracing::debug!(error = %err, "could not send error response");
                    }
                }
                status
            }
            None => 0,
        };
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX) {
        crate::listener::request_done(session.as_downstream());
        let status = session.response_written().map(|r| r.status.as_u16()).unwrap_or(0);
        let latency = ctx.started.elapsed();
        let m = &self.state.metrics;
        m.requests
            .with_label_values(&[ctx.route.as_str(), ctx.outcome.as_str()])
            .inc();
        m.request_duration
            .with_label_values(&[ctx.route.as_str()])
            .observe(latency.as_secs_f64());
        m.responses
            .with_label_values(&[ctx.route.as_str(), crate::metrics::status_class(status)])
            .inc();
        let req = session.req_header();
        // The canonical path (what was routed, checked and forwarded); the target as sent when
        // payguard rewrote or refused it.
        let path = ctx.path.as_ref().map_or(req.uri.path(), |p| p.as_str());
        let sent_path = ctx.sent_target.as_deref().map(|t| log_cut(split_target(t).0));
        let client_ip = ctx
            .client_ip
            .or_else(|| session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip()))
            .map(|ip| ip.to_string());
        let user_agent = req
            .headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(log_cut);
        let line = crate::telemetry::AccessLine {
            request_id: &ctx.request_id,
            route: &ctx.route,
            method: req.method.as_str(),
            path: log_cut(path),
            sent_path,
            status,
            outcome: ctx.outcome.as_str(),
            code: ctx.code,
            latency_ms: latency.as_secs_f64() * 1000.0,
            error: e.map(|e| e.etype().as_str()),
            client_ip: client_ip.as_deref(),
            user_agent,
            bytes_sent: session.body_bytes_sent(),
            trace_id: (!ctx.trace_id.is_empty()).then_some(ctx.trace_id.as_str()),
            access_key: ctx.access_key.as_deref(),
            rule: ctx.rule.as_deref(),
            upstream_status: ctx.upstream_status,
            upstream_latency_ms: ctx.upstream_latency.map(|d| d.as_secs_f64() * 1000.0),
        };
        if !crate::telemetry::access(&line) {
            tracing::info!(
                target: "payguard::access",
                request_id = %line.request_id,
                route = %line.route,
                method = %line.method,
                path = %line.path,
                sent_path = line.sent_path,
                status = line.status,
                outcome = line.outcome,
                code = line.code,
                latency_ms = line.latency_ms,
                error = line.error,
                client_ip = line.client_ip,
                user_agent = line.user_agent,
                bytes_sent = line.bytes_sent,
                trace_id = line.trace_id,
                access_key = line.access_key,
                rule = line.rule,
                upstream_status = line.upstream_status,
                upstream_latency_ms = line.upstream_latency_ms,
                "request"
            );
        }
    }
}
