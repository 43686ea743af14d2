//! Logins: the checks every protocol shares, and the limits that keep password guessing slow
//! without letting strangers lock the owner out or learn which accounts exist.
//!
//! Three counters (thresholds in [`LockoutPolicy`], rates in docs/SECURITY.md):
//!
//! * per (user name, source address): repeated failures lock that pair only;
//! * per source address, whatever the names: a password sprayer is locked out by address;
//! * per account, from anywhere (the database's failure count, so cluster-wide): too many
//!   failed passwords stop password logins to the account — but only from addresses that have
//!   never logged in to it. The owner's own address, a public key and an API token still work.
//!
//! The first two live behind [`LoginLimiter`]: [`LocalLimiter`] keeps them in memory on each
//! node; a cluster-wide defender per source address can implement the same trait.
//!
//! Whatever refuses an attempt, the client gets the same `AuthFailed`, after the same time as
//! a real Argon2 check: an unknown user, a wrong password, a disabled, throttled or locked
//! account cannot be told apart from outside. Unknown names are counted like known ones.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use coffer_meta::{AccountStore, User};
use tracing::{debug, info, warn};

use crate::auth::{LockoutPolicy, Password};
use crate::clock::now_ms;
use crate::error::{ErrorKind, VfsError, VfsResult};
use crate::vault::{Principal, Vault};

/// Where a login attempt comes from, as the limits count it: an IPv4 address, or the /64
/// network of an IPv6 address (one host commonly holds a whole /64). `Local` when the front
/// end gave no address (operator commands, tests).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// No network address.
    Local,
    /// An IPv4 address (IPv4-mapped IPv6 addresses count as IPv4).
    V4(std::net::Ipv4Addr),
    /// The first 64 bits of an IPv6 address.
    V6Net(u64),
}

impl Source {
    /// Parses what a front end passes as `remote_addr`: `ip`, `ip:port` or `[ip6]:port`.
    pub fn of(remote: Option<&str>) -> Self {
        let Some(text) = remote else {
            return Self::Local;
        };
        let ip = match text.parse::<SocketAddr>() {
            Ok(sa) => sa.ip(),
            Err(_) => match text.parse::<IpAddr>() {
                Ok(ip) => ip,
                Err(_) => return Self::Local,
            },
        };
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self::V4(v4),
            IpAddr::V6(v6) => Self::V6Net((v6.to_bits() >> 64) as u64),
        }
    }
}

/// The limiter's answer before credentials are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Go on. `known_source`: this address logged in to this name successfully before.
    Allowed {
        /// See above.
        known_source: bool,
    },
    /// Refuse without checking.
    Refused(Refusal),
}

/// Why the limiter refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Too many failures for this name from this address.
    NameAndAddress,
    /// Too many failures from this address, whatever the names.
    Address,
}

impl Refusal {
    fn outcome(self) -> &'static str {
        match self {
            Self::NameAndAddress => "throttled_name_address",
            Self::Address => "throttled_address",
        }
    }
}

/// Counts failures per (name, source) and per source, and remembers the sources a name has
/// logged in from. Names are compared case-insensitively; unknown names count like known ones.
#[async_trait]
pub trait LoginLimiter: Send + Sync + fmt::Debug {
    /// Before a password is checked: may this attempt go on?
    async fn check(&self, name: &str, source: &Source) -> Check;
    /// A failed attempt (any credential). Returns the lock it started, if any (for the log).
    async fn failed(&self, name: &str, source: &Source) -> Option<Refusal>;
    /// A successful login: clears the pair's count and remembers the source for the name.
    async fn succeeded(&self, name: &str, source: &Source);
}

/// Per-address failures allowed before the address is locked, as a multiple of
/// `max_failures` (one address may mistype a few names; a sprayer may not).
pub const ADDRESS_FACTOR: u32 = 3;
/// How long a successful login keeps its source known for the name.
pub const KNOWN_SOURCE_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Entries each in-memory table holds at most (about 150 bytes each).
const MAX_ENTRIES: usize = 50_000;

