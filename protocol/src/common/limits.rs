//! Limits on connections that have not logged in yet (`[limits]`), shared by the front ends.
//!
//! Every accepted connection first takes a [`PreAuthPermit`] from its front end's
//! [`PreAuthLimiter`]: at most `pre_auth_connections` in all and `pre_auth_per_address` from one
//! source (an IPv4 address, or an IPv6 /64 — one host usually owns a whole /64). A connection
//! that cannot get one is closed at once; one that holds one gives it back when it logs in, ends,
//! or outlives the login grace time. The limits are separate from the session limits, so
//! strangers who open sockets and say nothing cannot take the places of logged-in users
//! (OpenSSH's `MaxStartups` and `LoginGraceTime` are the model).
//!
//! Accept failures (most often running out of file descriptors) go through [`AcceptErrors`]:
//! the listener backs off instead of spinning, and logs once per burst rather than once per try.
//!
//! Everything here handles what the network sends: no unwrap, expect, indexing or panic.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use coffer_config::LimitsConfig;
use tracing::{debug, warn};

/// Where a connection comes from, as the limits count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    V4(u32),
    /// The /64 prefix of an IPv6 address.
    V6(u64),
}

impl Source {
    fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(u32::from(v4)),
                None => Self::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// Why a connection was refused before login.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// `limits.pre_auth_connections` connections are already waiting to log in.
    #[error("limits.pre_auth_connections reached")]
    Total,
    /// `limits.pre_auth_per_address` connections from this source are already waiting.
    #[error("limits.pre_auth_per_address reached for this source")]
    PerAddress,
}

#[derive(Debug, Default)]
struct Counts {
    total: u32,
    by_source: HashMap<Source, u32>,
}

#[derive(Debug)]
struct Inner {
    protocol: &'static str,
    total: u32,
    per_address: u32,
    grace: Duration,
    counts: Mutex<Counts>,
    refused: AtomicU64,
}

/// The pre-login limits of one front end. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PreAuthLimiter {
    inner: Arc<Inner>,
}

impl PreAuthLimiter {
    /// The limits of `[limits]` for the front end named `protocol` (used in log lines).
    #[must_use]
    pub fn new(protocol: &'static str, cfg: &LimitsConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                protocol,
                total: cfg.pre_auth_connections,
                per_address: cfg.pre_auth_per_address,
                grace: cfg.login_grace,
                counts: Mutex::new(Counts::default()),
                refused: AtomicU64::new(0),
            }),
        }
    }

    /// How long a connection may take to log in.
    #[must_use]
    pub fn grace(&self) -> Duration {
        self.inner.grace
    }

    /// How many connections have been refused so far.
    #[must_use]
    pub fn refused(&self) -> u64 {
        self.inner.refused.load(Ordering::Relaxed)
    }

    /// How many connections hold a permit now.
    #[must_use]
    pub fn waiting(&self) -> u32 {
        self.inner.lock().total
    }

    /// Admits a new connection from `ip`, or says which limit it hit. A refusal is logged: the
    /// first of a burst at `warn`, then one line per 100 so a flood cannot flood the log.
    pub fn admit(&self, ip: IpAddr) -> Result<PreAuthPermit, Refused> {
        let source = Source::of(ip);
        let verdict = {
            let mut counts = self.inner.lock();
            let from_source = counts.by_source.get(&source).copied().unwrap_or(0);
            if counts.total >= self.inner.total {
                Err(Refused::Total)
            } else if from_source >= self.inner.per_address {
                Err(Refused::PerAddress)
            } else {
                counts.total += 1;
                counts.by_source.insert(source, from_source + 1);
                Ok(())
            }
        };
        match verdict {
            Ok(()) => Ok(PreAuthPermit {
                inner: Some(self.inner.clone()),
                source,
            }),
            Err(why) => {
                let n = self.inner.refused.fetch_add(1, Ordering::Relaxed) + 1;
                if n == 1 || n.is_multiple_of(100) {
                    warn!(
                        protocol = self.inner.protocol,
                        remote = %ip,
                        refused_so_far = n,
                        "connection refused before login: {why}"
                    );
                } else {
                    debug!(protocol = self.inner.protocol, remote = %ip, "connection refused before login: {why}");
                }
                Err(why)
            }
        }
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // The counts stay consistent under every early return, so a poisoned lock is usable.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn release(&self, source: Source) {
        let mut counts = self.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.by_source.get_mut(&source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.by_source.remove(&source);
            }
        }
    }
}

