//! `leaklab matrix`: every scenario and variant, run and diagnosed, scored
//! for the engine in both modes, for a plain RSS-trend baseline, and for
//! any outside detector (`--detector CMD`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use diagnosis::{diagnose, rss_trend, Options, RunInput, Verdict};
use scenarios::{Info, Variant};
use serde::{Deserialize, Serialize};

use crate::runner::{RunPlan, ServeCommand, Timing, RUN_PROFILE_RATE};
use crate::verdict::{leaked_bytes_per_s, snapshots_to_verdict};

/// Flags of `leaklab matrix`.
#[derive(Debug, clap::Args)]
pub struct MatrixArgs {
    /// Short runs (3 s of load), as CI runs them.
    #[arg(long)]
    pub quick: bool,
    /// Where the runs and the summary go (default `runs/matrix`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also score this command: run as `sh -c 'CMD "$0"' RUN_DIR`, it must
    /// print a JSON object with at least `leak` (bool) and `kind` (string).
    #[arg(long)]
    pub detector: Option<String>,
    /// Start the process under test as `PATH serve ...` instead of this
    /// leaklab's `serve` (another build, or a wrapper that runs it under a
    /// tool such as `scripts/detectors/heaptrack-serve`).
    #[arg(long, value_name = "PATH")]
    pub serve_bin: Option<PathBuf>,
    /// Only these scenarios (repeatable).
    #[arg(long = "only")]
    pub only: Vec<String>,
    /// Score the runs already in `--out` instead of running them again.
    #[arg(long)]
    pub rescore: bool,
    /// Run nothing: score the union of the run folders in these folders
    /// (sweep shards, matrices, datasets) as one set, overall, per kind and
    /// by leak rate, and write `summary.md` and `merged.json` to `--out`
    /// (default `runs/merged`).
    #[arg(long, num_args = 1.., value_name = "DIR")]
    pub merge: Vec<PathBuf>,
}

/// One row of the matrix.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// Scenario.
    pub scenario: String,
    /// Variant.
    pub variant: String,
    /// Expected kind.
    pub expected: String,
    /// The engine's kind (full mode).
    pub verdict: String,
    /// Whether it is the expected kind.
    pub correct: bool,
    /// The engine's kind with `--pprof-only`.
    pub pprof_only: String,
    /// The RSS-trend baseline's answer (`unknown` = leak, `none`).
    pub rss_baseline: String,
    /// An outside detector's kind, if one was given.
    pub detector: Option<String>,
    /// The top finding's site.
    pub site: String,
    /// Theil–Sen slope of profiled in-use bytes over the load (B/s).
    pub leaked_bytes_per_s: f64,
    /// Snapshots from the load's start to a right verdict that stays right
    /// (full mode; leak variants only).
    pub delay_snapshots: Option<usize>,
    /// The same with `--pprof-only`.
    pub delay_pprof_only: Option<usize>,
    /// Peak RSS of the process under test.
    pub peak_rss_bytes: u64,
    /// Who holds the top finding's memory, from the holder profiles
    /// (`link (from root)`), or empty.
    #[serde(default)]
    pub holder: String,
    /// Whether the holder chain names the scenario's holder (leak variants
    /// with a right kind; `None` otherwise).
    #[serde(default)]
    pub holder_right: Option<bool>,
}

/// Precision, recall, kind accuracy and detection delay of one detector.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Score {
    /// Which detector.
    pub detector: String,
    /// Flagged leaks that are leaks.
    pub precision: f64,
    /// Leaks flagged.
    pub recall: f64,
    /// Runs whose kind is exactly right (for the RSS baseline, which names
    /// no kind, only `none` can be right).
    pub kind_accuracy: f64,
    /// False alarms on fix variants and controls.
    pub false_alarms: usize,
    /// Mean snapshots to a steady right verdict, over leaks.
    pub mean_delay_snapshots: Option<f64>,
}

