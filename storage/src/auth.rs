//! Password hashing (Argon2id) on a bounded pool, and the lockout policy's settings.
//!
//! Every password check costs one Argon2id run of 19 MiB. Unbounded, a burst of failed logins
//! runs hundreds of them at once and the process grows by 19 MiB per attempt (glibc keeps the
//! freed blocks in its per-thread arenas, so the memory is not given back). The [`Hasher`]
//! runs them on a fixed number of worker threads (about one per core), each owning one
//! reusable 19 MiB block buffer, behind a bounded queue: beyond it an attempt is refused at
//! once with [`ErrorKind::Busy`], and no attempt ever allocates hashing memory of its own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::error::{ErrorKind, VfsError, VfsResult, internal};
use crate::login::Source;

/// A password in memory: zeroized on drop, never printed.
pub struct Password(Zeroizing<String>);

impl Password {
    /// Wraps a password read from a client or a terminal.
    pub fn new(s: String) -> Self {
        Self(Zeroizing::new(s))
    }

    /// The password text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Argon2id memory cost in KiB: OWASP's second recommended setting (19 MiB, 2 passes, 1 lane).
const M_COST_KIB: u32 = 19 * 1024;
const T_COST: u32 = 2;
const P_COST: u32 = 1;
/// Bytes of the hash output stored in the PHC string.
const OUTPUT_LEN: usize = 32;

fn params() -> VfsResult<Params> {
    Params::new(M_COST_KIB, T_COST, P_COST, Some(OUTPUT_LEN))
        .map_err(|e| internal("argon2 parameters", e))
}

/// Lockout policy: the thresholds of the login limits (see `login.rs` and docs/SECURITY.md).
///
/// * `max_failures` failures within `window_ms` from one source address for one user name
///   lock that (name, address) pair for `lock_ms`;
/// * `max_failures × 3` failures within `window_ms` from one source address, whatever the
///   names, lock that address for `lock_ms` (password logins only);
/// * `max_failures` failed passwords within `window_ms` against one account, from anywhere,
///   stop password logins to it for `lock_ms` from every address that has not logged in to it
///   successfully before (counted in the database, so cluster-wide). Public keys and API
///   tokens are never refused by it.
#[derive(Clone, Copy, Debug)]
pub struct LockoutPolicy {
    /// Failures that trigger a lock.
    pub max_failures: u32,
    /// Window in which failures count, in ms.
    pub window_ms: i64,
    /// How long a lock lasts, in ms.
    pub lock_ms: i64,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        Self {
            max_failures: 10,
            window_ms: 15 * 60 * 1000,
            lock_ms: 15 * 60 * 1000,
        }
    }
}

/// How many hashes run at once and wait, and how many one source address may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashLimits {
    /// Worker threads, each with its own 19 MiB buffer: hashes that run at once.
    pub workers: usize,
    /// Hashes that may wait for a worker; beyond, attempts are refused with `Busy`.
    pub queue: usize,
    /// Hashes (running or waiting) one source address may have at once.
    pub per_source: usize,
}

impl HashLimits {
    /// One worker per core (at most 16), a queue of 8 per worker, and half of the total
    /// for any one address: one address alone cannot keep others from logging in.
    pub fn for_this_machine() -> Self {
        let workers = std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(2)
            .clamp(1, 16);
        let queue = workers * 8;
        Self {
            workers,
            queue,
            per_source: ((workers + queue) / 2).max(1),
        }
    }
}

type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// The bounded Argon2 pool. Dropping it (with the vault) ends its threads.
pub(crate) struct Hasher {
    tx: SyncSender<Job>,
    limits: HashLimits,
    in_flight: Arc<Mutex<HashMap<Source, usize>>>,
    /// How long a check takes now, in µs, as a client sees it (queue wait included): a
    /// moving average over recent checks, so a refusal made without one can take as long.
    cost_us: AtomicU64,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// One admitted hash of one source; releases its place when dropped.
pub(crate) struct Permit {
    source: Source,
    in_flight: Arc<Mutex<HashMap<Source, usize>>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Ok(mut m) = self.in_flight.lock()
            && let Some(n) = m.get_mut(&self.source)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.source);
            }
        }
    }
}

fn busy() -> VfsError {
    VfsError::new(
        ErrorKind::Busy,
        "too many logins are being checked; try again shortly",
    )
}

