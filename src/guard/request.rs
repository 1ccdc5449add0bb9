//! What the guard sees of a client request, what a rule matches on, and how a rule's identity
//! (`key:` / `user:`) is read from it.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::fmt;
use std::net::IpAddr;

use http::{HeaderMap, HeaderName};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A client request as the guard sees it: borrowed from the proxy, no proxy types.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// HTTP method as received (`POST`).
    pub method: &'a str,
    /// Path exactly as sent on the request line, without the query.
    pub path: &'a str,
    /// Raw query (after `?`, without it), if the request line had one.
    pub query: Option<&'a str>,
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// Client IP, already resolved through `trusted_proxies` ([`crate::guard::ip::IpRules::client_ip`]).
    pub client_ip: IpAddr,
    /// Buffered request body (empty when there is none).
    pub body: &'a [u8],
}

/// Which requests a rule applies to. Every list that is not empty must match (an empty list
/// matches everything); within a list any entry may match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestMatch {
    /// Route names (as named in the proxy's route table).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
    /// HTTP methods, case-insensitive (`POST`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Path prefixes, matched on whole segments (`/v1/orders` matches `/v1/orders` and
    /// `/v1/orders/7`, not `/v1/orders-export`) after normalizing the path (see [`normalize_path`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path_prefixes: Vec<String>,
}

impl RequestMatch {
    /// Configuration problems, as (relative key path, message).
    pub(crate) fn issues(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (i, m) in self.methods.iter().enumerate() {
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
                out.push((format!("methods[{i}]"), "must be an HTTP method such as POST".into()));
            }
        }
        for (i, p) in self.path_prefixes.iter().enumerate() {
            if !p.starts_with('/') {
                out.push((format!("path_prefixes[{i}]"), "must start with '/'".into()));
            }
        }
        out
    }

    /// Whether a request with this method, path and route name is matched.
    pub fn matches(&self, method: &str, path: &str, route: Option<&str>) -> bool {
        if !self.routes.is_empty() && !route.is_some_and(|r| self.routes.iter().any(|x| x == r)) {
            return false;
        }
        if !self.methods.is_empty() && !self.methods.iter().any(|m| m.eq_ignore_ascii_case(method)) {
            return false;
        }
        if !self.path_prefixes.is_empty() {
            let path = normalize_path(path);
            return self.path_prefixes.iter().any(|p| path_has_prefix(&path, p));
        }
        true
    }
}

/// Segment-aware prefix test: `/v1/orders` is a prefix of `/v1/orders/7` but not of `/v1/ordersX`.
fn path_has_prefix(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/'),
        None => false,
    }
}

/// Normalizes a request path for rule matching only (the signature always covers the raw path):
/// decodes percent-escapes of RFC 3986 unreserved characters, collapses repeated slashes and
/// resolves `.` / `..` segments. Without this, `/v1/%6Frders` or `//v1/./orders` would slip
/// past a `/v1/orders` rule while the backend still routes them to the same handler.
pub fn normalize_path(path: &str) -> Cow<'_, str> {
    let needs_work = path.contains('%') || path.contains("//") || path.contains("/.") || !path.starts_with('/');
    if !needs_work {
        return Cow::Borrowed(path);
    }
    let decoded = decode_unreserved(path);
    let mut segments: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || (decoded.ends_with('/') && !segments.is_empty()) {
        out.push('/');
    }
    Cow::Owned(out)
}

fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = bytes.get(i + 1).and_then(|x| hex_val(*x));
            let lo = bytes.get(i + 2).and_then(|x| hex_val(*x));
            if let (Some(h), Some(l)) = (hi, lo) {
                let c = h * 16 + l;
                if is_unreserved(c) {
                    out.push(char::from(c));
                    i += 3;
                    continue;
                }
            }
        }
        // `i` is always at a char boundary (we only ever skip ASCII escapes or whole chars).
        let ch_len = utf8_len(b);
        out.push_str(path.get(i..i + ch_len).unwrap_or(""));
        i += ch_len;
    }
    out
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

/// RFC 3986 §2.3 unreserved characters.
pub(crate) fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

pub(crate) fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// One part of a rule's identity, written in config as a string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum KeyPart {
    /// `client_ip`: the resolved client IP.
    ClientIp,
    /// `access_key`: the verified `X-PG-Key` (missing when the request was not signed).
    AccessKey,
    /// `header:NAME`: a request header (all values joined with `,`).
    Header(HeaderName),
    /// `query:NAME`: a query parameter (all values joined with `,`).
    Query(String),
    /// `body:/json/pointer`: a string, number or boolean in the JSON body (RFC 6901 pointer).
    Body(String),
    /// `route`: the route name.
    Route,
}

