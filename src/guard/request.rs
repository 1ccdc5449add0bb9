//! What the guard sees of a client request, what a rule matches on, and how a rule's identity
//! (`key:` / `user:`) is read from it.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::fmt;
use std::net::IpAddr;

use crate::canonical::json::{self, JsonAmbiguity};
use crate::canonical::query::CanonicalQuery;

use http::{HeaderMap, HeaderName};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A client request as the guard sees it: borrowed from the proxy, no proxy types. Method, path
/// and query are in their canonical form ([`crate::canonical`]), as the backend receives them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestView<'a> {
    /// HTTP method, an upper-case token (`POST`).
    pub(crate) method: &'a str,
    /// The form of the path routes and rule prefixes match on ([`CanonicalPath::routing`]).
    ///
    /// [`CanonicalPath::routing`]: crate::canonical::path::CanonicalPath::routing
    pub(crate) routing_path: &'a str,
    /// The query as read once, when the guard reads it (a signature, or a `query:` identity).
    pub(crate) query: Option<&'a CanonicalQuery>,
    /// Request headers.
    pub(crate) headers: &'a HeaderMap,
    /// Client IP, already resolved through `trusted_proxies` ([`crate::guard::ip::IpRules::client_ip`]).
    pub(crate) client_ip: IpAddr,
    /// Buffered request body (empty when there is none).
    pub(crate) body: &'a [u8],
}

/// Which requests a rule applies to. Every list that is not empty must match (an empty list
/// matches everything); within a list any entry may match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RequestMatch {
    /// Route names (as named in the proxy's route table).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) routes: Vec<String>,
    /// HTTP methods, case-insensitive (`POST`); `GET` also matches `HEAD`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) methods: Vec<String>,
    /// Path prefixes, matched on whole segments of the canonical path (`/v1/orders` matches
    /// `/v1/orders` and `/v1/orders/7`, not `/v1/orders-export`), so `/v1/%6Frders` and
    /// `//v1/./orders` match too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) path_prefixes: Vec<String>,
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
            if let Err(message) = crate::canonical::path::config_pattern(p) {
                out.push((format!("path_prefixes[{i}]"), message));
            }
        }
        out
    }

    /// Whether a request with this (upper-case) method, routing path and route name is matched.
    pub(crate) fn matches(&self, method: &str, routing_path: &str, route: Option<&str>) -> bool {
        if !self.routes.is_empty() && !route.is_some_and(|r| self.routes.iter().any(|x| x == r)) {
            return false;
        }
        let listed = |m: &String| m.eq_ignore_ascii_case(method) || (method == "HEAD" && m.eq_ignore_ascii_case("GET"));
        if !self.methods.is_empty() && !self.methods.iter().any(listed) {
            return false;
        }
        if !self.path_prefixes.is_empty() {
            return self
                .path_prefixes
                .iter()
                .any(|p| crate::canonical::path::has_segment_prefix(routing_path, p, false));
        }
        true
    }
}

