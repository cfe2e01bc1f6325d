//! Each thread's bytes, allocations and sampling countdown, kept where the
//! thread can update them without a shared atomic operation and where
//! readers can still sum them exactly.
//!
//! A thread takes a slot index the first time it allocates or frees, out
//! of [`SLOTS`] shared by the process. Every [`Counts`] (one per profiler)
//! has one cache line per index, a [`Line`], whose counts only the thread
//! holding the index writes, with plain loads and stores (no `lock`
//! prefix); other threads only close it (`limit`, `frees_open`):
//!
//! ```text
//!            allocated ──────────► next ≥ limit     freed          allocations
//!   bytes the thread allocated   the next sample     bytes it freed  blocks it allocated
//!   (only grows)                 is due here         (only grows)    (only grows)
//!
//! fast path of an allocation:  if allocated + size < limit { allocated += size; allocations += 1 }
//! fast path of a free:         if frees_open { freed += size }
//! ```
//!
//! `next - allocated` is Go's `nextSample` countdown, so the test that
//! decides "not sampled" also counts the bytes: one load, one add, one
//! compare and one store; the count of blocks, on the same cache line, is
//! one increment more. `limit` is `next`, or 0 to send the thread to the
//! slow path (holder mode, or new settings on this thread). Readers sum
//! `allocated`, `freed` and `allocations` over the lines of every index ever taken, plus
//! the shards; each is one word that only grows, so the sums are exact with
//! no lock and no retry.
//!
//! A thread inside the profiler, or without an index, uses the last line,
//! [`CLOSED`], whose `limit` stays 0: its allocations always take the slow
//! path, and the fast path needs no test of the index. Holder mode closes
//! the fast path of every thread at once: it sets every line's `limit` to
//! 0 after setting [`Counts::closed`], and a slow path that opens a line
//! again checks the flag after a fence (see [`Counts::allocate`]).
//!
//! Indices are given back when their thread exits, and the next thread
//! continues the same lines:
//!
//! ```text
//! thread ──first call──► claim index i (CAS in OWNERS) ─► pthread key = i + 1
//!   ▼ exit: key destructor ─► the thread uses the shards from now on
//!                          ─► OWNERS[i] = free (Release)
//! next thread ─► claim i (Acquire): adds to the same sums, and goes on with
//!                the countdown where the last one left it (exponential
//!                distances are memoryless, so sampling stays unbiased)
//! ```
//!
//! A thread with no index (all taken, or past its exit) takes the slow
//! path each time: its countdown is in its [`ThreadState`], its bytes go to
//! one of [`SHARDS`] shared counters with an atomic add.
//!
//! `frees_open` says that the line's thread may free a block without asking
//! whether it is recorded (sampled, indexed or the profiler's own): no
//! recorded block may be freed through an open line. The line's thread
//! opens it when it frees while nothing is recorded; whoever records a
//! block closes, before the block is handed out, every line opened before
//! the record was counted, and a line opened after that closes itself. Both
//! sides publish in the order of Dekker's handshake, so that one of them
//! sees the other:
//!
//! ```text
//! open (the line's thread)                 record (any thread)
//!   frees_open = true                        recorded += 1          (SeqCst)
//!   opened += 1                  (SeqCst)    g = opened             (SeqCst)
//!   recorded != 0? frees_open = false        closed_to < g? close every
//!                                            open line; closed_to = max(g)
//! ```
//!
//! If the opener's `opened += 1` comes first, the recorder sees it and
//! closes the line (or finds it closed by a pass that saw it: `closed_to`);
//! else the opener sees `recorded` above 0 and closes its own line, or sees
//! 0 because the block was freed already. A recorder that finds nothing
//! opened since the last pass reads two words; the line that [`CLOSED`]
//! names is never opened.

use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::sampler::{line_offset, ThreadState, LINE_BYTES, THREAD};
pub(crate) use crate::sampler::{CLOSED, SLOTS, UNCLAIMED};

/// Shared counters for threads without a slot index.
const SHARDS: usize = 16;

/// [`ThreadState::slot`] of a thread that got none, or gave it back at exit.
pub(crate) const NO_SLOT: u32 = u32::MAX - 1;

