//! The Pingora proxy: request lifecycle phases (`request_filter` → `upstream_peer` →
//! `response_filter` → `logging`) with a per-request [`RequestCtx`].

pub mod backend;
pub mod problem;
pub mod routes;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::{HttpPeer, Session};
use pingora::proxy::{FailToProxy, ProxyHttp};
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::config::{Config, DefaultAction, PolicyKind};
use crate::state::SharedState;
use problem::{Problem, PROBLEM_JSON};
use routes::{Routed, DEFAULT_ROUTE_NAME};

/// Header carrying the request id (taken from the client when valid, generated otherwise).
pub const REQUEST_ID: &str = "x-request-id";

/// The proxy service.
#[derive(Debug, Clone)]
pub struct PayguardProxy {
    state: Arc<SharedState>,
}

impl PayguardProxy {
    /// A proxy over shared state.
    pub fn new(state: Arc<SharedState>) -> Self {
        Self { state }
    }
}

/// Per-request state carried between phases.
#[derive(Debug)]
pub struct RequestCtx {
    started: Instant,
    /// Config snapshot this request runs under (reloads never change it mid-request).
    config: Option<Arc<Config>>,
    route: String,
    request_id: String,
    outcome: &'static str,
    upstream_started: Option<Instant>,
}

impl RequestCtx {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            config: None,
            route: DEFAULT_ROUTE_NAME.to_string(),
            request_id: String::new(),
            outcome: "proxied",
            upstream_started: None,
        }
    }
}

/// A client-sent request id is kept only if it is short visible ASCII (it lands in logs).
fn valid_request_id(v: &[u8]) -> bool {
    !v.is_empty() && v.len() <= 128 && v.iter().all(|b| b.is_ascii_graphic())
}

