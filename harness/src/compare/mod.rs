//! What a change costs: two sides (a scenario's leak and fix, two
//! settings, two server configurations or two builds) run in alternating
//! rounds under the same load, each run read back into the same figures,
//! then summed up per side and as ratios b/a.
//!
//! - `settings`: a side's SETTINGS (`fix,payload=64KiB`) and serve FLAGS;
//! - `measure`: one run folder's figures (req/s, latency, CPU and
//!   allocations per call, peak RSS, leak rate, what stayed);
//! - `stats`: medians, spreads and per-round ratios;
//! - `summary`: the metrics, the JSON (`compare.json`) and the table.
//!
//! `cmd::compare` makes the runs (with the runner, as `leaklab run` does)
//! and writes the results; nothing here starts a process.

mod measure;
mod settings;
mod stats;
mod summary;

pub use measure::{measure, RunFigures};
pub use settings::{overlay, parse_side, split_serve_flags, SideSettings};
pub use stats::Change;
pub use summary::{abba, number, summarize, table, verdict_counts, Better, Comparison, RunEntry, SideInfo};
