//! Writes signed client calls (`PG-HMAC-SHA256`) for load tests, one per line, for the wrk script
//! `scripts/bench/requests.lua` (which POSTs any such line file): `Header: value` fields then the
//! raw body, separated by tabs.
//!
//! Usage: `bench_signed_orders KEY_ID SECRET PATH COUNT USERS > orders.tsv`
//! Every line has its own nonce (a replayed nonce would be refused) and a body for one of USERS
//! users, so per-user rules see many identities. Timestamps are "now": use the file within the
//! signature window.

use std::io::{BufWriter, Write};

use payguard::guard::signature::sign_request;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bench_signed_orders KEY_ID SECRET PATH COUNT USERS";
    let key = args.next().ok_or(usage)?;
    let secret = args.next().ok_or(usage)?;
    let path = args.next().ok_or(usage)?;
    let count: u64 = args.next().ok_or(usage)?.parse()?;
    let users: u64 = args.next().ok_or(usage)?.parse()?;
    let ts = jiff::Timestamp::now().as_second().to_string();
    let mut out = BufWriter::new(std::io::stdout().lock());
    for n in 0..count {
        let body = format!(
            r#"{{"user_id":"u-{}","sku":"tea-42","qty":2,"amount":"88.80"}}"#,
            n % users.max(1)
        );
        let nonce = format!("bench-{ts}-{n:012}");
        let sig = sign_request(secret.as_bytes(), "POST", &path, None, &ts, &nonce, body.as_bytes())?;
        writeln!(
            out,
            "Content-Type: application/json\tX-PG-Key: {key}\tX-PG-Timestamp: {ts}\tX-PG-Nonce: {nonce}\tX-PG-Signature: {sig}\t{body}"
        )?;
    }
    out.flush()?;
    Ok(())
}
