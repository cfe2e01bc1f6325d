//! Scores of detectors over many labelled runs: overall, per kind, and by
//! how fast the leak leaks.
//!
//! Each run folder gets a `score.json` ([`RunResult`]): its label, how
//! fast it leaked, and every detector's [`Outcome`]. Sweeps write it after
//! each run; `leaklab matrix --merge` reads it back (or makes it, for a
//! folder without one) from any number of sweep folders, so that shards run
//! on many machines are scored as one.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use diagnosis::RunInput;
use serde::{Deserialize, Serialize};

use super::trace::{answers, outside_answer, Builtin, Outcome};
use super::Label;

/// What one run came to, for every detector.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    /// The run folder's name.
    pub run: String,
    /// Its label.
    pub label: Label,
    /// Theil–Sen slope of profiled in-use bytes over warm-up and load
    /// (B/s), as the matrix reports it.
    pub leaked_bytes_per_s: f64,
    /// Snapshots the run took.
    pub snapshots: usize,
    /// Each detector's outcome.
    pub outcomes: Vec<Outcome>,
}

/// The detectors' outcomes on the run in `dir`: the built-in ones, after
/// every snapshot, and `detector` (an outside command) on the whole run.
pub fn score_run(dir: &Path, label: &Label, detector: Option<&str>) -> anyhow::Result<RunResult> {
    let input = RunInput::from_dir(dir).with_context(|| format!("reading the run in {}", dir.display()))?;
    let t_end = input.timeline().last().map_or(0.0, |s| s.t);
    let mut outcomes: Vec<Outcome> =
        Builtin::ALL.iter().map(|d| Outcome::judge(d.name(), label, &answers(&input, *d))).collect();
    if let Some(cmd) = detector {
        let a = outside_answer(cmd, dir, t_end)?;
        outcomes.push(Outcome::judge(&format!("detector: {cmd}"), label, &[a]));
    }
    Ok(RunResult {
        run: dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        label: label.clone(),
        leaked_bytes_per_s: crate::verdict::leaked_bytes_per_s(&input),
        snapshots: input.heaps.len(),
        outcomes,
    })
}

/// The `score.json` of a run folder.
pub const SCORE_FILE: &str = "score.json";
/// The largest `score.json` read (a real one is a few KiB): a folder
/// merged from elsewhere may hold anything there.
pub const MAX_SCORE_BYTES: u64 = 4 << 20;

/// Writes `DIR/score.json`.
pub fn write_result(dir: &Path, r: &RunResult) -> anyhow::Result<()> {
    crate::files::write_new(&dir.join(SCORE_FILE), serde_json::to_string_pretty(r)?)
}

/// Every run folder (one with `label.json` or `run.json`) directly in
/// `dirs`, or `dirs` themselves when they are run folders, sorted.
pub fn run_folders(dirs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let is_run = |p: &Path| p.join("label.json").exists() || p.join("run.json").exists();
    let mut out = Vec::new();
    for d in dirs {
        if is_run(d) {
            out.push(d.clone());
            continue;
        }
        let entries = std::fs::read_dir(d).with_context(|| format!("reading {}", d.display()))?;
        out.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir() && is_run(p)));
    }
    out.sort();
    Ok(out)
}

/// The result of each run folder: its `score.json` when it has one that
/// scored `detector` too, else scored now (and written).
pub fn results(folders: &[PathBuf], detector: Option<&str>) -> anyhow::Result<Vec<RunResult>> {
    let mut out = Vec::with_capacity(folders.len());
    for dir in folders {
        let cached: Option<RunResult> = crate::files::read_text_at_most(&dir.join(SCORE_FILE), MAX_SCORE_BYTES)
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .filter(|r: &RunResult| detector.is_none_or(|d| r.outcomes.iter().any(|o| o.detector.ends_with(d))));
        let r = match cached {
            Some(r) => r,
            None => {
                let label = Label::read(dir)?;
                let r = score_run(dir, &label, detector)?;
                write_result(dir, &r)?;
                r
            }
        };
        out.push(r);
    }
    Ok(out)
}

/// One row of a score table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Runs.
    pub runs: usize,
    /// Runs with a leak.
    pub leak_runs: usize,
    /// Of the runs flagged at the end, the share with a leak.
    pub precision: Option<f64>,
    /// Of the runs with a leak, the share flagged at the end.
    pub recall: Option<f64>,
    /// Runs whose final kind is right.
    pub kind_accuracy: Option<f64>,
    /// Median delay from the onset, in snapshots.
    pub delay_median: Option<f64>,
    /// 90th percentile of the delay, in snapshots.
    pub delay_p90: Option<f64>,
    /// Median delay from the onset, in seconds.
    pub delay_median_s: Option<f64>,
    /// Alarms before an onset or in runs without a leak.
    pub false_alarms: usize,
    /// Hours of healthy run watched.
    pub healthy_hours: f64,
    /// `false_alarms` per hour of healthy run.
    pub false_alarms_per_hour: Option<f64>,
    /// Mixtures (runs with two mechanisms or more).
    pub mixtures: usize,
    /// Mixtures whose every mechanism the final answer names.
    pub mixtures_named: usize,
}

