//! Per-file data keys, content ids, and the HKDF derivation of the chunk and commitment keys.

use aws_lc_rs::{aead, hkdf, hmac};
use zeroize::Zeroizing;

use crate::FormatError;

/// Length of a data key in bytes.
pub const DATA_KEY_LEN: usize = 32;
/// Length of a content id in bytes.
pub const CONTENT_ID_LEN: usize = 16;

/// HKDF info string for the AES-256-GCM chunk key. Frozen: changing it changes every key.
const CHUNK_KEY_INFO: &[u8] = b"coffer/v1/chunk";
/// HKDF info string for the HMAC-SHA256 header commitment key. Frozen.
const COMMIT_KEY_INFO: &[u8] = b"coffer/v1/commit";

/// A 256-bit per-file-version data key. Zeroized on drop; no `Debug`, no `Clone`.
pub struct DataKey(Zeroizing<[u8; DATA_KEY_LEN]>);

impl DataKey {
    /// A fresh key from the OS CSPRNG.
    pub fn generate() -> Result<Self, FormatError> {
        let mut k = Zeroizing::new([0u8; DATA_KEY_LEN]);
        aws_lc_rs::rand::fill(k.as_mut()).map_err(|_| FormatError::Random)?;
        Ok(Self(k))
    }

    /// Wraps raw key bytes (e.g. just unwrapped from the database).
    pub fn from_bytes(bytes: [u8; DATA_KEY_LEN]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The raw key, for wrapping. Do not copy it anywhere that is not zeroized.
    pub fn as_bytes(&self) -> &[u8; DATA_KEY_LEN] {
        &self.0
    }
}

/// The random 128-bit identifier of one content stream, bound into the header and every
/// chunk's associated data. It is not the storage key of the object.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ContentId(pub [u8; CONTENT_ID_LEN]);

impl ContentId {
    /// A fresh id from the OS CSPRNG.
    pub fn generate() -> Result<Self, FormatError> {
        let mut id = [0u8; CONTENT_ID_LEN];
        aws_lc_rs::rand::fill(&mut id).map_err(|_| FormatError::Random)?;
        Ok(Self(id))
    }
}

/// The two keys one content stream is processed with. Neither key's bytes pass through our
/// own buffers: HKDF output goes straight into aws-lc key objects.
pub(crate) struct DerivedKeys {
    /// AES-256-GCM key for every chunk of the stream.
    pub(crate) chunk: aead::LessSafeKey,
    /// HMAC-SHA256 key for the header's key commitment.
    pub(crate) commit: hmac::Key,
}

impl DerivedKeys {
    /// HKDF-SHA256 with the content id as salt and the data key as input keying material,
    /// expanded once per purpose with distinct info strings.
    pub(crate) fn derive(data_key: &DataKey, content_id: ContentId) -> Result<Self, FormatError> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &content_id.0).extract(data_key.as_bytes());
        let chunk_info = [CHUNK_KEY_INFO];
        let chunk_okm = prk
            .expand(&chunk_info, &aead::AES_256_GCM)
            .map_err(|_| FormatError::KeyDerivation)?;
        let chunk = aead::LessSafeKey::new(aead::UnboundKey::from(chunk_okm));
        let commit_info = [COMMIT_KEY_INFO];
        let commit_okm = prk
            .expand(&commit_info, hmac::HMAC_SHA256)
            .map_err(|_| FormatError::KeyDerivation)?;
        let commit = hmac::Key::from(commit_okm);
        Ok(Self { chunk, commit })
    }
}