/// A leaky bucket of failures: it drains at `capacity / window`, and the `capacity`-th failure
/// locks it for the lock time (unless at least one failure's worth drained meanwhile).
#[derive(Clone, Copy, Debug)]
struct Bucket {
    level: f64,
    at: Instant,
    locked_until: Option<Instant>,
}

impl Bucket {
    fn new(now: Instant) -> Self {
        Self {
            level: 0.0,
            at: now,
            locked_until: None,
        }
    }

    fn locked(&self, now: Instant) -> bool {
        self.locked_until.is_some_and(|t| t > now)
    }

    fn drained(&self, now: Instant, capacity: f64, window: Duration) -> f64 {
        let secs = now.saturating_duration_since(self.at).as_secs_f64();
        let rate = capacity / window.as_secs_f64().max(0.001);
        (self.level - secs * rate).max(0.0)
    }

    /// One more failure; `true` if it started a lock.
    fn fail(&mut self, now: Instant, capacity: f64, window: Duration, lock: Duration) -> bool {
        if self.locked(now) {
            return false;
        }
        self.level = self.drained(now, capacity, window) + 1.0;
        self.at = now;
        // The capacity-th failure locks unless a whole failure has drained since the first.
        if self.level > capacity - 1.0 {
            self.level = 0.0;
            self.locked_until = Some(now + lock);
            return true;
        }
        false
    }

    fn idle(&self, now: Instant, capacity: f64, window: Duration) -> bool {
        !self.locked(now) && self.drained(now, capacity, window) < 0.01
    }
}

#[derive(Debug, Default)]
struct Tables {
    pairs: HashMap<(String, Source), Bucket>,
    addresses: HashMap<Source, Bucket>,
    known: HashMap<(String, Source), Instant>,
}

/// The in-memory [`LoginLimiter`] of one node. Bounded: each table holds at most 50,000
/// entries; when full, idle entries go first, then unlocked counts; locks are kept.
#[derive(Debug)]
pub struct LocalLimiter {
    policy: LockoutPolicy,
    tables: Mutex<Tables>,
}

fn name_key(name: &str) -> String {
    name.chars().take(64).flat_map(char::to_lowercase).collect()
}

fn ms(v: i64) -> Duration {
    Duration::from_millis(u64::try_from(v).unwrap_or(0).max(1))
}

/// Makes room for one more entry in a bucket table, if it can (see [`LocalLimiter`]).
fn make_room<K: Eq + std::hash::Hash>(
    map: &mut HashMap<K, Bucket>,
    now: Instant,
    capacity: f64,
    window: Duration,
) -> bool {
    if map.len() < MAX_ENTRIES {
        return true;
    }
    map.retain(|_, b| !b.idle(now, capacity, window));
    if map.len() >= MAX_ENTRIES {
        map.retain(|_, b| b.locked(now));
    }
    map.len() < MAX_ENTRIES
}

impl LocalLimiter {
    /// A limiter with the thresholds of `policy`.
    pub fn new(policy: LockoutPolicy) -> Self {
        Self {
            policy,
            tables: Mutex::default(),
        }
    }

    fn pair_capacity(&self) -> f64 {
        f64::from(self.policy.max_failures.max(1))
    }

    fn address_capacity(&self) -> f64 {
        f64::from(
            self.policy
                .max_failures
                .max(1)
                .saturating_mul(ADDRESS_FACTOR),
        )
    }

    fn window(&self) -> Duration {
        ms(self.policy.window_ms)
    }

