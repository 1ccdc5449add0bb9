//! `payguard check` and `payguard schema` as a user runs them.

use std::process::Command;

fn payguard(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_payguard"))
        .args(args)
        .output()
        .expect("run payguard")
}

fn repo_file(rel: &str) -> String {
    format!("{}/{rel}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn check_reports_all_three_mistakes_with_key_paths_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "upstream:\n  address: 127.0.0.1:3000\n  conect_timeout: 1s\nserver:\n  threads: many\nroutes:\n  - name: a\n    match: {path: /x}\n    policy: teleport\n",
    )
    .unwrap();
    let out = payguard(&["check", "-c", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("3 errors"), "{err}");
    assert!(err.contains("upstream.conect_timeout: unknown key"), "{err}");
    assert!(err.contains("server.threads: `many` is not"), "{err}");
    assert!(
        err.contains("routes[0].policy: `teleport` is not one of: pass, guard, notify, egress"),
        "{err}"
    );
}

#[test]
fn check_accepts_the_shipped_configs_and_prints_a_summary() {
    for file in ["config/payguard.example.yaml", "config/dev.yaml", "config/sandbox.yaml"] {
        let out = Command::new(env!("CARGO_BIN_EXE_payguard"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["check", "-c", &repo_file(file)])
            .env("PAYGUARD_ADMIN_TOKEN", "token-that-must-not-leak")
            .env("PG_SHOP_APP_SECRET", "app-secret-that-must-not-leak")
            .env("STRIPE_WEBHOOK_SECRET", "whsec_stripe_secret_that_must_not_leak")
            .env("PAYGUARD_WEBHOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{file}: {}{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(": OK"), "{stdout}");
        assert!(stdout.contains("upstream"), "{stdout}");
        assert!(
            !stdout.contains("warning"),
            "{file} should need no change to be safe: {stdout}"
        );
        for secret in [
            "token-that-must-not-leak",
            "app-secret-that-must-not-leak",
            "stripe_secret_that",
            "MfKQ9r8GKYqr",
        ] {
            assert!(!stdout.contains(secret), "secret leaked: {stdout}");
        }
    }
}

#[test]
fn check_warns_about_routes_that_leave_protected_paths_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weak.yaml");
    std::fs::write(
        &path,
        "upstream: {address: 127.0.0.1:3000}\nguard:\n  ip: {deny: [192.0.2.0/24]}\nroutes:\n\
         \x20 - {name: api-read, match: {methods: [GET], path_prefix: /api}, policy: pass}\n\
         \x20 - {name: orders, match: {methods: [POST], path: /api/orders}, policy: guard}\n\
         \x20 - {name: cancel, match: {methods: [POST], path: /api/orders/cancel}, policy: guard}\n\
         \x20 - {name: api, match: {path_prefix: /api}, policy: pass}\n\
         default_action: not_found\n",
    )
    .unwrap();
    let out = payguard(&["check", "-c", path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "warnings are not errors: {stdout}");
    assert!(stdout.contains("2 warnings:"), "{stdout}");
    assert!(
        stdout.contains("warning: routes[1]: `orders` (POST /api/orders, guard) protects POST only; other methods on this path reach the backend unprotected through `api-read` (GET /api/…, pass)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("warning: routes[2]: `cancel` (POST /api/orders/cancel, guard) protects POST only"),
        "{stdout}"
    );
}

#[test]
fn schema_output_validates_the_example_configs() {
    let out = payguard(&["schema"]);
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).expect("schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    for file in ["config/payguard.example.yaml", "config/dev.yaml", "config/sandbox.yaml"] {
        let text = std::fs::read_to_string(repo_file(file)).unwrap();
        let doc: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&doc)
            .map(|e| format!("{}: {e}", e.instance_path))
            .collect();
        assert!(errors.is_empty(), "{file}: {errors:?}");
    }
    // And it rejects what check rejects.
    let bad: serde_json::Value = serde_json::json!({"upstream": {"address": "x:1"}, "nope": 1});
    assert!(!validator.is_valid(&bad));
}

#[test]
fn check_names_the_key_inside_guard_and_notify_and_prints_no_inline_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leaky.yaml");
    std::fs::write(
        &path,
        "upstream: {address: 127.0.0.1:3000}\nguard:\n  signature:\n    keys:\n      - {id: app, secrets: [inline-app-secret-must-not-leak], bogus: 1}\nroutes:\n  - name: n\n    match: {path: /n}\n    policy: notify\n    notify:\n      channel: {stripe: {endpoint_secrets: [whsec_inline_must_not_leak], tolerence: 5m}}\n      webhook_secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n",
    )
    .unwrap();
    let out = payguard(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("guard.signature.keys[0].bogus: unknown key"), "{err}");
    assert!(
        err.contains("routes[0].notify.channel.stripe.tolerence: unknown key"),
        "{err}"
    );
    for secret in [
        "inline-app-secret-must-not-leak",
        "whsec_inline_must_not_leak",
        "MfKQ9r8GKYqr",
    ] {
        assert!(!err.contains(secret), "secret leaked: {err}");
    }
}

#[test]
fn check_offline_lints_without_the_secrets_but_still_finds_mistakes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deploy.yaml");
    let good = "admin: {token: 'file:/nonexistent/admin-token'}\nupstream: {address: 'shop-backend.invalid:3000'}\nguard:\n  signature:\n    keys:\n      - {id: app, secrets: ['env:PG_TEST_NEVER_SET_SECRET']}\nroutes:\n  - {name: orders, match: {path: /orders}, policy: guard}\n";
    std::fs::write(&path, good).unwrap();
    let online = payguard(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(online.status.code(), Some(1), "the secrets are missing here");
    let offline = payguard(&["check", "--offline", "-c", path.to_str().unwrap()]);
    assert!(offline.status.success(), "{}", String::from_utf8_lossy(&offline.stderr));
    assert!(String::from_utf8_lossy(&offline.stdout).contains("OK (offline"));

    std::fs::write(&path, good.replace("policy: guard", "policy: gaurd")).unwrap();
    let offline = payguard(&["check", "--offline", "-c", path.to_str().unwrap()]);
    assert_eq!(offline.status.code(), Some(1));
    let err = String::from_utf8_lossy(&offline.stderr);
    assert!(err.contains("routes[0].policy: `gaurd` is not one of"), "{err}");
}

#[test]
fn check_shows_a_sentinel_store_and_reports_its_mistakes_with_key_paths() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("payguard.yaml");
    let write = |redis: &str| {
        std::fs::write(
            &path,
            format!("upstream:\n  address: 127.0.0.1:9\nstore:\n  backend: redis\n  redis:\n{redis}"),
        )
        .unwrap();
    };
    write("    sentinel:\n      nodes: ['10.0.0.1:26379', '10.0.0.2:26379']\n      master_name: payments\n      password: env:PG_REDIS_PW\n      sentinel_password: env:PG_SENTINEL_PW\n");
    let out = Command::new(env!("CARGO_BIN_EXE_payguard"))
        .args(["check", "-c", path.to_str().unwrap()])
        .env("PG_REDIS_PW", "redis-password-that-must-not-leak")
        .env("PG_SENTINEL_PW", "sentinel-password-that-must-not-leak")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("redis sentinel (2 sentinels, master \"payments\""),
        "{text}"
    );
    assert!(!text.contains("must-not-leak"), "{text}");

    write("    url: redis://127.0.0.1:6379\n    sentinel:\n      nodes: ['127.0.0.1:26379']\n      master_name: payments\n");
    let out = payguard(&["check", "-c", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("store.redis.url: set only one of `url`, `cluster_nodes` and `sentinel`"),
        "{err}"
    );

    write("    password: env:PG_REDIS_PW\n    sentinel:\n      nodes: ['127.0.0.1:26379', 'nope']\n      master_name: ''\n");
    let out = Command::new(env!("CARGO_BIN_EXE_payguard"))
        .args(["check", "-c", path.to_str().unwrap()])
        .env("PG_REDIS_PW", "x")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for key in [
        "store.redis.sentinel.nodes[1]",
        "store.redis.sentinel.master_name",
        "store.redis.password",
    ] {
        assert!(err.contains(key), "{key} not reported: {err}");
    }
}
