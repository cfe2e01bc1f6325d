//! The scan itself, run in a forked child: a frozen copy-on-write image of
//! the whole address space, walked from the roots without allocating.
//!
//! ```text
//! parent: roots ──► pipe ──► fork ─────────────────────────► read ─► waitpid
//!                              │ child (one thread, no malloc)   ▲
//!                              ▼                                 │
//!   live blocks from the sampled set ─► mmap'd array, sorted ─► BFS from
//!   every root word ─► BFS among the unreached ─► records + trailer ─┘
//! ```
//!
//! An edge is any aligned word whose value falls inside a live block
//! (interior pointers count). The search is breadth-first from all roots at
//! once, statics seeded first, so each block is credited to its shortest
//! chain, and between chains of one length to a static's (goref credits
//! globals first). What
//! no root reaches is searched again, starting from the unreached blocks
//! that no other unreached block points to (chap's "unreferenced"), then
//! from what is left (pure cycles), so that a leaked structure shows its
//! own top.
//!
//! The child only reads: the parent's memory is never written, here or
//! anywhere. It uses `mmap` for its two arrays, `msync` to find roots
//! unmapped since the parent listed them, `clock_gettime` for its time
//! budget and `write` for its output, then `_exit`s.

use std::mem::size_of;

use crate::table::{map_zeroed, BucketTable, SampledSet, OWN, SAMPLED};

/// One live block, as the child reports it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Rec {
    /// Start address.
    pub addr: u64,
    /// Bytes.
    pub size: u64,
    /// Address of the word that first pointed into it (in a root or in its
    /// parent block).
    pub via: u64,
    /// Its bucket (stack and size) in the profiler's tables.
    pub bucket: u32,
    /// Index of the parent block in the sorted array, or one of the marks
    /// below, or [`ROOT_FLAG`] | root region index.
    pub parent: u32,
}

/// Reached from no root and no unreached block: the top of a leaked
/// structure.
pub(crate) const LEAK_ROOT: u32 = u32::MAX - 1;
/// Not examined: the time budget ran out first.
pub(crate) const UNSCANNED: u32 = u32::MAX - 2;
/// Not reached yet (never reported).
const UNVISITED: u32 = u32::MAX;
/// Set in `parent` for a block reached straight from root region `parent &
/// !ROOT_FLAG`.
pub(crate) const ROOT_FLAG: u32 = 1 << 31;

/// The scan ran out of time; blocks not examined are [`UNSCANNED`].
pub(crate) const PARTIAL_TIME: u64 = 1;
/// The scratch arrays would pass the memory budget: nothing was scanned.
pub(crate) const PARTIAL_MEMORY: u64 = 2;
/// `mmap` refused the scratch arrays.
pub(crate) const PARTIAL_MMAP: u64 = 4;

/// Written after the records.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Trailer {
    pub magic: u64,
    pub blocks: u64,
    pub reached: u64,
    /// Entries of the search order written after the records.
    pub queued: u64,
    pub words: u64,
    pub scan_ns: u64,
    pub scratch_bytes: u64,
    pub flags: u64,
    /// Bytes of root spans no longer mapped at the fork: not read.
    pub unmapped_root_bytes: u64,
}

pub(crate) const MAGIC: u64 = 0x6c65_616b_686f_6c64; // "leakhold"

/// A range of memory whose words are roots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    pub lo: usize,
    pub hi: usize,
}

/// What the child needs, prepared by the parent before the fork.
pub(crate) struct Job<'a> {
    pub set: &'a SampledSet,
    pub buckets: &'a BucketTable,
    pub roots: &'a [Span],
    pub fd: i32,
    pub time_budget_ns: u64,
    pub memory_budget: u64,
}

/// Bytes of a root span checked per `msync` call.
const MAP_CHECK: usize = 1 << 20;

