//! Canonical request paths (RFC 3986 §6.2.2 syntax-based normalization, plus refusals).
//!
//! Rewritten into one spelling: percent-escapes of unreserved characters are decoded, the hex of
//! every other escape is upper-cased, characters that may not appear raw in a path (non-ASCII,
//! `"`, `{`, ...) are percent-encoded, repeated slashes are merged, `.` and `..` segments are
//! resolved (never above the root). A trailing slash is kept: `/a/` and `/a` are different
//! resources to the backend, and routes decide whether they match both.
//!
//! Refused, because servers disagree on what they mean (the attack behind CVE-2019-9901 in
//! Envoy and CVE-2021-43557 in APISIX): control characters and `%00`, a raw `\`, invalid
//! escapes, bytes that do not decode to UTF-8, and — unless `server.path` relaxes them —
//! encoded `/` and `\`, double encoding, and `;` path parameters.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{escape_at, hex_val, is_unreserved, push_escape};

/// What to do with a form that has legitimate uses but that servers read differently.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Ambiguity {
    /// Answer 400 `NON_CANONICAL_PATH` (the default).
    #[default]
    Reject,
    /// Forward it; match routes under the reading that reaches more handlers.
    Keep,
}

/// `server.path`: relaxations of the path refusals, for backends that need one of these forms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PathPolicy {
    /// `%2F` / `%5C` (an encoded `/` or `\`). `keep` forwards them encoded and matches routes as
    /// if they were `/`, the reading of servers that decode before routing.
    #[serde(default)]
    pub escaped_slashes: Ambiguity,
    /// `;` path parameters (`/cart;jsessionid=1`). `keep` forwards them and matches routes
    /// without them, as Servlet containers route.
    #[serde(default)]
    pub path_params: Ambiguity,
    /// `%25` followed by two hex digits (`%252e`: a second layer of encoding). `keep` forwards it
    /// as `%25…` and matches it literally.
    #[serde(default)]
    pub double_encoding: Ambiguity,
}

/// Why a path was refused (400 `NON_CANONICAL_PATH`). Offsets count bytes of the path as sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathRefusal {
    /// `*`, an authority or anything else that is not a path from the root.
    #[error("the request target must be a path starting with `/`")]
    NotOriginForm,
    /// A control character, raw or percent-encoded (`%00`, `%0A`, ...).
    #[error("control character 0x{byte:02X} at byte {offset} of the path")]
    ControlCharacter {
        /// Byte offset.
        offset: usize,
        /// The character.
        byte: u8,
    },
    /// A raw `\`, which some servers read as `/`.
    #[error("`\\` at byte {offset} of the path (some servers read it as `/`); encode it or remove it")]
    Backslash {
        /// Byte offset.
        offset: usize,
    },
    /// A `%` not followed by two hex digits.
    #[error("invalid percent-escape at byte {offset} of the path")]
    InvalidEscape {
        /// Byte offset of the `%`.
        offset: usize,
    },
    /// `%2F` or `%5C`.
    #[error("encoded slash {escape} at byte {offset} of the path (servers disagree on whether it separates segments)")]
    EncodedSlash {
        /// Byte offset of the `%`.
        offset: usize,
        /// The escape as sent.
        escape: String,
    },
    /// `%25` followed by two hex digits.
    #[error("double percent-encoding at byte {offset} of the path (`%25` followed by two hex digits)")]
    DoubleEncoding {
        /// Byte offset of the `%`.
        offset: usize,
    },
    /// A `;` path parameter.
    #[error(
        "`;` path parameter at byte {offset} of the path (Servlet containers route without it, other servers with it)"
    )]
    PathParameter {
        /// Byte offset of the `;`.
        offset: usize,
    },
    /// `..;x` or `.;x`: a dot segment to Servlet containers, a name to everyone else.
    #[error("dot segment with a `;` parameter at byte {offset} of the path")]
    DotSegmentParameter {
        /// Byte offset of the segment.
        offset: usize,
    },
    /// The percent-decoded path is not UTF-8.
    #[error("the path does not decode to UTF-8")]
    InvalidUtf8,
}

