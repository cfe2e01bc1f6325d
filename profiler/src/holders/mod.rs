//! Who holds the memory: retainer chains from a root to every live block,
//! as a Go-format heap profile whose "stacks" are the chains.
//!
//! In holder mode ([`Profiler::set_holder_mode`]) the profiler records every
//! allocation's stack and keeps every live block in its set of sampled
//! blocks (those not chosen by the sampler are marked so, and heap profiles
//! do not count them: they stay at the sampling rate), so the set is an
//! index of every live block with its size and allocation stack; and every
//! thread that allocates registers its stack. [`Profiler::holders_profile`] then:
//!
//! 1. collects the roots (`roots.rs`): writable segments of the executable
//!    and its libraries, and thread stacks;
//! 2. `fork`s: the child is a frozen copy-on-write image of the whole
//!    address space, and walks it breadth-first from the roots without
//!    allocating (`scan.rs`), breadth-first from all roots (statics seeded
//!    first; a root unmapped since step 1, by a thread that exited, is
//!    skipped), streaming each block's parent to a pipe;
//! 3. names the chains (`chains.rs`): the root (`static …::CACHE`,
//!    `thread tokio-runtime-w stack`), each block on the way by its
//!    allocation site (`hashbrown table in …::remember`), then the held
//!    block's own site as the leaf.
//!
//! The RPC threads are paused only while `fork` copies the page tables
//! (the kernel holds the address space's lock); the scan runs beside them.
//!
//! # What a conservative scan cannot see
//! - **Other threads' registers.** After a fork only the calling thread
//!   exists in the child; a pointer that another thread held only in a
//!   register at that instant is not seen. Such values are transient: a
//!   block is rarely referenced from a register alone, and a leak is
//!   retained by memory, not registers. Other threads' whole stack mappings
//!   are scanned (their stack pointers are unknown), which errs the other
//!   way.
//! - **Hidden pointers.** Tagged, XOR'd or compressed pointers, and offsets
//!   instead of addresses, are not edges; the blocks they alone retain are
//!   reported as unreachable.
//! - **False references.** Any word that happens to fall in a live block is
//!   an edge: stale bytes in a `Vec`'s spare capacity, dead stack frames
//!   below another thread's stack pointer, integers that look like
//!   addresses. They can only make more blocks reachable, never fewer, and
//!   the breadth-first search credits a block to its shortest chain, which
//!   is the live structure in the cases measured here. Not always: a dead
//!   slot in a live frame still holds an address the allocator has since
//!   given out again, and the block there is credited to that stack (one
//!   block in eight, in about half the runs of `tests/holders.rs` on a
//!   loaded machine).
//!   The scan leaves none of its own: what it reads back from the child
//!   (every live block's address) is zeroed before its memory goes back to
//!   the allocator ([`Scrubbed`]), else a block allocated later in that
//!   memory would hold stale addresses of every block to the next scan.
//! - **Blocks allocated before holder mode was on** are not in the index:
//!   they are neither reported nor scanned through. `leaklab serve
//!   --holders` turns it on before its runtime starts.
//!
//! Chains deeper than [`HolderOptions::max_hops`] blocks are cut: the blocks
//! deeper down are credited to the last named block under a
//! `$sub_objects$` frame, as goref does for what it cannot type. Live blocks
//! that no root reaches sit under `$unreachable$`, chained from the
//! unreached blocks that nothing else unreached points to.

mod chains;
mod roots;
mod scan;

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::profile::Profile;
use crate::profiler::Profiler;
use crate::sampler::InProfiler;

/// Limits of one scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HolderOptions {
    /// The scan stops here and reports what it has (the rest as
    /// `$unscanned$`); the child is killed at twice this plus a second.
    pub time_budget: Duration,
    /// Most bytes of scratch memory the child may map (32 + 4 bytes per
    /// live block); above it, nothing is scanned.
    pub memory_budget: u64,
    /// Blocks named on a chain between the root and the held block; deeper
    /// ones go under `$sub_objects$`.
    pub max_hops: usize,
}

