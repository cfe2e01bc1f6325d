//! The fixed-capacity tables the allocator hook writes into.
//!
//! Everything here is lock-free and allocation-free: the tables live in one
//! anonymous memory mapping ([`State::map`]) made the first time a sample is
//! taken. Anonymous memory starts zeroed and every field is an atomic whose
//! zero value means "empty", so a fresh mapping is a valid, empty [`State`].
//! Only the pages that are written become resident.
//!
//! ```text
//!            intern(frames)             find_or_insert(stack, size)
//! capture ─────────────────► StackTable ───────────────────────────► BucketTable
//!                           (id per distinct    (id per stack and block size,
//!                            call stack)          four counters each)
//!
//! sampled block address ──insert/remove──► SampledSet (address → bucket id)
//! ```
//!
//! Stacks and buckets are append-only: a record is written first, then
//! published by a `Release` compare-and-swap of its id into an open-addressing
//! index; readers find it with an `Acquire` load. Two threads that publish the
//! same key at once both write a record and one of them is wasted; this is
//! rare, bounded by the capacity, and never blocks anyone.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};

/// Deepest stack kept, in frames.
pub(crate) const MAX_DEPTH: usize = 64;

/// Distinct call stacks the table can hold.
pub(crate) const STACK_CAPACITY: usize = 1 << 15;
const STACK_INDEX_SLOTS: usize = STACK_CAPACITY * 2;
/// Frames of all distinct stacks together.
const FRAME_ARENA: usize = 1 << 21;

/// Distinct (stack, block size) pairs the table can hold.
pub(crate) const BUCKET_CAPACITY: usize = 1 << 17;
const BUCKET_INDEX_SLOTS: usize = BUCKET_CAPACITY * 2;

/// Sampled blocks that can be live at once.
pub(crate) const SAMPLED_CAPACITY: usize = SET_GROUPS * SET_WAYS;
const SET_WAYS: usize = 8;
const SET_GROUPS: usize = 1 << 17;
/// Counters of the filter in front of the set: 256 KiB, so that with a few
/// thousand sampled blocks live (a heap of some GiB at the default rate)
/// about one free in a hundred has to look further.
const FILTER_BITS: u32 = 18;
const FILTER_SLOTS: usize = 1 << FILTER_BITS;
/// A filter counter that reached this stays there: it no longer counts, it
/// only says "maybe" for good.
const FILTER_STUCK: u8 = u8::MAX;

/// The key of a [`SampledSet`] slot being filled (no block starts at
/// address 1).
const CLAIMED: usize = 1;

/// Set in a [`SampledSet`] entry whose block was sampled (counted in its
/// bucket); clear for a block only indexed in holder mode.
pub(crate) const SAMPLED: u32 = 1 << 31;

/// Set in a [`SampledSet`] entry whose block the profiler itself allocated
/// (while building a profile or a scan): not the program's memory.
pub(crate) const OWN: u32 = 1 << 30;

/// Why a sample could not be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    Stacks,
    Buckets,
    Sampled,
}

/// Counters of samples that were dropped, by cause.
#[repr(C)]
pub(crate) struct Dropped {
    pub stacks_full: AtomicU64,
    pub buckets_full: AtomicU64,
    pub sampled_full: AtomicU64,
    pub no_state: AtomicU64,
}

impl Dropped {
    pub(crate) const fn new() -> Self {
        Dropped {
            stacks_full: AtomicU64::new(0),
            buckets_full: AtomicU64::new(0),
            sampled_full: AtomicU64::new(0),
            no_state: AtomicU64::new(0),
        }
    }

