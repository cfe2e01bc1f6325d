//! The hook allocates nothing: with a counting allocator under the
//! profiler, each allocation, reallocation and free of the program reaches
//! the inner allocator exactly once, even when every one of them is sampled
//! (stack capture, table updates, sampled-set bookkeeping). Like pprof-rs's
//! `test_no_alloc_during_unwind`.
//! (Its own binary for its own `#[global_allocator]`: see `common/mod.rs`.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;

use profiler::{Profiler, DEFAULT_RATE};

/// Counts the calls that reach it, per thread (the test harness's other
/// threads may allocate meanwhile).
struct Counting;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Calls {
    alloc: u64,
    alloc_zeroed: u64,
    realloc: u64,
    dealloc: u64,
}

thread_local! {
    static CALLS: Cell<Calls> = const { Cell::new(Calls { alloc: 0, alloc_zeroed: 0, realloc: 0, dealloc: 0 }) };
}

fn count(f: impl FnOnce(&mut Calls)) {
    CALLS.with(|c| {
        let mut calls = c.get();
        f(&mut calls);
        c.set(calls);
    });
}

fn calls() -> Calls {
    CALLS.with(Cell::get)
}

// SAFETY: forwards every call to `System` unchanged; counting touches only a
// thread-local without allocating.
unsafe impl GlobalAlloc for Counting {
    /// # Safety
    /// The contract of [`GlobalAlloc::alloc`].
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(|c| c.alloc += 1);
        // SAFETY: the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    /// # Safety
    /// The contract of [`GlobalAlloc::alloc_zeroed`].
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(|c| c.alloc_zeroed += 1);
        // SAFETY: the caller upholds `alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    /// # Safety
    /// The contract of [`GlobalAlloc::realloc`].
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(|c| c.realloc += 1);
        // SAFETY: the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    /// # Safety
    /// The contract of [`GlobalAlloc::dealloc`].
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(|c| c.dealloc += 1);
        // SAFETY: the caller upholds `dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static PROFILER: Profiler<Counting> = Profiler::with_allocator(Counting);

const N: u64 = 20_000;

/// Runs `N` rounds of alloc, alloc_zeroed, realloc and two frees through the
/// global allocator and returns the calls that reached `Counting`.
#[inline(never)]
fn churn(size: usize) -> Calls {
    let before = calls();
    for i in 0..N as usize {
        let layout = Layout::from_size_align(size + i % 64, 8).unwrap();
        // SAFETY: non-zero layouts; each block is freed once, with the
        // layout it has at that time.
        unsafe {
            let a = std::alloc::alloc(layout);
            let b = std::alloc::alloc_zeroed(layout);
            assert!(!a.is_null() && !b.is_null());
            let a = std::alloc::realloc(a, layout, layout.size() * 2);
            assert!(!a.is_null());
            black_box((a, b));
            std::alloc::dealloc(a, Layout::from_size_align(layout.size() * 2, 8).unwrap());
            std::alloc::dealloc(b, layout);
        }
    }
    let after = calls();
    Calls {
        alloc: after.alloc - before.alloc,
        alloc_zeroed: after.alloc_zeroed - before.alloc_zeroed,
        realloc: after.realloc - before.realloc,
        dealloc: after.dealloc - before.dealloc,
    }
}

#[test]
fn the_hook_does_not_allocate() {
    let once = Calls { alloc: N, alloc_zeroed: N, realloc: N, dealloc: 2 * N };

    // Every allocation sampled: the slow path each time. The first sample
    // of the process maps the tables (mmap, not an allocation) and the first
    // of each thread asks for its stack bounds; warm those up first.
    PROFILER.set_rate(1);
    churn(64);
    let sampled_before = PROFILER.snapshot().records().iter().map(|r| r.alloc_objects).sum::<u64>();
    assert_eq!(churn(64), once);
    let sampled_after = PROFILER.snapshot().records().iter().map(|r| r.alloc_objects).sum::<u64>();
    assert_eq!(sampled_after - sampled_before, 3 * N, "every allocation and realloc was sampled");

    // A new thread, sampled from its first allocation on.
    let on_thread = std::thread::spawn(|| churn(64)).join().unwrap();
    assert_eq!(on_thread, once);

    // The default rate: mostly the fast path, some samples.
    PROFILER.set_rate(DEFAULT_RATE);
    assert_eq!(churn(4096), once);

    // Allocations the profiler makes while writing a profile go to the
    // inner allocator, are counted, but are never sampled.
    PROFILER.set_rate(1);
    let live = PROFILER.stats().live_samples;
    let profile = PROFILER.heap_profile();
    assert!(!profile.proto().sample.is_empty());
    assert_eq!(PROFILER.stats().live_samples, live);
    assert_eq!(PROFILER.stats().dropped_samples, 0);
}
