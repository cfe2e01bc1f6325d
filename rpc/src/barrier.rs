//! The poller's per-slot scratch records for vectored I/O: Netpoll's
//! `barriers`, with the bug that Netpoll v0.2.5 fixed.
//!
//! Netpoll kept one record per event slot of its `epoll_wait` batch, each
//! with up to 32 buffer references for `readv`/`sendmsg`. The slot array
//! started at 128 and doubled whenever a wait returned a full batch, so a
//! surge of concurrent connections grew it. After the syscall the slot still
//! referenced the buffers it had used, and a slot is only overwritten when a
//! later event lands on the same index: buffers of connections long closed
//! stayed reachable. The fix clears the slot right after each syscall.
//!
//! tokio hands us no event batch, so a slot index here is a connection's
//! position among the connections open at once (the lowest free index,
//! taken when the connection opens and given back when it closes). Under a
//! surge this is what an event's position in a full batch amounts to: the
//! table grows with the peak of concurrent connections, later connections
//! reuse the low indices, and the high ones keep what the surge left there.
//!
//! ```text
//!   slots  [0: conn 7 ][1: conn 9 ][2: stale 1 MiB][3: stale 1 MiB] ... 127
//!           in use       in use     closed conns' buffers, legacy mode only
//! ```
//!
//! ```
//! use rpc::{BarrierMode, Barriers};
//! let barriers = Barriers::new(BarrierMode::Fixed);
//! let slot = barriers.acquire();
//! assert_eq!(slot.index(), 0);
//! assert_eq!(barriers.stats().slots, 128);
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use crate::pool::ChunkRef;

/// Buffer references one record keeps, as in Netpoll (`barriercap`).
pub const SLOT_REFS: usize = 32;
const INITIAL_SLOTS: usize = 128;
const MAX_SLOTS: usize = 128 * 1024;

/// Whether a slot lets go of its buffers after the syscall.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BarrierMode {
    /// Netpoll before v0.2.5: references stay until the slot is reused.
    Legacy,
    /// Netpoll since v0.2.5: the slot is cleared right after each syscall.
    /// Nothing can look at a slot during its syscall, so a fixed slot here
    /// takes no reference at all (see [`SlotGuard::io`]).
    #[default]
    Fixed,
}

impl std::str::FromStr for BarrierMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "legacy" => Ok(BarrierMode::Legacy),
            "fixed" => Ok(BarrierMode::Fixed),
            other => Err(format!("unknown barrier mode {other:?} (legacy or fixed)")),
        }
    }
}

/// A buffer reference a slot can hold.
#[derive(Debug)]
pub enum Held {
    /// A pooled chunk (a read reservation or an output node).
    Chunk(ChunkRef),
    /// Caller memory linked in without a copy (a NoCopy write).
    Bytes(Bytes),
}

impl Held {
    fn size(&self) -> usize {
        match self {
            Held::Chunk(c) => c.size(),
            Held::Bytes(b) => b.len(),
        }
    }
}

/// One record: up to [`SLOT_REFS`] positions, each a buffer reference.
#[derive(Debug)]
struct Slot {
    held: Vec<Option<Held>>,
}

struct Table {
    slots: Vec<Arc<Mutex<Slot>>>,
    free: BTreeSet<usize>,
}

struct Inner {
    mode: BarrierMode,
    table: Mutex<Table>,
}

/// The slot table, shared by every connection of a server or client.
#[derive(Clone)]
pub struct Barriers {
    inner: Arc<Inner>,
}

impl fmt::Debug for Barriers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barriers").field("mode", &self.inner.mode).field("stats", &self.stats()).finish()
    }
}

