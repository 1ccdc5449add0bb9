//! Loading: YAML text → JSON Schema validation (every structural error, with its key path) →
//! typed [`FileConfig`] → semantic checks and secret resolution → internal [`Config`].

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;

use super::{Config, FileConfig, Upstream};
use crate::proxy::routes::RouteTable;

/// One configuration error and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Key path such as `routes[0].match.path` (`(root)` for the whole document).
    pub path: String,
    /// What is wrong. Never contains a secret value.
    pub message: String,
}

impl ConfigIssue {
    /// An issue at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl ConfigIssue {
    /// The same issue under a parent key (`prefix.path`).
    pub fn under(self, prefix: &str) -> Self {
        let path = if self.path.is_empty() {
            prefix.to_string()
        } else {
            format!("{prefix}.{}", self.path)
        };
        Self {
            path,
            message: self.message,
        }
    }
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every issue found in one configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigIssues(pub Vec<ConfigIssue>);

impl fmt::Display for ConfigIssues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

/// The JSON Schema of the configuration file, generated from [`FileConfig`].
pub fn schema_json() -> serde_json::Value {
    let schema = schemars::schema_for!(FileConfig);
    serde_json::to_value(schema).unwrap_or_default()
}

/// Reads and validates a configuration file.
pub fn load_file(path: &Path) -> Result<(FileConfig, Config), ConfigIssues> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigIssues(vec![ConfigIssue::new(
            "(file)",
            format!("cannot read {}: {e}", path.display()),
        )])
    })?;
    check_text(&text)
}

/// Validates configuration text and builds the internal config.
pub fn check_text(text: &str) -> Result<(FileConfig, Config), ConfigIssues> {
    let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(|e| {
        let path = match e.location() {
            Some(loc) => format!("(line {}, column {})", loc.line(), loc.column()),
            None => "(document)".to_string(),
        };
        ConfigIssues(vec![ConfigIssue::new(path, format!("not valid YAML: {e}"))])
    })?;
    let json = yaml_to_json(yaml, "")?;

    let schema = schema_json();
    let validator = jsonschema::validator_for(&schema)
        .map_err(|e| ConfigIssues(vec![ConfigIssue::new("(schema)", e.to_string())]))?;
    let mut issues: Vec<ConfigIssue> = validator
        .iter_errors(&json)
        .flat_map(|e| schema_issue(&schema, e))
        .collect();
    if !issues.is_empty() {
        issues.sort_by(|a, b| a.path.cmp(&b.path));
        issues.dedup();
        return Err(ConfigIssues(issues));
    }

    let file: FileConfig = serde_path_to_error::deserialize(json).map_err(|e| {
        ConfigIssues(vec![ConfigIssue::new(
            display_serde_path(&e.path().to_string()),
            e.inner().to_string(),
        )])
    })?;
    let config = build(&file)?;
    Ok((file, config))
}

