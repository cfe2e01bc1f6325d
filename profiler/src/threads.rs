//! The stacks of the process's threads, for the holder scan's roots.
//!
//! A thread registers its stack (the mapping `pthread_getattr_np` reports,
//! and its kernel thread id) the first time it allocates while holder mode
//! is on. The table is fixed, lock-free and allocation-free, like the
//! sampling tables: a slot is claimed by a compare-and-swap of its thread
//! id. When it is full, the slot of a thread that no longer exists
//! (`/proc/self/task/TID` is gone) is taken over.
//!
//! Threads that never allocate while holder mode is on are not in the
//! table, and their stacks are not scanned; a worker thread of an async
//! runtime allocates at its first task.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

/// Threads whose stacks can be registered at once.
pub(crate) const THREAD_CAPACITY: usize = 4096;

struct Slot {
    tid: AtomicU32,
    lo: AtomicUsize,
    hi: AtomicUsize,
    tp: AtomicUsize,
    /// The stack pointer the thread's stop handler saw (0 = not stopped).
    sp: AtomicUsize,
    /// When it was registered (a process-wide count): of two slots with one
    /// thread id (an exited thread's id reused), the newer is the thread's.
    registered: AtomicUsize,
}

/// Registrations so far.
static REGISTRATIONS: AtomicUsize = AtomicUsize::new(0);

static SLOTS: [Slot; THREAD_CAPACITY] = [const {
    Slot {
        tid: AtomicU32::new(0),
        lo: AtomicUsize::new(0),
        hi: AtomicUsize::new(0),
        tp: AtomicUsize::new(0),
        sp: AtomicUsize::new(0),
        registered: AtomicUsize::new(0),
    }
}; THREAD_CAPACITY];

thread_local! {
    /// Set once this thread has a slot (or is known to have no stack bounds).
    static REGISTERED: Cell<bool> = const { Cell::new(false) };
    /// This thread's slot, for its stop handler; `usize::MAX` if none.
    static MY_SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// One registered thread: kernel id, stack bounds `[lo, hi)`, and its
/// thread pointer (where its static thread-local storage ends; inside the
/// stack mapping for threads that `pthread_create` made, elsewhere for the
/// main thread).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ThreadStack {
    pub tid: u32,
    pub lo: usize,
    pub hi: usize,
    pub tp: usize,
    /// Its slot in the table (for [`stop_the_world`]).
    pub slot: usize,
}

/// Registers the calling thread, once. Makes no call to any allocator
/// (glibc's `pthread_getattr_np` reads `/proc/self/maps` with its own
/// malloc for the main thread, not through Rust's global allocator).
#[inline]
pub(crate) fn register_current() {
    if REGISTERED.with(Cell::get) {
        return;
    }
    register_slow();
}

