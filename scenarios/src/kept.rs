//! Where the scenarios' caches keep the copies of the calls that do not
//! leak. The value of a call that leaks (a slice of its field) stays for
//! good in the business's own map, as the guide's `cache.Store` (inserted
//! where the handler runs, which is what a holder chain names); a copy
//! goes to a bounded cache, an [`Lru`] of [`COPIES_KEPT`].
//!
//! A fix that copies what it keeps into a map keyed by call ids that never
//! repeat still grows, by one small entry per call: at 400 calls/s, some
//! 40 KiB/s, as fast as the slow leaks that a sweep labels as leaks. The
//! copies are therefore kept as a service's cache keeps them, bounded (the
//! guide: after the copy, "review the business code" that keeps parsed
//! objects), so that a fix labelled `none` does not grow.

use std::collections::{BTreeMap, HashMap};

/// Copies a cache keeps. 1024 one-byte copies with their map entries are
/// about 100 KiB, reached within 3 s at the default 400 calls/s: less than
/// half of the 256 KiB that the diagnosis needs to see grow before it
/// names a leak (its floor at the default sampling rate), so the plateau of
/// a fix is no finding.
pub(crate) const COPIES_KEPT: usize = 1024;

/// A least-recently-used map of at most `capacity` values keyed by call
/// id, with the bytes of the values as the code counts them.
pub(crate) struct Lru<V> {
    capacity: usize,
    tick: u64,
    entries: HashMap<i64, (u64, V, usize)>,
    order: BTreeMap<u64, i64>,
    value_bytes: usize,
}

impl<V> Lru<V> {
    pub(crate) fn new(capacity: usize) -> Lru<V> {
        Lru { capacity: capacity.max(1), tick: 0, entries: HashMap::new(), order: BTreeMap::new(), value_bytes: 0 }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Bytes of the values, as given to [`Lru::insert`].
    pub(crate) fn value_bytes(&self) -> usize {
        self.value_bytes
    }

    /// Inserts (or refreshes) `key` with a value of `bytes` bytes, evicting
    /// the least recently used entry beyond the capacity.
    pub(crate) fn insert(&mut self, key: i64, value: V, bytes: usize) {
        self.tick += 1;
        self.value_bytes += bytes;
        if let Some((old_tick, _, old_bytes)) = self.entries.insert(key, (self.tick, value, bytes)) {
            self.order.remove(&old_tick);
            self.value_bytes -= old_bytes;
        }
        self.order.insert(self.tick, key);
        while self.entries.len() > self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else { break };
            if let Some((_, _, b)) = self.entries.remove(&oldest) {
                self.value_bytes -= b;
            }
        }
    }

    /// The value of `key`, without marking it used.
    pub(crate) fn peek(&self, key: i64) -> Option<&V> {
        self.entries.get(&key).map(|(_, v, _)| v)
    }

    /// The value of `key`, marking it used.
    #[cfg(test)]
    pub(crate) fn get(&mut self, key: i64) -> Option<&V> {
        self.tick += 1;
        let tick = self.tick;
        let (t, v, _) = self.entries.get_mut(&key)?;
        self.order.remove(t);
        *t = tick;
        self.order.insert(tick, key);
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_evicts_the_least_recently_used() {
        let mut lru = Lru::new(2);
        lru.insert(1, "a", 1);
        lru.insert(2, "bb", 2);
        assert!(lru.get(1).is_some());
        lru.insert(3, "ccc", 3);
        assert_eq!(lru.len(), 2);
        assert!(lru.get(2).is_none(), "2 was the least recently used");
        assert_eq!(lru.value_bytes(), 4);
        lru.insert(1, "dddd", 4);
        assert_eq!((lru.len(), lru.value_bytes()), (2, 7));
    }
}