/// Semantic checks and secret resolution; collects every issue.
fn build(file: &FileConfig) -> Result<Config, ConfigIssues> {
    let mut issues = Vec::new();

    let listen = parse_addr(&file.server.listen, "server.listen", &mut issues);
    if file.server.threads == 0 || file.server.threads > 1024 {
        issues.push(ConfigIssue::new("server.threads", "must be between 1 and 1024"));
    }
    let admin_listen = parse_addr(&file.admin.listen, "admin.listen", &mut issues);
    if let (Some(a), Some(b)) = (listen, admin_listen) {
        if a == b {
            issues.push(ConfigIssue::new("admin.listen", "must differ from server.listen"));
        }
    }
    let admin_token = file.admin.token.as_ref().and_then(|r| match r.resolve() {
        Ok(s) => Some(s),
        Err(e) => {
            issues.push(ConfigIssue::new("admin.token", e));
            None
        }
    });

    let up = &file.upstream;
    let upstream_socket = match resolve_upstream(&up.address) {
        Ok(a) => Some(a),
        Err(e) => {
            issues.push(ConfigIssue::new("upstream.address", e));
            None
        }
    };
    if up.connect_timeout.is_zero() {
        issues.push(ConfigIssue::new(
            "upstream.connect_timeout",
            "must be greater than zero",
        ));
    }
    if up.read_timeout.is_zero() {
        issues.push(ConfigIssue::new("upstream.read_timeout", "must be greater than zero"));
    }
    if up.write_timeout.is_zero() {
        issues.push(ConfigIssue::new("upstream.write_timeout", "must be greater than zero"));
    }
    if file.reload.interval.is_zero() {
        issues.push(ConfigIssue::new("reload.interval", "must be greater than zero"));
    }

    issues.extend(
        file.store
            .validate()
            .into_iter()
            .map(|(p, m)| ConfigIssue::new(format!("store.{p}"), m)),
    );

    let guard = match &file.guard {
        Some(g) => match g.build() {
            Ok(built) => Some(std::sync::Arc::new(built)),
            Err(e) => {
                issues.extend(e.into_iter().map(|i| i.under("guard")));
                None
            }
        },
        None => None,
    };
    if let Some(g) = &file.guard {
        let names: std::collections::HashSet<&str> = file.routes.iter().map(|r| r.name.as_str()).collect();
        for (path, route) in g.referenced_routes() {
            if !names.contains(route.as_str()) {
                issues.push(ConfigIssue::new(
                    format!("guard.{path}"),
                    format!("no route is named `{route}`"),
                ));
            }
        }
    }

    let routes = match RouteTable::compile(&file.routes, file.default_action, file.guard.is_some()) {
        Ok(table) => Some(table),
        Err(route_issues) => {
            issues.extend(route_issues);
            None
        }
    };

    if !issues.is_empty() {
        return Err(ConfigIssues(issues));
    }
    let mut read_headers = guard.as_ref().map(|g| g.headers_read()).unwrap_or_default();
    read_headers.push(http::HeaderName::from_static(crate::proxy::REQUEST_ID));
    let request = crate::canonical::RequestPolicy {
        path: file.server.path,
        header_underscores: file.server.header_underscores,
        read_headers,
    };
    let warnings = routes.as_ref().map(RouteTable::warnings).unwrap_or_default();
    let (Some(listen), Some(admin_listen), Some(routes), Some(socket)) =
        (listen, admin_listen, routes, upstream_socket)
    else {
        return Err(ConfigIssues(vec![ConfigIssue::new("(root)", "invalid configuration")]));
    };
    Ok(Config {
        listen,
        threads: file.server.threads,
        grace_period: file.server.grace_period,
        shutdown_timeout: file.server.shutdown_timeout,
        admin_listen,
        admin_token,
        upstream: Upstream {
            address: up.address.clone(),
            socket,
            connect_timeout: up.connect_timeout,
            read_timeout: up.read_timeout,
            write_timeout: up.write_timeout,
            idle_timeout: up.idle_timeout,
            pool_size: up.pool_size,
        },
        store: file.store.clone(),
        log: file.log.clone(),
        reload: file.reload.clone(),
        request,
        routes,
        warnings,
        guard,
    })
}

fn parse_addr(text: &str, path: &str, issues: &mut Vec<ConfigIssue>) -> Option<SocketAddr> {
    match text.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            issues.push(ConfigIssue::new(path, format!("`{text}` is not an IP:port address")));
            None
        }
    }
}

