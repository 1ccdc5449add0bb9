//! `payguard run`: assembles the Pingora server (proxy listener, admin listener, reloader) over
//! the shared state and runs it until SIGTERM/SIGINT.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::AdminApp;
use crate::config::reload::{ReloadService, Reloader};
use crate::health::StoreHealthService;
use crate::listener::Limited;
use crate::metrics::Metrics;
use crate::proxy::PayguardProxy;
use crate::state::SharedState;
use crate::{clock, config, store, telemetry};

/// Loads `path`, starts every listener and blocks until shutdown.
pub(crate) fn serve(path: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (checked, secret_files) = config::load::check_text_tracked(&text);
    let (_, cfg) = checked.map_err(|issues| anyhow::anyhow!("{} has errors:\n{issues}", path.display()))?;
    // Flushes the log queue when serve returns, after the server stopped.
    let _log = telemetry::init(cfg.log.format, &cfg.log.level);
    config::log_warnings(&cfg, "start");

    // Store clients (Redis connection drivers) live on a small runtime of their own so they are
    // independent of Pingora's per-service runtimes.
    let control = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("payguard-control")
        .enable_all()
        .build()
        .context("cannot start the control runtime")?;
    let clock = clock::system();
    let store = control
        .block_on(store::open(&cfg.store, clock.clone()))
        .map_err(|e| anyhow::anyhow!("cannot open the store: {e}"))?;

    let metrics = Metrics::new();
    let store: std::sync::Arc<dyn store::Store> =
        std::sync::Arc::new(store::metered::MeteredStore::new(store, &metrics));
    metrics.reloads.with_label_values(&["success"]);
    metrics.reloads.with_label_values(&["failure"]);
    metrics.config_loaded_at.set(clock.unix_seconds());

    let conf = ServerConf {
        threads: cfg.threads,
        grace_period_seconds: Some(cfg.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(cfg.shutdown_timeout.as_secs()),
        upstream_keepalive_pool_size: cfg.upstream.pool_size,
        ..ServerConf::default()
    };
    let listen = cfg.listen.to_string();
    let tls = cfg.tls.clone();
    let admin_listen = cfg.admin_listen.to_string();
    let probe_listen = cfg.probe_listen.map(|a| a.to_string());
    tracing::info!(
        listen = %listen,
        tls = tls.is_some(),
        admin = %admin_listen,
        probes = probe_listen.as_deref().unwrap_or("-"),
        threads = cfg.threads,
        upstream = %cfg.upstream.address,
        store = store.backend(),
        routes = cfg.routes.routes().len(),
        "payguard starting"
    );

    let state = Arc::new(SharedState::new(cfg, path.to_path_buf(), store, clock, metrics));
    let reloader = Arc::new(Reloader::new(state.clone(), &text, secret_files));

    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let limits = state.config().connections;
    let mut proxy = Service::new(
        "payguard proxy".to_string(),
        Limited::new(
            pingora::proxy::http_proxy(&server.configuration, PayguardProxy::new(state.clone())),
            limits,
            state.metrics.clone(),
        ),
    );
    match &tls {
        Some(tls) => proxy.add_tls_with_settings(&listen, None, tls.settings()),
        None => proxy.add_tcp(&listen),
    }

    let mut admin = Service::new(
        "payguard admin".to_string(),
        AdminApp::new(state.clone(), reloader.clone()),
    );
    admin.threads = Some(1);
    admin.add_tcp(&admin_listen);

    let health = background_service("payguard store health", StoreHealthService { state: state.clone() });
    let certificates = background_service(
        "payguard platform certificates",
        crate::egress::certificates::CertificateService { state: state.clone() },
    );
    let orders = background_service(
        "payguard order queries",
        crate::orders::OrderQueryService { state: state.clone() },
    );
    let reload = background_service(
        "payguard reload",
        ReloadService {
            reloader,
            state: state.clone(),
        },
    );

    server.add_service(proxy);
    server.add_service(admin);
    if let Some(probe_listen) = &probe_listen {
        let mut probes = Service::new("payguard probes".to_string(), AdminApp::probes(state));
        probes.threads = Some(1);
        probes.add_tcp(probe_listen);
        server.add_service(probes);
    }
    server.add_service(health);
    server.add_service(certificates);
    server.add_service(orders);
    server.add_service(reload);
    server.run(RunArgs::default());
    drop(control);
    Ok(())
}
