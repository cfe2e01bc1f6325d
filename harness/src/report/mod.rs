//! Reports for people: `report.html` in a run folder, one self-contained
//! page (inline SVG, no network, no outside script or font) with
//!
//! - the verdict (kind, score, site, field, who holds it, evidence,
//!   remedy);
//! - a timeline of the sites that grew, RSS, connections and requests,
//!   with the phases and the snapshot from which the verdict was right;
//! - a flame graph of what grew over the load (inferno's, with its search);
//! - the pool's view: pinned bytes by holder and by taker;
//! - the guide's words on the case, the scenario's explanation, and the
//!   `go tool pprof` commands that show the same by hand;
//!
//! and beside it `timeline.svg` and `flame.svg`. With a second run
//! (`--compare`) both go side by side on the same scales. A matrix gets
//! `index.html`, linking every run's report, and `leak-vs-fix.svg`; `leaklab
//! compare` gets `compare.svg`, the ratios b/a of what a change costs.
//!
//! Every run writes its report ([`write_or_warn`], from the runner); a
//! report that fails is a warning. What a report reads is bounded, and an
//! error names the file (`run`).
//!
//! - `run`: a run folder, read;
//! - `timeline`, `flame`, `pool`: the pictures; `chart`: what they share;
//! - `html`: the page; `index`: a matrix's index and figure; `compare`: a
//!   comparison's figure; `sweep`: a sweep's figure (accuracy and delay by
//!   leak rate); `markup`: escaping, and SVG inside HTML.

mod chart;
mod compare;
mod flame;
mod html;
mod index;
mod markup;
mod pool;
mod run;
pub(crate) mod sweep;
mod timeline;

use std::path::{Path, PathBuf};

pub(crate) use compare::{ratio_chart, RatioBar};
pub(crate) use index::write_index;

use chart::{FULL_WIDTH, HALF_WIDTH};
use html::Pictures;
use pool::PoolView;
use run::Run;
use timeline::{Scale, Timeline};

/// Writes `report.html` (and `timeline.svg`, `flame.svg`) into `run_dir`;
/// with `compare`, the page shows both runs side by side on the same
/// scales. Returns the page's path.
pub(crate) fn write(run_dir: &Path, compare: Option<&Path>) -> anyhow::Result<PathBuf> {
    let main = Run::load(run_dir)?;
    let other = compare.map(Run::load).transpose()?;
    let runs: Vec<&Run> = std::iter::once(&main).chain(other.as_ref()).collect();
    let timelines: Vec<Timeline> = runs.iter().map(|r| Timeline::of(r)).collect();
    let pools: Vec<PoolView> = runs.iter().map(|r| PoolView::of(r)).collect();

    // The run's own pictures, beside the page.
    let own_timeline = timeline::svg(&timelines[0], &Scale::of(&[&timelines[0]]), FULL_WIDTH, &main.title())?;
    let mut pictures = Vec::new();
    for run in &runs {
        let growth = flame::growth(run);
        let flame = flame::svg(run, &growth)?;
        pictures.push(Pictures { timeline: String::new(), flame, growth, pool: None });
    }
    write_file(&run_dir.join("timeline.svg"), &own_timeline)?;
    write_file(&run_dir.join("flame.svg"), &pictures[0].flame)?;

    // The page's, on shared scales when there are two runs.
    let width = if runs.len() > 1 { HALF_WIDTH } else { FULL_WIDTH };
    let scale = Scale::of(&timelines.iter().collect::<Vec<_>>());
    let pool_scale = pool::scale(&pools.iter().collect::<Vec<_>>());
    for (i, run) in runs.iter().enumerate() {
        pictures[i].timeline = if runs.len() > 1 {
            timeline::svg(&timelines[i], &scale, width, &run.title())?
        } else {
            own_timeline.clone()
        };
        if !pools[i].is_empty() {
            let title = format!("Pooled chunks pinned in {}", run.title());
            pictures[i].pool = Some(pool::svg(&pools[i], pool_scale, width.max(HALF_WIDTH), &title)?);
        }
    }
    let page = html::page(&runs.iter().copied().zip(pictures.iter()).collect::<Vec<_>>());
    let path = run_dir.join("report.html");
    write_file(&path, &page)?;
    Ok(path)
}

/// [`write()`] at the end of a run: a failure is logged, never fatal, and
/// neither is a panic of a drawing library (the run's files are written).
pub(crate) fn write_or_warn(run_dir: &Path) -> Option<PathBuf> {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| write(run_dir, None)))
        .unwrap_or_else(|_| Err(anyhow::anyhow!("writing it panicked")));
    match result {
        Ok(path) => Some(path),
        Err(e) => {
            tracing::warn!("no report for {}: {e:#}", run_dir.display());
            None
        }
    }
}

fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    crate::files::write_new(path, text)
}
