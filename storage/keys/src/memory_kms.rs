//! `MemoryKms`: an in-memory stand-in for a KMS, for unit tests of the layers above the key
//! ring. It models what the real test server (moto) does not: keys that are disabled,
//! re-enabled or scheduled for deletion, and a service that stops answering. Everything the
//! real wire protocol does is tested against moto instead (see docs/KEYS.md).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use aws_lc_rs::aead::LessSafeKey;

use crate::{
    KMS_KEY_ID_PREFIX, KeyError, KeyMetrics, KeyProvider, KmsConnector, TenantKey, WrapContext,
    kdf, sealed_blob,
};

const LABEL: &[u8] = b"coffer/test/memory-kms";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Enabled,
    Disabled,
}

struct Key {
    state: State,
    aead: LessSafeKey,
}

#[derive(Default)]
struct Shared {
    keys: HashMap<String, Key>,
    reachable: bool,
}

/// An in-memory KMS. Clones share the same keys.
#[derive(Clone)]
pub struct MemoryKms {
    shared: Arc<Mutex<Shared>>,
    metrics: Arc<KeyMetrics>,
}

impl std::fmt::Debug for MemoryKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryKms").finish_non_exhaustive()
    }
}

impl MemoryKms {
    /// An empty, reachable KMS that counts its calls in `metrics`.
    pub fn new(metrics: Arc<KeyMetrics>) -> Self {
        let shared = Shared {
            keys: HashMap::new(),
            reachable: true,
        };
        Self {
            shared: Arc::new(Mutex::new(shared)),
            metrics,
        }
    }

    /// The counters this KMS records its calls in.
    pub fn metrics(&self) -> Arc<KeyMetrics> {
        self.metrics.clone()
    }

    /// Creates an enabled key named `key_id` with random material.
    pub fn create_key(&self, key_id: &str) -> Result<(), KeyError> {
        let mut secret = [0u8; 32];
        aws_lc_rs::rand::fill(&mut secret).map_err(|_| KeyError::Random)?;
        let prk = kdf::extract(LABEL, &secret);
        self.with(|s| {
            s.keys.insert(
                key_id.to_owned(),
                Key {
                    state: State::Enabled,
                    aead: kdf::aead_key(&prk, LABEL),
                },
            );
        });
        Ok(())
    }

    /// Disables (`false`) or re-enables (`true`) a key, as `DisableKey`/`EnableKey` do.
    pub fn set_enabled(&self, key_id: &str, enabled: bool) {
        self.with(|s| {
            if let Some(k) = s.keys.get_mut(key_id) {
                k.state = if enabled {
                    State::Enabled
                } else {
                    State::Disabled
                };
            }
        });
    }

    /// Deletes a key and its material for good, as a completed `ScheduleKeyDeletion` does.
    pub fn delete_key(&self, key_id: &str) {
        self.with(|s| {
            s.keys.remove(key_id);
        });
    }

    /// Makes the whole service unreachable (`false`) or reachable again.
    pub fn set_reachable(&self, reachable: bool) {
        self.with(|s| s.reachable = reachable);
    }

    fn with<T>(&self, f: impl FnOnce(&mut Shared) -> T) -> T {
        let mut guard = match self.shared.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    fn call<T>(
        &self,
        key_id: &str,
        op: impl FnOnce(&LessSafeKey) -> Result<T, KeyError>,
    ) -> Result<T, KeyError> {
        let started = Instant::now();
        let result = self.with(|s| {
            if !s.reachable {
                return Err(KeyError::Unavailable(format!(
                    "KMS key {key_id}: the key service did not answer"
                )));
            }
            match s.keys.get(key_id) {
                None => Err(KeyError::Unavailable(format!(
                    "KMS key {key_id}: NotFoundException"
                ))),
                Some(k) if k.state == State::Disabled => Err(KeyError::Unavailable(format!(
                    "KMS key {key_id}: DisabledException"
                ))),
                Some(k) => op(&k.aead),
            }
        });
        self.metrics.kms_call(started.elapsed(), result.is_err());
        result
    }
}

fn binding(context: &WrapContext) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in context.kms_encryption_context() {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

#[derive(Debug)]
struct MemoryKmsKey {
    kms: MemoryKms,
    key_id: String,
}

impl KmsConnector for MemoryKms {
    fn key(&self, key_id: &str) -> Arc<dyn KeyProvider> {
        Arc::new(MemoryKmsKey {
            kms: self.clone(),
            key_id: key_id.to_owned(),
        })
    }
}

#[async_trait::async_trait]
impl KeyProvider for MemoryKmsKey {
    fn key_id(&self) -> String {
        format!("{KMS_KEY_ID_PREFIX}{}", self.key_id)
    }

    fn kind(&self) -> &'static str {
        "aws-kms"
    }

    async fn wrap(&self, key: &TenantKey, context: &WrapContext) -> Result<Vec<u8>, KeyError> {
        let aad = binding(context);
        self.kms.call(&self.key_id, |k| {
            sealed_blob::seal(k, LABEL, &[&aad], key.as_bytes())
        })
    }

    async fn unwrap(&self, wrapped: &[u8], context: &WrapContext) -> Result<TenantKey, KeyError> {
        let aad = binding(context);
        self.kms.call(&self.key_id, |k| {
            let raw = sealed_blob::open_key(k, LABEL, &[&aad], wrapped)?;
            Ok(TenantKey::from_bytes(*raw))
        })
    }
}