fn score(
    name: &str,
    rows: &[Row],
    kind_of: impl Fn(&Row) -> Option<String>,
    delay: impl Fn(&Row) -> Option<usize>,
) -> Score {
    let (mut tp, mut fp, mut fn_, mut right, mut total) = (0usize, 0usize, 0usize, 0usize, 0usize);
    let mut delays = Vec::new();
    for r in rows {
        let Some(kind) = kind_of(r) else { continue };
        total += 1;
        let flagged = kind != "none";
        let leak = r.expected != "none";
        match (leak, flagged) {
            (true, true) => tp += 1,
            (false, true) => fp += 1,
            (true, false) => fn_ += 1,
            (false, false) => {}
        }
        if kind == r.expected {
            right += 1;
        }
        if leak {
            if let Some(d) = delay(r) {
                delays.push(d as f64);
            }
        }
    }
    let ratio = |a: usize, b: usize| if b == 0 { 1.0 } else { a as f64 / b as f64 };
    Score {
        detector: name.to_owned(),
        precision: ratio(tp, tp + fp),
        recall: ratio(tp, tp + fn_),
        kind_accuracy: ratio(right, total),
        false_alarms: fp,
        mean_delay_snapshots: (!delays.is_empty()).then(|| delays.iter().sum::<f64>() / delays.len() as f64),
    }
}

/// The runs of the matrix: every scenario's leak and fix, each control once.
fn plan(only: &[String]) -> anyhow::Result<Vec<(&'static Info, Variant)>> {
    let mut out = Vec::new();
    for info in scenarios::catalogue() {
        if !only.is_empty() && !only.iter().any(|o| o == info.name) {
            continue;
        }
        out.push((info, Variant::Leak));
        if !info.control {
            out.push((info, Variant::Fix));
        }
    }
    if out.is_empty() {
        bail!("no scenario matches {only:?}");
    }
    Ok(out)
}

fn outside_detector(cmd: &str, dir: &Path) -> anyhow::Result<String> {
    let v = crate::dataset::detector::run(cmd, dir)?;
    let leak = v.get("leak").and_then(|l| l.as_bool()).unwrap_or(false);
    let kind = v.get("kind").and_then(|k| k.as_str()).unwrap_or(if leak { "unknown" } else { "none" });
    Ok(kind.to_owned())
}

/// Diagnoses one run folder into a row.
pub fn row(
    dir: &Path,
    scenario: &str,
    variant: &str,
    (expected, expected_holder): (&str, &str),
    detector: Option<&str>,
) -> anyhow::Result<Row> {
    let input = RunInput::from_dir(dir)?;
    let full_opts = Options::default();
    let plain_opts = Options { pprof_only: true, ..Options::default() };
    let mut full: Verdict = diagnose(&input, &full_opts);
    diagnosis::attribute_holders(&mut full, &input.holders);
    let top_holder = full.findings.first().and_then(|f| f.holder.clone());
    let holder_right = (!expected_holder.is_empty() && full.kind == expected)
        .then(|| top_holder.as_ref().is_some_and(|h| names_holder(expected_holder, &h.chain)));
    let plain = diagnose(&input, &plain_opts);
    let rss = rss_trend(&input, full_opts.min_growth_bytes);
    let leaked = leaked_bytes_per_s(&input);
    let peak_rss = input.metric("rss_bytes").iter().map(|p| p.1 as u64).max().unwrap_or(0);
    let is_leak = expected != "none";
    Ok(Row {
        scenario: scenario.to_owned(),
        variant: variant.to_owned(),
        expected: expected.to_owned(),
        correct: full.kind == expected,
        site: full.findings.first().map(|f| f.site.clone()).unwrap_or_default(),
        verdict: full.kind.to_string(),
        pprof_only: plain.kind.to_string(),
        rss_baseline: rss.kind.to_string(),
        detector: detector.map(|d| outside_detector(d, dir)).transpose()?,
        leaked_bytes_per_s: leaked,
        delay_snapshots: if is_leak { snapshots_to_verdict(&input, expected, &full_opts) } else { None },
        delay_pprof_only: if is_leak { snapshots_to_verdict(&input, expected, &plain_opts) } else { None },
        peak_rss_bytes: peak_rss,
        holder: top_holder.map(|h| h.describe()).unwrap_or_default(),
        holder_right,
    })
}

/// Whether a holder chain names a scenario's holder: one of its `|`
/// alternatives is part of one of the chain's links.
pub fn names_holder(expected: &str, chain: &[String]) -> bool {
    !expected.is_empty() && expected.split('|').any(|part| chain.iter().any(|link| link.contains(part)))
}

