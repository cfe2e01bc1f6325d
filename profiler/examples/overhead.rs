//! What the profiler costs per allocation: nanoseconds per alloc + free
//! pair, through the system allocator directly and through the profiler at
//! rates 0 (counting only), 512 KiB (the default) and 1 (every allocation
//! sampled), and the cost of writing a profile.
//!
//! ```text
//! cargo run --release -p profiler --example overhead
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::time::Instant;

use profiler::{Profiler, DEFAULT_RATE};

#[global_allocator]
static PROFILER: Profiler = Profiler::new();

const N: usize = 2_000_000;

#[inline(never)]
fn pairs_through_global(size: usize) -> f64 {
    let layout = Layout::from_size_align(size, 8).unwrap();
    let start = Instant::now();
    for _ in 0..N {
        // SAFETY: a valid non-zero layout; the block is freed at once.
        unsafe {
            let p = std::alloc::alloc(black_box(layout));
            std::alloc::dealloc(black_box(p), layout);
        }
    }
    start.elapsed().as_nanos() as f64 / N as f64
}

#[inline(never)]
fn pairs_through_system(size: usize) -> f64 {
    let layout = Layout::from_size_align(size, 8).unwrap();
    let start = Instant::now();
    for _ in 0..N {
        // SAFETY: as above, on the system allocator directly.
        unsafe {
            let p = System.alloc(black_box(layout));
            System.dealloc(black_box(p), layout);
        }
    }
    start.elapsed().as_nanos() as f64 / N as f64
}

fn main() {
    println!("ns per alloc+free pair, {N} pairs each");
    println!("{:>8} {:>10} {:>10} {:>12} {:>10}", "size", "System", "rate 0", "rate 512KiB", "rate 1");
    for size in [64, 1024, 16 * 1024] {
        let system = pairs_through_system(size);
        PROFILER.set_rate(0);
        let off = pairs_through_global(size);
        PROFILER.set_rate(DEFAULT_RATE);
        let default = pairs_through_global(size);
        PROFILER.set_rate(1);
        let every = pairs_through_global(size);
        println!("{size:>8} {system:>10.1} {off:>10.1} {default:>12.1} {every:>10.1}");
    }

    // A free of an unsampled block while many sampled blocks are live: the
    // filter in front of the sampled set has to say "no".
    PROFILER.set_rate(1);
    let live: Vec<Box<[u8; 32]>> = (0..100_000).map(|_| Box::new([0u8; 32])).collect();
    PROFILER.set_rate(0);
    let with_live = pairs_through_global(64);
    println!("rate 0 with 100000 live sampled blocks: {with_live:.1} ns per pair");
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
