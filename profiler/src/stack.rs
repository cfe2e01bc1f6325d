//! Call-stack capture by walking frame pointers, without allocating.
//!
//! With frame pointers every frame starts with a record of two words, the
//! caller's frame pointer and the return address:
//!
//! ```text
//!  high addresses (stack top)
//!  ┌──────────────────────┐
//!  │ ...                  │
//!  │ return address       │ ◄─ fp₁ + 8
//!  │ saved fp = fp₂ ──────┼──► caller's record
//!  │ locals of callee     │ ◄─ fp₁ (frame pointer register)
//!  │ ...                  │ ◄─ sp
//!  low addresses
//! ```
//!
//! The walk follows `fp → [fp]` and records `[fp + 8]` until a record leaves
//! the current thread's stack, goes downwards, or `MAX_DEPTH` is reached.
//! Every record is checked to lie between the live stack pointer and the top
//! of the thread's stack before it is read, so a broken chain (a frame
//! compiled without frame pointers that used the register for data) ends the
//! stack early instead of crashing. The stack pointer itself must lie within
//! the thread's stack mapping (its low end as well as its top): on another
//! stack (an alternate signal stack, a coroutine's) `[sp, top)` could span
//! unmapped memory, so nothing is read.
//!
//! What was measured on x86_64-linux with Rust 1.95: the prebuilt standard
//! library is compiled with frame pointers too (its non-leaf functions open
//! with `push rbp; mov rbp, rsp`), so stacks run unbroken through `std`
//! (`Once::call_once`, thread spawn, `Vec` growth: see the tests below).
//! A frame without a frame pointer (glibc, C libraries) that leaves the
//! register untouched only hides itself; the walk ends at the thread's entry
//! point in glibc.
//!
//! The bounds of the stack come from `pthread_getattr_np`, asked once per
//! thread and cached. glibc answers it for the main thread by reading
//! `/proc/self/maps` with its own `malloc` (not Rust's global allocator), once.

use std::cell::Cell;

/// Fills `out` with return addresses, innermost first, starting with the
/// return address into the caller of `capture`; returns how many.
///
/// `bounds` caches the low end and the top of the current thread's stack
/// (see [`crate::sampler::ThreadState::stack_top`]).
#[inline(never)]
pub(crate) fn capture(out: &mut [usize], bounds: &Cell<(usize, usize)>) -> usize {
    let Some((fp, sp)) = registers() else { return 0 };
    let (lo, hi) = stack_bounds(bounds);
    if !live_part_is_ours(sp, lo, hi) {
        // Unknown bounds, or running on a stack that is not the thread's own
        // (a coroutine or an alternate signal stack): reading is not safe.
        return 0;
    }
    // SAFETY: lo <= sp < hi, so [sp, hi) is the live part of this thread's
    // stack mapping: mapped and readable for as long as this function runs.
    unsafe { walk(fp, sp, hi, out) }
}

/// Whether `sp` lies inside the stack mapping `[lo, hi)`, known (`hi > 1`).
fn live_part_is_ours(sp: usize, lo: usize, hi: usize) -> bool {
    hi > 1 && lo < hi && lo <= sp && sp < hi
}

/// Follows the frame-pointer chain from `fp`, reading only inside `[lo, hi)`.
///
/// # Safety
/// Every byte in `[lo, hi)` must be readable for the duration of the call.
pub(crate) unsafe fn walk(mut fp: usize, lo: usize, hi: usize, out: &mut [usize]) -> usize {
    const WORD: usize = std::mem::size_of::<usize>();
    let mut n = 0;
    while n < out.len() {
        if fp < lo || !fp.is_multiple_of(WORD) || fp > hi.saturating_sub(2 * WORD) {
            break;
        }
        // SAFETY: `lo <= fp` and `fp + 2 * WORD <= hi`, so both words lie in
        // `[lo, hi)`, which the caller guarantees readable; `fp` is aligned.
        // Volatile: these are another frame's words, not values this
        // function wrote, and the compiler must read them as they are.
        let (next, ret) = unsafe {
            (std::ptr::read_volatile(fp as *const usize), std::ptr::read_volatile((fp + WORD) as *const usize))
        };
        if ret == 0 {
            break;
        }
        out[n] = ret;
        n += 1;
        if next <= fp {
            // Callers live at higher addresses: anything else is not a frame
            // record, and requiring growth guarantees the walk ends.
            break;
        }
        fp = next;
    }
    n
}