impl KeyPart {
    /// The textual form used in config (and inside identity hashes).
    pub fn label(&self) -> String {
        match self {
            Self::ClientIp => "client_ip".into(),
            Self::AccessKey => "access_key".into(),
            Self::Header(h) => format!("header:{h}"),
            Self::Query(q) => format!("query:{q}"),
            Self::Body(p) => format!("body:{p}"),
            Self::Route => "route".into(),
        }
    }
}

impl fmt::Display for KeyPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

impl TryFrom<String> for KeyPart {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<KeyPart> for String {
    fn from(k: KeyPart) -> String {
        k.label()
    }
}

impl std::str::FromStr for KeyPart {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "client_ip" => return Ok(Self::ClientIp),
            "access_key" => return Ok(Self::AccessKey),
            "route" => return Ok(Self::Route),
            _ => {}
        }
        if let Some(name) = s.strip_prefix("header:") {
            return HeaderName::from_bytes(name.as_bytes())
                .map(Self::Header)
                .map_err(|_| format!("`{s}`: not a valid header name"));
        }
        if let Some(name) = s.strip_prefix("query:") {
            if name.is_empty() {
                return Err(format!("`{s}`: query parameter name is empty"));
            }
            return Ok(Self::Query(name.to_string()));
        }
        if let Some(ptr) = s.strip_prefix("body:") {
            if !ptr.starts_with('/') {
                return Err(format!("`{s}`: body key must be a JSON pointer starting with '/'"));
            }
            return Ok(Self::Body(ptr.to_string()));
        }
        Err(format!(
            "`{s}`: expected client_ip, access_key, route, header:NAME, query:NAME or body:/json/pointer"
        ))
    }
}

impl JsonSchema for KeyPart {
    fn schema_name() -> String {
        "KeyPart".into()
    }

    fn json_schema(_: &mut schemars::gen::SchemaGenerator) -> schemars::schema::Schema {
        use schemars::schema::{InstanceType, Metadata, SchemaObject, StringValidation};
        SchemaObject {
            instance_type: Some(InstanceType::String.into()),
            metadata: Some(Box::new(Metadata {
                description: Some(
                    "`client_ip`, `access_key`, `route`, `header:NAME`, `query:NAME` or `body:/json/pointer`".into(),
                ),
                ..Default::default()
            })),
            string: Some(Box::new(StringValidation {
                pattern: Some("^(client_ip|access_key|route|header:.+|query:.+|body:/.*)$".into()),
                ..Default::default()
            })),
            ..Default::default()
        }
        .into()
    }
}

/// One request plus what earlier phases established (verified access key, route name), with the
/// JSON body parsed lazily and at most once however many rules read it.
pub struct RequestFacts<'a> {
    /// The request.
    pub view: &'a RequestView<'a>,
    /// The verified access key id, when the request carried a valid signature.
    pub access_key: Option<&'a str>,
    /// The route name the proxy matched.
    pub route: Option<&'a str>,
    body_json: OnceCell<Option<serde_json::Value>>,
}

impl<'a> RequestFacts<'a> {
    /// Facts for one request.
    pub fn new(view: &'a RequestView<'a>, access_key: Option<&'a str>, route: Option<&'a str>) -> Self {
        Self {
            view,
            access_key,
            route,
            body_json: OnceCell::new(),
        }
    }

    /// Whether `m` matches this request.
    pub fn matched_by(&self, m: &RequestMatch) -> bool {
        m.matches(self.view.method, self.view.path, self.route)
    }

    fn body_json(&self) -> Option<&serde_json::Value> {
        self.body_json
            .get_or_init(|| serde_json::from_slice(self.view.body).ok())
            .as_ref()
    }

    /// The value of one identity part, or `None` when the request does not carry it.
    pub fn part_value(&self, part: &KeyPart) -> Option<Cow<'_, [u8]>> {
        match part {
            KeyPart::ClientIp => Some(Cow::Owned(self.view.client_ip.to_canonical().to_string().into_bytes())),
            KeyPart::AccessKey => self.access_key.map(|k| Cow::Borrowed(k.as_bytes())),
            KeyPart::Route => self.route.map(|r| Cow::Borrowed(r.as_bytes())),
            KeyPart::Header(name) => {
                let mut values = self.view.headers.get_all(name).iter();
                let first = values.next()?;
                let mut out = first.as_bytes().to_vec();
                for v in values {
                    out.push(b',');
                    out.extend_from_slice(v.as_bytes());
                }
                non_empty(out)
            }
            KeyPart::Query(name) => {
                let raw = self.view.query?;
                let mut out: Option<Vec<u8>> = None;
                for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
                    if k == name.as_str() {
                        match out.as_mut() {
                            Some(o) => {
                                o.push(b',');
                                o.extend_from_slice(v.as_bytes());
                            }
                            None => out = Some(v.as_bytes().to_vec()),
                        }
                    }
                }
                non_empty(out?)
            }
            KeyPart::Body(pointer) => match self.body_json()?.pointer(pointer)? {
                serde_json::Value::String(s) if !s.is_empty() => Some(Cow::Borrowed(s.as_bytes())),
                serde_json::Value::Number(n) => Some(Cow::Owned(n.to_string().into_bytes())),
                serde_json::Value::Bool(b) => Some(Cow::Owned(b.to_string().into_bytes())),
                _ => None,
            },
        }
    }
}

