//! What the profiler costs per allocation: nanoseconds per alloc + free
//! pair through the system allocator directly and through the profiler at
//! rates 0 (profiling off, bytes still counted), 512 KiB (the default) and
//! 1 (every allocation sampled), then the cost of writing a profile.
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

/// Pairs per measurement.
const PAIRS: usize = 200_000;
/// Rounds for 64-byte blocks, the headline; other sizes get a third.
const ROUNDS: usize = 21;

#[derive(Debug, Clone, Copy)]
enum Column {
    System,
    Rate(usize),
}

impl Column {
    fn title(self) -> String {
        match self {
            Column::System => "System".into(),
            Column::Rate(DEFAULT_RATE) => "rate 512KiB".into(),
            Column::Rate(r) => format!("rate {r}"),
        }
    }
}

#[inline(never)]
fn pairs_through_global(size: usize, pairs: usize) -> f64 {
    let layout = Layout::from_size_align(size, 8).unwrap();
    let start = Instant::now();
    for _ in 0..pairs {
        // SAFETY: a valid non-zero layout; the block is freed at once.
        unsafe {
            let p = std::alloc::alloc(black_box(layout));
            std::alloc::dealloc(black_box(p), layout);
        }
    }
    start.elapsed().as_nanos() as f64 / pairs as f64
}

#[inline(never)]
fn pairs_through_system(size: usize, pairs: usize) -> f64 {
    let layout = Layout::from_size_align(size, 8).unwrap();
    let start = Instant::now();
    for _ in 0..pairs {
        // SAFETY: as above, on the system allocator directly.
        unsafe {
            let p = System.alloc(black_box(layout));
            System.dealloc(black_box(p), layout);
        }
    }
    start.elapsed().as_nanos() as f64 / pairs as f64
}

fn measure(column: Column, size: usize) -> f64 {
    match column {
        Column::System => pairs_through_system(size, PAIRS),
        Column::Rate(rate) => {
            PROFILER.set_rate(rate);
            // Every rate is measured at its steady state, not right after
            // the change.
            pairs_through_global(size, PAIRS / 20);
            pairs_through_global(size, PAIRS)
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
fn table_row(label: &str, size: usize, columns: &[Column], rounds: usize) {
    let mut ns: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); columns.len()];
    for round in 0..rounds {
        let mut this = vec![0.0; columns.len()];
        for k in 0..columns.len() {
            let i = (round + k) % columns.len();
            this[i] = measure(columns[i], size);
        }
        for (all, v) in ns.iter_mut().zip(this) {
            all.push(v);
        }
    }
    let mut line = format!("{label:>12} {:>7.1}", median(ns[0].clone()));
    for col in &ns[1..] {
        let ratio = median(col.iter().zip(&ns[0]).map(|(c, s)| c / s).collect());
        let diff = median(col.iter().zip(&ns[0]).map(|(c, s)| c - s).collect());
        line += &format!(" {:>7.1} {ratio:>5.2}x {diff:>+6.1}", median(col.clone()));
    }
    println!("{line}");
}

fn header(columns: &[Column]) {
    let mut line = format!("{:>12} {:>7}", "", columns[0].title());
    for c in &columns[1..] {
        line += &format!(" {:>21}", c.title());
    }
    println!("{line}");
}

fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(ROUNDS).max(1);
    let columns = [Column::System, Column::Rate(0), Column::Rate(DEFAULT_RATE), Column::Rate(1)];
    println!(
        "ns per alloc+free pair: median of {rounds} alternating rounds of {PAIRS} pairs (other sizes: {}), \
         then ratio to and difference from System in the same round",
        rounds.div_ceil(3)
    );
    header(&columns);
    table_row("64 B", 64, &columns, rounds);
    table_row("1 KiB", 1024, &columns, rounds.div_ceil(3));
    table_row("16 KiB", 16 * 1024, &columns, rounds.div_ceil(3));

    // Frees of unsampled blocks while many sampled blocks are live: the
    // filter in front of the set of sampled blocks has to say "no".
    PROFILER.set_rate(1);
    let live: Vec<Box<[u8; 32]>> = (0..100_000).map(|_| Box::new([0u8; 32])).collect();
    println!("with {} sampled blocks live:", live.len());
    table_row("64 B", 64, &columns[..3], rounds.div_ceil(3));
    drop(live);

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