fn worker(rx: Arc<Mutex<Receiver<Job>>>) {
    // Allocated on the first job and kept: every hash of this worker reuses it.
    let mut blocks: Vec<Block> = Vec::new();
    loop {
        let job = match rx.lock() {
            Ok(r) => r.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        job(&mut blocks);
        blocks.iter_mut().for_each(Zeroize::zeroize);
    }
}

impl Hasher {
    /// Starts the worker threads.
    pub(crate) fn start(limits: HashLimits) -> VfsResult<Self> {
        let (tx, rx) = sync_channel::<Job>(limits.queue);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..limits.workers {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || worker(rx))
                .map_err(|e| internal("starting a hashing thread", e))?;
        }
        Ok(Self {
            tx,
            limits,
            in_flight: Arc::default(),
            cost_us: AtomicU64::new(0),
        })
    }

    /// A place for one hash of `source`, or `Busy` at once if the address already holds its
    /// share.
    pub(crate) fn admit(&self, source: &Source) -> VfsResult<Permit> {
        let mut m = self
            .in_flight
            .lock()
            .map_err(|_| VfsError::new(ErrorKind::Internal, "hashing state poisoned"))?;
        let n = m.entry(source.clone()).or_insert(0);
        if *n >= self.limits.per_source {
            return Err(busy());
        }
        *n += 1;
        Ok(Permit {
            source: source.clone(),
            in_flight: self.in_flight.clone(),
        })
    }

    /// Runs `f` on a worker with its block buffer; `Busy` at once if the queue is full.
    async fn run<T: Send + 'static>(
        &self,
        _permit: &Permit,
        f: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    ) -> VfsResult<T> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |blocks| {
            let _ = done.send(f(blocks));
        });
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(busy()),
            Err(TrySendError::Disconnected(_)) => {
                return Err(VfsError::new(
                    ErrorKind::Internal,
                    "the hashing threads have stopped",
                ));
            }
        }
        result.await.map_err(|e| internal("hashing task", e))
    }

    /// Hashes a password into a PHC string (`$argon2id$...`).
    pub(crate) async fn hash(&self, password: &Password) -> VfsResult<String> {
        let permit = self.admit(&Source::Local)?;
        let mut salt = [0u8; 16];
        aws_lc_rs::rand::fill(&mut salt)
            .map_err(|_| VfsError::new(ErrorKind::Internal, "the OS random generator failed"))?;
        let pw = Zeroizing::new(password.expose().as_bytes().to_vec());
        self.run(&permit, move |blocks| phc_hash(&pw, &salt, blocks))
            .await?
    }

    /// Verifies a password against a PHC string; a malformed hash verifies as false. Always
    /// does the full Argon2 work of the stored parameters. `Busy` if the queue is full.
    pub(crate) async fn verify(
        &self,
        permit: &Permit,
        hash: &str,
        password: &Password,
    ) -> VfsResult<bool> {
        let hash = hash.to_owned();
        let pw = Zeroizing::new(password.expose().as_bytes().to_vec());
        let start = Instant::now();
        let ok = self
            .run(permit, move |blocks| phc_verify(&hash, &pw, blocks))
            .await;
        self.observe(start.elapsed());
        ok
    }

    /// Folds one check's duration into [`Hasher::cost`] (weight 1/4: a few checks follow a
    /// change of load, one outlier moves it little).
    fn observe(&self, took: Duration) {
        let sample = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let _ = self
            .cost_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(if old == 0 {
                    sample
                } else {
                    old.saturating_mul(3).saturating_add(sample) / 4
                })
            });
    }

    /// How long a password check takes on this machine now (measured at start, then kept
    /// current by every check): what a refusal made without a hash waits, so that neither
    /// an unloaded start nor a loaded one makes it answer at another speed than a check.
    pub(crate) fn cost(&self) -> Duration {
        Duration::from_micros(self.cost_us.load(Ordering::Relaxed))
    }

    /// A hash of a throwaway password (checked against for unknown users), after one check
    /// against it has set [`Hasher::cost`] (the worker's buffer exists by then).
    pub(crate) async fn measure(&self) -> VfsResult<String> {
        let dummy = self.hash(&Password::new("coffer-dummy".into())).await?;
        let permit = self.admit(&Source::Local)?;
        self.verify(&permit, &dummy, &Password::new("x".into()))
            .await?;
        Ok(dummy)
    }
}