fn non_empty(v: Vec<u8>) -> Option<Cow<'static, [u8]>> {
    if v.is_empty() {
        None
    } else {
        Some(Cow::Owned(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(
        method: &'a str,
        path: &'a str,
        query: Option<&'a str>,
        headers: &'a HeaderMap,
        body: &'a [u8],
    ) -> RequestView<'a> {
        RequestView {
            method,
            path,
            query,
            headers,
            client_ip: "192.0.2.1".parse().unwrap(),
            body,
        }
    }

    #[test]
    fn key_parts_parse_from_config_strings_and_round_trip() {
        for s in [
            "client_ip",
            "access_key",
            "route",
            "header:x-user-id",
            "query:uid",
            "body:/user/id",
        ] {
            let p: KeyPart = s.parse().unwrap();
            assert_eq!(p.label(), s);
        }
        assert!("body:user".parse::<KeyPart>().is_err());
        assert!("header:bad header".parse::<KeyPart>().is_err());
        assert!("ip".parse::<KeyPart>().is_err());
    }

    #[test]
    fn path_prefix_matches_whole_segments_after_normalization() {
        let m = RequestMatch {
            path_prefixes: vec!["/v1/orders".into()],
            ..Default::default()
        };
        assert!(m.matches("POST", "/v1/orders", None));
        assert!(m.matches("POST", "/v1/orders/7", None));
        assert!(!m.matches("POST", "/v1/orders-export", None));
        assert!(m.matches("POST", "/v1/%6Frders", None));
        assert!(m.matches("POST", "//v1/./orders", None));
        assert!(m.matches("POST", "/v1/x/../orders", None));
        assert!(!m.matches("POST", "/v2/orders", None));
    }

    #[test]
    fn normalization_keeps_utf8_and_reserved_escapes() {
        assert_eq!(normalize_path("/v1/订单/%6Fk"), "/v1/订单/ok");
        assert_eq!(normalize_path("/a%2Fb/%"), "/a%2Fb/%");
        assert_eq!(normalize_path("/../.."), "/");
        assert_eq!(normalize_path("/v1/orders/"), "/v1/orders/");
        assert_eq!(normalize_path("*"), "/*");
    }

    #[test]
    fn methods_and_routes_must_all_match() {
        let m = RequestMatch {
            routes: vec!["orders".into()],
            methods: vec!["post".into()],
            ..Default::default()
        };
        assert!(m.matches("POST", "/x", Some("orders")));
        assert!(!m.matches("GET", "/x", Some("orders")));
        assert!(!m.matches("POST", "/x", None));
        assert!(RequestMatch::default().matches("GET", "/anything", None));
    }

    #[test]
    fn identity_parts_read_headers_query_and_json_body() {
        let mut h = HeaderMap::new();
        h.append("x-user", "u1".parse().unwrap());
        h.append("x-user", "u2".parse().unwrap());
        let body = br#"{"user":{"id":42,"name":"ann"},"flag":true,"none":null}"#;
        let v = view("POST", "/", Some("uid=a%20b&uid=c&z"), &h, body);
        let f = RequestFacts::new(&v, Some("key-1"), Some("orders"));
        let get = |s: &str| f.part_value(&s.parse().unwrap()).map(|c| c.into_owned());
        assert_eq!(get("header:x-user").unwrap(), b"u1,u2");
        assert_eq!(get("query:uid").unwrap(), b"a b,c");
        assert_eq!(get("query:missing"), None);
        assert_eq!(get("body:/user/id").unwrap(), b"42");
        assert_eq!(get("body:/user/name").unwrap(), b"ann");
        assert_eq!(get("body:/flag").unwrap(), b"true");
        assert_eq!(get("body:/none"), None);
        assert_eq!(get("body:/user"), None);
        assert_eq!(get("access_key").unwrap(), b"key-1");
        assert_eq!(get("route").unwrap(), b"orders");
        assert_eq!(get("client_ip").unwrap(), b"192.0.2.1");
    }

    #[test]
    fn invalid_json_body_means_missing_identity() {
        let h = HeaderMap::new();
        let v = view("POST", "/", None, &h, b"not json");
        let f = RequestFacts::new(&v, None, None);
        assert_eq!(f.part_value(&"body:/user".parse().unwrap()), None);
        assert_eq!(f.part_value(&KeyPart::AccessKey), None);
    }
}