/// This function's frame pointer and the stack pointer.
#[inline(always)]
fn registers() -> Option<(usize, usize)> {
    #[cfg(target_arch = "x86_64")]
    {
        let (fp, sp): (usize, usize);
        // SAFETY: reads two registers into locals; touches no memory.
        unsafe {
            std::arch::asm!("mov {fp}, rbp", "mov {sp}, rsp", fp = out(reg) fp, sp = out(reg) sp,
                options(nomem, nostack, preserves_flags));
        }
        Some((fp, sp))
    }
    #[cfg(target_arch = "aarch64")]
    {
        let (fp, sp): (usize, usize);
        // SAFETY: reads two registers into locals; touches no memory.
        unsafe {
            std::arch::asm!("mov {fp}, x29", "mov {sp}, sp", fp = out(reg) fp, sp = out(reg) sp,
                options(nomem, nostack, preserves_flags));
        }
        Some((fp, sp))
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        None
    }
}

/// The lowest and highest address of the current thread's stack, cached
/// in `bounds`; `(0, 1)` if they cannot be known.
fn stack_bounds(bounds: &Cell<(usize, usize)>) -> (usize, usize) {
    let b = bounds.get();
    if b.1 != 0 {
        return b;
    }
    let b = query_stack_bounds().unwrap_or((0, 1));
    bounds.set(b);
    b
}