impl PathRefusal {
    /// Metric label, a fixed enum.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::NotOriginForm => "path_not_origin_form",
            Self::ControlCharacter { .. } => "path_control_character",
            Self::Backslash { .. } => "path_backslash",
            Self::InvalidEscape { .. } => "path_invalid_escape",
            Self::EncodedSlash { .. } => "path_encoded_slash",
            Self::DoubleEncoding { .. } => "path_double_encoding",
            Self::PathParameter { .. } | Self::DotSegmentParameter { .. } => "path_parameter",
            Self::InvalidUtf8 => "path_invalid_utf8",
        }
    }
}

/// A canonical path: the text forwarded, signed and logged, and the form routes match on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalPath {
    text: String,
    routing: Option<String>,
}

impl CanonicalPath {
    /// The canonical path (what the backend receives and the client signs).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The form routes and rule prefixes match on: the canonical path with escapes of
    /// characters that mean the same to every router decoded (`%3A` → `:`, `%40` → `@`, ...) and,
    /// where `server.path` keeps them, path parameters removed and encoded slashes read as `/`.
    pub fn routing(&self) -> &str {
        self.routing.as_deref().unwrap_or(&self.text)
    }
}

/// Characters allowed raw in a path segment (RFC 3986 §3.3 `pchar`, less `%`).
fn allowed_raw(b: u8) -> bool {
    is_unreserved(b) || is_sub_delim(b) || b == b':' || b == b'@'
}

fn is_sub_delim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

/// Builds the canonical text segment by segment, resolving dot segments as they close.
struct Builder {
    out: String,
    /// Where the segment being written starts in `out` (just after its `/`).
    segment: usize,
    /// Where the segment being written started in the raw path.
    raw_segment: usize,
}

impl Builder {
    /// Closes the segment being written. Returns whether it was a dot or empty segment (which
    /// leave a trailing slash when they are last).
    fn close(&mut self, path_params: Ambiguity) -> Result<bool, PathRefusal> {
        let seg = &self.out[self.segment..];
        let name = match path_params {
            Ambiguity::Keep => seg.split(';').next().unwrap_or(seg),
            Ambiguity::Reject => seg,
        };
        if (name == "." || name == "..") && name.len() != seg.len() {
            return Err(PathRefusal::DotSegmentParameter {
                offset: self.raw_segment,
            });
        }
        match name {
            "" | "." => {
                self.out.truncate(self.segment);
                Ok(true)
            }
            ".." => {
                // Drop this segment and the one before it; at the root there is nothing to drop.
                self.out.truncate(self.segment.saturating_sub(1));
                let parent = self.out.rfind('/').map_or(0, |i| i + 1);
                self.out.truncate(parent);
                if self.out.is_empty() {
                    self.out.push('/');
                }
                Ok(true)
            }
            _ => {
                self.out.push('/');
                Ok(false)
            }
        }
    }
}

