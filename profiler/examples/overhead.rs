//! What the profiler costs per allocation: nanoseconds per alloc + free
//! pair through the system allocator directly, through it behind a call
//! (what `#[global_allocator] static A: System` costs: the share of any
//! global allocator), through the profiler's `GlobalAlloc` methods called
//! directly (`hook`: its own cost, to compare with `System`) at rates 0
//! (profiling off, bytes and blocks still counted) and 512 KiB (the
//! default), and through `std::alloc` as a program reaches it (`std`: std
//! adds a call per allocation, whatever the global allocator) at rates 0,
//! 512 KiB and 1 (every allocation sampled); then frees among live sampled
//! blocks, and the cost of writing a profile.
//!
//! ```text
//! cargo run --release -p profiler --example overhead [-- ROUNDS]
//! ```
//!
//! The machine may be shared, so absolute timings drift from one second to
//! the next: each round measures every column once, one after the other
//! (starting with a different column each round), and each column is
//! compared with the `System` figure of its own round. Printed per column:
//! the median over rounds of the nanoseconds per pair, of the ratio to
//! `System` and of the difference from it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::time::Instant;

use profiler::{Profiler, DEFAULT_RATE};

#[global_allocator]
static PROFILER: Profiler = Profiler::new();

/// Pairs per measurement: about a millisecond, shorter than a time slice
/// of a busy machine, so that most measurements run undisturbed.
const PAIRS: usize = 100_000;
/// Rounds for 64-byte blocks, the headline; other rows get a third.
const ROUNDS: usize = 31;

#[derive(Debug, Clone, Copy)]
enum Column {
    System,
    /// `System` behind a call, as `#[global_allocator] static A: System`
    /// would be reached: what any global allocator costs before its own
    /// work.
    Shim,
    /// Through `std::alloc`, as a program's `Box` and `Vec` reach the
    /// global allocator (std adds a call of its own to every allocation,
    /// whatever the allocator).
    Rate(usize),
    /// The profiler's `GlobalAlloc` methods called directly, as the
    /// `System` column calls `System`'s: the hook's own cost.
    Hook(usize),
}

impl Column {
    fn title(self) -> String {
        match self {
            Column::System => "System".into(),
            Column::Shim => "System, called".into(),
            Column::Rate(DEFAULT_RATE) => "std, rate 512KiB".into(),
            Column::Rate(r) => format!("std, rate {r}"),
            Column::Hook(DEFAULT_RATE) => "hook, rate 512KiB".into(),
            Column::Hook(r) => format!("hook, rate {r}"),
        }
    }
}

/// Where the example allocates: the system allocator called directly, or
/// the global allocator (the profiler).
trait Heap {
    /// # Safety
    /// `GlobalAlloc::alloc`'s contract.
    unsafe fn alloc(layout: Layout) -> *mut u8;
    /// # Safety
    /// `GlobalAlloc::dealloc`'s contract.
    unsafe fn dealloc(p: *mut u8, layout: Layout);
}

struct Direct;
struct Shim;
struct Global;
/// The profiler called as a `GlobalAlloc` value, without `std::alloc`.
struct Hook;

impl Heap for Hook {
    #[inline]
    unsafe fn alloc(layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds the contract.
        unsafe { GlobalAlloc::alloc(&PROFILER, layout) }
    }
    #[inline]
    unsafe fn dealloc(p: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds the contract.
        unsafe { GlobalAlloc::dealloc(&PROFILER, p, layout) }
    }
}

impl Heap for Direct {
    #[inline]
    unsafe fn alloc(layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds the contract.
        unsafe { System.alloc(layout) }
    }
    #[inline]
    unsafe fn dealloc(p: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds the contract.
        unsafe { System.dealloc(p, layout) }
    }
}

impl Heap for Shim {
    #[inline]
    unsafe fn alloc(layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds the contract.
        unsafe { shim_alloc(layout) }
    }
    #[inline]
    unsafe fn dealloc(p: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds the contract.
        unsafe { shim_dealloc(p, layout) }
    }
}

/// What `__rust_alloc` is for `#[global_allocator] static A: System`.
#[inline(never)]
unsafe fn shim_alloc(layout: Layout) -> *mut u8 {
    // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
    unsafe { System.alloc(layout) }
}

/// What `__rust_dealloc` is for `#[global_allocator] static A: System`.
#[inline(never)]
unsafe fn shim_dealloc(p: *mut u8, layout: Layout) {
    // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
    unsafe { System.dealloc(p, layout) }
}

impl Heap for Global {
    #[inline]
    unsafe fn alloc(layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds the contract.
        unsafe { std::alloc::alloc(layout) }
    }
    #[inline]
    unsafe fn dealloc(p: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds the contract.
        unsafe { std::alloc::dealloc(p, layout) }
    }
}

