//! `leaklab run`: one scenario, run as a user would by hand, then
//! diagnosed (see `runner` for the run itself).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use scenarios::Variant;

use crate::cmd::args::{parse_key_value, VariantArg};
use crate::runner::{RunPlan, RunRecord, ServeCommand, Timing, RUN_PROFILE_RATE};
use crate::units::parse_duration;
use crate::verdict::VerdictFile;

/// Flags of `leaklab run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Scenario name (see `leaklab list`).
    pub scenario: String,
    /// Which variant.
    #[arg(long, value_enum, default_value_t = VariantArg::Leak)]
    pub variant: VariantArg,
    /// Output folder (default `runs/SCENARIO-VARIANT`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Length of the load phase; warm-up is a quarter of it, settle a third.
    #[arg(long, default_value = "8s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Snapshot interval.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    pub interval: Duration,
    /// A scenario parameter; repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub set: Vec<(String, String)>,
    /// The heap profiler's sampling rate in the process under test (mean
    /// bytes between samples).
    #[arg(long, default_value_t = RUN_PROFILE_RATE)]
    pub profile_rate: usize,
    /// Do not run the process under test in holder mode (no
    /// `holders-NNN.pb.gz`; the verdict then names no holder).
    #[arg(long)]
    pub no_holders: bool,
}

/// `leaklab run`.
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let info = scenarios::find(&args.scenario)?;
    let variant: Variant = args.variant.into();
    let out = args.out.unwrap_or_else(|| PathBuf::from("runs").join(format!("{}-{}", info.name, variant)));
    let plan = RunPlan {
        info,
        variant,
        set: args.set,
        out: out.clone(),
        timing: Timing::for_duration(args.duration, args.interval),
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        profile_rate: args.profile_rate,
        holders: !args.no_holders,
        serve: ServeCommand::default(),
    };
    let (record, v) = execute(&plan)?;
    println!(
        "{} ({}): {} snapshots in {}\nverdict: {} (expected {}: {})",
        record.scenario,
        record.variant,
        record.snapshots,
        out.display(),
        v.verdict.summary,
        v.expected,
        if v.correct { "correct" } else { "WRONG" }
    );
    if out.join("report.html").is_file() {
        println!("report: {}", out.join("report.html").display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Makes the run of `plan` and diagnoses it, writing everything a run
/// folder holds: what `leaklab run` and `leaklab quiz` both do.
pub fn execute(plan: &RunPlan) -> anyhow::Result<(RunRecord, VerdictFile)> {
    crate::runner::run_and_diagnose(plan)
}