#[cold]
fn register_slow() {
    REGISTERED.with(|r| r.set(true));
    let Some((lo, hi)) = crate::stack::query_stack_bounds() else { return };
    let tid = current_tid();
    if tid == 0 {
        return;
    }
    for pass in 0..2 {
        for (index, slot) in SLOTS.iter().enumerate() {
            let cur = slot.tid.load(Ordering::Relaxed);
            // A slot being claimed (`u32::MAX`) is never taken over.
            let free = cur == 0 || (pass == 1 && cur != u32::MAX && !thread_alive(cur));
            if free && slot.tid.compare_exchange(cur, u32::MAX, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                slot.lo.store(lo, Ordering::Relaxed);
                slot.hi.store(hi, Ordering::Relaxed);
                slot.tp.store(thread_pointer(), Ordering::Relaxed);
                slot.sp.store(0, Ordering::Relaxed);
                slot.registered.store(REGISTRATIONS.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
                // Release publishes the bounds written above.
                slot.tid.store(tid, Ordering::Release);
                MY_SLOT.with(|m| m.set(index));
                return;
            }
        }
    }
}

/// Every registered thread that is still alive, once each (a reused
/// thread id goes with its newest registration).
pub(crate) fn live_threads() -> Vec<ThreadStack> {
    let mut out: Vec<(usize, ThreadStack)> = Vec::new();
    for (index, slot) in SLOTS.iter().enumerate() {
        let tid = slot.tid.load(Ordering::Acquire);
        if tid == 0 || tid == u32::MAX || !thread_alive(tid) {
            continue;
        }
        let t = ThreadStack {
            tid,
            lo: slot.lo.load(Ordering::Relaxed),
            hi: slot.hi.load(Ordering::Relaxed),
            tp: slot.tp.load(Ordering::Relaxed),
            slot: index,
        };
        let when = slot.registered.load(Ordering::Relaxed);
        match out.iter_mut().find(|(_, o)| o.tid == tid) {
            Some(seen) if seen.0 < when => *seen = (when, t),
            Some(_) => {}
            None => out.push((when, t)),
        }
    }
    out.into_iter().map(|(_, t)| t).collect()
}

/// Stops every registered thread but the caller in a signal handler
/// (a real-time signal, as Go's preemption uses `SIGURG`), so that each one's
/// registers are saved in the signal frame on its own stack and its stack
/// pointer is known; runs `f` while they are stopped, then lets them go.
/// Returns `f`'s result and, per thread of `threads`, the stack pointer
/// its handler saw (`None`: it did not stop within `wait`).
///
/// `f` must not allocate or take any lock another thread may hold (a
/// stopped thread may hold one): it is meant for a raw `fork`.
pub(crate) fn stop_the_world<R>(
    threads: &[ThreadStack],
    wait: std::time::Duration,
    sps: &mut [Option<usize>],
    f: impl FnOnce(&[Option<usize>]) -> R,
) -> R {
    let signal = stop_signal();
    let me = current_tid();
    // SAFETY: getpid cannot fail.
    let pid = unsafe { libc::getpid() };
    RELEASE.store(0, Ordering::SeqCst);
    ACKS.store(0, Ordering::SeqCst);
    let mut sent = 0u32;
    for t in threads {
        if t.tid == me {
            continue;
        }
        SLOTS[t.slot].sp.store(0, Ordering::SeqCst);
        // SAFETY: sends a signal whose handler (installed above) only
        // stores to atomics and waits on a futex.
        if unsafe { libc::syscall(libc::SYS_tgkill, pid, t.tid as libc::c_long, signal as libc::c_long) } == 0 {
            sent += 1;
        }
    }
    let deadline = std::time::Instant::now() + wait;
    while ACKS.load(Ordering::Acquire) < sent && std::time::Instant::now() < deadline {
        std::hint::spin_loop();
        // SAFETY: a plain syscall.
        unsafe { libc::sched_yield() };
    }
    for (t, sp) in threads.iter().zip(sps.iter_mut()) {
        let seen = SLOTS[t.slot].sp.load(Ordering::Acquire);
        *sp = (seen != 0).then_some(seen);
    }
    let r = f(sps);
    RELEASE.store(1, Ordering::SeqCst);
    // SAFETY: wakes every waiter of the futex word `RELEASE`.
    unsafe {
        libc::syscall(libc::SYS_futex, RELEASE.as_ptr(), libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, i32::MAX);
    }
    r
}

/// Stopped threads that have acknowledged.
static ACKS: AtomicU32 = AtomicU32::new(0);
/// The futex word stopped threads wait on: 1 = go on.
static RELEASE: AtomicU32 = AtomicU32::new(1);
static SIGNAL: std::sync::OnceLock<libc::c_int> = std::sync::OnceLock::new();

/// The stop signal, its handler installed at first use.
fn stop_signal() -> libc::c_int {
    *SIGNAL.get_or_init(|| {
        let signal = libc::SIGRTMIN() + 6;
        // SAFETY: installs a handler that is async-signal-safe (atomics, a
        // futex syscall, a thread-local `Cell` read); SA_RESTART resumes
        // interrupted system calls; no SA_ONSTACK, so that the handler runs
        // on the thread's own stack, which the scan reads.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_stop as *const () as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
        signal
    })
}

extern "C" fn on_stop(_signal: libc::c_int) {
    // The interrupted code may be about to read errno: give it back as it was.
    // SAFETY: reads the calling thread's errno.
    let saved_errno = unsafe { *libc::__errno_location() };
    let marker = 0u8;
    let sp = std::hint::black_box(&marker) as *const u8 as usize;
    let index = MY_SLOT.with(Cell::get);
    if let Some(slot) = SLOTS.get(index) {
        slot.sp.store(sp, Ordering::Release);
    }
    ACKS.fetch_add(1, Ordering::AcqRel);
    let started = std::time::Instant::now();
    while RELEASE.load(Ordering::Acquire) == 0 {
        let timeout = libc::timespec { tv_sec: 0, tv_nsec: 50_000_000 };
        // SAFETY: waits while the futex word is 0, at most 50 ms a time.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                RELEASE.as_ptr(),
                libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                0,
                &timeout as *const libc::timespec,
            );
        }
        // Never stay stopped for long, whatever happens to the scanner.
        if started.elapsed() > std::time::Duration::from_secs(2) {
            break;
        }
    }
    std::hint::black_box(&marker);
    // SAFETY: restores the calling thread's errno.
    unsafe { *libc::__errno_location() = saved_errno };
}

