//! `leaklab export`: runs (a matrix's, a sweep's, or one) as a labelled
//! dataset for detector authors: per run its profiles, `metrics.jsonl` and
//! `label.json`, and at the top the JSON Schemas of both
//! (`label.schema.json`, `metrics.schema.json`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};

use crate::dataset::{Label, LABEL_SCHEMA, METRICS_SCHEMA};

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
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    std::fs::write(args.out.join("label.schema.json"), LABEL_SCHEMA)?;
    std::fs::write(args.out.join("metrics.schema.json"), METRICS_SCHEMA)?;
    for dir in &dirs {
        // A sweep's label (with its seed) when there is one, else made
        // from run.json.
        let label = Label::read(dir)?;
        let name = dir.file_name().map(|n| n.to_owned()).unwrap_or_default();
        let target = args.out.join(&name);
        std::fs::create_dir_all(&target)?;
        for entry in std::fs::read_dir(dir)?.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            if file.ends_with(".pb.gz") || file == "metrics.jsonl" {
                // A profile's limit bounds each file (a metrics log is far
                // smaller); links and devices are refused.
                crate::files::copy_regular(&entry.path(), &target.join(&file), diagnosis::MAX_PROFILE_BYTES)?;
            }
        }
        label.write(&target)?;
    }
    println!("{} labelled runs in {}", dirs.len(), args.out.display());
    Ok(ExitCode::SUCCESS)
}
