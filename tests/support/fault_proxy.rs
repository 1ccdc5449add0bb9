//! A TCP proxy between payguard and a `redis-server` that injects faults on command: added
//! latency, a blackhole (connections accepted, nothing ever answered) and connection resets.
//! Plain threads and blocking sockets; stopped on drop.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// What the proxy does to traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Bytes pass unchanged.
    None,
    /// Every chunk is held this long before it is passed on.
    Latency(Duration),
    /// Nothing gets through: new connections are accepted and never answered, bytes on open
    /// ones are held (as a partition holds them: TCP delivers them, in order, once it heals).
    Blackhole,
    /// Every connection is reset (RST), and new ones are reset as soon as they are accepted.
    Reset,
}

struct Shared {
    fault: Mutex<Fault>,
    /// Both ends of every open connection, to reset them when [`Fault::Reset`] is set.
    open: Mutex<Vec<(TcpStream, TcpStream)>>,
    stop: AtomicBool,
}

/// The proxy; [`FaultProxy::url`] is where payguard connects.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `target` (`127.0.0.1:<redis port>`).
    pub fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fault proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let shared = Arc::new(Shared {
            fault: Mutex::new(Fault::None),
            open: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let sh = shared.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                if sh.stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = client else { continue };
                accept(&sh, client, target);
            }
        });
        Self { addr, shared }
    }

    /// `redis://127.0.0.1:<proxy port>`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Sets the fault from now on; [`Fault::Reset`] also resets every open connection.
    pub fn set(&self, fault: Fault) {
        *lock(&self.shared.fault) = fault;
        if fault == Fault::Reset {
            for (client, server) in lock(&self.shared.open).drain(..) {
                reset(&client);
                reset(&server);
            }
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so it sees `stop`.
        let _ = TcpStream::connect(self.addr);
        for (client, server) in lock(&self.shared.open).drain(..) {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn accept(sh: &Arc<Shared>, client: TcpStream, target: SocketAddr) {
    if sh.stop.load(Ordering::Relaxed) {
        return;
    }
    match *lock(&sh.fault) {
        Fault::Reset => {
            reset(&client);
            return;
        }
        Fault::Blackhole => {
            // Accepted, read and never answered; kept open until the proxy stops.
            swallow(sh.clone(), client);
            return;
        }
        Fault::None | Fault::Latency(_) => {}
    }
    let Ok(server) = TcpStream::connect(target) else {
        reset(&client);
        return;
    };
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    lock(&sh.open).push((c2, s2));
    let (Ok(c_read), Ok(s_write)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let sh1 = sh.clone();
    thread::spawn(move || pump(&sh1, c_read, s_write));
    let sh2 = sh.clone();
    thread::spawn(move || pump(&sh2, server, client));
}

/// Copies `from` to `to`, applying the fault to each chunk.
fn pump(sh: &Shared, mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        loop {
            match *lock(&sh.fault) {
                Fault::Blackhole if !sh.stop.load(Ordering::Relaxed) => {}
                Fault::Latency(d) => {
                    thread::sleep(d);
                    break;
                }
                Fault::Reset => return,
                Fault::None | Fault::Blackhole => break,
            }
            thread::sleep(Duration::from_millis(10));
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    if *lock(&sh.fault) != Fault::Reset {
        let _ = to.shutdown(Shutdown::Write);
    }
}

fn swallow(sh: Arc<Shared>, mut client: TcpStream) {
    thread::spawn(move || {
        let _ = client.set_read_timeout(Some(Duration::from_millis(200)));
        let mut buf = [0u8; 4096];
        while !sh.stop.load(Ordering::Relaxed) {
            match client.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
    });
}

/// Makes the last close of `s` a TCP reset (SO_LINGER 0), as from a crashed peer or a
/// middlebox, and wakes the threads reading it (`SHUT_RD` sends nothing) so they let go.
fn reset(s: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a correctly sized `linger`.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    let _ = s.shutdown(Shutdown::Read);
}
