//! Stable-toolchain smoke run of the `parse_path` fuzz target: the committed corpus plus
//! thousands of mutated and random inputs must never panic and keep the normal-form property.

#[path = "../fuzz/src/lib.rs"]
mod target;

use std::path::Path;

fn corpus() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/parse_path");
    let mut v: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .expect("committed corpus")
        .map(|e| std::fs::read(e.expect("entry").path()).expect("readable"))
        .collect();
    v.sort();
    v
}

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const PIECES: [&[u8]; 12] = [
    b"/",
    b"..",
    b".",
    b"a",
    b"\0",
    b"\x01",
    b"\xc3\xa9",
    b"e\xcc\x81",
    b"\xff",
    b"//",
    b"\xf0\x9f\xa6\x80",
    b" ",
];

#[test]
fn committed_corpus_and_mutations_never_break_the_normaliser() {
    let seeds = corpus();
    assert!(seeds.len() >= 5, "corpus is committed");
    let mut rng = Rng(0x5eed_c0ff_ee00_0001);
    for s in &seeds {
        target::parse_path(s);
    }
    for _ in 0..20_000 {
        let mut input = seeds[rng.below(seeds.len())].clone();
        for _ in 0..1 + rng.below(6) {
            let piece = PIECES[rng.below(PIECES.len())];
            let at = rng.below(input.len() + 1);
            match rng.below(3) {
                0 => input.splice(at..at, piece.iter().copied()).for_each(drop),
                1 if !input.is_empty() => {
                    let i = at.min(input.len() - 1);
                    input[i] = rng.next() as u8;
                }
                _ => input.truncate(at),
            }
        }
        target::parse_path(&input);
    }
}

#[test]
fn long_paths_of_many_short_names_are_handled() {
    let many = "/a".repeat(3000);
    target::parse_path(many.as_bytes());
    let deep_up = "/a/..".repeat(1000);
    target::parse_path(deep_up.as_bytes());
}
