//! Committed test vectors in `tests/vectors/`: every vector decodes as stated, and the
//! valid ones also decode with an independent implementation of docs/FORMAT.md.
//!
//! Nonces are random, so vectors were produced once by the ignored
//! `generate_missing_vectors` test and frozen; decoding them is deterministic.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use aws_lc_rs::{aead, hkdf, hmac};
use coffer_format::{ChunkCipher, ContentId, DataKey, FormatError};
use serde::{Deserialize, Serialize};

/// One vector file. `key`, `content_id` and `plaintext_len` are what the reader is given
/// (from the database); `object` is the stored bytes.
#[derive(Serialize, Deserialize)]
struct Vector {
    description: String,
    key: String,
    content_id: String,
    chunk_size: u32,
    plaintext_len: u64,
    /// The expected plaintext (hex); absent for `fail_` vectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    plaintext: Option<String>,
    object: String,
    /// The `Debug` form of the expected `FormatError`; only on `fail_` vectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expected_error: Option<String>,
}

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn load_vectors() -> Vec<(String, Vector)> {
    let mut vectors: Vec<(String, Vector)> = fs::read_dir(vectors_dir())
        .expect("tests/vectors exists")
        .map(|entry| entry.expect("readable dir entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .map(|path| {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            let text = fs::read_to_string(&path).expect("readable vector");
            (
                name,
                serde_json::from_str(&text).expect("well-formed vector"),
            )
        })
        .collect();
    vectors.sort_by(|a, b| a.0.cmp(&b.0));
    vectors
}

fn decode(vector: &Vector) -> Result<Vec<u8>, FormatError> {
    let key = DataKey::from_bytes(hex::decode(&vector.key).unwrap().try_into().unwrap());
    let id = ContentId(hex::decode(&vector.content_id).unwrap().try_into().unwrap());
    let mut object = hex::decode(&vector.object).unwrap();
    ChunkCipher::open_object(&key, id, &mut object, vector.plaintext_len)
}

#[test]
fn every_committed_vector_decodes_or_fails_as_stated() {
    let vectors = load_vectors();
    let failing = vectors
        .iter()
        .filter(|(name, _)| name.starts_with("fail_"))
        .count();
    assert!(vectors.len() - failing >= 6, "valid vectors missing");
    assert!(failing >= 9, "fail_ vectors missing");
    for (name, vector) in &vectors {
        let result = decode(vector);
        if name.starts_with("fail_") {
            let expected = vector
                .expected_error
                .as_deref()
                .expect("fail_ vector states its error");
            assert_eq!(
                format!("{:?}", result.err()),
                format!("Some({expected})"),
                "{name}"
            );
        } else {
            let expected = hex::decode(vector.plaintext.as_deref().unwrap()).unwrap();
            assert_eq!(expected.len() as u64, vector.plaintext_len, "{name}");
            assert_eq!(result, Ok(expected), "{name}");
        }
    }
}

