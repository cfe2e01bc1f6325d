//! `leaklab diagnose`: the engine on a run folder or a live endpoint, and
//! the `verdict.json` a run writes.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use diagnosis::{diagnose, HeapSnapshot, MetricsLine, Options, RunInput, Verdict};
use serde::Serialize;

use crate::cli::DiagnoseArgs;

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

/// `leaklab diagnose`.
pub fn run(args: &DiagnoseArgs) -> anyhow::Result<ExitCode> {
    let opts = Options { pprof_only: args.pprof_only, ..Options::default() };
    let verdict = if args.target.starts_with("http://") || args.target.starts_with("https://") {
        live(args, &opts)?
    } else {
        let mut v = diagnose(&RunInput::from_dir(&args.target)?, &opts);
        if !opts.pprof_only {
            diagnosis::attribute_holders(&mut v, &holder_profiles(Path::new(&args.target))?);
        }
        v
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&verdict)?);
    } else {
        print!("{}", verdict.human());
    }
    Ok(if verdict.leak { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// Polls a live process's heap profile and metrics until the verdict has
/// been the same leak for 4 snapshots in a row, or the time is up.
fn live(args: &DiagnoseArgs, opts: &Options) -> anyhow::Result<Verdict> {
    let base = args.target.trim_end_matches('/');
    let base = base.strip_suffix("/debug/pprof/heap").unwrap_or(base).to_owned();
    let agent = crate::scrape::agent();
    let start = Instant::now();
    let (mut heaps, mut pools, mut metrics) = (Vec::new(), Vec::new(), Vec::new());
    let mut streak = (String::new(), 0usize);
    let mut verdict = None;
    let mut use_pools = !opts.pprof_only;
    // Holder profiles, where the process serves them: one now, one at the
    // end, for the growth of each chain.
    let holders_url = format!("{base}/debug/pprof/holders");
    let take_holders = |agent: &ureq::Agent| {
        crate::scrape::get_url(agent, &holders_url).and_then(|b| Ok(HeapSnapshot::decode(&b, &holders_url)?)).ok()
    };
    let mut holders: Vec<HeapSnapshot> =
        if opts.pprof_only { None } else { take_holders(&agent) }.into_iter().collect();
    while start.elapsed() < args.timeout {
        let t = start.elapsed().as_secs_f64();
        let url = format!("{base}/debug/pprof/heap");
        // A scrape that fails is skipped (the process may be busy); the
        // next one may succeed. Only the first must.
        let heap = crate::scrape::get_url(&agent, &url).and_then(|b| Ok(HeapSnapshot::decode(&b, &url)?));
        match heap {
            Ok(h) => heaps.push(h),
            Err(e) if heaps.is_empty() => return Err(e),
            Err(e) => {
                eprintln!("snapshot skipped: {e:#}");
                std::thread::sleep(args.interval);
                continue;
            }
        }
        // Pool profiles are used only while every snapshot has one: a
        // process without the endpoint, or one that failed, is diagnosed
        // from heap profiles alone from then on.
        if use_pools {
            let url = format!("{base}/debug/pprof/pool");
            match crate::scrape::get_url(&agent, &url).and_then(|b| Ok(HeapSnapshot::decode(&b, &url)?)) {
                Ok(p) => pools.push(p),
                Err(_) => {
                    use_pools = false;
                    pools.clear();
                }
            }
        }
        if let Ok(text) = crate::scrape::get_url(&agent, &format!("{base}/metrics")) {
            let text = String::from_utf8_lossy(&text);
            let mut line = MetricsLine {
                t,
                phase: None,
                values: crate::scrape::leaklab_names(diagnosis::parse_prometheus(&text)),
                text: Default::default(),
            };
            if let Some(peer) = crate::scrape::label_value(&text, "leaklab_largest_request_peer", "peer") {
                line.text.insert("largest_peer".into(), peer);
            }
            metrics.push(line);
        }
        let input = RunInput::from_parts(heaps.clone(), pools.clone(), metrics.clone());
        let v = diagnose(&input, opts);
        if v.kind == streak.0 {
            streak.1 += 1;
        } else {
            streak = (v.kind.to_string(), 1);
        }
        eprintln!("snapshot {}: {}", heaps.len(), v.summary);
        let sure = v.leak && streak.1 >= 4;
        verdict = Some(v);
        if sure {
            break;
        }
        std::thread::sleep(args.interval);
    }
    let mut verdict = verdict.context("no snapshot could be taken")?;
    if !holders.is_empty() {
        holders.extend(take_holders(&agent));
        diagnosis::attribute_holders(&mut verdict, &holders);
    }
    Ok(verdict)
}
