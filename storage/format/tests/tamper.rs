//! Every change to a stored object — flipped bits, truncation, reordering, swapping — is
//! refused with the error that names it.

mod common;

use coffer_format::{ChunkCipher, FormatError, HEADER_LEN, NONCE_LEN, TAG_LEN};
use common::{SMALL_CHUNK, chunk_bytes, id, key, open, plaintext, seal, swap_chunks};

/// Two full chunks and a 100-byte final chunk.
const LEN: usize = 2 * SMALL_CHUNK as usize + 100;

fn sample() -> Vec<u8> {
    seal(SMALL_CHUNK, &plaintext(LEN))
}

/// The error a single flipped bit in header byte `offset` must produce.
fn expected_header_error(offset: usize, flipped_value: u8) -> FormatError {
    match offset {
        0..8 => FormatError::BadMagic,
        8 => FormatError::UnsupportedVersion(flipped_value),
        9 => FormatError::UnsupportedAlgorithm(flipped_value),
        10..16 => FormatError::BadHeader,
        16..32 => FormatError::WrongContentId,
        _ => FormatError::KeyCommitmentMismatch,
    }
}

#[test]
fn every_single_bit_flip_in_the_header_is_rejected_with_its_fields_error() {
    let header = sample()[..HEADER_LEN].to_vec();
    for offset in 0..HEADER_LEN {
        for bit in 0..8 {
            let mut tampered = header.clone();
            tampered[offset] ^= 1 << bit;
            let result = ChunkCipher::open_header(&key(1), id(2), &tampered);
            let expected = expected_header_error(offset, tampered[offset]);
            assert_eq!(result.err(), Some(expected), "byte {offset} bit {bit}");
        }
    }
}

#[test]
fn a_header_claiming_another_valid_chunk_size_fails_the_key_commitment() {
    let mut header = sample()[..HEADER_LEN].to_vec();
    header[12..16].copy_from_slice(&8192u32.to_be_bytes());
    let result = ChunkCipher::open_header(&key(1), id(2), &header);
    assert_eq!(result.err(), Some(FormatError::KeyCommitmentMismatch));
}

#[test]
fn a_header_of_the_wrong_length_is_rejected() {
    let object = sample();
    for len in [0, HEADER_LEN - 1, HEADER_LEN + 1] {
        let result = ChunkCipher::open_header(&key(1), id(2), &object[..len]);
        assert_eq!(result.err(), Some(FormatError::HeaderLength(len)));
    }
}

#[test]
fn a_flipped_bit_in_any_chunks_nonce_ciphertext_or_tag_fails_that_chunk() {
    let object = sample();
    for index in 0..3u64 {
        let chunk = chunk_bytes(SMALL_CHUNK, index, LEN);
        let nonce = chunk.start..chunk.start + NONCE_LEN;
        let ciphertext = nonce.end..chunk.end - TAG_LEN;
        let tag = ciphertext.end..chunk.end;
        for region in [nonce, ciphertext, tag] {
            for offset in [region.start, region.end - 1] {
                let mut tampered = object.clone();
                tampered[offset] ^= 0x10;
                let result = open(&tampered, LEN);
                assert_eq!(
                    result,
                    Err(FormatError::ChunkAuthFailed { index }),
                    "offset {offset}"
                );
            }
        }
    }
}

#[test]
fn a_flipped_bit_in_an_empty_objects_only_chunk_is_rejected() {
    let object = seal(SMALL_CHUNK, &[]);
    for offset in HEADER_LEN..object.len() {
        let mut tampered = object.clone();
        tampered[offset] ^= 1;
        assert_eq!(
            open(&tampered, 0),
            Err(FormatError::ChunkAuthFailed { index: 0 })
        );
    }
}

#[test]
fn dropping_the_final_chunk_is_rejected_even_at_a_chunk_boundary() {
    let object = sample();
    let without_final = &object[..chunk_bytes(SMALL_CHUNK, 2, LEN).start];
    assert_eq!(
        open(without_final, LEN),
        Err(FormatError::ChunkLength { index: 2 })
    );
    let only_header = &object[..HEADER_LEN];
    assert_eq!(
        open(only_header, LEN),
        Err(FormatError::ChunkLength { index: 0 })
    );
}

#[test]
fn cutting_a_chunk_short_is_rejected() {
    let object = sample();
    let final_cut = &object[..object.len() - 1];
    assert_eq!(
        open(final_cut, LEN),
        Err(FormatError::ChunkLength { index: 2 })
    );
    let middle_cut = &object[..chunk_bytes(SMALL_CHUNK, 1, LEN).start + 100];
    assert_eq!(
        open(middle_cut, LEN),
        Err(FormatError::ChunkLength { index: 1 })
    );
    let header_cut = &object[..HEADER_LEN - 1];
    assert_eq!(
        open(header_cut, LEN),
        Err(FormatError::HeaderLength(header_cut.len()))
    );
}

