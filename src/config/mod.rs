//! Configuration: the YAML file format, its JSON Schema, and the internal config the proxy uses.

pub mod secret;

/// One configuration problem: where (key path relative to the component, e.g.
/// `platform_certificates[1]`) and what is wrong. Never contains a secret value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Key path relative to the component's config (the caller prefixes its own path).
    pub path: String,
    /// What is wrong, naming sources (`environment variable X`) but never values.
    pub message: String,
}

impl ConfigIssue {
    /// An issue at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { path: path.into(), message: message.into() }
    }
}

impl std::fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}
