//! Per-thread sampling state: Go's `mcache.nextSample` countdown.
//!
//! Each thread counts down a random number of bytes; the allocation that
//! reaches zero is sampled and a new distance is drawn. Distances are
//! exponentially distributed with mean `rate`, so every byte has the same
//! chance `1/rate` to end a countdown, whatever the size of the block it is
//! in, and a block of `s` bytes is sampled with probability
//! `1 - exp(-s/rate)` (Go's `runtime.fastexprand` and `mallocgc`).
//!
//! The countdown itself lives in the thread's line of each profiler's
//! counts (`counts.rs`), where the fast path reads it; here is the rest of
//! what a thread keeps: its generator, the settings it drew under, its
//! index, and the flag that it is running profiler code.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::table::mix64;

/// Threads that can hold a slot index of `counts` at once; more use its
/// shards.
pub(crate) const SLOTS: usize = 255;
/// The line of threads that must take the slow path: never opened.
pub(crate) const CLOSED: u8 = SLOTS as u8;
/// [`ThreadState::slot`] of a thread that has not asked for an index yet.
pub(crate) const UNCLAIMED: u32 = u32::MAX;
/// Bytes from one line of counts to the next (`counts::Line`: one cache
/// line).
pub(crate) const LINE_BYTES: u16 = 64;

/// The offset of line `i` from the first: what [`ThreadState::fast`]
/// holds, so that the fast paths add it to the lines' address without a
/// multiply.
#[inline(always)]
pub(crate) const fn line_offset(i: u8) -> u16 {
    i as u16 * LINE_BYTES
}

/// Everything the hook keeps per thread. No field needs a destructor, so the
/// thread-local is `const`-initialized and valid during the whole life of the
/// thread, including while other thread-locals are being destroyed.
#[derive(Debug)]
pub(crate) struct ThreadState {
    /// Set while the profiler itself runs on this thread (taking a sample,
    /// building a profile): allocations made then are counted but never
    /// sampled, and never re-enter the sampling code. Change it only with
    /// [`ThreadState::enter`] and [`ThreadState::leave`].
    pub in_profiler: Cell<bool>,
    /// This thread's index into each profiler's lines of byte counts and
    /// countdowns (see `counts.rs`), or `UNCLAIMED` / `NO_SLOT`.
    pub slot: Cell<u32>,
    /// The line the fast paths use, as its offset ([`line_offset`]):
    /// [`ThreadState::slot`]'s, or `CLOSED`'s to send every call to the
    /// slow path (no index, or inside the profiler).
    pub fast: Cell<u16>,
    /// Bytes left before the next sample, for a thread without an index
    /// (the others keep it in their line).
    pub countdown: Cell<u64>,
    /// xorshift64* state; never 0 once seeded.
    pub rng: Cell<u64>,
    /// The [`CONFIG_STAMP`] the countdown was drawn under.
    pub stamp: Cell<u32>,
    /// 1 + the order in which this thread first allocated; 0 = not yet.
    pub ordinal: Cell<u32>,
    /// Lowest and highest address of this thread's stack; top 0 = not
    /// asked yet, 1 = unknown.
    pub stack_top: Cell<(usize, usize)>,
    /// Holder mode's memo of recent (stack and size) → bucket lookups,
    /// direct-mapped by the hash of the frames and the size: a hit skips
    /// the shared tables. Entries are `(key hash, bucket id + 1)`.
    pub buckets_seen: [Cell<(u64, u32)>; BUCKETS_SEEN],
}

/// Entries of [`ThreadState::buckets_seen`].
pub(crate) const BUCKETS_SEEN: usize = 64;

thread_local! {
    pub(crate) static THREAD: ThreadState = const {
        ThreadState {
            in_profiler: Cell::new(false),
            slot: Cell::new(UNCLAIMED),
            fast: Cell::new(line_offset(CLOSED)),
            countdown: Cell::new(0),
            rng: Cell::new(0),
            stamp: Cell::new(0),
            ordinal: Cell::new(0),
            stack_top: Cell::new((0, 0)),
            buckets_seen: [const { Cell::new((0, 0)) }; BUCKETS_SEEN],
        }
    };
}

/// Bumped whenever a rate or a seed changes, so that each thread draws a new
/// countdown under the new settings the next time it takes the slow path
/// (at once for the thread that made the change).
pub(crate) static CONFIG_STAMP: AtomicU32 = AtomicU32::new(1);
static NEXT_ORDINAL: AtomicU32 = AtomicU32::new(0);

impl ThreadState {
    /// This thread's ordinal, assigned on first use.
    #[inline]
    pub(crate) fn ordinal(&self) -> u32 {
        let o = self.ordinal.get();
        if o != 0 {
            return o - 1;
        }
        let o = NEXT_ORDINAL.fetch_add(1, Ordering::Relaxed);
        self.ordinal.set(o.wrapping_add(1).max(1));
        o
    }

    /// Seeds the generator; the caller draws a fresh countdown.
    pub(crate) fn reseed(&self, seed: u64, stamp: u32) {
        self.rng.set(mix64(seed) | 1);
        self.stamp.set(stamp);
    }

