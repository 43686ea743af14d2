//! Password hashing (Argon2id) and the login checks shared by every protocol.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use zeroize::Zeroizing;

use crate::error::{ErrorKind, VfsError, VfsResult, internal};

/// A password in memory: zeroized on drop, never printed.
pub struct Password(Zeroizing<String>);

impl Password {
    /// Wraps a password read from a client or a terminal.
    pub fn new(s: String) -> Self {
        Self(Zeroizing::new(s))
    }

    /// The password text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Argon2id with OWASP's second recommended setting: 19 MiB, 2 passes, 1 lane.
fn argon2() -> VfsResult<Argon2<'static>> {
    let params =
        Params::new(19 * 1024, 2, 1, None).map_err(|e| internal("argon2 parameters", e))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes a password into a PHC string (`$argon2id$...`). Runs on a blocking thread.
pub async fn hash_password(password: &Password) -> VfsResult<String> {
    let pw = Zeroizing::new(password.expose().to_owned());
    tokio::task::spawn_blocking(move || {
        let mut salt_bytes = [0u8; 16];
        aws_lc_rs::rand::fill(&mut salt_bytes)
            .map_err(|_| VfsError::new(ErrorKind::Internal, "the OS random generator failed"))?;
        let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| internal("salt", e))?;
        let hash = argon2()?
            .hash_password(pw.as_bytes(), &salt)
            .map_err(|e| internal("argon2", e))?;
        Ok(hash.to_string())
    })
    .await
    .map_err(|e| internal("hashing task", e))?
}

/// Verifies a password against a PHC string. A malformed hash verifies as false.
/// Always does the full Argon2 work, so callers get the same timing for every outcome.
pub async fn verify_password(hash: &str, password: &Password) -> bool {
    let hash = hash.to_owned();
    let pw = Zeroizing::new(password.expose().to_owned());
    tokio::task::spawn_blocking(move || {
        let Ok(parsed) = PasswordHash::new(&hash) else {
            return false;
        };
        let Ok(a) = argon2() else { return false };
        a.verify_password(pw.as_bytes(), &parsed).is_ok()
    })
    .await
    .unwrap_or(false)
}

/// Lockout policy: `max_failures` failed logins within `window_ms` lock the user for `lock_ms`.
#[derive(Clone, Copy, Debug)]
pub struct LockoutPolicy {
    /// Failures that trigger a lock.
    pub max_failures: u32,
    /// Window in which failures count, in ms.
    pub window_ms: i64,
    /// How long a lock lasts, in ms.
    pub lock_ms: i64,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        Self {
            max_failures: 10,
            window_ms: 15 * 60 * 1000,
            lock_ms: 15 * 60 * 1000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_verifies_only_the_right_password() {
        let h = hash_password(&Password::new("correct horse".into()))
            .await
            .unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&h, &Password::new("correct horse".into())).await);
        assert!(!verify_password(&h, &Password::new("correct horsf".into())).await);
        assert!(!verify_password("garbage", &Password::new("x".into())).await);
    }
}
