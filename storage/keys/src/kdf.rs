//! HKDF-SHA256 derivation of AEAD and HMAC keys straight into aws-lc-rs key objects.

use aws_lc_rs::aead::{AES_256_GCM, LessSafeKey, UnboundKey};
use aws_lc_rs::{hkdf, hmac};

/// Extracts a pseudorandom key from `secret` with `salt` (HKDF-Extract).
pub(crate) fn extract(salt: &[u8], secret: &[u8]) -> hkdf::Prk {
    hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(secret)
}

/// An AES-256-GCM key expanded from `prk` for the purpose named by `info`.
pub(crate) fn aead_key(prk: &hkdf::Prk, info: &[u8]) -> LessSafeKey {
    LessSafeKey::new(expand::<_, UnboundKey>(prk, info, &AES_256_GCM))
}

/// An HMAC-SHA256 key expanded from `prk` for the purpose named by `info`.
pub(crate) fn hmac_key(prk: &hkdf::Prk, info: &[u8]) -> hmac::Key {
    expand::<_, hmac::Key>(prk, info, hmac::HMAC_SHA256)
}

#[allow(
    clippy::expect_used,
    reason = "HKDF-SHA256 expand fails only above 255 * 32 output bytes; every key here is 32 or 64"
)]
fn expand<L, K>(prk: &hkdf::Prk, info: &[u8], len: L) -> K
where
    L: hkdf::KeyType,
    K: for<'a> From<hkdf::Okm<'a, L>>,
{
    let info = [info];
    let okm = prk
        .expand(&info, len)
        .expect("HKDF-SHA256 output of at most 64 bytes is always allowed");
    K::from(okm)
}