/// A second decoder written from docs/FORMAT.md alone, using aws-lc directly.
fn decode_from_the_spec(vector: &Vector) -> Vec<u8> {
    let key = hex::decode(&vector.key).unwrap();
    let id = hex::decode(&vector.content_id).unwrap();
    let object = hex::decode(&vector.object).unwrap();
    let (header, mut chunks) = object.split_at(64);
    assert_eq!(&header[..8], b"\x89COFFER\n");
    assert_eq!(header[8..12], [1, 1, 0, 0]);
    let chunk_size = u32::from_be_bytes(header[12..16].try_into().unwrap()) as usize;
    assert_eq!(chunk_size as u32, vector.chunk_size);
    assert_eq!(&header[16..32], &id[..]);

    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &id).extract(&key);
    let commit_key: hmac::Key = prk
        .expand(&[b"coffer/v1/commit"], hmac::HMAC_SHA256)
        .unwrap()
        .into();
    assert_eq!(
        hmac::sign(&commit_key, &header[..32]).as_ref(),
        &header[32..64]
    );
    let chunk_key: aead::UnboundKey = prk
        .expand(&[b"coffer/v1/chunk"], &aead::AES_256_GCM)
        .unwrap()
        .into();
    let chunk_key = aead::LessSafeKey::new(chunk_key);

    let len = vector.plaintext_len as usize;
    let count = len.div_ceil(chunk_size).max(1);
    let mut plaintext = Vec::new();
    for index in 0..count {
        let plain_len = chunk_size.min(len - index * chunk_size);
        let (chunk, rest) = chunks.split_at(12 + plain_len + 16);
        chunks = rest;
        let nonce = aead::Nonce::try_assume_unique_for_key(&chunk[..12]).unwrap();
        let mut ad = id.clone();
        ad.extend_from_slice(&(index as u64).to_be_bytes());
        ad.push(u8::from(index + 1 == count));
        let mut in_out = chunk[12..].to_vec();
        let opened = chunk_key
            .open_in_place(nonce, aead::Aad::from(ad), &mut in_out)
            .unwrap();
        plaintext.extend_from_slice(opened);
    }
    assert!(chunks.is_empty(), "bytes after the final chunk");
    plaintext
}

#[test]
fn valid_vectors_decode_with_an_independent_implementation_of_the_spec() {
    for (name, vector) in load_vectors()
        .iter()
        .filter(|(name, _)| !name.starts_with("fail_"))
    {
        let expected = hex::decode(vector.plaintext.as_deref().unwrap()).unwrap();
        assert_eq!(decode_from_the_spec(vector), expected, "{name}");
    }
}

// ---- generation (run once; existing files are never overwritten) ----

const VECTOR_KEY: [u8; 32] = *b"coffer test vector data key 0001";
const VECTOR_ID: [u8; 16] = *b"coffer vector id";
/// Two full 4 KiB chunks and a 100-byte final chunk: the base of every `fail_` vector.
const FAIL_BASE_LEN: usize = 2 * 4096 + 100;

fn vector(description: &str, chunk_size: u32, plaintext_len: usize, object: &[u8]) -> Vector {
    Vector {
        description: description.to_owned(),
        key: hex::encode(VECTOR_KEY),
        content_id: hex::encode(VECTOR_ID),
        chunk_size,
        plaintext_len: plaintext_len as u64,
        plaintext: None,
        object: hex::encode(object),
        expected_error: None,
    }
}

fn write_if_missing(name: &str, vector: &Vector) {
    let path = vectors_dir().join(format!("{name}.json"));
    if !path.exists() {
        let text = serde_json::to_string_pretty(vector).unwrap() + "\n";
        fs::write(path, text).unwrap();
    }
}

fn valid_vectors() -> Vec<(&'static str, &'static str, u32, usize)> {
    vec![
        ("empty", "empty file: one empty final chunk", 4096, 0),
        ("one_byte", "a single byte", 4096, 1),
        (
            "chunk_minus_one",
            "one byte short of a full 8 KiB chunk",
            8192,
            8191,
        ),
        ("exactly_one_chunk", "exactly one full chunk", 4096, 4096),
        (
            "one_chunk_plus_one",
            "one full chunk and a 1-byte final chunk",
            4096,
            4097,
        ),
        (
            "two_and_a_half_chunks",
            "two full chunks and a half chunk",
            4096,
            10240,
        ),
    ]
}

