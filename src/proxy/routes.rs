//! Route table: method + canonical path (exact or whole-segment prefix) → policy. Compiled once
//! per config. Requests are matched on the routing form of their canonical path
//! ([`crate::canonical::path::CanonicalPath::routing`]), never on the path as sent.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::canonical::method_listed;
use crate::canonical::path::{config_pattern, has_segment_prefix, matches_exact};
use crate::issue::ConfigIssue;

/// One route: a request matcher and the policy applied to what it matches.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteConfig {
    /// Route name, used in metrics, logs and rule matchers. Unique.
    pub(crate) name: String,
    /// Which requests this route takes.
    #[serde(rename = "match")]
    pub(crate) matcher: RouteMatch,
    /// What payguard does with them.
    pub(crate) policy: PolicyKind,
    /// Settings of a `notify` route (required with `policy: notify`).
    #[serde(default)]
    pub(crate) notify: Option<crate::notify::config::NotifyConfig>,
    /// Settings of an `egress` route (required with `policy: egress`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) egress: Option<crate::egress::EgressConfig>,
}

/// Request matcher of a route. Exactly one of `path` and `path_prefix`. Paths are matched on
/// the request's canonical path (docs/configuration.md, "Route matching and path
/// normalization"), so `/v1/%6Frders`, `//v1/./orders` and `/v1/x/../orders` all match
/// `path: /v1/orders`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteMatch {
    /// HTTP methods (upper case); empty means any. `GET` also takes `HEAD`.
    #[serde(default)]
    pub(crate) methods: Vec<String>,
    /// Exact path (no query), in canonical form.
    #[serde(default)]
    pub(crate) path: Option<String>,
    /// Path prefix, matched on whole segments (`/v1` matches `/v1` and `/v1/x`, not `/v10`).
    #[serde(default)]
    pub(crate) path_prefix: Option<String>,
    /// Whether an exact `path` also matches the path with (or without) one trailing `/`:
    /// `match` (default) or `strict`.
    #[serde(default)]
    pub(crate) trailing_slash: TrailingSlash,
    /// Match ASCII letters of the path case-insensitively. Default: `true` on `guard` and
    /// `notify` routes (a protected route catches every spelling a case-insensitive backend
    /// would route to it), `false` on `pass` routes.
    #[serde(default)]
    pub(crate) case_insensitive: Option<bool>,
}

/// Trailing-slash handling of an exact route path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TrailingSlash {
    /// `/x` and `/x/` both match (most frameworks route them to one handler).
    #[default]
    Match,
    /// Only the path exactly as written matches.
    Strict,
}

/// Route policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum PolicyKind {
    /// Proxy only.
    Pass,
    /// Client API guard (signature, nonce, rate, order and IP rules).
    Guard,
    /// Payment-channel notification endpoint.
    Notify,
    /// Signed calls from the backend to a payment channel's API (docs/egress.md).
    Egress,
}

/// Fate of requests no route matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DefaultAction {
    /// Proxy them unchanged (a sidecar in front of a whole app; the usual choice).
    #[default]
    Pass,
    /// Answer 404 problem+json without contacting the backend.
    NotFound,
}

/// How a route matches the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PathMatch {
    /// The path equals this.
    Exact(String),
    /// The path is this or continues it with `/` (segment-wise).
    Prefix(String),
}

/// A compiled route.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    /// Route name (metrics label, log field).
    pub(crate) name: String,
    /// Allowed methods (upper case); empty = any. `GET` also takes `HEAD`.
    pub(crate) methods: Vec<String>,
    /// Path matcher.
    pub(crate) path: PathMatch,
    /// An exact path also matches with or without one trailing `/`.
    pub(crate) trailing_slash: bool,
    /// ASCII letters of the path match case-insensitively.
    pub(crate) case_insensitive: bool,
    /// Policy.
    pub(crate) policy: PolicyKind,
    /// Notification handler of a `notify` route.
    pub(crate) notify: Option<std::sync::Arc<crate::notify::NotifyRoute>>,
    /// Channel-call handler of an `egress` route.
    pub(crate) egress: Option<std::sync::Arc<crate::egress::EgressRoute>>,
}

impl Route {
    /// Whether this route takes a request (method upper case, path in routing form).
    pub(crate) fn matches(&self, method: &str, path: &str) -> bool {
        method_listed(&self.methods, method) && self.matches_path(path)
    }

