//! At the default rate (one sample per 512 KiB) the scaled in-use estimate
//! of each allocating function is close to the truth, and goes back to zero
//! once everything is freed.
//! (Its own binary for its own `#[global_allocator]`: see `common/mod.rs`.)
//!
//! How close one snapshot can be is statistics, not code: for a function
//! holding `B` bytes in blocks much smaller than the rate, the estimate's
//! relative standard error is about `sqrt(rate / B)`, 12.5% for the 32 MiB
//! each function keeps here. So each round is held to 40% (over 3 standard
//! errors) and the mean of 16 independent rounds to 10% (3.2 standard
//! errors); the seed is fixed, so the test is also reproducible.

mod common;

use std::hint::black_box;

use common::{function_values, value, Rng};
use profiler::{Profiler, SampleType, DEFAULT_RATE};

#[global_allocator]
static PROFILER: Profiler = Profiler::new();

const PER_FUNCTION: usize = 32 << 20;
const ROUNDS: usize = 16;

#[inline(never)]
fn alloc_from_a(size: usize) -> Vec<u8> {
    black_box(vec![1u8; size])
}

#[inline(never)]
fn alloc_from_b(size: usize) -> Vec<u8> {
    black_box(vec![2u8; size])
}

fn inuse_space(profile: &profiler::Profile, function: &str) -> i64 {
    value(function_values(profile, function), SampleType::InuseSpace)
}

#[test]
fn sampled_inuse_is_within_ten_percent() {
    PROFILER.set_rate(DEFAULT_RATE);
    PROFILER.set_seed(0x1ea4_1ab5);
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let (mut sum_a, mut sum_b) = (0f64, 0f64);
    for round in 0..ROUNDS {
        let mut kept: Vec<Vec<u8>> = Vec::with_capacity(8192);
        let (mut bytes_a, mut bytes_b) = (0usize, 0usize);
        while bytes_a < PER_FUNCTION || bytes_b < PER_FUNCTION {
            if bytes_a < PER_FUNCTION {
                let size = rng.range(1 << 10, 64 << 10);
                kept.push(alloc_from_a(size));
                bytes_a += size;
            }
            if bytes_b < PER_FUNCTION {
                let size = rng.range(1 << 10, 64 << 10);
                kept.push(alloc_from_b(size));
                bytes_b += size;
            }
        }
        let profile = PROFILER.heap_profile();
        let ratio_a = inuse_space(&profile, "accuracy_sampled::alloc_from_a") as f64 / bytes_a as f64;
        let ratio_b = inuse_space(&profile, "accuracy_sampled::alloc_from_b") as f64 / bytes_b as f64;
        println!("round {round:2}: a {ratio_a:.3}, b {ratio_b:.3} of the truth");
        assert!((0.6..1.4).contains(&ratio_a), "round {round}: a at {ratio_a} of the truth");
        assert!((0.6..1.4).contains(&ratio_b), "round {round}: b at {ratio_b} of the truth");
        sum_a += ratio_a;
        sum_b += ratio_b;

        drop(kept);
        let profile = PROFILER.heap_profile();
        // Every sampled block was freed: nothing of it is left, not even
        // one sample.
        assert_eq!(inuse_space(&profile, "accuracy_sampled::alloc_from_a"), 0);
        assert_eq!(inuse_space(&profile, "accuracy_sampled::alloc_from_b"), 0);
        // And the whole process is back to a few samples (the test
        // harness's own allocations).
        let total = profile.total(SampleType::InuseSpace);
        assert!(total < 8 * DEFAULT_RATE as i64, "{total} bytes in use");
    }
    let (mean_a, mean_b) = (sum_a / ROUNDS as f64, sum_b / ROUNDS as f64);
    println!("mean over {ROUNDS} rounds: a {mean_a:.3}, b {mean_b:.3}");
    assert!((mean_a - 1.0).abs() < 0.10, "a: {mean_a}");
    assert!((mean_b - 1.0).abs() < 0.10, "b: {mean_b}");
    assert_eq!(PROFILER.stats().dropped_samples, 0);
}
