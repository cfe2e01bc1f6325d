//! Each fix variant, and each control, gives its memory back: after the
//! settle phase, the profiled in-use bytes are back within a margin of the
//! warm-up level.
//!
//! Warm-up level: the last snapshot of the warm-up phase (the first one is
//! taken as the process starts). Settled: the last snapshot of the run,
//! at the end of the settle phase. Margin: `max(3 MiB, 15% of the warm-up
//! level)`, for both `inuse_bytes` of `metrics.jsonl` (every live byte of
//! the process) and the total `inuse_space` of the heap profile (sampled).

use crate::support::{exclusive, mib, run, MIB};

/// The margin over the warm-up level: `max(3 MiB, 15%)`.
fn margin(level: f64) -> f64 {
    (3.0 * MIB).max(0.15 * level)
}

fn assert_settles(scenario: &str, set: &[&str]) {
    let run = {
        let _lab = exclusive();
        run(scenario, "fix", set)
    };
    run.assert_clean();
    run.assert_run_record();
    let metrics = run.metrics();
    let warm = run.last_in(&metrics, "warmup");
    let end = metrics.len() - 1;
    assert_eq!(metrics[end].phase.as_deref(), Some("settle"), "{scenario}: the last snapshot is not in settle");
    let value = |i: usize| {
        metrics[i].get("inuse_bytes").unwrap_or_else(|| panic!("{scenario}: no inuse_bytes in metrics line {i}"))
    };
    let peak = metrics.iter().filter_map(|m| m.get("inuse_bytes")).fold(0.0, f64::max);
    let (level, settled) = (value(warm), value(end));
    let heap_level = run.profile("heap", warm).total_inuse_bytes();
    let heap_settled = run.profile("heap", end).total_inuse_bytes();
    eprintln!(
        "FIX {scenario} {set:?}: inuse_bytes warm-up {} (snapshot {warm}) peak {} settled {} (snapshot {end}): {:+.2} MiB, \
         margin {}; heap profile warm-up {} settled {}: {:+.2} MiB, margin {}",
        mib(level),
        mib(peak),
        mib(settled),
        (settled - level) / MIB,
        mib(margin(level)),
        mib(heap_level),
        mib(heap_settled),
        (heap_settled - heap_level) / MIB,
        mib(margin(heap_level)),
    );
    assert!(
        settled <= level + margin(level),
        "{scenario} (fix): inuse_bytes settled at {}, more than the warm-up level {} + {}",
        mib(settled),
        mib(level),
        mib(margin(level))
    );
    assert!(
        heap_settled <= heap_level + margin(heap_level),
        "{scenario} (fix): the heap profile settled at {}, more than the warm-up level {} + {}",
        mib(heap_settled),
        mib(heap_level),
        mib(margin(heap_level))
    );
    let holder = scenarios::find(scenario).expect("a scenario").holder;
    if !holder.is_empty() {
        let holders = run.holders();
        assert!(holders.len() >= 3, "{scenario} (fix): {} holder profiles", holders.len());
        let held = |i: usize| -> f64 {
            let snap = &holders[i].1;
            snap.samples
                .iter()
                .filter(|s| holder.split('|').any(|part| s.frames[1..].iter().any(|f| f.function.contains(part))))
                .map(|s| s.inuse_bytes)
                .sum()
        };
        let (first, settled) = (held(0), held(holders.len() - 1));
        eprintln!("FIX {scenario} {set:?}: held by {holder}: {} then {}", mib(first), mib(settled));
        assert!(
            settled <= first + margin(level),
            "{scenario} (fix): what {holder} holds grew from {} to {}",
            mib(first),
            mib(settled)
        );
    }
}

macro_rules! settles {
    ($($test:ident: $scenario:literal $([$($set:literal),*])?,)*) => {
        $(
            #[test]
            fn $test() {
                assert_settles($scenario, &[$($($set),*)?]);
            }
        )*
    };
}

settles! {
    request_field_hold_fix_settles: "request-field-hold",
    request_field_hold_nocopy_fix_settles: "request-field-hold" ["decode=nocopy"],
    response_field_hold_fix_settles: "response-field-hold",
    conn_surge_request_fix_settles: "conn-surge-request",
    conn_surge_response_nocopy_fix_settles: "conn-surge-response-nocopy",
    conn_surge_response_copy_fix_settles: "conn-surge-response-copy",
    idle_connections_fix_settles: "idle-connections",
    oversized_request_fix_settles: "oversized-request",
    duplicate_clients_fix_settles: "duplicate-clients",
    sonic_string_hold_fix_settles: "sonic-string-hold",
    steady_control_settles: "steady",
    bounded_cache_control_settles: "bounded-cache",
    warmup_control_settles: "warmup",
    burst_control_settles: "burst",
}