/// `leaklab matrix`.
pub fn matrix(args: MatrixArgs) -> anyhow::Result<ExitCode> {
    if !args.merge.is_empty() {
        return merge(&args);
    }
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from("runs/matrix"));
    let load = if args.quick { Duration::from_secs(3) } else { Duration::from_secs(8) };
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut rows = Vec::new();
    for (info, variant) in plan(&args.only)? {
        let dir = out.join(format!("{}-{}", info.name, variant));
        let expected = info.expected_kind(variant);
        if !args.rescore {
            let run_plan = RunPlan {
                info,
                variant,
                set: Vec::new(),
                out: dir.clone(),
                timing: Timing::for_duration(load, Duration::from_millis(500)),
                progress,
                profile_rate: RUN_PROFILE_RATE,
                holders: true,
                serve: ServeCommand { exe: args.serve_bin.clone(), ..ServeCommand::default() },
            };
            crate::runner::run_and_diagnose(&run_plan).with_context(|| format!("running {} ({variant})", info.name))?;
        }
        let expected_holder = if variant == Variant::Leak { info.holder } else { "" };
        let r = row(&dir, info.name, &variant.to_string(), (expected, expected_holder), args.detector.as_deref())?;
        if !args.json {
            eprintln!(
                "{:<28} {:<4} expected {:<26} got {:<26} {}{}",
                r.scenario,
                r.variant,
                r.expected,
                r.verdict,
                if r.correct { "ok" } else { "WRONG" },
                match r.holder_right {
                    Some(true) => format!(", held by {}", r.holder),
                    Some(false) => format!(", WRONG holder: {}", if r.holder.is_empty() { "none" } else { &r.holder }),
                    None => String::new(),
                }
            );
        }
        rows.push(r);
    }
    let mut scores = vec![
        score("engine", &rows, |r| Some(r.verdict.clone()), |r| r.delay_snapshots),
        score("engine --pprof-only", &rows, |r| Some(r.pprof_only.clone()), |r| r.delay_pprof_only),
        score("RSS trend (Theil-Sen + Mann-Kendall)", &rows, |r| Some(r.rss_baseline.clone()), |_| None),
    ];
    if let Some(cmd) = &args.detector {
        scores.push(score(&format!("detector: {cmd}"), &rows, |r| r.detector.clone(), |_| None));
    }
    let summary = markdown(&rows, &scores, args.quick);
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("summary.md"), &summary)?;
    let json = serde_json::json!({ "rows": rows, "scores": scores });
    std::fs::write(out.join("matrix.json"), serde_json::to_string_pretty(&json)?)?;
    // index.html (every run's report) and leak-vs-fix.svg; not fatal.
    if let Err(e) = crate::report::write_index(&out) {
        tracing::warn!("no index.html in {}: {e:#}", out.display());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print!("{summary}");
    }
    let wrong = rows.iter().filter(|r| !r.correct).count();
    if wrong > 0 {
        eprintln!("{wrong} wrong verdict(s)");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// `leaklab matrix --merge DIR...`: the union of the run folders, scored
/// as one set.
fn merge(args: &MatrixArgs) -> anyhow::Result<ExitCode> {
    use crate::dataset::score;
    let folders = score::run_folders(&args.merge)?;
    if folders.is_empty() {
        bail!("no run folders (with label.json or run.json) in {:?}", args.merge);
    }
    let results = score::results(&folders, args.detector.as_deref())?;
    let tables = score::tables(&results);
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from("runs/merged"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let dirs: Vec<String> = args.merge.iter().map(|d| d.display().to_string()).collect();
    let summary = format!(
        "## leaklab matrix --merge: {} runs from {}\n\n{}",
        results.len(),
        dirs.join(", "),
        score::markdown(&tables)
    );
    std::fs::write(out.join("summary.md"), &summary)?;
    let json = serde_json::json!({ "merged": dirs, "tables": tables, "results": results });
    std::fs::write(out.join("merged.json"), serde_json::to_string_pretty(&json)?)?;
    match crate::report::sweep::svg(&tables) {
        Ok(svg) => std::fs::write(out.join("sweep.svg"), svg)?,
        Err(e) => tracing::warn!("no sweep.svg: {e:#}"),
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json["tables"])?);
    } else {
        print!("{summary}");
    }
    Ok(ExitCode::SUCCESS)
}