impl Default for HolderOptions {
    fn default() -> Self {
        HolderOptions { time_budget: Duration::from_secs(10), memory_budget: 512 << 20, max_hops: 16 }
    }
}

/// Figures of one scan.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ScanStats {
    /// Live blocks in the index.
    pub blocks: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Blocks reached from a root, and their bytes.
    pub reached: u64,
    /// See `reached`.
    pub reached_bytes: u64,
    /// Live blocks no root reaches, and their bytes.
    pub unreachable: u64,
    /// See `unreachable`.
    pub unreachable_bytes: u64,
    /// Blocks not examined (time budget), and their bytes.
    pub unscanned: u64,
    /// See `unscanned`.
    pub unscanned_bytes: u64,
    /// Root spans scanned.
    pub roots: u64,
    /// Bytes of root spans.
    pub root_bytes: u64,
    /// Words examined by the child.
    pub words: u64,
    /// How long the process's other threads were stopped (signalled, the
    /// fork, released): the pause they see.
    pub pause: Duration,
    /// The fork alone (page tables copied).
    pub fork: Duration,
    /// Registered live threads, and how many of the others stopped (their
    /// stack pointers and registers known).
    pub threads: u64,
    /// See `threads`.
    pub threads_stopped: u64,
    /// The child's scan.
    pub scan: Duration,
    /// The whole call, naming included.
    pub total: Duration,
    /// Scratch memory the child mapped.
    pub scratch_bytes: u64,
    /// Bytes of roots unmapped between their listing and the fork (a
    /// thread that exited, a library unloaded): not read, since nothing
    /// they held is held any more.
    pub unmapped_root_bytes: u64,
    /// Why the profile is partial, if it is.
    pub partial: Vec<String>,
}

/// A holders profile and how it was made.
#[derive(Debug, Clone)]
pub struct HolderScan {
    /// The chains, in Go's heap profile format (`inuse_space` default).
    pub profile: Profile,
    /// Figures of the scan.
    pub stats: ScanStats,
}

/// Why no holders profile could be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HolderError {
    /// Holder mode is off: no index of live blocks to scan.
    #[error("holder mode is off: start the process with holder mode on (leaklab serve --holders)")]
    Off,
    /// Another scan is running.
    #[error("a holder scan is already running")]
    Busy,
    /// The pipe or the fork failed.
    #[error("cannot start the scan: {0}")]
    Start(std::io::Error),
    /// The child died or wrote something unreadable.
    #[error("the scan failed: {0}")]
    Child(String),
}

/// One scan at a time per process.
static SCAN: Mutex<()> = Mutex::new(());

impl<A> Profiler<A> {
    /// Turns holder mode on or off. On: every allocation is indexed with
    /// its stack, so that [`Profiler::holders_profile`] knows every live
    /// block; heap profiles keep their sampling rate. Turn it on before the
    /// program allocates what it should explain. Blocks indexed while it was
    /// on stay indexed until freed.
    pub fn set_holder_mode(&self, on: bool) {
        self.holder_mode.store(on, std::sync::atomic::Ordering::Relaxed);
        // Every allocation takes the slow path, which indexes it.
        self.counts.set_fast_path(!on);
    }

