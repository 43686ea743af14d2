//! The reorder buffer: turns writes at any offset (SFTP clients keep many in flight) into one
//! contiguous stream of plaintext, and is the one record of which bytes of an upload arrived.
//!
//! Everything below the *frontier* has been passed on, in order, to the sealer; writes beyond
//! it wait here until the hole before them is filled — by the client, or by the writer from the
//! base version or with zeros. Pure bookkeeping: no I/O, no crypto.

use std::collections::BTreeMap;
use std::ops::Range;

use bytes::Bytes;

use crate::error::{ErrorKind, VfsError, VfsResult};

/// Out-of-order writes of one upload, and how far its contiguous start reaches.
#[derive(Debug)]
pub(super) struct ReorderBuffer {
    /// Everything below this offset has been passed on in order.
    frontier: u64,
    /// Data beyond the frontier, non-overlapping, keyed by offset.
    pending: BTreeMap<u64, Bytes>,
    /// Bytes held in `pending`.
    pending_bytes: u64,
    /// The most `pending` may hold before writes are refused.
    max_buffered: u64,
    /// The logical end of the file: the largest offset written, or the base version's length.
    end: u64,
    /// Length of the version this upload overlays (resume, append): its bytes count as
    /// received.
    base_len: u64,
    /// Where zeros were first filled into a hole: no byte from there on was received.
    zeros_from: Option<u64>,
}

/// Where the bytes of one write go.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Placement<'a> {
    /// The write reaches the frontier: `rewrite` lands at `offset` on bytes already passed on
    /// (they must be replaced where they are), `append` continues the stream at the old
    /// frontier. Either may be empty.
    InOrder { rewrite: &'a [u8], append: &'a [u8] },
    /// The write lies beyond a hole and is held until the hole is filled.
    Held,
}

impl ReorderBuffer {
    /// An upload over a base version of `base_len` bytes (0 for a new or truncated file).
    pub(super) fn new(base_len: u64, max_buffered: u64) -> Self {
        Self {
            frontier: 0,
            pending: BTreeMap::new(),
            pending_bytes: 0,
            max_buffered,
            end: base_len,
            base_len,
            zeros_from: None,
        }
    }

    /// The logical end of the file (what `fstat` on an open upload reports).
    pub(super) fn end(&self) -> u64 {
        self.end
    }

    /// Everything below this offset has been passed on in order.
    pub(super) fn frontier(&self) -> u64 {
        self.frontier
    }

    /// Length of the version the upload overlays.
    pub(super) fn base_len(&self) -> u64 {
        self.base_len
    }

    /// `true` if writes are held beyond a hole.
    pub(super) fn has_held(&self) -> bool {
        !self.pending.is_empty()
    }

    /// `true` once zeros were filled into a hole the client left (more than the writer holds
    /// was written beyond it).
    pub(super) fn zeros_filled(&self) -> bool {
        self.zeros_from.is_some()
    }

    /// The length of the file's start that holds only bytes the client sent or the base
    /// version held (never zeros filled into a hole): how far the upload could be resumed.
    pub(super) fn contiguous_len(&self) -> u64 {
        let mut end = self.frontier.max(self.base_len);
        for (off, seg) in &self.pending {
            if *off > end {
                break;
            }
            end = end.max(off + seg.len() as u64);
        }
        self.zeros_from.map_or(end, |z| end.min(z))
    }

