//! `leaklab sweep`: many seeded, labelled runs drawn from documented
//! distributions, scored for the engine, the RSS-trend baseline and any
//! outside detector, overall and per kind.
//!
//! **What a run draws** (each run from its own seed, [`draw`], so that any
//! run can be made again alone with `--run-seed`):
//! - the case: a leak variant (55%), a fix variant (25%) or a healthy
//!   control (20%), then a scenario uniformly among those;
//! - its parameters, each from its documented range
//!   ([`scenarios::draw_params`], as `leaklab quiz` draws them);
//! - the background, for every run: `none` (40%), `churn`, `cache`,
//!   `burst` or `all` (15% each);
//! - for a leak variant, the onset (none half the time, else 20–50% into
//!   the load), the leak rate (one call in 1, 2, 4 or 8), and in 12% of
//!   runs a second leak mechanism (`mix`) that composes with the first
//!   and leaks at least eight sampling periods of the heap profile after
//!   the onset ([`MIX_MIN_PERIODS`]);
//! - a **slow leak** (20% of the leak variants of the scenarios that leak a
//!   little at a time, those [`full_rate`] knows): a load of at least 150 s,
//!   snapshots every second, and a leak rate aimed at 10–80 KiB/s
//!   (log-uniform): one call (or connection) in `full / target` leaking,
//!   where `full` is what the run's parameters leak at one in one
//!   ([`full_rate`]).
//!
//! A modifier the scenario does not take, or a mixture it rejects, is left
//! out rather than failing the sweep.
//!
//! `--shard K/N` runs the runs whose index is K−1 modulo N, so that N
//! machines share one sweep; `leaklab matrix --merge DIR...` scores their
//! folders as one. A run folder that already holds a `score.json` of the
//! same seed is kept, so an interrupted sweep goes on where it stopped.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use scenarios::{Info, Params, Side, Variant};
use serde::Serialize;

use crate::dataset::score::{self, RunResult};
use crate::dataset::{modifier, Label};
use crate::runner::{RunPlan, ServeCommand, Timing, RUN_PROFILE_RATE};

/// Flags of `leaklab sweep`.
#[derive(Debug, clap::Args)]
pub struct SweepArgs {
    /// Runs in the whole sweep (over all shards).
    #[arg(long, default_value_t = 100)]
    pub runs: usize,
    /// The sweep's seed: the same seed draws the same runs.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Load of each run (slow leaks run at least 150 s).
    #[arg(long, default_value = "8s", value_parser = crate::units::parse_duration)]
    pub duration: Duration,
    /// This machine's share: `K/N` runs every run whose index is K-1 modulo N.
    #[arg(long, value_parser = parse_shard)]
    pub shard: Option<Shard>,
    /// Where the run folders, `summary.md` and `sweep.json` go (default
    /// `runs/sweep`; with `--run-seed S`, `runs/sweep-seed-S`, so that the
    /// sweep the run came from stays whole).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also score this command on every run (`sh -c 'CMD "$0"' RUN_DIR`
    /// prints a JSON object with `leak` and `kind`; see `scripts/detectors/`).
    #[arg(long)]
    pub detector: Option<String>,
    /// Start the process under test as `PATH serve ...` instead of this
    /// leaklab's `serve` (another build, or a wrapper that runs it under a
    /// tool such as `scripts/detectors/heaptrack-serve`).
    #[arg(long, value_name = "PATH")]
    pub serve_bin: Option<PathBuf>,
    /// Take holder scans in every run (slower; names who holds each leak).
    #[arg(long)]
    pub holders: bool,
    /// Print the plan (one line per run) and run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Make only the run this seed draws (a run's seed is in its
    /// `label.json`).
    #[arg(long)]
    pub run_seed: Option<u64>,
    /// Print the scores as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `K/N`: the K-th of N shares (K from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// Which share, from 1.
    pub k: usize,
    /// Of how many.
    pub n: usize,
}

fn parse_shard(s: &str) -> Result<Shard, String> {
    let (k, n) = s.split_once('/').ok_or_else(|| format!("expected K/N such as 2/8, not {s:?}"))?;
    let k: usize = k.trim().parse().map_err(|_| format!("{s:?}: K is not a whole number"))?;
    let n: usize = n.trim().parse().map_err(|_| format!("{s:?}: N is not a whole number"))?;
    if n == 0 || k == 0 || k > n {
        return Err(format!("{s:?}: K must be from 1 to N, and N at least 1"));
    }
    Ok(Shard { k, n })
}