    fn matches_path(&self, path: &str) -> bool {
        match &self.path {
            PathMatch::Exact(p) => matches_exact(path, p, self.trailing_slash, self.case_insensitive),
            PathMatch::Prefix(p) => has_segment_prefix(path, p, self.case_insensitive),
        }
    }

    fn pattern(&self) -> &str {
        match &self.path {
            PathMatch::Exact(p) | PathMatch::Prefix(p) => p,
        }
    }

    fn protected(&self) -> bool {
        self.policy != PolicyKind::Pass
    }

    fn describe(&self) -> String {
        let path = match &self.path {
            PathMatch::Exact(p) => p.clone(),
            PathMatch::Prefix(p) => format!("{}/…", p.trim_end_matches('/')),
        };
        let methods = if self.methods.is_empty() {
            "any method".to_string()
        } else {
            self.methods.join(",")
        };
        format!("`{}` ({} {path}, {})", self.name, methods, policy_name(self.policy))
    }
}

fn policy_name(p: PolicyKind) -> &'static str {
    match p {
        PolicyKind::Pass => "pass",
        PolicyKind::Guard => "guard",
        PolicyKind::Notify => "notify",
        PolicyKind::Egress => "egress",
    }
}

/// All routes in order plus the default action.
#[derive(Debug, Clone)]
pub(crate) struct RouteTable {
    routes: Vec<Route>,
    default_action: DefaultAction,
}

/// Result of routing one request.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Routed<'a> {
    /// A configured route matched.
    Route(&'a Route),
    /// No route matched; apply the default action.
    Default(DefaultAction),
}

/// Route name used in metrics and logs for requests no route matched.
pub(crate) const DEFAULT_ROUTE_NAME: &str = "_default";

