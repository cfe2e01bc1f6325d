//! [`Profiler`]: the `GlobalAlloc` wrapper and its hook.
//!
//! The hook runs on every allocation and must not allocate, block or
//! re-enter itself. Its paths:
//!
//! ```text
//! alloc ──► inner.alloc ──► count bytes (per-thread shard)
//!                             │ in_profiler? ──yes──► done (profiler's own)
//!                             │ countdown -= size, > 0? ──yes──► done (fast path)
//!                             ▼
//!                    record_sample: capture stack ─► intern stack ─► bucket
//!                                   ─► sampled set insert ─► bucket.alloc += 1
//!                                   (a full table drops the sample, counted)
//!
//! dealloc ──► count bytes ─► sampled set remove? ─► bucket.free += 1 ─► inner.dealloc
//!                            (filter says "none": one load, done)
//! ```
//!
//! Nothing here takes a lock: the tables are lock-free (see `table.rs`) and
//! the only waits are compare-and-swap retries on a slot.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::encode::Stacks;
use crate::profile::{Profile, SampleType};
use crate::sampler::{self, InProfiler, ThreadState, BUCKETS_SEEN, CONFIG_STAMP, THREAD};
use crate::snapshot::{HeapRecord, Snapshot};
use crate::stack;
use crate::table::{Dropped, Full, LazyState, MAX_DEPTH, OWN, SAMPLED};

/// Frames kept of a block indexed only for holder scans (not sampled):
/// enough to reach from the allocator, through the machinery, to the code
/// that asked and the decoding or handler frames above it.
const HOLDER_DEPTH: usize = 32;

/// Go's default `runtime.MemProfileRate`: one sample per 512 KiB allocated.
pub const DEFAULT_RATE: usize = 512 * 1024;

/// Environment variable read at the first allocation: the starting rate in
/// bytes (0 = off, 1 = every allocation).
pub const RATE_ENV: &str = "LEAKLAB_PROFILE_RATE";

/// Environment variable read at the first allocation: a fixed seed for the
/// sampler, for reproducible profiles.
pub const SEED_ENV: &str = "LEAKLAB_PROFILE_SEED";

/// `rate` before the environment was read.
const RATE_UNSET: usize = usize::MAX;
const SHARDS: usize = 16;

/// Bytes allocated and freed by the threads that map to this shard.
#[repr(align(64))]
struct Shard {
    allocated: AtomicU64,
    freed: AtomicU64,
}

/// A sampling heap profiler that wraps an allocator (by default
/// [`System`]) and records who allocated what, like Go's runtime does.
///
/// Install it as the global allocator; see the [crate documentation](crate)
/// for rates, numbers and an example.
///
/// ```
/// use profiler::Profiler;
///
/// #[global_allocator]
/// static PROFILER: Profiler = Profiler::new();
///
/// let v = vec![0u8; 1 << 20];
/// assert!(PROFILER.inuse_bytes() >= 1 << 20);
/// drop(v);
/// ```
///
/// # Memory layout
/// The struct itself is small (a few cache lines of counters). The tables of
/// samples live in one anonymous mapping of about 36 MiB of address space,
/// made at the first sample; only pages that samples touch become resident
/// (on the order of 4 KiB per distinct stack or live sampled block, at
/// most the whole mapping).
pub struct Profiler<A = System> {
    inner: A,
    rate: AtomicUsize,
    initial_rate: usize,
    seed: AtomicU64,
    seeded: AtomicBool,
    seed_ordinal: AtomicU32,
    pub(crate) state: LazyState,
    pub(crate) holder_mode: AtomicBool,
    dropped: Dropped,
    shards: [Shard; SHARDS],
    /// Bytes of the profiler's own blocks (see [`OWN`]) allocated and freed.
    own_allocated: AtomicU64,
    own_freed: AtomicU64,
    /// The profiler's own blocks in the set of sampled blocks.
    own_blocks: AtomicUsize,
}

impl Profiler<System> {
    /// A profiler over the system allocator, at [`DEFAULT_RATE`] unless
    /// [`RATE_ENV`] says otherwise.
    pub const fn new() -> Self {
        Self::with_allocator(System)
    }
}