/// Calls `f` with each part of `[lo, hi)` that is mapped, in order, and
/// returns the bytes that are not. The parent lists the roots before the
/// other threads stop, and one of them may unmap a span in between (a
/// thread that exits, a library unloaded): reading it would kill the
/// child. A mapping whose protection changed in between is not seen (a
/// mapped page is taken as readable, as it was when listed). Allocates
/// nothing.
fn mapped_runs(lo: usize, hi: usize, mut f: impl FnMut(usize, usize)) -> u64 {
    // SAFETY: sysconf reads a constant of the process.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096).max(1);
    let mut skipped = 0u64;
    let mut run: Option<usize> = None;
    let mut a = lo - lo % page;
    while a < hi {
        let b = a.saturating_add(MAP_CHECK).min(hi.next_multiple_of(page));
        if unmapped(a, b - a) {
            let mut p = a;
            while p < b {
                let (from, to) = (p.max(lo), (p + page).min(hi));
                if unmapped(p, page) {
                    if let Some(start) = run.take() {
                        f(start, from);
                    }
                    skipped += (to - from) as u64;
                } else {
                    run.get_or_insert(from);
                }
                p += page;
            }
        } else {
            run.get_or_insert(a.max(lo));
        }
        a = b;
    }
    if let Some(start) = run {
        f(start, hi);
    }
    skipped
}

/// Whether some page of `[addr, addr + len)` (page-aligned) is not mapped.
fn unmapped(addr: usize, len: usize) -> bool {
    // SAFETY: msync with MS_ASYNC only checks the range (it writes nothing
    // back since Linux 2.6.19) and fails with ENOMEM if part is unmapped.
    let failed = unsafe { libc::msync(addr as *mut libc::c_void, len, libc::MS_ASYNC) } != 0;
    // SAFETY: errno is this thread's.
    failed && unsafe { *libc::__errno_location() } == libc::ENOMEM
}

/// Runs in the child. Returns the exit status.
pub(crate) fn child_main(job: &Job<'_>) -> i32 {
    let t0 = now_ns();
    let mut trailer = Trailer { magic: MAGIC, ..Trailer::default() };
    let mut n = 0usize;
    job.set.for_each_entry(|_, entry| n += usize::from(entry & OWN == 0));
    trailer.blocks = n as u64;
    let scratch = (n * (size_of::<Rec>() + size_of::<u32>())) as u64;
    trailer.scratch_bytes = scratch;
    if scratch > job.memory_budget {
        trailer.flags |= PARTIAL_MEMORY;
        return finish(job.fd, &[], &[], &trailer, t0);
    }
    let (Some(recs), Some(queue)) = (map_slice::<Rec>(n), map_slice::<u32>(n)) else {
        trailer.flags |= PARTIAL_MMAP;
        return finish(job.fd, &[], &[], &trailer, t0);
    };
    let mut filled = 0;
    job.set.for_each_entry(|addr, entry| {
        // The profiler's own blocks are not the program's.
        if entry & OWN != 0 {
            return;
        }
        let bucket = entry & !SAMPLED;
        if let Some(r) = recs.get_mut(filled) {
            let (_, size) = job.buckets.key(bucket);
            *r = Rec { addr: addr as u64, size: size as u64, via: 0, bucket, parent: UNVISITED };
            filled += 1;
        }
    });
    let recs = &mut recs[..filled];
    recs.sort_unstable_by_key(|r| r.addr);
    let mut walk = Walk::new(recs, queue, job.time_budget_ns, t0);
    // Every root at depth 0, statics seeded first: a block goes to its
    // shortest chain, and between chains of one length to a static's. A
    // static first tier would hand whole runtimes to any static that holds
    // one stale address into them (measured: signal-hook's table, through
    // stale bytes, took every tokio task).
    for (i, span) in job.roots.iter().enumerate() {
        trailer.unmapped_root_bytes +=
            mapped_runs(span.lo, span.hi, |lo, hi| walk.seed_from(lo, hi, ROOT_FLAG | i as u32));
    }
    walk.drain();
    walk.reached = walk.tail;
    walk.leaked_structures();
    trailer.reached = walk.reached as u64;
    trailer.queued = walk.tail as u64;
    trailer.words = walk.words;
    if walk.out_of_time {
        trailer.flags |= PARTIAL_TIME;
        for r in walk.recs.iter_mut() {
            if r.parent == UNVISITED {
                r.parent = UNSCANNED;
            }
        }
    }
    let order = &walk.queue[..walk.tail];
    finish(job.fd, walk.recs, order, &trailer, t0)
}

/// The breadth-first search over the sorted blocks.
struct Walk<'a> {
    recs: &'a mut [Rec],
    queue: &'a mut [u32],
    head: usize,
    tail: usize,
    /// Lowest block start and highest block end: a quick filter.
    lo: u64,
    hi: u64,
    words: u64,
    reached: usize,
    deadline: u64,
    out_of_time: bool,
}

