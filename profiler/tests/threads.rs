//! Eight threads allocate, reallocate and free concurrently (blocks also
//! move between threads and are freed where they were not allocated) while
//! another thread takes snapshots and profiles: nothing deadlocks, no free
//! is lost or counted twice, and in-use goes back to zero.
//! (Its own binary for its own `#[global_allocator]`: see `common/mod.rs`.)

mod common;

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{function_values, Rng};
use profiler::{Profiler, Snapshot};

#[global_allocator]
static PROFILER: Profiler = Profiler::new();

const THREADS: usize = 8;
const OPS_PER_THREAD: usize = 250_000;
const SLOTS: usize = 64;
/// A small rate, so that most operations take the sampled paths.
const RATE: usize = 4096;

#[inline(never)]
fn worker_alloc(size: usize) -> Vec<u8> {
    black_box(Vec::with_capacity(size))
}

#[inline(never)]
fn worker_grow(v: &mut Vec<u8>, extra: usize) {
    v.reserve_exact(v.capacity() + extra);
    black_box(v.as_ptr());
}

#[inline(never)]
fn worker_shrink(v: &mut Vec<u8>) {
    v.extend_from_slice(&[7; 8]);
    v.shrink_to_fit();
    black_box(v.as_ptr());
}

fn worker(seed: u64, exchange: &Mutex<Vec<Vec<u8>>>) {
    let mut rng = Rng(seed);
    let mut slots: Vec<Option<Vec<u8>>> = (0..SLOTS).map(|_| None).collect();
    for _ in 0..OPS_PER_THREAD {
        let i = rng.range(0, SLOTS - 1);
        match (rng.next() % 8, slots[i].take()) {
            (_, None) => slots[i] = Some(worker_alloc(rng.range(16, 8192))),
            (0 | 1, Some(mut v)) => {
                worker_grow(&mut v, rng.range(1, 8192));
                slots[i] = Some(v);
            }
            (2, Some(mut v)) => {
                worker_shrink(&mut v);
                slots[i] = Some(v);
            }
            (3, Some(v)) => {
                // Hand the block to another thread; maybe take one back.
                let mut ex = exchange.lock().unwrap();
                ex.push(v);
                if ex.len() > 32 {
                    slots[i] = ex.pop();
                }
            }
            (_, Some(v)) => drop(v),
        }
    }
}

/// Every sampled block is either still recorded as live or was freed once:
/// `sum(alloc) - sum(free) == live samples` when no thread allocates.
fn sampled_balance(snapshot: &Snapshot) -> i64 {
    snapshot.records().iter().map(|r| r.alloc_objects as i64 - r.free_objects as i64).sum()
}

#[test]
fn eight_threads_with_concurrent_snapshots() {
    PROFILER.set_rate(RATE);
    let baseline = PROFILER.stats().live_samples;
    let done = AtomicBool::new(false);
    let exchange = Mutex::new(Vec::new());
    let started = Instant::now();
    let (snapshots, profiles) = std::thread::scope(|s| {
        // A watchdog: a deadlock fails the test instead of hanging CI.
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                if started.elapsed() > Duration::from_secs(600) {
                    eprintln!("deadlock: threads did not finish in 600 s");
                    std::process::abort();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let observer = s.spawn(|| {
            let (mut snapshots, mut profiles) = (0, 0);
            while !done.load(Ordering::Relaxed) {
                let snap = PROFILER.snapshot();
                for r in snap.records() {
                    assert!(r.free_objects <= r.alloc_objects, "{r:?}");
                }
                snapshots += 1;
                if snapshots % 8 == 0 {
                    black_box(PROFILER.heap_profile().encode_gzip());
                    profiles += 1;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (snapshots, profiles)
        });
        let workers: Vec<_> = (0..THREADS as u64)
            .map(|t| {
                let exchange = &exchange;
                s.spawn(move || worker(0x9e37_79b9 ^ (t + 1) << 20, exchange))
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        done.store(true, Ordering::Relaxed);
        observer.join().unwrap()
    });
    drop(exchange.into_inner().unwrap());
    println!("{snapshots} snapshots and {profiles} profiles while the workers ran, in {:?}", started.elapsed());
    assert!(snapshots > 0 && profiles > 0);

    let stats = PROFILER.stats();
    let snapshot = PROFILER.snapshot();
    println!("{stats:?}");
    assert_eq!(stats.dropped_samples, 0);
    assert_eq!(sampled_balance(&snapshot), stats.live_samples as i64, "a free was lost or counted twice");
    assert!(stats.live_samples <= baseline + 16, "{} live samples, {baseline} before", stats.live_samples);

    let profile = snapshot.heap_profile();
    for f in ["threads::worker_alloc", "threads::worker_grow", "threads::worker_shrink"] {
        let v = function_values(&profile, f);
        assert!(v[0] > 0, "{f} was never sampled");
        assert_eq!(v[2..], [0, 0], "{f} still in use");
    }
}
