//! `leaklab report`: `report.html` for people, in a run folder (see
//! `report` for what it shows); in a matrix's folder, its `index.html` and
//! `leak-vs-fix.svg` again.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

/// Flags of `leaklab report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A run folder (`leaklab run --out`), or any folder of `heap-NNN.pb.gz`;
    /// or a matrix's folder (`matrix.json`): then its index.html and
    /// leak-vs-fix.svg are written again.
    pub run_dir: PathBuf,
    /// Another run to show side by side on the same scales (a fix beside
    /// its leak).
    #[arg(long, value_name = "OTHER_RUN_DIR")]
    pub compare: Option<PathBuf>,
}

/// `leaklab report`.
pub fn report(args: &ReportArgs) -> anyhow::Result<ExitCode> {
    let dir = &args.run_dir;
    let matrix = dir.join("matrix.json").is_file() && !dir.join("heap-000.pb.gz").exists();
    let path = if matrix && args.compare.is_none() {
        crate::report::write_index(dir)?
    } else {
        crate::report::write(dir, args.compare.as_deref())?
    };
    println!("{}", path.display());
    Ok(ExitCode::SUCCESS)
}
