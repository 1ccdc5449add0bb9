//! IP rules: client IP resolution through trusted proxies, static allow/deny
//! CIDR lists, and the name of the dynamic deny set the admin API fills.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Store set holding dynamically denied client IPs (members are canonical IP text,
/// [`dynamic_deny_member`]); the admin API adds entries with a TTL.
pub(crate) const DYNAMIC_DENY_SET: &str = "deny:ip";

/// The dynamic deny set name.
pub(crate) fn dynamic_deny_set() -> &'static str {
    DYNAMIC_DENY_SET
}

/// The member stored in the dynamic deny set for `ip` (IPv4-mapped IPv6 folded to IPv4).
pub(crate) fn dynamic_deny_member(ip: IpAddr) -> String {
    ip.to_canonical().to_string()
}

/// `ip:` — static IP rules and proxy trust.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct IpRulesConfig {
    /// If not empty, only clients in these networks are allowed (others get 403 `IP_DENIED`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<String>")]
    pub(crate) allow: Vec<IpNet>,
    /// Clients in these networks get 403 `IP_DENIED`. When an address is in both lists the more
    /// specific (longer) prefix wins; on a tie deny wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<String>")]
    pub(crate) deny: Vec<IpNet>,
    /// Peers whose `X-Forwarded-For` is believed. The client IP is then the right-most hop that
    /// is not itself a trusted proxy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<String>")]
    pub(crate) trusted_proxies: Vec<IpNet>,
    /// Check the dynamic deny set (filled through the admin API) on every guarded request.
    #[serde(default = "yes")]
    pub(crate) dynamic_deny: bool,
}

fn yes() -> bool {
    true
}

impl Default for IpRulesConfig {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            deny: Vec::new(),
            trusted_proxies: Vec::new(),
            dynamic_deny: true,
        }
    }
}

/// Result of the static IP rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IpDecision {
    /// No rule objects.
    Allow,
    /// Denied; `rule` is `ip_deny` (matched a deny entry) or `ip_allow` (not in the allow list).
    Deny {
        /// Which list fired (a fixed name, safe as a metric label).
        rule: &'static str,
        /// The deny entry that matched, if any.
        net: Option<IpNet>,
    },
}

/// Resolved IP rules.
#[derive(Debug, Clone, Default)]
pub(crate) struct IpRules {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    trusted: Vec<IpNet>,
    dynamic_deny: bool,
}

impl IpRulesConfig {
    /// Builds the rules (networks are normalized to their prefix, e.g. `10.1.2.3/8` → `10.0.0.0/8`).
    pub(crate) fn build(&self) -> IpRules {
        let norm = |v: &[IpNet]| v.iter().map(|n| n.trunc()).collect::<Vec<_>>();
        IpRules {
            allow: norm(&self.allow),
            deny: norm(&self.deny),
            trusted: norm(&self.trusted_proxies),
            dynamic_deny: self.dynamic_deny,
        }
    }
}

fn longest_match(nets: &[IpNet], ip: IpAddr) -> Option<IpNet> {
    nets.iter()
        .filter(|n| n.contains(&ip))
        .max_by_key(|n| n.prefix_len())
        .copied()
}

/// Maximum `X-Forwarded-For` hops examined; a longer trusted chain is treated like a malformed
/// one (the last trusted hop reached is used), so a huge header cannot cost unbounded work.
const MAX_HOPS: usize = 32;

impl IpRules {
    /// Whether the dynamic deny set is consulted.
    pub(crate) fn dynamic_deny(&self) -> bool {
        self.dynamic_deny
    }

    /// Whether `ip` is a trusted proxy.
    pub(crate) fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted.iter().any(|n| n.contains(&ip))
    }

    /// The client IP: the socket peer unless it is a trusted proxy; then the right-most
    /// `X-Forwarded-For` hop that is not trusted (several XFF fields are read as one list, in
    /// order). A malformed entry stops the walk and the last trusted address reached is used,
    /// since nothing left of garbage can be believed. If every hop is trusted, the left-most is.
    pub(crate) fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.is_trusted(peer) {
            return peer;
        }
        let mut current = peer;
        let mut hops = 0usize;
        for value in headers.get_all("x-forwarded-for").iter().rev() {
            let Ok(text) = value.to_str() else {
                return current;
            };
            for entry in text.rsplit(',') {
                let entry = entry.trim();
                if entry.is_empty() {
                    continue;
                }
                hops += 1;
                if hops > MAX_HOPS {
                    return current;
                }
                let Some(ip) = parse_forwarded_ip(entry) else {
                    return current;
                };
                let ip = ip.to_canonical();
                if !self.is_trusted(ip) {
                    return ip;
                }
                current = ip;
            }
        }
        current
    }

    /// Applies the static allow/deny lists to the (resolved) client IP.
    pub(crate) fn decide(&self, ip: IpAddr) -> IpDecision {
        let ip = ip.to_canonical();
        let deny = longest_match(&self.deny, ip);
        let allow = longest_match(&self.allow, ip);
        match (deny, allow) {
            (Some(d), Some(a)) if a.prefix_len() > d.prefix_len() => IpDecision::Allow,
            (Some(d), _) => IpDecision::Deny {
                rule: "ip_deny",
                net: Some(d),
            },
            (None, None) if !self.allow.is_empty() => IpDecision::Deny {
                rule: "ip_allow",
                net: None,
            },
            _ => IpDecision::Allow,
        }
    }
}

