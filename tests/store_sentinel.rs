//! Redis Sentinel (docs/configuration.md, `store.redis.sentinel`): payguard finds the master
//! through the sentinels and follows a failover while guarded requests keep arriving; nonces
//! the old master replicated before the failover are still refused as replays. Real processes:
//! a master, a replica and three sentinels on free loopback ports.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::guard::{signature_section, GuardEnv, Req};
use support::redis_server::{SentinelGroup, SENTINEL_MASTER_NAME};

fn signed_order() -> Req {
    Req::new("POST", "/v1/orders", b"{}").signed()
}

#[test]
fn a_sentinel_failover_is_followed_and_earlier_nonces_stay_refused() {
    let group = SentinelGroup::start();
    let env = Arc::new(GuardEnv::on_sentinel(
        &group.sentinel_addrs(),
        SENTINEL_MASTER_NAME,
        &format!("guard:\n{}", signature_section()),
    ));
    let before = signed_order();
    assert_eq!(env.status_and_code(&before), (200, String::new()), "{}", env.pg.logs());
    // The replica has the nonce before the failover starts.
    assert_eq!(group.servers[0].cli(&["WAIT", "1", "5000"]).trim(), "1");

    // A client keeps sending guarded requests through the failover.
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::new()));
    let client = {
        let (env, stop, answers) = (env.clone(), stop.clone(), answers.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let answer = env.status_and_code(&signed_order());
                answers.lock().unwrap().push(answer);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    group.failover();
    let new_master = group.servers[1].port();
    let deadline = Instant::now() + Duration::from_secs(15);
    while group.master_port() != new_master {
        assert!(Instant::now() < deadline, "the sentinels did not fail over");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Once payguard follows the new master, requests pass again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let recent: Vec<(u16, String)> = answers.lock().unwrap().iter().rev().take(5).cloned().collect();
        if recent.len() == 5 && recent.iter().all(|(status, _)| *status == 200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "requests do not pass again:\n{}",
            env.pg.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    let answers = answers.lock().unwrap().clone();
    let refused = answers.iter().filter(|a| a.0 != 200).count();
    for answer in &answers {
        assert!(
            *answer == (200, String::new()) || *answer == (503, "STORE_UNAVAILABLE".to_string()),
            "during a failover a request passes or fails closed: {answer:?}"
        );
    }
    println!("{} requests during the failover, {refused} answered 503", answers.len());

    assert!(group.servers[1].cli(&["ROLE"]).starts_with("master"));
    assert_eq!(
        env.status_and_code(&before),
        (409, "NONCE_REPLAYED".to_string()),
        "the nonce from before the failover lives on the new master"
    );
    let after = signed_order();
    assert_eq!(env.status_and_code(&after), (200, String::new()));
    assert_eq!(env.status_and_code(&after), (409, "NONCE_REPLAYED".to_string()));
}