    pub(crate) fn count(&self, why: Full) {
        let counter = match why {
            Full::Stacks => &self.stacks_full,
            Full::Buckets => &self.buckets_full,
            Full::Sampled => &self.sampled_full,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn total(&self) -> u64 {
        self.stacks_full.load(Ordering::Relaxed)
            + self.buckets_full.load(Ordering::Relaxed)
            + self.sampled_full.load(Ordering::Relaxed)
            + self.no_state.load(Ordering::Relaxed)
    }
}

/// All tables of one profiler. Valid when all-zero (see the module doc).
#[repr(C)]
pub(crate) struct State {
    pub stacks: StackTable,
    pub buckets: BucketTable,
    pub sampled: SampledSet,
}

/// `len` bytes of fresh, zeroed, page-aligned memory from an anonymous
/// private mapping, or `None` if the kernel refuses. Calls no allocator, so
/// the hook and a forked child may use it.
pub(crate) fn map_zeroed(len: usize) -> Option<*mut u8> {
    // SAFETY: an anonymous private mapping at an address the kernel chooses
    // touches no existing memory; the result is checked below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    (p != libc::MAP_FAILED).then_some(p.cast())
}

impl State {
    /// Maps a fresh, zeroed `State` with `mmap`, or returns null if the
    /// kernel refuses. Makes no call to any allocator.
    pub(crate) fn map() -> *mut State {
        map_zeroed(std::mem::size_of::<State>()).map_or(std::ptr::null_mut(), |p| p.cast())
    }

    /// Unmaps a `State` made by [`State::map`].
    ///
    /// # Safety
    /// `state` must come from [`State::map`], not be unmapped yet, and no
    /// reference to it may be used afterwards.
    pub(crate) unsafe fn unmap(state: *mut State) {
        // SAFETY: the caller guarantees that `state` is a live mapping of
        // exactly `size_of::<State>()` bytes made by `State::map`.
        unsafe {
            libc::munmap(state.cast(), std::mem::size_of::<State>());
        }
    }

    /// Bytes of address space one `State` reserves.
    #[cfg(test)]
    pub(crate) const fn reserved_bytes() -> usize {
        std::mem::size_of::<State>()
    }
}

/// 64-bit finalizer of splitmix64: spreads nearby addresses over the table.
#[inline]
pub(crate) fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

pub(crate) fn hash_frames(frames: &[usize]) -> u64 {
    let mut h = 0x9e37_79b9_7f4a_7c15u64 ^ frames.len() as u64;
    for &f in frames {
        h = mix64(h ^ f as u64);
    }
    h
}

/// Distinct call stacks, each stored once in a shared frame arena.
#[repr(C)]
pub(crate) struct StackTable {
    /// Open-addressing index by stack hash: 0 = empty, else `id + 1`.
    index: [AtomicU32; STACK_INDEX_SLOTS],
    next_id: AtomicU32,
    next_frame: AtomicU32,
    hash: [AtomicU64; STACK_CAPACITY],
    /// `start << 32 | len` into `frames`.
    span: [AtomicU64; STACK_CAPACITY],
    frames: [AtomicUsize; FRAME_ARENA],
}

impl StackTable {
    /// Returns the id of `frames`, adding the stack if it is new; `None` if
    /// the table or the frame arena is full.
    pub(crate) fn intern(&self, frames: &[usize]) -> Result<u32, Full> {
        let hash = hash_frames(frames);
        let mut mine: Option<u32> = None;
        let mut i = hash as usize & (STACK_INDEX_SLOTS - 1);
        for _ in 0..STACK_INDEX_SLOTS {
            let mut slot = self.index[i].load(Ordering::Acquire);
            if slot == 0 {
                let id = match mine {
                    Some(id) => id,
                    None => {
                        let id = self.write_record(hash, frames)?;
                        mine = Some(id);
                        id
                    }
                };
                // Release publishes the record written above.
                match self.index[i].compare_exchange(0, id + 1, Ordering::Release, Ordering::Acquire) {
                    Ok(_) => return Ok(id),
                    Err(other) => slot = other,
                }
            }
            let id = slot - 1;
            if self.equals(id, hash, frames) {
                return Ok(id);
            }
            i = (i + 1) & (STACK_INDEX_SLOTS - 1);
        }
        Err(Full::Stacks)
    }

    fn write_record(&self, hash: u64, frames: &[usize]) -> Result<u32, Full> {
        if self.next_id.load(Ordering::Relaxed) as usize >= STACK_CAPACITY
            || self.next_frame.load(Ordering::Relaxed) as usize + frames.len() > FRAME_ARENA
        {
            return Err(Full::Stacks);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if id as usize >= STACK_CAPACITY {
            return Err(Full::Stacks);
        }
        let start = self.next_frame.fetch_add(frames.len() as u32, Ordering::Relaxed) as usize;
        if start + frames.len() > FRAME_ARENA {
            return Err(Full::Stacks);
        }
        for (slot, &f) in self.frames[start..start + frames.len()].iter().zip(frames) {
            slot.store(f, Ordering::Relaxed);
        }
        self.hash[id as usize].store(hash, Ordering::Relaxed);
        self.span[id as usize].store((start as u64) << 32 | frames.len() as u64, Ordering::Relaxed);
        Ok(id)
    }

    fn equals(&self, id: u32, hash: u64, frames: &[usize]) -> bool {
        let id = id as usize;
        if self.hash[id].load(Ordering::Relaxed) != hash {
            return false;
        }
        let (start, len) = self.span(id);
        len == frames.len()
            && self.frames[start..start + len].iter().zip(frames).all(|(a, &b)| a.load(Ordering::Relaxed) == b)
    }

    fn span(&self, id: usize) -> (usize, usize) {
        let span = self.span[id].load(Ordering::Relaxed);
        ((span >> 32) as usize, (span & 0xffff_ffff) as usize)
    }

    /// Copies the frames of a published stack into `out`.
    pub(crate) fn frames_of(&self, id: u32, out: &mut Vec<usize>) {
        let (start, len) = self.span(id as usize);
        out.extend(self.frames[start..start + len].iter().map(|f| f.load(Ordering::Relaxed)));
    }

    /// Number of distinct stacks published so far.
    pub(crate) fn len(&self) -> usize {
        (self.next_id.load(Ordering::Relaxed) as usize).min(STACK_CAPACITY)
    }
}

/// Counters of one (stack, block size) pair: Go's `memRecord`.
#[repr(C)]
pub(crate) struct Bucket {
    stack: AtomicU32,
    _pad: u32,
    size: AtomicUsize,
    alloc_objects: AtomicU64,
    alloc_bytes: AtomicU64,
    free_objects: AtomicU64,
    free_bytes: AtomicU64,
}

/// What a snapshot reads of one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BucketCounts {
    pub stack: u32,
    pub size: usize,
    pub alloc_objects: u64,
    pub alloc_bytes: u64,
    pub free_objects: u64,
    pub free_bytes: u64,
}

/// Buckets keyed by (stack id, block size).
#[repr(C)]
pub(crate) struct BucketTable {
    /// Open-addressing index: 0 = empty, else `id + 1`.
    index: [AtomicU32; BUCKET_INDEX_SLOTS],
    next_id: AtomicU32,
    buckets: [Bucket; BUCKET_CAPACITY],
}

impl BucketTable {
    fn key_hash(stack: u32, size: usize) -> u64 {
        mix64((stack as u64) << 40 ^ size as u64 ^ 0x5851_f42d_4c95_7f2d)
    }

    /// Returns the id of the bucket for `(stack, size)`, adding it if new.
    pub(crate) fn find_or_insert(&self, stack: u32, size: usize) -> Result<u32, Full> {
        let mut mine: Option<u32> = None;
        let mut i = Self::key_hash(stack, size) as usize & (BUCKET_INDEX_SLOTS - 1);
        for _ in 0..BUCKET_INDEX_SLOTS {
            let mut slot = self.index[i].load(Ordering::Acquire);
            if slot == 0 {
                let id = match mine {
                    Some(id) => id,
                    None => {
                        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                        if id as usize >= BUCKET_CAPACITY {
                            self.next_id.store(BUCKET_CAPACITY as u32, Ordering::Relaxed);
                            return Err(Full::Buckets);
                        }
                        let b = &self.buckets[id as usize];
                        b.stack.store(stack, Ordering::Relaxed);
                        b.size.store(size, Ordering::Relaxed);
                        mine = Some(id);
                        id
                    }
                };
                // Release publishes the key written above.
                match self.index[i].compare_exchange(0, id + 1, Ordering::Release, Ordering::Acquire) {
                    Ok(_) => return Ok(id),
                    Err(other) => slot = other,
                }
            }
            let id = slot - 1;
            let b = &self.buckets[id as usize];
            if b.stack.load(Ordering::Relaxed) == stack && b.size.load(Ordering::Relaxed) == size {
                return Ok(id);
            }
            i = (i + 1) & (BUCKET_INDEX_SLOTS - 1);
        }
        Err(Full::Buckets)
    }

    pub(crate) fn record_alloc(&self, id: u32) {
        let b = &self.buckets[id as usize];
        b.alloc_bytes.fetch_add(b.size.load(Ordering::Relaxed) as u64, Ordering::Relaxed);
        // Release pairs with the Acquire in `read`: a reader that sees this
        // object also sees its bytes.
        b.alloc_objects.fetch_add(1, Ordering::Release);
    }

    pub(crate) fn record_free(&self, id: u32) {
        let b = &self.buckets[id as usize];
        b.free_bytes.fetch_add(b.size.load(Ordering::Relaxed) as u64, Ordering::Release);
        // Release (both): the allocation of this block happened before its
        // free (the program handed the pointer over), so a reader that
        // acquires this free also sees the allocation it undoes, and never
        // reads free > alloc.
        b.free_objects.fetch_add(1, Ordering::Release);
    }

    /// Reads every published bucket. Frees are read before allocations, so
    /// `free_* <= alloc_*` holds in each result (not enforced here, so that
    /// a bug that counts a free twice shows).
    pub(crate) fn for_each(&self, mut f: impl FnMut(BucketCounts)) {
        for slot in &self.index {
            let slot = slot.load(Ordering::Acquire);
            if slot == 0 {
                continue;
            }
            let b = &self.buckets[(slot - 1) as usize];
            let free_objects = b.free_objects.load(Ordering::Acquire);
            let free_bytes = b.free_bytes.load(Ordering::Acquire);
            let alloc_objects = b.alloc_objects.load(Ordering::Acquire);
            let alloc_bytes = b.alloc_bytes.load(Ordering::Relaxed);
            f(BucketCounts {
                stack: b.stack.load(Ordering::Relaxed),
                size: b.size.load(Ordering::Relaxed),
                alloc_objects,
                alloc_bytes,
                free_objects,
                free_bytes,
            });
        }
    }

    pub(crate) fn len(&self) -> usize {
        (self.next_id.load(Ordering::Relaxed) as usize).min(BUCKET_CAPACITY)
    }

    /// The stack id and block size of bucket `id` (zeros if out of range).
    pub(crate) fn key(&self, id: u32) -> (u32, usize) {
        match self.buckets.get(id as usize) {
            Some(b) => (b.stack.load(Ordering::Relaxed), b.size.load(Ordering::Relaxed)),
            None => (0, 0),
        }
    }
}

/// The set of live sampled blocks: address → bucket id.
///
/// Two-choice hashing into groups of eight slots (one cache line of keys), so
/// there are no probe chains and no tombstones: a key lives in one of exactly
/// two groups, and removing it just clears its slot. A counting filter in
/// front lets a free of an unsampled block (the common case) return after one
/// load, without touching the groups: one byte per hash of the address
/// (a multiply and a shift), counting the entries with that hash. It never
/// says "none" wrongly: a counter goes up before its entry is in and down
/// after it is out, and one that would overflow sticks at its maximum.
///
/// Correctness rests on the allocator contract: an address is inserted after
/// the inner allocator returned it and removed before it is given back, so at
/// most one live entry per address exists, and the thread that frees a block
/// has seen (through the program's own synchronization) everything the
/// allocating thread did before returning it.
#[repr(C)]
pub(crate) struct SampledSet {
    filter: [AtomicU8; FILTER_SLOTS],
    keys: [AtomicUsize; SAMPLED_CAPACITY],
    vals: [AtomicU32; SAMPLED_CAPACITY],
}

impl SampledSet {
    /// The first slots of the two groups `addr` may live in.
    fn groups(addr: usize) -> (usize, usize) {
        let h = mix64(addr as u64);
        let g1 = (h as usize) & (SET_GROUPS - 1);
        let g2 = ((h >> 24) as usize) & (SET_GROUPS - 1);
        (g1 * SET_WAYS, g2 * SET_WAYS)
    }

    /// The filter counter of `addr`: Fibonacci hashing, whose top bits
    /// depend on every bit of the address.
    #[inline]
    fn filter_slot(addr: usize) -> usize {
        ((addr as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - FILTER_BITS)) as usize
    }

    fn filter_add(&self, f: usize) {
        let _ =
            self.filter[f].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| (c != FILTER_STUCK).then(|| c + 1));
    }

    fn filter_sub(&self, f: usize) {
        let _ = self.filter[f]
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| (c != FILTER_STUCK && c != 0).then(|| c - 1));
    }