/// The canonical form of `raw` (the path as sent, without the query), or why it is refused.
pub fn canonicalize(raw: &[u8], policy: &PathPolicy) -> Result<CanonicalPath, PathRefusal> {
    if raw.first() != Some(&b'/') {
        return Err(PathRefusal::NotOriginForm);
    }
    let mut b = Builder {
        out: String::with_capacity(raw.len() + 8),
        segment: 1,
        raw_segment: 1,
    };
    b.out.push('/');
    // The percent-decoded bytes from the first non-ASCII one on, to check the path means UTF-8
    // text (the ASCII before it cannot make a sequence invalid).
    let mut decoded: Vec<u8> = Vec::new();
    let mut i = 1;
    while let Some(&c) = raw.get(i) {
        let mut width = 1;
        match c {
            b'/' => {
                b.close(policy.path_params)?;
                b.segment = b.out.len();
                b.raw_segment = i + 1;
                i += 1;
                continue;
            }
            0..=0x1f | 0x7f => return Err(PathRefusal::ControlCharacter { offset: i, byte: c }),
            b'\\' => return Err(PathRefusal::Backslash { offset: i }),
            b';' if policy.path_params == Ambiguity::Reject => return Err(PathRefusal::PathParameter { offset: i }),
            b'%' => {
                let d = escape_at(&raw[i..]).ok_or(PathRefusal::InvalidEscape { offset: i })?;
                width = 3;
                match d {
                    0..=0x1f | 0x7f => return Err(PathRefusal::ControlCharacter { offset: i, byte: d }),
                    b'/' | b'\\' if policy.escaped_slashes == Ambiguity::Reject => {
                        return Err(PathRefusal::EncodedSlash {
                            offset: i,
                            escape: String::from_utf8_lossy(&raw[i..i + 3]).into_owned(),
                        })
                    }
                    b'%' if policy.double_encoding == Ambiguity::Reject && hex_pair_follows(raw, i + 3) => {
                        return Err(PathRefusal::DoubleEncoding { offset: i })
                    }
                    d if is_unreserved(d) => b.out.push(char::from(d)),
                    d => push_escape(&mut b.out, d),
                }
                if d >= 0x80 || !decoded.is_empty() {
                    decoded.push(d);
                }
            }
            c if c >= 0x80 => {
                decoded.push(c);
                push_escape(&mut b.out, c);
            }
            // `"`, `<`, `>`, `[`, `]`, `^`, `` ` ``, `{`, `|`, `}` may not appear raw (RFC 3986).
            c => {
                if allowed_raw(c) {
                    b.out.push(char::from(c));
                } else {
                    push_escape(&mut b.out, c);
                }
                if !decoded.is_empty() {
                    decoded.push(c);
                }
            }
        }
        i += width;
    }
    // An empty or dot last segment leaves a trailing slash; after a name, `close` appended a
    // `/` that is not part of the path.
    let trailing = b.close(policy.path_params)?;
    if !trailing && b.out.len() > 1 {
        b.out.pop();
    }
    if !decoded.is_empty() && std::str::from_utf8(&decoded).is_err() {
        return Err(PathRefusal::InvalidUtf8);
    }
    let routing = routing_form(&b.out, policy);
    Ok(CanonicalPath { text: b.out, routing })
}

/// Whether the canonical text continues with two hex digits at `raw[at..]`. The digits may be
/// sent raw or as escapes of them (`%32%65` is `2e` once canonical, since unreserved escapes are
/// decoded), so `%25%32%65` is refused like `%252e`: both are forwarded as `%252e`, which an
/// application that decodes twice reads as `.`.
fn hex_pair_follows(raw: &[u8], at: usize) -> bool {
    let canonical_byte = |j: usize| match raw.get(j) {
        Some(b'%') => escape_at(&raw[j..]).filter(|d| is_unreserved(*d)).map(|d| (d, 3)),
        Some(&c) => Some((c, 1)),
        None => None,
    };
    let Some((first, width)) = canonical_byte(at) else {
        return false;
    };
    let Some((second, _)) = canonical_byte(at + width) else {
        return false;
    };
    hex_val(first).is_some() && hex_val(second).is_some()
}

/// The routing form of a canonical path (see [`CanonicalPath::routing`]), or `None` when it is
/// the canonical text itself.
fn routing_form(text: &str, policy: &PathPolicy) -> Option<String> {
    let strip_params = policy.path_params == Ambiguity::Keep && text.contains(';');
    if !text.contains('%') && !strip_params {
        return None;
    }
    let mut decoded = String::with_capacity(text.len());
    for (n, seg) in text.split('/').enumerate() {
        if n > 0 {
            decoded.push('/');
        }
        let seg = if strip_params {
            seg.split(';').next().unwrap_or(seg)
        } else {
            seg
        };
        let bytes = seg.as_bytes();
        let mut i = 0;
        while let Some(&c) = bytes.get(i) {
            if c == b'%' {
                match escape_at(&bytes[i..]) {
                    Some(d) if d != b';' && (is_sub_delim(d) || d == b':' || d == b'@') => {
                        decoded.push(char::from(d));
                        i += 3;
                        continue;
                    }
                    Some(b'/' | b'\\') => {
                        decoded.push('/');
                        i += 3;
                        continue;
                    }
                    _ => {}
                }
            }
            decoded.push(char::from(c));
            i += 1;
        }
    }
    // Params removed or slashes decoded can leave empty or dot segments: resolve them again.
    let mut out = String::with_capacity(decoded.len());
    let mut trailing = false;
    for seg in decoded.split('/').skip(1) {
        trailing = matches!(seg, "" | "." | "..");
        match seg {
            "" | "." => {}
            ".." => {
                let parent = out.rfind('/').unwrap_or(0);
                out.truncate(parent);
            }
            s => {
                out.push('/');
                out.push_str(s);
            }
        }
    }
    if out.is_empty() || trailing {
        out.push('/');
    }
    (out != text).then_some(out)
}