fn new_slot() -> Arc<Mutex<Slot>> {
    Arc::new(Mutex::new(Slot { held: (0..SLOT_REFS).map(|_| None).collect() }))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Barriers {
    /// A table of 128 slots.
    pub fn new(mode: BarrierMode) -> Barriers {
        let slots = (0..INITIAL_SLOTS).map(|_| new_slot()).collect();
        Barriers {
            inner: Arc::new(Inner { mode, table: Mutex::new(Table { slots, free: (0..INITIAL_SLOTS).collect() }) }),
        }
    }

    /// Legacy or fixed.
    pub fn mode(&self) -> BarrierMode {
        self.inner.mode
    }

    /// Takes the lowest free slot for a new connection, doubling the table
    /// when every slot is taken (a full batch), up to 128 K slots. Past that
    /// the connection gets a private record that nothing else sees.
    pub fn acquire(&self) -> SlotGuard {
        let mut t = lock(&self.inner.table);
        if t.free.is_empty() && t.slots.len() < MAX_SLOTS {
            let old = t.slots.len();
            let new = (old * 2).min(MAX_SLOTS);
            t.slots.extend((old..new).map(|_| new_slot()));
            t.free.extend(old..new);
        }
        match t.free.pop_first() {
            Some(index) => SlotGuard { barriers: Some(self.clone()), index, slot: t.slots[index].clone() },
            None => SlotGuard { barriers: None, index: usize::MAX, slot: new_slot() },
        }
    }

    /// Size of the table and what its slots still reference.
    pub fn stats(&self) -> BarriersStats {
        // One lock for both lengths: the table may grow between two.
        let (slots, in_use) = {
            let t = lock(&self.inner.table);
            (t.slots.clone(), t.slots.len() - t.free.len())
        };
        let mut stats = BarriersStats { slots: slots.len(), in_use, held_refs: 0, held_bytes: 0 };
        for slot in &slots {
            let s = lock(slot);
            stats.held_refs += s.held.iter().flatten().count();
            stats.held_bytes += s.held.iter().flatten().map(Held::size).sum::<usize>();
        }
        stats
    }
}

/// What the slot table holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BarriersStats {
    /// Slots in the table.
    pub slots: usize,
    /// Slots taken by open connections.
    pub in_use: usize,
    /// Buffer references held across all slots.
    pub held_refs: usize,
    /// Bytes those references keep alive (chunk sizes; lengths for linked
    /// caller memory).
    pub held_bytes: usize,
}

/// A connection's slot. Dropping it gives the index back; what the slot
/// references stays there (legacy) until another connection's I/O lands on
/// the same index.
pub struct SlotGuard {
    barriers: Option<Barriers>,
    index: usize,
    slot: Arc<Mutex<Slot>>,
}

impl fmt::Debug for SlotGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotGuard").field("index", &self.index).finish()
    }
}

impl SlotGuard {
    /// Whether the slot is cleared after each syscall (fixed mode, or a
    /// private record).
    pub fn clears(&self) -> bool {
        self.barriers.as_ref().is_none_or(|b| b.inner.mode == BarrierMode::Fixed)
    }