/// Whether each index is held by a live thread.
static OWNERS: [AtomicBool; SLOTS] = [const { AtomicBool::new(false) }; SLOTS];
/// Indices ever taken: readers sum `[0, TAKEN)`.
static TAKEN: AtomicUsize = AtomicUsize::new(0);
/// The pthread key whose destructor gives a thread's index back: 0 = not
/// made yet, `KEY_FAILED` = unusable, else key + 1.
static KEY: AtomicUsize = AtomicUsize::new(0);
const KEY_FAILED: usize = usize::MAX;
/// Keys below this are stored in the thread descriptor itself, so that
/// `pthread_setspecific` allocates nothing (glibc's first-level block;
/// musl's whole table is larger).
const KEY_INLINE: libc::pthread_key_t = 32;

/// One thread's bytes, blocks and countdown for one profiler, written by that
/// thread only (but for `limit`, which holder mode sets to 0, and
/// `frees_open`, which recording threads clear). Readers may see a value
/// from before or after a store, never a torn one.
#[repr(align(64))]
pub(crate) struct Line {
    allocated: AtomicU64,
    /// `next`, or 0 while the fast path is closed for this thread.
    limit: AtomicU64,
    /// `allocated` at which the next sample is due.
    next: AtomicU64,
    freed: AtomicU64,
    /// Blocks allocated (`realloc` counts as one).
    allocations: AtomicU64,
    /// Whether the thread's frees may skip the set of recorded blocks (see
    /// the module's comment); written by the thread when it opens the line,
    /// and by any recording thread when it closes it.
    frees_open: AtomicBool,
}

impl Line {
    const fn new() -> Self {
        Line {
            allocated: AtomicU64::new(0),
            limit: AtomicU64::new(0),
            next: AtomicU64::new(0),
            freed: AtomicU64::new(0),
            allocations: AtomicU64::new(0),
            frees_open: AtomicBool::new(false),
        }
    }

    /// The fast path of an allocation: if `size` is less than the
    /// countdown, counts it (which moves the countdown on) and returns true.
    #[inline(always)]
    fn try_alloc(&self, size: usize) -> bool {
        let after = self.allocated.load(Ordering::Relaxed).wrapping_add(size as u64);
        if after < self.limit.load(Ordering::Relaxed) {
            self.allocated.store(after, Ordering::Relaxed);
            self.add_allocation();
            true
        } else {
            false
        }
    }

    /// Bytes left before the next sample.
    pub(crate) fn countdown(&self) -> u64 {
        self.next.load(Ordering::Relaxed).saturating_sub(self.allocated.load(Ordering::Relaxed))
    }

    /// Sends the thread's next allocation to the slow path (the thread
    /// itself, when its settings change).
    pub(crate) fn close(&self) {
        self.limit.store(0, Ordering::Relaxed);
    }

    /// Counts one block allocated.
    #[inline(always)]
    fn add_allocation(&self) {
        self.allocations.store(self.allocations.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }

    /// Blocks this line counted.
    pub(crate) fn allocations(&self) -> u64 {
        self.allocations.load(Ordering::Relaxed)
    }

    /// Bytes this line counted as allocated.
    pub(crate) fn allocated_bytes(&self) -> u64 {
        self.allocated.load(Ordering::Relaxed)
    }

    #[inline(always)]
    fn add_freed(&self, size: usize) {
        self.freed.store(self.freed.load(Ordering::Relaxed).wrapping_add(size as u64), Ordering::Relaxed);
    }
}

/// Bytes of the threads without an index that map here.
#[repr(align(64))]
struct Shard {
    allocated: AtomicU64,
    freed: AtomicU64,
    allocations: AtomicU64,
}

/// The lines and shards of one profiler.
pub(crate) struct Counts {
    /// One per slot index, then [`CLOSED`]: 256, so that any `u8` is an
    /// index.
    lines: [Line; SLOTS + 1],
    shards: [Shard; SHARDS],
    /// Set while the fast path of allocations is closed on every thread
    /// (holder mode).
    closed: AtomicBool,
    /// Lines opened to frees, ever: a generation that only grows.
    opened: AtomicU64,
    /// The largest `opened` that a completed pass of
    /// [`Counts::close_to_frees`] started from: every line opened up to it
    /// has been closed since (or closed itself).
    closed_to: AtomicU64,
}

impl Counts {
    pub(crate) const fn new() -> Self {
        Counts {
            lines: [const { Line::new() }; SLOTS + 1],
            shards: [const {
                Shard { allocated: AtomicU64::new(0), freed: AtomicU64::new(0), allocations: AtomicU64::new(0) }
            }; SHARDS],
            closed: AtomicBool::new(false),
            opened: AtomicU64::new(0),
            closed_to: AtomicU64::new(0),
        }
    }