    /// Whether holder mode is on.
    pub fn holder_mode(&self) -> bool {
        self.holder_mode.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Scans the process for who holds each live block; see the module
    /// documentation of `holders`.
    pub fn holders_profile(&self, opts: &HolderOptions) -> Result<HolderScan, HolderError> {
        if !self.holder_mode() {
            return Err(HolderError::Off);
        }
        // A scan that panicked left nothing half-done behind the lock (each
        // scan starts from scratch): its poison does not stop the next.
        let _one = match SCAN.try_lock() {
            Ok(one) => one,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Err(HolderError::Busy),
        };
        let _guard = InProfiler::enter();
        let start = Instant::now();
        let Some(state) = self.state.get() else {
            return Err(HolderError::Child("no block has been recorded yet".into()));
        };
        crate::threads::register_current();
        let marker = 0u8;
        let sp = std::hint::black_box(&marker) as *const u8 as usize;
        let threads = crate::threads::live_threads();
        let roots = roots::collect(sp.saturating_sub(256), &threads);
        // Everything the child reads is made before the other threads stop:
        // while they are stopped nothing may allocate (one of them may hold
        // the allocator's lock).
        let mut spans: Vec<scan::Span> = roots.iter().map(|r| r.span).collect();
        let mut sps = vec![None; threads.len()];
        let (read_end, write_end) = pipe().map_err(HolderError::Start)?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&write_end);
        let t_stop = Instant::now();
        let (pid, fork) = crate::threads::stop_the_world(&threads, STOP_WAIT, &mut sps, |sps| {
            for (span, root) in spans.iter_mut().zip(&roots) {
                if let Some(Some(sp)) = root.stack_of.and_then(|i| sps.get(i)) {
                    // The red zone below a stack pointer may hold live data.
                    span.lo = span.lo.max(sp.saturating_sub(RED_ZONE)).min(span.hi);
                }
            }
            let job = scan::Job {
                set: &state.sampled,
                buckets: &state.buckets,
                roots: &spans,
                fd,
                time_budget_ns: opts.time_budget.as_nanos().min(u128::from(u64::MAX)) as u64,
                memory_budget: opts.memory_budget,
            };
            let t_fork = Instant::now();
            let pid = raw_fork();
            if pid == 0 {
                let code = scan::child_main(&job);
                // SAFETY: ends the child at once, as a forked child must.
                unsafe { libc::_exit(code) };
            }
            (pid, t_fork.elapsed())
        });
        let pause = t_stop.elapsed();
        // A scan that could not run, or whose child died, still answers: an
        // empty profile whose comments say why.
        let failed = |why: String| {
            let stats = ScanStats { pause, fork, partial: vec![why], total: start.elapsed(), ..ScanStats::default() };
            let empty = Profile::from_named(&[], 1, crate::SampleType::InuseSpace);
            Ok(HolderScan { profile: chains::with_comments(empty, &stats), stats })
        };
        if pid < 0 {
            return failed(format!("the fork failed: {}", std::io::Error::last_os_error()));
        }
        drop(write_end);
        let out = read_child(read_end, pid, opts.time_budget * 2 + Duration::from_secs(1));
        let status = wait_child(pid);
        let bytes = match out {
            Ok(bytes) => bytes,
            Err(e) => return failed(e),
        };
        let parsed = match chains::parse(&bytes) {
            Ok(parsed) => parsed,
            Err(e) => {
                let status = status.map_or_else(String::new, |s| format!(" (child exit status {s:#x})"));
                return failed(format!("the scan failed: {e}{status}"));
            }
        };
        drop(bytes);
        let mut stats = ScanStats {
            roots: spans.len() as u64,
            root_bytes: spans.iter().map(|s| (s.hi - s.lo) as u64).sum(),
            pause,
            fork,
            threads: threads.len() as u64,
            threads_stopped: sps.iter().filter(|s| s.is_some()).count() as u64,
            ..ScanStats::default()
        };
        let others = threads.len() as u64 - u64::from(threads.iter().any(|t| t.tid == crate::threads::current_tid()));
        if stats.threads_stopped < others {
            stats.partial.push(format!(
                "{} of {others} threads did not stop within {STOP_WAIT:?}: their whole stacks were scanned, their \
                 registers were not",
                others - stats.threads_stopped
            ));
        }
        let profile = chains::build(&parsed, &roots, state, opts, &mut stats);
        stats.total = start.elapsed();
        Ok(HolderScan { profile: chains::with_comments(profile, &stats), stats })
    }
}

/// How long the scan waits for the other threads to stop.
/// A thread gets the signal when it is next scheduled: on a loaded
/// machine, that can take a good part of a second.
const STOP_WAIT: Duration = Duration::from_secs(1);
/// Bytes below a stopped thread's stack pointer that are still scanned
/// (x86_64's red zone is 128).
const RED_ZONE: usize = 256;