    /// Adds a sampled block; `false` if both of its groups are full.
    pub(crate) fn insert(&self, addr: usize, bucket: u32) -> bool {
        debug_assert!(addr != 0);
        let (g1, g2) = Self::groups(addr);
        let f = Self::filter_slot(addr);
        // Count in the filter first so that the entry is never present while
        // the filter says "none".
        self.filter_add(f);
        for g in [g1, g2] {
            for i in g..g + SET_WAYS {
                if self.keys[i].load(Ordering::Relaxed) == 0
                    // Acquire: a slot freed by `remove` is reused only after
                    // that remover has read its value. The slot is claimed
                    // with `CLAIMED` and its key published after its value,
                    // so that a reader that sees the key (a forked scan)
                    // also sees the value that goes with it.
                    && self.keys[i].compare_exchange(0, CLAIMED, Ordering::Acquire, Ordering::Relaxed).is_ok()
                {
                    self.vals[i].store(bucket, Ordering::Relaxed);
                    self.keys[i].store(addr, Ordering::Release);
                    return true;
                }
            }
        }
        self.filter_sub(f);
        false
    }

    /// False if `addr` is certainly not in the set: the filter counts no
    /// entry of its hash. Exact for the thread that is about to free `addr`
    /// (see the type's doc).
    #[inline]
    pub(crate) fn may_contain(&self, addr: usize) -> bool {
        self.filter[Self::filter_slot(addr)].load(Ordering::Relaxed) != 0
    }

