//! The `egress` policy in the proxy: reads the backend's call, hands it to the route's
//! [`EgressRoute`] (`src/egress/mod.rs`), and answers with the verified channel answer or a
//! problem. payguard answers itself: nothing of an egress call goes to the upstream.

use pingora::prelude::Session;
use pingora::Result;

use super::{is_body_timeout, read_body_capped, respond, respond_problem, PayguardProxy, RequestCtx};
use crate::config::Config;
use crate::egress::{CallRecord, EgressError, EgressRequest, EgressRoute, Relayed};
use crate::outcome::{EgressOutcome, RequestOutcome};
use crate::problem::Problem;

/// Set on a relayed answer: payguard verified the channel's signature over it.
const VERIFIED_HEADER: &str = "x-pg-verified";

impl PayguardProxy {
    /// An `egress` route: the whole body (capped), the call through the route, one log line and
    /// the metrics, then the answer.
    pub(super) async fn handle_egress(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        config: &Config,
        route: &EgressRoute,
    ) -> Result<()> {
        ctx.outcome = RequestOutcome::Egress;
        let mut record = CallRecord::default();
        let result: std::result::Result<Relayed, (EgressOutcome, Problem)> =
            match read_body_capped(session, route.max_body_bytes(), &mut ctx.pace, &config.body).await {
                Err(e) if is_body_timeout(&e) => Err((EgressOutcome::ClientTimeout, Problem::request_timeout())),
                Err(e) => return Err(e),
                Ok(Err(_)) => {
                    let e = EgressError::BodyTooLarge(route.max_body_bytes());
                    Err((e.outcome(), e.problem()))
                }
                Ok(Ok(body)) => {
                    let req = session.req_header();
                    let request = EgressRequest {
                        method: &req.method,
                        path: ctx.path.as_ref().map_or("/", |p| p.as_str()),
                        query: req.uri.query(),
                        content_type: req.headers.get(http::header::CONTENT_TYPE),
                        headers: &req.headers,
                        body,
                    };
                    route
                        .call(request, self.state.clock.as_ref(), &mut record)
                        .await
                        .map_err(|e| (e.outcome(), e.problem()))
                }
            };
        if let (Some(order), Some(tracking)) = (record.created_order.take(), route.tracking()) {
            // The order is made whatever the store says: the backend gets the channel's answer,
            // and an order the store refused is counted and logged (it can still be reconciled).
            let tracked = tracking
                .track(self.state.store.as_ref(), &order, self.state.clock.unix_seconds())
                .await;
            if let Err(e) = &tracked {
                tracing::warn!(target: "payguard::orders", request_id = %ctx.request_id, merchant = route.merchant_name(), out_trade_no = %order.out_trade_no, error = %e, "the created order could not be tracked");
            }
            self.state
                .metrics
                .orders_tracked
                .with_label_values(&[
                    route.merchant_name(),
                    if tracked.is_ok() { "tracked" } else { "store_error" },
                ])
                .inc();
        }
        let outcome = result.as_ref().map_or_else(|(o, _)| *o, |_| EgressOutcome::Relayed);
        let m = &self.state.metrics;
        m.egress_requests
            .with_label_values(&[ctx.route.as_str(), route.channel(), outcome.as_str()])
            .inc();
        if let Some(latency) = record.channel_latency {
            m.egress_duration
                .with_label_values(&[ctx.route.as_str(), route.channel()])
                .observe(latency.as_secs_f64());
        }
        // One line per call. It names the call, never a header: the Authorization signature,
        // the answer's signature and the bodies stay out of the log.
        tracing::info!(
            target: "payguard::egress",
            request_id = %ctx.request_id,
            route = %ctx.route,
            merchant = route.merchant_name(),
            channel = route.channel(),
            method = %session.req_header().method,
            channel_path = record.channel_path.as_deref().map(super::log_cut),
            outcome = outcome.as_str(),
            channel_status = record.channel_status,
            channel_latency_ms = record.channel_latency.map(|d| d.as_secs_f64() * 1000.0),
            reason = result.as_ref().err().map(|(_, p)| p.detail.as_str()),
            "egress"
        );
        match result {
            Ok(relayed) => {
                // Only an answer the channel signed, and payguard verified, is marked.
                let mut headers = relayed.headers;
                if route.signs_answers() {
                    headers.push((VERIFIED_HEADER.to_string(), "1".to_string()));
                }
                respond(
                    session,
                    relayed.status,
                    relayed.content_type.as_deref(),
                    &headers,
                    &ctx.request_id,
                    relayed.body,
                )
                .await
            }
            Err((_, problem)) => {
                ctx.code = Some(problem.code);
                respond_problem(session, ctx, problem).await
            }
        }
    }
}