    /// Closes the fast path of allocations on every thread at once, or lets
    /// each thread open it again at its next slow path.
    pub(crate) fn set_fast_path(&self, open: bool) {
        // SeqCst, with the fence in `allocate`: whatever the order, a line
        // that a slow path opens while this closes them ends up closed.
        self.closed.store(!open, Ordering::SeqCst);
        if !open {
            for line in &self.lines {
                line.limit.store(0, Ordering::SeqCst);
            }
        }
    }

    /// The fast path of an allocation of `size` bytes on the thread `t`:
    /// true if it is not sampled and nothing else is to be done, and then
    /// it is counted.
    #[inline(always)]
    pub(crate) fn try_alloc(&self, t: &ThreadState, size: usize) -> bool {
        self.fast_line(t).try_alloc(size)
    }

    /// The line [`ThreadState::fast`] points to.
    #[inline(always)]
    fn fast_line(&self, t: &ThreadState) -> &Line {
        const { assert!(size_of::<Line>() == LINE_BYTES as usize) };
        // SAFETY: `fast` only ever holds `line_offset(i)` for an `i: u8`,
        // and `lines` has 256 lines of `LINE_BYTES` bytes: the offset is
        // that of a line of the array.
        unsafe { &*self.lines.as_ptr().byte_add(usize::from(t.fast.get())) }
    }

    /// The fast path of a free: counts it and returns true if the thread's
    /// line is open to frees (it has a line, is not inside the profiler, and
    /// no recorded block can reach it).
    #[inline(always)]
    pub(crate) fn try_free(&self, t: &ThreadState, size: usize) -> bool {
        let line = self.fast_line(t);
        if !line.frees_open.load(Ordering::Relaxed) {
            return false;
        }
        line.add_freed(size);
        true
    }

    /// A free of a block the caller knows is not recorded, on a thread whose
    /// line is closed to frees: counts it and returns true if the thread has
    /// a line and is not inside the profiler.
    #[inline(always)]
    pub(crate) fn try_free_unrecorded(&self, t: &ThreadState, size: usize) -> bool {
        if t.fast.get() == line_offset(CLOSED) {
            return false;
        }
        self.fast_line(t).add_freed(size);
        true
    }

    /// Opens the line of `t` to frees, if it has one and is not inside the
    /// profiler, then closes it again if `recorded`, the count of recorded
    /// blocks, is above 0 once the opening is published. The caller saw it
    /// at 0 just before; whoever counts a record must then call
    /// [`Counts::close_to_frees`].
    #[cold]
    pub(crate) fn open_to_frees(&self, t: &ThreadState, recorded: &AtomicUsize) {
        if t.fast.get() == line_offset(CLOSED) {
            return;
        }
        let line = self.fast_line(t);
        line.frees_open.store(true, Ordering::Relaxed);
        // SeqCst: ordered before the load below, and a release of the store
        // above to the recorder that reads it.
        self.opened.fetch_add(1, Ordering::SeqCst);
        // SeqCst: a record counted before this load in the single order of
        // SeqCst operations is seen; one counted after it sees `opened`.
        if recorded.load(Ordering::SeqCst) != 0 {
            line.frees_open.store(false, Ordering::Relaxed);
        }
    }

    /// Closes every line that is open to frees, unless a completed pass has
    /// closed every line opened so far. Called after the count of recorded
    /// blocks went up (`SeqCst`) and before the block is handed out, which is
    /// what orders it before any free of the block. A line opened after the
    /// count went up may be missed: its opener sees the count and closes it.
    pub(crate) fn close_to_frees(&self) {
        let opened = self.opened.load(Ordering::SeqCst);
        // Acquire: the closing stores of the pass that wrote it.
        if self.closed_to.load(Ordering::Acquire) >= opened {
            return;
        }
        // Acquire: a line claimed before an opening that `opened` counts.
        let taken = TAKEN.load(Ordering::Acquire).min(SLOTS);
        for line in &self.lines[..taken] {
            if line.frees_open.load(Ordering::Relaxed) {
                line.frees_open.store(false, Ordering::Relaxed);
            }
        }
        self.closed_to.fetch_max(opened, Ordering::Release);
    }

