//! Who is calling: HTTP Basic (Argon2 through the [`Vault`]) and API bearer tokens, both
//! through a verified-credential cache ([`CredentialCache`]), and browser sessions with their
//! CSRF tokens. Sessions live in this node's memory (see docs/HTTPS.md for load balancers).
//!
//! The cache maps an HMAC-SHA256 (under a random key of this process) of the presented
//! credential to what it was verified against ([`CredentialStamp`]: the user and the password
//! hash, or the token row), for at most [`CREDENTIAL_TTL`]. A hit skips only the hash check:
//! [`Vault::resume`] still reads the user (and token) row on that request, so a password
//! change, a disabled or deleted user or a revoked token — made by any process or node —
//! refuses the very next request. A failed credential is never cached.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use base64::Engine;
use coffer_storage::{
    CredentialStamp, ErrorKind, Password, Principal, Vault, Vfs, VfsError, VfsResult,
};
use subtle::ConstantTimeEq;

/// How long a verified credential is reused without running its hash check again (its rows
/// are still read on every request).
pub(crate) const CREDENTIAL_TTL: Duration = Duration::from_secs(60);
/// Verified credentials kept at most; a full cache drops expired entries, then the oldest.
const MAX_CREDENTIALS: usize = 10_000;
/// Sessions kept at most; beyond it idle ones are dropped.
const MAX_ENTRIES: usize = 50_000;
/// Session ids and CSRF tokens: 256 random bits.
const TOKEN_BYTES: usize = 32;

/// The name of the browser session cookie.
pub(crate) const SESSION_COOKIE: &str = "coffer_session";
/// The name of the pre-login CSRF cookie of the login form.
pub(crate) const LOGIN_COOKIE: &str = "coffer_login";

/// A browser session: who, its CSRF token, and when it was last used.
#[derive(Clone, Debug)]
pub(crate) struct WebSession {
    pub(crate) principal: Principal,
    pub(crate) csrf: String,
    last_seen: Instant,
}

/// Credential cache and session table of one node.
pub(crate) struct Gatekeeper {
    vault: Vault,
    key: hmac::Key,
    credentials: CredentialCache,
    sessions: Mutex<HashMap<[u8; 32], WebSession>>,
    session_idle: Duration,
}

impl std::fmt::Debug for Gatekeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gatekeeper")
            .field("session_idle", &self.session_idle)
            .finish()
    }
}

/// 256 random bits, hex.
pub(crate) fn random_token() -> VfsResult<String> {
    let mut b = [0u8; TOKEN_BYTES];
    aws_lc_rs::rand::fill(&mut b)
        .map_err(|_| VfsError::new(ErrorKind::Internal, "the system random generator failed"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Constant-time equality of two tokens.
pub(crate) fn tokens_equal(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// `(user, password)` of an `Authorization: Basic` value.
pub(crate) fn parse_basic(value: &str) -> Option<(String, Password)> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_owned(), Password::new(pass.to_owned())))
}

/// The token of an `Authorization: Bearer` value.
pub(crate) fn parse_bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(rest.trim())
        .filter(|t| !t.is_empty())
}

/// The value of cookie `name` in a `Cookie` header.
pub(crate) fn cookie<'h>(header: &'h str, name: &str) -> Option<&'h str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// Verified credentials of this process: keyed hash of the credential -> what it was verified
/// against and when. Holds no secret: the key is random per process and the values are row
/// ids and stored hashes.
pub(crate) struct CredentialCache {
    key: hmac::Key,
    ttl: Duration,
    max: usize,
    map: Mutex<HashMap<[u8; 32], (CredentialStamp, Instant)>>,
}

/// A fresh random HMAC-SHA256 key that lives as long as this process (what it keys is never
/// stored or shared).
fn process_hmac_key() -> VfsResult<hmac::Key> {
    hmac::Key::generate(hmac::HMAC_SHA256, &aws_lc_rs::rand::SystemRandom::new())
        .map_err(|_| VfsError::new(ErrorKind::Internal, "the system random generator failed"))
}