impl Default for Profiler<System> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A> Profiler<A> {
    /// A profiler over `inner`, at [`DEFAULT_RATE`] unless [`RATE_ENV`] says
    /// otherwise.
    pub const fn with_allocator(inner: A) -> Self {
        Profiler {
            inner,
            rate: AtomicUsize::new(RATE_UNSET),
            initial_rate: DEFAULT_RATE,
            seed: AtomicU64::new(0),
            seeded: AtomicBool::new(false),
            seed_ordinal: AtomicU32::new(0),
            state: LazyState::new(),
            holder_mode: AtomicBool::new(false),
            dropped: Dropped::new(),
            shards: [const { Shard { allocated: AtomicU64::new(0), freed: AtomicU64::new(0) } }; SHARDS],
            own_allocated: AtomicU64::new(0),
            own_freed: AtomicU64::new(0),
            own_blocks: AtomicUsize::new(0),
        }
    }

    /// The same profiler with another starting rate (used until the first
    /// allocation finds [`RATE_ENV`] set, or [`Profiler::set_rate`] is
    /// called).
    pub const fn with_rate(mut self, rate: usize) -> Self {
        if rate == RATE_UNSET {
            self.initial_rate = RATE_UNSET - 1;
        } else {
            self.initial_rate = rate;
        }
        self
    }

    /// Sets the sampling rate: the mean number of bytes allocated between two
    /// samples. 1 records every allocation, 0 records none (frees of blocks
    /// sampled earlier are still recorded). Takes effect on each thread at
    /// its next allocation. Set it once at start: samples already taken are
    /// scaled with the rate in force when a profile is written, as in Go.
    pub fn set_rate(&self, rate: usize) {
        self.init_from_env();
        self.rate.store(rate.min(RATE_UNSET - 1), Ordering::Relaxed);
        CONFIG_STAMP.fetch_add(1, Ordering::Relaxed);
    }

    /// The sampling rate in force.
    pub fn rate(&self) -> usize {
        match self.rate.load(Ordering::Relaxed) {
            RATE_UNSET => self.init_from_env(),
            r => r,
        }
    }

    /// Fixes the seed of the sampler, so that the same program makes the
    /// same sampling decisions (threads are seeded in the order in which
    /// they next allocate). Without it, seeds come from the clock.
    pub fn set_seed(&self, seed: u64) {
        self.init_from_env();
        self.seed.store(seed, Ordering::Relaxed);
        self.seed_ordinal.store(0, Ordering::Relaxed);
        self.seeded.store(true, Ordering::Release);
        CONFIG_STAMP.fetch_add(1, Ordering::Relaxed);
    }

    /// Bytes the program holds through this allocator now, counted exactly
    /// on every allocation and free (not estimated from samples). In holder
    /// mode the profiler's own blocks (symbol caches, profiles being built,
    /// holder scans' records) are left out: they are not the program's
    /// memory, and they grow as holder profiles name more code. Outside it
    /// they are counted (keeping track of them costs an index entry each).
    /// Costs 34 relaxed loads.
    pub fn inuse_bytes(&self) -> u64 {
        self.stats().inuse_bytes()
    }

    /// Bytes of the profiler's own blocks live now.
    fn own_bytes(&self) -> u64 {
        let freed = self.own_freed.load(Ordering::Relaxed);
        self.own_allocated.load(Ordering::Relaxed).saturating_sub(freed)
    }

    fn totals(&self) -> (u64, u64) {
        // Frees first: a block freed after this load was allocated before
        // the allocations are loaded, so the difference never goes negative
        // for a single thread's blocks.
        let freed: u64 = self.shards.iter().map(|s| s.freed.load(Ordering::Relaxed)).sum();
        let allocated: u64 = self.shards.iter().map(|s| s.allocated.load(Ordering::Relaxed)).sum();
        (allocated, freed)
    }

