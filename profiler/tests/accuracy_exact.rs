//! At rate 1 every allocation is recorded: the profile's in-use numbers per
//! function are exact, and go back to exactly zero after the frees.
//! (Its own binary for its own `#[global_allocator]`: see `common/mod.rs`.)

mod common;

use std::hint::black_box;

use common::{function_values, has_function, stack_names, value, Rng};
use profiler::{Profiler, SampleType, Stacks};

#[global_allocator]
static PROFILER: Profiler = Profiler::new();

const PER_FUNCTION: usize = 32 << 20;

#[inline(never)]
fn alloc_from_a(size: usize) -> Vec<u8> {
    black_box(vec![1u8; size])
}

#[inline(never)]
fn alloc_from_b(size: usize) -> Vec<u8> {
    black_box(vec![0u8; size])
}

#[test]
fn exact_mode_counts_every_byte() {
    PROFILER.set_rate(1);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut kept: Vec<Vec<u8>> = Vec::with_capacity(8192);
    let (mut bytes_a, mut bytes_b, mut blocks_a, mut blocks_b) = (0usize, 0usize, 0i64, 0i64);
    while bytes_a < PER_FUNCTION || bytes_b < PER_FUNCTION {
        let size = rng.range(1 << 10, 64 << 10);
        if bytes_a < PER_FUNCTION {
            kept.push(alloc_from_a(size));
            bytes_a += size;
            blocks_a += 1;
        }
        let size = rng.range(1 << 10, 64 << 10);
        if bytes_b < PER_FUNCTION {
            kept.push(alloc_from_b(size));
            bytes_b += size;
            blocks_b += 1;
        }
    }

    let profile = PROFILER.heap_profile();
    let a = function_values(&profile, "accuracy_exact::alloc_from_a");
    let b = function_values(&profile, "accuracy_exact::alloc_from_b");
    assert_eq!(value(a, SampleType::InuseSpace), bytes_a as i64);
    assert_eq!(value(a, SampleType::InuseObjects), blocks_a);
    assert_eq!(value(a, SampleType::AllocSpace), bytes_a as i64);
    assert_eq!(value(b, SampleType::InuseSpace), bytes_b as i64);
    assert_eq!(value(b, SampleType::InuseObjects), blocks_b);
    assert_eq!(PROFILER.stats().dropped_samples, 0);

    // Stacks start at the allocation site, the function that called
    // `vec!`, and go on up to this test.
    let p = profile.proto();
    for s in &p.sample {
        let names = stack_names(p, s);
        if !has_function(&names, "accuracy_exact::alloc_from_a") {
            continue;
        }
        assert!(has_function(&names[..1], "accuracy_exact::alloc_from_a"), "leaf {} in {names:#?}", names[0]);
        assert!(has_function(&names, "accuracy_exact::exact_mode_counts_every_byte"), "{names:#?}");
    }
    // Full stacks have `vec!`'s machinery at the leaf, never the profiler's
    // frames or the allocator shims, and the same numbers.
    let full = PROFILER.profile(SampleType::InuseSpace, Stacks::Full);
    assert_eq!(function_values(&full, "accuracy_exact::alloc_from_a"), a);
    let p = full.proto();
    for s in &p.sample {
        let names = stack_names(p, s);
        if !has_function(&names, "accuracy_exact::alloc_from_a") {
            continue;
        }
        let leaf = names[0];
        assert!(
            (leaf.starts_with("alloc::") || leaf.starts_with("<u8 as alloc::"))
                && !leaf.starts_with("alloc::alloc::")
                && names.iter().all(|n| !n.contains("profiler::") && !n.contains("__rust_alloc")),
            "leaf {leaf} in {names:#?}"
        );
    }

    drop(kept);
    let profile = PROFILER.heap_profile();
    let a = function_values(&profile, "accuracy_exact::alloc_from_a");
    let b = function_values(&profile, "accuracy_exact::alloc_from_b");
    assert_eq!(a[2..], [0, 0]);
    assert_eq!(b[2..], [0, 0]);
    assert_eq!(value(a, SampleType::AllocSpace), bytes_a as i64);
}