/// A detector's scores.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Table {
    /// Which detector.
    pub detector: String,
    /// Over every run.
    pub overall: Stats,
    /// Per expected kind (`none` for healthy runs).
    pub per_kind: Vec<(String, Stats)>,
    /// Leak runs by measured leak rate.
    pub by_rate: Vec<(String, Stats)>,
}

/// Leak-rate bands (upper bounds in B/s) for [`Table::by_rate`]: slow
/// leaks (tens of KiB/s), then each band 8 times the last.
pub const RATE_BANDS: [(f64, &str); 4] = [
    (32.0 * 1024.0, "< 32 KiB/s"),
    (256.0 * 1024.0, "32-256 KiB/s"),
    (2.0 * 1048576.0, "0.25-2 MiB/s"),
    (f64::INFINITY, ">= 2 MiB/s"),
];

fn stats<'a>(items: impl Iterator<Item = (&'a RunResult, &'a Outcome)>) -> Stats {
    let mut s = Stats::default();
    let (mut flagged, mut flagged_leak, mut right) = (0usize, 0usize, 0usize);
    let mut delays = Vec::new();
    let mut delays_s = Vec::new();
    let mut healthy_s = 0.0;
    for (r, o) in items {
        s.runs += 1;
        let alarm = o.kind != "none";
        flagged += usize::from(alarm);
        if r.label.leak {
            s.leak_runs += 1;
            flagged_leak += usize::from(alarm);
        }
        right += usize::from(o.right);
        delays.extend(o.delay_snapshots.map(|d| d as f64));
        delays_s.extend(o.delay_s);
        s.false_alarms += o.false_alarms;
        healthy_s += o.healthy_s;
        if r.label.mechanisms.len() >= 2 {
            s.mixtures += 1;
            s.mixtures_named += usize::from(o.named == r.label.mechanisms.len());
        }
    }
    let ratio = |a: usize, b: usize| (b > 0).then(|| a as f64 / b as f64);
    s.precision = ratio(flagged_leak, flagged);
    s.recall = ratio(flagged_leak, s.leak_runs);
    s.kind_accuracy = ratio(right, s.runs);
    s.delay_median = quantile(&mut delays, 0.5);
    s.delay_p90 = quantile(&mut delays, 0.9);
    s.delay_median_s = quantile(&mut delays_s, 0.5);
    s.healthy_hours = healthy_s / 3600.0;
    s.false_alarms_per_hour = (healthy_s > 0.0).then(|| s.false_alarms as f64 / s.healthy_hours);
    s
}

/// The `q` quantile (nearest rank) of `v`, or `None` when empty.
pub fn quantile(v: &mut [f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

/// Every detector's table, in the order the runs list them.
pub fn tables(results: &[RunResult]) -> Vec<Table> {
    let mut detectors: Vec<String> = Vec::new();
    for o in results.iter().flat_map(|r| &r.outcomes) {
        if !detectors.contains(&o.detector) {
            detectors.push(o.detector.clone());
        }
    }
    detectors
        .into_iter()
        .map(|d| {
            let pairs: Vec<(&RunResult, &Outcome)> =
                results.iter().filter_map(|r| r.outcomes.iter().find(|o| o.detector == d).map(|o| (r, o))).collect();
            let mut kinds: Vec<String> = pairs.iter().map(|(r, _)| r.label.kind.clone()).collect();
            kinds.sort();
            kinds.dedup();
            let per_kind = kinds
                .into_iter()
                .map(|k| {
                    let s = stats(pairs.iter().copied().filter(|(r, _)| r.label.kind == k));
                    (k, s)
                })
                .collect();
            let mut lo = 0.0;
            let mut by_rate = Vec::new();
            for (hi, name) in RATE_BANDS {
                let band = |r: &RunResult| r.label.leak && r.leaked_bytes_per_s >= lo && r.leaked_bytes_per_s < hi;
                let s = stats(pairs.iter().copied().filter(|(r, _)| band(r)));
                if s.runs > 0 {
                    by_rate.push((name.to_owned(), s));
                }
                lo = hi;
            }
            Table { overall: stats(pairs.iter().copied()), detector: d, per_kind, by_rate }
        })
        .collect()
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.0}%", v * 100.0))
}

fn num(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}"))
}

/// The header of a table whose first column is `first`.
fn header(first: &str) -> String {
    let cols = [
        first,
        "runs",
        "leaks",
        "precision",
        "recall",
        "kind accuracy",
        "delay median (p90), snapshots",
        "delay median, s",
        "false alarms",
        "per healthy hour",
        "mixtures fully named",
    ];
    format!("| {} |\n|{}", cols.join(" | "), "---|".repeat(cols.len()))
}