    /// Counts a block of `size` bytes allocated on the slow path by the thread whose
    /// line is `line`, and sets its countdown. If `open`, opens the line's
    /// fast path again, unless [`Counts::set_fast_path`] closed it; else
    /// leaves it closed.
    pub(crate) fn allocate(&self, line: &Line, size: usize, countdown: u64, open: bool) {
        let after = line.allocated.load(Ordering::Relaxed).wrapping_add(size as u64);
        line.allocated.store(after, Ordering::Relaxed);
        line.add_allocation();
        let next = after.saturating_add(countdown);
        line.next.store(next, Ordering::Relaxed);
        if !open || countdown == 0 || self.closed.load(Ordering::Relaxed) {
            line.close();
            return;
        }
        line.limit.store(next, Ordering::Relaxed);
        // Dekker's handshake with `set_fast_path`: either this load sees
        // `closed`, or that store of 0 comes after the one above.
        fence(Ordering::SeqCst);
        if self.closed.load(Ordering::Relaxed) {
            line.close();
        }
    }

    /// The line of the thread `t`, which only `t` writes; claims an index
    /// on the thread's first call. `None`: the thread has no index.
    pub(crate) fn line(&self, t: &ThreadState) -> Option<&Line> {
        if t.slot.get() == UNCLAIMED {
            claim(t);
        }
        self.line_if_any(t)
    }

    /// The line of `t` if it already has an index.
    pub(crate) fn line_if_any(&self, t: &ThreadState) -> Option<&Line> {
        self.lines[..SLOTS].get(t.slot.get() as usize)
    }