/// One part of a rule's identity, written in config as a string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub(crate) enum KeyPart {
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
    pub(crate) fn label(&self) -> String {
        let (kind, name) = self.label_parts();
        format!("{kind}{name}")
    }

    /// The label as (kind prefix, name), without allocating: `("header:", "x-user-id")`.
    pub(crate) fn label_parts(&self) -> (&'static str, &str) {
        match self {
            Self::ClientIp => ("client_ip", ""),
            Self::AccessKey => ("access_key", ""),
            Self::Header(h) => ("header:", h.as_str()),
            Self::Query(q) => ("query:", q),
            Self::Body(p) => ("body:", p),
            Self::Route => ("route", ""),
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

/// An identity part the request carries in a form decoders read differently (400
/// `AMBIGUOUS_IDENTITY` for an enforced rule).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{part}` is ambiguous: {detail}")]
pub(crate) struct IdentityAmbiguity {
    /// The part.
    pub(crate) part: KeyPart,
    /// What is ambiguous about it.
    pub(crate) detail: String,
}

/// One request plus what earlier phases established (verified access key, route name), with the
/// JSON body parsed lazily and at most once however many rules read it.
pub(crate) struct RequestFacts<'a> {
    /// The request.
    pub(crate) view: &'a RequestView<'a>,
    /// The verified access key id, when the request carried a valid signature.
    pub(crate) access_key: Option<&'a str>,
    /// The route name the proxy matched.
    pub(crate) route: Option<&'a str>,
    body_json: OnceCell<Result<Option<serde_json::Value>, JsonAmbiguity>>,
}

impl<'a> RequestFacts<'a> {
    /// Facts for one request.
    pub(crate) fn new(view: &'a RequestView<'a>, access_key: Option<&'a str>, route: Option<&'a str>) -> Self {
        Self {
            view,
            access_key,
            route,
            body_json: OnceCell::new(),
        }
    }

    /// Whether `m` matches this request.
    pub(crate) fn matched_by(&self, m: &RequestMatch) -> bool {
        m.matches(self.view.method, self.view.routing_path, self.route)
    }

    fn body_json(&self) -> &Result<Option<serde_json::Value>, JsonAmbiguity> {
        self.body_json.get_or_init(|| json::parse_strict(self.view.body))
    }

    /// The value of one identity part: `Ok(None)` when the request does not carry it, `Err` when
    /// it carries it in a form that two decoders could read as different identities (a header
    /// or query parameter sent twice, a parameter that is not UTF-8, a JSON key repeated or
    /// present in two spellings of case, a JSON number that is not a plain integer).
    pub(crate) fn part_value(&self, part: &KeyPart) -> Result<Option<Cow<'_, [u8]>>, IdentityAmbiguity> {
        let ambiguous = |detail: String| IdentityAmbiguity {
            part: part.clone(),
            detail,
        };
        Ok(match part {
            KeyPart::ClientIp => Some(Cow::Owned(self.view.client_ip.to_canonical().to_string().into_bytes())),
            KeyPart::AccessKey => self.access_key.map(|k| Cow::Borrowed(k.as_bytes())),
            KeyPart::Route => self.route.map(|r| Cow::Borrowed(r.as_bytes())),
            KeyPart::Header(name) => {
                let mut values = self.view.headers.get_all(name).iter();
                match (values.next(), values.next()) {
                    (None, _) => None,
                    (Some(_), Some(_)) => return Err(ambiguous(format!("header {name} is sent more than once"))),
                    (Some(v), None) => Some(Cow::Borrowed(v.as_bytes())).filter(|v| !v.is_empty()),
                }
            }
            KeyPart::Query(name) => {
                let Some(query) = self.view.query else {
                    return Ok(None);
                };
                let mut found: Option<&[u8]> = None;
                for (k, v) in query.params() {
                    if k.eq_ignore_ascii_case(name.as_bytes()) {
                        if found.is_some() || k != name.as_bytes() {
                            return Err(ambiguous(format!(
                                "query parameter {name} is sent more than once (or in another letter case)"
                            )));
                        }
                        found = Some(v);
                    }
                }
                match found {
                    Some(v) if std::str::from_utf8(v).is_err() => {
                        return Err(ambiguous(format!("query parameter {name} does not decode to UTF-8")))
                    }
                    Some(v) if !v.is_empty() => Some(Cow::Borrowed(v)),
                    _ => None,
                }
            }
            KeyPart::Body(pointer) => match self.body_json() {
                Err(e) => return Err(ambiguous(e.to_string())),
                Ok(None) => None,
                Ok(Some(v)) => json::identity_at(v, pointer).map_err(|e| ambiguous(e.to_string()))?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(
        method: &'a str,
        path: &'a str,
        query: Option<&'a CanonicalQuery>,
        headers: &'a HeaderMap,
        body: &'a [u8],
    ) -> RequestView<'a> {
        RequestView {
            method,
            routing_path: path,
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
    fn path_prefix_matches_whole_segments_of_the_routing_path() {
        let m = RequestMatch {
            path_prefixes: vec!["/v1/orders".into()],
            ..Default::default()
        };
        assert!(m.matches("POST", "/v1/orders", None));
        assert!(m.matches("POST", "/v1/orders/7", None));
        assert!(!m.matches("POST", "/v1/orders-export", None));
        assert!(!m.matches("POST", "/v2/orders", None));
        assert!(m.issues().is_empty());
        let bad = RequestMatch {
            path_prefixes: vec!["/v1/%6Frders".into(), "v1".into()],
            ..Default::default()
        };
        let issues = bad.issues();
        assert_eq!(issues.len(), 2, "{issues:?}");
        assert!(issues[0].1.contains("write `/v1/orders`"), "{issues:?}");
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
        let get = RequestMatch {
            methods: vec!["GET".into()],
            ..Default::default()
        };
        assert!(get.matches("HEAD", "/x", None), "HEAD runs the GET handler");
    }

    #[test]
    fn identity_parts_read_headers_query_and_json_body() {
        let mut h = HeaderMap::new();
        h.append("x-user", "u1".parse().unwrap());
        h.append("x-empty", "".parse().unwrap());
        let body = br#"{"user":{"id":42,"name":"ann"},"flag":true,"none":null}"#;
        let q = CanonicalQuery::parse("uid=a+b&z&other=c").unwrap();
        let v = view("POST", "/", Some(&q), &h, body);
        let f = RequestFacts::new(&v, Some("key-1"), Some("orders"));
        let get = |s: &str| f.part_value(&s.parse().unwrap()).unwrap().map(|c| c.into_owned());
        assert_eq!(get("header:x-user").unwrap(), b"u1");
        assert_eq!(get("header:x-empty"), None);
        assert_eq!(get("query:uid").unwrap(), b"a b");
        assert_eq!(get("query:z"), None);
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
    fn identities_sent_twice_or_in_two_spellings_are_ambiguous() {
        let mut h = HeaderMap::new();
        h.append("x-user", "u1".parse().unwrap());
        h.append("x-user", "u2".parse().unwrap());
        let q = CanonicalQuery::parse("uid=a&uid=b&UID2=x&uid2=y&bin=%FF").unwrap();
        let body = br#"{"user_id":"a","USER_ID":"b","n":1.5}"#;
        let v = view("POST", "/", Some(&q), &h, body);
        let f = RequestFacts::new(&v, None, None);
        for part in [
            "header:x-user",
            "query:uid",
            "query:uid2",
            "query:bin",
            "body:/user_id",
            "body:/n",
        ] {
            let err = f.part_value(&part.parse().unwrap()).unwrap_err();
            assert_eq!(err.part.label(), part);
        }
        let dup = br#"{"user_id":"a","user_id":"b"}"#;
        let v = view("POST", "/", None, &h, dup);
        let f = RequestFacts::new(&v, None, None);
        let err = f.part_value(&"body:/other".parse().unwrap()).unwrap_err();
        assert!(err.detail.contains("repeats the key `user_id`"), "{err}");
    }

    #[test]
    fn invalid_json_body_means_missing_identity() {
        let h = HeaderMap::new();
        let v = view("POST", "/", None, &h, b"not json");
        let f = RequestFacts::new(&v, None, None);
        assert_eq!(f.part_value(&"body:/user".parse().unwrap()), Ok(None));
        assert_eq!(f.part_value(&KeyPart::AccessKey), Ok(None));
        assert_eq!(f.part_value(&"query:uid".parse().unwrap()), Ok(None));
    }
}
