//! Coffer's chunked AES-256-GCM object format: an authenticated, key-committing header followed by independently sealed fixed-size chunks.
//!
//! The byte layout is specified in `docs/FORMAT.md` and pinned by the committed vectors in
//! `tests/vectors/`. Everything in this crate that reads bytes from storage is written so that
//! hostile input yields a [`FormatError`], never a panic.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

mod cipher;
mod error;
mod header;
mod keys;
mod layout;
mod nonce;

pub use cipher::ChunkCipher;
pub use error::FormatError;
pub use header::{ALGORITHM_AES_256_GCM_HKDF_SHA256, FORMAT_VERSION, HEADER_LEN, MAGIC};
pub use keys::{CONTENT_ID_LEN, ContentId, DATA_KEY_LEN, DataKey};
pub use layout::{
    CHUNK_OVERHEAD, DEFAULT_CHUNK_SIZE, Layout, MAX_CHUNK_INDEX, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE,
    NONCE_LEN, TAG_LEN,
};