/// `fork` as a raw system call: glibc's `fork` runs its atfork handlers,
/// which take the allocator's locks, and a stopped thread may hold one.
fn raw_fork() -> i32 {
    // SAFETY: clone with only SIGCHLD is fork: a copy-on-write child that
    // runs on a copy of this stack. The child only runs `scan::child_main`.
    unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_long, 0, 0, 0, 0) as i32 }
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two new descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Reads the child's output until it closes the pipe; kills it past
/// `limit`.
fn read_child(fd: OwnedFd, pid: i32, limit: Duration) -> Result<Scrubbed<u8>, String> {
    let deadline = Instant::now() + limit;
    let mut file = std::fs::File::from(fd);
    let mut out = Scrubbed::<u8>::default();
    let mut buf = Scrubbed(vec![0u8; 1 << 16]);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            // SAFETY: signals our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return Err(format!("the scan took longer than {limit:?} and was stopped"));
        }
        let mut pfd = libc::pollfd { fd: std::os::fd::AsRawFd::as_raw_fd(&file), events: libc::POLLIN, revents: 0 };
        let ms = left.as_millis().min(1000) as i32;
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, ms.max(1)) };
        // Nothing yet, or a signal (EINTR): back to the deadline's check,
        // never into a read that could block past it.
        if r <= 0 {
            continue;
        }
        match file.read(&mut buf.0) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf.0[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading the scan's output: {e}")),
        }
    }
}

/// A `Vec` of the child's output (block addresses), zeroed before its
/// memory goes back to the allocator, on growth too: a conservative scan
/// reads a block's bytes whether or not its owner wrote them, and the next
/// block allocated there must not point at every block the last scan saw.
#[derive(Default)]
pub(crate) struct Scrubbed<T: Copy>(pub Vec<T>);

impl<T: Copy> Scrubbed<T> {
    /// `Vec::extend_from_slice`, growing into a new buffer (doubling) and
    /// scrubbing the old one instead of letting `realloc` free it as is.
    fn extend_from_slice(&mut self, more: &[T]) {
        if self.0.capacity() - self.0.len() < more.len() {
            let want = (self.0.len() + more.len()).max(self.0.capacity() * 2).max(1 << 16);
            let mut bigger = Vec::with_capacity(want);
            bigger.extend_from_slice(&self.0);
            scrub(&mut std::mem::replace(&mut self.0, bigger));
        }
        self.0.extend_from_slice(more);
    }
}

impl<T: Copy> std::ops::Deref for Scrubbed<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<T: Copy> Drop for Scrubbed<T> {
    fn drop(&mut self) {
        scrub(&mut self.0);
    }
}

/// Zeroes all of `v`'s buffer, spare capacity included.
fn scrub<T: Copy>(v: &mut Vec<T>) {
    let bytes = v.capacity() * std::mem::size_of::<T>();
    let p = v.as_mut_ptr().cast::<u8>();
    // SAFETY: `p` is the start of `v`'s buffer of `capacity` elements
    // (dangling but valid for zero bytes when it has none); `T: Copy` has no
    // drop glue, and `v` is emptied so that nothing reads the zeroed values
    // as `T`s.
    unsafe {
        v.set_len(0);
        std::ptr::write_bytes(p, 0, bytes);
    }
    // The stores must happen although the buffer is freed next.
    std::hint::black_box(p);
}

fn wait_child(pid: i32) -> Option<i32> {
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Some(status);
        }
        // SAFETY: reads errno.
        if r < 0 && unsafe { *libc::__errno_location() } != libc::EINTR {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubbed_buffers_keep_their_contents_across_growth_and_zero_on_scrub() {
        let mut out = Scrubbed::<u8>::default();
        let mut expect = Vec::new();
        for i in 0..40_000u32 {
            let piece = i.to_ne_bytes();
            out.extend_from_slice(&piece);
            expect.extend_from_slice(&piece);
        }
        assert_eq!(&out[..], &expect[..]);
        let mut v = vec![0xAAu8; 100];
        v.truncate(10);
        let p = v.as_ptr();
        scrub(&mut v);
        assert!(v.is_empty());
        // SAFETY: `v` still owns its 100-byte buffer (only its length is 0).
        assert!(unsafe { std::slice::from_raw_parts(p, 100) }.iter().all(|&b| b == 0), "spare capacity too");
    }
}
