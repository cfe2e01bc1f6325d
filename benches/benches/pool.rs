//! Pool lease/release against a plain `Vec` allocation of the same size.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use rpc::{Pool, PoolConfig, Taker};

const SIZES: [usize; 5] = [64, 1 << 10, 8 << 10, 64 << 10, 1 << 20];

pub fn lease_release(c: &mut Criterion) {
    let mut group = c.benchmark_group("pool_lease_release");
    let pool = Pool::new(PoolConfig::default());
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("pool", size), &size, |b, &size| {
            b.iter(|| {
                let mut chunk = pool.lease(black_box(size), Taker::User("bench"));
                chunk.spare_mut()[0] = 1;
                chunk.freeze_to(1);
                black_box(chunk.bytes(0..1))
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

criterion::criterion_group!(benches, lease_release);
