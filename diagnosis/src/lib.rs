//! Reads the heap profiles and metrics of a process, and gives the
//! evidence for or against a memory leak.
//!
//! The input is what any process can serve, Go programs included: heap
//! profiles in Go's profile.proto format (as `/debug/pprof/heap` serves
//! them, gzip'd or not), optionally a pool's view in the same format, and
//! optionally one line of metrics per snapshot. A run's directory holds
//! them as `heap-NNN.pb.gz`, `pool-NNN.pb.gz`, `metrics.jsonl` and
//! `run.json` (of which only the phases' spans are read).
//!
//! - [`HeapSnapshot`] decodes one profile into samples with resolved call
//!   stacks ([`HeapSample`], [`Frame`]); it never panics on bad input and
//!   keeps within [`DecodeLimits`] (bytes read, memory per profile and per
//!   run, checked before allocating); [`ProfileDecoder`] shares one budget
//!   and one table of names ([`Name`]) across the profiles of a run.
//! - [`RunInput`] is a run: profiles, metrics lines ([`MetricsLine`]),
//!   phase spans, and a [`timeline`](RunInput::timeline) that gives each
//!   snapshot its time and phase. [`parse_prometheus`] turns a live
//!   `/metrics` page into the same values.
//! - [`diagnose`] measures each site's growth against the work the process
//!   did and names the guide's case ([`Kind`]) in a [`Verdict`], with its
//!   evidence and [`remedy`]; [`rss_trend`] is the plain RSS baseline it is
//!   scored against, and [`attribute_holders`] names who holds a finding's
//!   memory from holder profiles; [`site_of`] names a stack's site as the
//!   engine does, for tools that chart the sites it speaks of.
//! - Trend statistics, robust to noise and outliers: [`theil_sen`],
//!   [`mann_kendall`], [`pearson`], [`spearman`], [`change_points`],
//!   [`plateau`], [`median`], [`mad`].
//! - [`DiagnosisError`] says what could not be read, naming the file.
//!
//! ```no_run
//! use diagnosis::{mann_kendall, theil_sen, RunInput};
//!
//! let run = RunInput::from_dir("runs/my-service")?;
//! let times: Vec<f64> = run.timeline().iter().map(|s| s.t).collect();
//! let inuse: Vec<f64> = run.heaps.iter().map(|h| h.total_inuse_bytes()).collect();
//! if let Some((slope, _)) = theil_sen(&times, &inuse) {
//!     let trend = mann_kendall(&inuse);
//!     println!("{slope:.0} B/s, p = {:.3}", trend.p_value);
//! }
//! # Ok::<(), diagnosis::DiagnosisError>(())
//! ```
//!
//! This crate depends on no other crate of the workspace and knows nothing
//! of scenarios: it reads files.

mod baseline;
mod confirm;
mod engine;
mod error;
mod files;
mod frames;
mod holder;
mod input;
mod kind;
mod profile;
mod rules;
mod shape;
mod stats;
mod units;
mod verdict;

pub use baseline::rss_trend;
pub use engine::{diagnose, Options};
pub use error::DiagnosisError;
pub use files::open_regular;
pub use frames::site_of;
pub use holder::{attribute_holders, HOLDER_STAYS};
pub use input::{parse_metrics, parse_prometheus, MetricsLine, PhaseSpan, RunInput, SnapshotTime};
pub use kind::{remedy, Kind, Mode, UnknownKind, KINDS};
pub use profile::{
    DecodeLimits, Frame, HeapSample, HeapSnapshot, Name, ProfileDecoder, MAX_NAME_BYTES, MAX_PROFILE_BYTES,
    MAX_PROFILE_MEMORY, MAX_RUN_MEMORY, MAX_RUN_PROFILES, MAX_SAMPLE_FRAMES, MAX_STACK_TEXT_BYTES,
};
pub use stats::{
    change_points, mad, mann_kendall, median, pearson, plateau, spearman, theil_sen, MkResult, PlateauInfo,
    LEVEL_OFF_PACE, MAD_TO_SIGMA, MAX_TREND_POINTS, PLATEAU_TOLERANCE,
};
pub use verdict::{Finding, Holder, Verdict, ALSO_HELD};
