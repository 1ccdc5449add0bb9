//! Writes signed payment notifications for load tests, one per line, for the wrk script
//! `scripts/bench/requests.lua`: `Header: value` fields then the raw body, separated by tabs.
//!
//! Usage: `bench_stripe_notifications CHANNEL_SECRET COUNT PREFIX > notifications.tsv`
//! Stripe `payment_intent.succeeded` events signed now with `CHANNEL_SECRET` (`whsec_…`), each
//! with its own event id and order number `PREFIX-<n>` so every line is a distinct
//! notification for dedup (COUNT=1 gives the duplicate-only input). Timestamps are "now": use the
//! file within Stripe's 5-minute tolerance.

use std::io::{BufWriter, Write};

use payguard::channels::{registry, ChannelKind, EventKind, SimulateKeys, SimulateSpec};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bench_stripe_notifications CHANNEL_SECRET COUNT PREFIX";
    let secret = args.next().ok_or(usage)?;
    let count: u64 = args.next().ok_or(usage)?.parse()?;
    let prefix = args.next().ok_or(usage)?;
    let keys = SimulateKeys {
        secret: Some(secret.into_bytes()),
        ..SimulateKeys::default()
    };
    let at = jiff::Timestamp::now();
    let mut out = BufWriter::new(std::io::stdout().lock());
    for n in 0..count {
        let spec = SimulateSpec {
            out_trade_no: format!("{prefix}-{n}"),
            amount_minor: 8880,
            currency: "usd".into(),
            kind: EventKind::PaymentSucceeded,
            out_refund_no: None,
            refund_amount_minor: None,
            channel_txn_id: format!("pi_{prefix}_{n}"),
            at,
            notification_id: format!("evt_{prefix}_{n}"),
            app_id: None,
            mch_id: None,
        };
        let note = registry::simulate(ChannelKind::Stripe, &spec, &keys)?;
        if note.body.iter().any(|b| matches!(b, b'\t' | b'\n' | b'\r')) {
            return Err("body contains a tab or newline; the line format cannot carry it".into());
        }
        write!(out, "Content-Type: {}", note.content_type)?;
        for (name, value) in &note.headers {
            write!(out, "\t{name}: {value}")?;
        }
        out.write_all(b"\t")?;
        out.write_all(&note.body)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}
