//! What a holder scan costs on a heap of a given size: the scan's time, the
//! fork's pause as another busy thread sees it, and the extra memory.
//!
//! ```sh
//! cargo run --release -p profiler --example holders_scan -- 64 256
//! ```
//!
//! For each size in MiB: builds a heap of that many MiB in blocks of 1 to
//! 64 KiB (a map of vectors, as caches are), reached from a static; a
//! second thread counts in a tight loop and records the longest gap between
//! two of its iterations (the pause it sees); then scans three times and
//! prints the median scan and the worst pause.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use profiler::{HolderOptions, Profiler};

#[global_allocator]
static PROFILER: Profiler = Profiler::new();

static HEAP: Mutex<Option<HashMap<u64, Vec<u8>>>> = Mutex::new(None);

fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[inline(never)]
fn build(mib: usize) {
    let mut map = HashMap::new();
    let mut total = 0usize;
    let mut i = 0u64;
    while total < mib << 20 {
        let size = 1024 << (i % 7); // 1 KiB .. 64 KiB
        map.insert(i, vec![(i % 251) as u8; size]);
        total += size;
        i += 1;
    }
    *HEAP.lock().unwrap() = Some(map);
}

fn main() {
    PROFILER.set_holder_mode(true);
    let sizes: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![64, 256] } else { sizes };
    println!(
        "{:>8} {:>9} {:>10} {:>10} {:>12} {:>12} {:>13} {:>13}",
        "heap MiB", "blocks", "scan ms", "total ms", "fork pause", "worst gap", "scratch MiB", "parent +MiB"
    );
    for mib in sizes {
        *HEAP.lock().unwrap() = None;
        build(mib);
        let stop = AtomicBool::new(false);
        let worst_gap = AtomicU64::new(0);
        let mut scans = Vec::new();
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut last = Instant::now();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n = n.wrapping_add(1);
                    std::hint::black_box(n);
                    let now = Instant::now();
                    let gap = now.duration_since(last).as_micros() as u64;
                    worst_gap.fetch_max(gap, Ordering::Relaxed);
                    last = now;
                }
            });
            std::thread::sleep(Duration::from_millis(100));
            worst_gap.store(0, Ordering::Relaxed);
            let hwm_before = rss_kib("VmRSS:");
            for _ in 0..3 {
                let scan = PROFILER.holders_profile(&HolderOptions::default()).expect("scan");
                scans.push(scan.stats);
            }
            let hwm_after = rss_kib("VmHWM:");
            stop.store(true, Ordering::Relaxed);
            scans.sort_by_key(|s| s.scan);
            let med = &scans[1];
            let worst_pause = scans.iter().map(|s| s.pause).max().unwrap_or_default();
            println!(
                "{:>8} {:>9} {:>10.1} {:>10.1} {:>9.1} ms {:>9.1} ms {:>13.1} {:>13.1}",
                mib,
                med.blocks,
                med.scan.as_secs_f64() * 1e3,
                med.total.as_secs_f64() * 1e3,
                worst_pause.as_secs_f64() * 1e3,
                worst_gap.load(Ordering::Relaxed) as f64 / 1e3,
                med.scratch_bytes as f64 / 1048576.0,
                hwm_after.saturating_sub(hwm_before) as f64 / 1024.0,
            );
            assert!(med.partial.is_empty(), "{:?}", med.partial);
        });
    }
}