impl<'a> Walk<'a> {
    fn new(recs: &'a mut [Rec], queue: &'a mut [u32], budget_ns: u64, t0: u64) -> Self {
        let lo = recs.first().map_or(u64::MAX, |r| r.addr);
        let hi = recs.iter().map(|r| r.addr.saturating_add(r.size)).max().unwrap_or(0);
        Walk {
            recs,
            queue,
            head: 0,
            tail: 0,
            lo,
            hi,
            words: 0,
            reached: 0,
            deadline: t0.saturating_add(budget_ns),
            out_of_time: false,
        }
    }

    /// The block that `w` points into.
    #[inline]
    fn find(&self, w: u64) -> Option<usize> {
        if w < self.lo || w >= self.hi {
            return None;
        }
        let i = self.recs.partition_point(|r| r.addr <= w);
        let r = self.recs.get(i.checked_sub(1)?)?;
        (w - r.addr < r.size).then_some(i - 1)
    }

    /// Visits every aligned word of `[lo, hi)`, crediting unvisited blocks
    /// to `parent`.
    fn seed_from(&mut self, lo: usize, hi: usize, parent: u32) {
        const W: usize = size_of::<usize>();
        let start = lo.next_multiple_of(W);
        let end = hi & !(W - 1);
        let mut a = start;
        while a < end {
            // Chunks of 64 Ki words between clock reads.
            let stop = end.min(a + (W << 16));
            if self.past_deadline() {
                return;
            }
            self.words += ((stop - a) / W) as u64;
            while a < stop {
                // SAFETY: the parent passed only root spans that were
                // readable, and `mapped_runs` passes only the parts still
                // mapped at the fork; a block's bytes are readable while it
                // is live; this child has no other thread, so nothing
                // changes them while read.
                let w = unsafe { std::ptr::read(a as *const usize) } as u64;
                if let Some(j) = self.find(w) {
                    if self.recs[j].parent == UNVISITED {
                        self.recs[j].parent = parent;
                        self.recs[j].via = a as u64;
                        if let Some(q) = self.queue.get_mut(self.tail) {
                            *q = j as u32;
                            self.tail += 1;
                        }
                    }
                }
                a += W;
            }
        }
    }

    /// Scans each queued block in turn.
    fn drain(&mut self) {
        while self.head < self.tail && !self.out_of_time {
            let i = self.queue[self.head] as usize;
            self.head += 1;
            let r = self.recs[i];
            self.seed_from(r.addr as usize, (r.addr + r.size) as usize, i as u32);
        }
    }

    fn past_deadline(&mut self) -> bool {
        if !self.out_of_time && now_ns() > self.deadline {
            self.out_of_time = true;
        }
        self.out_of_time
    }

    /// Gives the unreached blocks chains of their own: first from those
    /// that no unreached block points to, then from what is left (cycles).
    fn leaked_structures(&mut self) {
        if self.out_of_time {
            return;
        }
        // `via` of an unvisited block is free until it is visited: use it to
        // mark "pointed to by an unreached block".
        for i in 0..self.recs.len() {
            let r = self.recs[i];
            if r.parent != UNVISITED {
                continue;
            }
            let (mut a, end) = ((r.addr as usize).next_multiple_of(8), (r.addr + r.size) as usize & !7);
            while a < end {
                // SAFETY: as in `seed_from`: a live block's bytes.
                let w = unsafe { std::ptr::read(a as *const usize) } as u64;
                if let Some(j) = self.find(w) {
                    if j != i && self.recs[j].parent == UNVISITED {
                        self.recs[j].via = 1;
                    }
                }
                a += 8;
            }
            self.words += (r.size / 8).max(1);
            if self.past_deadline() {
                return;
            }
        }
        for pass in 0..2 {
            for i in 0..self.recs.len() {
                let r = self.recs[i];
                if r.parent != UNVISITED || (pass == 0 && r.via != 0) {
                    continue;
                }
                self.recs[i].parent = LEAK_ROOT;
                self.recs[i].via = 0;
                if let Some(q) = self.queue.get_mut(self.tail) {
                    *q = i as u32;
                    self.tail += 1;
                }
                self.drain();
                if self.out_of_time {
                    return;
                }
            }
        }
    }
}