/// Writes a complete response that payguard makes itself.
pub async fn respond(
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

async fn respond_problem(session: &mut Session, ctx: &RequestCtx, mut problem: Problem) -> Result<()> {
    problem.request_id = Some(ctx.request_id.clone());
    respond(
        session,
        problem.status,
        Some(PROBLEM_JSON),
        &[],
        &ctx.request_id,
        problem.body(),
    )
    .await
}

/// Reads the whole request body, stopping once it exceeds `cap` bytes (`Err(len_so_far)`).
async fn read_body_capped(session: &mut Session, cap: usize) -> Result<std::result::Result<Bytes, usize>> {
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = session.read_request_body().await? {
        if buf.len() + chunk.len() > cap {
            return Ok(Err(buf.len() + chunk.len()));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Ok(buf.freeze()))
}

impl PayguardProxy {
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
        ctx.outcome = "notification";
        let channel = route.channel.kind();
        let (reply, record) = if session.req_header().method != http::Method::POST {
            let mut record = crate::notify::NotifyRecord {
                outcome: "rejected_method",
                ..Default::default()
            };
            record.reason = Some(format!("method {} is not POST", session.req_header().method));
            (
                crate::notify::Reply::from(route.channel.failure_ack("method not allowed")),
                record,
            )
        } else {
            match read_body_capped(session, route.max_body).await? {
                Err(len) => {
                    let record = crate::notify::NotifyRecord {
                        outcome: "body_too_large",
                        reason: Some(format!("body exceeds {} bytes (read {len})", route.max_body)),
                        ..Default::default()
                    };
                    (
                        crate::notify::Reply::from(route.channel.failure_ack("body too large")),
                        record,
                    )
                }
                Ok(body) => self.notify_with_body(session, ctx, config, route, body).await,
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
            .with_label_values(&[ctx.route.as_str(), channel.as_str(), record.outcome])
            .inc();
        if let Some(latency) = record.backend_latency {
            m.notify_backend_duration
                .with_label_values(&[ctx.route.as_str()])
                .observe(latency.as_secs_f64());
        }
        // The transaction log the shop's support team reads (product.md §9).
        tracing::info!(
            target: "payguard::notify",
            request_id = %ctx.request_id,
            route = %ctx.route,
            channel = channel.as_str(),
            outcome = record.outcome,
            event_id = record.event_id.as_deref(),
            kind = record.kind,
            out_trade_no = record.out_trade_no.as_deref(),
            dedup = record.dedup,
            backend_status = record.backend_status,
            backend_latency_ms = record.backend_latency.map(|d| d.as_secs_f64() * 1000.0),
            reason = record.reason.as_deref(),
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
        RequestCtx::new()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        let config = self.state.config();
        ctx.config = Some(config.clone());

        let req = session.req_header_mut();
        match req.headers.get(REQUEST_ID).map(|v| v.as_bytes()) {
            Some(v) if valid_request_id(v) && req.headers.get_all(REQUEST_ID).iter().count() == 1 => {
                ctx.request_id = String::from_utf8_lossy(v).into_owned();
            }
            _ => {
                ctx.request_id = uuid::Uuid::new_v4().to_string();
                req.insert_header(REQUEST_ID, ctx.request_id.as_str())?;
            }
        }

        let method = req.method.as_str().to_string();
        let path = req.uri.path().to_string();
        match config.routes.route(&method, &path) {
            Routed::Route(route) => {
                ctx.route = route.name.clone();
                match (route.policy, route.notify.clone()) {
                    (PolicyKind::Pass, _) => Ok(false),
                    (PolicyKind::Notify, Some(notify)) => {
                        self.handle_notify(session, ctx, &config, &notify).await?;
                        Ok(true)
                    }
                    // Rejected by config validation until their handlers exist.
                    _ => {
                        ctx.outcome = "misconfigured";
                        respond_problem(session, ctx, Problem::new(500, "INTERNAL", "Route policy unavailable"))
                            .await?;
                        Ok(true)
                    }
                }
            }
            Routed::Default(DefaultAction::Pass) => Ok(false),
            Routed::Default(DefaultAction::NotFound) => {
                ctx.outcome = "not_found";
                respond_problem(session, ctx, Problem::not_found()).await?;
                Ok(true)
            }
        }
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

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let Some(t) = ctx.upstream_started.take() {
            self.state
                .metrics
                .upstream_duration
                .with_label_values(&[ctx.route.as_str()])
                .observe(t.elapsed().as_secs_f64());
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if upstream_response.headers.get(REQUEST_ID).is_none() {
            upstream_response.insert_header(REQUEST_ID, ctx.request_id.as_str())?;
        }
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Self::CTX) -> FailToProxy {
        let problem = match (e.esource(), e.etype()) {
            (_, ErrorType::HTTPStatus(code)) => {
                let code = *code;
                let p = Problem::new(code, "REQUEST_FAILED", "The request could not be processed");
                ctx.outcome = "error";
                Some(p)
            }
            (
                ErrorSource::Upstream,
                ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout,
            ) => {
                ctx.outcome = "upstream_timeout";
                Some(Problem::upstream_timeout())
            }
            (ErrorSource::Upstream, _) => {
                ctx.outcome = "upstream_error";
                Some(Problem::upstream_unavailable())
            }
            (ErrorSource::Downstream, ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed) => {
                ctx.outcome = "client_closed";
                None
            }
            (ErrorSource::Downstream, _) => {
                ctx.outcome = "bad_request";
                Some(Problem::new(400, "BAD_REQUEST", "The request is not valid HTTP"))
            }
            _ => {
                ctx.outcome = "error";
                Some(Problem::new(500, "INTERNAL", "Internal error"))
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
        let status = session.response_written().map(|r| r.status.as_u16()).unwrap_or(0);
        let latency = ctx.started.elapsed();
        let m = &self.state.metrics;
        m.requests.with_label_values(&[ctx.route.as_str(), ctx.outcome]).inc();
        m.request_duration
            .with_label_values(&[ctx.route.as_str()])
            .observe(latency.as_secs_f64());
        let req = session.req_header();
        tracing::info!(
            target: "payguard::access",
            request_id = %ctx.request_id,
            route = %ctx.route,
            method = %req.method,
            path = %req.uri.path(),
            status,
            outcome = ctx.outcome,
            latency_ms = latency.as_secs_f64() * 1000.0,
            error = e.map(|e| e.etype().as_str()),
            "request"
        );
    }
}