    fn check_at(&self, name: &str, source: &Source, now: Instant) -> Check {
        let Ok(t) = self.tables.lock() else {
            return Check::Allowed {
                known_source: false,
            };
        };
        let key = (name_key(name), source.clone());
        if t.pairs.get(&key).is_some_and(|b| b.locked(now)) {
            return Check::Refused(Refusal::NameAndAddress);
        }
        let known_source = t
            .known
            .get(&key)
            .is_some_and(|at| now.saturating_duration_since(*at) < KNOWN_SOURCE_TTL);
        // The owner's own address is not refused for what others at it did to other names.
        if !known_source && t.addresses.get(source).is_some_and(|b| b.locked(now)) {
            return Check::Refused(Refusal::Address);
        }
        Check::Allowed { known_source }
    }

    fn failed_at(&self, name: &str, source: &Source, now: Instant) -> Option<Refusal> {
        let (pair_cap, addr_cap, window) =
            (self.pair_capacity(), self.address_capacity(), self.window());
        let lock = ms(self.policy.lock_ms);
        let mut t = self.tables.lock().ok()?;
        let key = (name_key(name), source.clone());
        let mut started = None;
        if t.pairs.contains_key(&key) || make_room(&mut t.pairs, now, pair_cap, window) {
            let b = t.pairs.entry(key).or_insert_with(|| Bucket::new(now));
            if b.fail(now, pair_cap, window, lock) {
                started = Some(Refusal::NameAndAddress);
            }
        }
        if t.addresses.contains_key(source) || make_room(&mut t.addresses, now, addr_cap, window) {
            let b = t
                .addresses
                .entry(source.clone())
                .or_insert_with(|| Bucket::new(now));
            if b.fail(now, addr_cap, window, lock) {
                started = Some(Refusal::Address);
            }
        }
        started
    }

    fn succeeded_at(&self, name: &str, source: &Source, now: Instant) {
        let Ok(mut t) = self.tables.lock() else {
            return;
        };
        let key = (name_key(name), source.clone());
        t.pairs.remove(&key);
        if !t.known.contains_key(&key) && t.known.len() >= MAX_ENTRIES {
            t.known
                .retain(|_, at| now.saturating_duration_since(*at) < KNOWN_SOURCE_TTL);
            if t.known.len() >= MAX_ENTRIES {
                // Forget the oldest quarter.
                let mut ages: Vec<Instant> = t.known.values().copied().collect();
                ages.sort_unstable();
                if let Some(cut) = ages.get(ages.len() / 4).copied() {
                    t.known.retain(|_, at| *at > cut);
                }
            }
        }
        t.known.insert(key, now);
    }
}

#[async_trait]
impl LoginLimiter for LocalLimiter {
    async fn check(&self, name: &str, source: &Source) -> Check {
        self.check_at(name, source, Instant::now())
    }

    async fn failed(&self, name: &str, source: &Source) -> Option<Refusal> {
        self.failed_at(name, source, Instant::now())
    }

    async fn succeeded(&self, name: &str, source: &Source) {
        self.succeeded_at(name, source, Instant::now());
    }
}

/// One login attempt as a refusal records it: the name it gave, where it came from, over what.
#[derive(Clone, Copy)]
pub(crate) struct Attempt<'a> {
    pub(crate) name: &'a str,
    pub(crate) source: &'a Source,
    pub(crate) protocol: &'a str,
    pub(crate) remote: &'a Option<String>,
}

/// The one answer to every refused login.
pub(crate) fn auth_failed() -> VfsError {
    VfsError::new(ErrorKind::AuthFailed, "authentication failed")
}

/// What a credential was verified against, so a front end may skip the expensive check
/// (Argon2, or the token hash) on later requests bearing the same credential and still see at
/// once that it no longer holds: [`Vault::resume`] reads the rows again and accepts only when
/// nothing that decided the first answer changed. It holds no secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialStamp {
    /// A password, verified against this stored hash: any password change stores a new hash
    /// (a fresh salt), so the stamp no longer matches.
    Password {
        /// The user row.
        user_id: i64,
        /// The PHC string the password was verified against.
        hash: String,
    },
    /// An API token: its row must still exist (revoking deletes it) with the same secret hash.
    Token {
        /// The token's public id.
        token_id: String,
        /// The owner.
        user_id: i64,
        /// SHA-256 of the secret, as stored.
        secret_hash: Vec<u8>,
    },
}

