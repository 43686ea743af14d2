//! Format throughput: sealing and opening one chunk through `ChunkCipher`, next to raw
//! AES-256-GCM on the same buffer size in the same run (the ceiling the format can reach).

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use coffer_format::{CHUNK_OVERHEAD, ChunkCipher, ContentId, DataKey, NONCE_LEN};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const CHUNK_SIZES: [u32; 4] = [16 << 10, 64 << 10, 256 << 10, 1 << 20];

fn format_cipher(chunk_size: u32) -> ChunkCipher {
    ChunkCipher::new(
        &DataKey::from_bytes([7; 32]),
        ContentId([9; 16]),
        chunk_size,
    )
    .expect("valid size")
}

fn raw_key() -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7; 32]).expect("32-byte key"))
}

/// A buffer laid out as `seal_chunk_in_place` expects, with room for the tag.
fn sealable_buffer(chunk_size: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(chunk_size + CHUNK_OVERHEAD);
    buf.resize(NONCE_LEN + chunk_size, 0xA5);
    buf
}

fn seal(c: &mut Criterion) {
    let mut group = c.benchmark_group("seal");
    for chunk_size in CHUNK_SIZES {
        let size = chunk_size as usize;
        group.throughput(Throughput::Bytes(u64::from(chunk_size)));
        let cipher = format_cipher(chunk_size);
        let mut buf = sealable_buffer(size);
        group.bench_function(BenchmarkId::new("format", size), |b| {
            b.iter(|| {
                buf.truncate(NONCE_LEN + size);
                cipher
                    .seal_chunk_in_place(0, false, &mut buf)
                    .expect("seal");
            })
        });
        let key = raw_key();
        let mut raw = vec![0xA5u8; size];
        group.bench_function(BenchmarkId::new("raw_aead", size), |b| {
            b.iter(|| {
                let nonce = Nonce::assume_unique_for_key([1; NONCE_LEN]);
                key.seal_in_place_separate_tag(nonce, Aad::from([0u8; 25]), &mut raw)
                    .expect("seal")
            })
        });
    }
    group.finish();
}

fn open(c: &mut Criterion) {
    let mut group = c.benchmark_group("open");
    for chunk_size in CHUNK_SIZES {
        let size = chunk_size as usize;
        group.throughput(Throughput::Bytes(u64::from(chunk_size)));
        let cipher = format_cipher(chunk_size);
        let mut sealed = sealable_buffer(size);
        cipher
            .seal_chunk_in_place(0, false, &mut sealed)
            .expect("seal");
        group.bench_function(BenchmarkId::new("format", size), |b| {
            b.iter_batched_ref(
                || sealed.clone(),
                |buf| {
                    cipher
                        .open_chunk_in_place(0, false, buf)
                        .map(<[u8]>::len)
                        .expect("open")
                },
                BatchSize::LargeInput,
            )
        });
        let key = raw_key();
        let mut raw_sealed = vec![0xA5u8; size];
        let nonce = || Nonce::assume_unique_for_key([1; NONCE_LEN]);
        let tag = key
            .seal_in_place_separate_tag(nonce(), Aad::from([0u8; 25]), &mut raw_sealed)
            .expect("seal");
        raw_sealed.extend_from_slice(tag.as_ref());
        group.bench_function(BenchmarkId::new("raw_aead", size), |b| {
            b.iter_batched_ref(
                || raw_sealed.clone(),
                |buf| {
                    key.open_in_place(nonce(), Aad::from([0u8; 25]), buf)
                        .map(|p| p.len())
                        .expect("open")
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

/// Why the format draws nonces in batches: one CSPRNG call costs about as much as sealing
/// 8 KiB, whether it returns one nonce or 64.
fn nonce(c: &mut Criterion) {
    let mut group = c.benchmark_group("csprng");
    group.bench_function("one_nonce", |b| {
        let mut nonce = [0u8; NONCE_LEN];
        b.iter(|| aws_lc_rs::rand::fill(&mut nonce).expect("csprng"))
    });
    group.bench_function("64_nonces", |b| {
        let mut nonces = [0u8; 64 * NONCE_LEN];
        b.iter(|| aws_lc_rs::rand::fill(&mut nonces).expect("csprng"))
    });
    group.finish();
}

criterion_group!(benches, seal, open, nonce);
criterion_main!(benches);
