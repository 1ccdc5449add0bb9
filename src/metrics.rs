//! Prometheus metrics (prefix `payguard_`). Label values come from config names and fixed enums
//! only, never from request data, so cardinality stays bounded.

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

/// Latency buckets in seconds: sub-millisecond store calls up to slow backends.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Every metric payguard exports.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    registry: Registry,
    /// Requests by route and outcome (`proxied`, `rejected`, `not_found`, `upstream_error`, ...).
    pub(crate) requests: IntCounterVec,
    /// Answers by route and status class (`2xx`, `4xx`, `5xx`, ...; `none` when nothing was sent).
    pub(crate) responses: IntCounterVec,
    /// Whole-request latency by route.
    pub(crate) request_duration: HistogramVec,
    /// Time from choosing the upstream to its response header, by route.
    pub(crate) upstream_duration: HistogramVec,
    /// Config reloads by result (`success`, `failure`).
    pub(crate) reloads: IntCounterVec,
    /// Unix time of the last successful (re)load.
    pub(crate) config_loaded_at: IntGauge,
    /// 1 while the store answers its periodic ping, 0 otherwise.
    pub(crate) store_up: IntGauge,
    /// Requests being handled right now (all routes).
    pub(crate) in_flight: IntGauge,
    /// Client connections open on the proxy listener.
    pub(crate) connections_open: IntGauge,
    /// Client connections ended by a listener limit, by reason (see [`crate::listener`]).
    pub(crate) connection_refusals: IntCounterVec,
    /// Store operation latency by backend and operation.
    pub(crate) store_duration: HistogramVec,
    /// Store errors by backend and operation.
    pub(crate) store_errors: IntCounterVec,
    /// Records the embedded store refused because that kind's budget was full.
    pub(crate) store_full: IntCounterVec,
    /// Detected losses of the store's data, by the path that noticed (`guard`, `notification`,
    /// `health_check`).
    pub(crate) store_data_loss: IntCounterVec,
    /// Records the embedded store holds, and its budget, by kind (set on each scrape).
    pub(crate) store_records: prometheus::IntGaugeVec,
    /// The embedded store's budget by kind.
    pub(crate) store_budget: prometheus::IntGaugeVec,
    /// Guard rule decisions by rule kind, rule, decision and mode (shadow included).
    pub(crate) rule_decisions: IntCounterVec,
    /// Signature failures by reason.
    pub(crate) signature_failures: IntCounterVec,
    /// Requests whose head was refused, rewritten into canonical form, or stripped of headers,
    /// by action and reason.
    pub(crate) canonicalization: IntCounterVec,
    /// Notifications by route, channel and outcome.
    pub(crate) notifications: IntCounterVec,
    /// Backend latency of forwarded notifications, by route.
    pub(crate) notify_backend_duration: HistogramVec,
    /// Egress calls to payment channels by route, channel and outcome.
    pub(crate) egress_requests: IntCounterVec,
    /// Channel latency of egress calls (connect to last answer byte), by route and channel.
    pub(crate) egress_duration: HistogramVec,
    /// WeChat Pay platform certificate downloads by merchant account and outcome.
    pub(crate) certificate_downloads: IntCounterVec,
    /// `payguard_order_queries_total{merchant,result}`.
    pub(crate) order_queries: IntCounterVec,
    /// `payguard_reconcile_runs_total{merchant,result}`.
    pub(crate) reconcile_runs: IntCounterVec,
    /// `payguard_reconcile_findings_total{merchant,problem}`.
    pub(crate) reconcile_findings: IntCounterVec,
    /// `payguard_orders_awaiting{merchant}`.
    pub(crate) orders_awaiting: prometheus::IntGaugeVec,
    /// `payguard_orders_tracked_total{merchant,result}`.
    pub(crate) orders_tracked: IntCounterVec,
    /// Downloaded WeChat Pay platform certificates held, by merchant account.
    pub(crate) platform_certificates: prometheus::IntGaugeVec,
    /// Unix time the soonest-expiring downloaded platform certificate expires, by merchant account.
    pub(crate) platform_certificate_expiry: prometheus::IntGaugeVec,
}

