//! `LEAKLAB_PROFILE_RATE` and `LEAKLAB_PROFILE_SEED` set the starting rate
//! and seed, read at the first allocation: the test runs itself as a child
//! process with them set. Two children with the same seed make the same
//! sampling decisions.
//! (Its own binary for its own `#[global_allocator]`: see `common/mod.rs`.)

use std::hint::black_box;
use std::process::Command;

use profiler::{Profiler, DEFAULT_RATE, RATE_ENV, SEED_ENV};

#[global_allocator]
static PROFILER: Profiler = Profiler::new();

const CHILD: &str = "PROFILER_ENV_SETTINGS_CHILD";
const TEST: &str = "rate_and_seed_come_from_the_environment";

#[inline(never)]
fn fixed_work() -> usize {
    let mut sizes = 0;
    for i in 0..20_000usize {
        let v = black_box(vec![0u8; 16 + (i * 7919) % 4096]);
        sizes += v.len();
    }
    sizes
}

/// Runs this test in a child with `env` set; returns the child's line
/// `samples N` (the number of samples its fixed work took).
fn child(env: &[(&str, &str)]) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "child failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let at = stdout.find("samples ").unwrap_or_else(|| panic!("{stdout}"));
    stdout[at..].lines().next().unwrap().to_string()
}

#[test]
fn rate_and_seed_come_from_the_environment() {
    if let Some(expected) = std::env::var_os(CHILD).and(std::env::var(RATE_ENV).ok()) {
        let expected: usize = expected.parse().unwrap_or(DEFAULT_RATE);
        assert_eq!(PROFILER.rate(), expected);
        let before = PROFILER.snapshot().records().iter().map(|r| r.alloc_objects).sum::<u64>();
        black_box(fixed_work());
        let after = PROFILER.snapshot().records().iter().map(|r| r.alloc_objects).sum::<u64>();
        println!("samples {}", after - before);
        return;
    }
    if std::env::var_os(RATE_ENV).is_none() {
        assert_eq!(PROFILER.rate(), DEFAULT_RATE);
    }

    let samples = |line: String| -> u64 { line["samples ".len()..].parse().unwrap() };
    // Every allocation of the fixed work (the snapshots' own are not
    // sampled; the test harness's other thread may allocate meanwhile).
    let every = samples(child(&[(RATE_ENV, "1")]));
    assert!((20_000..20_020).contains(&every), "{every}");
    // An unreadable value leaves the default: ~41 MB / 512 KiB, about 80.
    let default = samples(child(&[(RATE_ENV, "lots")]));
    assert!((30..160).contains(&default), "{default}");
    // The same seed, the same samples; the work allocates ~41 MB, so at
    // 64 KiB per sample about 630 of them.
    let a = samples(child(&[(RATE_ENV, "65536"), (SEED_ENV, "7")]));
    let b = samples(child(&[(RATE_ENV, "65536"), (SEED_ENV, "7")]));
    assert!(a.abs_diff(b) <= 2, "{a} and {b}");
    assert!((400..900).contains(&a), "{a}");
}
