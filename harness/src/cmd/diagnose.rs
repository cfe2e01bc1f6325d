//! `leaklab diagnose`: the engine on a run folder, or on a live endpoint
//! polled until the verdict is sure.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use diagnosis::{
    DecodeLimits, DiagnosisError, HeapSnapshot, Options, ProfileDecoder, RunInput, Verdict, MAX_RUN_PROFILES,
};

use crate::units::parse_duration;

/// Flags of `leaklab diagnose`.
#[derive(Debug, Args)]
pub struct DiagnoseArgs {
    /// A run folder (heap-NNN.pb.gz, pool-NNN.pb.gz, metrics.jsonl), or the
    /// admin URL of a live process (`http://127.0.0.1:6060`).
    pub target: String,
    /// Print the verdict as JSON.
    #[arg(long)]
    pub json: bool,
    /// Heap profiles and metrics only, as a user of plain pprof has them.
    #[arg(long)]
    pub pprof_only: bool,
    /// Live mode: time between snapshots.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Live mode: give up after this long.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// `leaklab diagnose`.
pub fn diagnose(args: &DiagnoseArgs) -> anyhow::Result<ExitCode> {
    let opts = Options { pprof_only: args.pprof_only, ..Options::default() };
    let verdict = if args.target.starts_with("http://") || args.target.starts_with("https://") {
        live(args, &opts)?
    } else {
        let input = RunInput::from_dir(&args.target)?;
        let mut v = diagnosis::diagnose(&input, &opts);
        if !opts.pprof_only {
            diagnosis::attribute_holders(&mut v, &input.holders);
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
    // One decoder for every profile the loop takes: the run's memory
    // budget (`DecodeLimits::run_memory`) bounds them together, as it
    // bounds a run's directory; past it, the snapshots taken so far are
    // diagnosed.
    let mut decoder = ProfileDecoder::new(DecodeLimits::default());
    let mut fetch = |url: &str| -> anyhow::Result<HeapSnapshot> {
        let bytes = crate::scrape::get_url(&agent, url)?;
        Ok(decoder.decode(&bytes, url)?)
    };
    let mut input = RunInput::from_parts(Vec::new(), Vec::new(), Vec::new());
    let mut streak = (String::new(), 0usize);
    let mut verdict = None;
    let mut use_pools = !opts.pprof_only;
    // Holder profiles, where the process serves them: one now, one at the
    // end, for the growth of each chain.
    let holders_url = format!("{base}/debug/pprof/holders");
    let mut holders: Vec<HeapSnapshot> =
        if opts.pprof_only { None } else { fetch(&holders_url).ok() }.into_iter().collect();
    while start.elapsed() < args.timeout && input.heaps.len() < MAX_RUN_PROFILES / 2 {
        let t = start.elapsed().as_secs_f64();
        let url = format!("{base}/debug/pprof/heap");
        // A scrape that fails is skipped (the process may be busy); the
        // next one may succeed. Only the first must. A profile past the
        // budget ends the loop.
        match fetch(&url) {
            Ok(h) => input.heaps.push(h),
            Err(e) if input.heaps.is_empty() => return Err(e),
            Err(e) if past_budget(&e) => {
                eprintln!("snapshots stop: {e:#}");
                break;
            }
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
            match fetch(&format!("{base}/debug/pprof/pool")) {
                Ok(p) => input.pools.push(p),
                Err(_) => {
                    use_pools = false;
                    input.pools.clear();
                }
            }
        }
        if let Ok(text) = crate::scrape::get_url(&agent, &format!("{base}/metrics")) {
            input.metrics.push(crate::scrape::diagnosis_line(t, &String::from_utf8_lossy(&text)));
        }
        let v = diagnosis::diagnose(&input, opts);
        if v.kind == streak.0 {
            streak.1 += 1;
        } else {
            streak = (v.kind.to_string(), 1);
        }
        eprintln!("snapshot {}: {}", input.heaps.len(), v.summary);
        let sure = v.leak && streak.1 >= 4;
        verdict = Some(v);
        if sure {
            break;
        }
        std::thread::sleep(args.interval);
    }
    let mut verdict = verdict.context("no snapshot could be taken")?;
    if !holders.is_empty() {
        holders.extend(fetch(&holders_url).ok());
        diagnosis::attribute_holders(&mut verdict, &holders);
    }
    Ok(verdict)
}

/// Whether a profile was refused for the run's memory budget: no later
/// profile would fit either.
fn past_budget(e: &anyhow::Error) -> bool {
    e.downcast_ref::<DiagnosisError>().is_some_and(DiagnosisError::past_run_budget)
}
