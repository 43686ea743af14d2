//! The versioned AES-256-GCM blob shared by every wrapped key and encrypted value in this crate.
//!
//! Layout (frozen): `version (1) || nonce (12) || ciphertext || tag (16)`.
//! The associated data is `version || label || binding…`, so a blob sealed for one purpose,
//! tenant, node or content id cannot be opened for another, and the version byte cannot be
//! swapped without detection.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce};
use zeroize::Zeroizing;

use crate::KeyError;

/// The only blob format version so far. A new layout gets a new byte; old blobs stay readable.
pub const BLOB_VERSION_1: u8 = 1;
/// Length of the random AES-GCM nonce stored in each blob.
pub const NONCE_LEN: usize = aws_lc_rs::aead::NONCE_LEN;
/// Length of the AES-GCM authentication tag at the end of each blob.
pub const TAG_LEN: usize = 16;
/// Bytes a blob adds to its plaintext.
pub(crate) const OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;

/// Encrypts `plaintext` under `key` with a fresh random nonce.
pub(crate) fn seal(
    key: &LessSafeKey,
    label: &[u8],
    binding: &[&[u8]],
    plaintext: &[u8],
) -> Result<Vec<u8>, KeyError> {
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| KeyError::Random)?;
    let aad = associated_data(BLOB_VERSION_1, label, binding);
    // Zeroizing so the plaintext copy is wiped even if sealing fails.
    let mut body = Zeroizing::new(plaintext.to_vec());
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad.as_slice()),
            body.as_mut_slice(),
        )
        .map_err(|_| KeyError::SealFailed)?;
    let mut blob = Vec::with_capacity(plaintext.len() + OVERHEAD);
    blob.push(BLOB_VERSION_1);
    blob.extend_from_slice(&nonce);
    blob.extend_from_slice(&body);
    blob.extend_from_slice(tag.as_ref());
    Ok(blob)
}

/// Decrypts a blob made by [`seal`] with the same key, label and binding.
///
/// Returns [`KeyError::BadBlob`] for a short blob or unknown version, and `auth_failure`
/// when authentication fails.
pub(crate) fn open(
    key: &LessSafeKey,
    label: &[u8],
    binding: &[&[u8]],
    blob: &[u8],
    auth_failure: KeyError,
) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let (&version, rest) = blob.split_first().ok_or(KeyError::BadBlob)?;
    if version != BLOB_VERSION_1 {
        return Err(KeyError::BadBlob);
    }
    let (nonce, sealed) = rest
        .split_first_chunk::<NONCE_LEN>()
        .ok_or(KeyError::BadBlob)?;
    if sealed.len() < TAG_LEN {
        return Err(KeyError::BadBlob);
    }
    let aad = associated_data(version, label, binding);
    let mut body = Zeroizing::new(sealed.to_vec());
    let plaintext_len = key
        .open_in_place(
            Nonce::assume_unique_for_key(*nonce),
            Aad::from(aad.as_slice()),
            body.as_mut_slice(),
        )
        .map_err(|_| auth_failure)?
        .len();
    body.truncate(plaintext_len);
    Ok(body)
}

/// Decrypts a blob that must hold exactly a 32-byte key.
pub(crate) fn open_key(
    key: &LessSafeKey,
    label: &[u8],
    binding: &[&[u8]],
    blob: &[u8],
) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let plaintext = open(key, label, binding, blob, KeyError::UnwrapFailed)?;
    let mut raw = Zeroizing::new([0u8; 32]);
    if plaintext.len() != raw.len() {
        return Err(KeyError::BadBlob);
    }
    raw.copy_from_slice(&plaintext);
    Ok(raw)
}

fn associated_data(version: u8, label: &[u8], binding: &[&[u8]]) -> Vec<u8> {
    let binding_len: usize = binding.iter().map(|part| part.len()).sum();
    let mut aad = Vec::with_capacity(1 + label.len() + binding_len);
    aad.push(version);
    aad.extend_from_slice(label);
    for part in binding {
        aad.extend_from_slice(part);
    }
    aad
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::aead::{AES_256_GCM, UnboundKey};

    use super::*;

    fn key(byte: u8) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[byte; 32]).unwrap())
    }

    #[test]
    fn blob_layout_is_version_nonce_ciphertext_tag() {
        let blob = seal(&key(1), b"label", &[b"ctx"], b"hello").unwrap();
        assert_eq!(blob.len(), 1 + NONCE_LEN + 5 + TAG_LEN);
        assert_eq!(blob[0], BLOB_VERSION_1);
        let opened = open(&key(1), b"label", &[b"ctx"], &blob, KeyError::DecryptFailed).unwrap();
        assert_eq!(opened.as_slice(), b"hello");
    }

    #[test]
    fn label_and_binding_are_both_authenticated() {
        let blob = seal(&key(1), b"label", &[b"ctx"], b"x").unwrap();
        for (label, binding) in [(&b"other"[..], &b"ctx"[..]), (b"label", b"ctX")] {
            let result = open(&key(1), label, &[binding], &blob, KeyError::DecryptFailed);
            assert_eq!(result.unwrap_err(), KeyError::DecryptFailed);
        }
    }

    #[test]
    fn fail_short_blobs_and_unknown_versions_are_bad_blobs() {
        let blob = seal(&key(1), b"l", &[], b"").unwrap();
        assert_eq!(blob.len(), OVERHEAD);
        for len in 0..blob.len() {
            let result = open(&key(1), b"l", &[], &blob[..len], KeyError::DecryptFailed);
            assert_eq!(result.unwrap_err(), KeyError::BadBlob, "length {len}");
        }
        let mut future = blob.clone();
        future[0] = 2;
        let result = open(&key(1), b"l", &[], &future, KeyError::DecryptFailed);
        assert_eq!(result.unwrap_err(), KeyError::BadBlob);
    }

    #[test]
    fn fail_open_key_refuses_a_plaintext_that_is_not_32_bytes() {
        let blob = seal(&key(1), b"l", &[], &[7u8; 31]).unwrap();
        assert_eq!(
            open_key(&key(1), b"l", &[], &blob).unwrap_err(),
            KeyError::BadBlob
        );
    }
}