/// One run of the sweep, as drawn.
#[derive(Debug, Clone)]
pub struct Drawn {
    /// Its place in the sweep, from 0.
    pub index: usize,
    /// The seed it was drawn from.
    pub seed: u64,
    /// The scenario.
    pub info: &'static Info,
    /// Leak or fix.
    pub variant: Variant,
    /// `--set` pairs: parameters and modifiers.
    pub set: Vec<(String, String)>,
    /// Its load.
    pub load: Duration,
    /// Snapshot interval.
    pub interval: Duration,
}

impl PartialEq for Drawn {
    fn eq(&self, o: &Drawn) -> bool {
        (self.index, self.seed, self.info.name, self.variant, &self.set, self.load, self.interval)
            == (o.index, o.seed, o.info.name, o.variant, &o.set, o.load, o.interval)
    }
}

impl Drawn {
    /// The folder name: index, scenario, variant.
    pub fn folder(&self) -> String {
        format!("{:04}-{}-{}", self.index, self.info.name, self.variant)
    }

    /// The same run by hand.
    pub fn command(&self) -> String {
        let mut s = format!(
            "leaklab run {} --variant {} --duration {}s --interval {}ms",
            self.info.name,
            self.variant,
            self.load.as_secs_f64(),
            self.interval.as_millis()
        );
        for (k, v) in &self.set {
            s.push_str(&format!(" --set {k}={v}"));
        }
        s
    }
}

