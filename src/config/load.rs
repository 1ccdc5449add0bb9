//! Loading: YAML text → JSON Schema validation (every structural error, with its key path) →
//! typed [`FileConfig`] → semantic checks and secret resolution → internal [`Config`].

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use super::{Config, FileConfig, Upstream, WithoutStore};
use crate::issue::{ConfigIssue, ConfigIssues};
use crate::proxy::request_head::REQUEST_ID;
use crate::proxy::routes::{DefaultAction, PolicyKind, RouteTable};
use crate::secret;

/// The JSON Schema of the configuration file, generated from [`FileConfig`].
pub fn schema_json() -> serde_json::Value {
    let schema = schemars::schema_for!(FileConfig);
    serde_json::to_value(schema).unwrap_or_default()
}

/// The schema and its validator, built once per process (building the validator takes
/// milliseconds; every check, start and reload uses it).
fn schema_validator() -> &'static Result<(serde_json::Value, jsonschema::Validator), String> {
    static VALIDATOR: std::sync::OnceLock<Result<(serde_json::Value, jsonschema::Validator), String>> =
        std::sync::OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let schema = schema_json();
        let validator = jsonschema::validator_for(&schema).map_err(|e| e.to_string())?;
        Ok((schema, validator))
    })
}

/// Reads and validates a configuration file.
pub fn load_file(path: &Path) -> Result<(FileConfig, Config), ConfigIssues> {
    check_text(&read_config(path)?)
}

fn read_config(path: &Path) -> Result<String, ConfigIssues> {
    std::fs::read_to_string(path).map_err(|e| {
        ConfigIssues(vec![ConfigIssue::new(
            "(file)",
            format!("cannot read {}: {e}", path.display()),
        )])
    })
}

/// Validates configuration text and builds the internal config.
pub fn check_text(text: &str) -> Result<(FileConfig, Config), ConfigIssues> {
    check_text_tracked(text).0
}

/// [`check_text`], also returning the `file:` secrets the text references (whether or not it is
/// valid): the reloader watches them so a rotated Kubernetes Secret is applied like a config edit.
pub(crate) fn check_text_tracked(text: &str) -> (Result<(FileConfig, Config), ConfigIssues>, Vec<PathBuf>) {
    secret::track_resolution(false, || check(text, Mode::Online))
}

/// Validates a configuration file without its secrets: `env:` and `file:` references are not
/// read and the upstream host name is not resolved, so CI can lint the file a deployment ships
/// without access to the secrets or the cluster's DNS. Everything else is checked as at start.
pub(crate) fn load_file_offline(path: &Path) -> Result<FileConfig, ConfigIssues> {
    check_text_offline(&read_config(path)?)
}

/// [`load_file_offline`] over configuration text: no secret is read and no name resolved.
pub fn check_text_offline(text: &str) -> Result<FileConfig, ConfigIssues> {
    let file = check_structure(text)?;
    let (built, _) = secret::track_resolution(true, || build(&file, Mode::Offline));
    match built {
        Ok(_) => Ok(file),
        Err(ConfigIssues(mut issues)) => {
            issues.retain(|i| i.message != secret::NOT_READ_OFFLINE);
            if issues.is_empty() {
                Ok(file)
            } else {
                Err(ConfigIssues(issues))
            }
        }
    }
}

/// Whether building may read secrets and resolve names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Online,
    Offline,
}

/// YAML → JSON Schema validation → typed file config: every structural error with its key path.
fn check_structure(text: &str) -> Result<FileConfig, ConfigIssues> {
    let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(|e| {
        let path = match e.location() {
            Some(loc) => format!("(line {}, column {})", loc.line(), loc.column()),
            None => "(document)".to_string(),
        };
        ConfigIssues(vec![ConfigIssue::new(path, format!("not valid YAML: {e}"))])
    })?;
    let json = yaml_to_json(yaml, "")?;

    let (schema, validator) = schema_validator()
        .as_ref()
        .map_err(|e| ConfigIssues(vec![ConfigIssue::new("(schema)", e.clone())]))?;
    let mut issues: Vec<ConfigIssue> = validator
        .iter_errors(&json)
        .flat_map(|e| schema_issue(schema, e, ""))
        .collect();
    if !issues.is_empty() {
        issues.sort_by(|a, b| a.path.cmp(&b.path));
        issues.dedup();
        return Err(ConfigIssues(issues));
    }

    serde_path_to_error::deserialize(json).map_err(|e| {
        ConfigIssues(vec![ConfigIssue::new(
            display_serde_path(&e.path().to_string()),
            e.inner().to_string(),
        )])
    })
}

