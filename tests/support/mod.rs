//! Test harness: real processes on free loopback ports, cleaned up on drop (also on panic).
#![allow(dead_code)]

pub mod channel_sim;
pub mod fault_proxy;
pub mod framework;
pub mod guard;
pub mod payguard;
pub mod redis_server;
pub mod stripe;
pub mod tls;
pub mod upstream;

use std::net::TcpListener;

/// A free TCP port on 127.0.0.1 (bound then released; collisions are unlikely in one run).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Makes a spawned child die with the test process (SIGKILL on parent death).
pub fn die_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and only affects the child being spawned.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}
