//! The canonical query: one reading of `a=1&b=x+y` that the signature covers, the guard's
//! `query:NAME` identities read, and the backend receives.
//!
//! The raw query is split on `&` (empty parts dropped), each part on its first `=` (a part
//! without one has an empty value), and names and values are decoded the way every standard
//! query decoder does — `+` is a space (WHATWG URLSearchParams, Go, Java Servlet, PHP, Python,
//! Rails) — with a strict `%` (two hex digits). The canonical text re-encodes each decoded byte
//! (RFC 3986 unreserved characters as they are, every other byte as upper-case `%XX`), sorts the
//! pairs by name then value, and joins them as `name=value` with `&`.
//!
//! When the guard reads the query it forwards this canonical text instead of the raw one, so
//! nothing a second decoder could read differently reaches the backend: `+` versus `%2B`, `;`
//! used as a separator by some decoders, the order of repeated names, `flag` versus `flag=`.

use super::{escape_at, is_unreserved, push_escape};

/// Why a query was refused (400 `NON_CANONICAL_QUERY`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryRefusal {
    /// A `%` not followed by two hex digits.
    #[error("invalid percent-escape at byte {offset} of the query")]
    InvalidEscape {
        /// Byte offset of the `%` within the raw query.
        offset: usize,
    },
}

impl QueryRefusal {
    /// Metric label, a fixed enum.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::InvalidEscape { .. } => "query_invalid_escape",
        }
    }
}

/// A query read once: its decoded parameters in the order sent, and its canonical text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CanonicalQuery {
    params: Vec<(Vec<u8>, Vec<u8>)>,
    text: String,
}

impl CanonicalQuery {
    /// Reads a raw query (the text after `?`, without it).
    pub fn parse(raw: &str) -> Result<Self, QueryRefusal> {
        let mut params = Vec::new();
        let mut encoded: Vec<(String, String)> = Vec::new();
        let mut offset = 0usize;
        for part in raw.split('&') {
            let part_offset = offset;
            offset += part.len() + 1;
            if part.is_empty() {
                continue;
            }
            let (name, value, value_offset) = match part.split_once('=') {
                Some((n, v)) => (n, v, part_offset + n.len() + 1),
                None => (part, "", part_offset + part.len()),
            };
            let name = decode(name, part_offset)?;
            let value = decode(value, value_offset)?;
            encoded.push((encode(&name), encode(&value)));
            params.push((name, value));
        }
        encoded.sort_unstable();
        let mut text = String::with_capacity(raw.len() + 8);
        for (i, (n, v)) in encoded.iter().enumerate() {
            if i > 0 {
                text.push('&');
            }
            text.push_str(n);
            text.push('=');
            text.push_str(v);
        }
        Ok(Self { params, text })
    }

    /// The canonical text (empty for an empty query).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Decoded `(name, value)` pairs in the order they were sent.
    pub(crate) fn params(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.params.iter().map(|(n, v)| (n.as_slice(), v.as_slice()))
    }
}

/// Percent-decodes with `+` as a space; every `%` needs two hex digits.
fn decode(s: &str, base_offset: usize) -> Result<Vec<u8>, QueryRefusal> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let d = escape_at(&bytes[i..]).ok_or(QueryRefusal::InvalidEscape {
                    offset: base_offset + i,
                })?;
                out.push(d);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if is_unreserved(b) {
            out.push(char::from(b));
        } else {
            push_escape(&mut out, b);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(raw: &str) -> String {
        CanonicalQuery::parse(raw).unwrap().as_str().to_string()
    }

    #[test]
    fn pairs_are_sorted_by_name_then_value() {
        assert_eq!(canonical("b=2&a=3&a=1"), "a=1&a=3&b=2");
    }

    #[test]
    fn empty_parts_are_dropped_and_a_missing_value_is_empty() {
        assert_eq!(canonical(""), "");
        assert_eq!(canonical("&&"), "");
        assert_eq!(canonical("a=&b&&=c"), "=c&a=&b=");
        assert_eq!(canonical("flag"), canonical("flag=&&&"));
        assert_eq!(canonical("a=b=c"), "a=b%3Dc");
    }

    #[test]
    fn plus_is_a_space_as_for_every_query_decoder() {
        assert_eq!(canonical("q=a+b"), "q=a%20b");
        assert_eq!(canonical("q=a+b"), canonical("q=a%20b"));
        assert_ne!(canonical("to=a+b"), canonical("to=a%2Bb"));
        assert_eq!(canonical("r=%2b"), "r=%2B");
    }

    #[test]
    fn bytes_are_reencoded_with_upper_case_hex() {
        assert_eq!(canonical("name=%e4%bd%a0%E5%A5%BD"), "name=%E4%BD%A0%E5%A5%BD");
        assert_eq!(canonical("name=你好"), "name=%E4%BD%A0%E5%A5%BD");
        assert_eq!(canonical("t=%7e%41-_."), "t=~A-_.");
        assert_eq!(canonical("a=1;b=2"), "a=1%3Bb%3D2", "`;` is data, never a separator");
    }

    #[test]
    fn sorting_compares_encoded_bytes() {
        // `~` (0x7E) stays as is, `é` becomes `%C3%A9`; '%' < '~' so é sorts first.
        assert_eq!(canonical("k=~&k=%C3%A9"), "k=%C3%A9&k=~");
    }

    #[test]
    fn invalid_escapes_are_refused_with_their_offset() {
        assert_eq!(
            CanonicalQuery::parse("a=%zz"),
            Err(QueryRefusal::InvalidEscape { offset: 2 })
        );
        assert!(CanonicalQuery::parse("a=%4").is_err());
        assert!(CanonicalQuery::parse("a=%").is_err());
        assert_eq!(
            CanonicalQuery::parse("x=1&%g1=2"),
            Err(QueryRefusal::InvalidEscape { offset: 4 })
        );
    }

    #[test]
    fn params_keep_the_order_sent_and_decode_names() {
        let q = CanonicalQuery::parse("u%69d=b&uid=a+c&x").unwrap();
        let got: Vec<_> = q.params().collect();
        assert_eq!(
            got,
            vec![
                (&b"uid"[..], &b"b"[..]),
                (&b"uid"[..], &b"a c"[..]),
                (&b"x"[..], &b""[..])
            ]
        );
    }
}
