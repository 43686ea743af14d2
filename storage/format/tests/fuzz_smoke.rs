//! Stable-toolchain smoke run of the `open_object` fuzz target: the committed corpus plus a
//! few thousand mutated and random inputs must never panic, and no mutation of a genuine
//! object may open.

mod common;

#[path = "../fuzz/src/lib.rs"]
mod target;

use std::fs;
use std::path::{Path, PathBuf};

use coffer_format::{ChunkCipher, ContentId, DataKey};
use target::{FUZZ_CONTENT_ID, FUZZ_KEY, PARAMS_LEN, open_object};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/open_object")
}

/// Every committed corpus file, sorted by name.
fn corpus() -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(corpus_dir())
        .expect("committed corpus dir")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .map(|path| {
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                fs::read(&path).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

/// The genuine objects among the corpus: they must open, so mutations start from inputs
/// that reach every decoding step.
fn seeds() -> Vec<Vec<u8>> {
    corpus()
        .into_iter()
        .filter(|(name, _)| name.starts_with("seed_"))
        .map(|(_, bytes)| bytes)
        .collect()
}

/// A tiny deterministic PRNG (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    match rng.below(5) {
        0 => {
            let at = 1 + rng.below(out.len() - 1);
            out[at] ^= 1 << rng.below(8);
        }
        1 => out.truncate(rng.below(out.len())),
        2 => {
            let extra_len = 1 + rng.below(64);
            let extra = rng.bytes(extra_len);
            out.extend_from_slice(&extra);
        }
        3 => {
            let at = 1 + rng.below(out.len() - 1);
            let len = (1 + rng.below(32)).min(out.len() - at);
            for byte in &mut out[at..at + len] {
                *byte ^= 1 + rng.below(255) as u8;
            }
        }
        _ => {
            let len = 1 + rng.below(200);
            let from = rng.below(out.len().saturating_sub(len));
            let to = PARAMS_LEN + rng.below(out.len().saturating_sub(len + PARAMS_LEN));
            let slice = out[from..(from + len).min(out.len())].to_vec();
            let end = (to + slice.len()).min(out.len());
            out[to..end].copy_from_slice(&slice[..end - to]);
        }
    }
    out
}

#[test]
fn committed_seeds_open_under_the_fuzz_key() {
    let seeds = seeds();
    assert!(seeds.len() >= 4, "seed corpus missing");
    for seed in &seeds {
        assert!(
            open_object(seed).is_some(),
            "a committed seed no longer opens"
        );
    }
}

#[test]
fn every_committed_corpus_input_runs_without_panicking() {
    for (_, input) in corpus() {
        let _ = open_object(&input);
    }
}

#[test]
fn thousands_of_mutated_objects_never_panic_and_never_open() {
    let seeds = seeds();
    let mut rng = Rng(0x00C0_FFEE_D00D_F00D);
    for round in 0..4000 {
        let seed = &seeds[round % seeds.len()];
        let mutated = mutate(&mut rng, seed);
        let opened = open_object(&mutated);
        if mutated.get(1..) != seed.get(1..) {
            assert!(opened.is_none(), "round {round}: a mutated object opened");
        }
    }
}

#[test]
fn random_inputs_never_panic_and_never_open() {
    let mut rng = Rng(0x5EED_0FC0_FFE5);
    for _ in 0..2000 {
        let len = rng.below(9000);
        let input = rng.bytes(len);
        assert!(open_object(&input).is_none());
    }
}

/// The genuine objects the corpus is seeded with: (name, first chunk, plaintext length).
const SEEDS: [(&str, u64, usize); 5] = [
    ("seed_empty", 0, 0),
    ("seed_one_byte", 0, 1),
    ("seed_one_full_chunk", 0, 4096),
    ("seed_two_chunks_and_a_tail", 0, 8292),
    ("seed_run_from_chunk_1", 1, 8292),
];

#[test]
#[ignore = "writes the seed corpus once; the committed files are frozen"]
fn generate_seed_corpus() {
    fs::create_dir_all(corpus_dir()).unwrap();
    let cipher = ChunkCipher::new(
        &DataKey::from_bytes(FUZZ_KEY),
        ContentId(FUZZ_CONTENT_ID),
        4096,
    )
    .unwrap();
    for (name, first, len) in SEEDS {
        let object = cipher.seal_object(&common::plaintext(len)).unwrap();
        let run_start = cipher.layout().chunk_offset(first) as usize;
        let mut input = vec![0u8];
        input.extend_from_slice(&first.to_be_bytes());
        input.extend_from_slice(&(len as u64).to_be_bytes());
        input.extend_from_slice(&object[..coffer_format::HEADER_LEN]);
        input.extend_from_slice(&object[run_start..]);
        let path = corpus_dir().join(name);
        if !path.exists() {
            fs::write(path, input).unwrap();
        }
    }
}