/// One `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]`,
/// `[2001:db8::1]:443`. Anything else (`unknown`, obfuscated identifiers) is `None`.
fn parse_forwarded_ip(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = entry.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    entry
        .strip_prefix('[')?
        .strip_suffix(']')?
        .parse::<std::net::Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn rules(yaml: &str) -> IpRules {
        serde_yaml_ng::from_str::<IpRulesConfig>(yaml).unwrap().build()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn untrusted_peer_ignores_forwarded_for() {
        let r = rules("trusted_proxies: [10.0.0.0/8]");
        assert_eq!(r.client_ip(ip("203.0.113.9"), &xff(&["1.1.1.1"])), ip("203.0.113.9"));
    }

    #[test]
    fn trusted_peer_uses_right_most_untrusted_hop() {
        let r = rules("trusted_proxies: [10.0.0.0/8]");
        let h = xff(&["6.6.6.6, 198.51.100.7, 10.0.0.2"]);
        assert_eq!(r.client_ip(ip("10.0.0.1"), &h), ip("198.51.100.7"));
    }

    #[test]
    fn several_forwarded_for_fields_are_one_list_in_order() {
        let r = rules("trusted_proxies: [10.0.0.0/8]");
        let h = xff(&["6.6.6.6, 198.51.100.7", "10.0.0.3"]);
        assert_eq!(r.client_ip(ip("10.0.0.1"), &h), ip("198.51.100.7"));
    }

    #[test]
    fn malformed_entry_stops_at_last_trusted_hop() {
        let r = rules("trusted_proxies: [10.0.0.0/8]");
        assert_eq!(
            r.client_ip(ip("10.0.0.1"), &xff(&["1.1.1.1, unknown, 10.0.0.2"])),
            ip("10.0.0.2")
        );
        assert_eq!(r.client_ip(ip("10.0.0.1"), &xff(&["garbage"])), ip("10.0.0.1"));
        assert_eq!(r.client_ip(ip("10.0.0.1"), &HeaderMap::new()), ip("10.0.0.1"));
        // Empty entries are skipped, not treated as addresses.
        assert_eq!(
            r.client_ip(ip("10.0.0.1"), &xff(&["198.51.100.7, ,"])),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn all_trusted_chain_yields_left_most_hop() {
        let r = rules("trusted_proxies: [10.0.0.0/8]");
        assert_eq!(
            r.client_ip(ip("10.0.0.1"), &xff(&["10.9.9.9, 10.0.0.2"])),
            ip("10.9.9.9")
        );
    }

    #[test]
    fn ipv6_hops_with_brackets_and_ports_resolve() {
        let r = rules("trusted_proxies: [\"fd00::/8\", 10.0.0.0/8]");
        let h = xff(&["2001:db8::1, [2001:db8::2]:443, fd00::5"]);
        assert_eq!(r.client_ip(ip("fd00::1"), &h), ip("2001:db8::2"));
        let h = xff(&["198.51.100.7:5555"]);
        assert_eq!(r.client_ip(ip("fd00::1"), &h), ip("198.51.100.7"));
        // IPv4-mapped IPv6 peers are matched against IPv4 networks.
        assert_eq!(
            r.client_ip(ip("::ffff:10.0.0.1"), &xff(&["2001:db8::9"])),
            ip("2001:db8::9")
        );
    }

    #[test]
    fn overlong_trusted_chain_is_bounded() {
        let r = rules("trusted_proxies: [10.0.0.0/8]");
        let chain = vec!["10.0.0.7"; 100].join(", ");
        assert_eq!(r.client_ip(ip("10.0.0.1"), &xff(&[chain.as_str()])), ip("10.0.0.7"));
    }

    #[test]
    fn deny_and_allow_lists_with_most_specific_winning() {
        let r = rules("deny: [10.0.0.0/8, \"2001:db8::/32\"]\nallow: [10.1.2.3/32, 10.0.0.0/8, 192.0.2.0/24]");
        assert_eq!(r.decide(ip("10.1.2.3")), IpDecision::Allow);
        assert_eq!(
            r.decide(ip("10.9.9.9")),
            IpDecision::Deny {
                rule: "ip_deny",
                net: Some("10.0.0.0/8".parse().unwrap())
            }
        );
        assert_eq!(r.decide(ip("192.0.2.5")), IpDecision::Allow);
        assert_eq!(
            r.decide(ip("203.0.113.1")),
            IpDecision::Deny {
                rule: "ip_allow",
                net: None
            }
        );
        assert!(matches!(
            r.decide(ip("2001:db8::1")),
            IpDecision::Deny { rule: "ip_deny", .. }
        ));
        assert_eq!(rules("{}").decide(ip("203.0.113.1")), IpDecision::Allow);
    }

    #[test]
    fn dynamic_deny_names() {
        assert_eq!(dynamic_deny_set(), "deny:ip");
        assert_eq!(dynamic_deny_member(ip("::ffff:192.0.2.1")), "192.0.2.1");
        assert!(rules("{}").dynamic_deny());
    }

    proptest::proptest! {
        #[test]
        fn client_ip_comes_from_the_peer_or_the_header(xff_value in "[0-9a-f:.,\\[\\] ]{0,80}") {
            let r = rules("trusted_proxies: [10.0.0.0/8, \"fd00::/8\"]");
            let mut h = HeaderMap::new();
            if let Ok(v) = xff_value.parse() {
                h.insert("x-forwarded-for", v);
            }
            let got = r.client_ip(ip("10.0.0.1"), &h);
            let from_header = xff_value.split(',').filter_map(|e| parse_forwarded_ip(e.trim())).any(|i| i.to_canonical() == got);
            proptest::prop_assert!(got == ip("10.0.0.1") || from_header);
        }
    }
}
