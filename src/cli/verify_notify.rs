//! `payguard verify-notify`: check one saved notification offline against the channel configured
//! on a notify route, exactly as the proxy would (same verifier, same event id), and say why it
//! fails. For notifications copied from logs or captured with `curl -D`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::Args;
use http::{HeaderMap, HeaderName, HeaderValue};
use jiff::Timestamp;

use crate::channels::NotifyRequest;
use crate::notify::EventKeys;

/// Flags of `payguard verify-notify`.
#[derive(Debug, Args)]
pub(crate) struct VerifyNotifyArgs {
    /// Configuration file holding the route.
    #[arg(short, long)]
    pub(crate) config: PathBuf,
    /// Name of the `notify` route whose channel checks the notification.
    #[arg(long)]
    pub(crate) route: String,
    /// Headers file: `Name: value` lines (as `curl -D` or `simulate --headers-out` write them).
    #[arg(long, required_unless_present = "request", requires = "body")]
    pub(crate) headers: Option<PathBuf>,
    /// Body file: the exact raw body bytes.
    #[arg(long, required_unless_present = "request")]
    pub(crate) body: Option<PathBuf>,
    /// One file with header lines, a blank line, then the body (what `simulate --print` writes).
    #[arg(long, conflicts_with_all = ["headers", "body"])]
    pub(crate) request: Option<PathBuf>,
    /// Verify as of this unix time (default: now). Timestamp windows and certificate validity
    /// are judged at this instant.
    #[arg(long)]
    pub(crate) at: Option<i64>,
}

/// Runs `payguard verify-notify`: exit 0 and the normalized event when it verifies, exit 1 and
/// the reason when it does not, exit 2 when the inputs cannot be read.
pub(crate) fn run(args: &VerifyNotifyArgs) -> ExitCode {
    match verify(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("payguard verify-notify: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn verify(args: &VerifyNotifyArgs) -> anyhow::Result<ExitCode> {
    let (_, cfg) = crate::config::load_file(&args.config).map_err(|issues| {
        let lines: Vec<String> = issues.0.iter().map(|i| format!("  {i}")).collect();
        anyhow::anyhow!("{} does not load:\n{}", args.config.display(), lines.join("\n"))
    })?;
    let route = cfg
        .routes
        .routes()
        .iter()
        .find(|r| r.name == args.route)
        .with_context(|| format!("no route named {} in {}", args.route, args.config.display()))?;
    let notify = route
        .notify
        .as_ref()
        .with_context(|| format!("route {} is not a notify route", args.route))?;
    let (headers, body) = match (&args.request, &args.headers, &args.body) {
        (Some(path), _, _) => split_request(&read(path)?),
        (None, Some(h), Some(b)) => (read(h)?, read(b)?),
        _ => bail!("give --headers and --body, or --request"),
    };
    let headers = parse_header_lines(&headers)?;
    let now = match args.at {
        Some(secs) => Timestamp::from_second(secs).context("--at is not a valid unix time")?,
        None => Timestamp::now(),
    };
    let channel = &notify.channel;
    let req = NotifyRequest {
        headers: &headers,
        body: &body,
    };
    match channel.verify(&req, now) {
        Ok(event) => {
            let keys = EventKeys::of(&event, &body);
            eprintln!(
                "verified: {} {} for order {} on route {} at {now}",
                event.channel,
                event.kind.as_str(),
                event.out_trade_no,
                args.route
            );
            // The same JSON the backend would receive in normalized mode.
            let mut json = serde_json::to_value(&event)?;
            if let Some(obj) = json.as_object_mut() {
                obj.insert("id".into(), keys.event_id.into());
                obj.insert("received_at".into(), now.to_string().into());
            }
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = writeln!(std::io::stdout().lock(), "{}", serde_json::to_string_pretty(&json)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("rejected ({}): {e}", e.outcome());
            let ack = channel.rejection_ack(&e);
            eprintln!(
                "payguard would answer {} {}",
                ack.status,
                String::from_utf8_lossy(&ack.body).trim_end()
            );
            Ok(ExitCode::from(1))
        }
    }
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// Splits `headers \n\n body` (CRLF or LF) at the first blank line after the header lines.
fn split_request(text: &[u8]) -> (Vec<u8>, Vec<u8>) {
    // The earliest blank line wins: a body may itself contain CRLF CRLF (UnionPay certificates).
    let crlf = text.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (i, 4));
    let lf = text.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    match [crlf, lf].into_iter().flatten().min() {
        Some((i, len)) => (
            text.get(..i).unwrap_or_default().to_vec(),
            text.get(i + len..).unwrap_or_default().to_vec(),
        ),
        None => (text.to_vec(), Vec::new()),
    }
}

/// Parses `Name: value` lines. An `HTTP/…` status or request line and blank lines are skipped,
/// so a `curl -D` dump works as is; repeated names are kept (the verifiers refuse ambiguity).
pub(crate) fn parse_header_lines(text: &[u8]) -> anyhow::Result<HeaderMap> {
    let text = std::str::from_utf8(text).context("headers file is not UTF-8")?;
    let mut headers = HeaderMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with("HTTP/") || line.starts_with("POST ") {
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .with_context(|| format!("headers line {} has no `:`", n + 1))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .with_context(|| format!("headers line {}: bad header name", n + 1))?;
        let value =
            HeaderValue::from_str(value.trim()).with_context(|| format!("headers line {}: bad header value", n + 1))?;
        headers.append(name, value);
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curl_dump_status_line_and_blank_lines_are_skipped() {
        let h = parse_header_lines(b"HTTP/1.1 200 OK\r\nStripe-Signature: t=1,v1=ab\r\n\r\nX-A: 1\n").unwrap();
        assert_eq!(h.get("stripe-signature").unwrap(), "t=1,v1=ab");
        assert_eq!(h.get("x-a").unwrap(), "1");
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn repeated_header_names_are_kept_for_the_verifier_to_refuse() {
        let h = parse_header_lines(b"webhook-id: a\nwebhook-id: b\n").unwrap();
        assert_eq!(h.get_all("webhook-id").iter().count(), 2);
    }

    #[test]
    fn line_without_colon_is_an_error() {
        assert!(parse_header_lines(b"not a header\n").is_err());
    }

    #[test]
    fn request_file_splits_at_first_blank_line_keeping_body_bytes() {
        let (h, b) = split_request(b"A: 1\nB: 2\n\nbody\n\nmore");
        assert_eq!(h, b"A: 1\nB: 2");
        assert_eq!(b, b"body\n\nmore");
    }
}