/// `blocks` resized to `n` (the first use of a worker allocates; later ones reuse).
fn blocks_for(blocks: &mut Vec<Block>, n: usize) -> &mut [Block] {
    if blocks.len() < n {
        blocks.resize(n, Block::default());
    }
    blocks.get_mut(..n).unwrap_or_default()
}

fn phc_hash(pw: &[u8], salt: &[u8; 16], blocks: &mut Vec<Block>) -> VfsResult<String> {
    let params = params()?;
    let a = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut out = [0u8; OUTPUT_LEN];
    a.hash_password_into_with_memory(pw, salt, &mut out, blocks_for(blocks, params.block_count()))
        .map_err(|e| internal("argon2", e))?;
    let salt = SaltString::encode_b64(salt).map_err(|e| internal("salt", e))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| internal("argon2 parameters", e))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| internal("argon2 output", e))?),
    };
    out.zeroize();
    Ok(phc.to_string())
}

fn phc_verify(hash: &str, pw: &[u8], blocks: &mut Vec<Block>) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from) {
        None => Version::V0x13,
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let mut out = Zeroizing::new(vec![0u8; expected.len()]);
    let a = Argon2::new(algorithm, version, params.clone());
    if a.hash_password_into_with_memory(
        pw,
        salt,
        &mut out,
        blocks_for(blocks, params.block_count()),
    )
    .is_err()
    {
        return false;
    }
    out.as_slice().ct_eq(expected.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    fn pool() -> Hasher {
        Hasher::start(HashLimits {
            workers: 1,
            queue: 2,
            per_source: 2,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn hash_verifies_only_the_right_password() {
        let h = pool();
        let p = h.admit(&Source::Local).unwrap();
        let hash = h
            .hash(&Password::new("correct horse".into()))
            .await
            .unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        let right = Password::new("correct horse".into());
        let wrong = Password::new("correct horsf".into());
        assert!(h.verify(&p, &hash, &right).await.unwrap());
        assert!(!h.verify(&p, &hash, &wrong).await.unwrap());
        assert!(!h.verify(&p, "garbage", &right).await.unwrap());
    }

    #[tokio::test]
    async fn hashes_agree_with_the_argon2_crate_both_ways() {
        let h = pool();
        let p = h.admit(&Source::Local).unwrap();
        let ours = h.hash(&Password::new("pw one".into())).await.unwrap();
        let std = Argon2::default();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(std.verify_password(b"pw one", &parsed).is_ok());
        // A hash with other parameters (a bigger memory cost) than ours still verifies.
        let other = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(32 * 1024, 3, 1, None).unwrap(),
        );
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let theirs = other.hash_password(b"pw two", &salt).unwrap().to_string();
        assert!(
            h.verify(&p, &theirs, &Password::new("pw two".into()))
                .await
                .unwrap()
        );
        assert!(
            !h.verify(&p, &theirs, &Password::new("pw one".into()))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn one_source_gets_its_share_then_busy_and_its_place_back_after() {
        let h = pool();
        let a = Source::of(Some("192.0.2.1:4000"));
        let p1 = h.admit(&a).unwrap();
        let _p2 = h.admit(&a).unwrap();
        assert_eq!(h.admit(&a).err().map(|e| e.kind()), Some(ErrorKind::Busy));
        // Another address is not affected.
        let b = Source::of(Some("192.0.2.2:4000"));
        assert!(h.admit(&b).is_ok());
        drop(p1);
        assert!(
            h.admit(&a).is_ok(),
            "a finished attempt gives its place back"
        );
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let h = Arc::new(pool());
        let hash = h.hash(&Password::new("x".into())).await.unwrap();
        // 1 running + 2 waiting fill the pool; the next ones are refused without waiting.
        let mut tasks = Vec::new();
        for i in 0..12 {
            let h = h.clone();
            let hash = hash.clone();
            tasks.push(tokio::spawn(async move {
                let src = Source::of(Some(&format!("198.51.100.{i}:1")));
                let p = h.admit(&src)?;
                h.verify(&p, &hash, &Password::new("y".into())).await
            }));
        }
        let mut busy = 0;
        let mut done = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(false) => done += 1,
                Err(e) if e.kind() == ErrorKind::Busy => busy += 1,
                other => panic!("{:?}", other.map_err(|e| e.kind())),
            }
        }
        assert!(done >= 1 && busy >= 1, "done {done}, busy {busy}");
        assert_eq!(done + busy, 12);
    }
}