fn markdown(rows: &[Row], scores: &[Score], quick: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "## leaklab matrix{}\n\n| scenario | variant | expected | verdict | correct | holder | pprof-only | leaked MiB/s | snapshots to verdict | peak RSS MiB |\n|---|---|---|---|---|---|---|---|---|---|",
        if quick { " (quick)" } else { "" }
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {:.2} | {} | {:.0} |",
            r.scenario,
            r.variant,
            r.expected,
            r.verdict,
            if r.correct { "yes" } else { "**no**" },
            match r.holder_right {
                Some(true) => format!("{} (right)", r.holder),
                Some(false) => format!("**{}** (wrong)", if r.holder.is_empty() { "none" } else { &r.holder }),
                None => "-".into(),
            },
            r.pprof_only,
            r.leaked_bytes_per_s / 1048576.0,
            r.delay_snapshots.map_or("-".into(), |d| d.to_string()),
            r.peak_rss_bytes as f64 / 1048576.0
        );
    }
    let judged: Vec<bool> = rows.iter().filter_map(|r| r.holder_right).collect();
    if !judged.is_empty() {
        let right = judged.iter().filter(|&&b| b).count();
        let _ = writeln!(
            s,
            "\nholder right: {right} of {} leak runs with a right kind ({:.2})\n",
            judged.len(),
            right as f64 / judged.len() as f64
        );
    }
    let _ = writeln!(
        s,
        "\n| detector | precision | recall | kind accuracy | false alarms | mean snapshots to verdict |\n|---|---|---|---|---|---|"
    );
    for sc in scores {
        let _ = writeln!(
            s,
            "| {} | {:.2} | {:.2} | {:.2} | {} | {} |",
            sc.detector,
            sc.precision,
            sc.recall,
            sc.kind_accuracy,
            sc.false_alarms,
            sc.mean_delay_snapshots.map_or("-".into(), |d| format!("{d:.1}"))
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_is_named_by_any_alternative() {
        let chain = vec![
            "static rpc::pool::Pool::global::GLOBAL".to_owned(),
            "VecDeque in rpc::linkbuf::InputBuffer::new".to_owned(),
        ];
        assert!(names_holder("rpc::linkbuf::InputBuffer", &chain));
        assert!(names_holder("nowhere|rpc::pool::", &chain));
        assert!(!names_holder("ScenarioHandler::remember", &chain));
        assert!(!names_holder("", &chain));
    }

    fn row(expected: &str, verdict: &str, delay: Option<usize>) -> Row {
        Row {
            scenario: "s".into(),
            variant: "v".into(),
            expected: expected.into(),
            verdict: verdict.into(),
            correct: expected == verdict,
            pprof_only: verdict.into(),
            rss_baseline: "none".into(),
            detector: None,
            site: String::new(),
            leaked_bytes_per_s: 0.0,
            delay_snapshots: delay,
            delay_pprof_only: delay,
            peak_rss_bytes: 0,
            holder: String::new(),
            holder_right: None,
        }
    }

    #[test]
    fn scores_count_alarms_misses_and_kinds() {
        let rows = [
            row("request-field-held", "request-field-held", Some(2)),
            row("oversized-request", "unknown", Some(4)),
            row("duplicate-clients", "none", None),
            row("none", "none", None),
            row("none", "idle-connection-buffers", None),
        ];
        let s = score("t", &rows, |r| Some(r.verdict.clone()), |r| r.delay_snapshots);
        // Flagged: 2 true leaks and 1 false alarm; 1 leak missed.
        assert_eq!(s.false_alarms, 1);
        assert!((s.precision - 2.0 / 3.0).abs() < 1e-9);
        assert!((s.recall - 2.0 / 3.0).abs() < 1e-9);
        assert!((s.kind_accuracy - 2.0 / 5.0).abs() < 1e-9);
        assert_eq!(s.mean_delay_snapshots, Some(3.0));
    }
}