    /// Counters for metrics and for checking the profiler itself.
    pub fn stats(&self) -> Stats {
        let (allocated_bytes, freed_bytes) = self.totals();
        let state = self.state.get();
        Stats {
            allocated_bytes,
            freed_bytes,
            own_bytes: self.own_bytes(),
            rate: self.rate(),
            live_samples: state.map_or(0, |s| s.sampled.len()).saturating_sub(self.own_blocks.load(Ordering::Relaxed)),
            stacks: state.map_or(0, |s| s.stacks.len()),
            buckets: state.map_or(0, |s| s.buckets.len()),
            dropped_samples: self.dropped.total(),
        }
    }

    /// Copies what was sampled so far. Cheap: symbols are looked up only
    /// when the snapshot is turned into a [`Profile`].
    pub fn snapshot(&self) -> Snapshot {
        let _guard = InProfiler::enter();
        let rate = self.rate();
        let mut records = Vec::new();
        if let Some(state) = self.state.get() {
            state.buckets.for_each(|c| {
                if c.alloc_objects == 0 {
                    return;
                }
                let mut frames = Vec::new();
                state.stacks.frames_of(c.stack, &mut frames);
                records.push(HeapRecord {
                    frames,
                    size: c.size,
                    alloc_objects: c.alloc_objects,
                    alloc_bytes: c.alloc_bytes,
                    free_objects: c.free_objects,
                    free_bytes: c.free_bytes,
                });
            });
        }
        let d = &self.dropped;
        let dropped = [
            ("stack table full", &d.stacks_full),
            ("bucket table full", &d.buckets_full),
            ("sampled-block table full", &d.sampled_full),
            ("tables not mapped", &d.no_state),
        ]
        .into_iter()
        .map(|(cause, n)| (cause, n.load(Ordering::Relaxed)))
        .filter(|&(_, n)| n > 0)
        .collect();
        Snapshot::new(rate, records).with_dropped(dropped)
    }

    /// The heap profile as Go's `/debug/pprof/heap` serves it (default
    /// sample type `inuse_space`), stacks from the site.
    pub fn heap_profile(&self) -> Profile {
        self.profile(SampleType::InuseSpace, Stacks::FromSite)
    }

    /// The same data as Go's `/debug/pprof/allocs` serves it (default
    /// sample type `alloc_space`), stacks from the site.
    pub fn allocs_profile(&self) -> Profile {
        self.profile(SampleType::AllocSpace, Stacks::FromSite)
    }

    /// The profile now, with `default` as the sample type tools show first
    /// and stacks as `stacks` says ([`Stacks::Full`] for the allocation
    /// machinery too).
    pub fn profile(&self, default: SampleType, stacks: Stacks) -> Profile {
        let _own = InProfiler::enter();
        self.snapshot().to_profile(default, stacks)
    }

    /// Reads [`RATE_ENV`] and [`SEED_ENV`] once; returns the rate in force.
    #[cold]
    fn init_from_env(&self) -> usize {
        let current = self.rate.load(Ordering::Relaxed);
        if current != RATE_UNSET {
            return current;
        }
        let rate = read_env_u64(RATE_ENV).map_or(self.initial_rate, |r| r.min(RATE_UNSET as u64 - 1) as usize);
        if let Some(seed) = read_env_u64(SEED_ENV) {
            self.seed.store(seed, Ordering::Relaxed);
            self.seeded.store(true, Ordering::Release);
        }
        match self.rate.compare_exchange(RATE_UNSET, rate, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => {
                CONFIG_STAMP.fetch_add(1, Ordering::Relaxed);
                rate
            }
            Err(other) => other,
        }
    }

    #[inline]
    fn shard(&self, t: &ThreadState) -> &Shard {
        &self.shards[t.ordinal() as usize % SHARDS]
    }

