//! All criterion benchmarks: `cargo bench -p benches`.

mod codec;
mod echo;
mod pool;

criterion::criterion_main!(pool::benches, codec::benches, echo::benches);