    /// Removes `addr` if it is a live sampled block and returns its bucket.
    pub(crate) fn remove(&self, addr: usize) -> Option<u32> {
        if !self.may_contain(addr) {
            return None;
        }
        let (g1, g2) = Self::groups(addr);
        for g in [g1, g2] {
            for i in g..g + SET_WAYS {
                if self.keys[i].load(Ordering::Relaxed) == addr {
                    let bucket = self.vals[i].load(Ordering::Relaxed);
                    // Release: the value was read before the slot can be
                    // taken again (pairs with the Acquire in `insert`).
                    self.keys[i].store(0, Ordering::Release);
                    self.filter_sub(Self::filter_slot(addr));
                    return Some(bucket);
                }
            }
        }
        None
    }

    /// Calls `f(address, bucket)` for every live entry. Allocates nothing,
    /// so it can run in a forked child. An entry being inserted at the same
    /// moment may be seen with the bucket of the slot's previous owner.
    pub(crate) fn for_each_entry(&self, mut f: impl FnMut(usize, u32)) {
        for (key, val) in self.keys.iter().zip(self.vals.iter()) {
            let addr = key.load(Ordering::Acquire);
            if addr != 0 && addr != CLAIMED {
                f(addr, val.load(Ordering::Relaxed));
            }
        }
    }
}

