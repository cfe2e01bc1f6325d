//! A run folder's diagnosis: the engine in both modes, with holders, and
//! the `verdict.json` a run writes.

use std::path::Path;

use diagnosis::{diagnose, Options, RunInput, Verdict};
use serde::Serialize;

/// `verdict.json`: the engine's verdict plus what it should have said.
#[derive(Debug, Clone, Serialize)]
pub struct VerdictFile {
    /// The verdict (flattened).
    #[serde(flatten)]
    pub verdict: Verdict,
    /// The scenario's expected kind.
    pub expected: String,
    /// Whether the kind is the expected one.
    pub correct: bool,
    /// The same engine without the pool profile.
    pub pprof_only: Verdict,
    /// The snapshot (from 0) at which the verdict became the expected leak
    /// and stayed so, as [`snapshots_to_verdict`] counts; absent when a
    /// leak was not expected or the verdict never settled on it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detected_at_snapshot: Option<usize>,
}

/// Diagnoses a run folder's input in both modes; the default mode also
/// names who holds each finding's memory when the folder has holder
/// profiles.
pub fn verdicts(input: &RunInput) -> (Verdict, Verdict) {
    let mut full = diagnose(input, &Options::default());
    diagnosis::attribute_holders(&mut full, &input.holders);
    let plain = diagnose(input, &Options { pprof_only: true, ..Options::default() });
    (full, plain)
}

/// How fast the process under test gained memory: the Theil–Sen slope of
/// profiled in-use bytes over the warm-up and load (bytes/s, 0 when it
/// fell or cannot be told), as the matrix and `compare` report it.
pub fn leaked_bytes_per_s(input: &RunInput) -> f64 {
    let (t, y): (Vec<f64>, Vec<f64>) = input
        .metrics
        .iter()
        .filter(|l| matches!(l.phase.as_deref(), Some("warmup" | "load") | None))
        .filter_map(|l| Some((l.t, l.get("inuse_bytes")?)))
        .unzip();
    diagnosis::theil_sen(&t, &y).map_or(0.0, |(s, _)| s.max(0.0))
}

/// Snapshots from the first one until the verdict is `expected` and stays:
/// the index (from 0) of the snapshot after which every longer prefix of
/// the run is diagnosed `expected`, or `None` if none is.
pub fn snapshots_to_verdict(input: &RunInput, expected: &str, opts: &Options) -> Option<usize> {
    let n = input.heaps.len();
    let mut first_right = None;
    for k in 3..=n {
        let right = diagnose(&input.prefix(k), opts).kind == expected;
        match (right, first_right) {
            (true, None) => first_right = Some(k),
            (false, Some(_)) => first_right = None,
            _ => {}
        }
    }
    // Snapshot indexes count from 0: the k-th snapshot is index k - 1.
    first_right.map(|k| k - 1)
}

/// Writes `verdict.json` into a run folder, with the snapshot at which an
/// expected leak was first diagnosed for good.
pub fn write_verdict(dir: &Path, expected: &str) -> anyhow::Result<VerdictFile> {
    let input = RunInput::from_dir(dir)?;
    let (verdict, pprof_only) = verdicts(&input);
    let detected_at_snapshot =
        if expected == "none" { None } else { snapshots_to_verdict(&input, expected, &Options::default()) };
    let file = VerdictFile {
        correct: verdict.kind == expected,
        expected: expected.to_owned(),
        verdict,
        pprof_only,
        detected_at_snapshot,
    };
    std::fs::write(dir.join("verdict.json"), serde_json::to_string_pretty(&file)?)?;
    Ok(file)
}
