//! IP rules through the proxy (docs/guard-rules.md): static allow and
//! deny lists for IPv4 and IPv6 (403 `IP_DENIED`), the client IP from `X-Forwarded-For` only
//! behind a trusted proxy (right-most untrusted hop), and the admin-managed dynamic deny list
//! (bearer token, TTL, delete).

mod support;

use std::time::{Duration, Instant};

use support::guard::{GuardEnv, Req, StoreKind};

/// `guard.ip` trusting the loopback peer, so tests choose the client IP with `X-Forwarded-For`.
fn ip_section(allow: &[&str], deny: &[&str]) -> String {
    format!(
        "guard:\n  ip:\n    trusted_proxies: [127.0.0.1/32, 10.0.0.0/8]\n    allow: [{}]\n    deny: [{}]\n",
        allow.join(", "),
        deny.join(", ")
    )
}

/// (status, code, forwarded) for a GET from `client` (as the trusted proxy reports it).
fn from(env: &GuardEnv, client: &str) -> (u16, String, bool) {
    let before = env.up.requests().len();
    let (status, code) = env.status_and_code(&Req::new("GET", "/v1/x", b"").header("x-forwarded-for", client));
    (status, code, env.up.requests().len() > before)
}

fn allowed() -> (u16, String, bool) {
    (200, String::new(), true)
}

fn denied() -> (u16, String, bool) {
    (403, "IP_DENIED".to_string(), false)
}

#[test]
fn static_deny_list_blocks_v4_and_v6_networks() {
    let env = GuardEnv::start(
        StoreKind::Embedded,
        &ip_section(&[], &["203.0.113.0/24", "\"2001:db8:bad::/48\""]),
    );
    assert_eq!(from(&env, "203.0.113.7"), denied());
    assert_eq!(from(&env, "::ffff:203.0.113.8"), denied(), "IPv4-mapped IPv6 is IPv4");
    assert_eq!(from(&env, "2001:db8:bad:1::9"), denied());
    assert_eq!(from(&env, "198.51.100.1"), allowed());
    assert_eq!(from(&env, "2001:db8:900d::1"), allowed());
    let resp = env.send(&Req::new("GET", "/v1/x", b"").header("x-forwarded-for", "203.0.113.7"));
    let body: serde_json::Value = resp.json().unwrap();
    assert_eq!(body["status"], 403);
    assert!(body["rule"].is_string(), "the problem names the rule: {body}");
}

#[test]
fn static_allow_list_admits_only_its_networks_and_a_narrower_deny_wins() {
    let env = GuardEnv::start(
        StoreKind::Embedded,
        &ip_section(
            &["198.51.100.0/24", "\"2001:db8:1::/48\""],
            &["198.51.100.66/32", "\"2001:db8:1:bad::/64\""],
        ),
    );
    assert_eq!(from(&env, "198.51.100.1"), allowed());
    assert_eq!(from(&env, "2001:db8:1::5"), allowed());
    assert_eq!(from(&env, "198.51.100.66"), denied(), "more specific deny");
    assert_eq!(from(&env, "2001:db8:1:bad::1"), denied(), "more specific deny");
    assert_eq!(from(&env, "192.0.2.1"), denied(), "outside the allow list");
    assert_eq!(from(&env, "2001:db8:2::5"), denied(), "outside the allow list");
    let resp = env.send(&Req::new("GET", "/v1/x", b"").header("x-forwarded-for", "192.0.2.1"));
    let body: serde_json::Value = resp.json().unwrap();
    assert_eq!(body["rule"], "ip_allow");
}

#[test]
fn ipv6_socket_peer_is_matched_by_ipv6_rules() {
    let guard = "guard:\n  ip:\n    deny: [\"::1/128\"]\n";
    let env = GuardEnv::start_on(StoreKind::Embedded, "[::1]", guard);
    assert_eq!(
        env.status_and_code(&Req::new("GET", "/v1/x", b"")),
        (403, "IP_DENIED".into())
    );
    // Not a trusted proxy: its X-Forwarded-For is ignored.
    let spoofed = Req::new("GET", "/v1/x", b"").header("x-forwarded-for", "2001:db8::1");
    assert_eq!(env.status_and_code(&spoofed), (403, "IP_DENIED".into()));
    assert!(env.up.requests().is_empty());

    let env = GuardEnv::start_on(
        StoreKind::Embedded,
        "[::1]",
        "guard:\n  ip:\n    allow: [\"::1/128\"]\n",
    );
    assert_eq!(env.send(&Req::new("GET", "/v1/x", b"")).status(), 200);
}

#[test]
fn forwarded_for_is_ignored_from_an_untrusted_peer() {
    let env = GuardEnv::start(StoreKind::Embedded, "guard:\n  ip:\n    deny: [203.0.113.0/24]\n");
    assert_eq!(from(&env, "203.0.113.7"), allowed(), "loopback peer is not trusted");
    let env = GuardEnv::start(StoreKind::Embedded, "guard:\n  ip:\n    deny: [127.0.0.1/32]\n");
    assert_eq!(from(&env, "198.51.100.1"), denied(), "a client cannot hide behind XFF");
}

