//! Test certificates made when a test runs, with the `openssl` command, so no private key is
//! committed: a CA, a server certificate for 127.0.0.1 and localhost signed by it, a client
//! certificate signed by it, and an unrelated CA that signed neither.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A directory of PEM files: `ca.pem`, `server.pem`/`server.key`, `client.pem`/`client.key`,
/// `other-ca.pem`.
pub struct TestPki {
    dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl: {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `openssl req` with a new P-256 key in `key`, writing `out` (a CSR, or with `-x509` a
/// self-signed certificate).
fn req(dir: &Path, extra: &[&str], key: &str, out: &str, subject: &str) {
    let mut args = vec!["req"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key,
        "-out",
        out,
        "-subj",
        subject,
    ]);
    openssl(dir, &args);
}

/// A self-signed CA certificate and its key (`NAME.pem`, `NAME.key`).
fn ca(dir: &Path, name: &str) {
    let subject = format!("/CN=payguard test {name}");
    req(
        dir,
        &["-x509", "-days", "2"],
        &format!("{name}.key"),
        &format!("{name}.pem"),
        &subject,
    );
}

/// A leaf certificate for `usage` (`serverAuth` or `clientAuth`) signed by `ca.pem`.
fn leaf(dir: &Path, name: &str, usage: &str) {
    let (key, csr, cert, ext) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
        format!("{name}.ext"),
    );
    std::fs::write(
        dir.join(&ext),
        format!("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage={usage}\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"),
    )
    .expect("write extensions");
    req(dir, &[], &key, &csr, &format!("/CN=payguard test {name}"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
}

impl TestPki {
    /// Generates every file (a fraction of a second).
    pub fn generate() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        ca(dir.path(), "ca");
        ca(dir.path(), "other-ca");
        leaf(dir.path(), "server", "serverAuth");
        leaf(dir.path(), "client", "clientAuth");
        Self { dir }
    }

    /// The path of one of the files.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `file:<path>` of one of the files, as a config secret reference.
    pub fn file_ref(&self, name: &str) -> String {
        format!("file:{}", self.path(name).display())
    }

    /// `redis-server` arguments for TLS on `tls_port` with this PKI's server certificate;
    /// with `require_client_cert`, clients must present a certificate signed by the CA.
    pub fn redis_args(&self, tls_port: u16, require_client_cert: bool) -> Vec<String> {
        let p = |n: &str| self.path(n).display().to_string();
        vec![
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            p("server.pem"),
            "--tls-key-file".into(),
            p("server.key"),
            "--tls-ca-cert-file".into(),
            p("ca.pem"),
            "--tls-auth-clients".into(),
            if require_client_cert { "yes" } else { "no" }.into(),
        ]
    }
}
