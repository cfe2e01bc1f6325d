//! Pool lease/release against the system allocator (`Vec`) at the same
//! size, side by side, on one thread and on two.
//!
//! - `pool_lease_release`: lease a chunk, write a byte, give it back; `vec`
//!   allocates a `Vec` of the same capacity, writes a byte, frees it.
//!   `1t` runs on the bench thread; `2t` runs the same loop on two threads at
//!   once (each doing every iteration) and reports the slower thread's time
//!   per iteration, so contention on shared state shows.
//! - `pool_lease_slice_release`: the same with a one-byte slice cut from
//!   the chunk (`chunk.slice(0..1)`, what a decoded field is), against a
//!   `Vec` turned into `Bytes`.
//!
//! Compare the ratio pool/vec at each size within one run: the machine may
//! be shared, absolute times are not.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use rpc::{Pool, PoolConfig, Taker};

const SIZES: [usize; 4] = [64, 4 << 10, 64 << 10, 1 << 20];

/// Runs `op` `iters` times on each of two threads started together; the
/// slower thread's time.
fn on_two_threads(iters: u64, op: impl Fn() + Sync) -> Duration {
    let start = Barrier::new(2);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    let t = Instant::now();
                    for _ in 0..iters {
                        op();
                    }
                    t.elapsed()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("bench thread")).max().unwrap_or_default()
    })
}

fn pool_op(pool: &Pool, size: usize) {
    let mut chunk = pool.lease(black_box(size), Taker::User("bench"));
    chunk.spare_mut()[0] = 1;
    black_box(&mut chunk);
}

fn vec_op(size: usize) {
    let mut v = Vec::<u8>::with_capacity(black_box(size));
    v.push(1);
    black_box(&mut v);
}

pub fn lease_release(c: &mut Criterion) {
    let mut group = c.benchmark_group("pool_lease_release");
    let pool = Pool::new(PoolConfig::default());
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("pool/1t", size), &size, |b, &size| b.iter(|| pool_op(&pool, size)));
        group.bench_with_input(BenchmarkId::new("vec/1t", size), &size, |b, &size| b.iter(|| vec_op(size)));
        group.bench_with_input(BenchmarkId::new("pool/2t", size), &size, |b, &size| {
            b.iter_custom(|iters| on_two_threads(iters, || pool_op(&pool, size)))
        });
        group.bench_with_input(BenchmarkId::new("vec/2t", size), &size, |b, &size| {
            b.iter_custom(|iters| on_two_threads(iters, || vec_op(size)))
        });
    }
    group.finish();
}

pub fn lease_slice_release(c: &mut Criterion) {
    let mut group = c.benchmark_group("pool_lease_slice_release");
    let pool = Pool::new(PoolConfig::default());
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("pool", size), &size, |b, &size| {
            b.iter(|| {
                let mut chunk = pool.lease(black_box(size), Taker::User("bench"));
                chunk.spare_mut()[0] = 1;
                chunk.freeze_to(1);
                black_box(chunk.slice(0..1))
            })
        });
        group.bench_with_input(BenchmarkId::new("vec", size), &size, |b, &size| {
            b.iter(|| {
                let mut v = Vec::<u8>::with_capacity(black_box(size));
                v.push(1);
                black_box(bytes::Bytes::from(v))
            })
        });
    }
    group.finish();
}

criterion::criterion_group!(benches, lease_release, lease_slice_release);
