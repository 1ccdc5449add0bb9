//! Secret references: every secret or key field accepts `env:NAME`, `file:/path` or (for local
//! development only) an inline value. Resolved values never print: `Debug` shows the source only.

use std::cell::RefCell;
use std::fmt;
use std::path::PathBuf;

use schemars::gen::SchemaGenerator;
use schemars::schema::{InstanceType, Metadata, Schema, SchemaObject};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where a secret comes from, as written in the config file.
///
/// `env:NAME` reads an environment variable, `file:/path` reads a file (Kubernetes Secrets mount as
/// files; one trailing newline is stripped), anything else is the literal value.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretRef(String);

/// A string marked `writeOnly` (JSON Schema's flag for values that must not be shown back):
/// configuration errors never print a value the schema marks so.
impl JsonSchema for SecretRef {
    fn schema_name() -> String {
        "SecretRef".to_string()
    }

    fn is_referenceable() -> bool {
        false
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        SchemaObject {
            instance_type: Some(InstanceType::String.into()),
            metadata: Some(Box::new(Metadata {
                description: Some("`env:NAME`, `file:/path`, or an inline value (development only)".to_string()),
                write_only: true,
                ..Metadata::default()
            })),
            ..SchemaObject::default()
        }
        .into()
    }
}

impl SecretRef {
    /// A reference from its textual form (`env:NAME`, `file:/path` or inline).
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// Describes the source without revealing the value (for `check` output and errors).
    pub(crate) fn describe(&self) -> String {
        if let Some(name) = self.0.strip_prefix("env:") {
            format!("environment variable {name}")
        } else if let Some(path) = self.0.strip_prefix("file:") {
            format!("file {path}")
        } else {
            "inline value".to_string()
        }
    }

    /// Whether the value is written into the config file itself (neither `env:` nor `file:`).
    pub(crate) fn is_inline(&self) -> bool {
        !self.0.starts_with("env:") && !self.0.starts_with("file:")
    }

    /// Reads the secret. The error text names the source, never the value. Inside
    /// [`track_resolution`] the files read are recorded, and offline `env:` and `file:` references
    /// are not read at all (they fail with [`NOT_READ_OFFLINE`]).
    pub(crate) fn resolve(&self) -> Result<Secret, String> {
        let external = self.0.starts_with("env:") || self.0.starts_with("file:");
        let offline = SCOPE.with_borrow_mut(|scope| match scope {
            Some(scope) => {
                if let Some(path) = self.0.strip_prefix("file:") {
                    scope.files.push(PathBuf::from(path));
                }
                scope.offline
            }
            None => false,
        });
        if offline && external {
            return Err(NOT_READ_OFFLINE.to_string());
        }
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

/// The error of an `env:` or `file:` reference resolved offline; `payguard check --offline`
/// drops the issues that carry it.
pub(crate) const NOT_READ_OFFLINE: &str = "not read (offline check)";

#[derive(Debug, Default)]
struct Scope {
    offline: bool,
    files: Vec<PathBuf>,
}

thread_local! {
    static SCOPE: RefCell<Option<Scope>> = const { RefCell::new(None) };
}

/// Runs `f` (building a config) and returns the `file:` secrets it referenced (sorted), so a
/// reload can notice when one of them changes (a rotated Kubernetes Secret). With `offline`,
/// `env:` and `file:` references are not read. Resolution is synchronous, so a thread-local
/// scope sees every secret the build resolves without threading a context through each section.
pub(crate) fn track_resolution<T>(offline: bool, f: impl FnOnce() -> T) -> (T, Vec<PathBuf>) {
    let outer = SCOPE.replace(Some(Scope {
        offline,
        files: Vec::new(),
    }));
    let out = f();
    let scope = SCOPE.replace(outer).unwrap_or_default();
    let mut files = scope.files;
    files.sort();
    files.dedup();
    (out, files)
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretRef({})", self.describe())
    }
}

/// A resolved secret value. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(Vec<u8>);

impl Secret {
    /// Wraps raw bytes (tests and generated keys).
    pub(crate) fn from_bytes(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    /// The secret bytes.
    pub(crate) fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The secret as UTF-8 text (PEM keys, API keys).
    pub(crate) fn expose_str(&self) -> Result<&str, String> {
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
    fn tracking_records_file_references_and_offline_reads_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "t0k3n\n").unwrap();
        let file_ref = SecretRef::new(format!("file:{}", p.display()));
        let (value, files) = track_resolution(false, || file_ref.resolve().map(|s| s.expose().to_vec()));
        assert_eq!(value.unwrap(), b"t0k3n");
        assert_eq!(files, std::slice::from_ref(&p));

        let (results, files) = track_resolution(true, || {
            [
                file_ref.resolve().map(drop),
                SecretRef::new("env:PG_TEST_OFFLINE_VAR").resolve().map(drop),
                SecretRef::new("inline").resolve().map(drop),
            ]
        });
        assert_eq!(results[0], Err(NOT_READ_OFFLINE.to_string()));
        assert_eq!(results[1], Err(NOT_READ_OFFLINE.to_string()));
        assert_eq!(results[2], Ok(()));
        assert_eq!(files, [p]);
        // Outside a scope nothing is recorded and files are read again.
        assert!(file_ref.resolve().is_ok());
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
