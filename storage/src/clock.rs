//! Wall-clock time as the metadata store keeps it: milliseconds since the Unix epoch.
//!
//! A leaf module: it imports nothing from this crate, so the vault, the Vfs, the reader and the
//! writer can all use it without importing each other.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is set before it).
pub fn now_ms() -> i64 {
    time_to_ms(SystemTime::now())
}

/// A stored time (ms since the Unix epoch) as a `SystemTime`; times before the epoch read as
/// the epoch.
pub(crate) fn ms_to_time(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH
    }
}

/// A `SystemTime` as stored: ms since the Unix epoch, 0 before it, `i64::MAX` at most.
pub(crate) fn time_to_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis().min(i64::MAX as u128) as i64,
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_survives_the_round_trip_through_milliseconds() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(ms_to_time(time_to_ms(t)), t);
    }

    #[test]
    fn times_before_the_epoch_read_as_the_epoch() {
        assert_eq!(ms_to_time(-5), UNIX_EPOCH);
        assert_eq!(time_to_ms(UNIX_EPOCH - Duration::from_secs(1)), 0);
    }

    #[test]
    fn now_is_after_2020() {
        assert!(now_ms() > 1_577_836_800_000);
    }
}