fn check(text: &str, mode: Mode) -> Result<(FileConfig, Config), ConfigIssues> {
    let file = check_structure(text)?;
    let config = build(&file, mode)?;
    Ok((file, config))
}

/// Semantic checks and secret resolution; collects every issue.
fn build(file: &FileConfig, mode: Mode) -> Result<Config, ConfigIssues> {
    let mut issues = Vec::new();

    let listen = parse_addr(&file.server.listen, "server.listen", &mut issues);
    if file.server.threads == 0 || file.server.threads > 1024 {
        issues.push(ConfigIssue::new("server.threads", "must be between 1 and 1024"));
    }
    let tls = file.server.tls.as_ref().and_then(|t| match t.load() {
        Ok(tls) => Some(tls),
        Err(issue) => {
            issues.push(issue);
            None
        }
    });
    let admin_listen = parse_addr(&file.admin.listen, "admin.listen", &mut issues);
    if let (Some(a), Some(b)) = (listen, admin_listen) {
        if a == b {
            issues.push(ConfigIssue::new("admin.listen", "must differ from server.listen"));
        }
    }
    let probe_listen = file
        .admin
        .probe_listen
        .as_ref()
        .and_then(|p| parse_addr(p, "admin.probe_listen", &mut issues));
    if let Some(p) = probe_listen {
        if Some(p) == listen || Some(p) == admin_listen {
            issues.push(ConfigIssue::new(
                "admin.probe_listen",
                "must differ from server.listen and admin.listen",
            ));
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
    let upstream_socket = match mode {
        Mode::Online => resolve_upstream(&up.address),
        Mode::Offline => unresolved_upstream(&up.address),
    };
    let upstream_socket = match upstream_socket {
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
    if file.server.body.idle_timeout.is_zero() {
        issues.push(ConfigIssue::new(
            "server.body.idle_timeout",
            "must be greater than zero",
        ));
    }
    if file.reload.interval.is_zero() {
        issues.push(ConfigIssue::new("reload.interval", "must be greater than zero"));
    }
    let server = &file.server;
    if server.max_connections == 0 || server.max_connections > 1_000_000 {
        issues.push(ConfigIssue::new(
            "server.max_connections",
            "must be between 1 and 1000000",
        ));
    }
    // Pingora refuses heads over 1048575 bytes and 256 fields itself; a larger limit would
    // promise what it cannot keep.
    if !(1024..=1_048_575).contains(&server.head.max_bytes) {
        issues.push(ConfigIssue::new(
            "server.head.max_bytes",
            "must be between 1024 and 1048575",
        ));
    }
    if !(1..=256).contains(&server.head.max_fields) {
        issues.push(ConfigIssue::new("server.head.max_fields", "must be between 1 and 256"));
    }
    if server.head.timeout.is_zero() {
        issues.push(ConfigIssue::new("server.head.timeout", "must be greater than zero"));
    }
    if server.keepalive_timeout.is_zero() {
        issues.push(ConfigIssue::new(
            "server.keepalive_timeout",
            "must be greater than zero",
        ));
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

    let (merchants, merchant_issues) = crate::egress::Merchants::build(&file.merchants);
    issues.extend(merchant_issues);
    let routes = match RouteTable::compile(&file.routes, file.default_action, file.guard.is_some(), &merchants) {
        Ok(table) => Some(table),
        Err(route_issues) => {
            issues.extend(route_issues);
            None
        }
    };

    let query_accounts = routes
        .as_ref()
        .map(|table| crate::orders::query_accounts(&merchants, table, &mut issues))
        .unwrap_or_default();
    let reconcile_accounts = routes
        .as_ref()
        .map(|table| merchants.reconcilable(table))
        .unwrap_or_default();
    if !issues.is_empty() {
        return Err(ConfigIssues(issues));
    }
    let mut read_headers = guard.as_ref().map(|g| g.headers_read()).unwrap_or_default();
    read_headers.push(http::HeaderName::from_static(REQUEST_ID));
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
        tls,
        body: file.server.body,
        connections: crate::config::ConnectionLimits::from_server(&file.server),
        threads: file.server.threads,
        grace_period: file.server.grace_period,
        shutdown_timeout: file.server.shutdown_timeout,
        admin_listen,
        probe_listen,
        admin_token,
        without_store: without_store(file),
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
        certificate_accounts: merchants.certificate_accounts(),
        query_accounts,
        reconcile_accounts,
    })
}

/// Which routes serve while the store is unreachable (see [`crate::health`]): `pass` routes and
/// a `pass` default action always; `guard` routes unless a check fails closed on them (the
/// signature's nonce, or an enforced rate or order rule with `on_store_error: deny` that may
/// apply to the route); `notify` routes never (deduplication fails closed).
fn without_store(file: &FileConfig) -> WithoutStore {
    use crate::guard::{Mode, StoreErrorPolicy};
    let guard_fails_closed = |route: &str| {
        let Some(g) = &file.guard else {
            return false;
        };
        let applies = |routes: &[String]| routes.is_empty() || routes.iter().any(|r| r == route);
        let denies = |mode: Mode, policy: StoreErrorPolicy| mode == Mode::Enforce && policy == StoreErrorPolicy::Deny;
        g.signature.is_some()
            || g.rate_rules
                .iter()
                .any(|r| applies(&r.matches.routes) && denies(r.mode, r.on_store_error))
            || g.order_rules
                .iter()
                .any(|r| applies(&r.matches.routes) && denies(r.mode, r.on_store_error))
    };
    let mut out = WithoutStore::default();
    for route in &file.routes {
        let closed = match route.policy {
            PolicyKind::Pass => false,
            PolicyKind::Guard => guard_fails_closed(&route.name),
            PolicyKind::Notify => true,
            // An egress call needs only the channel.
            PolicyKind::Egress => false,
        };
        if closed {
            out.failing_closed.push(route.name.clone());
        } else {
            out.serving.push(route.name.clone());
        }
    }
    if file.default_action == DefaultAction::Pass {
        out.serving.push("(default)".to_string());
    }
    out
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
pub(crate) fn resolve_upstream(address: &str) -> Result<SocketAddr, String> {
    if address.trim().is_empty() || !address.contains(':') {
        return Err(format!("`{address}` is not host:port"));
    }
    address
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{address}`: {e}"))?
        .next()
        .ok_or_else(|| format!("`{address}` resolves to no address"))
}

/// Offline stand-in for [`resolve_upstream`]: checks the `host:port` form without asking DNS.
/// The address it returns for a host name is a placeholder; an offline config is never served.
fn unresolved_upstream(address: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = address.parse::<SocketAddr>() {
        return Ok(addr);
    }
    match address.rsplit_once(':') {
        Some((host, port)) if !host.trim().is_empty() && !host.contains(char::is_whitespace) => port
            .parse::<u16>()
            .map(|port| SocketAddr::from(([0, 0, 0, 0], port)))
            .map_err(|_| format!("`{address}` is not host:port")),
        _ => Err(format!("`{address}` is not host:port")),
    }
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

/// `$ref`s (into `definitions`) and single-entry `allOf`s followed to the node they name.
fn deref<'s>(schema: &'s serde_json::Value, mut node: &'s serde_json::Value) -> Option<&'s serde_json::Value> {
    for _ in 0..16 {
        match node
            .get("$ref")
            .and_then(|r| r.as_str())
            .and_then(|r| r.strip_prefix("#/"))
        {
            Some(r) => node = schema.pointer(&format!("/{r}"))?,
            None => match node.get("allOf").and_then(|a| a.as_array()).filter(|a| a.len() == 1) {
                Some(a) => node = &a[0],
                None => return Some(node),
            },
        }
    }
    Some(node)
}

/// The schema node describing the value at `pointer` (following `properties`, `items`,
/// `additionalProperties` and `$ref`s into `definitions`).
fn schema_node<'s>(schema: &'s serde_json::Value, pointer: &str) -> Option<&'s serde_json::Value> {
    let mut node = deref(schema, schema)?;
    for seg in pointer.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        let next = node
            .get("properties")
            .and_then(|p| p.get(&seg))
            .or_else(|| node.get("items"))
            .or_else(|| node.get("additionalProperties").filter(|a| a.is_object()))?;
        node = deref(schema, next)?;
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

/// Secret fields are `writeOnly` in the schema (see [`super::secret::SecretRef`]); a list of
/// secrets counts too, so a secret written where the list belongs is not shown either.
fn is_secret(node: Option<&serde_json::Value>) -> bool {
    let write_only = |n: &serde_json::Value| n.get("writeOnly").and_then(|w| w.as_bool()) == Some(true);
    node.is_some_and(|n| write_only(n) || n.get("items").is_some_and(write_only))
}

/// How an error message may show a value: scalars as themselves, never a secret, and never a
/// whole object or list (which can hold secrets anywhere inside).
fn shown_value(value: &serde_json::Value, secret: bool) -> String {
    match value {
        _ if secret => "the value".to_string(),
        serde_json::Value::Object(_) => "a mapping".to_string(),
        serde_json::Value::Array(_) => "a list".to_string(),
        serde_json::Value::String(s) => format!("`{s}`"),
        other => other.to_string(),
    }
}

/// The key a branch of an externally tagged enum stands for (`{stripe: {...}}` → `stripe`).
fn branch_tag(branch: &serde_json::Value) -> Option<&str> {
    match branch.get("required").and_then(|r| r.as_array()).map(Vec::as_slice) {
        Some([key]) if branch.get("type").and_then(|t| t.as_str()) == Some("object") => key.as_str(),
        _ => None,
    }
}

fn json_type_matches(branch: &serde_json::Value, value: &serde_json::Value) -> bool {
    let Some(ty) = branch.get("type").and_then(|t| t.as_str()) else {
        return true;
    };
    match value {
        serde_json::Value::Null => ty == "null",
        serde_json::Value::Bool(_) => ty == "boolean",
        serde_json::Value::Number(n) => ty == "number" || (ty == "integer" && !n.is_f64()),
        serde_json::Value::String(_) => ty == "string",
        serde_json::Value::Array(_) => ty == "array",
        serde_json::Value::Object(_) => ty == "object",
    }
}

/// An `anyOf`/`oneOf` failure (an optional section, or a choice such as the channel of a notify
/// route): the value is checked against the one branch it was meant for, so the errors name the
/// exact keys inside instead of repeating the whole section (which may hold inline secrets).
fn branch_issues(
    schema: &serde_json::Value,
    local: &str,
    pointer: &str,
    instance: &serde_json::Value,
) -> Vec<ConfigIssue> {
    let path = display_path(pointer);
    let node = schema_node(schema, local);
    let branches: Vec<&serde_json::Value> = ["anyOf", "oneOf"]
        .iter()
        .filter_map(|k| node.and_then(|n| n.get(*k)).and_then(|b| b.as_array()))
        .flatten()
        .filter_map(|b| deref(schema, b))
        .collect();
    let tags: Vec<&str> = branches.iter().filter_map(|b| branch_tag(b)).collect();
    let candidates: Vec<&serde_json::Value> = branches
        .iter()
        .copied()
        .filter(|b| json_type_matches(b, instance))
        .filter(|b| match (branch_tag(b), instance) {
            (Some(tag), serde_json::Value::Object(map)) => map.contains_key(tag),
            _ => true,
        })
        .collect();
    if let [branch] = candidates.as_slice() {
        if let Some(built) = branch_validator(schema, branch) {
            let (sub, validator) = &*built;
            let issues: Vec<ConfigIssue> = validator
                .iter_errors(instance)
                .flat_map(|e| schema_issue(sub, e, pointer))
                .collect();
            if !issues.is_empty() {
                return issues;
            }
        }
    }
    match instance {
        serde_json::Value::Object(map) if tags.len() == branches.len() && !tags.is_empty() => {
            let given: Vec<&str> = map.keys().map(String::as_str).collect();
            let msg = match given.as_slice() {
                [one] => format!("`{one}` is not one of: {}", tags.join(", ")),
                _ => format!("expected exactly one of the keys: {}", tags.join(", ")),
            };
            vec![ConfigIssue::new(path, msg)]
        }
        other => vec![ConfigIssue::new(
            path,
            format!(
                "{} does not match any allowed form of this key",
                shown_value(other, is_secret(node))
            ),
        )],
    }
}

/// A branch of an `anyOf`/`oneOf` of payguard's schema as a schema of its own (with the
/// `definitions` of `schema`) and its validator. Built once per branch and process: the schema
/// is fixed, and compiling a validator (its patterns) costs far more than checking a value.
/// The cache holds at most one entry per branch of the schema.
fn branch_validator(
    schema: &serde_json::Value,
    branch: &serde_json::Value,
) -> Option<std::sync::Arc<(serde_json::Value, jsonschema::Validator)>> {
    type Built = std::sync::Arc<(serde_json::Value, jsonschema::Validator)>;
    static BUILT: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<String, Built>>> =
        std::sync::OnceLock::new();
    let cache = BUILT.get_or_init(Default::default);
    let key = branch.to_string();
    if let Some(hit) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Some(hit.clone());
    }
    let mut sub = branch.clone();
    if let (Some(obj), Some(defs)) = (sub.as_object_mut(), schema.get("definitions")) {
        obj.entry("definitions").or_insert_with(|| defs.clone());
    }
    let validator = jsonschema::validator_for(&sub).ok()?;
    let built: Built = std::sync::Arc::new((sub, validator));
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, built.clone());
    Some(built)
}

/// Turns one schema validation error into issues with key paths. `base` is the JSON pointer of
/// the document `schema` describes (empty for the whole file). Messages never include a secret
/// value or a whole section.
fn schema_issue(schema: &serde_json::Value, err: jsonschema::ValidationError<'_>, base: &str) -> Vec<ConfigIssue> {
    use jsonschema::error::ValidationErrorKind as K;
    let local = err.instance_path.to_string();
    let pointer = format!("{base}{local}");
    let path = display_path(&pointer);
    let node = schema_node(schema, &local);
    let secret = is_secret(node);
    if node.is_some_and(crate::schema::is_duration) && matches!(err.kind, K::Type { .. } | K::Pattern { .. }) {
        let msg = crate::schema::missing_unit_hint(err.instance.as_ref()).unwrap_or_else(|| {
            format!(
                "{} is not a duration such as 300ms, 10s, 5m or 1h 30m",
                shown_value(err.instance.as_ref(), secret)
            )
        });
        return vec![ConfigIssue::new(path, msg)];
    }
    if let (K::OneOfNotValid | K::AnyOf | K::Enum { .. }, serde_json::Value::String(s)) =
        (&err.kind, err.instance.as_ref())
    {
        let allowed = node.map(allowed_values).unwrap_or_default();
        if !allowed.is_empty() && !secret {
            return vec![ConfigIssue::new(
                path,
                format!("`{s}` is not one of: {}", allowed.join(", ")),
            )];
        }
    }
    match &err.kind {
        K::AnyOf | K::OneOfNotValid => branch_issues(schema, &local, &pointer, err.instance.as_ref()),
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
            let msg = err.to_string();
            let expected = msg
                .split(" is not ")
                .nth(1)
                .map(str::to_string)
                .unwrap_or_else(|| "allowed here".to_string());
            let shown = shown_value(err.instance.as_ref(), secret);
            vec![ConfigIssue::new(path, format!("{shown} is not {expected}"))]
        }
        _ => {
            // jsonschema's messages start with the value itself; keep them for plain scalars only.
            let msg = err.to_string();
            let value = err.instance.to_string();
            let msg = match err.instance.as_ref() {
                serde_json::Value::Object(_) | serde_json::Value::Array(_) => msg.replace(&value, "the value"),
                _ if secret => msg.replace(&value, "the value"),
                _ => msg,
            };
            vec![ConfigIssue::new(path, msg)]
        }
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
    fn a_duration_without_unit_names_the_unit_to_add() {
        let base = "upstream:\n  address: 127.0.0.1:3000\n";
        for (value, shown) in [("300", "300"), ("'300'", "300"), ("'2.5'", "2.5")] {
            let issues = check_text(&format!("{base}server:\n  grace_period: {value}\n"))
                .unwrap_err()
                .0;
            assert_eq!(issues.len(), 1, "{issues:?}");
            assert_eq!(issues[0].path, "server.grace_period");
            assert!(issues[0].message.contains(&format!("use \"{shown}s\"")), "{issues:?}");
        }
        // The same hint inside a channel's config and an optional duration.
        let text = format!(
            "{base}guard:\n  order_rules:\n    - name: o\n      user: 'body:/user_id'\n      window: {{sliding: 600}}\n      tiers: [{{over: 3, action: reject}}]\n"
        );
        let issues = check_text(&text).unwrap_err().0;
        assert!(
            issues
                .iter()
                .any(|i| i.path.ends_with("window.sliding") && i.message.contains("use \"600s\"")),
            "{issues:?}"
        );
        let issues = check_text(&format!("{base}server:\n  grace_period: 5 parsecs\n"))
            .unwrap_err()
            .0;
        assert_eq!(
            issues[0].message,
            "`5 parsecs` is not a duration such as 300ms, 10s, 5m or 1h 30m"
        );
        for ok in ["1h 30m", "1.5s", "250ms", "2 days", "0s"] {
            check_text(&format!("{base}server:\n  grace_period: {ok}\n")).unwrap_or_else(|e| panic!("{ok}: {e:?}"));
        }
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

    /// Every inline secret used by the mistakes below; none may appear in any message.
    const INLINE_SECRETS: [&str; 4] = [
        "super-secret-inline-value",
        "whsec_leakleakleak",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "123456789",
    ];

    fn issues_of(text: &str) -> Vec<String> {
        let issues = check_text(text).unwrap_err();
        let shown = issues.to_string();
        for secret in INLINE_SECRETS {
            assert!(!shown.contains(secret), "secret `{secret}` leaked:\n{shown}");
        }
        issues.0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn errors_inside_guard_and_notify_name_the_exact_key_not_the_section() {
        let guard = "upstream: {address: 127.0.0.1:3000}\nguard:\n  signature:\n    keys:\n      - id: app\n        secrets: [super-secret-inline-value]\n        bogus: 1\n";
        assert_eq!(issues_of(guard), ["guard.signature.keys[0].bogus: unknown key"]);

        let notify = "upstream: {address: 127.0.0.1:3000}\nroutes:\n  - name: n\n    match: {path: /n}\n    policy: notify\n    notify:\n      channel:\n        stripe: {endpoint_secrets: [whsec_leakleakleak], tolerence: 5m}\n      webhook_secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n";
        assert_eq!(
            issues_of(notify),
            ["routes[0].notify.channel.stripe.tolerence: unknown key"]
        );

        // The list is every registered channel, in registration order.
        let channel = notify.replace("stripe:", "strpe:");
        let names: Vec<&str> = crate::channels::ChannelKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            names[..6],
            [
                "alipay",
                "wechatpay_v3",
                "wechatpay_v2",
                "stripe",
                "unionpay",
                "standard_webhooks"
            ]
        );
        assert_eq!(
            issues_of(&channel),
            [format!(
                "routes[0].notify.channel: `strpe` is not one of: {}",
                names.join(", ")
            )]
        );
    }

    #[test]
    fn secrets_in_the_wrong_shape_are_not_shown() {
        let text = "admin: {token: 123456789}\nupstream: {address: 127.0.0.1:3000}\nguard:\n  signature:\n    keys:\n      - id: app\n        secrets: super-secret-inline-value\nroutes:\n  - name: n\n    match: {path: /n}\n    policy: notify\n    notify:\n      channel: {stripe: {endpoint_secrets: [whsec_leakleakleak]}}\n      webhook_secret: [whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw]\n";
        let issues = issues_of(text);
        let paths: Vec<&str> = issues.iter().filter_map(|i| i.split(": ").next()).collect();
        assert_eq!(
            paths,
            [
                "admin.token",
                "guard.signature.keys[0].secrets",
                "routes[0].notify.webhook_secret"
            ],
            "{issues:?}"
        );
    }

    #[test]
    fn offline_build_skips_secrets_and_name_resolution_only() {
        let file = check_structure(
            "admin: {token: 'env:PG_TEST_OFFLINE_UNSET'}\nupstream: {address: 'shop.invalid:3000'}\nserver: {threads: 0}\n",
        )
        .unwrap();
        let (built, _) = secret::track_resolution(true, || build(&file, Mode::Offline));
        let issues = built.unwrap_err().0;
        let real: Vec<&ConfigIssue> = issues
            .iter()
            .filter(|i| i.message != secret::NOT_READ_OFFLINE)
            .collect();
        assert_eq!(real.len(), 1, "{issues:?}");
        assert_eq!(real[0].path, "server.threads");
        assert!(unresolved_upstream("shop:x").is_err());
        assert!(unresolved_upstream("[::1]:3000").is_ok());
    }

    #[test]
    fn readiness_counts_the_routes_that_serve_without_the_store() {
        let text = "upstream: {address: 127.0.0.1:3000}\nguard:\n  rate_rules:\n    - {name: strict, match: {routes: [orders]}, key: [client_ip], bucket: {capacity: 1, refill: 1, per: 1s}, on_store_error: deny}\n    - {name: lenient, key: [client_ip], bucket: {capacity: 1, refill: 1, per: 1s}}\nroutes:\n  - {name: orders, match: {path: /orders}, policy: guard}\n  - {name: search, match: {path: /search}, policy: guard}\n  - {name: api, match: {path_prefix: /api}, policy: pass}\ndefault_action: not_found\n";
        let (_, cfg) = check_text(text).unwrap();
        assert_eq!(cfg.without_store.serving, ["search", "api"]);
        assert_eq!(cfg.without_store.failing_closed, ["orders"]);
    }
}
