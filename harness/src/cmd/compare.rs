//! `leaklab compare`: what a change costs. Two sides run in alternating
//! rounds, each run a normal run (see `runner`) into `OUT/a-N`, `OUT/b-N`;
//! then each run's figures (see `compare`) are summed up per side and as
//! ratios b/a, printed as a table or JSON, and drawn in `compare.svg`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use scenarios::{Info, Variant};

use crate::cmd::args::parse_key_value;
use crate::compare::{
    abba, measure, number, overlay, parse_side, split_serve_flags, summarize, table, verdict_counts, Better, Change,
    Comparison, RunEntry, RunFigures, SideInfo, SideSettings,
};
use crate::report::{ratio_chart, RatioBar};
use crate::runner::{RunPlan, ServeCommand, Timing, RUN_PROFILE_RATE};
use crate::units::{parse_bytes, parse_duration};

/// The profiler's rate in a comparison's runs: what `leaklab run` uses, so
/// that profiles, verdicts and the profiler's own cost are a normal run's.
/// Allocations per call come from the profiler's exact counters, kept at
/// any rate.
const COMPARE_PROFILE_RATE: usize = RUN_PROFILE_RATE;

/// The end of `leaklab compare --help`.
const AFTER_HELP: &str = "\
SETTINGS (--a, --b): a variant and scenario parameters, separated by commas:
  leak                   the leak variant, the scenario's default parameters
  fix,payload=64KiB      the fix, with payload=64KiB
  decode=nocopy          the side's default variant (a: leak, b: fix), decode=nocopy
  variant=fix,rps=0      the variant may also be written as a key
The variant comes first or as variant=...; keys are the scenario's parameters
(`leaklab explain SCENARIO`). `--set KEY=VALUE` sets a parameter for both sides;
a side's SETTINGS override it.