    /// Counts an allocation of a thread without a line.
    pub(crate) fn shard_allocated(&self, t: &ThreadState, size: usize) {
        let shard = self.shard(t);
        shard.allocated.fetch_add(size as u64, Ordering::Relaxed);
        shard.allocations.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a free on the slow path.
    pub(crate) fn freed(&self, t: &ThreadState, size: usize) {
        match self.line(t) {
            Some(line) => line.add_freed(size),
            None => {
                self.shard(t).freed.fetch_add(size as u64, Ordering::Relaxed);
            }
        }
    }

    fn shard(&self, t: &ThreadState) -> &Shard {
        &self.shards[t.ordinal() as usize % SHARDS]
    }

    /// (bytes allocated, bytes freed, blocks allocated) over all threads.
    /// Frees are summed first: a free counted here followed its allocation,
    /// which is then counted too, so `allocated >= freed` for the blocks of
    /// each thread. Costs three loads per index ever taken (at most 255),
    /// plus 48.
    pub(crate) fn totals(&self) -> (u64, u64, u64) {
        let taken = TAKEN.load(Ordering::Acquire).min(SLOTS);
        let lines = &self.lines[..taken];
        let freed = lines.iter().map(|l| l.freed.load(Ordering::Relaxed)).sum::<u64>()
            + self.shards.iter().map(|s| s.freed.load(Ordering::Relaxed)).sum::<u64>();
        let allocated = lines.iter().map(|l| l.allocated.load(Ordering::Relaxed)).sum::<u64>()
            + self.shards.iter().map(|s| s.allocated.load(Ordering::Relaxed)).sum::<u64>();
        (allocated, freed, self.allocations())
    }

    /// Blocks allocated over all threads (`realloc` counts as one): exact,
    /// and cheap enough to read per scrape (one load per index ever taken,
    /// plus 16).
    pub(crate) fn allocations(&self) -> u64 {
        let taken = TAKEN.load(Ordering::Acquire).min(SLOTS);
        self.lines[..taken].iter().map(Line::allocations).sum::<u64>()
            + self.shards.iter().map(|s| s.allocations.load(Ordering::Relaxed)).sum::<u64>()
    }
}

/// Takes a free index for the calling thread `t` and arranges for it to be
/// given back when the thread exits; leaves `t` with [`NO_SLOT`] if none is
/// free or the thread could not be told apart at exit. Allocates nothing.
#[cold]
fn claim(t: &ThreadState) {
    t.slot.set(NO_SLOT);
    let Some(key) = exit_key() else { return };
    for (i, owner) in OWNERS.iter().enumerate() {
        // Acquire: the counts its previous holder wrote before giving it
        // back (Release in `give_back`) are the ones this thread adds to.
        if !owner.load(Ordering::Relaxed)
            && owner.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok()
        {
            // SAFETY: `key` is a live key made by `exit_key`; the value is
            // an integer, never dereferenced. Keys below `KEY_INLINE` are
            // stored without allocating.
            if unsafe { libc::pthread_setspecific(key, (i + 1) as *const libc::c_void) } != 0 {
                owner.store(false, Ordering::Release);
                return;
            }
            // Release: a reader that sees `TAKEN` cover `i` sees this
            // line's sums from now on (they were zero before).
            TAKEN.fetch_max(i + 1, Ordering::Release);
            t.slot.set(i as u32);
            if !t.in_profiler.get() {
                t.fast.set(line_offset(i as u8));
            }
            return;
        }
    }
}

/// The key whose destructor gives indices back, made on first use.
fn exit_key() -> Option<libc::pthread_key_t> {
    match KEY.load(Ordering::Acquire) {
        0 => {}
        KEY_FAILED => return None,
        k => return Some((k - 1) as libc::pthread_key_t),
    }
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is a valid place for the new key; `give_back` has the
    // signature of a key destructor. pthread_key_create allocates nothing.
    let made = unsafe { libc::pthread_key_create(&mut key, Some(give_back)) } == 0;
    let mine = if made && key < KEY_INLINE { key as usize + 1 } else { KEY_FAILED };
    let winner = match KEY.compare_exchange(0, mine, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => mine,
        Err(other) => other,
    };
    if made && (winner != mine || mine == KEY_FAILED) {
        // SAFETY: the key was made above and is not in use: another was
        // published, or it is unusable.
        unsafe { libc::pthread_key_delete(key) };
    }
    (winner != KEY_FAILED).then(|| (winner - 1) as libc::pthread_key_t)
}

/// The key's destructor, run as the thread exits (after its thread-locals'
/// destructors): later calls of this thread take the slow path and the
/// shards, and its index is free for the next thread.
extern "C" fn give_back(value: *mut libc::c_void) {
    let i = (value as usize).wrapping_sub(1);
    THREAD.with(|t| {
        t.slot.set(NO_SLOT);
        t.fast.set(line_offset(CLOSED));
    });
    if let Some(owner) = OWNERS.get(i) {
        // Release: this thread's last counts are seen by the next holder.
        owner.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_count_exactly_and_give_their_index_back() {
        let counts = Counts::new();
        let rounds = SLOTS / 8 + 4;
        for _ in 0..rounds {
            std::thread::scope(|s| {
                for _ in 0..8 {
                    s.spawn(|| {
                        THREAD.with(|t| {
                            let line = counts.line(t).expect("an index is free");
                            counts.allocate(line, 0, u64::MAX, true);
                            assert!(counts.try_free_unrecorded(t, 0));
                            counts.open_to_frees(t, &AtomicUsize::new(0));
                            for _ in 0..1000 {
                                assert!(counts.try_alloc(t, 3));
                                assert!(counts.try_free(t, 2));
                            }
                        })
                    });
                }
            });
        }
        // More threads ran than there are indices: each exited thread gave
        // its index back, and no count was lost.
        let threads = rounds as u64 * 8;
        assert_eq!(counts.totals(), (3000 * threads, 2000 * threads, 1001 * threads));
    }

    #[test]
    fn the_countdown_is_next_minus_allocated() {
        let counts = Counts::new();
        let line = &counts.lines[0];
        counts.allocate(line, 100, 50, true);
        assert_eq!(line.countdown(), 50);
        assert!(line.try_alloc(49));
        assert_eq!(line.countdown(), 1);
        assert!(!line.try_alloc(1), "a block as large as the countdown is sampled");
        line.close();
        assert!(!line.try_alloc(0));
        assert_eq!(line.countdown(), 1, "closing keeps the countdown");
        assert_eq!(line.allocated.load(Ordering::Relaxed), 149);
        assert_eq!(line.allocations(), 2, "one block on the slow path, one on the fast path");
    }

    #[test]
    fn closing_the_fast_path_reaches_every_line() {
        let counts = Counts::new();
        counts.allocate(&counts.lines[3], 10, 1000, true);
        assert!(counts.lines[3].try_alloc(1));
        counts.set_fast_path(false);
        assert!(!counts.lines[3].try_alloc(1));
        counts.allocate(&counts.lines[3], 10, 1000, true);
        assert!(!counts.lines[3].try_alloc(1), "a slow path keeps it closed");
        counts.set_fast_path(true);
        assert!(!counts.lines[3].try_alloc(1), "opened again at the next slow path");
        counts.allocate(&counts.lines[3], 10, 1000, true);
        assert!(counts.lines[3].try_alloc(1));
        assert!(!counts.lines[usize::from(CLOSED)].try_alloc(0));
    }
}