    /// Records a write of `data` at `offset` (the caller checked that it does not overflow
    /// and is non-empty). Bytes that reach the frontier are handed back to be passed on;
    /// bytes beyond a hole are copied and held. A newer write replaces the overlapped parts
    /// of older held ones. Refused with `Unsupported` when more than the limit would be held.
    pub(super) fn place<'a>(&mut self, offset: u64, data: &'a [u8]) -> VfsResult<Placement<'a>> {
        let write_end = offset + data.len() as u64;
        self.end = self.end.max(write_end);
        if offset > self.frontier {
            self.hold(offset, Bytes::copy_from_slice(data))?;
            return Ok(Placement::Held);
        }
        let overlap = ((self.frontier - offset) as usize).min(data.len());
        let (rewrite, append) = data.split_at(overlap);
        self.frontier += append.len() as u64;
        Ok(Placement::InOrder { rewrite, append })
    }

    /// The next held segment that now reaches the frontier, without the part below it
    /// (bytes written later than the segment won); the frontier moves past it.
    pub(super) fn next_ready(&mut self) -> Option<Bytes> {
        while let Some(entry) = self.pending.first_entry() {
            let off = *entry.key();
            if off > self.frontier {
                return None;
            }
            let seg = entry.remove();
            self.pending_bytes -= seg.len() as u64;
            let skip = ((self.frontier - off) as usize).min(seg.len());
            let rest = seg.slice(skip..);
            if !rest.is_empty() {
                self.frontier += rest.len() as u64;
                return Some(rest);
            }
        }
        None
    }

    /// The hole between the frontier and `upto` (or the first held segment, if nearer) that
    /// the writer should fill, if any.
    pub(super) fn hole_below(&self, upto: u64) -> Option<Range<u64>> {
        let next_held = self.pending.keys().next().copied().unwrap_or(u64::MAX);
        let stop = upto.min(next_held);
        (self.frontier < stop).then_some(self.frontier..stop)
    }

    /// The writer passed on `n` bytes at the frontier to fill a hole: from the base version,
    /// or zeros.
    pub(super) fn filled(&mut self, n: u64, zeros: bool) {
        if zeros && n > 0 && self.zeros_from.is_none() {
            self.zeros_from = Some(self.frontier);
        }
        self.frontier += n;
    }

    /// Forgets everything beyond the first hole: the file ends at the frontier.
    pub(super) fn truncate_to_frontier(&mut self) {
        self.pending.clear();
        self.pending_bytes = 0;
        self.end = self.frontier;
    }

    fn hold(&mut self, off: u64, data: Bytes) -> VfsResult<()> {
        let end = off + data.len() as u64;
        let overlapped: Vec<u64> = self
            .pending
            .range(..end)
            .rev()
            .take_while(|(k, v)| **k + v.len() as u64 > off)
            .map(|(k, _)| *k)
            .collect();
        for k in overlapped {
            let Some(old) = self.pending.remove(&k) else {
                continue;
            };
            self.pending_bytes -= old.len() as u64;
            let old_end = k + old.len() as u64;
            if k < off {
                let left = old.slice(..(off - k) as usize);
                self.pending_bytes += left.len() as u64;
                self.pending.insert(k, left);
            }
            if old_end > end {
                let right = old.slice((end - k) as usize..);
                self.pending_bytes += right.len() as u64;
                self.pending.insert(end, right);
            }
        }
        self.pending_bytes += data.len() as u64;
        self.pending.insert(off, data);
        if self.pending_bytes > self.max_buffered {
            return Err(VfsError::new(
                ErrorKind::Unsupported,
                "too much data written out of order; write the file sequentially",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: u64 = 1 << 20;

    /// Places a write and passes on everything that becomes contiguous, like the writer does;
    /// returns the stream of bytes passed on, with rewrites applied in place.
    fn write(rb: &mut ReorderBuffer, stream: &mut Vec<u8>, offset: u64, data: &[u8]) {
        if let Placement::InOrder { rewrite, append } = rb.place(offset, data).unwrap() {
            let at = offset as usize;
            stream[at..at + rewrite.len()].copy_from_slice(rewrite);
            stream.extend_from_slice(append);
        }
        while let Some(seg) = rb.next_ready() {
            stream.extend_from_slice(&seg);
        }
        assert_eq!(rb.frontier(), stream.len() as u64);
    }

    fn bytes(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn a_new_upload_starts_empty() {
        let rb = ReorderBuffer::new(0, LIMIT);
        assert_eq!((rb.end(), rb.frontier(), rb.contiguous_len()), (0, 0, 0));
        assert!(!rb.has_held());
        assert_eq!(rb.hole_below(0), None);
    }

    #[test]
    fn in_order_writes_pass_straight_through() {
        let mut rb = ReorderBuffer::new(0, LIMIT);
        let mut out = Vec::new();
        let data = bytes(10_000, 1);
        for (i, part) in data.chunks(4096).enumerate() {
            write(&mut rb, &mut out, (i * 4096) as u64, part);
        }
        assert_eq!(out, data);
        assert_eq!((rb.end(), rb.contiguous_len()), (10_000, 10_000));
        assert!(!rb.has_held());
    }

    #[test]
    fn out_of_order_writes_become_contiguous_once_the_hole_is_filled() {
        let mut rb = ReorderBuffer::new(0, LIMIT);
        let mut out = Vec::new();
        let data = bytes(30, 2);
        write(&mut rb, &mut out, 0, &data[..10]);
        write(&mut rb, &mut out, 20, &data[20..]);
        assert_eq!(out, &data[..10], "bytes beyond the hole are held");
        assert_eq!((rb.end(), rb.contiguous_len()), (30, 10));
        assert_eq!(rb.hole_below(30), Some(10..20));
        write(&mut rb, &mut out, 10, &data[10..20]);
        assert_eq!(out, data);
        assert_eq!(rb.contiguous_len(), 30);
        assert!(!rb.has_held());
    }

    #[test]
    fn writes_in_reverse_order_come_out_in_order() {
        let mut rb = ReorderBuffer::new(0, LIMIT);
        let mut out = Vec::new();
        let data = bytes(64 * 1024 + 1, 3);
        let parts: Vec<_> = data.chunks(1000).enumerate().collect();
        for (i, part) in parts.iter().rev() {
            write(&mut rb, &mut out, (*i * 1000) as u64, part);
        }
        assert_eq!(out, data);
    }

    #[test]
    fn a_newer_held_write_replaces_the_overlapped_parts_of_older_ones() {
        let mut rb = ReorderBuffer::new(0, LIMIT);
        let mut out = Vec::new();
        write(&mut rb, &mut out, 10, &[1; 20]); // 10..30
        write(&mut rb, &mut out, 15, &[2; 5]); // inside it
        write(&mut rb, &mut out, 25, &[3; 10]); // over its end
        write(&mut rb, &mut out, 5, &[4; 7]); // over its start
        write(&mut rb, &mut out, 0, &[0; 5]);
        let mut want = vec![0u8; 5];
        want.extend([4; 7]);
        want.extend([1; 3]);
        want.extend([2; 5]);
        want.extend([1; 5]);
        want.extend([3; 10]);
        assert_eq!(out, want);
        assert_eq!(rb.end(), 35);
    }

    #[test]
    fn a_write_over_the_frontier_is_split_into_rewrite_and_append() {
        let mut rb = ReorderBuffer::new(0, LIMIT);
        assert!(matches!(
            rb.place(0, &[1; 10]),
            Ok(Placement::InOrder { .. })
        ));
        let placed = rb.place(6, &[2; 8]).unwrap();
        assert_eq!(
            placed,
            Placement::InOrder {
                rewrite: &[2; 4],
                append: &[2; 4]
            }
        );
        assert_eq!((rb.frontier(), rb.end()), (14, 14));
        // Entirely below the frontier: nothing is appended.
        let placed = rb.place(0, &[3; 3]).unwrap();
        assert_eq!(
            placed,
            Placement::InOrder {
                rewrite: &[3; 3],
                append: &[]
            }
        );
        assert_eq!(rb.frontier(), 14);
    }

    #[test]
    fn held_bytes_below_the_frontier_lose_to_later_in_order_writes() {
        let mut rb = ReorderBuffer::new(0, LIMIT);
        let mut out = Vec::new();
        write(&mut rb, &mut out, 5, &[9; 10]); // held: 5..15
        write(&mut rb, &mut out, 0, &[1; 8]); // reaches 8, overlapping the held one
        let mut want = vec![1u8; 8];
        want.extend([9; 7]);
        assert_eq!(out, want);
    }

    #[test]
    fn holding_more_than_the_limit_is_refused() {
        let mut rb = ReorderBuffer::new(0, 100);
        assert!(rb.place(1, &[0; 100]).is_ok());
        let err = rb.place(200, &[0; 1]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported);
        // Overwriting held bytes does not count them twice.
        let mut rb = ReorderBuffer::new(0, 100);
        assert!(rb.place(1, &[0; 100]).is_ok());
        assert!(rb.place(1, &[1; 100]).is_ok());
    }

    #[test]
    fn a_resume_counts_the_stored_prefix_as_received() {
        let mut rb = ReorderBuffer::new(1000, LIMIT);
        assert_eq!((rb.end(), rb.contiguous_len()), (1000, 1000));
        // A resume writes at the stored length: held until the base is copied in.
        assert_eq!(rb.place(1000, &[7; 500]).unwrap(), Placement::Held);
        assert_eq!((rb.end(), rb.contiguous_len()), (1500, 1500));
        assert_eq!(rb.hole_below(1500), Some(0..1000));
        rb.filled(1000, false);
        assert_eq!(rb.next_ready().as_deref(), Some(&[7u8; 500][..]));
        assert_eq!((rb.frontier(), rb.contiguous_len()), (1500, 1500));
        assert_eq!(rb.hole_below(1500), None);
    }

    #[test]
    fn a_hole_past_the_base_is_not_counted_as_received() {
        let mut rb = ReorderBuffer::new(10, LIMIT);
        assert_eq!(rb.place(20, &[1; 5]).unwrap(), Placement::Held);
        assert_eq!(rb.contiguous_len(), 10);
        assert_eq!(rb.hole_below(25), Some(0..20));
        rb.filled(10, false);
        rb.filled(10, true);
        assert_eq!(rb.next_ready().as_deref(), Some(&[1u8; 5][..]));
        assert_eq!(rb.frontier(), 25);
        assert_eq!(
            rb.contiguous_len(),
            10,
            "zeros filled in are not received bytes"
        );
    }

    #[test]
    fn the_hole_to_fill_stops_at_the_first_held_write() {
        let mut rb = ReorderBuffer::new(0, LIMIT);
        rb.place(100, &[1; 10]).unwrap();
        rb.place(300, &[1; 10]).unwrap();
        assert_eq!(rb.hole_below(50), Some(0..50));
        assert_eq!(rb.hole_below(1000), Some(0..100));
    }

    #[test]
    fn truncating_drops_everything_beyond_the_first_hole() {
        let mut rb = ReorderBuffer::new(0, LIMIT);
        let mut out = Vec::new();
        write(&mut rb, &mut out, 0, &[1; 10]);
        write(&mut rb, &mut out, 20, &[1; 10]);
        rb.truncate_to_frontier();
        assert_eq!((rb.end(), rb.frontier(), rb.contiguous_len()), (10, 10, 10));
        assert!(!rb.has_held());
        assert_eq!(rb.next_ready(), None);
    }
}
