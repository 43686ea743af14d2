//! Who is calling: HTTP Basic (Argon2 through the [`Vault`], then a short-lived cache keyed
//! by an HMAC of user and password), API bearer tokens, and browser sessions with their CSRF
//! tokens. Sessions live in this node's memory (see docs/HTTPS.md for load balancers).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use base64::Engine;
use coffer_storage::{ErrorKind, Password, Principal, Vault, VfsError, VfsResult};
use subtle::ConstantTimeEq;

/// How long a verified Basic credential is reused without running Argon2 again.
const CREDENTIAL_TTL: Duration = Duration::from_secs(60);
/// Cached credentials and sessions kept at most; beyond it the oldest state is dropped.
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
    credentials: Mutex<HashMap<[u8; 32], (Principal, Instant)>>,
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

impl Gatekeeper {
    pub(crate) fn new(vault: Vault, session_idle: Duration) -> VfsResult<Self> {
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &aws_lc_rs::rand::SystemRandom::new())
            .map_err(|_| {
                VfsError::new(ErrorKind::Internal, "the system random generator failed")
            })?;
        Ok(Self {
            vault,
            key,
            credentials: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            session_idle,
        })
    }

    /// A keyed hash: the tables hold this, never a password or a raw session id.
    fn keyed(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.key);
        for p in parts {
            ctx.update(&(p.len() as u64).to_be_bytes());
            ctx.update(p);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    /// Checks a user name and password, reusing a success of the last minute.
    pub(crate) async fn password(
        &self,
        user: &str,
        password: &Password,
        remote: &str,
    ) -> VfsResult<Principal> {
        let slot = self.keyed(&[user.as_bytes(), password.expose().as_bytes()]);
        if let Some(p) = self.cached(&slot) {
            return Ok(p);
        }
        let principal = self
            .vault
            .authenticate_password(user, password, "https", Some(remote.to_owned()))
            .await?;
        if let Ok(mut map) = self.credentials.lock() {
            if map.len() >= MAX_ENTRIES {
                map.retain(|_, (_, at)| at.elapsed() < CREDENTIAL_TTL);
                if map.len() >= MAX_ENTRIES {
                    map.clear();
                }
            }
            map.insert(slot, (principal.clone(), Instant::now()));
        }
        Ok(principal)
    }

    fn cached(&self, slot: &[u8; 32]) -> Option<Principal> {
        let map = self.credentials.lock().ok()?;
        let (p, at) = map.get(slot)?;
        (at.elapsed() < CREDENTIAL_TTL).then(|| p.clone())
    }

    /// Checks an API token.
    pub(crate) async fn token(&self, token: &str, remote: &str) -> VfsResult<Principal> {
        // The Vault compares the secret's hash and counts a wrong secret toward the lockout.
        self.vault
            .authenticate_token(token, "https", Some(remote.to_owned()))
            .await
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

    #[test]
    fn tokens_are_256_bit_hex_and_differ() {
        let a = random_token().unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(a, random_token().unwrap());
        assert!(tokens_equal(&a, &a.clone()));
        assert!(!tokens_equal(&a, "x"));
    }
}
