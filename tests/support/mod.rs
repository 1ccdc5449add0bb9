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

use std::fs::{File, OpenOptions};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::sync::Mutex;

/// Ports the tests hand to processes they start come from here, below the kernel's ephemeral
/// range (32768–60999 by default), so no `bind(…:0)` and no outgoing connection can take one
/// between the check and the child's own bind; the cluster bus ports (`port + 10000`) stay
/// below it too.
const RESERVED_PORTS: std::ops::Range<u16> = 12_000..22_000;

/// Lock files of the ports this test process reserved: nextest runs every test in a process of
/// its own, so a reservation is an exclusive `flock` that the kernel drops when the process ends.
static RESERVATIONS: Mutex<Vec<File>> = Mutex::new(Vec::new());

/// A free TCP port on 127.0.0.1, reserved for this test process: no other test process is
/// handed it, and the kernel does not pick it for anything else.
pub fn free_port() -> u16 {
    reserve_port(false)
}

/// Like [`free_port`]; with `bus`, `port + 10000` is reserved and free as well (a Redis
/// Cluster node's bus port).
pub fn reserve_port(bus: bool) -> u16 {
    let dir = std::env::temp_dir().join("payguard-test-ports");
    std::fs::create_dir_all(&dir).expect("create the port reservation directory");
    let span = RESERVED_PORTS.end - RESERVED_PORTS.start;
    let start = (std::process::id() as u64).wrapping_mul(7919) % u64::from(span);
    for i in 0..u64::from(span) {
        let port = RESERVED_PORTS.start + ((start + i * 17) % u64::from(span)) as u16;
        let Some(lock) = lock_port(&dir, port) else { continue };
        let bus_lock = if bus {
            match lock_port(&dir, port + 10_000) {
                Some(l) if bindable(port + 10_000) => Some(l),
                _ => continue,
            }
        } else {
            None
        };
        if !bindable(port) {
            continue;
        }
        let mut held = RESERVATIONS.lock().unwrap_or_else(|e| e.into_inner());
        held.push(lock);
        held.extend(bus_lock);
        return port;
    }
    panic!("no free loopback port in {RESERVED_PORTS:?}");
}

/// An exclusive, non-blocking lock on `port`'s reservation file, or `None` when another test
/// process holds it.
fn lock_port(dir: &std::path::Path, port: u16) -> Option<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(format!("{port}.lock")))
        .ok()?;
    // SAFETY: flock on a descriptor this function owns; the lock lives as long as the file.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    locked.then_some(file)
}

fn bindable(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
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

/// Runs the payguard binary with `args` from the repository root; returns whether it exited 0
/// and its stdout followed by its stderr.
pub fn payguard_cli(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_payguard"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .expect("run payguard");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