/// Checks a path written in config (a route's `path` or `path_prefix`, a rule's
/// `path_prefixes`): it must be a canonical path in routing form, so that what it matches is
/// what it says (`/v1/%6Frders` and `/v1//orders` are refused with the spelling to use).
pub(crate) fn config_pattern(p: &str) -> Result<(), String> {
    match canonicalize(p.as_bytes(), &PathPolicy::default()) {
        Err(e) => Err(format!("`{p}` is not a valid path: {e}")),
        Ok(c) if c.routing() != p => Err(format!("`{p}` is not in canonical form; write `{}`", c.routing())),
        Ok(_) => Ok(()),
    }
}

/// Whether `path` is `prefix` or continues it with `/` (whole segments: `/v1` is a prefix of
/// `/v1/x`, not of `/v10`). A trailing `/` on the prefix is ignored; `/` is a prefix of every
/// path. Both are routing forms, which are ASCII.
pub(crate) fn has_segment_prefix(path: &str, prefix: &str, case_insensitive: bool) -> bool {
    let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
    let Some(head) = path.get(..prefix.len()) else {
        return false;
    };
    let same = if case_insensitive {
        head.eq_ignore_ascii_case(prefix)
    } else {
        head == prefix
    };
    same && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/'))
}

/// Whether `path` is `pattern`, also when exactly one of them has a trailing `/` if
/// `trailing_slash` says so (`/x` and `/x/`; most frameworks route both to one handler).
pub(crate) fn matches_exact(path: &str, pattern: &str, trailing_slash: bool, case_insensitive: bool) -> bool {
    let same = |a: &str, b: &str| {
        if case_insensitive {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    };
    if same(path, pattern) {
        return true;
    }
    if !trailing_slash || pattern == "/" || path == "/" {
        return false;
    }
    same(
        path.strip_suffix('/').unwrap_or(path),
        pattern.strip_suffix('/').unwrap_or(pattern),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict(raw: &str) -> Result<String, PathRefusal> {
        canonicalize(raw.as_bytes(), &PathPolicy::default()).map(|p| p.as_str().to_string())
    }

    fn keep_all() -> PathPolicy {
        PathPolicy {
            escaped_slashes: Ambiguity::Keep,
            path_params: Ambiguity::Keep,
            double_encoding: Ambiguity::Keep,
        }
    }

    #[test]
    fn canonical_paths_are_left_as_they_are() {
        for p in [
            "/",
            "/api/orders",
            "/api/orders/",
            "/v1/orders:cancel",
            "/@scope/pkg",
            "/a/b%20c",
            "/%E4%BD%A0",
            "/a.b/..c/c..",
            "/a+b/c=d,e",
        ] {
            assert_eq!(strict(p).as_deref(), Ok(p), "{p}");
        }
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_other_hex_upper_cased() {
        assert_eq!(strict("/api/%6frders").unwrap(), "/api/orders");
        assert_eq!(strict("/api/%6F%72ders").unwrap(), "/api/orders");
        assert_eq!(strict("/%7e%2D%2e%5f").unwrap(), "/~-._");
        assert_eq!(strict("/a%3ab").unwrap(), "/a%3Ab");
        assert_eq!(strict("/%e4%bd%a0").unwrap(), "/%E4%BD%A0");
        assert_eq!(strict("/100%25").unwrap(), "/100%25");
    }

    #[test]
    fn characters_not_allowed_raw_are_encoded() {
        assert_eq!(strict("/a\"b{c}").unwrap(), "/a%22b%7Bc%7D");
        assert_eq!(strict("/你").unwrap(), "/%E4%BD%A0");
        assert_eq!(strict("/a|b^c`d[e]").unwrap(), "/a%7Cb%5Ec%60d%5Be%5D");
    }

    #[test]
    fn slashes_are_merged_and_dot_segments_resolved() {
        for (raw, want) in [
            ("//api/orders", "/api/orders"),
            ("/api//orders", "/api/orders"),
            ("/api/orders//", "/api/orders/"),
            ("/api/./orders", "/api/orders"),
            ("/api/x/../orders", "/api/orders"),
            ("/api/orders/.", "/api/orders/"),
            ("/api/orders/..", "/api/"),
            ("/../../api/orders", "/api/orders"),
            ("/..", "/"),
            ("/.", "/"),
            ("/./", "/"),
            ("//", "/"),
            ("/api/%2e%2e/api/orders", "/api/orders"),
            ("/api/%2E/orders", "/api/orders"),
            ("/a/b/../../../c", "/c"),
        ] {
            assert_eq!(strict(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn ambiguous_forms_are_refused_with_their_position() {
        assert_eq!(strict("*"), Err(PathRefusal::NotOriginForm));
        assert_eq!(strict(""), Err(PathRefusal::NotOriginForm));
        assert_eq!(strict("/a\\b"), Err(PathRefusal::Backslash { offset: 2 }));
        assert_eq!(
            strict("/a%00"),
            Err(PathRefusal::ControlCharacter { offset: 2, byte: 0 })
        );
        assert_eq!(
            strict("/a%0a"),
            Err(PathRefusal::ControlCharacter { offset: 2, byte: 10 })
        );
        assert_eq!(
            strict("/a\tb"),
            Err(PathRefusal::ControlCharacter { offset: 2, byte: 9 })
        );
        assert_eq!(strict("/a%zz"), Err(PathRefusal::InvalidEscape { offset: 2 }));
        assert_eq!(strict("/a%4"), Err(PathRefusal::InvalidEscape { offset: 2 }));
        assert_eq!(strict("/a%"), Err(PathRefusal::InvalidEscape { offset: 2 }));
        assert_eq!(
            strict("/api%2forders"),
            Err(PathRefusal::EncodedSlash {
                offset: 4,
                escape: "%2f".into()
            })
        );
        assert!(matches!(strict("/a%5Cb"), Err(PathRefusal::EncodedSlash { .. })));
        assert_eq!(strict("/a%252e"), Err(PathRefusal::DoubleEncoding { offset: 2 }));
        assert_eq!(
            strict("/api/orders;x=1"),
            Err(PathRefusal::PathParameter { offset: 11 })
        );
        assert_eq!(strict("/%C0%AF"), Err(PathRefusal::InvalidUtf8));
        assert_eq!(strict("/%FF"), Err(PathRefusal::InvalidUtf8));
        assert_eq!(
            canonicalize(b"/\xff", &PathPolicy::default()),
            Err(PathRefusal::InvalidUtf8)
        );
    }

    #[test]
    fn routing_form_decodes_what_every_router_decodes() {
        let p = canonicalize(b"/v1/orders%3acancel", &PathPolicy::default()).unwrap();
        assert_eq!(p.as_str(), "/v1/orders%3Acancel");
        assert_eq!(p.routing(), "/v1/orders:cancel");
        let p = canonicalize(b"/u/a%40b%2Bc%3Bd", &PathPolicy::default()).unwrap();
        assert_eq!(p.routing(), "/u/a@b+c%3Bd", "an encoded `;` is data, not a parameter");
        let p = canonicalize(b"/api/orders", &PathPolicy::default()).unwrap();
        assert_eq!(p.routing(), "/api/orders");
    }

    #[test]
    fn kept_forms_are_forwarded_and_routed_by_the_wider_reading() {
        let keep = keep_all();
        let p = canonicalize(b"/api%2forders", &keep).unwrap();
        assert_eq!(p.as_str(), "/api%2Forders");
        assert_eq!(p.routing(), "/api/orders");
        let p = canonicalize(b"/api/x%2F..%2Forders", &keep).unwrap();
        assert_eq!(p.routing(), "/api/orders");
        let p = canonicalize(b"/api/orders;jsessionid=1", &keep).unwrap();
        assert_eq!(p.as_str(), "/api/orders;jsessionid=1");
        assert_eq!(p.routing(), "/api/orders");
        let p = canonicalize(b"/api;x/orders;y/", &keep).unwrap();
        assert_eq!(p.routing(), "/api/orders/");
        let p = canonicalize(b"/a%252e", &keep).unwrap();
        assert_eq!(p.as_str(), "/a%252e");
        assert_eq!(
            canonicalize(b"/api/..;x/admin", &keep),
            Err(PathRefusal::DotSegmentParameter { offset: 5 })
        );
        assert_eq!(
            canonicalize(b"/api/%2e%2e;x/admin", &keep),
            Err(PathRefusal::DotSegmentParameter { offset: 5 })
        );
    }

    #[test]
    fn config_patterns_must_be_written_canonically() {
        assert_eq!(config_pattern("/v1/orders"), Ok(()));
        assert_eq!(config_pattern("/v1/orders:cancel"), Ok(()));
        assert_eq!(config_pattern("/"), Ok(()));
        for (bad, hint) in [
            ("/v1/%6Frders", "write `/v1/orders`"),
            ("/v1//orders", "write `/v1/orders`"),
            ("/v1/orders%3Acancel", "write `/v1/orders:cancel`"),
            ("/v1/订单", "write `/v1/%E8%AE%A2%E5%8D%95`"),
            ("/a?b", "write `/a%3Fb`"),
        ] {
            let err = config_pattern(bad).unwrap_err();
            assert!(err.contains(hint), "{bad}: {err}");
        }
        assert!(config_pattern("v1").unwrap_err().contains("starting with `/`"));
        assert!(config_pattern("/a;b").is_err());
    }

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(has_segment_prefix("/v1", "/v1", false));
        assert!(has_segment_prefix("/v1/", "/v1", false));
        assert!(has_segment_prefix("/v1/x", "/v1/", false));
        assert!(!has_segment_prefix("/v10", "/v1", false));
        assert!(has_segment_prefix("/anything", "/", false));
        assert!(!has_segment_prefix("/V1/x", "/v1", false));
        assert!(has_segment_prefix("/V1/x", "/v1", true));
    }

    #[test]
    fn exact_paths_match_with_or_without_a_trailing_slash() {
        assert!(matches_exact("/x/", "/x", true, false));
        assert!(matches_exact("/x", "/x/", true, false));
        assert!(!matches_exact("/x/", "/x", false, false));
        assert!(!matches_exact("/", "/x", true, false));
        assert!(!matches_exact("/x", "/", true, false));
        assert!(!matches_exact("/X", "/x", true, false));
        assert!(matches_exact("/X/", "/x", true, true));
        assert!(!matches_exact("/xy", "/x", true, true));
    }

    #[test]
    fn double_encoding_with_escaped_hex_digits_is_refused() {
        // Each of these is forwarded as `%252e` once canonical: `..` to a double decoder.
        assert_eq!(
            strict("/a/%25%32%65%25%32%65/admin"),
            Err(PathRefusal::DoubleEncoding { offset: 3 })
        );
        assert_eq!(strict("/a%252%65"), Err(PathRefusal::DoubleEncoding { offset: 2 }));
        assert_eq!(strict("/a%25%32e"), Err(PathRefusal::DoubleEncoding { offset: 2 }));
        // An escape that stays an escape is not a hex digit of the canonical text.
        assert_eq!(strict("/a%25%3A%3A").unwrap(), "/a%25%3A%3A");
        assert_eq!(strict("/a%25%32").unwrap(), "/a%252");
        let kept = canonicalize(b"/a%25%32%65", &keep_all()).unwrap();
        assert_eq!(kept.as_str(), "/a%252e");
    }

    #[test]
    fn canonicalization_is_idempotent() {
        for raw in ["//a/./b/../c/%7e/%e4%bd%a0/", "/a%3ab/c", "/x/..", "/a\"b", "/a/b/."] {
            let once = strict(raw).unwrap();
            assert_eq!(strict(&once).unwrap(), once, "{raw}");
        }
    }
}