impl Vault {
    /// Opens a session for a credential verified earlier, if it still holds: the user row (and
    /// for a token its row) is read again; a changed password, a disabled or deleted user, a
    /// revoked or expired token, a locked account or a locked-out source give `Ok(None)`, and
    /// the caller must then run the full check (which counts and audits a refusal). Costs the
    /// same reads as [`Vault::session`], no hash; a resumed request is not audited as a login
    /// (the verification it reuses was).
    pub async fn resume(
        &self,
        stamp: &CredentialStamp,
        protocol: &'static str,
        remote_addr: Option<String>,
    ) -> VfsResult<Option<crate::vfs::Vfs>> {
        let meta = &self.inner.b.meta;
        let user_id = match stamp {
            CredentialStamp::Password { user_id, .. } => *user_id,
            CredentialStamp::Token {
                token_id,
                user_id,
                secret_hash,
            } => {
                let t = match meta.api_token(token_id).await {
                    Ok(t) => t,
                    Err(coffer_meta::MetaError::NotFound) => return Ok(None),
                    Err(e) => return Err(e.into()),
                };
                let live = t.expires_ms.is_none_or(|x| x > now_ms());
                if t.user_id != *user_id || t.secret_hash != *secret_hash || !live {
                    return Ok(None);
                }
                *user_id
            }
        };
        let (user, tenant) = match meta.user_with_tenant(user_id).await {
            Ok(found) => found,
            Err(coffer_meta::MetaError::NotFound) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if user.disabled {
            return Ok(None);
        }
        if let CredentialStamp::Password { hash, .. } = stamp {
            if user.password_hash.as_deref() != Some(hash.as_str())
                || user.locked_until_ms.is_some_and(|t| t > now_ms())
            {
                return Ok(None);
            }
            let source = Source::of(remote_addr.as_deref());
            if let Check::Refused(_) = self.inner.limiter.check(&user.name, &source).await {
                return Ok(None);
            }
        }
        // The rows were read just now: no second read as `session` would do.
        self.vfs_with(
            Principal {
                user,
                protocol,
                remote_addr,
            },
            tenant,
        )
        .await
        .map(Some)
    }

    /// [`Vault::authenticate_password`], also returning what the password was verified
    /// against (see [`CredentialStamp`]).
    pub async fn authenticate_password_stamped(
        &self,
        name: &str,
        password: &Password,
        protocol: &'static str,
        remote_addr: Option<String>,
    ) -> VfsResult<(Principal, Option<CredentialStamp>)> {
        let p = self
            .authenticate_password(name, password, protocol, remote_addr)
            .await?;
        let stamp = p
            .user
            .password_hash
            .clone()
            .map(|hash| CredentialStamp::Password {
                user_id: p.user.id,
                hash,
            });
        Ok((p, stamp))
    }
}

impl Vault {
    /// Checks a user name and password. Unknown users, disabled users, locked or throttled
    /// accounts and wrong passwords all get `AuthFailed` after the time of one Argon2 check,
    /// so neither the answer nor its timing tells them apart. `Busy` (the same for every name)
    /// when the hashing pool or this address's share of it is full. Failures are counted (see
    /// the module docs) and audited.
    pub async fn authenticate_password(
        &self,
        name: &str,
        password: &Password,
        protocol: &'static str,
        remote_addr: Option<String>,
    ) -> VfsResult<Principal> {
        let source = Source::of(remote_addr.as_deref());
        let at = Attempt {
            name,
            source: &source,
            protocol,
            remote: &remote_addr,
        };
        let limiter = &self.inner.limiter;
        let known_source = match limiter.check(name, &source).await {
            Check::Allowed { known_source } => known_source,
            Check::Refused(why) => {
                self.audit_login(None, name, protocol, &remote_addr, why.outcome());
                // No hash is run, but the answer takes as long as one.
                tokio::time::sleep(self.inner.hasher.cost()).await;
                return Err(auth_failed());
            }
        };
        let permit = self.inner.hasher.admit(&source).inspect_err(|_| {
            debug!(
                protocol,
                remote = remote_addr.as_deref().unwrap_or("-"),
                "login refused: busy"
            );
        })?;
        let user = self.find_user(name).await?;
        let hash = user
            .as_ref()
            .and_then(|u| u.password_hash.clone())
            .unwrap_or_else(|| self.inner.dummy_hash.clone());
        let ok = self.inner.hasher.verify(&permit, &hash, password).await?;
        drop(permit);
        let Some(user) = user else {
            return Err(self.refuse(None, at, "unknown_user").await);
        };
        if user.disabled {
            return Err(self.refuse(Some(&user), at, "disabled").await);
        }
        if !(ok && user.password_hash.is_some()) {
            self.count_account_failure(&user, protocol, &remote_addr);
            return Err(self.refuse(Some(&user), at, "bad_credentials").await);
        }
        let account_locked = user.locked_until_ms.is_some_and(|t| t > now_ms());
        if account_locked && !known_source {
            // The right password, from an address that never logged in to this account, while
            // the account is under attack: refused like any other failure (not counted).
            self.audit_login(Some(&user), name, protocol, &remote_addr, "locked_out");
            return Err(auth_failed());
        }
        self.succeed(user, &source, account_locked, protocol, remote_addr)
            .await
    }