/// A place among the connections waiting to log in; given back on drop or by
/// [`PreAuthPermit::logged_in`].
#[derive(Debug)]
pub struct PreAuthPermit {
    inner: Option<Arc<Inner>>,
    source: Source,
}

impl PreAuthPermit {
    /// The connection logged in: its place goes back to the strangers' pool.
    pub fn logged_in(mut self) {
        self.give_back();
    }

    fn give_back(&mut self) {
        if let Some(inner) = self.inner.take() {
            inner.release(self.source);
        }
    }
}

impl Drop for PreAuthPermit {
    fn drop(&mut self) {
        self.give_back();
    }
}

/// Back-off for a listener whose `accept` fails: 10 ms doubling to 1 s, logged once per burst.
#[derive(Debug, Default)]
pub struct AcceptErrors {
    failures: u32,
}

impl AcceptErrors {
    /// Records a failed `accept` and sleeps before the next try. Only the first failure of a
    /// burst is logged at `warn` (with a hint when the process is out of file descriptors).
    pub async fn failed(&mut self, protocol: &'static str, error: &std::io::Error) {
        self.failures = self.failures.saturating_add(1);
        if self.failures == 1 {
            let out_of_fds =
                matches!(error.raw_os_error(), Some(code) if code == EMFILE || code == ENFILE);
            if out_of_fds {
                warn!(protocol, error = %error, "accept failed: out of file descriptors; backing off (see docs/OPERATIONS.md, limits)");
            } else {
                warn!(protocol, error = %error, "accept failed; backing off");
            }
        } else {
            debug!(protocol, error = %error, failures = self.failures, "accept failed again");
        }
        let exp = self.failures.saturating_sub(1).min(7);
        let pause = Duration::from_millis(10u64 << exp).min(Duration::from_secs(1));
        tokio::time::sleep(pause).await;
    }

    /// Records a successful `accept`, ending a burst (logged when there was one).
    pub fn succeeded(&mut self, protocol: &'static str) {
        if self.failures > 0 {
            warn!(
                protocol,
                failures = self.failures,
                "accept works again after failures"
            );
            self.failures = 0;
        }
    }
}

/// `EMFILE` and `ENFILE` on Linux (the values every Unix Coffer runs on uses).
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(total: u32, per_address: u32) -> PreAuthLimiter {
        PreAuthLimiter::new(
            "test",
            &LimitsConfig {
                pre_auth_connections: total,
                pre_auth_per_address: per_address,
                login_grace: Duration::from_secs(30),
            },
        )
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_address_cannot_take_every_place() {
        let l = limiter(4, 2);
        let a1 = l.admit(ip("127.0.0.1")).unwrap();
        let _a2 = l.admit(ip("127.0.0.1")).unwrap();
        assert_eq!(l.admit(ip("127.0.0.1")).unwrap_err(), Refused::PerAddress);
        // Another address still gets in.
        let _b1 = l.admit(ip("127.0.0.9")).unwrap();
        drop(a1);
        let _a3 = l.admit(ip("127.0.0.1")).unwrap();
        assert_eq!(l.waiting(), 3);
        assert_eq!(l.refused(), 1);
    }

    #[test]
    fn the_total_bounds_all_sources() {
        let l = limiter(2, 2);
        let _a = l.admit(ip("10.0.0.1")).unwrap();
        let b = l.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(l.admit(ip("10.0.0.3")).unwrap_err(), Refused::Total);
        b.logged_in();
        assert!(l.admit(ip("10.0.0.3")).is_ok());
    }

    #[test]
    fn an_ipv6_host_counts_as_its_slash_64() {
        let l = limiter(10, 1);
        let _a = l.admit(ip("2001:db8:1:2::1")).unwrap();
        assert_eq!(
            l.admit(ip("2001:db8:1:2:ffff::9")).unwrap_err(),
            Refused::PerAddress
        );
        assert!(l.admit(ip("2001:db8:1:3::1")).is_ok());
        // An IPv4-mapped address counts as the IPv4 address.
        let _v4 = l.admit(ip("192.0.2.7")).unwrap();
        assert_eq!(
            l.admit(ip("::ffff:192.0.2.7")).unwrap_err(),
            Refused::PerAddress
        );
    }

    #[test]
    fn a_permit_given_back_twice_counts_once() {
        let l = limiter(3, 3);
        let a = l.admit(ip("127.0.0.1")).unwrap();
        let _b = l.admit(ip("127.0.0.1")).unwrap();
        a.logged_in(); // and then dropped: must not release a second place
        assert_eq!(l.waiting(), 1);
    }
}