#[test]
fn a_full_chunk_cannot_pass_as_the_final_one_when_the_tail_is_cut_off() {
    // The object is truncated after chunk 1 and the length is "adjusted" to match: chunk 1
    // was sealed as non-final, so opening it as the final chunk fails.
    let object = sample();
    let truncated = &object[..chunk_bytes(SMALL_CHUNK, 2, LEN).start];
    let shortened_len = 2 * SMALL_CHUNK as usize;
    assert_eq!(
        open(truncated, shortened_len),
        Err(FormatError::ChunkAuthFailed { index: 1 })
    );
}

#[test]
fn bytes_appended_after_the_final_chunk_are_rejected() {
    let mut object = sample();
    object.extend_from_slice(&[0; 40]);
    assert_eq!(
        open(&object, LEN),
        Err(FormatError::ChunkLength { index: 3 })
    );
    let reader = ChunkCipher::open_header(&key(1), id(2), &object[..HEADER_LEN]).unwrap();
    let mut out = Vec::new();
    let result = reader.open_chunks(0, &mut object[HEADER_LEN..].to_vec(), LEN as u64, &mut out);
    assert_eq!(result, Err(FormatError::ChunkLength { index: 3 }));
    assert!(
        out.is_empty(),
        "verified chunks of a failed run were handed out"
    );
}

#[test]
fn reordered_chunks_are_rejected() {
    let swapped = swap_chunks(&sample(), SMALL_CHUNK, 0, 1, LEN);
    assert_eq!(
        open(&swapped, LEN),
        Err(FormatError::ChunkAuthFailed { index: 0 })
    );
}

#[test]
fn a_chunk_moved_from_another_object_under_the_same_key_is_rejected() {
    let object = sample();
    let other = ChunkCipher::new(&key(1), id(3), SMALL_CHUNK).unwrap();
    let other_object = other.seal_object(&plaintext(LEN)).unwrap();
    let chunk = chunk_bytes(SMALL_CHUNK, 1, LEN);
    let mut spliced = object.clone();
    spliced[chunk.clone()].copy_from_slice(&other_object[chunk]);
    assert_eq!(
        open(&spliced, LEN),
        Err(FormatError::ChunkAuthFailed { index: 1 })
    );
}

#[test]
fn swapped_objects_are_rejected_before_any_chunk_is_opened() {
    let a = sample();
    let b_cipher = ChunkCipher::new(&key(5), id(6), SMALL_CHUNK).unwrap();
    let mut b = b_cipher.seal_object(&plaintext(LEN)).unwrap();
    // B's row (key 5, id 6) pointing at A's object, and A's row pointing at B's object.
    let a_as_b = ChunkCipher::open_object(&key(5), id(6), &mut a.clone(), LEN as u64);
    assert_eq!(a_as_b, Err(FormatError::WrongContentId));
    assert_eq!(open(&b, LEN), Err(FormatError::WrongContentId));
    // B re-labelled with A's content id still fails: the commitment covers the id.
    b[16..32].copy_from_slice(&id(2).0);
    let relabelled = ChunkCipher::open_object(&key(5), id(2), &mut b, LEN as u64);
    assert_eq!(relabelled, Err(FormatError::KeyCommitmentMismatch));
}

#[test]
fn a_wrong_key_is_detected_by_the_key_commitment() {
    let object = sample();
    let result = ChunkCipher::open_object(&key(9), id(2), &mut object.clone(), LEN as u64);
    assert_eq!(result, Err(FormatError::KeyCommitmentMismatch));
}

#[test]
fn an_empty_run_is_refused_rather_than_read_as_nothing() {
    let reader = ChunkCipher::new(&key(1), id(2), SMALL_CHUNK).unwrap();
    let mut out = Vec::new();
    let result = reader.open_chunks(4, &mut [], LEN as u64, &mut out);
    assert_eq!(result, Err(FormatError::ChunkLength { index: 4 }));
}

#[test]
fn a_chunk_opened_with_the_wrong_final_flag_is_rejected() {
    let cipher = ChunkCipher::new(&key(1), id(2), SMALL_CHUNK).unwrap();
    let mut sealed = Vec::new();
    cipher
        .seal_chunk(0, false, &plaintext(SMALL_CHUNK as usize), &mut sealed)
        .unwrap();
    let result = cipher.open_chunk_in_place(0, true, &mut sealed);
    assert_eq!(result, Err(FormatError::ChunkAuthFailed { index: 0 }));
}
