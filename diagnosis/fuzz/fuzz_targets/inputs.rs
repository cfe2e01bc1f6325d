//! Arbitrary bytes as a heap profile, as a `metrics.jsonl` file and as a
//! Prometheus page: nothing panics, and every error names the file.
//!
//! ```text
//! cd diagnosis/fuzz && cargo +nightly fuzz run inputs
//! ```

#![no_main]

use std::path::Path;

use diagnosis::{DiagnosisError, HeapSnapshot};
use libfuzzer_sys::fuzz_target;

const HEAP: &str = "fuzz/heap-000.pb.gz";
const METRICS: &str = "fuzz/metrics.jsonl";

fuzz_target!(|data: &[u8]| {
    if let Err(e) = HeapSnapshot::decode(data, HEAP) {
        assert!(matches!(e, DiagnosisError::Profile { .. }), "{e:?}");
        assert_eq!(e.path(), Path::new(HEAP));
    }
    if let Err(e) = diagnosis::parse_metrics(data, METRICS) {
        let DiagnosisError::Metrics { path, line, .. } = &e else { panic!("{e:?}") };
        assert_eq!(path, Path::new(METRICS));
        assert!(*line >= 1 && *line <= data.split(|&b| b == b'\n').count());
    }
    let values = diagnosis::parse_prometheus(&String::from_utf8_lossy(data));
    assert!(values.values().all(|v| v.is_finite()));
});
