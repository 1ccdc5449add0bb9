//! `payguard sign`: the client signature headers for one request.

use std::io::Read;
use std::path::PathBuf;

use clap::Args;

use crate::guard::signature::{new_nonce, sign_request};
use crate::secret::SecretRef;

/// Arguments of `payguard sign`.
#[derive(Debug, Args)]
pub(crate) struct SignArgs {
    /// HTTP method.
    #[arg(short = 'X', long, default_value = "GET")]
    pub(crate) method: String,
    /// Path and query, e.g. `/v1/orders?a=1`. The path is signed in canonical form (what payguard
    /// forwards); a path payguard would refuse is an error.
    #[arg(long)]
    pub(crate) path: String,
    /// Body: inline text, `@FILE`, or `@-` for standard input. Empty when absent.
    #[arg(short, long)]
    pub(crate) data: Option<String>,
    /// Access key id.
    #[arg(long)]
    pub(crate) key: String,
    /// The key's secret: `env:NAME` or `file:/path` (inline works but lands in shell history).
    #[arg(long)]
    pub(crate) secret: String,
    /// Unix timestamp to sign with (default: now).
    #[arg(long)]
    pub(crate) timestamp: Option<i64>,
    /// Nonce to sign with (default: a fresh random one).
    #[arg(long)]
    pub(crate) nonce: Option<String>,
    /// Print a ready `curl` command for this base URL (e.g. `http://127.0.0.1:8080`) instead of headers.
    #[arg(long)]
    pub(crate) curl: Option<String>,
}

/// Header names of the default scheme.
const HEADERS: [&str; 4] = ["X-PG-Key", "X-PG-Timestamp", "X-PG-Nonce", "X-PG-Signature"];

/// Computes and prints the headers (or a curl line). Errors never contain the secret.
pub(crate) fn run(args: &SignArgs) -> Result<(), String> {
    let secret = SecretRef::new(args.secret.clone())
        .resolve()
        .map_err(|e| format!("--secret: {e}"))?;
    let (body, body_arg): (Vec<u8>, Option<String>) = match args.data.as_deref() {
        None => (Vec::new(), None),
        Some("@-") => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| format!("reading standard input: {e}"))?;
            (buf, Some("@-".into()))
        }
        Some(d) if d.starts_with('@') => {
            let path = PathBuf::from(&d[1..]);
            let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            (bytes, Some(d.to_string()))
        }
        Some(d) => (d.as_bytes().to_vec(), Some(d.to_string())),
    };
    let method = args.method.to_ascii_uppercase();
    let (path, query) = match args.path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (args.path.as_str(), None),
    };
    // Clients sign the canonical path, the one payguard routes, checks and forwards.
    let canonical = crate::canonical::path::canonicalize(path.as_bytes(), &Default::default())
        .map_err(|e| format!("--path: payguard would refuse this path: {e}"))?;
    let path = canonical.as_str();
    if path != args.path.split('?').next().unwrap_or_default() {
        eprintln!("payguard sign: signing the canonical path {path} (payguard forwards this form)");
    }
    let timestamp = args
        .timestamp
        .unwrap_or_else(|| jiff::Timestamp::now().as_second())
        .to_string();
    let nonce = args.nonce.clone().unwrap_or_else(new_nonce);
    let signature = sign_request(secret.expose(), &method, path, query, &timestamp, &nonce, &body)
        .map_err(|e| format!("--path: {e}"))?;
    let values = [args.key.as_str(), &timestamp, &nonce, &signature];
    match &args.curl {
        None => {
            for (name, value) in HEADERS.iter().zip(values) {
                println!("{name}: {value}");
            }
        }
        Some(base) => {
            let target = match query {
                Some(q) => format!("{path}?{q}"),
                None => path.to_string(),
            };
            let mut line = format!("curl -sS -X {method} '{}{target}'", base.trim_end_matches('/'));
            for (name, value) in HEADERS.iter().zip(values) {
                line.push_str(&format!(" -H '{name}: {value}'"));
            }
            match body_arg {
                // `--data-binary` sends the bytes unchanged (plain `-d` would strip newlines).
                Some(d) if d.starts_with('@') => line.push_str(&format!(" --data-binary '{d}'")),
                Some(d) => line.push_str(&format!(" --data-binary '{}'", d.replace('\'', "'\\''"))),
                None => {}
            }
            println!("{line}");
        }
    }
    Ok(())
}
