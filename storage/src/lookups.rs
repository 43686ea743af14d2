//! Recent name lookups, shared by every session of this process.
//!
//! A client walks the same folders file after file and opens what it has just stat'ed, so
//! most path lookups repeat one made a moment ago. Entries are keyed by tenant and blind index
//! (the index already binds the parent folder and the name; no plaintext name is kept).
//! Every change made through this process forgets the entries it touches before it returns,
//! and a lookup that overlapped any change is not remembered, so on one node (and always with
//! the embedded SQLite store) every session sees every change at once. A change made by
//! another process (another node on MySQL, an operator command) is seen within [`TTL`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use coffer_meta::Node;

/// How long an entry answers.
pub(crate) const TTL: Duration = Duration::from_millis(200);
/// Bound on entries; when full, expired ones go, then all.
const CAP: usize = 4096;

type Key = (i64, [u8; 32]);

/// The shared lookup table.
#[derive(Default)]
pub(crate) struct Lookups {
    inner: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    /// Bumped by every change; a lookup read under an older count is not remembered.
    changes: u64,
    map: HashMap<Key, (Node, Instant)>,
}

/// Where a lookup started: pass it back to [`Lookups::remember`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ticket(u64);

impl std::fmt::Debug for Lookups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lookups").finish_non_exhaustive()
    }
}

fn key(tenant_id: i64, index: &[u8]) -> Option<Key> {
    Some((tenant_id, index.try_into().ok()?))
}

impl Lookups {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A recent node for this name, or a ticket to remember the one about to be read.
    pub(crate) fn recall(&self, tenant_id: i64, index: &[u8; 32]) -> Result<Node, Ticket> {
        let t = self.lock();
        match t.map.get(&(tenant_id, *index)) {
            Some((node, at)) if at.elapsed() < TTL => Ok(node.clone()),
            _ => Err(Ticket(t.changes)),
        }
    }

    /// Remembers a node read after `ticket`, unless a change happened meanwhile.
    pub(crate) fn remember(&self, ticket: Ticket, node: &Node) {
        let Some(k) = key(node.tenant_id, &node.name_index) else {
            return;
        };
        let mut t = self.lock();
        if t.changes != ticket.0 {
            return;
        }
        if t.map.len() >= CAP {
            t.map.retain(|_, (_, at)| at.elapsed() < TTL);
            if t.map.len() >= CAP {
                t.map.clear();
            }
        }
        t.map.insert(k, (node.clone(), Instant::now()));
    }

    /// Forgets the entries of these names (blind indexes) in a tenant; called after every
    /// change of a name, place, content or time, whether it succeeded or not.
    pub(crate) fn forget(&self, tenant_id: i64, indexes: &[&[u8]]) {
        let mut t = self.lock();
        t.changes += 1;
        for index in indexes {
            if let Some(k) = key(tenant_id, index) {
                t.map.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffer_meta::NodeKind;

    fn node(tenant_id: i64, id: i64, index: u8) -> Node {
        Node {
            id,
            tenant_id,
            parent_id: Some(1),
            kind: NodeKind::Dir,
            name_enc: vec![],
            name_index: vec![index; 32],
            name_key_version: 1,
            mtime_ms: 0,
            ctime_ms: 0,
            version: 1,
            content: None,
        }
    }

    #[test]
    fn a_lookup_that_overlapped_a_change_is_not_remembered() {
        let l = Lookups::default();
        let ticket = l.recall(7, &[1; 32]).unwrap_err();
        l.forget(7, &[&[2; 32]]);
        l.remember(ticket, &node(7, 10, 1));
        assert!(l.recall(7, &[1; 32]).is_err());
        let ticket = l.recall(7, &[1; 32]).unwrap_err();
        l.remember(ticket, &node(7, 10, 1));
        assert_eq!(l.recall(7, &[1; 32]).unwrap().id, 10);
    }

    #[test]
    fn forgetting_one_name_keeps_the_others_and_tenants_are_apart() {
        let l = Lookups::default();
        for (tenant, id, index) in [(7, 10, 1), (7, 11, 2), (8, 12, 1)] {
            let ticket = l.recall(tenant, &[index; 32]).unwrap_err();
            l.remember(ticket, &node(tenant, id, index));
        }
        l.forget(7, &[&[1; 32]]);
        assert!(l.recall(7, &[1; 32]).is_err());
        assert_eq!(l.recall(7, &[2; 32]).unwrap().id, 11);
        assert_eq!(l.recall(8, &[1; 32]).unwrap().id, 12);
    }

    #[test]
    fn entries_expire() {
        let l = Lookups::default();
        let ticket = l.recall(7, &[1; 32]).unwrap_err();
        l.remember(ticket, &node(7, 10, 1));
        std::thread::sleep(TTL + Duration::from_millis(20));
        assert!(l.recall(7, &[1; 32]).is_err());
    }
}
