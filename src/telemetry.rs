//! Logging setup: `tracing`, JSON lines by default, human-readable text on request, always on
//! stdout (where container runtimes and log shippers read a process's log). Pingora's own `log`
//! records are bridged into the same output.
//!
//! Lines go to a shared buffer that a writer thread of its own writes in batches
//! ([`crate::log_writer`]): no request thread waits on a `write` system call or wakes a thread
//! per line, and under load one call carries hundreds of lines. Nothing is dropped: when the
//! buffer is full a request thread waits for room (it never is, short of a stalled stdout), and
//! the buffer is flushed when payguard stops ([`LogGuard`]).
//!
//! The access log — one line per request — is formatted here directly in JSON mode, with the
//! same layout `tracing-subscriber` gives every other line but without its generic field
//! machinery, which cost a tenth of a `pass` request's CPU.

use std::cell::RefCell;
use std::io::IsTerminal;
use std::sync::OnceLock;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tracing_subscriber::{fmt, EnvFilter};

use crate::log_writer::{FlushGuard, LogWriter};

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// Human-readable lines.
    Text,
}

/// Flushes every queued log line when dropped; keep it until the process ends.
#[must_use = "dropping it flushes and stops the log writer"]
pub(crate) struct LogGuard(#[allow(dead_code)] Option<FlushGuard>);

/// The shared writer, when JSON access lines are written directly.
static JSON_ACCESS: OnceLock<LogWriter> = OnceLock::new();

/// Installs the global subscriber. `RUST_LOG` overrides `level`. Safe to call once per process;
/// later calls install nothing. Colours only when stdout is a terminal: escape codes in a log
/// file or a log pipeline are noise that breaks searching.
pub(crate) fn init(format: LogFormat, level: &str) -> LogGuard {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let Ok((writer, guard)) = crate::log_writer::start(std::io::stdout()) else {
        return LogGuard(None);
    };
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(writer.clone())
        .with_ansi(std::io::stdout().is_terminal());
    let installed = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if installed.is_err() {
        return LogGuard(None);
    }
    if format == LogFormat::Json {
        let _ = JSON_ACCESS.set(writer);
    }
    LogGuard(Some(guard))
}

/// One access-log line (`target: payguard::access`, message `request`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AccessLine<'a> {
    /// Request id.
    pub(crate) request_id: &'a str,
    /// Route name.
    pub(crate) route: &'a str,
    /// Method.
    pub(crate) method: &'a str,
    /// Canonical path.
    pub(crate) path: &'a str,
    /// The path as sent, when payguard rewrote or refused it.
    pub(crate) sent_path: Option<&'a str>,
    /// Status answered (0 when none was).
    pub(crate) status: u16,
    /// Outcome label.
    pub(crate) outcome: &'a str,
    /// Problem code of a rejection.
    pub(crate) code: Option<&'a str>,
    /// Whole-request latency.
    pub(crate) latency_ms: f64,
    /// Pingora error type, when the request failed.
    pub(crate) error: Option<&'a str>,
    /// The client's address (after `trusted_proxies`).
    pub(crate) client_ip: Option<&'a str>,
    /// `User-Agent`, cut like the path.
    pub(crate) user_agent: Option<&'a str>,
    /// Response body bytes sent to the client.
    pub(crate) bytes_sent: usize,
    /// W3C trace id.
    pub(crate) trace_id: Option<&'a str>,
    /// Access key id of a signed request.
    pub(crate) access_key: Option<&'a str>,
    /// The enforced guard rule that refused, challenged or tagged the request.
    pub(crate) rule: Option<&'a str>,
    /// The backend's status, when it answered.
    pub(crate) upstream_status: Option<u16>,
    /// The backend's response-header latency, when it answered.
    pub(crate) upstream_latency_ms: Option<f64>,
}

/// Writes `line` to the access log. Returns `false` when it was not written here and should go
/// through `tracing` (text format, or logging not set up by [`init`]); `true` also when the
/// access log is filtered out.
pub(crate) fn access(line: &AccessLine<'_>) -> bool {
    let Some(writer) = JSON_ACCESS.get() else {
        return false;
    };
    if !tracing::enabled!(target: "payguard::access", tracing::Level::INFO) {
        return true;
    }
    thread_local! {
        static BUF: RefCell<(String, i64, String)> = const { RefCell::new((String::new(), i64::MIN, String::new())) };
    }
    BUF.with(|cell| {
        let (buf, second, prefix) = &mut *cell.borrow_mut();
        buf.clear();
        let now = jiff::Timestamp::now();
        if now.as_second() != *second {
            *second = now.as_second();
            *prefix = now.strftime("%Y-%m-%dT%H:%M:%S").to_string();
        }
        use std::fmt::Write as _;
        let _ = write!(
            buf,
            r#"{{"timestamp":"{prefix}.{:06}Z","level":"INFO","message":"request","request_id":"#,
            now.subsec_microsecond()
        );
        push_json_str(buf, line.request_id);
        if let Some(trace_id) = line.trace_id {
            field(buf, "trace_id", trace_id);
        }
        field(buf, "route", line.route);
        field(buf, "method", line.method);
        field(buf, "path", line.path);
        if let Some(sent) = line.sent_path {
            field(buf, "sent_path", sent);
        }
        let _ = write!(buf, r#","status":{},"outcome":"#, line.status);
        push_json_str(buf, line.outcome);
        if let Some(code) = line.code {
            field(buf, "code", code);
        }
        let _ = write!(buf, r#","latency_ms":{}"#, line.latency_ms);
        if let Some(error) = line.error {
            field(buf, "error", error);
        }
        if let Some(ip) = line.client_ip {
            field(buf, "client_ip", ip);
        }
        if let Some(ua) = line.user_agent {
            field(buf, "user_agent", ua);
        }
        let _ = write!(buf, r#","bytes_sent":{}"#, line.bytes_sent);
        if let Some(key) = line.access_key {
            field(buf, "access_key", key);
        }
        if let Some(rule) = line.rule {
            field(buf, "rule", rule);
        }
        if let Some(status) = line.upstream_status {
            let _ = write!(buf, r#","upstream_status":{status}"#);
        }
        if let Some(ms) = line.upstream_latency_ms {
            let _ = write!(buf, r#","upstream_latency_ms":{ms}"#);
        }
        buf.push_str(",\"target\":\"payguard::access\"}\n");
        writer.append(buf.as_bytes());
    });
    true
}

fn field(buf: &mut String, name: &str, value: &str) {
    buf.push_str(",\"");
    buf.push_str(name);
    buf.push_str("\":");
    push_json_str(buf, value);
}

/// `value` as a JSON string (RFC 8259 escapes).
fn push_json_str(buf: &mut String, value: &str) {
    buf.push('"');
    for c in value.chars() {
        match c {
            '"' => buf.push_str("\\\""),
            '\\' => buf.push_str("\\\\"),
            '\n' => buf.push_str("\\n"),
            '\r' => buf.push_str("\\r"),
            '\t' => buf.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                use std::fmt::Write as _;
                let _ = write!(buf, "\\u{:04x}", c as u32);
            }
            c => buf.push(c),
        }
    }
    buf.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        let mut s = String::new();
        push_json_str(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(s, r#""a\"b\\c\nd\u0001é""#);
        let parsed: String = serde_json::from_str(&s).unwrap();
        assert_eq!(parsed, "a\"b\\c\nd\u{1}é");
    }
}
