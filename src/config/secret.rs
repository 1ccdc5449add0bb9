//! Secret references: every secret or key field accepts `env:NAME`, `file:/path` or (for local
//! development only) an inline value. Resolved values never print: `Debug` shows the source only.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where a secret comes from, as written in the config file.
///
/// `env:NAME` reads an environment variable, `file:/path` reads a file (Kubernetes Secrets mount as
/// files; one trailing newline is stripped), anything else is the literal value.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct SecretRef(
    #[schemars(description = "`env:NAME`, `file:/path`, or an inline value (development only)")] String,
);

impl SecretRef {
    /// A reference from its textual form (`env:NAME`, `file:/path` or inline).
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// Describes the source without revealing the value (for `check` output and errors).
    pub fn describe(&self) -> String {
        if let Some(name) = self.0.strip_prefix("env:") {
            format!("environment variable {name}")
        } else if let Some(path) = self.0.strip_prefix("file:") {
            format!("file {path}")
        } else {
            "inline value".to_string()
        }
    }

    /// Reads the secret. The error text names the source, never the value.
    pub fn resolve(&self) -> Result<Secret, String> {
        if let Some(name) = self.0.strip_prefix("env:") {
            match std::env::var_os(name) {
                Some(v) if !v.is_empty() => Ok(Secret(v.to_string_lossy().into_owned().into_bytes())),
                Some(_) => Err(format!("environment variable {name} is empty")),
                None => Err(format!("environment variable {name} is not set")),
            }
        } else if let Some(path) = self.0.strip_prefix("file:") {
            let mut bytes = std::fs::read(path).map_err(|e| format!("cannot read file {path}: {e}"))?;
            if bytes.ends_with(b"\r\n") {
                bytes.truncate(bytes.len() - 2);
            } else if bytes.ends_with(b"\n") {
                bytes.truncate(bytes.len() - 1);
            }
            if bytes.is_empty() {
                return Err(format!("file {path} is empty"));
            }
            Ok(Secret(bytes))
        } else if self.0.is_empty() {
            Err("empty secret".to_string())
        } else {
            Ok(Secret(self.0.clone().into_bytes()))
        }
    }
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretRef({})", self.describe())
    }
}

/// A resolved secret value. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps raw bytes (tests and generated keys).
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    /// The secret bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The secret as UTF-8 text (PEM keys, API keys).
    pub fn expose_str(&self) -> Result<&str, String> {
        std::str::from_utf8(&self.0).map_err(|_| "secret is not valid UTF-8".to_string())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        // Best effort: overwrite the bytes before the allocation is released.
        for b in self.0.iter_mut() {
            // SAFETY-free volatile write keeps the compiler from eliding the wipe.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_inline_value() {
        let r = SecretRef::new("hunter2");
        assert!(!format!("{r:?}").contains("hunter2"));
        let s = r.resolve().unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn env_and_file_sources_resolve() {
        std::env::set_var("PG_TEST_SECRET_REF", "abc");
        assert_eq!(
            SecretRef::new("env:PG_TEST_SECRET_REF").resolve().unwrap().expose(),
            b"abc"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, "xyz\n").unwrap();
        let r = SecretRef::new(format!("file:{}", p.display()));
        assert_eq!(r.resolve().unwrap().expose(), b"xyz");
        assert!(SecretRef::new("env:PG_TEST_NOT_SET_ANYWHERE")
            .resolve()
            .unwrap_err()
            .contains("not set"));
    }
}