impl Metrics {
    /// Creates and registers all metrics in a fresh registry.
    pub(crate) fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help).namespace("payguard"), labels)
                .expect("static metric definition");
            registry.register(Box::new(c.clone())).expect("unique metric name");
            c
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help)
                    .namespace("payguard")
                    .buckets(LATENCY_BUCKETS.to_vec()),
                labels,
            )
            .expect("static metric definition");
            registry.register(Box::new(h.clone())).expect("unique metric name");
            h
        };
        let requests = counter(
            "requests_total",
            "Requests by route and outcome.",
            &["route", "outcome"],
        );
        let responses = counter(
            "responses_total",
            "Answers sent to clients by route and status class.",
            &["route", "status_class"],
        );
        let request_duration = histogram(
            "request_duration_seconds",
            "Whole-request latency by route.",
            &["route"],
        );
        let upstream_duration = histogram(
            "upstream_duration_seconds",
            "Upstream response-header latency by route.",
            &["route"],
        );
        let reloads = counter("config_reloads_total", "Configuration reloads by result.", &["result"]);
        let config_loaded_at = IntGauge::with_opts(
            Opts::new(
                "config_loaded_timestamp_seconds",
                "Unix time of the last successful configuration load.",
            )
            .namespace("payguard"),
        )
        .expect("static metric definition");
        registry
            .register(Box::new(config_loaded_at.clone()))
            .expect("unique metric name");
        let store_up = IntGauge::with_opts(
            Opts::new(
                "store_up",
                "1 while the store answers its periodic health ping, else 0.",
            )
            .namespace("payguard"),
        )
        .expect("static metric definition");
        registry
            .register(Box::new(store_up.clone()))
            .expect("unique metric name");
        let in_flight = IntGauge::with_opts(
            Opts::new("requests_in_flight", "Requests being handled right now.").namespace("payguard"),
        )
        .expect("static metric definition");
        registry
            .register(Box::new(in_flight.clone()))
            .expect("unique metric name");
        let connections_open = IntGauge::with_opts(
            Opts::new("connections_open", "Client connections open on the proxy listener.").namespace("payguard"),
        )
        .expect("static metric definition");
        registry
            .register(Box::new(connections_open.clone()))
            .expect("unique metric name");
        let connection_refusals = counter(
            "connection_refusals_total",
            "Client connections ended by a listener limit (max_connections, head_too_large, too_many_header_fields, head_timeout).",
            &["reason"],
        );
        for why in crate::listener::Refusal::ALL {
            connection_refusals.with_label_values(&[why.as_str()]);
        }
        // The standard process metrics (process_cpu_seconds_total, process_resident_memory_bytes,
        // process_open_fds, ...), unprefixed so the usual dashboards and alerts find them.
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .expect("unique metric name");
        let build_info = prometheus::IntGaugeVec::new(
            Opts::new("build_info", "Always 1; the running payguard's version.").namespace("payguard"),
            &["version"],
        )
        .expect("static metric definition");
        registry
            .register(Box::new(build_info.clone()))
            .expect("unique metric name");
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let store_duration = histogram(
            "store_operation_duration_seconds",
            "Store operation latency.",
            &["backend", "op"],
        );
        let store_errors = counter("store_errors_total", "Store operation errors.", &["backend", "op"]);
        let store_full = counter(
            "store_full_total",
            "Records the embedded store refused because the budget of their kind was full.",
            &["kind"],
        );
        let store_data_loss = counter(
            "store_data_loss_total",
            "Times the store was found to have lost its data (a restart without persistence, a failover to a lagging replica, a flush), by the path that noticed.",
            &["detected_by"],
        );
        let gauge = |name: &str, help: &str| {
            let g = prometheus::IntGaugeVec::new(Opts::new(name, help).namespace("payguard"), &["kind"])
                .expect("static metric definition");
            registry.register(Box::new(g.clone())).expect("unique metric name");
            g
        };
        let store_records = gauge("store_records", "Records the embedded store holds, by kind.");
        let store_budget = gauge("store_budget", "The embedded store's budget, by kind of record.");
        let notifications = counter(
            "notifications_total",
            "Payment notifications by route, channel and outcome.",
            &["route", "channel", "outcome"],
        );
        let notify_backend_duration = histogram(
            "notify_backend_duration_seconds",
            "Backend latency of forwarded notifications.",
            &["route"],
        );
        let egress_requests = counter(
            "egress_requests_total",
            "Egress calls to payment channels by route, channel and outcome.",
            &["route", "channel", "outcome"],
        );
        let egress_duration = histogram(
            "egress_duration_seconds",
            "Channel latency of egress calls.",
            &["route", "channel"],
        );
        let certificate_downloads = counter(
            "platform_certificate_downloads_total",
            "WeChat Pay platform certificate downloads by merchant account and outcome.",
            &["merchant", "outcome"],
        );
        let merchant_gauge = |name: &str, help: &str| {
            let g = prometheus::IntGaugeVec::new(Opts::new(name, help).namespace("payguard"), &["merchant"])
                .expect("static metric definition");
            registry.register(Box::new(g.clone())).expect("unique metric name");
            g
        };
        let platform_certificates = merchant_gauge(
            "platform_certificates",
            "Downloaded WeChat Pay platform certificates held, by merchant account.",
        );
        let platform_certificate_expiry = merchant_gauge(
            "platform_certificate_expiry_timestamp_seconds",
            "Unix time the soonest-expiring downloaded WeChat Pay platform certificate expires, by merchant account.",
        );
        let order_queries = counter(
            "order_queries_total",
            "Order queries for tracked orders without a delivered final event, by merchant account and result.",
            &["merchant", "result"],
        );
        let orders_tracked = counter(
            "orders_tracked_total",
            "Orders created through egress and tracked (or not, when the store refused), by merchant account and result.",
            &["merchant", "result"],
        );
        let reconcile_runs = counter(
            "reconcile_runs_total",
            "Daily bill reconciliations that produced a report, by merchant account and result (reconciled or unreconciled).",
            &["merchant", "result"],
        );
        let reconcile_findings = counter(
            "reconcile_findings_total",
            "Differences between a channel's daily bill and the delivered events, by merchant account and problem.",
            &["merchant", "problem"],
        );
        let orders_awaiting = merchant_gauge(
            "orders_awaiting",
            "Tracked orders whose final event has not been delivered, by merchant account (as of the last query round).",
        );
        let rule_decisions = counter(
            "rule_decisions_total",
            "Guard decisions by rule kind, rule, decision and mode.",
            &["kind", "rule", "decision", "mode"],
        );
        let signature_failures = counter(
            "signature_failures_total",
            "Client signature failures by reason.",
            &["reason"],
        );
        let canonicalization = counter(
            "request_canonicalization_total",
            "Request heads refused, rewritten into canonical form or stripped of headers, by action and reason.",
            &["action", "reason"],
        );
        // Series for every fixed label value from the start, at 0, so `increase()` and alerts
        // see them before the first event.
        for reason in crate::canonical::REFUSAL_REASONS {
            canonicalization.with_label_values(&["refused", reason]);
        }
        for reason in ["path", "query"] {
            canonicalization.with_label_values(&["rewritten", reason]);
        }
        for why in [
            crate::canonical::headers::Removal::Asserted,
            crate::canonical::headers::Removal::Override,
            crate::canonical::headers::Removal::Underscore,
        ] {
            canonicalization.with_label_values(&["header_removed", why.as_str()]);
        }
        for kind in crate::store::embedded::BUDGETED_KINDS {
            store_full.with_label_values(&[kind]);
        }
        for source in crate::store::DataLossSource::ALL {
            store_data_loss.with_label_values(&[source.as_str()]);
        }
        Self {
            canonicalization,
            rule_decisions,
            signature_failures,
            notifications,
            notify_backend_duration,
            egress_requests,
            egress_duration,
            certificate_downloads,
            order_queries,
            reconcile_runs,
            reconcile_findings,
            orders_awaiting,
            orders_tracked,
            platform_certificates,
            platform_certificate_expiry,
            registry,
            requests,
            responses,
            request_duration,
            upstream_duration,
            reloads,
            config_loaded_at,
            store_up,
            in_flight,
            connections_open,
            connection_refusals,
            store_duration,
            store_errors,
            store_full,
            store_data_loss,
            store_records,
            store_budget,
        }
    }

    /// Prometheus text exposition of every metric.
    pub(crate) fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The `status_class` label of a status code: `1xx` to `5xx`, `none` when no answer was sent.
pub(crate) fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "none",
    }
}