/// A `State` made on first use, shared by all threads.
#[derive(Debug)]
pub(crate) struct LazyState {
    ptr: std::sync::atomic::AtomicPtr<State>,
    failed: AtomicBool,
}

impl LazyState {
    pub(crate) const fn new() -> Self {
        LazyState { ptr: std::sync::atomic::AtomicPtr::new(std::ptr::null_mut()), failed: AtomicBool::new(false) }
    }

    /// The state if it was made already.
    #[inline]
    pub(crate) fn get(&self) -> Option<&State> {
        let p = self.ptr.load(Ordering::Acquire);
        // SAFETY: a non-null pointer here was published by `get_or_init`
        // from `State::map`, whose zeroed memory is a valid `State`; it stays
        // mapped until `drop`, which has `&mut self`.
        unsafe { p.as_ref() }
    }

    /// The state, made now if needed; `None` if the kernel refused memory.
    pub(crate) fn get_or_init(&self) -> Option<&State> {
        if let Some(s) = self.get() {
            return Some(s);
        }
        if self.failed.load(Ordering::Relaxed) {
            return None;
        }
        let fresh = State::map();
        if fresh.is_null() {
            self.failed.store(true, Ordering::Relaxed);
            return None;
        }
        if let Err(_winner) =
            self.ptr.compare_exchange(std::ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire)
        {
            // SAFETY: `fresh` came from `State::map` and was never published.
            unsafe { State::unmap(fresh) };
        }
        self.get()
    }
}