/// A run's seed: run `index` of the sweep seeded `seed` (SplitMix64 of
/// both, so neighbouring indexes draw unrelated runs).
pub fn run_seed(seed: u64, index: usize) -> u64 {
    let mut z = seed.wrapping_add((index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Share of leak variants among runs (the rest: fix variants and controls).
const LEAK_SHARE: f64 = 0.55;
/// Share of fix variants.
const FIX_SHARE: f64 = 0.25;
/// Share of the leak variants that can leak slowly ([`full_rate`]) that are
/// slow leaks.
const SLOW_SHARE: f64 = 0.2;
/// What a scenario that can leak slowly leaks with these parameters at
/// `leak_rate=1` (bytes/s); `None` for the others: the scenario's own
/// figure ([`scenarios::Info::trickle_rate`]).
fn full_rate(info: &Info, set: &[(String, String)]) -> Option<f64> {
    info.trickle_rate(&Params::parse(info, set).ok()?)
}

/// The fewest bytes a mixed-in mechanism leaks over the load after its
/// onset, in sampling periods of the heap profile (`RUN_PROFILE_RATE`).
///
/// A sampling profiler sees B bytes of blocks smaller than its period as
/// about B / period samples (Poisson). At eight, the chance of fewer than
/// four (the engine's fewest blocks for a trend, and about what a person
/// reading the profile needs) is 4%. Below that a mechanism is present but
/// invisible to any heap profile: a second leak of a light load (a held
/// 512 B field at 39 calls/s, one call in two, leaks 57 KiB in 5.9 s, about
/// one sample) is not a mixture a detector can be scored on.
const MIX_MIN_PERIODS: f64 = 8.0;

/// The run's parameters that a mixed-in server mechanism shares: the calls
/// it handles are the run's.
const HOST_LOAD: [&str; 2] = ["rps", "payload"];

/// Whether `other`, mixed into a run of `set` at one call in `rate`, leaks
/// at least [`MIX_MIN_PERIODS`] over `leaking_s` seconds. A mechanism
/// [`full_rate`] does not know leaks a connection's buffers or a client's
/// pool at once, MiB at any rate.
///
/// A mixed-in mechanism runs with its own defaults (`scenarios::mix_params`
/// gives it only the onset and the leak rate): a client leak makes its own
/// calls, while a server leak handles the calls of `host`, so it takes the
/// `rps` and `payload` ([`HOST_LOAD`]) that `host` runs with, drawn or
/// fixed (a parameter a scenario fixes is not in `set`).
fn mix_leaks_enough(host: &Info, other: &Info, set: &[(String, String)], leaking_s: f64, rate: u64) -> bool {
    let own: Vec<(String, String)> = match other.side {
        Side::Client => Vec::new(),
        Side::Server => {
            let Ok(p) = Params::parse(host, set) else { return false };
            // Read as what they are: `payload` is a size (`1KiB`), `rps` a
            // number.
            let [rps, payload] = HOST_LOAD;
            let own = [
                (rps, p.f64(rps).ok().map(|v| v.to_string())),
                (payload, p.usize(payload).ok().map(|v| v.to_string())),
            ];
            own.into_iter().filter_map(|(k, v)| Some((k.to_owned(), v?))).collect()
        }
    };
    full_rate(other, &own)
        .is_none_or(|full| full / rate as f64 * leaking_s >= MIX_MIN_PERIODS * RUN_PROFILE_RATE as f64)
}

/// What slow leaks aim at (KiB/s): tens of KiB a second, drawn log-uniform.
const SLOW_TARGET_KIB_S: (f64, f64) = (10.0, 80.0);
/// Share of leak variants with a second mechanism.
const MIX_SHARE: f64 = 0.12;
/// The shortest load of a slow leak: two minutes to find it, and a margin.
const SLOW_LOAD: Duration = Duration::from_secs(150);
/// Snapshot interval of ordinary runs (the matrix's).
const INTERVAL: Duration = Duration::from_millis(500);
/// Snapshot interval of slow leaks: 150 snapshots over the load.
const SLOW_INTERVAL: Duration = Duration::from_secs(1);

/// Backgrounds and their weights (in twentieths).
const BACKGROUNDS: [(&str, u32); 5] = [("none", 8), ("churn", 3), ("cache", 3), ("burst", 3), ("all", 3)];

fn weighted<R: Rng>(rng: &mut R, choices: &[(&'static str, u32)]) -> &'static str {
    let mut at = rng.random_range(0..choices.iter().map(|c| c.1).sum::<u32>());
    for (name, w) in choices {
        if at < *w {
            return name;
        }
        at -= w;
    }
    choices[0].0
}

/// The run that `seed` draws, at place `index`, with loads of `load`.
pub fn draw(index: usize, seed: u64, load: Duration) -> Drawn {
    let mut rng = StdRng::seed_from_u64(seed);
    let catalogue = scenarios::catalogue();
    let u: f64 = rng.random();
    let (pool, variant): (Vec<&'static Info>, Variant) = if u < LEAK_SHARE {
        (catalogue.iter().filter(|i| !i.control).collect(), Variant::Leak)
    } else if u < LEAK_SHARE + FIX_SHARE {
        (catalogue.iter().filter(|i| !i.control).collect(), Variant::Fix)
    } else {
        (catalogue.iter().filter(|i| i.control).collect(), Variant::Leak)
    };
    let info = pool[rng.random_range(0..pool.len())];
    let leaks = variant == Variant::Leak && !info.control;
    let mut set = scenarios::draw_params(info, &mut rng);
    let take = |set: &mut Vec<(String, String)>, key: &str, value: String| {
        if info.param(key).is_some() {
            set.push((key.to_owned(), value));
        }
    };
    let background = weighted(&mut rng, &BACKGROUNDS);
    take(&mut set, modifier::BACKGROUND, background.to_owned());
    let (mut run_load, mut interval) = (load, INTERVAL);
    if leaks {
        let full = full_rate(info, &set);
        let slow = rng.random_bool(SLOW_SHARE) && full.is_some();
        if slow {
            run_load = load.max(SLOW_LOAD);
            interval = SLOW_INTERVAL;
        }
        let onset = if rng.random_bool(0.5) { 0.0 } else { run_load.as_secs_f64() * rng.random_range(0.2..0.5) };
        take(&mut set, modifier::ONSET, format!("{:.1}s", onset));
        let rate = match full.filter(|_| slow) {
            Some(full) => {
                let (lo, hi) = SLOW_TARGET_KIB_S;
                let target = 1024.0 * (lo.ln() + rng.random::<f64>() * (hi / lo).ln()).exp();
                (full / target).round().max(2.0) as u64
            }
            None => [1, 2, 4, 8][rng.random_range(0..4)],
        };
        take(&mut set, modifier::LEAK_RATE, rate.to_string());
        // A slow leak runs alone: a second mechanism would leak at its rate
        // too, and a surge or a duplicate client at one in hundreds is no
        // leak at all over the run. (The draw is made all the same, so that
        // the rest of the run is drawn as before.)
        if rng.random_bool(MIX_SHARE) && !slow {
            // The first other leak, from a random start, that this scenario
            // accepts as a mixture.
            let others: Vec<&Info> = catalogue.iter().filter(|i| !i.control && i.name != info.name).collect();
            let start = rng.random_range(0..others.len().max(1));
            for other in others.iter().cycle().skip(start).take(others.len()) {
                let mut with = set.clone();
                with.push((modifier::MIX.to_owned(), other.name.to_owned()));
                if info.param(modifier::MIX).is_some()
                    && Params::parse(info, &with).is_ok()
                    && mix_leaks_enough(info, other, &with, run_load.as_secs_f64() - onset, rate)
                {
                    set = with;
                    break;
                }
            }
        }
    }
    Drawn { index, seed, info, variant, set, load: run_load, interval }
}

/// The sweep's runs: `runs` draws from `seed`, this shard's share.
pub fn plan(runs: usize, seed: u64, load: Duration, shard: Option<Shard>) -> Vec<Drawn> {
    (0..runs).filter(|i| shard.is_none_or(|s| i % s.n == s.k - 1)).map(|i| draw(i, run_seed(seed, i), load)).collect()
}

/// Warm-up and settle of a slow leak: long enough for a baseline and for
/// what stays to show (ten snapshots each), where a quarter and a third of
/// its load, as ordinary runs take, would add two minutes of nothing.
const SLOW_EDGES: Duration = Duration::from_secs(10);

impl Drawn {
    /// The phases of the run.
    pub fn timing(&self) -> Timing {
        let t = Timing::for_duration(self.load, self.interval);
        if self.load >= SLOW_LOAD {
            Timing { warmup: SLOW_EDGES, settle: SLOW_EDGES, ..t }
        } else {
            t
        }
    }
}

/// Whether the run scored in `dir` (its `label`) is the one `d` draws, as
/// this sweep would make it: the same seed, and as its `run.json` planned
/// it, the same warm-up, load and snapshot interval, the same process under
/// test (`serve_bin`), and holder scans if they are asked for. Anything
/// else (a record from before the plan was kept included) is run again.
fn same_run(label: &Label, d: &Drawn, dir: &Path, args: &SweepArgs) -> bool {
    let t = d.timing();
    let near = |a: Option<f64>, b: Duration| a.is_some_and(|a| (a - b.as_secs_f64()).abs() < 1e-3);
    let serve_bin = args.serve_bin.as_ref().map(|p| p.display().to_string());
    label.seed == Some(d.seed)
        && crate::dataset::read_record(dir).is_ok_and(|r| {
            near(r.warmup_s, t.warmup)
                && near(r.load_s, t.load)
                && near(Some(r.interval_s), t.interval)
                && r.serve_bin == serve_bin
                && (!args.holders || !r.holder_scans.is_empty())
        })
}

fn planned_time(d: &Drawn) -> Duration {
    let t = d.timing();
    t.warmup + t.load + t.drain + t.settle
}

/// What `sweep.json` holds.
#[derive(Debug, Serialize)]
struct SweepFile<'a> {
    seed: u64,
    runs: usize,
    shard: Option<String>,
    tables: &'a [score::Table],
    results: &'a [RunResult],
}

/// `leaklab sweep`.
pub fn sweep(args: SweepArgs) -> anyhow::Result<ExitCode> {
    let runs = match args.run_seed {
        Some(seed) => vec![draw(0, seed, args.duration)],
        None => plan(args.runs, args.seed, args.duration, args.shard),
    };
    if runs.is_empty() {
        bail!("this shard has no runs: --runs {} over {:?}", args.runs, args.shard);
    }
    if args.dry_run {
        for d in &runs {
            println!("{} seed {}: {}", d.folder(), d.seed, d.command());
        }
        return Ok(ExitCode::SUCCESS);
    }
    crate::runner::install_interrupt_handler()?;
    let out = args.out.clone().unwrap_or_else(|| match args.run_seed {
        Some(seed) => PathBuf::from(format!("runs/sweep-seed-{seed}")),
        None => PathBuf::from("runs/sweep"),
    });
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let total: Duration = runs.iter().map(planned_time).sum();
    let bar = indicatif::ProgressBar::new(total.as_secs());
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {elapsed_precise} elapsed, {eta_precise} left  {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut folders = Vec::new();
    for (n, d) in runs.iter().enumerate() {
        bar.set_prefix(format!("run {}/{}", n + 1, runs.len()));
        bar.set_message(format!("{} ({})", d.info.name, d.variant));
        let dir = out.join(d.folder());
        let done = crate::files::read_text_at_most(&dir.join(score::SCORE_FILE), score::MAX_SCORE_BYTES)
            .ok()
            .and_then(|s| serde_json::from_str::<RunResult>(&s).ok())
            .is_some_and(|r| same_run(&r.label, d, &dir, &args));
        if !done {
            let plan = RunPlan {
                info: d.info,
                variant: d.variant,
                set: d.set.clone(),
                out: dir.clone(),
                timing: d.timing(),
                progress: false,
                profile_rate: RUN_PROFILE_RATE,
                holders: args.holders,
                // The run's seed also seeds the heap profiler's sampling:
                // the same seed, the same profiles' sampling decisions.
                serve: ServeCommand { exe: args.serve_bin.clone(), seed: Some(d.seed), ..ServeCommand::default() },
            };
            let (record, _) = crate::runner::run_and_diagnose(&plan)
                .with_context(|| format!("run {} ({})", d.folder(), d.command()))?;
            let label = Label::of_run(&record, Some(d.seed))?;
            label.write(&dir)?;
            let result = score::score_run(&dir, &label, args.detector.as_deref())?;
            score::write_result(&dir, &result)?;
            let engine = result.outcomes.first();
            bar.println(format!(
                "{} expected {:<26} engine {:<26} {}",
                d.folder(),
                label.kind,
                engine.map_or("-", |o| o.kind.as_str()),
                if engine.is_some_and(|o| o.right) { "ok" } else { "WRONG" }
            ));
        }
        folders.push(dir);
        bar.inc(planned_time(d).as_secs());
        if crate::runner::interrupted() {
            bail!("interrupted after {} runs; run the same command again to go on", n + 1);
        }
    }
    bar.finish_and_clear();
    let results = score::results(&folders, args.detector.as_deref())?;
    let tables = score::tables(&results);
    let summary = format!(
        "## leaklab sweep: seed {}, {} runs{}\n\n{}",
        args.seed,
        results.len(),
        args.shard.map_or(String::new(), |s| format!(" (shard {}/{})", s.k, s.n)),
        score::markdown(&tables)
    );
    crate::files::write_new(&out.join("summary.md"), &summary)?;
    let file = SweepFile {
        seed: args.seed,
        runs: args.runs,
        shard: args.shard.map(|s| format!("{}/{}", s.k, s.n)),
        tables: &tables,
        results: &results,
    };
    crate::files::write_new(&out.join("sweep.json"), serde_json::to_string_pretty(&file)?)?;
    match crate::report::sweep::svg(&tables) {
        Ok(svg) => crate::files::write_new(&out.join("sweep.svg"), svg)?,
        Err(e) => tracing::warn!("no sweep.svg: {e:#}"),
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&tables)?);
    } else {
        print!("{summary}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_draws_the_same_plan() {
        let a = plan(40, 7, Duration::from_secs(8), None);
        let b = plan(40, 7, Duration::from_secs(8), None);
        assert_eq!(a, b);
        let c = plan(40, 8, Duration::from_secs(8), None);
        assert_ne!(a, c);
        // Every drawn run is valid for its scenario.
        for d in &a {
            Params::parse(d.info, &d.set).unwrap_or_else(|e| panic!("{}: {e}", d.command()));
        }
    }

    #[test]
    fn shards_split_the_plan_without_overlap() {
        let all = plan(23, 3, Duration::from_secs(8), None);
        let mut union: Vec<Drawn> =
            (1..=4).flat_map(|k| plan(23, 3, Duration::from_secs(8), Some(Shard { k, n: 4 }))).collect();
        union.sort_by_key(|d| d.index);
        assert_eq!(union, all);
        // A run drawn alone from its seed is the run the sweep drew.
        let d = &all[5];
        assert_eq!(draw(d.index, d.seed, Duration::from_secs(8)), *d);
    }

    #[test]
    fn shards_are_checked() {
        assert_eq!(parse_shard("2/8"), Ok(Shard { k: 2, n: 8 }));
        for bad in ["0/4", "5/4", "1/0", "2", "a/b"] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_plan_mixes_leaks_fixes_controls_and_slow_leaks() {
        let p = plan(400, 11, Duration::from_secs(8), None);
        let leaks = p.iter().filter(|d| d.variant == Variant::Leak && !d.info.control).count();
        let controls = p.iter().filter(|d| d.info.control).count();
        let slow = p.iter().filter(|d| d.load >= SLOW_LOAD).count();
        assert!((180..=260).contains(&leaks), "{leaks} leaks of 400");
        assert!((50..=110).contains(&controls), "{controls} controls of 400");
        assert!((5..=35).contains(&slow), "{slow} slow leaks of 400");
        // The scenarios that leak a field or a connection at a time, and
        // only they, have a full rate (with their default parameters).
        let slow: Vec<&str> =
            scenarios::catalogue().iter().filter(|i| full_rate(i, &[]).is_some()).map(|i| i.name).collect();
        assert_eq!(slow, ["request-field-hold", "response-field-hold", "idle-connections", "sonic-string-hold"]);
        // Slow leaks run alone, and aim at tens of KiB/s from their full rate.
        for d in p.iter().filter(|d| d.load >= SLOW_LOAD) {
            assert!(d.set.iter().all(|(k, _)| k != modifier::MIX), "{}", d.command());
            let full = full_rate(d.info, &d.set).expect("a slow scenario");
            let rate: f64 =
                d.set.iter().find(|(k, _)| k == modifier::LEAK_RATE).expect("a leak rate").1.parse().unwrap();
            let aimed = full / rate / 1024.0;
            assert!(
                (SLOW_TARGET_KIB_S.0 * 0.9..=SLOW_TARGET_KIB_S.1 * 1.1).contains(&aimed),
                "{}: {aimed} KiB/s",
                d.info.name
            );
        }
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_mixed_in_leak_leaks_enough_to_be_seen() {
        let find = |n: &str| scenarios::find(n).unwrap();
        let (idle, field) = (find("idle-connections"), find("request-field-hold"));
        // A held 512 B field at 39 calls/s, one in two, for 5.9 s: 57 KiB,
        // about one sampling period. Ten times the calls: nine periods.
        let light = pairs(&[("rps", "39"), ("payload", "512"), ("idle_rate", "143")]);
        assert!(!mix_leaks_enough(idle, field, &light, 5.9, 2));
        let busy = pairs(&[("rps", "390"), ("payload", "512")]);
        assert!(mix_leaks_enough(idle, field, &busy, 5.9, 2));
        // A server mechanism handles the calls the host runs with, fixed
        // parameters included: sonic-string-hold fixes 256 B requests, so a
        // held field at 150 calls/s leaks under five periods in 8 s, where
        // request-field-hold's own 16 KiB default would pass.
        let sonic = find("sonic-string-hold");
        assert_eq!(Params::parse(sonic, &[]).unwrap().u64("payload").unwrap(), 256);
        assert!(!mix_leaks_enough(sonic, field, &pairs(&[("rps", "150")]), 8.0, 1));
        assert!(
            full_rate(field, &pairs(&[("rps", "150")])).unwrap() * 8.0 >= MIX_MIN_PERIODS * RUN_PROFILE_RATE as f64
        );
        // The host's payload is read with its unit: a held 1 KiB field at
        // 200 calls/s, one in eight, for 4.4 s is 110 KiB, under two
        // periods (request-field-hold's own 16 KiB would pass).
        let oversized = find("oversized-request");
        assert!(!mix_leaks_enough(oversized, field, &pairs(&[("rps", "200"), ("payload", "1KiB")]), 4.4, 8));
        assert!(mix_leaks_enough(oversized, field, &pairs(&[("rps", "200"), ("payload", "16KiB")]), 4.4, 8));
        // A client leak makes its own calls: the host's light load is not
        // its, and its own default load leaks plenty.
        assert!(mix_leaks_enough(idle, find("response-field-hold"), &light, 5.9, 2));
        // Mechanisms that leak MiB at once have no floor.
        assert!(mix_leaks_enough(idle, find("duplicate-clients"), &light, 0.1, 8));
        // The floor leaves mixtures to score: about 12% of the leaks of a
        // plan (some 20 in 400 runs) are drawn a second mechanism.
        let mixed = plan(400, 11, Duration::from_secs(8), None)
            .iter()
            .filter(|d| d.set.iter().any(|(k, _)| k == modifier::MIX))
            .count();
        assert!((8..=40).contains(&mixed), "{mixed} mixtures in 400 runs");
    }
}
