//! Command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod reconcile;
pub mod sign;
pub mod simulate;
pub(crate) mod verify_notify;

/// payguard: payment-security sidecar.
#[derive(Debug, Parser)]
#[command(
    name = "payguard",
    version,
    about = "Payment-security sidecar: signed client calls, rate and order rules, verified payment notifications"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve: proxy listener + admin listener; reload on SIGHUP and on file change.
    Run {
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Validate a configuration without serving; prints every error with its key path.
    Check {
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
        /// Lint without the deployment's secrets: `env:` and `file:` references are not read and
        /// the upstream host is not resolved (for CI); everything else is checked.
        #[arg(long)]
        offline: bool,
    },
    /// Print the JSON Schema of the configuration file.
    Schema,
    /// Compute the client signature headers (PG-HMAC-SHA256) for a request.
    Sign(sign::SignArgs),
    /// Run payguard on loopback with the embedded store and a built-in demo backend, send
    /// requests through it and show what happened.
    Demo {
        /// Configuration to run (its upstream address is where the demo backend listens).
        #[arg(short, long, default_value = "config/dev.yaml")]
        config: PathBuf,
        /// Exit after the walkthrough instead of serving until Ctrl-C.
        #[arg(long)]
        once: bool,
    },
    /// Build a correctly signed (for WeChat Pay v3 also encrypted) notification from test keys
    /// and send it to a URL, or print it.
    Simulate(Box<simulate::SimulateArgs>),
    /// Check one saved notification offline against the channel of a notify route.
    VerifyNotify(verify_notify::VerifyNotifyArgs),
    /// Reconcile a merchant account's daily bill against the events payguard delivered (asks
    /// the running payguard); exits 1 when anything is unreconciled.
    Reconcile(reconcile::ReconcileArgs),
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::listener_tls::install_crypto_provider();
    match cli.command {
        Command::Run { config } => match crate::server::serve(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("payguard: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Check { config, offline: false } => check(&config),
        Command::Check { config, offline: true } => check_offline(&config),
        Command::Sign(args) => match sign::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("payguard sign: {e}");
                ExitCode::from(2)
            }
        },
        Command::Demo { config, once } => match crate::demo::run(&config, once) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("payguard demo: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Simulate(args) => match simulate::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("payguard simulate: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::VerifyNotify(args) => verify_notify::run(&args),
        Command::Reconcile(args) => reconcile::run(&args),
        Command::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&crate::config::schema_json()).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
    }
}

fn print_issues(path: &std::path::Path, issues: &crate::issue::ConfigIssues) -> ExitCode {
    eprintln!(
        "{}: {} error{}",
        path.display(),
        issues.0.len(),
        if issues.0.len() == 1 { "" } else { "s" }
    );
    for issue in &issues.0 {
        eprintln!("  {issue}");
    }
    ExitCode::from(1)
}

fn check_offline(path: &std::path::Path) -> ExitCode {
    match crate::config::load::load_file_offline(path) {
        Ok(file) => {
            println!(
                "{}: OK (offline: env: and file: secrets not read, upstream not resolved)",
                path.display()
            );
            println!("  store          : {}", file.store.summary());
            println!("  routes         : {}", file.routes.len());
            ExitCode::SUCCESS
        }
        Err(issues) => print_issues(path, &issues),
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match crate::config::load_file(path) {
        Ok((file, cfg)) => {
            println!("{}: OK", path.display());
            println!(
                "  proxy listener : {} ({} threads{})",
                cfg.listen,
                cfg.threads,
                if cfg.tls.is_some() { ", TLS" } else { "" }
            );
            println!(
                "  admin listener : {}{}",
                cfg.admin_listen,
                if cfg.admin_token.is_some() { " (token set)" } else { "" }
            );
            println!("  upstream       : {}", cfg.upstream.address);
            println!("  store          : {}", cfg.store.summary());
            if let Some(g) = &file.guard {
                let keys = g.signature.as_ref().map_or(0, |s| s.keys.len());
                println!(
                    "  guard          : {} signing key(s), {} rate rule(s), {} order rule(s), {} allow / {} deny CIDR(s)",
                    keys,
                    g.rate_rules.len(),
                    g.order_rules.len(),
                    g.ip.allow.len(),
                    g.ip.deny.len()
                );
            }
            println!("  routes         : {}", cfg.routes.routes().len());
            for r in cfg.routes.routes() {
                let methods = if r.methods.is_empty() {
                    "*".to_string()
                } else {
                    r.methods.join(",")
                };
                let path = match &r.path {
                    crate::proxy::routes::PathMatch::Exact(p) => p.clone(),
                    crate::proxy::routes::PathMatch::Prefix(p) => format!("{p}/**"),
                };
                let policy = match (&r.policy, &r.notify) {
                    (_, Some(n)) => {
                        let keys = n
                            .merchant
                            .as_ref()
                            .map(|m| format!(", merchant {m}"))
                            .unwrap_or_default();
                        format!(
                            "notify ({}{keys}, {})",
                            n.channel.kind(),
                            format!("{:?}", n.forward).to_lowercase()
                        )
                    }
                    (p, None) => format!("{p:?}").to_lowercase(),
                };
                println!("    {:<20} {:<12} {:<30} {}", r.name, methods, path, policy);
            }
            for account in &cfg.query_accounts {
                let schedule: Vec<String> = account
                    .tracking
                    .config
                    .schedule
                    .iter()
                    .map(|d| humantime::format_duration(*d).to_string())
                    .collect();
                println!(
                    "  order query    : {} at {} after creation, recovered events to route {}",
                    account.link.name,
                    schedule.join(", "),
                    account.link.route_name
                );
            }
            for link in &cfg.reconcile_accounts {
                println!(
                    "  reconcile      : {} ({} daily bill), missing events to route {}",
                    link.name,
                    link.merchant.channel(),
                    link.route_name
                );
            }
            if !cfg.warnings.is_empty() {
                println!(
                    "{} warning{}:",
                    cfg.warnings.len(),
                    if cfg.warnings.len() == 1 { "" } else { "s" }
                );
                for w in &cfg.warnings {
                    println!("  warning: {w}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(issues) => print_issues(path, &issues),
    }
}
