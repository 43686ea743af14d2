//! Login-failure bookkeeping shared by every database backend: one rule, one place.

/// The failure bookkeeping of one user.
pub(crate) struct FailureState {
    pub(crate) failed_count: i64,
    pub(crate) first_failure_ms: Option<i64>,
    pub(crate) locked_until_ms: Option<i64>,
}

/// Lockout policy of [`crate::MetadataStore::record_login_failure`].
pub(crate) struct LockoutPolicy {
    pub(crate) now_ms: i64,
    pub(crate) threshold: u32,
    pub(crate) window_ms: i64,
    pub(crate) lock_ms: i64,
}

impl FailureState {
    /// The state after one more failure at `policy.now_ms`.
    pub(crate) fn after_failure(self, policy: &LockoutPolicy) -> Self {
        let now = policy.now_ms;
        let in_window = self
            .first_failure_ms
            .is_some_and(|first| now.saturating_sub(first) <= policy.window_ms);
        let (count, first) = if in_window {
            (self.failed_count.saturating_add(1), self.first_failure_ms)
        } else {
            (1, Some(now))
        };
        if count >= i64::from(policy.threshold) {
            // Locked: the count starts afresh so the next lock needs a full new burst.
            return Self {
                failed_count: 0,
                first_failure_ms: None,
                locked_until_ms: Some(now.saturating_add(policy.lock_ms)),
            };
        }
        Self {
            failed_count: count,
            first_failure_ms: first,
            locked_until_ms: self.locked_until_ms,
        }
    }
}
