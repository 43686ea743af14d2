//! Fresh random nonces, drawn from the CSPRNG in batches because one CSPRNG call costs about
//! as much as sealing 8 KiB.

use std::sync::{Mutex, PoisonError};

use crate::{FormatError, NONCE_LEN};

/// Nonces fetched per CSPRNG call: one call of 768 bytes costs about what one of 12 does.
const NONCES_PER_DRAW: usize = 64;

/// A batch of CSPRNG output handed out 12 bytes at a time, each slice exactly once.
///
/// Nonces are not secret (they are stored in the clear), so holding a batch in memory
/// reveals nothing. The pool is per [`ChunkCipher`](crate::ChunkCipher), so two ciphers —
/// e.g. an interrupted upload and its resumption — never share a batch. A process that
/// forks must not seal with the same cipher in both parent and child (Coffer never forks).
pub(crate) struct NoncePool {
    state: Mutex<PoolState>,
}

struct PoolState {
    batch: [u8; NONCE_LEN * NONCES_PER_DRAW],
    /// Index of the next unused nonce in `batch`; `NONCES_PER_DRAW` when exhausted.
    next: usize,
}

impl NoncePool {
    /// An empty pool: the first nonce taken triggers the first CSPRNG draw.
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(PoolState {
                batch: [0; NONCE_LEN * NONCES_PER_DRAW],
                next: NONCES_PER_DRAW,
            }),
        }
    }

    /// A nonce no other call of this pool has returned or will return.
    pub(crate) fn take(&self) -> Result<[u8; NONCE_LEN], FormatError> {
        // The state is consistent at every await-free step, so a poisoned lock is usable.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.next >= NONCES_PER_DRAW {
            aws_lc_rs::rand::fill(&mut state.batch).map_err(|_| FormatError::Random)?;
            state.next = 0;
        }
        let start = state.next * NONCE_LEN;
        let slot = state
            .batch
            .get(start..start + NONCE_LEN)
            .ok_or(FormatError::Random)?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(slot);
        state.next += 1;
        Ok(nonce)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn nonces_stay_distinct_across_batch_refills() {
        let pool = NoncePool::new();
        let taken: HashSet<[u8; NONCE_LEN]> = (0..5 * NONCES_PER_DRAW)
            .map(|_| pool.take().unwrap())
            .collect();
        assert_eq!(taken.len(), 5 * NONCES_PER_DRAW);
    }

    #[test]
    fn two_pools_hand_out_different_nonces() {
        let (a, b) = (NoncePool::new(), NoncePool::new());
        assert_ne!(a.take().unwrap(), b.take().unwrap());
    }
}
