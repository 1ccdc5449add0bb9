//! Optional TLS on the proxy listener (`server.tls`), for deployments without a service mesh in
//! front of payguard: the certificate chain and private key (PEM, usually `file:` references to a
//! mounted Kubernetes Secret), checked when the config is checked, and the Pingora TLS settings
//! built from them. HTTP/1.1 only (ALPN `http/1.1`), TLS 1.2 and 1.3.
//!
//! The key is read into memory and handed to rustls through a certificate resolver, so it may be
//! an `env:` or `file:` reference like every other secret, and a bad pair is a config error that
//! names the key, never a panic in Pingora's listener setup.

use std::sync::Arc;

use pingora::listeners::tls::TlsSettings;
use pingora::protocols::ALPN;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::issue::ConfigIssue;
use crate::secret::SecretRef;

/// `server.tls`: serve the proxy listener over TLS. Changing it needs a restart.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsConfig {
    /// PEM certificate chain, the server's certificate first (`file:/path`, e.g. `tls.crt` of a
    /// Kubernetes TLS Secret).
    pub certificate: SecretRef,
    /// PEM private key of `certificate` (PKCS#8, PKCS#1 or SEC1; `file:/path`, e.g. `tls.key`).
    pub private_key: SecretRef,
}

/// The checked certificate and key the listener serves.
#[derive(Clone)]
pub struct ListenerTls {
    certified: Arc<CertifiedKey>,
}

impl std::fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ListenerTls({} certificates, key <redacted>)",
            self.certified.cert.len()
        )
    }
}

/// Two listeners are the same when they serve the same certificate chain: a key that differs
/// with the chain unchanged cannot pass the check that key and certificate match.
impl PartialEq for ListenerTls {
    fn eq(&self, other: &Self) -> bool {
        self.certified.cert == other.certified.cert
    }
}

/// The one rustls crypto provider payguard uses (ring, the provider of the TLS stacks payguard
/// links: redis-rs and Pingora's rustls). Installed process-wide at start by
/// [`install_crypto_provider`], so rustls never has to guess between providers.
pub fn crypto_provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Makes [`crypto_provider`] the process default. rustls panics on its first handshake when more
/// than one provider is compiled in and none was chosen; choosing one here keeps a dependency that
/// turns on another (aws-lc-rs) from breaking TLS at run time. Idempotent.
pub fn install_crypto_provider() {
    // An error means a default is already installed (this function ran before, or Pingora's
    // listener setup did, which installs the same ring provider).
    let _ = crypto_provider().install_default();
}

impl ListenerTlsConfig {
    /// Reads and checks the certificate chain and key; errors are (key under `server.tls`,
    /// message), and never contain key material.
    pub fn load(&self) -> Result<ListenerTls, ConfigIssue> {
        let issue = |key: &str, msg: String| ConfigIssue::new(format!("server.tls.{key}"), msg);
        let cert_pem = self.certificate.resolve().map_err(|e| issue("certificate", e))?;
        let key_pem = self.private_key.resolve().map_err(|e| issue("private_key", e))?;

        let chain = CertificateDer::pem_slice_iter(cert_pem.expose())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                issue(
                    "certificate",
                    format!("{} is not a PEM certificate chain: {e}", self.certificate.describe()),
                )
            })?;
        if chain.is_empty() {
            return Err(issue(
                "certificate",
                format!("{} holds no CERTIFICATE block", self.certificate.describe()),
            ));
        }
        // The rustls PEM error text names the section kind, never its content; still, only the
        // source is printed for the key.
        let key = PrivateKeyDer::from_pem_slice(key_pem.expose()).map_err(|_| {
            issue(
                "private_key",
                format!(
                    "{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
                    self.private_key.describe()
                ),
            )
        })?;
        let provider = crypto_provider();
        let signing_key = provider.key_provider.load_private_key(key).map_err(|_| {
            issue(
                "private_key",
                format!(
                    "{} is not a usable private key (RSA, ECDSA P-256/P-384 or Ed25519)",
                    self.private_key.describe()
                ),
            )
        })?;
        let certified = CertifiedKey::new(chain, signing_key);
        certified.keys_match().map_err(|e| {
            let why = match e {
                rustls::Error::InconsistentKeys(_) => "does not belong to the certificate".to_string(),
                other => format!("cannot be checked against the certificate ({other})"),
            };
            issue(
                "private_key",
                format!(
                    "{} {why} in {}",
                    self.private_key.describe(),
                    self.certificate.describe()
                ),
            )
        })?;
        Ok(ListenerTls {
            certified: Arc::new(certified),
        })
    }
}

impl ListenerTls {
    /// Pingora's listener settings: this certificate, ALPN `http/1.1`.
    pub fn settings(&self) -> TlsSettings {
        // The paths stay empty: the resolver serves the certificate, so Pingora reads no files.
        let mut settings = TlsSettings::intermediate("", "").expect("TLS settings without files");
        settings.set_cert_resolver(Arc::new(SingleCertAndKey::from(self.certified.clone())));
        settings.set_alpn(ALPN::H1);
        settings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_names_the_key_path() {
        let cfg = ListenerTlsConfig {
            certificate: SecretRef::new("file:/nonexistent/tls.crt"),
            private_key: SecretRef::new("file:/nonexistent/tls.key"),
        };
        let e = cfg.load().unwrap_err();
        assert_eq!(e.path, "server.tls.certificate");
        assert!(e.message.contains("/nonexistent/tls.crt"), "{}", e.message);
    }

    #[test]
    fn text_that_is_not_pem_is_refused_without_echoing_it() {
        let cfg = ListenerTlsConfig {
            certificate: SecretRef::new("not a certificate"),
            private_key: SecretRef::new("hunter2-not-a-key"),
        };
        let e = cfg.load().unwrap_err();
        assert_eq!(e.path, "server.tls.certificate");
        assert!(e.message.contains("no CERTIFICATE block"), "{}", e.message);
        assert!(!e.message.contains("not a certificate"), "{}", e.message);
    }
}