#[test]
fn forwarded_for_from_a_trusted_proxy_yields_the_right_most_untrusted_hop() {
    let env = GuardEnv::start(StoreKind::Embedded, &ip_section(&[], &["203.0.113.0/24"]));
    assert_eq!(from(&env, "203.0.113.7, 10.1.1.1"), denied(), "skips trusted hops");
    assert_eq!(
        from(&env, "203.0.113.7, 198.51.100.9, 10.0.0.1"),
        allowed(),
        "client-written left part ignored"
    );
    assert_eq!(from(&env, "198.51.100.9, 203.0.113.7"), denied());
    assert_eq!(
        from(&env, "10.0.0.1, 10.0.0.2"),
        allowed(),
        "all trusted: the left-most"
    );

    // Several header lines form one list, in order.
    let req = Req::new("GET", "/v1/x", b"")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-for", "10.0.0.1");
    assert_eq!(env.status_and_code(&req), (403, "IP_DENIED".into()));
    let req = Req::new("GET", "/v1/x", b"")
        .header("x-forwarded-for", "198.51.100.9")
        .header("x-forwarded-for", "203.0.113.7");
    assert_eq!(env.status_and_code(&req), (403, "IP_DENIED".into()));
}

fn admin(
    env: &GuardEnv,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut b = env.client.request(method, env.pg.admin_url(path));
    if let Some(t) = token {
        b = b.bearer_auth(t);
    }
    if let Some(body) = body {
        b = b.header("content-type", "application/json").body(body.to_string());
    }
    let resp = b.send().unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(serde_json::Value::Null))
}

const TOKEN: Option<&str> = Some("test-admin-token");

fn dynamic_deny_entry_blocks_until_its_ttl_and_delete_removes_it(store: StoreKind) {
    use reqwest::Method;
    let env = GuardEnv::start(store, &ip_section(&[], &[]));
    let add = |ip: &str, ttl: &str, token: Option<&str>| {
        admin(
            &env,
            Method::POST,
            "/admin/deny",
            token,
            Some(&format!(r#"{{"ip":"{ip}","ttl":"{ttl}"}}"#)),
        )
    };

    // Mutations need the bearer token.
    assert_eq!(add("198.51.100.7", "1s", None).0, 401);
    assert_eq!(add("198.51.100.7", "1s", Some("wrong-token")).0, 401);
    assert_eq!(admin(&env, Method::GET, "/admin/deny", None, None).0, 401);
    assert_eq!(
        admin(&env, Method::DELETE, "/admin/deny/198.51.100.7", None, None).0,
        401
    );
    assert_eq!(from(&env, "198.51.100.7"), allowed());
    assert_eq!(add("not-an-ip", "1s", TOKEN).0, 400);

    // A one-second entry blocks, then expires.
    let (status, body) = add("198.51.100.7", "1s", TOKEN);
    assert_eq!(status, 200, "{body}");
    let added = Instant::now();
    assert_eq!(from(&env, "198.51.100.7"), denied());
    assert_eq!(from(&env, "198.51.100.8"), allowed(), "only that address");
    let (_, list) = admin(&env, Method::GET, "/admin/deny", TOKEN, None);
    assert_eq!(list["entries"][0]["ip"], "198.51.100.7", "{list}");
    std::thread::sleep(Duration::from_millis(1100).saturating_sub(added.elapsed()));
    let deadline = Instant::now() + Duration::from_secs(2);
    while from(&env, "198.51.100.7") != allowed() {
        assert!(Instant::now() < deadline, "entry did not expire");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(added.elapsed() >= Duration::from_secs(1));

    // A long entry (IPv6 this time) until DELETE removes it.
    assert_eq!(add("2001:db8::7", "10m", TOKEN).0, 200);
    assert_eq!(from(&env, "2001:db8::7"), denied());
    let (status, body) = admin(&env, Method::DELETE, "/admin/deny/2001:db8::7", TOKEN, None);
    assert_eq!(
        (status, &body["removed"]),
        (200, &serde_json::Value::Bool(true)),
        "{body}"
    );
    assert_eq!(from(&env, "2001:db8::7"), allowed());
    let (_, list) = admin(&env, Method::GET, "/admin/deny", TOKEN, None);
    assert_eq!(list["entries"], serde_json::json!([]), "{list}");

    // An IPv4-mapped IPv6 entry is the IPv4 address.
    let (status, body) = add("::ffff:198.51.100.9", "10m", TOKEN);
    assert_eq!(
        (status, &body["ip"]),
        (200, &serde_json::json!("198.51.100.9")),
        "{body}"
    );
    assert_eq!(from(&env, "198.51.100.9"), denied());
    assert_eq!(
        admin(&env, Method::DELETE, "/admin/deny/198.51.100.9", TOKEN, None).0,
        200
    );
    assert_eq!(from(&env, "198.51.100.9"), allowed());
}

on_both_stores!(dynamic_deny_entry_blocks_until_its_ttl_and_delete_removes_it);