fn stats_cells(s: &Stats) -> String {
    format!(
        "| {} | {} | {} | {} | {} | {} ({}) | {} | {} | {} | {} |",
        s.runs,
        s.leak_runs,
        pct(s.precision),
        pct(s.recall),
        pct(s.kind_accuracy),
        num(s.delay_median),
        num(s.delay_p90),
        num(s.delay_median_s),
        s.false_alarms,
        num(s.false_alarms_per_hour),
        if s.mixtures == 0 { "-".into() } else { format!("{} of {}", s.mixtures_named, s.mixtures) }
    )
}

/// The tables as Markdown: every detector overall, then each detector per
/// kind and by leak rate.
pub fn markdown(tables: &[Table]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "### Overall\n\n{}", header("detector"));
    for t in tables {
        let _ = writeln!(s, "| {} {}", t.detector, stats_cells(&t.overall));
    }
    for t in tables {
        let _ = writeln!(s, "\n### {}: per kind\n\n{}", t.detector, header("kind"));
        for (k, st) in &t.per_kind {
            let _ = writeln!(s, "| {k} {}", stats_cells(st));
        }
        if !t.by_rate.is_empty() {
            let _ = writeln!(s, "\n### {}: leaks by measured leak rate\n\n{}", t.detector, header("leak rate"));
            for (band, st) in &t.by_rate {
                let _ = writeln!(s, "| {band} {}", stats_cells(st));
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::trace::tests::label;

    fn result(kinds: &[&str], rate: f64, answer: &str, false_alarms: usize, delay: Option<usize>) -> RunResult {
        let leak = !kinds.is_empty();
        let label = Label { phases: Vec::new(), interval_s: 0.5, seed: Some(1), ..label(kinds, leak.then_some(2.0)) };
        let right = if leak { kinds.contains(&answer) } else { answer == "none" };
        let named = kinds.iter().filter(|k| **k == answer).count();
        RunResult {
            run: "r".into(),
            label,
            leaked_bytes_per_s: rate,
            snapshots: 20,
            outcomes: vec![Outcome {
                detector: "d".into(),
                kind: answer.into(),
                kinds: if answer == "none" { vec![] } else { vec![answer.into()] },
                right,
                false_alarms,
                healthy_s: if leak { 2.0 } else { 1800.0 },
                delay_snapshots: delay,
                delay_s: delay.map(|d| d as f64 * 0.5),
                named,
                alarms: Vec::new(),
            }],
        }
    }

    #[test]
    fn merged_runs_score_as_one_set_per_kind_and_by_rate() {
        let runs = vec![
            result(&["request-field-held"], 1e6, "request-field-held", 0, Some(2)),
            result(&["request-field-held"], 20e3, "unknown", 0, None),
            result(&["oversized-request"], 5e6, "oversized-request", 1, Some(6)),
            result(&["request-field-held", "duplicate-clients"], 3e6, "duplicate-clients", 0, Some(3)),
            result(&[], 0.0, "none", 0, None),
            result(&[], 0.0, "unknown", 1, None),
        ];
        let t = &tables(&runs)[0];
        let o = &t.overall;
        assert_eq!((o.runs, o.leak_runs), (6, 4));
        // Flagged at the end: 4 leaks and one healthy run.
        assert_eq!(o.precision, Some(4.0 / 5.0));
        assert_eq!(o.recall, Some(1.0));
        // Right: 3 leaks (the "unknown" leak is not) and one healthy run.
        assert_eq!(o.kind_accuracy, Some(4.0 / 6.0));
        assert_eq!(o.delay_median, Some(3.0));
        assert_eq!(o.delay_p90, Some(6.0));
        assert_eq!(o.false_alarms, 2);
        // 4 leak runs of 2 s and 2 healthy runs of half an hour: 2 alarms
        // in (8 + 3600) s.
        assert!((o.false_alarms_per_hour.unwrap() - 2.0 / (3608.0 / 3600.0)).abs() < 1e-9);
        assert_eq!((o.mixtures, o.mixtures_named), (1, 0));
        let kinds: Vec<&str> = t.per_kind.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(kinds, ["none", "oversized-request", "request-field-held"]);
        let rfh = &t.per_kind[2].1;
        assert_eq!((rfh.runs, rfh.kind_accuracy), (3, Some(2.0 / 3.0)));
        let bands: Vec<(&str, usize)> = t.by_rate.iter().map(|(b, s)| (b.as_str(), s.runs)).collect();
        assert_eq!(bands, [("< 32 KiB/s", 1), ("0.25-2 MiB/s", 1), (">= 2 MiB/s", 2)]);
        let md = markdown(std::slice::from_ref(t));
        assert!(md.contains("| d | 6 | 4 | 80% | 100% | 67% | 3.0 (6.0) |"), "{md}");
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let mut v = vec![5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(quantile(&mut v, 0.5), Some(3.0));
        assert_eq!(quantile(&mut v, 0.9), Some(5.0));
        assert_eq!(quantile(&mut [], 0.5), None);
    }
}