/// Nanoseconds per alloc + free pair of `size`-byte blocks through `H`.
/// With `ring` 0 each block is freed at once (the allocator hands the same
/// address back each time); else `ring` blocks (a power of two) stay live
/// and each pair frees the oldest, so frees see many addresses.
#[inline(never)]
fn pairs<H: Heap>(size: usize, count: usize, ring: usize) -> f64 {
    let layout = Layout::from_size_align(size, 8).unwrap();
    // SAFETY: a valid non-zero layout.
    let mut live: Vec<*mut u8> = (0..ring).map(|_| unsafe { H::alloc(layout) }).collect();
    let start = Instant::now();
    if ring == 0 {
        for _ in 0..count {
            // SAFETY: a valid non-zero layout; the block is freed at once,
            // through the heap that made it, with its layout.
            unsafe {
                let p = H::alloc(black_box(layout));
                H::dealloc(black_box(p), layout);
            }
        }
    } else {
        for i in 0..count {
            let slot = &mut live[i & (ring - 1)];
            // SAFETY: each block of the ring is freed once, through the
            // heap that made it, with its layout, and replaced.
            unsafe {
                H::dealloc(black_box(*slot), layout);
                *slot = H::alloc(black_box(layout));
            }
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / count as f64;
    for p in live {
        // SAFETY: as above, the last blocks of the ring.
        unsafe { H::dealloc(p, layout) };
    }
    ns
}

fn measure(column: Column, size: usize, ring: usize) -> f64 {
    let ns = measure_at(column, size, ring);
    // The example's own allocations between measurements are never
    // sampled: a block sampled there would stay recorded through the next
    // columns, and every free would then ask the filter of recorded
    // blocks, which a process with profiling off never does. The rows with
    // sampled blocks live measure that case on purpose.
    PROFILER.set_rate(0);
    ns
}

fn measure_at(column: Column, size: usize, ring: usize) -> f64 {
    match column {
        Column::System => pairs::<Direct>(size, PAIRS, ring),
        Column::Shim => pairs::<Shim>(size, PAIRS, ring),
        Column::Rate(rate) => {
            PROFILER.set_rate(rate);
            // Every rate is measured at its steady state, not right after
            // the change.
            pairs::<Global>(size, PAIRS / 20, ring);
            pairs::<Global>(size, PAIRS, ring)
        }
        Column::Hook(rate) => {
            PROFILER.set_rate(rate);
            pairs::<Hook>(size, PAIRS / 20, ring);
            pairs::<Hook>(size, PAIRS, ring)
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Runs `rounds` rounds over `columns` (the first is `System`) and prints
/// one line: each column's median ns per pair, then for the others the
/// median ratio to and difference from `System` of the same round.
fn table_row(label: &str, size: usize, ring: usize, columns: &[Column], rounds: usize) {
    let mut ns: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); columns.len()];
    let mut this = vec![0.0; columns.len()];
    for round in 0..rounds {
        for k in 0..columns.len() {
            let i = (round + k) % columns.len();
            this[i] = measure(columns[i], size, ring);
        }
        for (all, v) in ns.iter_mut().zip(&this) {
            all.push(*v);
        }
    }
    let mut line = format!("{label:>14} {:>7.1}", median(ns[0].clone()));
    for col in &ns[1..] {
        let ratio = median(col.iter().zip(&ns[0]).map(|(c, s)| c / s).collect());
        let diff = median(col.iter().zip(&ns[0]).map(|(c, s)| c - s).collect());
        line += &format!(" {:>7.1} {ratio:>5.2}x {diff:>+6.1}", median(col.clone()));
    }
    println!("{line}");
}

fn header(columns: &[Column]) {
    let mut line = format!("{:>14} {:>7}", "", columns[0].title());
    for c in &columns[1..] {
        line += &format!(" {:>21}", c.title());
    }
    println!("{line}");
}

fn main() {
    // Nothing sampled before the first measurement (see `measure`).
    PROFILER.set_rate(0);
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(ROUNDS).max(1);
    let columns = [
        Column::System,
        Column::Shim,
        Column::Hook(0),
        Column::Hook(DEFAULT_RATE),
        Column::Rate(0),
        Column::Rate(DEFAULT_RATE),
        Column::Rate(1),
    ];
    println!(
        "ns per alloc+free pair: median of {rounds} alternating rounds of {PAIRS} pairs (other rows: {}), \
         then ratio to and difference from System in the same round",
        rounds.div_ceil(3)
    );
    header(&columns);
    table_row("64 B", 64, 0, &columns, rounds);
    // What the rate-0 columns above ran with: no block recorded, so that
    // the thread's line stays open to frees (no check of the recorded set).
    let live_after_first_row = PROFILER.stats().live_samples;
    table_row("1 KiB", 1024, 0, &columns, rounds.div_ceil(3));
    table_row("16 KiB", 16 * 1024, 0, &columns, rounds.div_ceil(3));

    // Frees of unsampled blocks while sampled blocks are live: the filter
    // in front of the set of sampled blocks has to say "no", for blocks at
    // many addresses (a ring of 1024 live 64-byte blocks). 2000 is a 1 GiB
    // heap at the default rate; 100000, a large heap.
    println!("(sampled blocks live after the 64 B row: {live_after_first_row})");
    println!("freeing the oldest of 1024 live 64 B blocks, with sampled blocks live:");
    for n in [0, 2_000, 100_000] {
        PROFILER.set_rate(1);
        let live: Vec<Box<[u8; 32]>> = (0..n).map(|_| Box::new([0u8; 32])).collect();
        table_row(&format!("{n} sampled"), 64, 1024, &columns[..6], rounds.div_ceil(3));
        drop(live);
    }

    PROFILER.set_rate(DEFAULT_RATE);
    let start = Instant::now();
    let profile = PROFILER.heap_profile();
    let first = start.elapsed();
    let start = Instant::now();
    let gz = PROFILER.heap_profile().encode_gzip();
    let again = start.elapsed();
    println!(
        "heap profile: {} samples, first {first:?} (loads debug info), then {again:?}, {} bytes gzip'd",
        profile.proto().sample.len(),
        gz.len()
    );
    println!("{:?}", PROFILER.stats());
}
