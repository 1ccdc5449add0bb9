//! Real `redis-server` processes for integration tests: a standalone server or a 3-master
//! Redis Cluster on free loopback ports, without persistence, killed on drop (also on panic) and
//! when the test process dies.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

const REDIS_SERVER: &str = "/usr/bin/redis-server";
const REDIS_CLI: &str = "redis-cli";
const READY_TIMEOUT: Duration = Duration::from_secs(10);

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` from one long-lived thread. `PR_SET_PDEATHSIG` fires when the *thread* that
/// forked the child exits, and each test runs on its own short-lived thread: a server shared by
/// several tests would be killed when the first of them finished. The keeper thread lives as
/// long as the test process, so children die with the process and not before.
fn spawn_kept(cmd: Command) -> io::Result<Child> {
    static KEEPER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("redis-keeper".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawn redis keeper thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    keeper
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, reply_tx))
        .map_err(|_| io::Error::other("redis keeper thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("redis keeper thread is gone"))?
}

/// Spawns `cmd` (a `redis-server`) so that it dies with the test process.
fn spawn_dying_with_test(mut cmd: Command) -> Child {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    spawn_kept(cmd).unwrap_or_else(|e| panic!("cannot start {REDIS_SERVER}: {e}"))
}

/// A free loopback port reserved for this test process; with `bus`, port + 10000 (the cluster
/// bus) is reserved and free too.
fn free_port(bus: bool) -> u16 {
    super::reserve_port(bus)
}

/// Sends an inline `PING`; true when the server answers (`+PONG`, or `-NOAUTH` when it
/// requires a password).
fn answers_ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH"))
}

/// One `redis-server` process.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a standalone server on a free loopback port and waits until it answers `PING`.
    pub fn start() -> Self {
        Self::start_with_args(&[])
    }

    /// Like [`start`](Self::start), with extra `redis-server` arguments (e.g. `--requirepass`).
    pub fn start_with_args(extra: &[&str]) -> Self {
        Self::spawn_on(free_port(false), extra.iter().map(|s| s.to_string()).collect())
    }

    /// A standalone server on the given port (one a test reserved while nothing listened on it).
    pub fn start_on_port(port: u16, extra: &[&str]) -> Self {
        Self::spawn_on(port, extra.iter().map(|s| s.to_string()).collect())
    }

    fn spawn_on(port: u16, extra_args: Vec<String>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("pg-redis-")
            .tempdir_in(scratch_dir())
            .expect("tempdir");
        let mut server = Self {
            port,
            dir,
            extra_args,
            child: None,
        };
        server.launch();
        server
    }

    fn launch(&mut self) {
        let mut cmd = Command::new(REDIS_SERVER);
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args([
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log_path())
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(spawn_dying_with_test(cmd));
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        while start.elapsed() < READY_TIMEOUT {
            if answers_ping(self.port) {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("redis-server exited ({status}); log:\n{}", self.log());
            }
            thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "redis-server did not answer PING within {READY_TIMEOUT:?}; log:\n{}",
            self.log()
        );
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's working directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the server (an outage); [`restart`](Self::restart) brings it back on the same port.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing answers, like a hung
    /// or partitioned Redis. [`resume`](Self::resume) thaws it.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Thaws a server frozen by [`pause`](Self::pause).
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, sig: libc::c_int) {
        if let Some(child) = &self.child {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as libc::pid_t, sig) };
        }
    }

    /// Starts the server again on the same port (empty, nothing was persisted).
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Runs `redis-cli -p <port> <args>` and returns its stdout (panics when it fails).
    pub fn cli(&self, args: &[&str]) -> String {
        let out = self.cli_output(args);
        assert!(
            out.status.success(),
            "redis-cli {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn cli_output(&self, args: &[&str]) -> Output {
        Command::new(REDIS_CLI)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {REDIS_CLI}: {e}"))
    }

    /// Calls of each command since start, from `INFO commandstats` (e.g. `evalsha`).
    pub fn command_calls(&self) -> std::collections::HashMap<String, u64> {
        self.cli(&["INFO", "commandstats"])
            .lines()
            .filter_map(|line| {
                let rest = line.strip_prefix("cmdstat_")?;
                let (name, stats) = rest.split_once(':')?;
                let calls = stats.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
                Some((name.to_string(), calls.trim().parse().ok()?))
            })
            .collect()
    }

    /// Every key on this server (`SCAN`), e.g. to check their TTLs.
    pub fn keys(&self) -> Vec<String> {
        self.cli(&["--scan"])
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// `PTTL` of `key`: -1 when it has no TTL, -2 when absent.
    pub fn pttl(&self, key: &str) -> i64 {
        self.cli(&["PTTL", key]).trim().parse().unwrap_or(-3)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where test processes keep their working directories (cargo's scratch dir for tests).
fn scratch_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// A Redis Cluster of three masters (no replicas), each a [`RedisServer`].
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-enabled servers, joins them with `redis-cli --cluster create`, and
    /// waits until every node reports `cluster_state:ok`.
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                let port = free_port(true);
                RedisServer::spawn_on(
                    port,
                    [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "5000",
                    ]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                )
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())).collect();
        let out = Command::new(REDIS_CLI)
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {REDIS_CLI}: {e}"));
        assert!(
            out.status.success(),
            "cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Self { nodes };
        cluster.wait_ok();
        cluster
    }

    fn wait_ok(&self) {
        let start = Instant::now();
        while start.elapsed() < READY_TIMEOUT {
            if self
                .nodes
                .iter()
                .all(|n| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
            {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!("cluster did not reach cluster_state:ok within {READY_TIMEOUT:?}");
    }

    /// `redis://127.0.0.1:<port>` of every node (seed nodes for a client).
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The three master nodes.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }
}

