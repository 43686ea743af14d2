//! The one error type of configuration loading and validation.

use std::path::PathBuf;

/// Why a configuration could not be loaded. Every message names the file,
/// variable or field at fault and, for invalid values, says how to fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// The I/O failure.
        source: std::io::Error,
    },

    /// A source is not valid TOML, or holds a value of the wrong type or an
    /// unknown field.
    #[error("{origin}: {message}")]
    Parse {
        /// Where the bad input came from, e.g. `config file /etc/coffer.toml`
        /// or `environment variable COFFER_SFTP__ENABLED`.
        origin: String,
        /// The parser's description, naming the field.
        message: String,
    },

    /// A `COFFER_*` environment variable that names no configuration field;
    /// refused so that a typo is never silently ignored.
    #[error(
        "unknown environment variable {0}: it names no configuration field \
         (expected COFFER_ + the field path upper-cased with __ between tables, \
         e.g. COFFER_SFTP__LISTEN for sftp.listen); fix or unset it"
    )]
    UnknownEnv(String),

    /// A command-line override whose key names no configuration field.
    #[error(
        "unknown configuration override `{0}`: it names no configuration field \
         (expected a dotted field path such as sftp.listen)"
    )]
    UnknownOverride(String),

    /// A value that parsed but is not acceptable.
    #[error("{field}: {message}")]
    Invalid {
        /// The dotted field path, e.g. `sftp.listen`.
        field: String,
        /// What is wrong and how to fix it.
        message: String,
    },

    /// A secret file named by a `*_file` field could not be read.
    #[error("{field}: cannot read secret file {}: {source}", path.display())]
    SecretFile {
        /// The dotted field path that named the file.
        field: String,
        /// The secret file.
        path: PathBuf,
        /// The I/O failure.
        source: std::io::Error,
    },
}

impl ConfigError {
    /// Shorthand for [`ConfigError::Invalid`].
    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}
