//! Route table: method + path (exact or whole-segment prefix) → policy. Compiled once per config.

use crate::config::{ConfigIssue, DefaultAction, PolicyKind, RouteConfig};

/// How a route matches the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// The path equals this.
    Exact(String),
    /// The path is this or continues it with `/` (segment-wise).
    Prefix(String),
}

impl PathMatch {
    fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(p) => path == p,
            Self::Prefix(p) => {
                if p == "/" {
                    return true;
                }
                let p = p.strip_suffix('/').unwrap_or(p);
                path == p || (path.starts_with(p) && path.as_bytes().get(p.len()) == Some(&b'/'))
            }
        }
    }
}

/// A compiled route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Route name (metrics label, log field).
    pub name: String,
    /// Allowed methods (upper case); empty = any.
    pub methods: Vec<String>,
    /// Path matcher.
    pub path: PathMatch,
    /// Policy.
    pub policy: PolicyKind,
    /// Notification handler of a `notify` route.
    pub notify: Option<std::sync::Arc<crate::notify::NotifyRoute>>,
}

/// All routes in order plus the default action.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<Route>,
    default_action: DefaultAction,
}

/// Result of routing one request.
#[derive(Debug, Clone, Copy)]
pub enum Routed<'a> {
    /// A configured route matched.
    Route(&'a Route),
    /// No route matched; apply the default action.
    Default(DefaultAction),
}

/// Route name used in metrics and logs for requests no route matched.
pub const DEFAULT_ROUTE_NAME: &str = "_default";

impl RouteTable {
    /// Compiles routes, reporting every problem with its key path.
    /// `guard_configured` says whether a top-level `guard` section exists (needed by `guard` routes).
    pub fn compile(
        routes: &[RouteConfig],
        default_action: DefaultAction,
        guard_configured: bool,
    ) -> Result<Self, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let mut compiled = Vec::with_capacity(routes.len());
        let mut names = std::collections::HashSet::new();
        for (i, r) in routes.iter().enumerate() {
            let at = |k: &str| format!("routes[{i}].{k}");
            if r.name.is_empty() || !r.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
                issues.push(ConfigIssue::new(
                    at("name"),
                    "must be non-empty and use only A-Z a-z 0-9 - _ .",
                ));
            } else if r.name == DEFAULT_ROUTE_NAME || !names.insert(r.name.clone()) {
                issues.push(ConfigIssue::new(
                    at("name"),
                    format!("route name `{}` is used more than once", r.name),
                ));
            }
            let mut methods = Vec::new();
            for (j, m) in r.matcher.methods.iter().enumerate() {
                if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
                    issues.push(ConfigIssue::new(
                        format!("routes[{i}].match.methods[{j}]"),
                        format!("`{m}` is not an upper-case HTTP method"),
                    ));
                } else {
                    methods.push(m.clone());
                }
            }
            let path = match (&r.matcher.path, &r.matcher.path_prefix) {
                (Some(p), None) => check_path(p, &at("match.path"), &mut issues).map(PathMatch::Exact),
                (None, Some(p)) => check_path(p, &at("match.path_prefix"), &mut issues).map(PathMatch::Prefix),
                _ => {
                    issues.push(ConfigIssue::new(
                        at("match"),
                        "set exactly one of `path` and `path_prefix`",
                    ));
                    None
                }
            };
            let mut notify = None;
            match (r.policy, &r.notify) {
                (PolicyKind::Pass, None) => {}
                (PolicyKind::Notify, Some(cfg)) => match cfg.build(&r.name) {
                    Ok(n) => notify = Some(n),
                    Err(e) => issues.extend(
                        e.into_iter()
                            .map(|i| ConfigIssue::new(at(&format!("notify.{}", i.path)), i.message)),
                    ),
                },
                (PolicyKind::Notify, None) => {
                    issues.push(ConfigIssue::new(at("notify"), "required with `policy: notify`"))
                }
                (_, Some(_)) => issues.push(ConfigIssue::new(at("notify"), "only allowed with `policy: notify`")),
                (PolicyKind::Guard, None) if !guard_configured => issues.push(ConfigIssue::new(
                    at("policy"),
                    "policy `guard` needs a top-level `guard` section",
                )),
                (PolicyKind::Guard, None) => {}
            }
            if let Some(path) = path {
                compiled.push(Route {
                    name: r.name.clone(),
                    methods,
                    path,
                    policy: r.policy,
                    notify,
                });
            }
        }
        if issues.is_empty() {
            Ok(Self {
                routes: compiled,
                default_action,
            })
        } else {
            Err(issues)
        }
    }

    /// The first route matching `method` and `path`, else the default action.
    pub fn route(&self, method: &str, path: &str) -> Routed<'_> {
        self.routes
            .iter()
            .find(|r| (r.methods.is_empty() || r.methods.iter().any(|m| m == method)) && r.path.matches(path))
            .map(Routed::Route)
            .unwrap_or(Routed::Default(self.default_action))
    }

    /// All routes in order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

fn check_path(p: &str, at: &str, issues: &mut Vec<ConfigIssue>) -> Option<String> {
    if !p.starts_with('/') || p.contains('?') || p.contains('#') {
        issues.push(ConfigIssue::new(
            at,
            format!("`{p}` must start with `/` and carry no query or fragment"),
        ));
        None
    } else {
        Some(p.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RouteMatch;

    fn route(name: &str, methods: &[&str], path: Option<&str>, prefix: Option<&str>) -> RouteConfig {
        RouteConfig {
            name: name.into(),
            matcher: RouteMatch {
                methods: methods.iter().map(|s| s.to_string()).collect(),
                path: path.map(Into::into),
                path_prefix: prefix.map(Into::into),
            },
            policy: PolicyKind::Pass,
            notify: None,
        }
    }

    #[test]
    fn first_match_wins_and_prefix_is_segment_wise() {
        let t = RouteTable::compile(
            &[
                route("orders", &["POST"], Some("/v1/orders"), None),
                route("v1", &[], None, Some("/v1")),
            ],
            DefaultAction::NotFound,
            false,
        )
        .unwrap();
        let name = |m, p| match t.route(m, p) {
            Routed::Route(r) => r.name.clone(),
            Routed::Default(_) => "-".into(),
        };
        assert_eq!(name("POST", "/v1/orders"), "orders");
        assert_eq!(name("GET", "/v1/orders"), "v1");
        assert_eq!(name("GET", "/v1"), "v1");
        assert_eq!(name("GET", "/v10"), "-");
        assert_eq!(name("GET", "/v1/a/b"), "v1");
    }

    #[test]
    fn path_and_prefix_are_exclusive() {
        let err =
            RouteTable::compile(&[route("x", &[], Some("/a"), Some("/b"))], DefaultAction::Pass, false).unwrap_err();
        assert_eq!(err[0].path, "routes[0].match");
    }
}
