//! [`Profiler`]: the `GlobalAlloc` wrapper and its hook.
//!
//! The hook runs on every allocation and must not allocate, block or
//! re-enter itself. Its paths:
//!
//! ```text
//! alloc ──► fast path? allocated + size < limit in the thread's line
//!           │ yes: allocated += size, allocations += 1 ────► inner.alloc (tail call)
//!           ▼ no (slow path)
//!           inner.alloc ─► count bytes and block
//!                          │ in_profiler? ──yes──► done (profiler's own)
//!                          │ settings changed? ──► reseed, fresh countdown
//!                          │ size < countdown? ──► not sampled (holder mode: indexed)
//!                          ▼
//!                 record_sample: capture stack ─► intern stack ─► bucket
//!                                ─► sampled set insert ─► bucket.alloc += 1
//!                                (a full table drops the sample, counted)
//!
//! dealloc ──► fast path? the thread's line is open to frees, or blocks are
//!             │          recorded and the filter says "not this one"
//!             │ yes: freed += size ─────────────────────────► inner.dealloc (tail call)
//!             ▼ no: count bytes ─► sampled set remove? ─► bucket.free += 1
//!                   ─► nothing recorded? open the line to frees ─► inner.dealloc
//! ```
//!
//! The fast path of an allocation is Go's: one compare and one add on the
//! thread's line of counts (see `counts.rs`), where the same add counts the
//! bytes; an increment beside it counts the block. Everything else closes the line (its limit is 0) so that the
//! next allocation takes the slow path: a thread without an index or inside
//! the profiler uses a line that is always closed; holder mode closes every
//! line at once, so that it indexes every block from the moment it is on;
//! a change of rate or seed closes the line of the thread that made it.
//! Other threads see the new rate or seed when their countdown runs out: at
//! their next sample, or within [`OFF_RECHECK`] bytes at rate 0, as Go's
//! `MemProfileRate` applies at each thread's next sample.
//!
//! Both fast paths end in a tail call of the inner allocator, so an
//! allocation is counted before it is made: one that the inner allocator
//! refuses (returns null) stays counted (see [`Stats::allocated_bytes`]).
//!
//! Nothing here takes a lock: the tables are lock-free (see `table.rs`) and
//! the only waits are compare-and-swap retries on a slot.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::counts::{Counts, Line};
use crate::encode::Stacks;
use crate::profile::{Profile, SampleType};
use crate::sampler::{self, InProfiler, ThreadState, BUCKETS_SEEN, CONFIG_STAMP, THREAD};
use crate::snapshot::{HeapRecord, Snapshot};
use crate::stack;
use crate::table::{Dropped, Full, LazyState, State, MAX_DEPTH, OWN, SAMPLED};

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