/// The kernel id of the calling thread.
pub(crate) fn current_tid() -> u32 {
    // SAFETY: gettid takes no argument and cannot fail.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    u32::try_from(tid).unwrap_or(0)
}

/// The calling thread's thread pointer (0 where unknown).
fn thread_pointer() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        let tp: usize;
        // SAFETY: reads the TCB's self-pointer at %fs:0, which glibc and musl
        // set up for every thread before it runs any code.
        unsafe { std::arch::asm!("mov {}, fs:0", out(reg) tp, options(nostack, readonly, preserves_flags)) };
        tp
    }
    #[cfg(target_arch = "aarch64")]
    {
        let tp: usize;
        // SAFETY: reads a system register; touches no memory.
        unsafe { std::arch::asm!("mrs {}, tpidr_el0", out(reg) tp, options(nomem, nostack, preserves_flags)) };
        tp
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        0
    }
}

/// Whether `/proc/self/task/TID` exists, checked without allocating.
fn thread_alive(tid: u32) -> bool {
    let mut path = [0u8; 40];
    let prefix = b"/proc/self/task/";
    path[..prefix.len()].copy_from_slice(prefix);
    let mut digits = [0u8; 10];
    let mut n = 0;
    let mut t = tid;
    loop {
        digits[n] = b'0' + (t % 10) as u8;
        n += 1;
        t /= 10;
        if t == 0 {
            break;
        }
    }
    for i in 0..n {
        path[prefix.len() + i] = digits[n - 1 - i];
    }
    // SAFETY: `path` is NUL-terminated (zeroed past the digits).
    unsafe { libc::access(path.as_ptr().cast(), libc::F_OK) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_register_and_leave() {
        register_current();
        let me = current_tid();
        let here = &me as *const u32 as usize;
        let found = live_threads().into_iter().find(|t| t.tid == me).expect("this thread is registered");
        assert!(found.lo <= here && here < found.hi, "{found:?} does not hold {here:#x}");
        let other = std::thread::spawn(|| {
            register_current();
            current_tid()
        })
        .join()
        .unwrap();
        // A thread that has exited is no longer listed (the kernel removes
        // its /proc entry just after the join can return).
        let gone = (0..1000).any(|_| {
            let gone = live_threads().iter().all(|t| t.tid != other);
            if !gone {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            gone
        });
        assert!(gone, "thread {other} still listed");
        assert!(thread_alive(me));
    }
}