Without SCENARIO, each side is a plain `leaklab serve FLAGS` (--a-serve, --b-serve)
under steady Echo calls (--conns, --payload, --rps), and/or another build of
leaklab (--a-bin, --b-bin: its `serve` is the process under test; the load is
always this binary's):
  leaklab compare --a-serve '--decode copy' --b-serve '--decode nocopy' --payload 16KiB
  leaklab compare request-field-hold --a leak --b leak --a-bin /tmp/leaklab-before

Rounds run a b, then b a, then a b... (ABBA): a slow drift of the machine (other
work on shared cores, the CPU's clock) then weighs on both sides alike, and
neither side always runs first. b/a is taken within each round; it is `lower` or
`higher` when every round's ratio is on that side of 1 and their median more than
2% from it, else `within noise`.

Per run, over the load phase (from its first to its last snapshot):
  req/s                  the process's request counter (a client scenario: its calls);
                         at a fixed rate (`rps`) this is the offered load unless the
                         process falls behind: `rps=0` loads as fast as it answers
  latency p50/p99/p99.9  the peer's steady calls, from when each was due (server
                         scenarios; a client scenario's calls are its own: none)
  CPU µs/call            CPU time (user+system) of the process under test, read from
                         outside, less what its scrapes cost it, per call
  allocs/call, alloc KiB/call
                         the profiler's exact counters of blocks and bytes allocated
                         (kept on every allocation, at any --profile-rate), less
                         what the admin listener allocated answering the scrapes,
                         per call; a build without the counters: alloc_objects and
                         alloc_space of its heap profiles (with --profile-rate 1,
                         every allocation; else Go's estimates from samples), the
                         scrapes' stacks left out
and over the run: peak RSS; leaked MiB/s (the in-use slope over warm-up and load,
as the matrix computes it); held after drain (in-use at the end over the first
snapshot); the engine's verdict.

Written into OUT: a-1, b-1, ... (normal run folders: profiles, metrics.jsonl,
verdict.json, report.html), compare.txt (the table), compare.json, compare.svg
(each metric's b/a with the rounds' spread).

compare.json (and --json): scenario (null for plain servers), rounds, order ([\"a\",
\"b\", \"b\", \"a\", ...]), load_s, seed, profile_rate, shared_set ([[key, value]]),
a and b ({label, variant, set, serve_flags, serve_bin}), runs ([{side, round, dir,
figures}]; figures: calls, seconds, rps, p50_ms, p99_ms, p999_ms, cpu_us_per_call,
scrape_cpu_share, allocs_per_call, alloc_bytes_per_call, allocs_counted, peak_rss_bytes,
leaked_bytes_per_s, held_after_drain_bytes, dropped_samples, verdict), metrics ([{key, label, unit,
better: lower|higher, a, b, ratio: {median, min, max, n} or null, change:
lower|higher|within-noise, or null with fewer than 2 ratios}]), verdicts ({a: {kind: count}, b: ...}).
Values are in the unit given (bytes, not MiB); a figure not measured is null.";

/// Flags of `leaklab compare`.
#[derive(Debug, Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct CompareArgs {
    /// The scenario both sides run (see `leaklab list`). Without one, both
    /// sides are a plain `leaklab serve` under steady calls, set apart by
    /// --a-serve/--b-serve and/or --a-bin/--b-bin.
    pub scenario: Option<String>,
    /// Side a: `VARIANT[,KEY=VALUE]...` (see SETTINGS below) [default: leak].
    #[arg(long, value_name = "SETTINGS", value_parser = parse_side)]
    pub a: Option<SideSettings>,
    /// Side b: `VARIANT[,KEY=VALUE]...` [default: fix].
    #[arg(long, value_name = "SETTINGS", value_parser = parse_side)]
    pub b: Option<SideSettings>,
    /// Rounds; each runs a and b once, back to back, in the order a b, b a,
    /// a b, ...
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=100))]
    pub rounds: u16,
    /// Length of each run's load phase; warm-up is a quarter of it, settle
    /// a third (a run takes about 1.6 times this).
    #[arg(long, default_value = "8s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Snapshot interval.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    pub interval: Duration,
    /// A scenario parameter for both sides (a side's SETTINGS override it);
    /// repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub set: Vec<(String, String)>,
    /// Print the comparison as JSON (as compare.json) instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Where the runs and results go [default: runs/compare-SCENARIO, or
    /// runs/compare-serve].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Side a is a plain `leaklab serve FLAGS` (`--decode nocopy`,
    /// `--nocopy-write`, `--barriers legacy`, budgets...); no SCENARIO.
    #[arg(long = "a-serve", value_name = "FLAGS", allow_hyphen_values = true)]
    pub a_serve: Option<String>,
    /// Side b is a plain `leaklab serve FLAGS`; no SCENARIO.
    #[arg(long = "b-serve", value_name = "FLAGS", allow_hyphen_values = true)]
    pub b_serve: Option<String>,
    /// Side a's process under test is this leaklab build's `serve`.
    #[arg(long = "a-bin", value_name = "PATH")]
    pub a_bin: Option<PathBuf>,
    /// Side b's process under test is this leaklab build's `serve`.
    #[arg(long = "b-bin", value_name = "PATH")]
    pub b_bin: Option<PathBuf>,
    /// Plain servers: steady connections, one call in flight each [default: 4].
    #[arg(long)]
    pub conns: Option<usize>,
    /// Plain servers: msg bytes of each call (`1024`, `16KiB`) [default: 1KiB].
    #[arg(long, value_parser = parse_bytes)]
    pub payload: Option<usize>,
    /// Plain servers: calls per second over all connections, 0 as fast as
    /// answered [default: 1000].
    #[arg(long)]
    pub rps: Option<u64>,
    /// The heap profiler's sampling rate in the process under test (mean
    /// bytes between samples), as `leaklab run`'s. Allocations per call are
    /// counted exactly at any rate (the profiler's counters); 1 records
    /// every allocation in the heap profiles too, which costs CPU per call
    /// and RSS, and is what counts them for a build without the counters
    /// (`--a-bin`/`--b-bin` of an older leaklab).
    #[arg(long, default_value_t = COMPARE_PROFILE_RATE)]
    pub profile_rate: usize,
    /// The heap profiler's sampling seed, the same in every run.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Run the process under test in holder mode, with holder scans (off by
    /// default: they cost CPU).
    #[arg(long)]
    pub holders: bool,
}

/// One side, settled.
#[derive(Debug, Clone)]
struct SidePlan {
    /// What the results say of it.
    info: SideInfo,
    /// Its variant.
    variant: Variant,
    /// Its parameters, shared ones included.
    set: Vec<(String, String)>,
    /// How its process under test starts.
    serve: ServeCommand,
}

/// What `compare` will do, checked.
#[derive(Debug)]
struct Plan {
    /// The scenario both sides run (a plain server's load: `steady`'s).
    info: &'static Info,
    /// Whether the user named it.
    named: bool,
    /// a, b.
    sides: [SidePlan; 2],
    /// Parameters set for both.
    shared_set: Vec<(String, String)>,
    /// Rounds.
    rounds: usize,
    /// Phase lengths.
    timing: Timing,
    /// Output folder.
    out: PathBuf,
}

/// A build given with `--a-bin`/`--b-bin`, as an absolute path.
fn binary(path: &Option<PathBuf>, flag: &str) -> anyhow::Result<Option<PathBuf>> {
    let Some(path) = path else { return Ok(None) };
    if !path.is_file() {
        bail!(
            "{flag} {}: no such file (a leaklab binary, e.g. target/release/leaklab of another build)",
            path.display()
        );
    }
    Ok(Some(std::fs::canonicalize(path).with_context(|| format!("{flag} {}", path.display()))?))
}

/// ` (PATH)` after a side's label when it runs another build.
fn bin_suffix(bin: &Option<PathBuf>) -> String {
    bin.as_ref().map(|b| format!(" ({})", b.display())).unwrap_or_default()
}

fn plan(args: &CompareArgs) -> anyhow::Result<Plan> {
    let bins = [binary(&args.a_bin, "--a-bin")?, binary(&args.b_bin, "--b-bin")?];
    let serve_of = |bin: &Option<PathBuf>, plain: bool, flags: Vec<String>| ServeCommand {
        exe: bin.clone(),
        plain,
        flags,
        seed: Some(args.seed),
    };
    let (info, named, sides, shared_set) = match &args.scenario {
        Some(name) => {
            let info = scenarios::find(name)?;
            if args.a_serve.is_some() || args.b_serve.is_some() {
                bail!(
                    "{name} sets its own server's configuration: compare its parameters instead \
                     (--a 'leak,decode=nocopy'), or leave SCENARIO out to compare plain servers"
                );
            }
            if args.conns.is_some() || args.payload.is_some() || args.rps.is_some() {
                bail!("--conns, --payload and --rps are for plain servers; with a scenario use --set conns=N (or a side's SETTINGS)");
            }
            let defaults = [Variant::Leak, Variant::Fix];
            let given = [&args.a, &args.b];
            let mut sides = Vec::new();
            for (k, name) in ['a', 'b'].into_iter().enumerate() {
                let settings = given[k].clone().unwrap_or(SideSettings { variant: None, set: Vec::new() });
                let variant = settings.variant_or(defaults[k]);
                let set = overlay(&args.set, &settings.set);
                scenarios::Params::parse(info, &set).with_context(|| format!("side {name}'s settings"))?;
                let shown = SideSettings { variant: Some(variant), set: settings.set.clone() };
                sides.push(SidePlan {
                    info: SideInfo {
                        label: format!("{shown}{}", bin_suffix(&bins[k])),
                        variant: Some(variant.to_string()),
                        set: set.clone(),
                        serve_flags: Vec::new(),
                        serve_bin: bins[k].as_ref().map(|b| b.display().to_string()),
                    },
                    variant,
                    set,
                    serve: serve_of(&bins[k], false, Vec::new()),
                });
            }
            (info, true, sides, args.set.clone())
        }
        None => {
            if args.a.is_some() || args.b.is_some() || !args.set.is_empty() {
                bail!(
                    "--a, --b and --set name a scenario's variant and parameters: give SCENARIO, or compare \
                     plain servers with --a-serve/--b-serve (their load: --conns, --payload, --rps)"
                );
            }
            if args.a_serve.is_none() && args.b_serve.is_none() && bins.iter().all(Option::is_none) {
                bail!(
                    "nothing to compare: give SCENARIO (see `leaklab list`), or plain servers with \
                     --a-serve/--b-serve FLAGS and/or --a-bin/--b-bin PATH (the same on both sides \
                     measures the noise: --a-serve '' --b-serve '')"
                );
            }
            let info = scenarios::find("steady")?;
            let set = vec![
                ("conns".to_owned(), args.conns.unwrap_or(4).to_string()),
                ("payload".to_owned(), args.payload.unwrap_or(1024).to_string()),
                ("rps".to_owned(), args.rps.unwrap_or(1000).to_string()),
            ];
            scenarios::Params::parse(info, &set)?;
            let flags = [&args.a_serve, &args.b_serve];
            let mut sides = Vec::new();
            for (k, name) in ['a', 'b'].into_iter().enumerate() {
                let flags = split_serve_flags(flags[k].as_deref().unwrap_or(""))
                    .map_err(|e| anyhow::anyhow!("--{name}-serve: {e}"))?;
                let label = std::iter::once("serve".to_owned()).chain(flags.iter().cloned()).collect::<Vec<_>>();
                sides.push(SidePlan {
                    info: SideInfo {
                        label: format!("{}{}", label.join(" "), bin_suffix(&bins[k])),
                        variant: None,
                        set: set.clone(),
                        serve_flags: flags.clone(),
                        serve_bin: bins[k].as_ref().map(|b| b.display().to_string()),
                    },
                    variant: Variant::Leak,
                    set: set.clone(),
                    serve: serve_of(&bins[k], true, flags),
                });
            }
            (info, false, sides, set)
        }
    };
    let [a, b]: [SidePlan; 2] = sides.try_into().map_err(|_| anyhow::anyhow!("two sides"))?;
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("runs").join(if named { format!("compare-{}", info.name) } else { "compare-serve".to_owned() })
    });
    Ok(Plan {
        info,
        named,
        sides: [a, b],
        shared_set,
        rounds: args.rounds as usize,
        timing: Timing::for_duration(args.duration, args.interval),
        out,
    })
}