impl RouteTable {
    /// Compiles routes, reporting every problem with its key path.
    /// `guard_configured` says whether a top-level `guard` section exists (needed by `guard` routes);
    /// `merchants` are the accounts `egress` routes sign with and notify routes may verify with.
    pub(crate) fn compile(
        routes: &[RouteConfig],
        default_action: DefaultAction,
        guard_configured: bool,
        merchants: &crate::egress::Merchants,
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
                if crate::canonical::check_method(m).is_err() {
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
            let mut egress = None;
            match (r.policy, &r.egress) {
                (PolicyKind::Egress, Some(cfg)) => match r.matcher.path_prefix.as_deref() {
                    // The channel path is what follows the route's prefix.
                    None => issues.push(ConfigIssue::new(
                        at("match"),
                        "an egress route matches with `path_prefix` (the channel path follows it)",
                    )),
                    Some(prefix) => match cfg.build(merchants, prefix) {
                        Ok(e) => egress = Some(std::sync::Arc::new(e)),
                        Err(e) => issues.extend(
                            e.into_iter()
                                .map(|i| ConfigIssue::new(at(&format!("egress.{}", i.path)), i.message)),
                        ),
                    },
                },
                (PolicyKind::Egress, None) => {
                    issues.push(ConfigIssue::new(at("egress"), "required with `policy: egress`"))
                }
                (_, Some(_)) => issues.push(ConfigIssue::new(at("egress"), "only allowed with `policy: egress`")),
                (_, None) => {}
            }
            let mut notify = None;
            match (r.policy, &r.notify) {
                (PolicyKind::Pass, None) => {}
                (PolicyKind::Notify, Some(cfg)) => match cfg.build(merchants) {
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
                (PolicyKind::Guard | PolicyKind::Egress, None) => {}
            }
            if let Some(path) = path {
                compiled.push(Route {
                    name: r.name.clone(),
                    methods,
                    path,
                    trailing_slash: r.matcher.trailing_slash == TrailingSlash::Match,
                    case_insensitive: r.matcher.case_insensitive.unwrap_or(r.policy != PolicyKind::Pass),
                    policy: r.policy,
                    notify,
                    egress,
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

    /// The first route matching `method` (upper case) and `path` (routing form), else the
    /// default action.
    pub(crate) fn route(&self, method: &str, path: &str) -> Routed<'_> {
        self.routes
            .iter()
            .find(|r| r.matches(method, path))
            .map(Routed::Route)
            .unwrap_or(Routed::Default(self.default_action))
    }

    /// All routes in order.
    pub(crate) fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Where protection is weaker than the table suggests: a `guard` or `notify` route that an
    /// earlier route takes requests from, and a protected path that other methods reach through
    /// a `pass` route or `default_action: pass`. Valid configurations; `payguard check` prints
    /// these as warnings with the route's key path.
    pub(crate) fn warnings(&self) -> Vec<ConfigIssue> {
        let mut out = Vec::new();
        for (j, b) in self.routes.iter().enumerate().filter(|(_, r)| r.protected()) {
            let at = format!("routes[{j}]");
            for a in &self.routes[..j] {
                if !methods_overlap(&a.methods, &b.methods) || !paths_overlap(a, b) {
                    continue;
                }
                let how = if methods_cover(&a.methods, &b.methods) && path_covers(a, b) {
                    "every request it matches"
                } else {
                    "some requests it matches"
                };
                out.push(ConfigIssue::new(
                    &at,
                    format!(
                        "{}: {how} is taken by the earlier route {} and never reaches this one",
                        b.describe(),
                        a.describe()
                    ),
                ));
            }
            if b.methods.is_empty() {
                continue;
            }
            let literal = b.pattern();
            let through: Vec<String> = self
                .routes
                .iter()
                .filter(|c| c.policy == PolicyKind::Pass && c.matches_path(literal))
                .filter(|c| c.methods.is_empty() || c.methods.iter().any(|m| !method_listed(&b.methods, m)))
                .map(Route::describe)
                .chain((self.default_action == DefaultAction::Pass).then(|| "`default_action: pass`".to_string()))
                .collect();
            if let Some(first) = through.first() {
                out.push(ConfigIssue::new(
                    &at,
                    format!(
                        "{} protects {} only; other methods on this path reach the backend unprotected through {first} (list every method the backend serves there, or leave `methods` empty)",
                        b.describe(),
                        b.methods.join(",")
                    ),
                ));
            }
        }
        out
    }
}

fn methods_overlap(a: &[String], b: &[String]) -> bool {
    a.is_empty() || b.is_empty() || b.iter().any(|m| method_listed(a, m))
}

fn methods_cover(a: &[String], b: &[String]) -> bool {
    a.is_empty() || (!b.is_empty() && b.iter().all(|m| method_listed(a, m)))
}

/// Whether some path matches both routes (checked on the patterns themselves, which is exact for
/// segment prefixes and exact paths).
fn paths_overlap(a: &Route, b: &Route) -> bool {
    a.matches_path(b.pattern()) || b.matches_path(a.pattern())
}

/// Whether every path `b` matches, `a` matches too.
fn path_covers(a: &Route, b: &Route) -> bool {
    let case_ok = a.case_insensitive || !b.case_insensitive;
    let slash_ok = match &b.path {
        PathMatch::Exact(p) if b.trailing_slash && p != "/" => {
            let other = match p.strip_suffix('/') {
                Some(s) => s.to_string(),
                None => format!("{p}/"),
            };
            a.matches_path(&other)
        }
        _ => true,
    };
    let shape_ok = matches!(a.path, PathMatch::Prefix(_)) || matches!(b.path, PathMatch::Exact(_));
    case_ok && slash_ok && shape_ok && a.matches_path(b.pattern())
}

fn check_path(p: &str, at: &str, issues: &mut Vec<ConfigIssue>) -> Option<String> {
    match config_pattern(p) {
        Ok(()) => Some(p.to_string()),
        Err(message) => {
            issues.push(ConfigIssue::new(at, message));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, methods: &[&str], path: Option<&str>, prefix: Option<&str>) -> RouteConfig {
        RouteConfig {
            name: name.into(),
            matcher: RouteMatch {
                methods: methods.iter().map(|s| s.to_string()).collect(),
                path: path.map(Into::into),
                path_prefix: prefix.map(Into::into),
                ..Default::default()
            },
            policy: PolicyKind::Pass,
            notify: None,
            egress: None,
        }
    }

    fn guarded(mut r: RouteConfig) -> RouteConfig {
        r.policy = PolicyKind::Guard;
        r
    }

    fn name(t: &RouteTable, m: &str, p: &str) -> String {
        match t.route(m, p) {
            Routed::Route(r) => r.name.clone(),
            Routed::Default(_) => "-".into(),
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
            &crate::egress::Merchants::default(),
        )
        .unwrap();
        assert_eq!(name(&t, "POST", "/v1/orders"), "orders");
        assert_eq!(name(&t, "GET", "/v1/orders"), "v1");
        assert_eq!(name(&t, "GET", "/v1"), "v1");
        assert_eq!(name(&t, "GET", "/v10"), "-");
        assert_eq!(name(&t, "GET", "/v1/a/b"), "v1");
    }

    #[test]
    fn exact_paths_take_a_trailing_slash_unless_strict() {
        let mut strict = route("strict", &[], Some("/s"), None);
        strict.matcher.trailing_slash = TrailingSlash::Strict;
        let t = RouteTable::compile(
            &[route("x", &[], Some("/x"), None), strict],
            DefaultAction::NotFound,
            false,
            &crate::egress::Merchants::default(),
        )
        .unwrap();
        assert_eq!(name(&t, "GET", "/x/"), "x");
        assert_eq!(name(&t, "GET", "/s"), "strict");
        assert_eq!(name(&t, "GET", "/s/"), "-");
    }

    #[test]
    fn protected_routes_match_letters_in_any_case_by_default() {
        let mut pass_ci = route("p", &[], Some("/p"), None);
        pass_ci.matcher.case_insensitive = Some(true);
        let mut guard_cs = guarded(route("gs", &[], Some("/gs"), None));
        guard_cs.matcher.case_insensitive = Some(false);
        let t = RouteTable::compile(
            &[
                guarded(route("g", &["POST"], Some("/api/orders"), None)),
                route("pass", &[], Some("/pass"), None),
                pass_ci,
                guard_cs,
            ],
            DefaultAction::NotFound,
            true,
            &crate::egress::Merchants::default(),
        )
        .unwrap();
        assert_eq!(name(&t, "POST", "/API/Orders"), "g");
        assert_eq!(name(&t, "GET", "/PASS"), "-");
        assert_eq!(name(&t, "GET", "/P"), "p");
        assert_eq!(name(&t, "GET", "/GS"), "-");
    }

    #[test]
    fn a_get_route_takes_head() {
        let t = RouteTable::compile(
            &[route("g", &["GET"], Some("/x"), None)],
            DefaultAction::NotFound,
            false,
            &crate::egress::Merchants::default(),
        )
        .unwrap();
        assert_eq!(name(&t, "HEAD", "/x"), "g");
    }

    #[test]
    fn path_and_prefix_are_exclusive_and_must_be_canonical() {
        let err = RouteTable::compile(
            &[route("x", &[], Some("/a"), Some("/b"))],
            DefaultAction::Pass,
            false,
            &crate::egress::Merchants::default(),
        )
        .unwrap_err();
        assert_eq!(err[0].path, "routes[0].match");
        let err = RouteTable::compile(
            &[
                route("a", &[], Some("/api/%6Frders"), None),
                route("b", &["post"], None, Some("/api//x")),
            ],
            DefaultAction::Pass,
            false,
            &crate::egress::Merchants::default(),
        )
        .unwrap_err();
        let paths: Vec<_> = err.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "routes[0].match.path",
                "routes[1].match.methods[0]",
                "routes[1].match.path_prefix"
            ]
        );
        assert!(err[0].message.contains("write `/api/orders`"), "{}", err[0].message);
    }

    #[test]
    fn warns_when_an_earlier_route_takes_a_protected_routes_requests() {
        let t = RouteTable::compile(
            &[
                route("api-get", &["GET"], None, Some("/api")),
                route("export", &[], Some("/api/orders/export"), None),
                guarded(route("orders", &[], None, Some("/api/orders"))),
                guarded(route("dead", &["POST"], Some("/api/orders/export"), None)),
            ],
            DefaultAction::NotFound,
            true,
            &crate::egress::Merchants::default(),
        )
        .unwrap();
        let texts: Vec<String> = t.warnings().iter().map(|i| i.to_string()).collect();
        let has = |route: &str, text: &str| texts.iter().any(|t| t.starts_with(route) && t.contains(text));
        assert!(
            has(
                "routes[2]: `orders`",
                "some requests it matches is taken by the earlier route `api-get`"
            ),
            "{texts:#?}"
        );
        assert!(
            has(
                "routes[2]: `orders`",
                "some requests it matches is taken by the earlier route `export`"
            ),
            "{texts:#?}"
        );
        // `dead` matches case-insensitively, `export` only as written.
        assert!(
            has(
                "routes[3]: `dead`",
                "some requests it matches is taken by the earlier route `export`"
            ),
            "{texts:#?}"
        );
        assert!(
            has(
                "routes[3]: `dead`",
                "every request it matches is taken by the earlier route `orders`"
            ),
            "{texts:#?}"
        );
        assert!(
            has(
                "routes[3]: `dead`",
                "other methods on this path reach the backend unprotected through `api-get`"
            ),
            "{texts:#?}"
        );
        assert_eq!(texts.len(), 5, "{texts:#?}");
    }

    #[test]
    fn warns_when_other_methods_reach_a_protected_path_through_pass() {
        let t = RouteTable::compile(
            &[
                guarded(route("orders", &["POST"], Some("/api/orders"), None)),
                route("api", &[], None, Some("/api")),
            ],
            DefaultAction::NotFound,
            true,
            &crate::egress::Merchants::default(),
        )
        .unwrap();
        let w = t.warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].path, "routes[0]");
        assert!(
            w[0].message.contains("through `api` (any method /api/…, pass)"),
            "{}",
            w[0].message
        );

        let t = RouteTable::compile(
            &[guarded(route("orders", &["POST"], Some("/api/orders"), None))],
            DefaultAction::Pass,
            true,
            &crate::egress::Merchants::default(),
        )
        .unwrap();
        assert!(t.warnings()[0].message.contains("`default_action: pass`"));

        let t = RouteTable::compile(
            &[
                guarded(route("orders", &[], Some("/api/orders"), None)),
                route("api", &[], None, Some("/api")),
            ],
            DefaultAction::Pass,
            true,
            &crate::egress::Merchants::default(),
        )
        .unwrap();
        assert!(t.warnings().is_empty(), "{:?}", t.warnings());
    }

    /// A table with exact, prefix, protected and case-insensitive routes, for the property below.
    fn mixed_table() -> RouteTable {
        let mut strict = route("strict", &[], Some("/b/c"), None);
        strict.matcher.trailing_slash = TrailingSlash::Strict;
        RouteTable::compile(
            &[
                guarded(route("orders", &["POST"], Some("/a/b"), None)),
                guarded(route("admin", &[], None, Some("/a/c"))),
                strict,
                route("prefix", &[], None, Some("/a")),
                route("colon", &[], Some("/x/y:z"), None),
            ],
            DefaultAction::NotFound,
            true,
            &crate::egress::Merchants::default(),
        )
        .unwrap()
    }

    proptest::proptest! {
        /// However a path is spelled — escapes in any hex case, repeated slashes, `.` and
        /// `x/..` segments — routing its canonical form gives the route of the path itself, or
        /// the spelling is refused.
        #[test]
        fn every_spelling_routes_like_the_path_or_is_refused(
            segments in proptest::collection::vec(proptest::sample::select(vec!["a", "b", "c", "x", "y:z", "A", "ab", "%7E"]), 1..4),
            trailing in proptest::bool::ANY,
            noise in proptest::collection::vec((0usize..6, 0usize..64), 0..6),
        ) {
            let table = mixed_table();
            let plain = format!("/{}{}", segments.join("/"), if trailing { "/" } else { "" });
            let canonical = crate::canonical::path::canonicalize(plain.as_bytes(), &Default::default()).unwrap();
            let expected = name(&table, "POST", canonical.routing());
            // Re-spell the path: every noise item applies one spelling change at a position.
            let mut spelled: Vec<String> = plain.split('/').map(str::to_string).collect();
            for (kind, at) in noise {
                let i = 1 + at % (spelled.len() - 1).max(1);
                match kind {
                    0 => spelled.insert(i, String::new()),
                    1 => spelled.insert(i, ".".into()),
                    2 => { spelled.insert(i, "..".into()); spelled.insert(i, "zz".into()); }
                    3 | 4 => {
                        let seg = &spelled[i.min(spelled.len() - 1)];
                        let encoded: String = seg.bytes().enumerate().map(|(j, b)| {
                            if (j + at) % 2 == 0 && b.is_ascii_alphanumeric() {
                                if kind == 3 { format!("%{b:02x}") } else { format!("%{b:02X}") }
                            } else {
                                char::from(b).to_string()
                            }
                        }).collect();
                        let last = spelled.len() - 1;
                        spelled[i.min(last)] = encoded;
                    }
                    _ => spelled.insert(i, "%2e".into()),
                }
            }
            let respelled = spelled.join("/");
            if let Ok(c) = crate::canonical::path::canonicalize(respelled.as_bytes(), &Default::default()) {
                proptest::prop_assert_eq!(name(&table, "POST", c.routing()), expected, "{} → {}", respelled, c.as_str());
            }
        }
    }
}
