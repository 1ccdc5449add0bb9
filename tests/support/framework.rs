//! A backend that routes the way lenient web frameworks do, to check that what payguard lets
//! through never lands on a protected handler unverified; and a raw HTTP/1.1 client that sends
//! a request target byte for byte (reqwest would normalize `//a/./b` before sending it).
//!
//! The backend applies, in one place, every normalization some popular stack applies before
//! routing: method-override headers (Rails, Laravel, Express middleware), `X-Original-URL` /
//! `X-Rewrite-URL` (Symfony, IIS), CGI-style header folding (`X_PG_Verified` is
//! `HTTP_X_PG_VERIFIED`, last value wins), Servlet path parameters (`;jsessionid=`), backslash as
//! slash, percent-decoding twice (an app that decodes again), merged slashes, dot segments,
//! trailing-slash tolerance and case-insensitive matching (Express, ASP.NET Core).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::upstream::{Recorded, Upstream};

/// A protected handler of the framework backend: method (`*` = any), path, and whether the path
/// is a prefix.
#[derive(Debug, Clone, Copy)]
pub struct Handler {
    pub name: &'static str,
    pub method: &'static str,
    pub path: &'static str,
    pub prefix: bool,
}

impl Handler {
    /// A handler of `method` (`*` = any) on exactly `path`.
    pub const fn exact(name: &'static str, method: &'static str, path: &'static str) -> Self {
        Self {
            name,
            method,
            path,
            prefix: false,
        }
    }

    /// A handler of every method on `path` and everything below it.
    pub const fn below(name: &'static str, path: &'static str) -> Self {
        Self {
            name,
            method: "*",
            path,
            prefix: true,
        }
    }
}

/// What a lenient framework makes of a request: (method, path) it routes on.
pub fn framework_view(req: &Recorded) -> (String, String) {
    // CGI-style: `_` and `-` are the same, case does not matter, the last value wins.
    let header = |name: &str| {
        req.headers
            .iter()
            .rev()
            .find(|(k, _)| k.replace('_', "-").eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut method = req.method.to_ascii_uppercase();
    for h in ["x-http-method-override", "x-http-method", "x-method-override"] {
        if let Some(v) = header(h) {
            method = v.to_ascii_uppercase();
        }
    }
    let mut target = req.target.clone();
    for h in ["x-original-url", "x-rewrite-url"] {
        if let Some(v) = header(h) {
            target = v;
        }
    }
    // An absolute-form target routes on its path.
    if let Some(rest) = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    {
        target = rest.find('/').map_or("/".to_string(), |i| rest[i..].to_string());
    }
    let path = target.split('?').next().unwrap_or("/");
    let without_params: Vec<&str> = path.split('/').map(|seg| seg.split(';').next().unwrap_or("")).collect();
    let decoded = percent_decode(&percent_decode(&without_params.join("/")));
    let decoded = decoded.replace('\\', "/");
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
    (method, format!("/{}", segments.join("/")).to_ascii_lowercase())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The handler a lenient framework runs for `req`, if it is one of `handlers`.
pub fn framework_handler(req: &Recorded, handlers: &[Handler]) -> Option<&'static str> {
    let (method, path) = framework_view(req);
    handlers
        .iter()
        .find(|h| {
            (h.method == "*" || h.method == method)
                && (path == h.path || (h.prefix && path.starts_with(&format!("{}/", h.path))))
        })
        .map(|h| h.name)
}

/// Every request `up` received that a lenient framework routes to one of `handlers`, with the
/// handler's name.
pub fn protected_hits(up: &Upstream, handlers: &[Handler]) -> Vec<(&'static str, Recorded)> {
    up.requests()
        .into_iter()
        .filter_map(|r| framework_handler(&r, handlers).map(|h| (h, r)))
        .collect()
}

/// A response read off the wire.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The problem `code` of a problem+json answer, or "".
    pub fn code(&self) -> String {
        let is_problem = self
            .headers
            .iter()
            .any(|(k, v)| k == "content-type" && v == "application/problem+json");
        if !is_problem {
            return String::new();
        }
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["code"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// The problem `detail`, or "".
    pub fn detail(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["detail"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request with `target` exactly as given (bytes) and reads the answer. The
/// connection is closed afterwards.
pub fn raw_request(addr: &str, method: &str, target: &[u8], headers: &[(&str, &str)], body: &[u8]) -> RawResponse {
    let mut s = TcpStream::connect(addr).expect("connect to payguard");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut req = Vec::new();
    req.extend_from_slice(method.as_bytes());
    req.push(b' ');
    req.extend_from_slice(target);
    req.extend_from_slice(b" HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.extend_from_slice(b"Host: shop.example\r\n");
    }
    for (k, v) in headers {
        req.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    if !body.is_empty() || method != "GET" {
        req.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body);
    s.write_all(&req).expect("send request");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> RawResponse {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if let Some(len) = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        body.truncate(len);
    }
    RawResponse { status, headers, body }
}

/// `host:port` of a socket address, for [`raw_request`].
pub fn addr_of(addr: SocketAddr) -> String {
    addr.to_string()
}
