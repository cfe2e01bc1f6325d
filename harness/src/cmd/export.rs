//! `leaklab export`: matrix runs as a labelled dataset for detector
//! authors (profiles, metrics, and a `label.json` per run).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};

use crate::runner::RunRecord;

/// Flags of `leaklab export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// A matrix folder (or a single run folder).
    pub from: PathBuf,
    /// The dataset folder to write.
    #[arg(long, default_value = "dataset")]
    pub out: PathBuf,
}

/// `leaklab export`: copies run folders' profiles and metrics with a
/// `label.json` each.
pub fn export(args: &ExportArgs) -> anyhow::Result<ExitCode> {
    let mut dirs: Vec<PathBuf> = if args.from.join("run.json").exists() {
        vec![args.from.clone()]
    } else {
        std::fs::read_dir(&args.from)
            .with_context(|| format!("reading {}", args.from.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join("run.json").exists())
            .collect()
    };
    dirs.sort();
    if dirs.is_empty() {
        bail!("no run folders (with run.json) in {}", args.from.display());
    }
    for dir in &dirs {
        let record: RunRecord = serde_json::from_str(&std::fs::read_to_string(dir.join("run.json"))?)
            .with_context(|| format!("reading {}", dir.join("run.json").display()))?;
        let name = dir.file_name().map(|n| n.to_owned()).unwrap_or_default();
        let target = args.out.join(&name);
        std::fs::create_dir_all(&target)?;
        for entry in std::fs::read_dir(dir)?.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            if file.ends_with(".pb.gz") || file == "metrics.jsonl" {
                std::fs::copy(entry.path(), target.join(&file))?;
            }
        }
        let label = serde_json::json!({
            "scenario": record.scenario,
            "variant": record.variant,
            "leak": record.expected != "none",
            "kind": record.expected,
            "params": record.params,
            "phases": record.phases,
            "interval_s": record.interval_s,
        });
        std::fs::write(target.join("label.json"), serde_json::to_string_pretty(&label)?)?;
    }
    println!("{} labelled runs in {}", dirs.len(), args.out.display());
    Ok(ExitCode::SUCCESS)
}