/// Resolves the upstream address once (at load time, never on the request path).
pub fn resolve_upstream(address: &str) -> Result<SocketAddr, String> {
    if address.trim().is_empty() || !address.contains(':') {
        return Err(format!("`{address}` is not host:port"));
    }
    address
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{address}`: {e}"))?
        .next()
        .ok_or_else(|| format!("`{address}` resolves to no address"))
}

fn yaml_to_json(value: serde_yaml_ng::Value, path: &str) -> Result<serde_json::Value, ConfigIssues> {
    use serde_yaml_ng::Value as Y;
    Ok(match value {
        Y::Null => serde_json::Value::Null,
        Y::Bool(b) => serde_json::Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                serde_json::Value::from(i)
            } else if let Some(u) = n.as_u64() {
                serde_json::Value::from(u)
            } else {
                return Err(ConfigIssues(vec![ConfigIssue::new(
                    display_path(path),
                    "fractional numbers are not used in this configuration; write an integer or a quoted string",
                )]));
            }
        }
        Y::String(s) => serde_json::Value::String(s),
        Y::Sequence(items) => serde_json::Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| yaml_to_json(v, &format!("{path}/{i}")))
                .collect::<Result<_, _>>()?,
        ),
        Y::Mapping(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                let key = match k {
                    Y::String(s) => s,
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    _ => {
                        return Err(ConfigIssues(vec![ConfigIssue::new(
                            display_path(path),
                            "keys must be strings",
                        )]))
                    }
                };
                let child = format!("{path}/{}", key.replace('~', "~0").replace('/', "~1"));
                out.insert(key, yaml_to_json(v, &child)?);
            }
            serde_json::Value::Object(out)
        }
        Y::Tagged(t) => yaml_to_json(t.value, path)?,
    })
}

/// Turns a JSON pointer (`/routes/0/match`) into a key path (`routes[0].match`).
fn display_path(pointer: &str) -> String {
    let mut out = String::new();
    for seg in pointer.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg);
        }
    }
    if out.is_empty() {
        "(root)".into()
    } else {
        out
    }
}

fn display_serde_path(path: &str) -> String {
    if path == "." || path.is_empty() {
        "(root)".into()
    } else {
        path.to_string()
    }
}

fn join_path(base: &str, key: &str) -> String {
    if base == "(root)" {
        key.to_string()
    } else {
        format!("{base}.{key}")
    }
}

/// The schema node describing the value at `pointer` (following `properties`, `items`,
/// `additionalProperties` and `$ref`s into `definitions`).
fn schema_node<'s>(schema: &'s serde_json::Value, pointer: &str) -> Option<&'s serde_json::Value> {
    let resolve = |mut node: &'s serde_json::Value| {
        for _ in 0..16 {
            match node
                .get("$ref")
                .and_then(|r| r.as_str())
                .and_then(|r| r.strip_prefix("#/"))
            {
                Some(r) => node = schema.pointer(&format!("/{r}"))?,
                None => {
                    // Option<T> renders as anyOf [T, null] or allOf [T].
                    match node.get("allOf").and_then(|a| a.as_array()).filter(|a| a.len() == 1) {
                        Some(a) => node = &a[0],
                        None => return Some(node),
                    }
                }
            }
        }
        Some(node)
    };
    let mut node = resolve(schema)?;
    for seg in pointer.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        let next = node
            .get("properties")
            .and_then(|p| p.get(&seg))
            .or_else(|| node.get("items"))
            .or_else(|| node.get("additionalProperties").filter(|a| a.is_object()))?;
        node = resolve(next)?;
    }
    Some(node)
}

/// Allowed string values of an enum-like schema node (`enum`, or `oneOf`/`anyOf` of enums/consts).
fn allowed_values(node: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(values) = node.get("enum").and_then(|e| e.as_array()) {
        out.extend(values.iter().filter_map(|v| v.as_str().map(str::to_string)));
    }
    if let Some(c) = node.get("const").and_then(|c| c.as_str()) {
        out.push(c.to_string());
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(subs) = node.get(key).and_then(|s| s.as_array()) {
            for sub in subs {
                out.extend(allowed_values(sub));
            }
        }
    }
    out
}

fn schema_issue(schema: &serde_json::Value, err: jsonschema::ValidationError<'_>) -> Vec<ConfigIssue> {
    use jsonschema::error::ValidationErrorKind as K;
    let pointer = err.instance_path.to_string();
    let path = display_path(&pointer);
    if let (K::OneOfNotValid | K::AnyOf | K::Enum { .. }, serde_json::Value::String(s)) =
        (&err.kind, err.instance.as_ref())
    {
        let allowed = schema_node(schema, &pointer).map(allowed_values).unwrap_or_default();
        if !allowed.is_empty() {
            return vec![ConfigIssue::new(
                path,
                format!("`{s}` is not one of: {}", allowed.join(", ")),
            )];
        }
    }
    match &err.kind {
        K::AdditionalProperties { unexpected } => unexpected
            .iter()
            .map(|key| ConfigIssue::new(join_path(&path, key), "unknown key"))
            .collect(),
        K::Required { property } => {
            let key = property
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| property.to_string());
            vec![ConfigIssue::new(join_path(&path, &key), "required key is missing")]
        }
        K::Type { .. } | K::Enum { .. } => {
            let shown = match err.instance.as_ref() {
                serde_json::Value::String(s) => format!("`{s}`"),
                other => other.to_string(),
            };
            let msg = err.to_string();
            let expected = msg.split(" is not ").nth(1).map(str::to_string).unwrap_or(msg);
            vec![ConfigIssue::new(path, format!("{shown} is not {expected}"))]
        }
        _ => vec![ConfigIssue::new(path, err.to_string())],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_becomes_key_path() {
        assert_eq!(display_path("/routes/0/match/paht"), "routes[0].match.paht");
        assert_eq!(display_path(""), "(root)");
    }

    #[test]
    fn minimal_config_is_valid() {
        let (_, cfg) = check_text("upstream:\n  address: 127.0.0.1:3000\n").unwrap();
        assert_eq!(cfg.threads, 2);
        assert_eq!(cfg.admin_listen.to_string(), "127.0.0.1:9464");
    }

    #[test]
    fn three_mistakes_are_all_reported_with_paths() {
        let text = "upstream:\n  address: 127.0.0.1:3000\n  conect_timeout: 1s\nserver:\n  threads: many\nroutes:\n  - name: a\n    match: {path: /x}\n    policy: teleport\n";
        let issues = check_text(text).unwrap_err().0;
        let paths: Vec<_> = issues.iter().map(|i| i.path.as_str()).collect();
        assert!(paths.contains(&"upstream.conect_timeout"), "{issues:?}");
        assert!(paths.contains(&"server.threads"), "{issues:?}");
        assert!(paths.contains(&"routes[0].policy"), "{issues:?}");
        assert_eq!(issues.len(), 3, "{issues:?}");
    }

    #[test]
    fn semantic_errors_are_collected() {
        let text = "server: {listen: nowhere}\nadmin: {listen: 'bad'}\nupstream: {address: 127.0.0.1:3000}\nroutes:\n  - {name: a, match: {path: x}, policy: pass}\n  - {name: a, match: {path: /y}, policy: guard}\n";
        let issues = check_text(text).unwrap_err().0;
        let paths: Vec<_> = issues.iter().map(|i| i.path.as_str()).collect();
        for p in [
            "server.listen",
            "admin.listen",
            "routes[0].match.path",
            "routes[1].name",
            "routes[1].policy",
        ] {
            assert!(paths.contains(&p), "missing {p}: {issues:?}");
        }
    }

    #[test]
    fn secret_values_never_appear_in_errors() {
        let text = "admin: {token: 'env:PG_TEST_UNSET_TOKEN_VAR'}\nupstream: {address: 127.0.0.1:3000}\n";
        let err = check_text(text).unwrap_err().to_string();
        assert!(
            err.contains("admin.token") && err.contains("PG_TEST_UNSET_TOKEN_VAR"),
            "{err}"
        );
        let text = "admin: {token: 's3cr3t-value', listen: 127.0.0.1:1}\nupstream: {address: 127.0.0.1:3000}\nserver: {threads: 0}\n";
        let err = check_text(text).unwrap_err().to_string();
        assert!(!err.contains("s3cr3t-value"), "{err}");
    }
}