    /// Checks a public key offered by an SSH client against the user's keys (base64 blob
    /// compare in constant time). A valid key is never refused by any failure count; a failed
    /// one counts for its (name, address) and address like a wrong password.
    pub async fn authenticate_public_key(
        &self,
        name: &str,
        key_base64: &str,
        protocol: &'static str,
        remote_addr: Option<String>,
    ) -> VfsResult<Principal> {
        let source = Source::of(remote_addr.as_deref());
        let at = Attempt {
            name,
            source: &source,
            protocol,
            remote: &remote_addr,
        };
        let Some(user) = self.find_user(name).await? else {
            return Err(self.refuse(None, at, "unknown_user").await);
        };
        let keys = self.inner.b.meta.ssh_keys(user.id).await?;
        let ok = keys.iter().fold(false, |acc, k| {
            acc | bool::from(subtle::ConstantTimeEq::ct_eq(
                k.key_base64.as_bytes(),
                key_base64.as_bytes(),
            ))
        });
        if user.disabled {
            return Err(self.refuse(Some(&user), at, "disabled").await);
        }
        if !ok {
            return Err(self.refuse(Some(&user), at, "bad_credentials").await);
        }
        let account_locked = user.locked_until_ms.is_some_and(|t| t > now_ms());
        self.succeed(user, &source, account_locked, protocol, remote_addr)
            .await
    }

    /// Counts a failure for the attempt's name from its source, audits it, logs a lock it
    /// starts, and returns the one refusal.
    pub(crate) async fn refuse(
        &self,
        user: Option<&User>,
        at: Attempt<'_>,
        outcome: &str,
    ) -> VfsError {
        let Attempt {
            name,
            source,
            protocol,
            remote,
        } = at;
        if let Some(lock) = self.inner.limiter.failed(name, source).await {
            let scope = match lock {
                Refusal::NameAndAddress => "this user name from this address",
                Refusal::Address => "every user name from this address",
            };
            warn!(
                user = %name.chars().take(64).collect::<String>(),
                protocol,
                remote = remote.as_deref().unwrap_or("-"),
                scope,
                lock_ms = self.inner.opts.lockout.lock_ms,
                "login source locked out after repeated failed logins"
            );
        }
        self.audit_login(user, name, protocol, remote, outcome);
        auth_failed()
    }

