//! A run folder's diagnosis: the engine in both modes, with holders, and
//! the `verdict.json` a run writes.

use std::path::Path;

use anyhow::Context;
use diagnosis::{diagnose, HeapSnapshot, Options, RunInput, Verdict};
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
}

/// Diagnoses a run folder in both modes; the default mode also names who
/// holds each finding's memory when the folder has holder profiles.
pub fn verdicts(dir: &Path) -> anyhow::Result<(Verdict, Verdict)> {
    let input = RunInput::from_dir(dir)?;
    let mut full = diagnose(&input, &Options::default());
    diagnosis::attribute_holders(&mut full, &holder_profiles(dir)?);
    let plain = diagnose(&input, &Options { pprof_only: true, ..Options::default() });
    Ok((full, plain))
}

/// The folder's `holders-NNN.pb.gz`, in order.
pub fn holder_profiles(dir: &Path) -> anyhow::Result<Vec<HeapSnapshot>> {
    let mut files: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_prefix("holders-")?.strip_suffix(".pb.gz")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    files.sort();
    Ok(files.iter().map(|(_, p)| HeapSnapshot::read(p)).collect::<Result<_, _>>()?)
}

/// Writes `verdict.json` into a run folder.
pub fn write_verdict(dir: &Path, expected: &str) -> anyhow::Result<VerdictFile> {
    let (verdict, pprof_only) = verdicts(dir)?;
    let file = VerdictFile { correct: verdict.kind == expected, expected: expected.to_owned(), verdict, pprof_only };
    std::fs::write(dir.join("verdict.json"), serde_json::to_string_pretty(&file)?)?;
    Ok(file)
}
