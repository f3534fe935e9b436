//! The error type of the configuration: every failure names the file (or `--set` argument) and
//! the dotted key it is about.

use std::path::PathBuf;

/// A configuration that cannot be read, parsed or accepted.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A configuration file could not be read.
    #[error("cannot read {}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        error: std::io::Error,
    },
    /// A file is not valid TOML (the message carries the line and column).
    #[error("{source_name}: not valid TOML: {message}")]
    Syntax {
        /// The file (or the embedded preset's name).
        source_name: String,
        /// The parser's message.
        message: String,
    },
    /// A `--set key=value` argument is malformed or addresses something that is not a table.
    #[error("--set {argument}: {reason}")]
    Override {
        /// The argument as given.
        argument: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A key is unknown, missing, or holds a value of the wrong type.
    #[error("{source_name}: `{key}`: {message}")]
    Field {
        /// Where the configuration came from, and the `--set` argument that set the key if one did.
        source_name: String,
        /// The dotted key path (`federation.rounds`).
        key: String,
        /// What is wrong with it (serde's message: unknown field, invalid type, missing field).
        message: String,
    },
    /// A value has the right type but is out of range or inconsistent with another.
    #[error("{}`{field}` {reason}", source_name.as_ref().map(|s| format!("{s}: ")).unwrap_or_default())]
    Invalid {
        /// Where the configuration came from, when it was read from text.
        source_name: Option<String>,
        /// The dotted key path of the offending field.
        field: String,
        /// What is wrong with it: a message, or the error of the module that refused the value
        /// (the model's or the data's validation).
        #[source]
        reason: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An `extends` chain is broken: a missing base file, a cycle, or too deep.
    #[error("{source_name}: `extends`: {reason}")]
    Extends {
        /// The file holding the `extends` key.
        source_name: String,
        /// What is wrong.
        reason: String,
    },
}

impl ConfigError {
    /// An [`ConfigError::Invalid`] for `field`.
    pub(crate) fn invalid(
        field: impl Into<String>,
        reason: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        ConfigError::Invalid {
            source_name: None,
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Names `source_name` as the origin of an [`ConfigError::Invalid`] that names none.
    pub(crate) fn with_source(self, name: &str) -> Self {
        match self {
            ConfigError::Invalid {
                source_name: None,
                field,
                reason,
            } => ConfigError::Invalid {
                source_name: Some(name.into()),
                field,
                reason,
            },
            other => other,
        }
    }
}