    /// Sets [`ThreadState::in_profiler`]; returns its previous value for
    /// [`ThreadState::leave`]. Meanwhile every call takes the slow path,
    /// which sees the flag.
    #[inline]
    pub(crate) fn enter(&self) -> bool {
        self.fast.set(line_offset(CLOSED));
        self.in_profiler.replace(true)
    }

    /// Undoes [`ThreadState::enter`].
    #[inline]
    pub(crate) fn leave(&self, was: bool) {
        if !was {
            self.in_profiler.set(false);
            let slot = self.slot.get();
            self.fast.set(line_offset(if (slot as usize) < SLOTS { slot as u8 } else { CLOSED }));
        }
    }
}

/// Marks the current thread as running profiler code until dropped: its
/// allocations are counted but not sampled. Nests.
///
/// Whatever allocates on behalf of the profiler (copying a snapshot,
/// building a profile, scanning for holders) holds one, so that the hook
/// never samples the profiler itself.
pub(crate) struct InProfiler {
    was: bool,
}

impl InProfiler {
    /// Sets this thread's flag, remembering its previous value.
    pub(crate) fn enter() -> Self {
        InProfiler { was: THREAD.with(ThreadState::enter) }
    }
}

impl Drop for InProfiler {
    fn drop(&mut self) {
        THREAD.with(|t| t.leave(self.was));
    }
}

/// A seed for threads when the program did not fix one.
pub(crate) fn entropy(ordinal: u32) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime neither
    // allocates nor keeps the pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let local = 0u8;
    (ts.tv_sec as u64).wrapping_mul(1_000_000_007)
        ^ ts.tv_nsec as u64
        ^ (u64::from(ordinal) << 40)
        ^ (&local as *const u8 as u64)
}

#[inline]
fn next_u64(state: &Cell<u64>) -> u64 {
    let mut x = state.get();
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    state.set(x);
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// Draws the distance in bytes to the next sample: exponential with mean
/// `rate`, plus one as in Go. 0 (sample every allocation) when `rate <= 1`.
pub(crate) fn next_sample(rng: &Cell<u64>, rate: u64) -> u64 {
    if rate <= 1 {
        return 0;
    }
    // 53 random bits, as a uniform number in (0, 1].
    let u = ((next_u64(rng) >> 11) as f64 + 1.0) * (1.0 / (1u64 << 53) as f64);
    let d = -u.ln() * rate as f64;
    (d as u64).saturating_add(1)
}

/// How many blocks one sampled block of `size` bytes stands for, at `rate`:
/// `1 / (1 - exp(-size/rate))` (Go's `scaleHeapSample`).
pub(crate) fn scale(size: f64, rate: u64) -> f64 {
    if rate <= 1 || size <= 0.0 {
        return 1.0;
    }
    1.0 / (1.0 - (-size / rate as f64).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_have_the_rate_as_mean() {
        let rng = Cell::new(mix64(7) | 1);
        let rate = 512 * 1024;
        let n = 200_000;
        let sum: f64 = (0..n).map(|_| next_sample(&rng, rate) as f64).sum();
        let mean = sum / n as f64;
        // The standard error of the mean is rate / sqrt(n) ~ 0.22% of rate.
        assert!((mean / rate as f64 - 1.0).abs() < 0.01, "mean {mean}");
    }

    #[test]
    fn rate_one_samples_everything() {
        let rng = Cell::new(3);
        assert_eq!(next_sample(&rng, 1), 0);
        assert_eq!(next_sample(&rng, 0), 0);
    }

    #[test]
    fn blocks_are_sampled_with_go_probability() {
        // Simulate mallocgc's countdown for blocks of 64 KiB at 512 KiB:
        // the sampled fraction must be 1 - exp(-1/8).
        let rng = Cell::new(mix64(11) | 1);
        let rate = 512 * 1024;
        let size = 64 * 1024u64;
        let mut countdown = next_sample(&rng, rate);
        let (mut sampled, n) = (0u64, 400_000u64);
        for _ in 0..n {
            if size < countdown {
                countdown -= size;
            } else {
                sampled += 1;
                countdown = next_sample(&rng, rate);
            }
        }
        let p = sampled as f64 / n as f64;
        let expected = 1.0 - (-(size as f64) / rate as f64).exp();
        assert!((p / expected - 1.0).abs() < 0.02, "p {p} expected {expected}");
        // And the scaled estimate recovers the total.
        let estimate = sampled as f64 * size as f64 * scale(size as f64, rate);
        assert!((estimate / (n * size) as f64 - 1.0).abs() < 0.02);
    }

    #[test]
    fn scale_matches_go() {
        // Go: scaleHeapSample(1, 1024, 524288) = (512, 524800) (truncated).
        let s = scale(1024.0, 524_288);
        assert_eq!((1.0 * s) as i64, 512);
        assert_eq!((1024.0 * s) as i64, 524_800);
        assert_eq!(scale(1024.0, 1), 1.0);
        assert_eq!(scale(1024.0, 0), 1.0);
    }
}
