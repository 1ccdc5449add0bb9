//! A configuration error and where it is. A leaf module: every config section (guard, notify,
//! channels, store) reports its own mistakes with it, and `config` collects them, so none of those
//! sections depends on `config`.

use std::fmt;

/// One configuration error and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Key path such as `routes[0].match.path` (`(root)` for the whole document).
    pub(crate) path: String,
    /// What is wrong. Never contains a secret value.
    pub(crate) message: String,
}

impl ConfigIssue {
    /// An issue at `path`.
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl ConfigIssue {
    /// The same issue under a parent key (`prefix.path`).
    pub(crate) fn under(self, prefix: &str) -> Self {
        let path = if self.path.is_empty() {
            prefix.to_string()
        } else {
            format!("{prefix}.{}", self.path)
        };
        Self {
            path,
            message: self.message,
        }
    }
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every issue found in one configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigIssues(pub Vec<ConfigIssue>);

impl fmt::Display for ConfigIssues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}
