//! `payguard reconcile`: asks a running payguard (its admin listener, `POST /admin/reconcile`)
//! to reconcile one account's daily bill, prints the report, and exits 0 when the day is
//! reconciled, 1 when something is not, 2 when no report could be made. The running payguard
//! does the work because it holds the store (with the embedded store, the ledger lives in its
//! memory) and the channel keys; this command needs only the admin token.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};

/// Arguments of `payguard reconcile`.
#[derive(Debug, clap::Args)]
pub struct ReconcileArgs {
    /// The merchant account (its name under `merchants:`).
    #[arg(long)]
    account: String,
    /// The bill's day, `YYYY-MM-DD` in Beijing time (default: yesterday there).
    #[arg(long)]
    date: Option<String>,
    /// Deliver what the channel has and payguard never delivered, through the dedup path.
    #[arg(long)]
    forward_missing: bool,
    /// Report format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// The configuration of the running payguard: its admin listener and `admin.token`.
    #[arg(short, long, required_unless_present = "admin", conflicts_with = "admin")]
    config: Option<PathBuf>,
    /// The admin listener's URL instead (`http://payguard-admin:9464`); the token is read from
    /// the environment variable `--token-env`.
    #[arg(long)]
    admin: Option<String>,
    /// The environment variable holding the admin token, with `--admin`.
    #[arg(long, default_value = "PAYGUARD_ADMIN_TOKEN")]
    token_env: String,
    /// How long to wait for the report.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Json,
}

/// Runs `payguard reconcile`.
pub fn run(args: &ReconcileArgs) -> ExitCode {
    match report(args) {
        Ok(reconciled) if reconciled => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("payguard reconcile: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Yesterday in Beijing time.
fn yesterday() -> String {
    let yesterday = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24);
    crate::channels::beijing_time::beijing_format(yesterday, "%Y-%m-%d")
}

/// The admin URL and token.
fn target(args: &ReconcileArgs) -> anyhow::Result<(String, String)> {
    if let Some(url) = &args.admin {
        let token = std::env::var(&args.token_env)
            .with_context(|| format!("the admin token: environment variable {} is not set", args.token_env))?;
        return Ok((url.trim_end_matches('/').to_string(), token));
    }
    let path = args.config.as_ref().context("give --config or --admin")?;
    let (_, cfg) = crate::config::load_file(path).map_err(|issues| {
        let listed: Vec<String> = issues.0.iter().map(|i| i.to_string()).collect();
        anyhow::anyhow!("{}: {}", path.display(), listed.join("; "))
    })?;
    let token = cfg
        .admin_token
        .as_ref()
        .context("the configuration sets no admin token (`admin.token`): the reconcile endpoint needs one")?
        .expose_str()
        .map_err(anyhow::Error::msg)?
        .to_string();
    let mut addr = cfg.admin_listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    Ok((format!("http://{addr}"), token))
}

/// Fetches and prints the report; whether the day is reconciled.
fn report(args: &ReconcileArgs) -> anyhow::Result<bool> {
    let date = args.date.clone().unwrap_or_else(yesterday);
    if !crate::orders::is_date(&date) {
        bail!("--date {date:.40} is not a day as YYYY-MM-DD");
    }
    let (base, token) = target(args)?;
    let url = format!("{base}/admin/reconcile");
    let uri: http::Uri = url.parse().with_context(|| format!("{url} is not a URL"))?;
    if uri.scheme_str() != Some("http") {
        bail!("--admin must be an http:// URL (the admin listener serves plain HTTP)");
    }
    let body = serde_json::json!({
        "merchant": args.account,
        "date": date,
        "forward_missing": args.forward_missing,
    })
    .to_string();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (status, answer) = rt.block_on(async {
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<Full<Bytes>>();
        let req = hyper::Request::post(uri)
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::from(body)))?;
        let exchange = async {
            let resp = client.request(req).await.with_context(|| format!("sending to {url}"))?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .context("reading the answer")?
                .to_bytes();
            anyhow::Ok((status, body))
        };
        tokio::time::timeout(args.timeout, exchange)
            .await
            .with_context(|| format!("no report within {:?}", args.timeout))?
    })?;
    let value: serde_json::Value =
        serde_json::from_slice(&answer).with_context(|| format!("{url} answered {status} without JSON"))?;
    if !status.is_success() {
        let error = value
            .get("error")
            .and_then(|e| e.as_str())
            .unwrap_or("(no reason given)");
        bail!("{status}: {error}");
    }
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&value)?),
        Format::Table => print!("{}", table(&value)),
    }
    Ok(value.get("reconciled").and_then(|v| v.as_bool()) == Some(true))
}

fn money(v: &serde_json::Value) -> String {
    v.as_i64()
        .map(|m| crate::channels::amount::format_minor(m, 2))
        .unwrap_or_else(|| "-".into())
}

fn plural(n: u64, one: &str) -> String {
    format!("{n} {one}{}", if n == 1 { "" } else { "s" })
}

/// The report as text: a summary line per side, then one line per finding.
fn table(r: &serde_json::Value) -> String {
    let s = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    let n = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
    let side = |v: &serde_json::Value| {
        format!(
            "{} {}, {} {}",
            plural(n(v, "payments"), "payment"),
            money(&v["payment_total_minor"]),
            plural(n(v, "refunds"), "refund"),
            money(&v["refund_total_minor"]),
        )
    };
    let mut out = format!(
        "{} {} ({})\n  bill      : {}\n  delivered : {}\n  matched   : {}\n",
        s(r, "merchant"),
        s(r, "date"),
        s(r, "channel"),
        side(&r["bill"]),
        side(&r["delivered"]),
        n(r, "matched"),
    );
    let findings = r["findings"].as_array().cloned().unwrap_or_default();
    for f in &findings {
        let number = match f.get("out_refund_no").and_then(|x| x.as_str()) {
            Some(refund) => format!("{} refund {refund}", s(f, "out_trade_no")),
            None => s(f, "out_trade_no"),
        };
        let mut line = format!("  {:<16} {:<8} {}", s(f, "problem"), s(f, "kind"), number);
        if f.get("bill_amount_minor").is_some() {
            line += &format!("  bill {}", money(&f["bill_amount_minor"]));
        }
        if f.get("delivered_kind").is_some() {
            line += &format!(
                "  delivered {} {}",
                s(f, "delivered_kind"),
                money(&f["delivered_amount_minor"])
            );
        }
        if let Some(forwarded) = f.get("forwarded").and_then(|x| x.as_str()) {
            line += &format!("  forwarded: {forwarded}");
        }
        out += &line;
        out.push('\n');
    }
    let verdict = if r["reconciled"].as_bool() == Some(true) {
        if findings.is_empty() {
            "reconciled".to_string()
        } else {
            format!(
                "reconciled: every missing event is now delivered ({})",
                plural(findings.len() as u64, "finding")
            )
        }
    } else {
        format!("unreconciled: {}", plural(findings.len() as u64, "finding"))
    };
    out += &verdict;
    out.push('\n');
    out
}
