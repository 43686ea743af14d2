//! Upload batches: the sealed bytes an upload gathers in memory before they go to the spool
//! file or, for an object that fits one batch, to the store or its row.
//!
//! Each batch is a buffer of about 1 MiB. glibc's malloc serves such a buffer from its heap
//! once one has been freed (its sliding mmap threshold rises to that size), and a burst of
//! concurrent uploads then leaves hundreds of MiB that it keeps for good, and grows again on
//! the next burst (docs/PERFORMANCE.md, "Allocators measured"). So batches are anonymous
//! memory maps of their own, reused through a small pool: an upload takes an idle one (no
//! system call, no page fault), and one freed while [`IDLE_MAX`] of its size are idle is unmapped, its
//! memory given back to the system at once. Sending every such buffer back to the system
//! instead (glibc's fixed thresholds) costs the 1 GiB transfers 40–75 % more CPU.
//!
//! A batch holds sealed bytes only (never plaintext), and only its first `len` bytes are ever
//! read: a reused buffer's older contents are overwritten before they can be.

use std::sync::Mutex;

use bytes::Bytes;
use memmap2::MmapMut;

use crate::error::{ErrorKind, VfsError, VfsResult, internal};

/// Idle batch buffers of one size kept for the next uploads (about 1.1 MiB each with the
/// default chunk size); one freed beyond this is unmapped.
const IDLE_MAX: usize = 16;

/// The idle buffers, of any capacity; a batch takes one of its own capacity.
static IDLE: Mutex<Vec<MmapMut>> = Mutex::new(Vec::new());

/// Sealed bytes of one upload, in a buffer of fixed capacity taken on first use.
pub(super) struct Batch {
    map: Option<MmapMut>,
    capacity: usize,
    len: usize,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("capacity", &self.capacity)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl Batch {
    /// An empty batch that can hold `capacity` bytes; no buffer is taken until bytes come.
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            map: None,
            capacity,
            len: 0,
        }
    }

    /// An empty batch of the same capacity in its place; the bytes gathered so far are
    /// returned.
    pub(super) fn take(&mut self) -> Self {
        std::mem::replace(self, Self::new(self.capacity))
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The bytes gathered.
    pub(super) fn as_slice(&self) -> &[u8] {
        match &self.map {
            Some(map) => map.get(..self.len).unwrap_or_default(),
            None => &[],
        }
    }

    /// Empties the batch, keeping its buffer.
    pub(super) fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends `bytes`; refused (and nothing appended) beyond the capacity.
    pub(super) fn extend_from_slice(&mut self, bytes: &[u8]) -> VfsResult<()> {
        let end = self
            .len
            .checked_add(bytes.len())
            .filter(|&end| end <= self.capacity)
            .ok_or_else(|| VfsError::new(ErrorKind::Internal, "upload batch overflow"))?;
        if bytes.is_empty() {
            return Ok(());
        }
        let map = match &mut self.map {
            Some(map) => map,
            none => none.insert(acquire(self.capacity)?),
        };
        map.get_mut(self.len..end)
            .ok_or_else(|| VfsError::new(ErrorKind::Internal, "upload batch overflow"))?
            .copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    /// The bytes as [`Bytes`], without a copy: the buffer goes back to the pool when the
    /// last of them is dropped.
    pub(super) fn into_bytes(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for Batch {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        if let Some(map) = self.map.take() {
            release(map);
        }
    }
}

/// An idle buffer of `capacity` bytes, or a new map.
fn acquire(capacity: usize) -> VfsResult<MmapMut> {
    if let Ok(mut idle) = IDLE.lock()
        && let Some(at) = idle.iter().rposition(|map| map.len() == capacity)
    {
        return Ok(idle.swap_remove(at));
    }
    MmapMut::map_anon(capacity).map_err(|e| internal("mapping an upload batch", e))
}

/// Keeps `map` for the next upload, or unmaps it (by dropping it) when enough of its size
/// are idle.
fn release(map: MmapMut) {
    if let Ok(mut idle) = IDLE.lock()
        && idle.iter().filter(|m| m.len() == map.len()).count() < IDLE_MAX
    {
        idle.push(map);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Idle buffers of `capacity` (each test uses a capacity of its own: the pool is shared).
    fn idle_of(capacity: usize) -> usize {
        IDLE.lock()
            .unwrap()
            .iter()
            .filter(|m| m.len() == capacity)
            .count()
    }

    #[test]
    fn gathers_bytes_up_to_its_capacity_and_refuses_more() {
        let mut batch = Batch::new(4096 + 1);
        assert_eq!(batch.as_slice(), b"");
        batch.extend_from_slice(b"header").unwrap();
        batch.extend_from_slice(&[7; 4090]).unwrap();
        assert_eq!(batch.len(), 4096);
        let e = batch.extend_from_slice(b"xy").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Internal);
        assert_eq!(batch.len(), 4096, "nothing appended past the capacity");
        batch.extend_from_slice(b"z").unwrap();
        assert_eq!(&batch.as_slice()[..6], b"header");
        assert_eq!(batch.as_slice()[4096], b'z');
        batch.clear();
        assert_eq!(batch.as_slice(), b"");
        batch.extend_from_slice(b"again").unwrap();
        assert_eq!(batch.as_slice(), b"again", "old bytes are never read back");
    }

    #[test]
    fn a_freed_buffer_is_reused_and_the_pool_keeps_at_most_idle_max() {
        let capacity = 3 * 4096 + 17;
        let mut first = Batch::new(capacity);
        first.extend_from_slice(b"one").unwrap();
        let address = first.as_slice().as_ptr();
        drop(first);
        assert_eq!(idle_of(capacity), 1);
        let mut second = Batch::new(capacity);
        second.extend_from_slice(b"two").unwrap();
        assert_eq!(
            second.as_slice().as_ptr(),
            address,
            "the idle buffer was taken"
        );
        assert_eq!(idle_of(capacity), 0);
        drop(second);

        let many: Vec<Batch> = (0..IDLE_MAX + 5)
            .map(|i| {
                let mut b = Batch::new(capacity);
                b.extend_from_slice(&[i as u8]).unwrap();
                b
            })
            .collect();
        drop(many);
        assert_eq!(idle_of(capacity), IDLE_MAX, "the rest were unmapped");
    }

    #[test]
    fn bytes_of_a_batch_share_its_buffer_and_give_it_back_when_dropped() {
        let capacity = 5 * 4096 + 3;
        let mut batch = Batch::new(capacity);
        batch.extend_from_slice(b"sealed bytes").unwrap();
        let taken = batch.take();
        assert_eq!(batch.len(), 0, "an empty batch is left in its place");
        let address = taken.as_slice().as_ptr();
        let bytes = taken.into_bytes();
        assert_eq!(&bytes[..], b"sealed bytes");
        assert_eq!(bytes.as_ptr(), address, "no copy");
        let part = bytes.slice(7..);
        drop(bytes);
        assert_eq!(idle_of(capacity), 0, "still held by a slice");
        assert_eq!(&part[..], b"bytes");
        drop(part);
        assert_eq!(idle_of(capacity), 1);
    }
}