    /// Counts a failed password toward the account-wide limit, in the database (so every node
    /// sees it). Done after the answer, so an existing account's failure takes no longer than
    /// an unknown name's.
    fn count_account_failure(&self, user: &User, protocol: &'static str, remote: &Option<String>) {
        let meta: Arc<dyn AccountStore> = self.inner.b.meta.clone();
        let p = self.inner.opts.lockout;
        let (id, name, remote) = (user.id, user.name.clone(), remote.clone());
        self.inner.background.spawn(async move {
            let now = now_ms();
            match meta
                .record_login_failure(id, now, p.max_failures, p.window_ms, p.lock_ms)
                .await
            {
                Ok(Some(until)) => warn!(
                    user = %name,
                    protocol,
                    remote = remote.as_deref().unwrap_or("-"),
                    locked_for_ms = until - now,
                    "user locked out of password logins from new addresses after repeated failed logins"
                ),
                Ok(None) => {}
                Err(e) => warn!(user = %name, error = %e, "could not count a failed login"),
            }
        });
    }

    async fn succeed(
        &self,
        user: User,
        source: &Source,
        account_locked: bool,
        protocol: &'static str,
        remote_addr: Option<String>,
    ) -> VfsResult<Principal> {
        self.inner.limiter.succeeded(&user.name, source).await;
        // While the account is under attack its count stays: the owner logging in from their
        // own address must not reopen password guessing for everyone else.
        if !account_locked {
            self.inner.b.meta.clear_login_failures(user.id).await?;
        }
        self.audit_login(Some(&user), &user.name, protocol, &remote_addr, "ok");
        Ok(Principal {
            user,
            protocol,
            remote_addr,
        })
    }

