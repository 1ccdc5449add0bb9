//! Runs the real `payguard` binary on free loopback ports with a config written to a temp dir.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{die_with_parent, free_port};

/// A running payguard process; killed on drop.
pub struct Payguard {
    child: Child,
    /// Host part of the proxy listener's address (`127.0.0.1`, or `[::1]` for IPv6 clients).
    pub host: String,
    pub port: u16,
    pub admin_port: u16,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    custom: Custom,
}

/// How [`Payguard::start_custom`] deviates from the test defaults.
#[derive(Debug, Clone)]
pub struct Custom {
    /// Lines added to the `admin:` section (e.g. `"  probe_listen: 127.0.0.1:9465\n"`).
    pub admin_extra: String,
    /// `server.grace_period` (default `0s`: tests need no draining).
    pub grace_period: String,
    /// Lines added to the `server:` section (e.g. `"  header_underscores: keep\n"`).
    pub server_extra: String,
    /// Extra environment variables of the process (for `env:` secrets).
    pub env: Vec<(String, String)>,
}

impl Default for Custom {
    fn default() -> Self {
        Self {
            admin_extra: String::new(),
            grace_period: "0s".to_string(),
            server_extra: String::new(),
            env: Vec::new(),
        }
    }
}

impl Payguard {
    /// The config text for `body` (everything but `server`/`admin`), on the given ports.
    pub fn config_text(port: u16, admin_port: u16, body: &str) -> String {
        Self::config_text_on("127.0.0.1", port, admin_port, body)
    }

    /// [`config_text`](Self::config_text) with the proxy listening on `host` (e.g. `[::1]`).
    pub fn config_text_on(host: &str, port: u16, admin_port: u16, body: &str) -> String {
        Self::config_text_with(host, port, admin_port, &Custom::default(), body)
    }

    fn config_text_with(host: &str, port: u16, admin_port: u16, custom: &Custom, body: &str) -> String {
        let Custom {
            admin_extra,
            grace_period,
            server_extra,
            ..
        } = custom;
        format!(
            "server:\n  listen: \"{host}:{port}\"\n  threads: 2\n  grace_period: {grace_period}\n  shutdown_timeout: 1s\n{server_extra}admin:\n  listen: 127.0.0.1:{admin_port}\n  token: test-admin-token\n{admin_extra}{body}"
        )
    }

    /// Starts payguard with `body` appended to the listener sections and waits until it serves.
    pub fn start(body: &str) -> Self {
        Self::start_on("127.0.0.1", body)
    }

    /// Like [`start`](Self::start), with the proxy listening on `host` (`[::1]` for IPv6 clients).
    pub fn start_on(host: &str, body: &str) -> Self {
        Self::start_with(host, Custom::default(), body)
    }

    /// Like [`start_on`](Self::start_on), with `custom` changes, the config in the temp dir.
    pub fn start_with(host: &str, custom: Custom, body: &str) -> Self {
        Self::start_custom(host, custom, body, |dir, text| {
            let path = dir.join("payguard.yaml");
            std::fs::write(&path, text).expect("write config");
            path
        })
    }

    /// The most general start: `custom` changes the listener sections, and `place`
    /// writes the config text (in the temp dir it is given) and returns the path to run with,
    /// e.g. a Kubernetes-style symlinked volume.
    pub fn start_custom(host: &str, custom: Custom, body: &str, place: impl FnOnce(&Path, &str) -> PathBuf) -> Self {
        let port = free_port();
        // Reserved ports are never handed out twice.
        let admin_port = free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = place(
            dir.path(),
            &Self::config_text_with(host, port, admin_port, &custom, body),
        );
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_payguard"));
        cmd.arg("run").arg("-c").arg(&config_path);
        cmd.envs(custom.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd.stdin(Stdio::null());
        cmd.stdout(std::fs::File::create(dir.path().join("stdout.log")).expect("log file"));
        cmd.stderr(std::fs::File::create(dir.path().join("stderr.log")).expect("log file"));
        die_with_parent(&mut cmd);
        let child = cmd.spawn().expect("spawn payguard");
        let mut pg = Self {
            child,
            host: host.to_string(),
            port,
            admin_port,
            dir,
            config_path,
            custom,
        };
        pg.wait_ready();
        pg
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_millis(500))
            .build()
            .unwrap();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("payguard exited early with {status}:\n{}", self.logs());
            }
            let admin_ok = client
                .get(self.admin_url("/healthz"))
                .send()
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            let proxy_ok = std::net::TcpStream::connect(format!("{}:{}", self.host, self.port)).is_ok();
            if admin_ok && proxy_ok {
                return;
            }
            if Instant::now() > deadline {
                panic!("payguard did not become ready:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Process id of the payguard process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the payguard process, in bytes (`VmRSS` of /proc/PID/status).
    pub fn rss_bytes(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .map_or(0, |kb| kb * 1024)
    }

    /// URL on the proxy listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}:{}{path}", self.host, self.port)
    }

    /// The config file it runs with.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// URL on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// The whole config text for `body` on this instance's ports.
    pub fn full_text(&self, body: &str) -> String {
        Self::config_text_with(&self.host, self.port, self.admin_port, &self.custom, body)
    }

    /// Replaces the config file atomically (write + rename), as a ConfigMap update does.
    pub fn write_config(&self, body: &str) {
        let tmp = self.dir.path().join("payguard.yaml.tmp");
        std::fs::write(&tmp, self.full_text(body)).expect("write config");
        std::fs::rename(&tmp, &self.config_path).expect("rename config");
    }

    /// Sends SIGHUP.
    pub fn sighup(&self) {
        self.signal(libc::SIGHUP);
    }

    /// Sends `sig` (e.g. `libc::SIGTERM`).
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits up to `timeout` for the process to exit; its status, or `None` if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Value of a metric sample line `name{labels}` from `/metrics` (0 when absent).
    pub fn metric(&self, name_and_labels: &str) -> f64 {
        let text = reqwest::blocking::get(self.admin_url("/metrics"))
            .and_then(|r| r.text())
            .unwrap_or_default();
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name_and_labels)
                    .and_then(|rest| rest.trim().parse::<f64>().ok())
            })
            .unwrap_or(0.0)
    }

    /// Waits (up to 5 s) until metric sample `name_and_labels` reaches `at_least`, and returns
    /// its value. Request counters move in the logging phase, just after the answer went out.
    pub fn wait_metric(&self, name_and_labels: &str, at_least: f64) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let v = self.metric(name_and_labels);
            if v >= at_least || Instant::now() > deadline {
                return v;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the process wrote to stdout (`"stdout.log"`) or stderr (`"stderr.log"`) so far.
    pub fn output(&self, which: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(which)).unwrap_or_default()
    }

    /// stdout + stderr once `done` holds for them, or after 5 s: payguard writes its log from a
    /// background thread in batches, so a line shows up a few milliseconds after the event.
    pub fn wait_logs(&self, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let logs = self.logs();
            if done(&logs) || Instant::now() > deadline {
                return logs;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether a line containing `needle` reaches the log within 5 s (see [`Payguard::wait_logs`]).
    pub fn logged(&self, needle: &str) -> bool {
        self.wait_logs(|logs| logs.contains(needle)).contains(needle)
    }

    /// stdout + stderr so far.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for f in ["stdout.log", "stderr.log"] {
            if let Ok(mut file) = std::fs::File::open(self.dir.path().join(f)) {
                let _ = file.read_to_string(&mut out);
            }
        }
        out
    }
}

impl Drop for Payguard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
