//! What a report reads from a run folder: the profiles and metrics (through
//! the diagnosis crate, within its decoding budgets), `run.json`,
//! `verdict.json` (or the engine's verdict now, when the folder has none),
//! and the names of the profile files, for the commands that show the same
//! by hand.
//!
//! Every file is read within a limit, and an error names the file.

use std::path::{Path, PathBuf};

use anyhow::Context;
use diagnosis::{Options, PhaseSpan, RunInput, SnapshotTime, Verdict};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::verdict::{snapshots_to_verdict, verdicts};

/// The largest `run.json` or `verdict.json` a report reads.
const MAX_JSON_BYTES: u64 = 16 << 20;

/// The parts of `run.json` a report shows; every field may be missing, so
/// that a folder of profiles from any process can be reported.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(super) struct RunFile {
    /// Scenario name.
    pub(super) scenario: String,
    /// `leak` or `fix`.
    pub(super) variant: String,
    /// The kind a right diagnosis gives.
    pub(super) expected: String,
    /// Parameters with their values.
    pub(super) params: Vec<(String, String)>,
    /// The snapshot interval.
    pub(super) interval_s: f64,
}

/// The parts of `verdict.json` a report shows (older files may lack the
/// last two).
#[derive(Debug, Deserialize)]
struct VerdictRead {
    #[serde(flatten)]
    verdict: Verdict,
    #[serde(default)]
    expected: String,
    #[serde(default)]
    detected_at_snapshot: Option<usize>,
}

/// The verdict a report shows, and where it came from.
#[derive(Debug, Clone)]
pub(super) struct Judged {
    /// The engine's verdict (with holders when the folder has holder
    /// profiles).
    pub(super) verdict: Verdict,
    /// The kind a right diagnosis gives, if the folder says.
    pub(super) expected: Option<String>,
    /// The snapshot at which an expected leak was diagnosed for good.
    pub(super) detected_at: Option<usize>,
    /// `verdict.json`, or none when the engine ran for the report.
    pub(super) from_file: bool,
}

impl Judged {
    /// Whether the verdict is the expected one, if one is expected.
    pub(super) fn correct(&self) -> Option<bool> {
        self.expected.as_ref().map(|e| self.verdict.kind == e.as_str())
    }
}

/// A run folder, read.
#[derive(Debug)]
pub(super) struct Run {
    /// The folder, as given.
    pub(super) dir: PathBuf,
    /// `run.json` (all defaults when the folder has none).
    pub(super) record: RunFile,
    /// The scenario, when `run.json` names one of the catalogue.
    pub(super) info: Option<&'static scenarios::Info>,
    /// Profiles, metrics and phases.
    pub(super) input: RunInput,
    /// Each heap snapshot's time and phase.
    pub(super) times: Vec<SnapshotTime>,
    /// The verdict.
    pub(super) judged: Judged,
    /// `heap-NNN.pb.gz`, `pool-NNN.pb.gz` and `holders-NNN.pb.gz`, in
    /// order.
    pub(super) heap_files: Vec<PathBuf>,
    pub(super) pool_files: Vec<PathBuf>,
    pub(super) holder_files: Vec<PathBuf>,
}

impl Run {
    /// Reads a run folder.
    pub(super) fn load(dir: &Path) -> anyhow::Result<Run> {
        let input = RunInput::from_dir(dir)?;
        let record: RunFile = read_json(&dir.join("run.json"))?.unwrap_or_default();
        let info = scenarios::find(&record.scenario).ok();
        let judged = match read_json::<VerdictRead>(&dir.join("verdict.json"))? {
            Some(file) => {
                let expected = Some(file.expected).filter(|e| !e.is_empty());
                let detected_at = file.detected_at_snapshot.or_else(|| detection(&input, expected.as_deref()));
                Judged { verdict: file.verdict, expected, detected_at, from_file: true }
            }
            None => {
                let (verdict, _) = verdicts(&input);
                let expected = Some(record.expected.clone()).filter(|e| !e.is_empty());
                let detected_at = detection(&input, expected.as_deref());
                Judged { verdict, expected, detected_at, from_file: false }
            }
        };
        let times = input.timeline();
        Ok(Run {
            dir: dir.to_path_buf(),
            info,
            times,
            judged,
            heap_files: numbered_files(dir, "heap-")?,
            pool_files: numbered_files(dir, "pool-")?,
            holder_files: numbered_files(dir, "holders-")?,
            record,
            input,
        })
    }

    /// `scenario (variant)`, or the folder's name.
    pub(super) fn title(&self) -> String {
        if self.record.scenario.is_empty() {
            self.dir.file_name().map_or_else(|| self.dir.display().to_string(), |n| n.to_string_lossy().into_owned())
        } else if self.record.variant.is_empty() {
            self.record.scenario.clone()
        } else {
            format!("{} ({})", self.record.scenario, self.record.variant)
        }
    }

    /// The phases' spans (from `run.json`).
    pub(super) fn phases(&self) -> &[PhaseSpan] {
        &self.input.phases
    }

    /// The first and last snapshots of the load phase (warm-up included
    /// when there is no load phase; the whole run when there are no phases).
    pub(super) fn load_window(&self) -> (usize, usize) {
        let n = self.times.len();
        for phases in [&["load"][..], &["warmup", "load"]] {
            let idx: Vec<usize> =
                (0..n).filter(|&i| self.times[i].phase.as_deref().is_some_and(|p| phases.contains(&p))).collect();
            if let (Some(&a), Some(&b)) = (idx.first(), idx.last()) {
                if b > a {
                    return (a, b);
                }
            }
        }
        (0, n.saturating_sub(1))
    }

    /// The name of heap profile `i`, as the folder has it.
    pub(super) fn heap_name(&self, i: usize) -> String {
        file_name(self.heap_files.get(i))
    }
}

fn file_name(path: Option<&PathBuf>) -> String {
    path.and_then(|p| p.file_name()).map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

/// When an expected leak was first diagnosed for good, for folders whose
/// `verdict.json` does not say.
fn detection(input: &RunInput, expected: Option<&str>) -> Option<usize> {
    let expected = expected.filter(|e| *e != "none")?;
    snapshots_to_verdict(input, expected, &Options::default())
}

/// `{prefix}NNN.pb.gz` in `dir`, by NNN, as the diagnosis reads them.
fn numbered_files(dir: &Path, prefix: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<(u64, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let name = entry.file_name();
        let Some(digits) = name.to_str().and_then(|n| n.strip_prefix(prefix)?.strip_suffix(".pb.gz")) else {
            continue;
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(n) = digits.parse() {
            files.push((n, entry.path()));
        }
    }
    files.sort();
    Ok(files.into_iter().map(|(_, p)| p).collect())
}

/// A JSON file of at most [`MAX_JSON_BYTES`], `None` if it does not exist;
/// errors name the file.
pub(super) fn read_json<T: DeserializeOwned>(path: &Path) -> anyhow::Result<Option<T>> {
    let Some(bytes) = crate::files::read_if_present(path, MAX_JSON_BYTES)? else { return Ok(None) };
    let value = serde_json::from_slice(&bytes).with_context(|| format!("{}: not the expected JSON", path.display()))?;
    Ok(Some(value))
}