    /// Accounts a new block and decides whether to sample it; in holder
    /// mode every block is also indexed with its stack.
    #[inline]
    fn on_alloc(&self, ptr: *mut u8, size: usize) {
        THREAD.with(|t| {
            self.shard(t).allocated.fetch_add(size as u64, Ordering::Relaxed);
            if t.in_profiler.get() {
                if self.holder_mode.load(Ordering::Relaxed) {
                    self.note_own(ptr as usize, size);
                }
                return;
            }
            let mut rate = self.rate.load(Ordering::Relaxed);
            if rate == RATE_UNSET {
                rate = self.init_from_env();
            }
            let sampled = rate != 0 && {
                let stamp = CONFIG_STAMP.load(Ordering::Relaxed);
                if t.stamp.get() != stamp {
                    self.reseed(t, stamp, rate as u64);
                }
                let countdown = t.countdown.get();
                if rate != 1 && (size as u64) < countdown {
                    t.countdown.set(countdown - size as u64);
                    false
                } else {
                    t.countdown.set(sampler::next_sample(&t.rng, rate as u64));
                    true
                }
            };
            if !sampled && !self.holder_mode.load(Ordering::Relaxed) {
                return;
            }
            t.in_profiler.set(true);
            self.record_sample(t, ptr as usize, size, sampled);
            t.in_profiler.set(false);
        });
    }

    /// Marks a block the profiler allocated for itself, so that
    /// [`Profiler::inuse_bytes`] leaves it out and scans skip it.
    #[cold]
    fn note_own(&self, addr: usize, size: usize) {
        if let Some(state) = self.state.get_or_init() {
            if state.sampled.insert(addr, OWN) {
                self.own_allocated.fetch_add(size as u64, Ordering::Relaxed);
                self.own_blocks.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    #[cold]
    fn reseed(&self, t: &ThreadState, stamp: u32, rate: u64) {
        let seed = if self.seeded.load(Ordering::Acquire) {
            let n = self.seed_ordinal.fetch_add(1, Ordering::Relaxed);
            self.seed.load(Ordering::Relaxed) ^ (u64::from(n) << 32 | u64::from(n))
        } else {
            sampler::entropy(t.ordinal())
        };
        t.reseed(seed, stamp, rate);
    }

    /// Records the block `addr` of `size` bytes with its stack: counted in
    /// its bucket if `sampled`, only indexed (holder mode) if not.
    #[cold]
    #[inline(never)]
    fn record_sample(&self, t: &ThreadState, addr: usize, size: usize, sampled: bool) {
        let Some(state) = self.state.get_or_init() else {
            self.dropped.no_state.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if self.holder_mode.load(Ordering::Relaxed) {
            crate::threads::register_current();
        }
        let mut frames = [0usize; MAX_DEPTH];
        let keep = if sampled { MAX_DEPTH } else { HOLDER_DEPTH };
        let depth = stack::capture(&mut frames[..keep], &t.stack_top);
        // Blocks only indexed for holder scans are named by their first
        // frames: the memo of this thread's recent stacks saves the shared
        // tables' probes and frame comparisons.
        let memo = (!sampled).then(|| {
            let key = crate::table::hash_frames(&frames[..depth]) ^ (size as u64).rotate_left(29);
            (key, &t.buckets_seen[key as usize % BUCKETS_SEEN])
        });
        if let Some((key, cell)) = memo {
            let (seen, bucket) = cell.get();
            if seen == key && bucket != 0 {
                if !state.sampled.insert(addr, bucket - 1) {
                    self.dropped.count(Full::Sampled);
                }
                return;
            }
        }
        let recorded =
            state.stacks.intern(&frames[..depth]).and_then(|stack| state.buckets.find_or_insert(stack, size)).and_then(
                |bucket| {
                    if let Some((key, cell)) = memo {
                        cell.set((key, bucket + 1));
                    }
                    let entry = if sampled { bucket | SAMPLED } else { bucket };
                    if state.sampled.insert(addr, entry) {
                        Ok(bucket)
                    } else {
                        Err(Full::Sampled)
                    }
                },
            );
        match recorded {
            Ok(bucket) if sampled => state.buckets.record_alloc(bucket),
            Ok(_) => {}
            Err(why) => self.dropped.count(why),
        }
    }

    /// Accounts a block about to be given back to the inner allocator.
    #[inline]
    fn on_free(&self, ptr: *mut u8, size: usize) {
        THREAD.with(|t| self.shard(t).freed.fetch_add(size as u64, Ordering::Relaxed));
        if let Some(state) = self.state.get() {
            if let Some(entry) = state.sampled.remove(ptr as usize) {
                if entry & OWN != 0 {
                    self.own_freed.fetch_add(size as u64, Ordering::Relaxed);
                    self.own_blocks.fetch_sub(1, Ordering::Relaxed);
                } else if entry & SAMPLED != 0 {
                    state.buckets.record_free(entry & !SAMPLED);
                }
            }
        }
    }
}

// SAFETY: every method forwards to `inner` with the caller's arguments and
// returns its result unchanged, so `inner`'s guarantees carry over. The
// bookkeeping around each call neither touches the memory of the block nor
// allocates, and the record of a block is removed before the block is given
// back, so that no other thread can get the same address while it is still
// recorded as sampled.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Profiler<A> {
    /// # Safety
    /// The contract of [`GlobalAlloc::alloc`].
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        let ptr = unsafe { self.inner.alloc(layout) };
        if !ptr.is_null() {
            self.on_alloc(ptr, layout.size());
        }
        ptr
    }

    /// # Safety
    /// The contract of [`GlobalAlloc::alloc_zeroed`].
    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        let ptr = unsafe { self.inner.alloc_zeroed(layout) };
        if !ptr.is_null() {
            self.on_alloc(ptr, layout.size());
        }
        ptr
    }

    /// # Safety
    /// The contract of [`GlobalAlloc::dealloc`].
    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.on_free(ptr, layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract: `ptr`
        // came from this allocator (hence from `inner`) with `layout`.
        unsafe { self.inner.dealloc(ptr, layout) }
    }

    /// # Safety
    /// The contract of [`GlobalAlloc::realloc`].
    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // As Go would see it: a free of the old block, then a new block with
        // its own sampling decision. The old record goes first, since the
        // inner realloc may hand `ptr` to another thread at once.
        let sampled = self.state.get().and_then(|s| s.sampled.remove(ptr as usize).map(|b| (s, b)));
        // Entries of blocks that were only indexed (holder mode) are not
        // counted in their bucket: put back or dropped, never freed there.
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        let new = unsafe { self.inner.realloc(ptr, layout, new_size) };
        if new.is_null() {
            // The old block is still the caller's: put its record back.
            if let Some((state, bucket)) = sampled {
                if !state.sampled.insert(ptr as usize, bucket) {
                    if bucket & OWN != 0 {
                        self.own_freed.fetch_add(layout.size() as u64, Ordering::Relaxed);
                        self.own_blocks.fetch_sub(1, Ordering::Relaxed);
                    } else if bucket & SAMPLED != 0 {
                        state.buckets.record_free(bucket & !SAMPLED);
                    }
                }
            }
            return new;
        }
        THREAD.with(|t| self.shard(t).freed.fetch_add(layout.size() as u64, Ordering::Relaxed));
        if let Some((state, entry)) = sampled {
            if entry & OWN != 0 {
                self.own_freed.fetch_add(layout.size() as u64, Ordering::Relaxed);
                self.own_blocks.fetch_sub(1, Ordering::Relaxed);
            } else if entry & SAMPLED != 0 {
                state.buckets.record_free(entry & !SAMPLED);
            }
        }
        self.on_alloc(new, new_size);
        new
    }
}