/// The calling thread's stack mapping `[lo, hi)`, from `pthread_getattr_np`.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn query_stack_bounds() -> Option<(usize, usize)> {
    // SAFETY: `attr` is initialized by pthread_getattr_np before it is read
    // and destroyed exactly once; the out-pointers are valid locals.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return None;
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let r = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        if r != 0 || addr.is_null() {
            return None;
        }
        Some((addr as usize, (addr as usize).checked_add(size)?))
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn query_stack_bounds() -> Option<(usize, usize)> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::MAX_DEPTH;

    fn names(frames: &[usize]) -> Vec<String> {
        let symbols = crate::symbolize::resolve_all(frames.iter().copied());
        frames.iter().flat_map(|f| symbols[f].iter().map(|s| s.name.clone())).collect()
    }

    #[inline(never)]
    fn grab() -> Vec<usize> {
        let mut out = [0; MAX_DEPTH];
        let bounds = Cell::new((0, 0));
        let n = capture(&mut out, &bounds);
        std::hint::black_box(out[..n].to_vec())
    }

    #[inline(never)]
    fn through_std_once() -> Vec<usize> {
        let once = std::sync::Once::new();
        let mut got = Vec::new();
        once.call_once(|| got = grab());
        got
    }

    #[test]
    fn stack_runs_through_std() {
        let frames = through_std_once();
        let names = names(&frames);
        let pos = |name: &str| names.iter().position(|n| n == name);
        let grab = pos("profiler::stack::tests::grab").expect("leaf frame");
        let once = pos("<std::sys::sync::once::futex::Once>::call")
            .or_else(|| names.iter().position(|n| n.starts_with("std::sync::once::Once::call_once")))
            .expect("a frame of std's Once");
        let outer = pos("profiler::stack::tests::through_std_once").expect("the caller of call_once");
        let test = pos("profiler::stack::tests::stack_runs_through_std").expect("the test function");
        assert!(grab < once && once < outer && outer < test, "{names:#?}");
    }

    #[test]
    fn stack_runs_through_thread_spawn() {
        let frames = std::thread::spawn(grab).join().unwrap();
        let names = names(&frames);
        assert!(names.iter().any(|n| n.contains("std::thread")), "{names:#?}");
        assert!(frames.len() < MAX_DEPTH);
    }

    #[test]
    fn capture_needs_the_stack_pointer_inside_the_mapping() {
        let (lo, hi) = (0x1000, 0x9000);
        assert!(live_part_is_ours(0x1000, lo, hi) && live_part_is_ours(0x8ff8, lo, hi));
        // Below the low end (an alternate signal stack mapped lower), at or
        // above the top, or with unknown bounds: nothing is read.
        assert!(!live_part_is_ours(0x0ff8, lo, hi));
        assert!(!live_part_is_ours(0x9000, lo, hi));
        assert!(!live_part_is_ours(0x2000, 0, 1));
        assert!(!live_part_is_ours(0x2000, hi, lo));
        // This thread's own bounds hold its stack pointer.
        let bounds = Cell::new((0, 0));
        let (lo, hi) = stack_bounds(&bounds);
        let here = &bounds as *const _ as usize;
        assert!(lo < here && here < hi, "{lo:#x} {here:#x} {hi:#x}");
        assert_eq!(bounds.get(), (lo, hi));
    }

    #[test]
    fn chains_leaving_either_end_of_the_stack_are_not_followed() {
        // A fake stack in the middle of a larger array: the walk is given
        // [lo, hi) = words 8..24, and the chain points below and above it.
        let mut memory = [0usize; 32];
        let p = memory.as_mut_ptr();
        let word = |i: usize| p as usize + i * 8;
        let set = |i: usize, v: usize| {
            // SAFETY: i < 32: inside `memory`, written only through `p`.
            unsafe { p.add(i).write(v) }
        };
        let (lo, hi) = (word(8), word(24));
        // Records outside [lo, hi) that a walk must never read: a poisoned
        // return address there would show up in `out`.
        for i in (0..8).chain(24..32) {
            set(i, 0xbad);
        }
        set(10, word(12));
        set(11, 0x1111);
        set(12, word(2)); // below the low end
        set(13, 0x2222);
        let mut out = [0; 8];
        // SAFETY: [lo, hi) is inside the local array `memory`.
        let n = unsafe { walk(word(10), lo, hi, &mut out) };
        assert_eq!(&out[..n], &[0x1111, 0x2222]);
        set(12, word(24)); // at the top: the record would start at `hi`
                           // SAFETY: as above.
        let n = unsafe { walk(word(10), lo, hi, &mut out) };
        assert_eq!(&out[..n], &[0x1111, 0x2222]);
        set(12, word(23)); // straddles the top
                           // SAFETY: as above.
        let n = unsafe { walk(word(10), lo, hi, &mut out) };
        assert_eq!(&out[..n], &[0x1111, 0x2222]);
        // Starting below the low end or above the top reads nothing.
        // SAFETY: as above.
        assert_eq!(unsafe { walk(word(4), lo, hi, &mut out) }, 0);
        // SAFETY: as above.
        assert_eq!(unsafe { walk(word(26), lo, hi, &mut out) }, 0);
        assert!(!out.contains(&0xbad));
        std::hint::black_box(&mut memory);
    }

    #[test]
    fn broken_chains_end_the_walk() {
        // A fake stack whose records point downwards, outside, or misaligned.
        let mut fake = [0usize; 16];
        let p = fake.as_mut_ptr();
        let base = p as usize;
        let (lo, hi) = (base, base + 16 * 8);
        let set = |i: usize, v: usize| {
            // SAFETY: i < 16: inside `fake`, written only through `p`.
            unsafe { p.add(i).write(v) }
        };
        set(0, base + 4 * 8); // -> record at index 4
        set(1, 0x1111);
        set(4, base + 2 * 8); // goes downwards: stop after recording
        set(5, 0x2222);
        let mut out = [0; 8];
        // SAFETY: [lo, hi) is the local array `fake`.
        let n = unsafe { walk(base, lo, hi, &mut out) };
        assert_eq!(&out[..n], &[0x1111, 0x2222]);

        set(4, usize::MAX - 7); // far outside
                                // SAFETY: as above.
        let n = unsafe { walk(base, lo, hi, &mut out) };
        assert_eq!(&out[..n], &[0x1111, 0x2222]);
        set(4, base + 6 * 8); // a record whose return address is 0 ends it
                              // SAFETY: as above.
        let n = unsafe { walk(base, lo, hi, &mut out) };
        assert_eq!(&out[..n], &[0x1111, 0x2222]);
        // SAFETY: as above; misaligned and below-range starts read nothing.
        assert_eq!(unsafe { walk(base + 3, lo, hi, &mut out) }, 0);
        // SAFETY: as above.
        assert_eq!(unsafe { walk(base - 64, lo, hi, &mut out) }, 0);
        // SAFETY: as above; the last record would straddle `hi`.
        assert_eq!(unsafe { walk(hi - 8, lo, hi, &mut out) }, 0);
        // The depth limit holds on a chain that goes on.
        let mut short = [0; 1];
        // SAFETY: as above.
        assert_eq!(unsafe { walk(base, lo, hi, &mut short) }, 1);
        std::hint::black_box(&mut fake);
    }
}
