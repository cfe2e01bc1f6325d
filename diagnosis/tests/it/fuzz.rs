//! The decoders on arbitrary input: they never panic, and their errors
//! name the file they were given. `diagnosis/fuzz` does the same with
//! libFuzzer.

use std::path::Path;

use diagnosis::{DecodeLimits, DiagnosisError, HeapSnapshot, ProfileDecoder};
use proptest::prelude::*;

use crate::support::{gunzip, gzip, heap_profile};

const HEAP: &str = "fuzz/heap-000.pb.gz";
const METRICS: &str = "fuzz/metrics.jsonl";

/// A budget small enough for the seed to reach its limits when mutated.
const SMALL: DecodeLimits = DecodeLimits {
    profile_bytes: 1 << 20,
    profile_memory: 64 << 10,
    run_memory: 100 << 10,
    name_bytes: 16,
    sample_frames: 8,
    stack_text_bytes: 1 << 10,
    run_profiles: 4,
};

fn check_profile(bytes: &[u8]) {
    if let Err(e) = HeapSnapshot::decode(bytes, HEAP) {
        assert!(matches!(e, DiagnosisError::Profile { .. }), "{e:?}");
        assert_eq!(e.path(), Path::new(HEAP));
        assert!(e.to_string().starts_with(HEAP), "{e}");
    }
    // The same bytes three times through one small budget: never past it.
    let mut decoder = ProfileDecoder::new(SMALL);
    for _ in 0..3 {
        match decoder.decode(bytes, HEAP) {
            Ok(heap) => assert!(heap.samples.iter().all(|s| s.frames.len() <= SMALL.sample_frames)),
            Err(e) => assert!(e.to_string().starts_with(HEAP), "{e}"),
        }
        assert!(decoder.used_bytes() <= SMALL.run_memory);
    }
}

/// A valid raw profile, to mutate.
fn seed() -> Vec<u8> {
    gunzip(&heap_profile(&[(&["leak", "handler", "main"], 4096, 1024), (&["steady", "main"], 100, 100)]))
}

#[test]
fn run_budget_refuses_the_profile_that_would_pass_it() {
    let bytes = seed();
    let limits = DecodeLimits { run_memory: 2 << 10, ..DecodeLimits::default() };
    let mut decoder = ProfileDecoder::new(limits);
    let mut decoded = 0;
    let err = loop {
        match decoder.decode(&bytes, HEAP) {
            Ok(_) => decoded += 1,
            Err(e) => break e,
        }
        assert!(decoded < 100, "{} bytes used", decoder.used_bytes());
    };
    assert!(decoded >= 1 && decoder.used_bytes() <= limits.run_memory, "{decoded}: {}", decoder.used_bytes());
    assert!(err.to_string().contains("the run's profiles would take about"), "{err}");
    assert!(err.past_run_budget(), "{err}");
    // A profile refused for itself is not past the run's budget.
    assert!(!ProfileDecoder::new(limits).decode(b"not a profile", HEAP).unwrap_err().past_run_budget());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn profile_decoder_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check_profile(&bytes);
        check_profile(&gzip(&bytes));
    }

    #[test]
    fn profile_decoder_on_mutated_profiles(edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8), cut in any::<prop::sample::Index>()) {
        let mut raw = seed();
        for (at, byte) in edits {
            let i = at.index(raw.len());
            raw[i] = byte;
        }
        check_profile(&raw);
        raw.truncate(cut.index(raw.len() + 1));
        check_profile(&raw);
        check_profile(&gzip(&raw));
    }

    #[test]
    fn metrics_parser_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        if let Err(e) = diagnosis::parse_metrics(&bytes, METRICS) {
            let DiagnosisError::Metrics { path, line, .. } = &e else { panic!("{e:?}") };
            prop_assert_eq!(path.as_path(), Path::new(METRICS));
            prop_assert!(*line >= 1 && *line <= bytes.split(|&b| b == b'\n').count());
        }
    }

    #[test]
    fn metrics_parser_on_json_like_text(text in r#"(\{"t": ?-?[0-9.e]{0,6}(, ?"[a-z_]{0,8}": ?("[a-z]*"|[0-9.e+-]{0,8}|null|true|\[\]|\{\}))*\}?\n?){0,4}"#) {
        if let Err(e) = diagnosis::parse_metrics(text.as_bytes(), METRICS) {
            prop_assert!(e.to_string().starts_with(METRICS));
        }
    }

    #[test]
    fn prometheus_parser_never_panics(text in "\\PC{0,300}") {
        let m = diagnosis::parse_prometheus(&text);
        prop_assert!(m.values().all(|v| v.is_finite()));
    }

    #[test]
    fn statistics_never_panic(y in proptest::collection::vec(prop_oneof![any::<f64>(), -1e6..1e6f64], 0..60), min_size in 0usize..5) {
        let x: Vec<f64> = (0..y.len()).map(|i| i as f64).collect();
        let _ = diagnosis::theil_sen(&x, &y);
        let mk = diagnosis::mann_kendall(&y);
        prop_assert!((0.0..=1.0).contains(&mk.p_value));
        let _ = diagnosis::pearson(&x, &y);
        let _ = diagnosis::spearman(&y, &x);
        let cps = diagnosis::change_points(&y, min_size, None);
        prop_assert!(cps.windows(2).all(|w| w[0] < w[1]) && cps.iter().all(|&i| i > 0 && i < y.len()));
        let _ = diagnosis::plateau(&y);
        let _ = (diagnosis::median(&y), diagnosis::mad(&y));
    }
}