/// HMAC-SHA256 under `key` of `parts`, each prefixed with its length (so no two lists of parts
/// hash alike).
fn keyed_hash(key: &hmac::Key, parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = hmac::Context::with_key(key);
    for p in parts {
        ctx.update(&(p.len() as u64).to_be_bytes());
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

impl CredentialCache {
    pub(crate) fn new(ttl: Duration, max: usize) -> VfsResult<Self> {
        let key = process_hmac_key()?;
        Ok(Self {
            key,
            ttl,
            max: max.max(1),
            map: Mutex::new(HashMap::new()),
        })
    }

    /// HMAC-SHA256 of the length-prefixed parts under this process's key.
    pub(crate) fn slot(&self, parts: &[&[u8]]) -> [u8; 32] {
        keyed_hash(&self.key, parts)
    }

    /// The stamp cached under `slot` if younger than the lifetime (an older one is removed).
    pub(crate) fn get(&self, slot: &[u8; 32], now: Instant) -> Option<CredentialStamp> {
        let mut map = self.map.lock().ok()?;
        let (stamp, at) = map.get(slot)?;
        if now.saturating_duration_since(*at) < self.ttl {
            return Some(stamp.clone());
        }
        map.remove(slot);
        None
    }

    /// Caches a verified credential; a full cache first drops expired entries, then the
    /// oldest one.
    pub(crate) fn put(&self, slot: [u8; 32], stamp: CredentialStamp, now: Instant) {
        let Ok(mut map) = self.map.lock() else {
            return;
        };
        if map.len() >= self.max && !map.contains_key(&slot) {
            let ttl = self.ttl;
            map.retain(|_, (_, at)| now.saturating_duration_since(*at) < ttl);
            while map.len() >= self.max {
                let oldest = map.iter().min_by_key(|(_, (_, at))| *at).map(|(k, _)| *k);
                match oldest {
                    Some(k) => map.remove(&k),
                    None => break,
                };
            }
        }
        map.insert(slot, (stamp, now));
    }

    /// Drops one entry (its credential no longer holds).
    pub(crate) fn forget(&self, slot: &[u8; 32]) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(slot);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }
}

impl Gatekeeper {
    pub(crate) fn new(vault: Vault, session_idle: Duration) -> VfsResult<Self> {
        let key = process_hmac_key()?;
        Ok(Self {
            vault,
            key,
            credentials: CredentialCache::new(CREDENTIAL_TTL, MAX_CREDENTIALS)?,
            sessions: Mutex::new(HashMap::new()),
            session_idle,
        })
    }

    /// A keyed hash: the tables hold this, never a password or a raw session id.
    fn keyed(&self, parts: &[&[u8]]) -> [u8; 32] {
        keyed_hash(&self.key, parts)
    }

    /// Checks a user name and password for a login form: always the full check (audited).
    pub(crate) async fn login(
        &self,
        user: &str,
        password: &Password,
        remote: &str,
    ) -> VfsResult<Principal> {
        self.vault
            .authenticate_password(user, password, "https", Some(remote.to_owned()))
            .await
    }

    /// The storage session of an `Authorization: Basic` request: Argon2 once per
    /// [`CREDENTIAL_TTL`], the user row on every request.
    pub(crate) async fn basic_session(
        &self,
        user: &str,
        password: &Password,
        remote: &str,
    ) -> VfsResult<Vfs> {
        let slot =
            self.credentials
                .slot(&[b"basic", user.as_bytes(), password.expose().as_bytes()]);
        if let Some(vfs) = self.resume(&slot, remote).await? {
            return Ok(vfs);
        }
        let (principal, stamp) = self
            .vault
            .authenticate_password_stamped(user, password, "https", Some(remote.to_owned()))
            .await?;
        let vfs = self.vault.session(principal).await?;
        if let Some(stamp) = stamp {
            self.credentials.put(slot, stamp, Instant::now());
        }
        Ok(vfs)
    }

    /// The storage session of an `Authorization: Bearer` request: the token's hash check and
    /// login audit once per [`CREDENTIAL_TTL`], its row and its owner's on every request.
    pub(crate) async fn token_session(&self, token: &str, remote: &str) -> VfsResult<Vfs> {
        let slot = self.credentials.slot(&[b"bearer", token.as_bytes()]);
        if let Some(vfs) = self.resume(&slot, remote).await? {
            return Ok(vfs);
        }
        // The Vault compares the secret's hash and counts a wrong secret toward the lockout.
        let (principal, stamp) = self
            .vault
            .authenticate_token_stamped(token, "https", Some(remote.to_owned()))
            .await?;
        let vfs = self.vault.session(principal).await?;
        self.credentials.put(slot, stamp, Instant::now());
        Ok(vfs)
    }

    /// A session from a cached verification that still holds; a stale entry is dropped.
    async fn resume(&self, slot: &[u8; 32], remote: &str) -> VfsResult<Option<Vfs>> {
        let Some(stamp) = self.credentials.get(slot, Instant::now()) else {
            return Ok(None);
        };
        let vfs = self
            .vault
            .resume(&stamp, "https", Some(remote.to_owned()))
            .await?;
        if vfs.is_none() {
            self.credentials.forget(slot);
        }
        Ok(vfs)
    }

    /// Starts a browser session; returns its id (the cookie value) and the session.
    pub(crate) fn open_session(&self, principal: Principal) -> VfsResult<(String, WebSession)> {
        let id = random_token()?;
        let session = WebSession {
            principal,
            csrf: random_token()?,
            last_seen: Instant::now(),
        };
        let slot = self.keyed(&[id.as_bytes()]);
        if let Ok(mut map) = self.sessions.lock() {
            if map.len() >= MAX_ENTRIES {
                let idle = self.session_idle;
                map.retain(|_, s| s.last_seen.elapsed() < idle);
            }
            map.insert(slot, session.clone());
        }
        Ok((id, session))
    }

    /// The live session with id `id`, touched; an idle one is removed and refused.
    pub(crate) fn session(&self, id: &str) -> Option<WebSession> {
        let slot = self.keyed(&[id.as_bytes()]);
        let mut map = self.sessions.lock().ok()?;
        let s = map.get_mut(&slot)?;
        if s.last_seen.elapsed() >= self.session_idle {
            map.remove(&slot);
            return None;
        }
        s.last_seen = Instant::now();
        Some(s.clone())
    }

    /// Ends a session (logout).
    pub(crate) fn close_session(&self, id: &str) {
        let slot = self.keyed(&[id.as_bytes()]);
        if let Ok(mut map) = self.sessions.lock() {
            map.remove(&slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_split_at_the_first_colon() {
        let v = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:pa:ss")
        );
        let (u, p) = parse_basic(&v).unwrap();
        assert_eq!((u.as_str(), p.expose()), ("alice", "pa:ss"));
        assert!(parse_basic("Bearer abc").is_none());
        assert!(parse_basic("Basic !!!").is_none());
    }

    #[test]
    fn bearer_and_cookie_values_are_found() {
        assert_eq!(parse_bearer("Bearer  tok "), Some("tok"));
        assert_eq!(parse_bearer("Bearer "), None);
        assert_eq!(
            cookie("a=1; coffer_session=xyz; b=2", SESSION_COOKIE),
            Some("xyz")
        );
        assert_eq!(cookie("coffer_sessionx=1", SESSION_COOKIE), None);
    }

    fn stamp(user_id: i64) -> CredentialStamp {
        CredentialStamp::Password {
            user_id,
            hash: format!("$argon2id$stored-{user_id}"),
        }
    }

    #[test]
    fn cached_credentials_expire_after_their_lifetime() {
        let cache = CredentialCache::new(Duration::from_secs(60), 10).unwrap();
        let t0 = Instant::now();
        let slot = cache.slot(&[b"basic", b"alice", b"pw"]);
        cache.put(slot, stamp(1), t0);
        assert_eq!(
            cache.get(&slot, t0 + Duration::from_secs(59)),
            Some(stamp(1))
        );
        assert_eq!(cache.get(&slot, t0 + Duration::from_secs(60)), None);
        // The expired entry is gone, not just hidden.
        assert_eq!(cache.len(), 0);
        assert_eq!(cache.get(&slot, t0), None);
    }

    #[test]
    fn a_full_cache_drops_expired_then_oldest_entries() {
        let cache = CredentialCache::new(Duration::from_secs(60), 3).unwrap();
        let t0 = Instant::now();
        let slots: Vec<_> = (0..5u8).map(|i| cache.slot(&[b"bearer", &[i]])).collect();
        cache.put(slots[0], stamp(0), t0);
        cache.put(slots[1], stamp(1), t0 + Duration::from_secs(70));
        cache.put(slots[2], stamp(2), t0 + Duration::from_secs(71));
        // Full: the expired entry 0 goes first.
        cache.put(slots[3], stamp(3), t0 + Duration::from_secs(72));
        assert_eq!(cache.len(), 3);
        let now = t0 + Duration::from_secs(73);
        assert_eq!(cache.get(&slots[0], now), None);
        // Full with none expired: the oldest (1) goes.
        cache.put(slots[4], stamp(4), now);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(&slots[1], now), None);
        for (i, slot) in slots.iter().enumerate().skip(2) {
            assert_eq!(cache.get(slot, now), Some(stamp(i as i64)), "entry {i}");
        }
        cache.forget(&slots[4]);
        assert_eq!(cache.get(&slots[4], now), None);
    }

    #[test]
    fn slots_are_keyed_per_process_and_separate_fields() {
        let a = CredentialCache::new(CREDENTIAL_TTL, 10).unwrap();
        let b = CredentialCache::new(CREDENTIAL_TTL, 10).unwrap();
        let s = a.slot(&[b"basic", b"alice", b"secret password"]);
        assert_eq!(s, a.slot(&[b"basic", b"alice", b"secret password"]));
        // Another key (another process) gives another slot: no table built elsewhere applies.
        assert_ne!(s, b.slot(&[b"basic", b"alice", b"secret password"]));
        // Length prefixes: moving a byte between user and password changes the slot.
        assert_ne!(s, a.slot(&[b"basic", b"alices", b"ecret password"]));
        assert_ne!(s, a.slot(&[b"bearer", b"alice", b"secret password"]));
        // Not a plain hash of the secret.
        let plain = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b"secret password");
        assert_ne!(&s[..], plain.as_ref());
    }

    #[test]
    fn tokens_are_256_bit_hex_and_differ() {
        let a = random_token().unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(a, random_token().unwrap());
        assert!(tokens_equal(&a, &a.clone()));
        assert!(!tokens_equal(&a, "x"));
    }
}