    /// The slot's index in the table.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Runs one vectored syscall `io` with the slot referencing the buffers
    /// `held` gives, as Netpoll's `readv`/`sendmsg` did: the references go
    /// into the first positions of the record, overwriting what those
    /// positions held; the positions after them keep what earlier, longer
    /// syscalls left there.
    ///
    /// ```text
    ///   writev of a reply   [hdr node][256 KiB body][ - ]...
    ///   then a readv        [in node ][256 KiB body][ - ]...   legacy: body stays
    /// ```
    ///
    /// A slot that [`clears`](Self::clears) would hold the references only
    /// while the syscall runs, under the record's lock, where nothing can
    /// see them ([`Barriers::stats`] takes the same lock): the caller keeps
    /// the buffers alive for the syscall anyway. So it takes neither the
    /// lock nor the references, and `held` is not called: a fixed slot
    /// costs nothing per syscall, as Netpoll's fixed slot costs a store of
    /// `nil` per position.
    #[inline]
    pub fn io<R, I: IntoIterator<Item = Held>>(&self, held: impl FnOnce() -> I, io: impl FnOnce() -> R) -> R {
        if self.clears() {
            return io();
        }
        let mut slot = lock(&self.slot);
        for (position, h) in slot.held.iter_mut().zip(held()) {
            *position = Some(h);
        }
        io()
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if let Some(b) = &self.barriers {
            lock(&b.inner.table).free.insert(self.index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::{Pool, PoolConfig, Taker};

    #[test]
    fn table_doubles_when_every_slot_is_taken() {
        let b = Barriers::new(BarrierMode::Fixed);
        let guards: Vec<_> = (0..129).map(|_| b.acquire()).collect();
        assert_eq!(b.stats().slots, 256);
        assert_eq!(b.stats().in_use, 129);
        assert_eq!(guards[128].index(), 128);
        drop(guards);
        assert_eq!(b.stats().in_use, 0);
        assert_eq!(b.acquire().index(), 0, "lowest free index first");
    }

    fn held_after_close(mode: BarrierMode) -> (usize, usize) {
        let pool = Pool::new(PoolConfig::default());
        let b = Barriers::new(mode);
        let slots: Vec<_> = (0..4).map(|_| b.acquire()).collect();
        for s in &slots {
            let chunk = pool.lease(1 << 20, Taker::ConnRead);
            s.io(|| [Held::Chunk(chunk.hold())], || ());
        }
        drop(slots);
        (b.stats().held_bytes, pool.stats().leased_bytes)
    }

    #[test]
    fn legacy_slots_keep_closed_connections_buffers() {
        assert_eq!(held_after_close(BarrierMode::Legacy), (4 << 20, 4 << 20));
    }

    #[test]
    fn fixed_slots_let_go_after_the_syscall() {
        assert_eq!(held_after_close(BarrierMode::Fixed), (0, 0));
    }

    #[test]
    fn a_fixed_slot_takes_no_reference_and_no_lock() {
        let pool = Pool::new(PoolConfig::default());
        let chunk = pool.lease(4096, Taker::ConnRead);
        let fixed = Barriers::new(BarrierMode::Fixed);
        let s = fixed.acquire();
        let mut asked = false;
        // `stats` takes the record's lock: it would wait forever inside a
        // syscall that held it.
        let during = s.io(
            || {
                asked = true;
                [Held::Chunk(chunk.hold())]
            },
            || (fixed.stats().held_refs, pool.leases()[0].slot_refs),
        );
        assert_eq!(during, (0, 0));
        assert!(!asked, "the references are not even made");

        let legacy = Barriers::new(BarrierMode::Legacy);
        let s = legacy.acquire();
        s.io(|| [Held::Chunk(chunk.hold())], || ());
        assert_eq!((legacy.stats().held_refs, pool.leases()[0].slot_refs), (1, 1));
    }

    #[test]
    fn a_shorter_syscall_overwrites_only_the_positions_it_uses() {
        let pool = Pool::new(PoolConfig::default());
        let b = Barriers::new(BarrierMode::Legacy);
        let s = b.acquire();
        let header = pool.lease(4096, Taker::Encode);
        let body = bytes::Bytes::from(vec![1u8; 256 << 10]);
        s.io(|| [Held::Chunk(header.hold()), Held::Bytes(body)], || ());
        drop(header);
        s.io(|| [Held::Chunk(pool.lease(8192, Taker::ConnRead).hold())], || ());
        let stats = b.stats();
        assert_eq!(stats.held_refs, 2);
        assert_eq!(stats.held_bytes, 8192 + (256 << 10), "the reply body survives the next read");
    }

    #[test]
    fn reuse_of_an_index_overwrites_what_it_held() {
        let pool = Pool::new(PoolConfig::default());
        let b = Barriers::new(BarrierMode::Legacy);
        let s = b.acquire();
        s.io(|| [Held::Chunk(pool.lease(1 << 20, Taker::ConnRead).hold())], || ());
        drop(s);
        let s = b.acquire();
        s.io(|| [Held::Chunk(pool.lease(4096, Taker::ConnRead).hold())], || ());
        assert_eq!(pool.stats().leased_bytes, 4096);
    }
}