    pub(crate) fn audit_login(
        &self,
        user: Option<&User>,
        name: &str,
        protocol: &str,
        remote: &Option<String>,
        outcome: &str,
    ) {
        let action = if outcome == "ok" {
            "login"
        } else {
            info!(
                user = %name.chars().take(64).collect::<String>(),
                protocol,
                remote = remote.as_deref().unwrap_or("-"),
                outcome,
                "login failed"
            );
            "login_failed"
        };
        self.inner.audit.record(coffer_meta::AuditRecord {
            at_ms: now_ms(),
            tenant_id: user.map(|u| u.tenant_id),
            user_id: user.map(|u| u.id),
            user_name: Some(name.chars().take(64).collect()),
            protocol: protocol.to_owned(),
            remote_addr: remote.clone(),
            action: action.to_owned(),
            node_id: None,
            outcome: outcome.to_owned(),
            bytes: None,
        });
    }
}

/// The limiter a vault uses unless given another.
pub(crate) fn default_limiter(policy: LockoutPolicy) -> Arc<dyn LoginLimiter> {
    Arc::new(LocalLimiter::new(policy))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> LockoutPolicy {
        LockoutPolicy {
            max_failures: 3,
            window_ms: 60_000,
            lock_ms: 120_000,
        }
    }

    fn src(s: &str) -> Source {
        Source::of(Some(s))
    }

    const OK: Check = Check::Allowed {
        known_source: false,
    };

    #[test]
    fn sources_are_addresses_without_ports_and_ipv6_slash_64() {
        assert_eq!(src("192.0.2.7:5000"), src("192.0.2.7"));
        assert_eq!(src("[::ffff:192.0.2.7]:22"), src("192.0.2.7"));
        assert_eq!(src("[2001:db8:1:2::1]:22"), src("2001:db8:1:2:ffff::9"));
        assert_ne!(src("2001:db8:1:2::1"), src("2001:db8:1:3::1"));
        assert_eq!(Source::of(None), Source::Local);
        assert_eq!(src("not an address"), Source::Local);
    }

    #[test]
    fn failures_lock_the_name_from_that_address_only() {
        let l = LocalLimiter::new(policy());
        let t0 = Instant::now();
        let (attacker, owner) = (src("192.0.2.1"), src("192.0.2.9"));
        assert_eq!(l.failed_at("alice", &attacker, t0), None);
        assert_eq!(l.failed_at("Alice", &attacker, t0), None);
        assert_eq!(
            l.failed_at("ALICE", &attacker, t0),
            Some(Refusal::NameAndAddress),
            "names count case-insensitively"
        );
        assert_eq!(
            l.check_at("alice", &attacker, t0),
            Check::Refused(Refusal::NameAndAddress)
        );
        assert_eq!(l.check_at("alice", &owner, t0), OK, "another address");
        assert_eq!(l.check_at("bob", &attacker, t0), OK, "another name");
        // The lock ends after lock_ms.
        let later = t0 + Duration::from_millis(120_001);
        assert_eq!(l.check_at("alice", &attacker, later), OK);
    }

    #[test]
    fn failures_spread_below_the_rate_never_lock() {
        let l = LocalLimiter::new(policy());
        let a = src("192.0.2.1");
        let t0 = Instant::now();
        // 3 per minute locks; one every 25 s drains faster than it fills.
        for i in 0..20 {
            assert_eq!(
                l.failed_at("alice", &a, t0 + Duration::from_secs(25 * i)),
                None
            );
        }
    }

    #[test]
    fn spraying_many_names_from_one_address_locks_the_address() {
        let l = LocalLimiter::new(policy());
        let a = src("192.0.2.1");
        let t0 = Instant::now();
        let mut locked_at = None;
        for i in 0..20 {
            if l.failed_at(&format!("user{i}"), &a, t0) == Some(Refusal::Address) {
                locked_at = Some(i);
                break;
            }
        }
        assert_eq!(locked_at, Some(8), "3 × 3 failures lock the address");
        assert_eq!(
            l.check_at("never-tried", &a, t0),
            Check::Refused(Refusal::Address),
            "every name from it, known or not"
        );
        assert_eq!(l.check_at("never-tried", &src("192.0.2.2"), t0), OK);
    }

    #[test]
    fn the_owners_known_address_is_not_refused_for_others_failures() {
        let l = LocalLimiter::new(policy());
        let nat = src("203.0.113.5");
        let t0 = Instant::now();
        l.succeeded_at("alice", &nat, t0);
        for i in 0..9 {
            l.failed_at(&format!("user{i}"), &nat, t0);
        }
        assert_eq!(
            l.check_at("user0", &nat, t0),
            Check::Refused(Refusal::Address)
        );
        assert_eq!(
            l.check_at("alice", &nat, t0),
            Check::Allowed { known_source: true }
        );
        // Its own failures still lock the pair.
        for _ in 0..3 {
            l.failed_at("alice", &nat, t0);
        }
        assert_eq!(
            l.check_at("alice", &nat, t0),
            Check::Refused(Refusal::NameAndAddress)
        );
    }

    #[test]
    fn a_success_clears_the_pair_count() {
        let l = LocalLimiter::new(policy());
        let a = src("192.0.2.1");
        let t0 = Instant::now();
        l.failed_at("alice", &a, t0);
        l.failed_at("alice", &a, t0);
        l.succeeded_at("alice", &a, t0);
        assert_eq!(l.failed_at("alice", &a, t0), None);
        assert_eq!(l.failed_at("alice", &a, t0), None);
    }

    #[test]
    fn tables_stay_bounded_and_keep_their_locks() {
        let l = LocalLimiter::new(LockoutPolicy {
            max_failures: 1,
            ..policy()
        });
        let t0 = Instant::now();
        let first = src("10.0.0.1");
        assert!(l.failed_at("x", &first, t0).is_some());
        for i in 0..(MAX_ENTRIES as u32 + 10) {
            let s = Source::V4(std::net::Ipv4Addr::from(0x0b00_0000 + i));
            l.failed_at("x", &s, t0);
        }
        let t = l.tables.lock().unwrap();
        assert!(t.pairs.len() <= MAX_ENTRIES && t.addresses.len() <= MAX_ENTRIES);
        drop(t);
        assert_eq!(
            l.check_at("x", &first, t0),
            Check::Refused(Refusal::NameAndAddress)
        );
    }
}
