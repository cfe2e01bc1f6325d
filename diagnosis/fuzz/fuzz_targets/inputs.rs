//! Arbitrary bytes as a heap profile, as a `metrics.jsonl` file and as a
//! Prometheus page: nothing panics, every error names the file, and the
//! decoder keeps within a small budget.
//!
//! ```text
//! cd diagnosis/fuzz && cargo +nightly fuzz run inputs
//! ```

#![no_main]

use std::path::Path;

use diagnosis::{DecodeLimits, DiagnosisError, HeapSnapshot, ProfileDecoder};
use libfuzzer_sys::fuzz_target;

const HEAP: &str = "fuzz/heap-000.pb.gz";
const METRICS: &str = "fuzz/metrics.jsonl";

fuzz_target!(|data: &[u8]| {
    if let Err(e) = HeapSnapshot::decode(data, HEAP) {
        assert!(matches!(e, DiagnosisError::Profile { .. }), "{e:?}");
        assert_eq!(e.path(), Path::new(HEAP));
    }
    let limits = DecodeLimits {
        profile_memory: 1 << 20,
        run_memory: 2 << 20,
        name_bytes: 256,
        sample_frames: 64,
        ..Default::default()
    };
    let mut decoder = ProfileDecoder::new(limits);
    for _ in 0..3 {
        match decoder.decode(data, HEAP) {
            Ok(heap) => assert!(heap.samples.iter().all(|s| s.frames.len() <= 64)),
            Err(e) => assert_eq!(e.path(), Path::new(HEAP)),
        }
        assert!(decoder.used_bytes() <= limits.run_memory);
    }
    if let Err(e) = diagnosis::parse_metrics(data, METRICS) {
        let DiagnosisError::Metrics { path, line, .. } = &e else { panic!("{e:?}") };
        assert_eq!(path, Path::new(METRICS));
        assert!(*line >= 1 && *line <= data.split(|&b| b == b'\n').count());
    }
    let values = diagnosis::parse_prometheus(&String::from_utf8_lossy(data));
    assert!(values.values().all(|v| v.is_finite()));
});