/// Streams the records, the search order, then the trailer to `fd`.
fn finish(fd: i32, recs: &[Rec], order: &[u32], trailer: &Trailer, t0: u64) -> i32 {
    let mut trailer = *trailer;
    trailer.scan_ns = now_ns().saturating_sub(t0);
    // SAFETY: `Rec` and `Trailer` are `repr(C)` plain integers without
    // padding, so their bytes are initialized.
    let body = unsafe { std::slice::from_raw_parts(recs.as_ptr().cast::<u8>(), std::mem::size_of_val(recs)) };
    // SAFETY: as above.
    let tail = unsafe { std::slice::from_raw_parts((&trailer as *const Trailer).cast::<u8>(), size_of::<Trailer>()) };
    // SAFETY: `u32`s, no padding.
    let order = unsafe { std::slice::from_raw_parts(order.as_ptr().cast::<u8>(), std::mem::size_of_val(order)) };
    if write_all(fd, body) && write_all(fd, order) && write_all(fd, tail) {
        0
    } else {
        1
    }
}

fn write_all(fd: i32, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a valid slice for the length given.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            // SAFETY: reads the calling thread's errno.
            if unsafe { *libc::__errno_location() } == libc::EINTR {
                continue;
            }
            return false;
        }
        bytes = &bytes[n as usize..];
    }
    true
}

/// A zeroed array of `n` values from an anonymous mapping (never freed:
/// the child exits).
fn map_slice<T: Copy>(n: usize) -> Option<&'static mut [T]> {
    if n == 0 {
        return Some(&mut []);
    }
    let p = map_zeroed(n.checked_mul(size_of::<T>())?)?;
    // SAFETY: the mapping is `len` bytes, page-aligned, zeroed, and owned by
    // this slice alone; `T` is plain data for which all-zero bytes are valid
    // (`Rec`, `u32`).
    Some(unsafe { std::slice::from_raw_parts_mut(p.cast::<T>(), n) })
}

/// Monotonic nanoseconds (vDSO; no allocation).
pub(crate) fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(addr: u64, size: u64) -> Rec {
        Rec { addr, size, via: 0, bucket: 0, parent: UNVISITED }
    }

    #[test]
    fn interior_pointers_find_their_block() {
        let mut recs = [rec(0x1000, 0x100), rec(0x2000, 0x10), rec(0x2010, 0x8)];
        let mut queue = [0u32; 3];
        let w = Walk::new(&mut recs, &mut queue, u64::MAX / 2, 0);
        assert_eq!(w.find(0x1000), Some(0));
        assert_eq!(w.find(0x10ff), Some(0));
        assert_eq!(w.find(0x1100), None);
        assert_eq!(w.find(0x200f), Some(1));
        assert_eq!(w.find(0x2010), Some(2));
        assert_eq!(w.find(0x2018), None);
        assert_eq!(w.find(0xfff), None);
        assert_eq!(w.find(0), None);
    }

    #[test]
    fn records_and_trailer_have_no_padding() {
        assert_eq!(size_of::<Rec>(), 32);
        assert_eq!(size_of::<Trailer>(), 72);
    }

    #[test]
    fn roots_unmapped_since_they_were_listed_are_skipped() {
        // SAFETY: sysconf reads a constant of the process.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap();
        // SAFETY: a fresh anonymous mapping of 4 pages, then its second page
        // unmapped; nothing else refers to them.
        let base = unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                4 * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            assert_eq!(libc::munmap(p.cast::<u8>().add(page).cast(), page), 0);
            p as usize
        };
        let mut runs = Vec::new();
        let skipped = mapped_runs(base + 100, base + 4 * page - 8, |lo, hi| runs.push((lo, hi)));
        assert_eq!(runs, [(base + 100, base + page), (base + 2 * page, base + 4 * page - 8)]);
        assert_eq!(skipped, page as u64);
        // A root that is wholly mapped is one run; one wholly unmapped, none.
        runs.clear();
        assert_eq!(mapped_runs(base + 2 * page + 8, base + 3 * page + 16, |lo, hi| runs.push((lo, hi))), 0);
        assert_eq!(runs, [(base + 2 * page + 8, base + 3 * page + 16)]);
        runs.clear();
        assert_eq!(mapped_runs(base + page + 8, base + 2 * page, |lo, hi| runs.push((lo, hi))), page as u64 - 8);
        assert!(runs.is_empty());
        // SAFETY: the pages mapped above that are still mapped.
        unsafe {
            libc::munmap(base as *mut libc::c_void, page);
            libc::munmap((base + 2 * page) as *mut libc::c_void, 2 * page);
        }
    }
}
