//! Counters of the key hierarchy's health: key-service calls, their errors and latency,
//! tenant-key cache use and failed decryptions. Plain atomics, read as a snapshot by
//! `coffer keys status` and the logs (and by a metrics endpoint later).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Shared counters; every field only grows.
#[derive(Debug, Default)]
pub struct KeyMetrics {
    kms_calls: AtomicU64,
    kms_errors: AtomicU64,
    kms_latency_micros: AtomicU64,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    failed_decryptions: AtomicU64,
}

/// A copy of [`KeyMetrics`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct KeyMetricsSnapshot {
    /// Calls made to a key service (KMS `Encrypt`/`Decrypt`).
    pub kms_calls: u64,
    /// Calls that failed (unreachable, refused, or did not authenticate).
    pub kms_errors: u64,
    /// Total time spent in key-service calls, in microseconds.
    pub kms_latency_micros: u64,
    /// Tenant-key lookups answered from the in-memory cache.
    pub cache_hits: u64,
    /// Tenant-key lookups that had to unwrap a stored copy.
    pub cache_misses: u64,
    /// Unwraps or decryptions that did not authenticate (damage, tampering or a wrong key).
    pub failed_decryptions: u64,
}

impl KeyMetrics {
    /// Records one key-service call that took `took`, and whether it failed.
    pub fn kms_call(&self, took: Duration, failed: bool) {
        self.kms_calls.fetch_add(1, Relaxed);
        if failed {
            self.kms_errors.fetch_add(1, Relaxed);
        }
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.kms_latency_micros.fetch_add(micros, Relaxed);
    }

    /// Records a tenant-key cache lookup.
    pub fn cache_lookup(&self, hit: bool) {
        if hit {
            self.cache_hits.fetch_add(1, Relaxed);
        } else {
            self.cache_misses.fetch_add(1, Relaxed);
        }
    }

    /// Records a failed decryption or unwrap (an integrity failure).
    pub fn failed_decryption(&self) {
        self.failed_decryptions.fetch_add(1, Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> KeyMetricsSnapshot {
        KeyMetricsSnapshot {
            kms_calls: self.kms_calls.load(Relaxed),
            kms_errors: self.kms_errors.load(Relaxed),
            kms_latency_micros: self.kms_latency_micros.load(Relaxed),
            cache_hits: self.cache_hits.load(Relaxed),
            cache_misses: self.cache_misses.load(Relaxed),
            failed_decryptions: self.failed_decryptions.load(Relaxed),
        }
    }
}