/// The countdown of a thread at rate 0: nothing is sampled, but the thread
/// takes the slow path once per this many bytes, and so sees a new rate
/// set by another thread within that many bytes of allocation.
pub(crate) const OFF_RECHECK: u64 = 256 * 1024;

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
/// The struct itself holds each thread's byte counts and countdown: one
/// cache line per thread slot (255, and one always closed) and per shard
/// (16), about 17 KiB. The tables of samples live in one anonymous mapping
/// of about 36 MiB of address space, made at the first sample; only pages
/// that samples touch become resident (on the order of 4 KiB per distinct
/// stack or live sampled block, at most the whole mapping).
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
    pub(crate) counts: Counts,
    /// Bytes of the profiler's own blocks (see [`OWN`]) allocated and freed.
    own_allocated: AtomicU64,
    own_freed: AtomicU64,
    /// The profiler's own blocks in the set of sampled blocks.
    own_blocks: AtomicUsize,
    /// Entries in the set of sampled blocks (sampled, indexed or own),
    /// counted before an insert and after a removal: at 0 a free need not
    /// look at the set.
    recorded: AtomicUsize,
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
            counts: Counts::new(),
            own_allocated: AtomicU64::new(0),
            own_freed: AtomicU64::new(0),
            own_blocks: AtomicUsize::new(0),
            recorded: AtomicUsize::new(0),
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
    /// sampled earlier are still recorded). Takes effect at once on the
    /// calling thread and on threads that have not allocated yet; on each
    /// other thread at its next sample, as Go's `MemProfileRate` does, or,
    /// if the rate was 0, within 256 KiB of its allocations. Set it once at
    /// start: samples already taken are scaled with the rate in force when a
    /// profile is written, as in Go.
    pub fn set_rate(&self, rate: usize) {
        self.init_from_env();
        self.rate.store(rate.min(RATE_UNSET - 1), Ordering::Relaxed);
        // Release: a thread that sees the new stamp sees the new rate.
        CONFIG_STAMP.fetch_add(1, Ordering::Release);
        self.force_slow_path();
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
    /// they next take a sample, or allocate for the first time; the calling
    /// thread at once). Without it, seeds come from the clock.
    pub fn set_seed(&self, seed: u64) {
        self.init_from_env();
        self.seed.store(seed, Ordering::Relaxed);
        self.seed_ordinal.store(0, Ordering::Relaxed);
        self.seeded.store(true, Ordering::Release);
        CONFIG_STAMP.fetch_add(1, Ordering::Release);
        self.force_slow_path();
    }

    /// Bytes the program holds through this allocator now, counted on every
    /// allocation and free (not estimated from samples; exact as
    /// [`Stats::allocated_bytes`] says). In holder mode the profiler's own
    /// blocks (symbol caches, profiles being built, holder scans' records)
    /// are left out: they are not the program's memory, and they grow as
    /// holder profiles name more code. Outside it they are counted (keeping
    /// track of them costs an index entry each).
    /// Costs two relaxed loads per thread slot ever used (at most 255), plus
    /// 34.
    pub fn inuse_bytes(&self) -> u64 {
        self.stats().inuse_bytes()
    }

    /// Blocks ever allocated through this allocator, counted on every
    /// allocation (not estimated from samples): what an allocations-per-call
    /// figure divides. A `realloc` counts as one; the profiler's own blocks
    /// (profiles being built) are in. Exact as [`Stats::allocated_bytes`]
    /// says. Costs one relaxed load per thread slot ever used (at most
    /// 255), plus 16.
    pub fn allocations(&self) -> u64 {
        self.counts.allocations()
    }

    /// Blocks and bytes allocated through this allocator by the calling
    /// thread so far, or `None` if the thread has no line of its own (more
    /// than 255 threads at once, or the thread is exiting). Two readings on
    /// one thread tell exactly what that thread allocated in between
    /// ([`Allocated::since`]): what a piece of synchronous code costs, such
    /// as building a profile for a scrape.
    ///
    /// ```
    /// # use profiler::Profiler;
    /// # #[global_allocator]
    /// # static PROFILER: Profiler = Profiler::new();
    /// let before = PROFILER.thread_allocated().unwrap();
    /// let v = std::hint::black_box(vec![0u8; 100]);
    /// let cost = PROFILER.thread_allocated().unwrap().since(before);
    /// assert_eq!((cost.blocks, cost.bytes), (1, 100));
    /// # drop(v);
    /// ```
    pub fn thread_allocated(&self) -> Option<Allocated> {
        THREAD.with(|t| self.counts.line(t).map(|l| Allocated { blocks: l.allocations(), bytes: l.allocated_bytes() }))
    }

    /// Bytes of the profiler's own blocks live now.
    fn own_bytes(&self) -> u64 {
        let freed = self.own_freed.load(Ordering::Relaxed);
        self.own_allocated.load(Ordering::Relaxed).saturating_sub(freed)
    }

    /// Counters for metrics and for checking the profiler itself.
    pub fn stats(&self) -> Stats {
        let (allocated_bytes, freed_bytes, allocations) = self.counts.totals();
        let state = self.state.get();
        Stats {
            allocated_bytes,
            freed_bytes,
            allocations,
            own_bytes: self.own_bytes(),
            rate: self.rate(),
            live_samples: self.recorded.load(Ordering::Relaxed).saturating_sub(self.own_blocks.load(Ordering::Relaxed)),
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
                CONFIG_STAMP.fetch_add(1, Ordering::Release);
                rate
            }
            Err(other) => other,
        }
    }

    /// The fast path of an allocation of `size` bytes, before the inner
    /// allocator is called: true if the block is not sampled and nothing
    /// else is to be done, and then it is counted.
    #[inline(always)]
    fn alloc_fast(&self, size: usize) -> bool {
        THREAD.with(|t| self.counts.try_alloc(t, size))
    }

    /// An allocation that does not take the fast path, from the inner
    /// allocator's call on (`zeroed`: `alloc_zeroed`).
    ///
    /// # Safety
    /// The contract of [`GlobalAlloc::alloc`].
    #[cold]
    #[inline(never)]
    unsafe fn alloc_slow(layout: Layout, zeroed: bool, this: &Self) -> *mut u8
    where
        A: GlobalAlloc,
    {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which
        // is also `alloc_zeroed`'s.
        let ptr = unsafe {
            if zeroed {
                this.inner.alloc_zeroed(layout)
            } else {
                this.inner.alloc(layout)
            }
        };
        if !ptr.is_null() {
            THREAD.with(|t| this.on_alloc_slow(t, ptr, layout.size()));
        }
        ptr
    }

    /// Accounts a new block (after the inner allocator made it) and decides
    /// whether to sample it; in holder mode every block is also indexed
    /// with its stack.
    #[inline]
    fn on_alloc(&self, ptr: *mut u8, size: usize) {
        THREAD.with(|t| {
            if !self.counts.try_alloc(t, size) {
                self.on_alloc_slow(t, ptr, size);
            }
        });
    }

    /// Everything but "not sampled, nothing else to do": see the module doc.
    #[inline(never)]
    fn on_alloc_slow(&self, t: &ThreadState, ptr: *mut u8, size: usize) {
        let line = self.counts.line(t);
        let countdown = line.map_or(t.countdown.get(), |l| l.countdown());
        let holder_mode = self.holder_mode.load(Ordering::Relaxed);
        if t.in_profiler.get() {
            // Counted, never sampled, and the countdown stays where it was;
            // the line stays closed until the thread leaves the profiler.
            self.count_alloc(t, line, size, countdown, false);
            if holder_mode {
                self.note_own(ptr as usize, size);
            }
            return;
        }
        let (sampled, next) = self.count_down(t, size as u64, countdown);
        self.count_alloc(t, line, size, next, true);
        if !sampled && !holder_mode {
            return;
        }
        let was = t.enter();
        self.record_sample(t, ptr as usize, size, sampled);
        t.leave(was);
    }

    /// Counts `size` bytes allocated by `t` and sets its countdown to `next`
    /// (`open`: the fast path may be taken again).
    fn count_alloc(&self, t: &ThreadState, line: Option<&Line>, size: usize, next: u64, open: bool) {
        match line {
            Some(line) => self.counts.allocate(line, size, next, open),
            None => {
                self.counts.shard_allocated(t, size);
                t.countdown.set(next);
            }
        }
    }

    /// Go's decision for an allocation of `size` bytes on the slow path,
    /// with `countdown` bytes left before the next sample, under the
    /// settings in force: whether to sample it, and the countdown after it.
    fn count_down(&self, t: &ThreadState, size: u64, mut countdown: u64) -> (bool, u64) {
        if self.rate.load(Ordering::Relaxed) == RATE_UNSET {
            self.init_from_env();
        }
        // Acquire: the rate and seed stored before the stamp was bumped.
        let stamp = CONFIG_STAMP.load(Ordering::Acquire);
        let rate = self.rate.load(Ordering::Relaxed) as u64;
        if t.stamp.get() != stamp {
            self.reseed(t, stamp);
            countdown = if rate == 0 { OFF_RECHECK } else { sampler::next_sample(&t.rng, rate) };
        }
        if size < countdown {
            (false, countdown - size)
        } else if rate == 0 {
            (false, OFF_RECHECK)
        } else {
            (true, sampler::next_sample(&t.rng, rate))
        }
    }

    /// Sends the calling thread's next allocation through this profiler to
    /// the slow path, which sees new settings.
    fn force_slow_path(&self) {
        THREAD.with(|t| {
            t.countdown.set(0);
            if let Some(line) = self.counts.line_if_any(t) {
                line.close();
            }
        });
    }

    /// Marks a block the profiler allocated for itself, so that
    /// [`Profiler::inuse_bytes`] leaves it out and scans skip it.
    #[cold]
    fn note_own(&self, addr: usize, size: usize) {
        if let Some(state) = self.state.get_or_init() {
            if self.record(state, addr, OWN) {
                self.own_allocated.fetch_add(size as u64, Ordering::Relaxed);
                self.own_blocks.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    #[cold]
    fn reseed(&self, t: &ThreadState, stamp: u32) {
        let seed = if self.seeded.load(Ordering::Acquire) {
            let n = self.seed_ordinal.fetch_add(1, Ordering::Relaxed);
            self.seed.load(Ordering::Relaxed) ^ (u64::from(n) << 32 | u64::from(n))
        } else {
            sampler::entropy(t.ordinal())
        };
        t.reseed(seed, stamp);
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
                if !self.record(state, addr, bucket - 1) {
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
                    if self.record(state, addr, entry) {
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

    /// Adds the block `addr` to the set of recorded blocks (sampled,
    /// indexed or the profiler's own); false if the set is full.
    fn record(&self, state: &State, addr: usize, entry: u32) -> bool {
        // Counted before the entry is in: `recorded` is never 0 while an
        // entry is (see `free_fast`). SeqCst, then every line closed to
        // frees before the block is handed out: Dekker's handshake with a
        // thread that opens its line (see `counts.rs`).
        self.recorded.fetch_add(1, Ordering::SeqCst);
        self.counts.close_to_frees();
        let done = state.sampled.insert(addr, entry);
        if !done {
            self.recorded.fetch_sub(1, Ordering::Relaxed);
        }
        done
    }

    /// Removes the block `addr` from the set of recorded blocks and returns
    /// its entry, if it was there.
    fn unrecord(&self, addr: usize) -> Option<(&State, u32)> {
        if self.recorded.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let state = self.state.get()?;
        let entry = state.sampled.remove(addr)?;
        self.recorded.fetch_sub(1, Ordering::Relaxed);
        Some((state, entry))
    }

    /// The fast path of a free: if `ptr` is certainly not recorded (the
    /// thread's line is open to frees, none is, or the filter of the set
    /// says so), counts the bytes and returns true. The thread that frees a
    /// block has seen, through the program's own synchronization, the count,
    /// the closing of its line and the filter counter that went up before
    /// the block was recorded and handed out.
    #[inline(always)]
    fn free_fast(&self, ptr: *mut u8, size: usize) -> bool {
        THREAD.with(|t| self.counts.try_free(t, size) || self.free_checked(t, ptr, size))
    }

    /// A free on a thread whose line is closed to frees: as
    /// [`Profiler::free_fast`]. With nothing recorded it takes the slow
    /// path, which opens the line, so that the thread's next frees skip
    /// these checks (and this path keeps no register across a call).
    #[inline(always)]
    fn free_checked(&self, t: &ThreadState, ptr: *mut u8, size: usize) -> bool {
        self.recorded.load(Ordering::Relaxed) != 0
            && !self.state.get().is_some_and(|s| s.sampled.may_contain(ptr as usize))
            && self.counts.try_free_unrecorded(t, size)
    }

    /// A free that does not take the fast path, up to the inner
    /// allocator's call.
    ///
    /// # Safety
    /// The contract of [`GlobalAlloc::dealloc`].
    #[cold]
    #[inline(never)]
    unsafe fn dealloc_slow(ptr: *mut u8, layout: Layout, this: &Self)
    where
        A: GlobalAlloc,
    {
        THREAD.with(|t| this.counts.freed(t, layout.size()));
        if let Some((state, entry)) = this.unrecord(ptr as usize) {
            this.forget(state, entry, layout.size());
        }
        if this.recorded.load(Ordering::Relaxed) == 0 {
            THREAD.with(|t| this.counts.open_to_frees(t, &this.recorded));
        }
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { this.inner.dealloc(ptr, layout) }
    }

    /// Accounts the free of a block whose `entry` was just removed from the
    /// set of sampled blocks. Entries of blocks that were only indexed
    /// (holder mode) are not counted in their bucket.
    #[cold]
    fn forget(&self, state: &State, entry: u32, size: usize) {
        if entry & OWN != 0 {
            self.own_freed.fetch_add(size as u64, Ordering::Relaxed);
            self.own_blocks.fetch_sub(1, Ordering::Relaxed);
        } else if entry & SAMPLED != 0 {
            state.buckets.record_free(entry & !SAMPLED);
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
    #[inline(always)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !self.alloc_fast(layout.size()) {
            // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
            return unsafe { Self::alloc_slow(layout, false, self) };
        }
        // Counted already: a tail call, nothing to do after it (see
        // `Stats::allocated_bytes` for a block the inner allocator refuses).
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { self.inner.alloc(layout) }
    }

    /// # Safety
    /// The contract of [`GlobalAlloc::alloc_zeroed`].
    #[inline(always)]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !self.alloc_fast(layout.size()) {
            // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s
            // contract.
            return unsafe { Self::alloc_slow(layout, true, self) };
        }
        // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        unsafe { self.inner.alloc_zeroed(layout) }
    }

    /// # Safety
    /// The contract of [`GlobalAlloc::dealloc`].
    #[inline(always)]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !self.free_fast(ptr, layout.size()) {
            // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
            return unsafe { Self::dealloc_slow(ptr, layout, self) };
        }
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
        let sampled = self.unrecord(ptr as usize);
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        let new = unsafe { self.inner.realloc(ptr, layout, new_size) };
        if new.is_null() {
            // The old block is still the caller's: put its record back (if
            // the set is full now, account it as freed).
            if let Some((state, entry)) = sampled {
                if !self.record(state, ptr as usize, entry) {
                    self.forget(state, entry, layout.size());
                }
            }
            return new;
        }
        THREAD.with(|t| self.counts.freed(t, layout.size()));
        if let Some((state, entry)) = sampled {
            self.forget(state, entry, layout.size());
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

/// What one thread allocated so far, from [`Profiler::thread_allocated`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Allocated {
    /// Blocks (a `realloc` counts as one).
    pub blocks: u64,
    /// Their bytes.
    pub bytes: u64,
}

impl Allocated {
    /// What was allocated between `earlier` and this reading of the same
    /// thread.
    pub fn since(self, earlier: Allocated) -> Allocated {
        Allocated {
            blocks: self.blocks.saturating_sub(earlier.blocks),
            bytes: self.bytes.saturating_sub(earlier.bytes),
        }
    }
}

/// Counters of a [`Profiler`], from [`Profiler::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Bytes ever allocated through the profiler: every allocation that
    /// returned before the read began is in. Exact but for allocations
    /// the inner allocator refused that were smaller than their thread's
    /// sampling countdown: those are counted too. Rust aborts on a refused
    /// allocation unless the program asked with a fallible call
    /// (`try_reserve`), so this is normally none.
    pub allocated_bytes: u64,
    /// Bytes ever freed through the profiler (exact).
    pub freed_bytes: u64,
    /// Blocks ever allocated through the profiler, exact as
    /// `allocated_bytes` (a `realloc` counts as one): see
    /// [`Profiler::allocations`].
    pub allocations: u64,
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
    /// Bytes the program holds now (exact as `allocated_bytes` says):
    /// `allocated_bytes - freed_bytes` without the profiler's own blocks.
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
        assert_eq!((s.allocations, p.allocations()), (3, 3), "alloc, alloc_zeroed and realloc");
        let snap = p.snapshot();
        let (alloc, free): (u64, u64) =
            snap.records().iter().fold((0, 0), |(a, f), r| (a + r.alloc_bytes, f + r.free_bytes));
        assert_eq!((alloc, free), (4096 * 2 + 10_000, 4096 * 2 + 10_000));
    }

    #[test]
    fn a_thread_that_freed_while_nothing_was_recorded_still_forgets_a_sample() {
        // A thread frees while nothing is recorded, which opens its line to
        // frees; then a block is sampled on another thread and handed to it.
        // Its free must find the record, or the sample stays live for good.
        // Each round opens the line again first.
        let p = Profiler::new();
        let layout = Layout::from_size_align(64, 8).unwrap();
        let open = |p: &Profiler| THREAD.with(|t| p.counts.try_free(t, 0));
        let (to_freer, blocks) = std::sync::mpsc::channel::<(usize, usize)>();
        let (ack, acks) = std::sync::mpsc::channel::<bool>();
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: a valid layout; each block is freed once, with it,
                // by this thread only.
                unsafe {
                    p.set_rate(0);
                    p.dealloc(p.alloc(layout), layout);
                    ack.send(open(&p)).unwrap();
                    for (sampled, plain) in blocks {
                        p.dealloc(sampled as *mut u8, layout);
                        p.dealloc(plain as *mut u8, layout);
                        ack.send(open(&p)).unwrap();
                    }
                }
            });
            assert!(acks.recv().unwrap(), "a free with nothing recorded opens the thread's line");
            for round in 0..3 {
                // SAFETY: a valid layout; both blocks are freed by the other
                // thread, once.
                let (plain, sampled) = unsafe {
                    p.set_rate(0);
                    let plain = p.alloc(layout);
                    p.set_rate(1);
                    (plain, p.alloc(layout))
                };
                assert_eq!(p.stats().live_samples, 1, "round {round}: sampled at rate 1, not the block before");
                to_freer.send((sampled as usize, plain as usize)).unwrap();
                assert!(acks.recv().unwrap(), "round {round}: open again once nothing is recorded");
                assert_eq!(p.stats().live_samples, 0, "round {round}: the sample was forgotten when freed");
            }
            drop(to_freer);
        });
        assert_eq!(p.inuse_bytes(), 0);
        let freed: u64 = p.snapshot().records().iter().map(|r| r.free_objects).sum();
        assert_eq!(freed, 3);
    }

    #[test]
    fn a_line_closes_to_frees_when_a_block_is_recorded_around_its_opening() {
        let p = Profiler::new();
        p.set_rate(0);
        let layout = Layout::from_size_align(64, 8).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                THREAD.with(|t| {
                    // SAFETY: a valid layout; each block is freed once with it.
                    unsafe { p.dealloc(p.alloc(layout), layout) };
                    assert!(p.counts.try_free(t, 0), "opened: nothing recorded");
                    // A record counted after the opening closes it (a pass).
                    p.set_rate(1);
                    // SAFETY: as above.
                    let sampled = unsafe { p.alloc(layout) };
                    assert_eq!(p.stats().live_samples, 1);
                    assert!(!p.counts.try_free(t, 0), "a record closes what was opened before it");
                    // A record counted before the opening could be missed by
                    // the pass: the opener sees the count and takes its
                    // opening back.
                    p.counts.open_to_frees(t, &p.recorded);
                    assert!(!p.counts.try_free(t, 0), "an opening that sees a record closes again");
                    // SAFETY: as above.
                    unsafe { p.dealloc(sampled, layout) };
                    assert_eq!(p.stats().live_samples, 0);
                    p.counts.open_to_frees(t, &p.recorded);
                    assert!(p.counts.try_free(t, 0), "nothing recorded: it stays open");
                })
            });
        });
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

    #[test]
    fn the_hook_samples_with_go_probability() {
        // Through the fast and slow paths: blocks of 64 KiB at 512 KiB are
        // sampled with probability 1 - exp(-1/8).
        let p = Profiler::new();
        p.set_rate(DEFAULT_RATE);
        p.set_seed(0x5eed);
        let layout = Layout::from_size_align(64 * 1024, 8).unwrap();
        let n = 100_000u64;
        for _ in 0..n {
            // SAFETY: a valid layout; the block is freed at once with it.
            unsafe { p.dealloc(p.alloc(layout), layout) };
        }
        let sampled: u64 = p.snapshot().records().iter().map(|r| r.alloc_objects).sum();
        let expected = 1.0 - (-1.0f64 / 8.0).exp();
        let ratio = sampled as f64 / n as f64 / expected;
        assert!((ratio - 1.0).abs() < 0.03, "{sampled} sampled, {ratio} of the expected");
        assert_eq!(p.stats().inuse_bytes(), 0);
        assert_eq!(p.allocations(), n, "every block counted, sampled or not");
    }

    #[test]
    fn inuse_is_exact_across_threads_that_come_and_go() {
        // Blocks allocated on one thread and freed on another, by more
        // threads over time than there are slot indices.
        let p = Profiler::new();
        p.set_rate(DEFAULT_RATE);
        let layout = Layout::from_size_align(48, 8).unwrap();
        let mut handed: Vec<usize> = Vec::new();
        for round in 0..(crate::counts::SLOTS / 4 + 8) {
            let mine = std::mem::take(&mut handed);
            handed = std::thread::scope(|s| {
                let workers: Vec<_> = (0..4)
                    .map(|w| {
                        let theirs: Vec<usize> = mine.iter().copied().skip(w).step_by(4).collect();
                        let p = &p;
                        s.spawn(move || {
                            // SAFETY: a valid layout; each block is freed
                            // once, on whatever thread, with it.
                            unsafe {
                                for a in theirs {
                                    p.dealloc(a as *mut u8, layout);
                                }
                                (0..100).map(|_| p.alloc(layout) as usize).collect::<Vec<_>>()
                            }
                        })
                    })
                    .collect();
                workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
            });
            assert_eq!(p.inuse_bytes(), 48 * 400, "round {round}");
        }
        // SAFETY: as above.
        unsafe {
            for a in handed {
                p.dealloc(a as *mut u8, layout);
            }
        }
        let s = p.stats();
        assert_eq!((s.inuse_bytes(), s.allocated_bytes), (0, s.freed_bytes));
        assert_eq!(s.allocations, s.allocated_bytes / 48);
    }

    #[test]
    fn a_thread_reads_its_own_allocations() {
        let p = Profiler::new();
        p.set_rate(DEFAULT_RATE);
        let layout = Layout::from_size_align(64, 8).unwrap();
        let before = p.thread_allocated().expect("a line");
        let other = std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: a valid layout; the block is freed at once with it.
                unsafe { p.dealloc(p.alloc(layout), layout) };
                p.thread_allocated()
            })
            .join()
            .unwrap()
        });
        assert_eq!(other, Some(Allocated { blocks: 1, bytes: 64 }));
        for _ in 0..10 {
            // SAFETY: as above.
            unsafe { p.dealloc(p.alloc(layout), layout) };
        }
        let mine = p.thread_allocated().expect("a line").since(before);
        assert_eq!(mine, Allocated { blocks: 10, bytes: 640 }, "the other thread's is not mine");
        assert_eq!(p.allocations(), 11);
    }

    #[test]
    fn a_new_rate_reaches_a_thread_that_was_off() {
        let p = Profiler::new();
        p.set_rate(0);
        let layout = Layout::from_size_align(4096, 8).unwrap();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|s| {
            let p = &p;
            s.spawn(move || {
                // SAFETY: a valid layout; each block is freed at once with it.
                let churn = |n: u64| unsafe {
                    for _ in 0..n {
                        p.dealloc(p.alloc(layout), layout);
                    }
                };
                churn(10);
                ready_tx.send(()).unwrap();
                go_rx.recv().unwrap();
                // This thread only sees the new rate on its slow path, within
                // OFF_RECHECK bytes; from then on every block is sampled.
                churn(OFF_RECHECK / 4096 + 1);
                let before = p.stats().live_samples;
                // SAFETY: as above.
                let a = unsafe { p.alloc(layout) };
                assert_eq!(p.stats().live_samples, before + 1, "sampled at rate 1");
                // SAFETY: as above.
                unsafe { p.dealloc(a, layout) };
            });
            ready_rx.recv().unwrap();
            p.set_rate(1);
            go_tx.send(()).unwrap();
        });
    }

    #[test]
    fn holder_mode_reaches_a_thread_on_the_fast_path() {
        let p = Profiler::new();
        p.set_rate(0);
        let layout = Layout::from_size_align(64, 8).unwrap();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|s| {
            let p = &p;
            s.spawn(move || {
                // SAFETY: a valid layout; each block is freed once with it.
                unsafe {
                    p.dealloc(p.alloc(layout), layout);
                    ready_tx.send(()).unwrap();
                    go_rx.recv().unwrap();
                    let a = p.alloc(layout);
                    assert_eq!(p.stats().live_samples, 1, "indexed at once");
                    p.dealloc(a, layout);
                    assert_eq!(p.stats().live_samples, 0);
                }
            });
            ready_rx.recv().unwrap();
            p.set_holder_mode(true);
            go_tx.send(()).unwrap();
        });
    }
}
