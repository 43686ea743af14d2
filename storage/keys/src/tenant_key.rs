//! The per-tenant root secret, which only ever leaves memory wrapped by a master key.

use zeroize::Zeroizing;

use crate::KeyError;

/// Length of a tenant key in bytes.
pub const TENANT_KEY_LEN: usize = 32;

/// A 256-bit tenant key. Zeroized on drop; deliberately no `Debug` and no `Clone`.
pub struct TenantKey(Zeroizing<[u8; TENANT_KEY_LEN]>);

impl TenantKey {
    /// A fresh key from the OS CSPRNG.
    pub fn generate() -> Result<Self, KeyError> {
        let mut key = Zeroizing::new([0u8; TENANT_KEY_LEN]);
        aws_lc_rs::rand::fill(key.as_mut()).map_err(|_| KeyError::Random)?;
        Ok(Self(key))
    }

    /// Takes ownership of raw key bytes (e.g. just unwrapped).
    pub fn from_bytes(bytes: [u8; TENANT_KEY_LEN]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The raw key, for wrapping and derivation. Do not copy it anywhere that is not zeroized.
    pub fn as_bytes(&self) -> &[u8; TENANT_KEY_LEN] {
        &self.0
    }
}
