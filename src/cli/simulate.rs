//! `payguard simulate CHANNEL`: build a valid notification from test keys and send it, or print
//! it. The channel files do the protocol work (`registry::simulate`); this file
//! only turns flags into a [`SimulateSpec`]/[`SimulateKeys`], optionally tampers, and does I/O.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt as _, Full};
use jiff::Timestamp;

use crate::channels::amount::{currency_exponent, format_minor, parse_decimal_minor};
use crate::channels::{
    registry, ChannelKind, EventKind, SimulateInput, SimulateKeys, SimulateSpec, SimulatedNotification,
};

/// Flags of `payguard simulate`.
#[derive(Debug, Args)]
pub(crate) struct SimulateArgs {
    /// Channel protocol: its name under `channel:` in the config, e.g. `stripe` (an unknown name
    /// lists them all).
    #[arg(value_parser = parse_channel)]
    pub(crate) channel: ChannelKind,
    /// Where to POST the notification, e.g. http://127.0.0.1:8080/notify/stripe (plain HTTP).
    #[arg(long, required_unless_present_any = ["print", "headers_out", "body_out"])]
    pub(crate) to: Option<String>,
    /// Merchant order number (default: a fresh `sim-…` number).
    #[arg(long)]
    pub(crate) out_trade_no: Option<String>,
    /// Order amount as decimal text in major units, e.g. 88.80.
    #[arg(long, default_value = "88.80")]
    pub(crate) amount: String,
    /// ISO 4217 currency of `--amount`.
    #[arg(long, default_value = "CNY")]
    pub(crate) currency: String,
    /// Event to produce: payment.succeeded, payment.pending, payment.closed, payment.failed,
    /// refund.succeeded, refund.closed, refund.abnormal (each channel supports a subset).
    #[arg(long, default_value = "payment.succeeded", value_parser = parse_kind)]
    pub(crate) kind: EventKind,
    /// Merchant refund number for refund kinds (default: `<out_trade_no>-R1`).
    #[arg(long)]
    pub(crate) refund_no: Option<String>,
    /// Refund amount as decimal text (default: the whole `--amount`).
    #[arg(long)]
    pub(crate) refund_amount: Option<String>,
    /// Channel transaction id (default: a fresh one in the channel's style).
    #[arg(long)]
    pub(crate) txn_id: Option<String>,
    /// Channel notification / event id (default: a fresh one in the channel's style).
    #[arg(long)]
    pub(crate) event_id: Option<String>,
    /// App id to put in the notification (Alipay `app_id`, WeChat `appid`).
    #[arg(long)]
    pub(crate) app_id: Option<String>,
    /// Merchant id to put in the notification, e.g. WeChat `mchid`/`mch_id`, UnionPay `merId`,
    /// Alipay `seller_id` (docs/channels.md says what each channel calls it).
    #[arg(long)]
    pub(crate) mch_id: Option<String>,
    /// PEM private key that signs, PKCS#8 or PKCS#1, RSA-2048 or larger (Alipay app key in the
    /// sandbox, WeChat v3 platform key, UnionPay signing key).
    #[arg(long)]
    pub(crate) private_key: Option<PathBuf>,
    /// PEM certificate of the signing key (UnionPay `signPubKeyCert`; for WeChat v3 its serial
    /// is the default `--key-id`).
    #[arg(long)]
    pub(crate) certificate: Option<PathBuf>,
    /// WeChat Pay v3 `Wechatpay-Serial`: platform certificate serial or `PUB_KEY_ID_…`.
    #[arg(long)]
    pub(crate) key_id: Option<String>,
    /// Shared secret of an HMAC channel, e.g. a Stripe or Standard Webhooks `whsec_…` or the
    /// WeChat Pay v2 API key (docs/channels.md says which one each channel takes).
    #[arg(long, conflicts_with = "secret_env")]
    pub(crate) secret: Option<String>,
    /// Name of an environment variable holding `--secret`.
    #[arg(long)]
    pub(crate) secret_env: Option<String>,
    /// WeChat Pay v3 APIv3 key (32 characters) that encrypts the resource.
    #[arg(long, conflicts_with = "api_v3_key_env")]
    pub(crate) api_v3_key: Option<String>,
    /// Name of an environment variable holding `--api-v3-key`.
    #[arg(long)]
    pub(crate) api_v3_key_env: Option<String>,
    /// Signing instant as unix seconds (default: now).
    #[arg(long)]
    pub(crate) at: Option<i64>,
    /// Send the identical notification N more times (a channel retrying).
    #[arg(long, default_value_t = 0)]
    pub(crate) duplicate: u32,
    /// Change one byte of the signed body after signing, so verification must fail.
    #[arg(long)]
    pub(crate) tamper: bool,
    /// Print the request instead of sending it: `Name: value` header lines, a blank line, then
    /// the exact body bytes.
    #[arg(long)]
    pub(crate) print: bool,
    /// Write the header lines to FILE (for `curl -H @FILE` and `verify-notify --headers`).
    #[arg(long)]
    pub(crate) headers_out: Option<PathBuf>,
    /// Write the exact body bytes to FILE (for `curl --data-binary @FILE` and
    /// `verify-notify --body`).
    #[arg(long)]
    pub(crate) body_out: Option<PathBuf>,
    /// Per-request timeout.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Duration,
}