fn fail_vectors(
    object: &[u8],
    other_object: &[u8],
) -> Vec<(&'static str, &'static str, Vec<u8>, String)> {
    let chunk = |i: u64| common::chunk_bytes(4096, i, FAIL_BASE_LEN);
    let flip = |offset: usize| {
        let mut o = object.to_vec();
        o[offset] ^= 0x01;
        o
    };
    let mut spliced = object.to_vec();
    spliced[chunk(1)].copy_from_slice(&other_object[chunk(1)]);
    vec![
        (
            "fail_flipped_tag",
            "last tag byte of chunk 1 flipped",
            flip(chunk(1).end - 1),
            "ChunkAuthFailed { index: 1 }".into(),
        ),
        (
            "fail_flipped_ciphertext",
            "first ciphertext byte of chunk 0 flipped",
            flip(chunk(0).start + 12),
            "ChunkAuthFailed { index: 0 }".into(),
        ),
        (
            "fail_flipped_nonce",
            "first nonce byte of chunk 2 flipped",
            flip(chunk(2).start),
            "ChunkAuthFailed { index: 2 }".into(),
        ),
        (
            "fail_truncated_final_chunk",
            "final chunk dropped (cut at a chunk boundary)",
            object[..chunk(2).start].to_vec(),
            "ChunkLength { index: 2 }".into(),
        ),
        (
            "fail_truncated_mid_chunk",
            "last 10 bytes cut off",
            object[..object.len() - 10].to_vec(),
            "ChunkLength { index: 2 }".into(),
        ),
        (
            "fail_reordered_chunks",
            "chunks 0 and 1 swapped",
            common::swap_chunks(object, 4096, 0, 1, FAIL_BASE_LEN),
            "ChunkAuthFailed { index: 0 }".into(),
        ),
        (
            "fail_chunk_from_other_object",
            "chunk 1 taken from another object under the same key",
            spliced,
            "ChunkAuthFailed { index: 1 }".into(),
        ),
        (
            "fail_bad_magic",
            "first magic byte flipped",
            flip(0),
            "BadMagic".into(),
        ),
        (
            "fail_wrong_version",
            "version byte set to 2",
            {
                let mut o = object.to_vec();
                o[8] = 2;
                o
            },
            "UnsupportedVersion(2)".into(),
        ),
        (
            "fail_tampered_header",
            "chunk size changed from 4096 to 8192 (commitment no longer matches)",
            {
                let mut o = object.to_vec();
                o[12..16].copy_from_slice(&8192u32.to_be_bytes());
                o
            },
            "KeyCommitmentMismatch".into(),
        ),
    ]
}

#[test]
#[ignore = "writes tests/vectors/*.json once; the committed files are frozen"]
fn generate_missing_vectors() {
    fs::create_dir_all(vectors_dir()).unwrap();
    let key = DataKey::from_bytes(VECTOR_KEY);
    for (name, description, chunk_size, len) in valid_vectors() {
        let plaintext = common::plaintext(len);
        let cipher = ChunkCipher::new(&key, ContentId(VECTOR_ID), chunk_size).unwrap();
        let mut v = vector(
            description,
            chunk_size,
            len,
            &cipher.seal_object(&plaintext).unwrap(),
        );
        v.plaintext = Some(hex::encode(&plaintext));
        write_if_missing(name, &v);
    }
    let plaintext = common::plaintext(FAIL_BASE_LEN);
    let base = ChunkCipher::new(&key, ContentId(VECTOR_ID), 4096)
        .unwrap()
        .seal_object(&plaintext)
        .unwrap();
    let other = ChunkCipher::new(&key, ContentId(*b"another vectorid"), 4096)
        .unwrap()
        .seal_object(&plaintext)
        .unwrap();
    for (name, description, object, error) in fail_vectors(&base, &other) {
        let mut v = vector(description, 4096, FAIL_BASE_LEN, &object);
        v.expected_error = Some(error);
        write_if_missing(name, &v);
    }
    let mut wrong_id = vector(
        "opened with a content id other than the header's",
        4096,
        FAIL_BASE_LEN,
        &base,
    );
    wrong_id.content_id = hex::encode(b"another vectorid");
    wrong_id.expected_error = Some("WrongContentId".into());
    write_if_missing("fail_wrong_content_id", &wrong_id);
    let mut wrong_key = vector(
        "opened with a different data key",
        4096,
        FAIL_BASE_LEN,
        &base,
    );
    wrong_key.key = hex::encode([0x5a; 32]);
    wrong_key.expected_error = Some("KeyCommitmentMismatch".into());
    write_if_missing("fail_wrong_key", &wrong_key);
}