impl<A> fmt::Debug for Profiler<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Profiler").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

/// Counters of a [`Profiler`], from [`Profiler::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Bytes ever allocated through the profiler (exact).
    pub allocated_bytes: u64,
    /// Bytes ever freed through the profiler (exact).
    pub freed_bytes: u64,
    /// The sampling rate in force.
    pub rate: usize,
    /// Sampled blocks not freed yet.
    pub live_samples: usize,
    /// Distinct stacks recorded.
    pub stacks: usize,
    /// Distinct (stack, block size) buckets recorded.
    pub buckets: usize,
    /// Samples dropped because a fixed-size table was full.
    pub dropped_samples: u64,
    /// Bytes of the profiler's own blocks live now (part of
    /// `allocated_bytes - freed_bytes`).
    pub own_bytes: u64,
}

impl Stats {
    /// Bytes the program holds now (exact): `allocated_bytes - freed_bytes`
    /// without the profiler's own blocks.
    pub fn inuse_bytes(&self) -> u64 {
        self.allocated_bytes.saturating_sub(self.freed_bytes).saturating_sub(self.own_bytes)
    }
}

/// Reads a decimal environment variable without allocating (the hook may be
/// the caller), with `libc::getenv`.
fn read_env_u64(name: &str) -> Option<u64> {
    let mut cname = [0u8; 32];
    if name.len() >= cname.len() {
        return None;
    }
    cname[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: `cname` is NUL-terminated; getenv returns null or a pointer to
    // a NUL-terminated string in the environment, read at once below. It is
    // only called the first time a profiler is used, normally before the
    // program has threads that could change the environment.
    let value = unsafe { libc::getenv(cname.as_ptr().cast()) };
    if value.is_null() {
        return None;
    }
    // SAFETY: getenv returned a valid NUL-terminated string.
    let bytes = unsafe { std::ffi::CStr::from_ptr(value) }.to_bytes();
    parse_u64(bytes)
}

fn parse_u64(bytes: &[u8]) -> Option<u64> {
    let trimmed = bytes.trim_ascii();
    if trimmed.is_empty() {
        return None;
    }
    trimmed.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_env_values() {
        assert_eq!(parse_u64(b"524288"), Some(524_288));
        assert_eq!(parse_u64(b" 1 "), Some(1));
        assert_eq!(parse_u64(b"0"), Some(0));
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"12k"), None);
        assert_eq!(parse_u64(b"99999999999999999999999"), None);
    }

    #[test]
    fn a_local_profiler_samples_and_frees() {
        // Not installed as the global allocator: called directly.
        let p = Profiler::new();
        p.set_rate(1);
        let layout = Layout::from_size_align(4096, 8).unwrap();
        // SAFETY: a valid, non-zero layout; each block is freed once with it.
        unsafe {
            let a = p.alloc(layout);
            let b = p.alloc_zeroed(layout);
            assert!(!a.is_null() && !b.is_null());
            assert_eq!(p.inuse_bytes(), 8192);
            assert_eq!(p.stats().live_samples, 2);
            let c = p.realloc(a, layout, 10_000);
            assert_eq!(p.inuse_bytes(), 4096 + 10_000);
            assert_eq!(p.stats().live_samples, 2);
            p.dealloc(b, layout);
            p.dealloc(c, Layout::from_size_align(10_000, 8).unwrap());
        }
        let s = p.stats();
        assert_eq!((s.inuse_bytes(), s.live_samples, s.dropped_samples), (0, 0, 0));
        let snap = p.snapshot();
        let (alloc, free): (u64, u64) =
            snap.records().iter().fold((0, 0), |(a, f), r| (a + r.alloc_bytes, f + r.free_bytes));
        assert_eq!((alloc, free), (4096 * 2 + 10_000, 4096 * 2 + 10_000));
    }

    #[test]
    fn holder_mode_indexes_without_counting() {
        let p = Profiler::new();
        p.set_rate(0);
        p.set_holder_mode(true);
        let layout = Layout::from_size_align(4096, 8).unwrap();
        // SAFETY: a valid layout; each block is freed once with it.
        unsafe {
            let a = p.alloc(layout);
            let b = p.realloc(a, layout, 8192);
            assert_eq!(p.stats().live_samples, 1, "indexed");
            assert!(p.snapshot().records().iter().all(|r| r.alloc_objects == 0), "not counted");
            p.dealloc(b, Layout::from_size_align(8192, 8).unwrap());
        }
        assert_eq!(p.stats().live_samples, 0);
        assert!(p.snapshot().records().iter().all(|r| r.alloc_objects == 0 && r.free_objects == 0));
    }

    #[test]
    fn rate_zero_is_off() {
        let p = Profiler::new();
        p.set_rate(0);
        let layout = Layout::from_size_align(1 << 20, 8).unwrap();
        // SAFETY: a valid layout; the block is freed once with it.
        unsafe {
            let a = p.alloc(layout);
            assert_eq!(p.stats().live_samples, 0);
            p.dealloc(a, layout);
        }
        assert_eq!(p.snapshot().records().len(), 0);
    }
}