fn parse_channel(text: &str) -> Result<ChannelKind, String> {
    ChannelKind::from_name(text).ok_or_else(|| {
        let names: Vec<&str> = ChannelKind::ALL.iter().map(|k| k.as_str()).collect();
        format!("one of {}", names.join(", "))
    })
}

fn parse_kind(text: &str) -> Result<EventKind, String> {
    serde_json::from_value(serde_json::Value::String(text.to_string())).map_err(|_| {
        "one of payment.succeeded, payment.pending, payment.closed, payment.failed, refund.succeeded, \
         refund.closed, refund.abnormal"
            .to_string()
    })
}

/// Runs `payguard simulate`.
pub(crate) fn run(args: &SimulateArgs) -> anyhow::Result<()> {
    let spec = spec_from(args)?;
    let keys = keys_from(args)?;
    let mut notification = registry::simulate(args.channel, &spec, &keys).map_err(|e| anyhow::anyhow!(e))?;
    if args.tamper {
        let what = tamper(&mut notification.body, spec.amount_minor);
        eprintln!("tampered: {what}");
    }
    if let Some(path) = &args.headers_out {
        std::fs::write(path, header_lines(&notification)).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.body_out {
        std::fs::write(path, &notification.body).with_context(|| format!("writing {}", path.display()))?;
    }
    if args.print {
        let mut out = std::io::stdout().lock();
        out.write_all(header_lines(&notification).as_bytes())?;
        out.write_all(b"\n")?;
        out.write_all(&notification.body)?;
        out.flush()?;
    }
    match &args.to {
        Some(url) => send_all(url, &notification, 1 + args.duplicate, args.timeout),
        None => Ok(()),
    }
}

fn spec_from(args: &SimulateArgs) -> anyhow::Result<SimulateSpec> {
    let at = match args.at {
        Some(secs) => Timestamp::from_second(secs).context("--at is not a valid unix time")?,
        None => Timestamp::now(),
    };
    let currency = args.currency.to_ascii_uppercase();
    let exponent = currency_exponent(&currency);
    let amount_minor = parse_decimal_minor(&args.amount, exponent)
        .with_context(|| format!("--amount {} is not a {currency} amount", args.amount))?;
    // Fresh defaults per run, so two runs are two orders, while `--duplicate` resends one.
    let stamp = at.as_millisecond();
    let out_trade_no = args.out_trade_no.clone().unwrap_or_else(|| format!("sim-{stamp}"));
    let (out_refund_no, refund_amount_minor) = if args.kind.is_refund() {
        let amount = match &args.refund_amount {
            Some(text) => parse_decimal_minor(text, exponent)
                .with_context(|| format!("--refund-amount {text} is not a {currency} amount"))?,
            None => amount_minor,
        };
        let no = args.refund_no.clone().unwrap_or_else(|| format!("{out_trade_no}-R1"));
        (Some(no), Some(amount))
    } else {
        (args.refund_no.clone(), None)
    };
    let uuid = uuid::Uuid::new_v4().simple().to_string();
    let info = args.channel.info();
    let channel_txn_id = args.txn_id.clone().unwrap_or_else(|| info.simulated_txn_id(stamp));
    let notification_id = args
        .event_id
        .clone()
        .unwrap_or_else(|| info.simulated_notification_id(stamp, &uuid));
    Ok(SimulateSpec {
        out_trade_no,
        amount_minor,
        currency,
        kind: args.kind,
        out_refund_no,
        refund_amount_minor,
        channel_txn_id,
        at,
        notification_id,
        app_id: args.app_id.clone(),
        mch_id: args.mch_id.clone(),
    })
}

/// The flags a channel cannot do without, checked up front so the error names the flag.
fn required_flags(args: &SimulateArgs) -> Vec<String> {
    let has_secret = args.secret.is_some() || args.secret_env.is_some();
    let present = |input: SimulateInput| match input {
        SimulateInput::PrivateKey => args.private_key.is_some(),
        SimulateInput::Certificate => args.certificate.is_some(),
        SimulateInput::KeyIdOrCertificate => args.key_id.is_some() || args.certificate.is_some(),
        SimulateInput::Secret => has_secret,
        SimulateInput::ApiV3Key => args.api_v3_key.is_some() || args.api_v3_key_env.is_some(),
        SimulateInput::AppId => args.app_id.is_some(),
        SimulateInput::MchId => args.mch_id.is_some(),
    };
    args.channel
        .info()
        .simulate_needs
        .iter()
        .filter(|(input, _)| !present(*input))
        .map(|(input, hint)| {
            let flag = match input {
                SimulateInput::PrivateKey => "--private-key",
                SimulateInput::Certificate => "--certificate",
                SimulateInput::KeyIdOrCertificate => "--key-id (or --certificate)",
                SimulateInput::Secret => "--secret",
                SimulateInput::ApiV3Key => "--api-v3-key",
                SimulateInput::AppId => "--app-id",
                SimulateInput::MchId => "--mch-id",
            };
            if hint.is_empty() {
                flag.to_string()
            } else {
                format!("{flag} ({hint})")
            }
        })
        .collect()
}

fn keys_from(args: &SimulateArgs) -> anyhow::Result<SimulateKeys> {
    let missing = required_flags(args);
    if !missing.is_empty() {
        bail!("simulate {} needs {}", args.channel, missing.join(", "));
    }
    let read = |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let certificate_pem = args.certificate.as_deref().map(read).transpose()?;
    // A channel that announces its key by id takes the certificate's serial when no id is given.
    let id_from_certificate = args
        .channel
        .info()
        .simulate_needs
        .iter()
        .any(|(input, _)| *input == SimulateInput::KeyIdOrCertificate);
    let key_id = match (&args.key_id, &certificate_pem) {
        (Some(id), _) => Some(id.clone()),
        (None, Some(pem)) if id_from_certificate => Some(certificate_serial(pem)?),
        _ => None,
    };
    Ok(SimulateKeys {
        private_key_pem: args.private_key.as_deref().map(read).transpose()?,
        certificate_pem,
        key_id,
        secret: flag_or_env(&args.secret, &args.secret_env, "--secret-env")?.map(String::into_bytes),
        api_v3_key: flag_or_env(&args.api_v3_key, &args.api_v3_key_env, "--api-v3-key-env")?.map(String::into_bytes),
    })
}

fn flag_or_env(value: &Option<String>, env: &Option<String>, flag: &str) -> anyhow::Result<Option<String>> {
    match (value, env) {
        (Some(v), _) => Ok(Some(v.clone())),
        (None, Some(name)) => std::env::var(name)
            .map(Some)
            .with_context(|| format!("{flag}: environment variable {name} is not set")),
        (None, None) => Ok(None),
    }
}

/// Upper-case hex serial of the first certificate in `pem_text` (WeChat Pay v3 announces the
/// platform certificate by it).
fn certificate_serial(pem_text: &str) -> anyhow::Result<String> {
    let block = pem::parse(pem_text.trim()).context("--certificate is not PEM")?;
    let (_, cert) = x509_parser::parse_x509_certificate(block.contents())
        .map_err(|_| anyhow::anyhow!("--certificate does not parse as X.509"))?;
    Ok(hex::encode_upper(cert.raw_serial()))
}

/// Changes one byte of the signed body, preferring a digit of the amount (the change an
/// attacker wants); falls back to a letter or digit in the middle (WeChat Pay v3 carries the
/// amount encrypted). Keeps the body well-formed so the failure is the signature, not parsing.
/// Returns what was changed.
fn tamper(body: &mut [u8], amount_minor: i64) -> String {
    let candidates = [format_minor(amount_minor, 2), amount_minor.to_string()];
    let at_amount = candidates
        .iter()
        .find_map(|text| find(body, text.as_bytes()).map(|i| (i, text.clone())));
    let (index, what) = match at_amount {
        Some((i, text)) => (i, format!("amount {text}")),
        None => {
            let middle = body.len() / 2;
            let i = (middle..body.len())
                .chain(0..middle)
                .find(|&i| body.get(i).is_some_and(u8::is_ascii_alphanumeric))
                .unwrap_or(middle);
            (i, "a byte of the body".to_string())
        }
    };
    if let Some(b) = body.get_mut(index) {
        let old = *b;
        *b = match old {
            b'0'..=b'8' | b'a'..=b'y' | b'A'..=b'Y' => old + 1,
            b'9' => b'1',
            b'z' => b'a',
            b'Z' => b'A',
            _ => old ^ 0x01,
        };
        return format!("{what}: byte {index} {:?} -> {:?}", old as char, *b as char);
    }
    "nothing (empty body)".to_string()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `Name: value` lines, `Content-Type` first, as `verify-notify --headers` and `curl -H @FILE`
/// read them.
pub(crate) fn header_lines(n: &SimulatedNotification) -> String {
    let mut out = format!("Content-Type: {}\n", n.content_type);
    for (name, value) in &n.headers {
        out.push_str(&format!("{name}: {value}\n"));
    }
    out
}

fn send_all(url: &str, n: &SimulatedNotification, times: u32, timeout: Duration) -> anyhow::Result<()> {
    let uri: http::Uri = url.parse().with_context(|| format!("--to {url} is not a URL"))?;
    if uri.scheme_str() != Some("http") {
        bail!("--to must be an http:// URL (payguard listens on plain HTTP behind the ingress)");
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<Full<Bytes>>();
        for attempt in 1..=times {
            let mut req = hyper::Request::post(uri.clone()).header("content-type", &n.content_type);
            for (name, value) in &n.headers {
                req = req.header(name.as_str(), value.as_str());
            }
            let req = req.body(Full::new(Bytes::from(n.body.clone())))?;
            let resp = tokio::time::timeout(timeout, client.request(req))
                .await
                .with_context(|| format!("#{attempt}: no answer within {timeout:?}"))?
                .with_context(|| format!("#{attempt}: sending to {url}"))?;
            let status = resp.status();
            let body = tokio::time::timeout(timeout, resp.into_body().collect())
                .await
                .with_context(|| format!("#{attempt}: body not complete within {timeout:?}"))?
                .with_context(|| format!("#{attempt}: reading the answer"))?
                .to_bytes();
            let body = String::from_utf8_lossy(&body);
            let body = body.trim_end();
            if body.is_empty() {
                println!("#{attempt} {status}");
            } else {
                println!("#{attempt} {status} {body}");
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tamper_changes_exactly_one_amount_digit() {
        let mut body = b"total_amount=88.80&trade_no=1".to_vec();
        let what = tamper(&mut body, 8880);
        assert_eq!(body, b"total_amount=98.80&trade_no=1");
        assert!(what.starts_with("amount 88.80"), "{what}");
    }

    #[test]
    fn tamper_without_visible_amount_changes_one_alphanumeric_byte() {
        let original = br#"{"ciphertext":"QUJDRA=="}"#.to_vec();
        let mut body = original.clone();
        tamper(&mut body, 8880);
        let changed: Vec<usize> = (0..body.len()).filter(|&i| body[i] != original[i]).collect();
        assert_eq!(changed.len(), 1);
        assert!(body[changed[0]].is_ascii_alphanumeric());
    }

    #[test]
    fn header_lines_put_content_type_first() {
        let n = SimulatedNotification {
            headers: vec![("Stripe-Signature".into(), "t=1,v1=ab".into())],
            content_type: "application/json".into(),
            body: Vec::new(),
        };
        assert_eq!(
            header_lines(&n),
            "Content-Type: application/json\nStripe-Signature: t=1,v1=ab\n"
        );
    }
}