/// A Redis master with one replica, watched by three sentinels (`redis-server --sentinel`), all
/// on free loopback ports, with short failure-detection times so a failover takes about a
/// second.
#[derive(Debug)]
pub struct SentinelGroup {
    /// The master at start, then the replica.
    pub servers: Vec<RedisServer>,
    sentinels: Vec<(u16, tempfile::TempDir, Child)>,
}

/// The name the sentinels monitor the master under.
pub const SENTINEL_MASTER_NAME: &str = "pgmaster";

impl SentinelGroup {
    /// Starts the master, its replica (waiting until it is in sync) and three sentinels (waiting
    /// until each knows the replica, so a failover can pick it).
    pub fn start() -> Self {
        let master = RedisServer::start();
        let replica = RedisServer::start_with_args(&["--replicaof", "127.0.0.1", &master.port().to_string()]);
        wait_for("the replica to sync", || {
            replica.cli(&["INFO", "replication"]).contains("master_link_status:up")
        });
        let sentinels = (0..3)
            .map(|_| {
                let port = free_port(false);
                let dir = tempfile::Builder::new()
                    .prefix("pg-sentinel-")
                    .tempdir_in(scratch_dir())
                    .expect("tempdir");
                let conf = dir.path().join("sentinel.conf");
                std::fs::write(
                    &conf,
                    format!(
                        "port {port}\nbind 127.0.0.1\ndir {dir}\nlogfile {dir}/sentinel.log\nsentinel monitor {SENTINEL_MASTER_NAME} 127.0.0.1 {master} 2\nsentinel down-after-milliseconds {SENTINEL_MASTER_NAME} 1000\nsentinel failover-timeout {SENTINEL_MASTER_NAME} 3000\nsentinel parallel-syncs {SENTINEL_MASTER_NAME} 1\n",
                        dir = dir.path().display(),
                        master = master.port(),
                    ),
                )
                .expect("write sentinel.conf");
                let mut cmd = Command::new(REDIS_SERVER);
                cmd.arg(&conf)
                    .arg("--sentinel")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                let child = spawn_dying_with_test(cmd);
                (port, dir, child)
            })
            .collect();
        let group = Self {
            servers: vec![master, replica],
            sentinels,
        };
        for i in 0..group.sentinels.len() {
            // Listed is not enough: a sentinel promotes only a replica it has read INFO from
            // itself and that reports its link to the master up.
            wait_for("a sentinel to see the replica in sync", || {
                let replicas = group.sentinel_cli(i, &["SENTINEL", "REPLICAS", SENTINEL_MASTER_NAME]);
                replicas.contains(&group.servers[1].port().to_string()) && replicas.contains("master-link-status\nok")
            });
        }
        group
    }

    /// `host:port` of every sentinel.
    pub fn sentinel_addrs(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|(port, _, _)| format!("127.0.0.1:{port}"))
            .collect()
    }

    /// `redis-cli` against sentinel `i` (empty output when it does not answer yet).
    pub fn sentinel_cli(&self, i: usize, args: &[&str]) -> String {
        let port = self.sentinels[i].0;
        Command::new(REDIS_CLI)
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Asks the sentinels for a failover, again while they answer `NOGOODSLAVE` (a sentinel
    /// that has just restarted its replica links); panics when they never accept.
    pub fn failover(&self) {
        let mut answer = String::new();
        let accepted = (0..READY_TIMEOUT.as_millis() / 100).any(|_| {
            answer = self.sentinel_cli(0, &["SENTINEL", "FAILOVER", SENTINEL_MASTER_NAME]);
            if answer.trim() == "OK" {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
            false
        });
        assert!(accepted, "the sentinels refuse the failover: {answer}");
    }

    /// The port of the master the sentinels name now.
    pub fn master_port(&self) -> u16 {
        self.sentinel_cli(0, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER_NAME])
            .lines()
            .nth(1)
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for SentinelGroup {
    fn drop(&mut self) {
        for (_, _, child) in &mut self.sentinels {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `ready` every 20 ms for up to [`READY_TIMEOUT`]; panics naming `what` when it never is.
fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < READY_TIMEOUT, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}
