//! All criterion benchmarks: `cargo bench -p benches`.

mod pool;

criterion::criterion_main!(pool::benches);
