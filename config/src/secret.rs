//! Secret values (S3 keys, database passwords) and reading them from files.

use std::fmt;
use std::path::Path;

use zeroize::Zeroizing;

use crate::error::ConfigError;

/// A secret string, wiped from memory when dropped. It is neither `Clone`
/// nor printable: `Debug` shows `<redacted>`, and the value is reached only
/// through [`Secret::expose`].
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a secret value.
    #[must_use]
    pub fn new(value: String) -> Self {
        Self(Zeroizing::new(value))
    }

    /// The secret value, for handing to the library that needs it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(crate::config::REDACTED)
    }
}

/// Reads the secret held in `path` for the config field `field` (e.g.
/// `storage.primary.secret_access_key_file`), dropping one trailing newline.
///
/// # Errors
/// [`ConfigError::SecretFile`] if unreadable; [`ConfigError::Invalid`] if the
/// file is readable by group or others, empty, or not UTF-8.
pub fn read_secret_file(field: &str, path: &Path) -> Result<Secret, ConfigError> {
    let unreadable = |source| ConfigError::SecretFile {
        field: field.to_owned(),
        path: path.to_owned(),
        source,
    };
    let metadata = std::fs::metadata(path).map_err(unreadable)?;
    refuse_shared_permissions(field, path, &metadata)?;
    let bytes = Zeroizing::new(std::fs::read(path).map_err(unreadable)?);
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return Err(ConfigError::invalid(
            field,
            format!("secret file {} is not UTF-8 text", path.display()),
        ));
    };
    let value = text
        .strip_suffix('\n')
        .map_or(text, |line| line.strip_suffix('\r').unwrap_or(line));
    if value.is_empty() {
        return Err(ConfigError::invalid(
            field,
            format!(
                "secret file {} is empty; write the secret into it",
                path.display()
            ),
        ));
    }
    Ok(Secret::new(value.to_owned()))
}

#[cfg(unix)]
fn refuse_shared_permissions(
    field: &str,
    path: &Path,
    metadata: &std::fs::Metadata,
) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ConfigError::invalid(
            field,
            format!(
                "secret file {} is readable by group or others (mode {mode:03o}); \
                 run `chmod 600 {}`",
                path.display(),
                path.display()
            ),
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn refuse_shared_permissions(
    _field: &str,
    _path: &Path,
    _metadata: &std::fs::Metadata,
) -> Result<(), ConfigError> {
    Ok(())
}
