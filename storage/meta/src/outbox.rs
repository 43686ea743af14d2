//! Replication-queue and garbage bookkeeping rules shared by every database backend.

use std::time::{SystemTime, UNIX_EPOCH};

/// First retry delay of a failed replication job; doubles with each attempt.
const REPLICATION_BACKOFF_BASE_MS: i64 = 1_000;
/// Longest retry delay of a failed replication job.
pub(crate) const REPLICATION_BACKOFF_MAX_MS: i64 = 60 * 60 * 1_000;
/// Longest replication error text kept, in bytes.
pub(crate) const MAX_ERROR_LEN: usize = 2_000;

/// Milliseconds since the Unix epoch, for rows whose trait method carries no time.
pub(crate) fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Delay before the next attempt of a job that has failed `attempts` times.
pub(crate) fn replication_backoff_ms(attempts: u32) -> i64 {
    let doublings = attempts.saturating_sub(1).min(30);
    REPLICATION_BACKOFF_BASE_MS
        .saturating_mul(1_i64 << doublings)
        .min(REPLICATION_BACKOFF_MAX_MS)
}

/// Cuts an error text to at most [`MAX_ERROR_LEN`] bytes on a character boundary.
pub(crate) fn truncate_error(error: &str) -> &str {
    let mut end = error.len().min(MAX_ERROR_LEN);
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    error.get(..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_caps_at_an_hour() {
        assert_eq!(replication_backoff_ms(1), 1_000);
        assert_eq!(replication_backoff_ms(2), 2_000);
        assert_eq!(replication_backoff_ms(5), 16_000);
        assert_eq!(replication_backoff_ms(40), REPLICATION_BACKOFF_MAX_MS);
        assert_eq!(replication_backoff_ms(u32::MAX), REPLICATION_BACKOFF_MAX_MS);
    }

    #[test]
    fn long_error_is_cut_on_a_char_boundary() {
        let long = "é".repeat(MAX_ERROR_LEN);
        let cut = truncate_error(&long);
        assert!(cut.len() <= MAX_ERROR_LEN);
        assert!(cut.len() >= MAX_ERROR_LEN - 1);
        assert_eq!(truncate_error("short"), "short");
    }
}
