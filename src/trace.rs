//! W3C Trace Context (`traceparent`): a client's valid trace is kept and passed to the backend
//! unchanged; a request without one (or with an invalid or repeated one) gets a new trace, so
//! the access log's `trace_id` always joins payguard's log lines to the backend's spans.
//! payguard records no spans of its own in this version, so it does not add a hop to the trace.

use http::HeaderMap;

/// The `traceparent` header.
pub const TRACEPARENT: &str = "traceparent";
/// The `tracestate` header, meaningful only next to the `traceparent` it belongs to.
pub(crate) const TRACESTATE: &str = "tracestate";

/// The trace id of a valid `traceparent` value (W3C Trace Context level 1, version 00 or a later
/// version read by the version-00 rules), or `None`.
pub fn trace_id(value: &[u8]) -> Option<&str> {
    if value.len() < 55 || (value.len() > 55 && value[55] != b'-') {
        return None;
    }
    let version = &value[0..2];
    if !lower_hex(version) || version == b"ff" || (version == b"00" && value.len() != 55) {
        return None;
    }
    let (trace, parent, flags) = (&value[3..35], &value[36..52], &value[53..55]);
    let dashes = value[2] == b'-' && value[35] == b'-' && value[52] == b'-';
    let valid = dashes
        && lower_hex(trace)
        && lower_hex(parent)
        && lower_hex(flags)
        && trace.iter().any(|&b| b != b'0')
        && parent.iter().any(|&b| b != b'0');
    if !valid {
        return None;
    }
    std::str::from_utf8(trace).ok()
}

fn lower_hex(s: &[u8]) -> bool {
    s.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// What a request's trace context is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Trace {
    /// The request carries one valid `traceparent`: passed on unchanged, with its `tracestate`.
    Kept(String),
    /// It has none (or an invalid or repeated one): this new `traceparent` (random trace and
    /// parent ids, sampled) replaces whatever was sent, and `tracestate`, which belongs to the
    /// replaced one, is removed.
    New {
        /// The new header value.
        traceparent: String,
        /// Its trace id.
        trace_id: String,
    },
}

impl Trace {
    /// Reads the request's `traceparent` headers.
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        let mut sent = headers.get_all(TRACEPARENT).iter();
        if let (Some(one), None) = (sent.next(), sent.next()) {
            if let Some(id) = trace_id(one.as_bytes()) {
                return Trace::Kept(id.to_string());
            }
        }
        let (traceparent, trace_id) = new_traceparent();
        Trace::New { traceparent, trace_id }
    }
}

/// A new `traceparent` value and its trace id.
fn new_traceparent() -> (String, String) {
    let trace: u128 = rand::random::<u128>() | 1;
    let parent: u64 = rand::random::<u64>() | 1;
    let id = format!("{trace:032x}");
    (format!("00-{id}-{parent:016x}-01"), id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn valid_traceparents_are_read() {
        assert_eq!(trace_id(VALID.as_bytes()), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        // A later version may append fields after a dash.
        let future = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-extra";
        assert_eq!(trace_id(future.as_bytes()), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
    }

    #[test]
    fn invalid_traceparents_are_not() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09x",
        ] {
            assert_eq!(trace_id(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn a_valid_trace_is_kept_and_anything_else_replaced() {
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, VALID.parse().unwrap());
        assert_eq!(Trace::of(&h), Trace::Kept("4bf92f3577b34da6a3ce929d0e0e4736".into()));

        for sent in [vec!["garbage"], vec![VALID, VALID], vec![]] {
            let mut h = HeaderMap::new();
            for v in &sent {
                h.append(TRACEPARENT, v.parse().unwrap());
            }
            let Trace::New {
                traceparent,
                trace_id: id,
            } = Trace::of(&h)
            else {
                panic!("{sent:?} kept");
            };
            assert_eq!(super::trace_id(traceparent.as_bytes()), Some(id.as_str()), "{sent:?}");
            assert!(traceparent.ends_with("-01"));
        }
    }
}