impl Drop for LazyState {
    fn drop(&mut self) {
        let p = *self.ptr.get_mut();
        if !p.is_null() {
            // SAFETY: `p` came from `State::map`; `&mut self` proves no
            // reference to it is alive.
            unsafe { State::unmap(p) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> LazyState {
        let s = LazyState::new();
        assert!(s.get_or_init().is_some());
        s
    }

    #[test]
    fn reserves_what_the_docs_say() {
        // The crate doc promises "about 36 MiB of address space".
        let mib = State::reserved_bytes() as f64 / (1 << 20) as f64;
        assert!((34.0..38.0).contains(&mib), "{mib} MiB");
    }

    #[test]
    fn stacks_are_interned_once() {
        let s = state();
        let t = &s.get().unwrap().stacks;
        let a = t.intern(&[1, 2, 3]).unwrap();
        let b = t.intern(&[1, 2, 4]).unwrap();
        let empty = t.intern(&[]).unwrap();
        assert_ne!(a, b);
        assert_ne!(a, empty);
        assert_eq!(t.intern(&[1, 2, 3]).unwrap(), a);
        assert_eq!(t.intern(&[]).unwrap(), empty);
        let mut out = Vec::new();
        t.frames_of(b, &mut out);
        assert_eq!(out, [1, 2, 4]);
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn buckets_key_on_stack_and_size() {
        let s = state();
        let t = &s.get().unwrap().buckets;
        let a = t.find_or_insert(7, 100).unwrap();
        let b = t.find_or_insert(7, 200).unwrap();
        assert_ne!(a, b);
        assert_eq!(t.find_or_insert(7, 100).unwrap(), a);
        t.record_alloc(a);
        t.record_alloc(a);
        t.record_free(a);
        let mut seen = Vec::new();
        t.for_each(|c| seen.push(c));
        seen.sort_by_key(|c| c.size);
        assert_eq!(
            seen[0],
            BucketCounts { stack: 7, size: 100, alloc_objects: 2, alloc_bytes: 200, free_objects: 1, free_bytes: 100 }
        );
        assert_eq!(seen[1].alloc_objects, 0);
    }

    #[test]
    fn sampled_set_insert_remove() {
        let s = state();
        let set = &s.get().unwrap().sampled;
        assert_eq!(set.remove(0x1000), None);
        for a in (1..10_000usize).map(|i| i * 16) {
            assert!(set.insert(a, a as u32));
        }
        let len = |set: &SampledSet| {
            let mut n = 0;
            set.for_each_entry(|_, _| n += 1);
            n
        };
        assert_eq!(len(set), 9_999);
        assert_eq!(set.remove(16 * 20_000), None);
        for a in (1..10_000usize).map(|i| i * 16) {
            assert_eq!(set.remove(a), Some(a as u32), "{a}");
            assert_eq!(set.remove(a), None);
        }
        assert_eq!(len(set), 0);
        assert!(set.filter.iter().all(|f| f.load(Ordering::Relaxed) == 0));
    }

    #[test]
    fn a_full_filter_counter_sticks() {
        let s = state();
        let set = &s.get().unwrap().sampled;
        let f = SampledSet::filter_slot(0x1000);
        for _ in 0..300 {
            set.filter_add(f);
        }
        for _ in 0..300 {
            set.filter_sub(f);
        }
        assert_eq!(set.filter[f].load(Ordering::Relaxed), FILTER_STUCK, "it no longer knows its count");
        let other = SampledSet::filter_slot(0x2000);
        assert_ne!(other, f);
        set.filter_add(other);
        set.filter_sub(other);
        assert_eq!(set.filter[other].load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_filter_spreads_nearby_blocks() {
        // 4096 blocks of 64 bytes side by side take nearly as many counters.
        let mut slots: Vec<usize> =
            (0..4096usize).map(|i| SampledSet::filter_slot(0x5555_0000_0000 + i * 64)).collect();
        slots.sort_unstable();
        slots.dedup();
        assert!(slots.len() > 4000, "{}", slots.len());
    }

    #[test]
    fn concurrent_stack_interning_agrees() {
        let s = state();
        let t = &s.get().unwrap().stacks;
        let ids: Vec<Vec<u32>> = std::thread::scope(|scope| {
            let hs: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| (0..2000usize).map(|i| t.intern(&[i, i + 1, 42]).unwrap()).collect()))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for other in &ids[1..] {
            assert_eq!(other, &ids[0]);
        }
    }
}