/// One line of progress for a run just made.
fn progress_line(f: &RunFigures) -> String {
    let opt = |v: Option<f64>, scale: f64| v.map_or("-".to_owned(), |v| number(v / scale));
    format!(
        "{} req/s, p99 {} ms, CPU {} µs/call, {} allocs/call, leaked {} MiB/s; verdict {}",
        opt(f.rps, 1.0),
        opt(f.p99_ms, 1.0),
        opt(f.cpu_us_per_call, 1.0),
        opt(f.allocs_per_call, 1.0),
        opt(f.leaked_bytes_per_s, 1048576.0),
        if f.verdict.is_empty() { "?" } else { &f.verdict }
    )
}

/// The figure's bars, from the summary.
fn bars(c: &Comparison) -> Vec<RatioBar> {
    c.metrics
        .iter()
        .map(|m| RatioBar {
            label: m.label.clone(),
            ratio: m.ratio.map(|r| (r.median, r.min, r.max)),
            b_better: match (m.change, m.better) {
                (Some(Change::Lower), Better::Lower) | (Some(Change::Higher), Better::Higher) => Some(true),
                (Some(Change::Lower), Better::Higher) | (Some(Change::Higher), Better::Lower) => Some(false),
                _ => None,
            },
        })
        .collect()
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// `leaklab compare`.
pub fn compare(args: CompareArgs) -> anyhow::Result<ExitCode> {
    let plan = plan(&args)?;
    std::fs::create_dir_all(&plan.out).with_context(|| format!("creating {}", plan.out.display()))?;
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let t = plan.timing;
    let each = t.warmup + t.load + t.settle + Duration::from_secs(1);
    let all = each * 2 * plan.rounds as u32;
    eprintln!(
        "{} round{} of a and b, about {:.0} s a run, {} in all; runs in {}",
        plan.rounds,
        if plan.rounds == 1 { "" } else { "s" },
        each.as_secs_f64(),
        if all < Duration::from_secs(120) {
            format!("{:.0} s", all.as_secs_f64())
        } else {
            format!("{:.0} min", all.as_secs_f64() / 60.0)
        },
        plan.out.display()
    );
    if plan.sides[0].info == plan.sides[1].info {
        eprintln!("a and b are the same: this measures the noise");
    }
    let mut figures: [Vec<RunFigures>; 2] = [Vec::new(), Vec::new()];
    let mut runs = Vec::new();
    let mut order = Vec::new();
    for (r, pair) in abba(plan.rounds).into_iter().enumerate() {
        for side in pair {
            let k = usize::from(side == 'b');
            let s = &plan.sides[k];
            let dir = plan.out.join(format!("{side}-{}", r + 1));
            eprintln!("round {}/{}, {side}: {}", r + 1, plan.rounds, s.info.label);
            let run_plan = RunPlan {
                info: plan.info,
                variant: s.variant,
                set: s.set.clone(),
                out: dir.clone(),
                timing: t,
                progress,
                profile_rate: args.profile_rate,
                holders: args.holders,
                serve: s.serve.clone(),
            };
            crate::runner::run_and_diagnose(&run_plan)
                .with_context(|| format!("round {}, side {side} ({})", r + 1, s.info.label))?;
            let f = measure(&dir).with_context(|| format!("reading {}", dir.display()))?;
            eprintln!("  {}", progress_line(&f));
            figures[k].push(f.clone());
            runs.push(RunEntry { side: side.to_string(), round: r + 1, dir: dir.display().to_string(), figures: f });
            order.push(side.to_string());
        }
    }
    let [a, b] = &plan.sides;
    let comparison = Comparison {
        scenario: plan.named.then(|| plan.info.name.to_owned()),
        rounds: plan.rounds,
        order,
        load_s: t.load.as_secs_f64(),
        seed: args.seed,
        profile_rate: args.profile_rate,
        shared_set: plan.shared_set.clone(),
        a: a.info.clone(),
        b: b.info.clone(),
        runs,
        metrics: summarize(&figures[0], &figures[1]),
        verdicts: BTreeMap::from([
            ("a".to_owned(), verdict_counts(&figures[0])),
            ("b".to_owned(), verdict_counts(&figures[1])),
        ]),
    };
    let text = table(&comparison, &plan.out.display().to_string());
    let json = serde_json::to_string_pretty(&comparison)?;
    write(&plan.out.join("compare.txt"), &text)?;
    write(&plan.out.join("compare.json"), &json)?;
    let what = comparison.scenario.as_deref().unwrap_or("plain servers");
    let title = format!("leaklab compare {what}: b / a over {} rounds", plan.rounds);
    match ratio_chart(&title, &a.info.label, &b.info.label, &bars(&comparison)) {
        Ok(svg) => write(&plan.out.join("compare.svg"), &svg)?,
        Err(e) => tracing::warn!("no compare.svg: {e:#}"),
    }
    if args.json {
        println!("{json}");
    } else {
        print!("{text}");
        println!(
            "written: {}",
            ["compare.txt", "compare.json", "compare.svg"].map(|f| plan.out.join(f).display().to_string()).join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: CompareArgs,
    }

    fn parse(args: &[&str]) -> anyhow::Result<Plan> {
        let cli = Cli::try_parse_from(std::iter::once("compare").chain(args.iter().copied()))?;
        plan(&cli.args)
    }

    #[test]
    fn sides_default_to_leak_and_fix_and_take_their_settings() {
        let p = parse(&["request-field-hold", "--set", "rps=200", "--b", "fix,payload=64KiB"]).expect("plan");
        let [a, b] = &p.sides;
        assert_eq!((a.variant, b.variant), (Variant::Leak, Variant::Fix));
        assert_eq!((a.info.label.as_str(), b.info.label.as_str()), ("leak", "fix,payload=64KiB"));
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert_eq!(a.set, [pair("rps", "200")]);
        assert_eq!(b.set, [pair("rps", "200"), pair("payload", "64KiB")]);
        assert!(!a.serve.plain && a.serve.flags.is_empty() && a.serve.seed == Some(1));
        assert_eq!(p.out, PathBuf::from("runs/compare-request-field-hold"));
        assert_eq!((p.rounds, p.timing.load), (4, Duration::from_secs(8)));
    }

    #[test]
    fn plain_servers_take_their_flags_and_a_steady_load() {
        let p =
            parse(&["--a-serve", "--decode copy", "--b-serve=--decode nocopy", "--payload", "16KiB", "--rounds", "2"])
                .expect("plan");
        let [a, b] = &p.sides;
        assert!(a.serve.plain && b.serve.plain);
        assert_eq!(b.serve.flags, ["--decode", "nocopy"]);
        assert_eq!((a.info.label.as_str(), b.info.label.as_str()), ("serve --decode copy", "serve --decode nocopy"));
        assert_eq!(p.info.name, "steady");
        assert!(a.set.contains(&("payload".to_owned(), "16384".to_owned())), "{:?}", a.set);
        assert_eq!(p.out, PathBuf::from("runs/compare-serve"));
    }

    #[test]
    fn what_does_not_fit_together_is_refused() {
        for (args, says) in [
            (&["request-field-hold", "--a-serve", "--decode copy"][..], "sets its own server"),
            (&["request-field-hold", "--payload", "1KiB"][..], "for plain servers"),
            (&["--a", "leak", "--a-serve", ""][..], "give SCENARIO"),
            (&[][..], "nothing to compare"),
            (&["--a-bin", "/no/such/leaklab"][..], "no such file"),
            (&["--a-serve", "--listen 127.0.0.1:9"][..], "set by the run itself"),
            (&["request-field-hold", "--b", "fix,payload=0"][..], "side b"),
            (&["no-such-scenario"][..], "no-such-scenario"),
        ] {
            let err = format!("{:#}", parse(args).expect_err(&format!("{args:?}")));
            assert!(err.contains(says), "{args:?}: {err}");
        }
        assert!(parse(&["steady", "--rounds", "0"]).is_err());
    }
}
