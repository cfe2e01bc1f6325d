//! `leaklab quiz`: a blind exercise for workshops.
//!
//! A seed draws a scenario, its variant and its parameters
//! ([`scenarios::draw_exercise`]); the exercise is run and diagnosed exactly
//! as `leaklab run` does ([`run::execute`]), into a folder named after the
//! seed; what names the scenario is sealed in `DIR/answer/` ([`seal`]).
//! The learner explores the profiles with `go tool pprof`, answers the kind
//! of leak (and, for a held field, its tag), and the quiz reveals the
//! scenario, the engine's verdict, and puts the folder back as a run.

mod seal;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use diagnosis::Kind;
use rand::rngs::StdRng;
use rand::SeedableRng;
use scenarios::{draw_exercise, Exercise, Level};

use crate::cmd::run;
use crate::runner::{RunPlan, RunRecord, ServeCommand, Timing, RUN_PROFILE_RATE};
use crate::units::parse_duration;
use crate::verdict::VerdictFile;

/// Flags of `leaklab quiz`.
#[derive(Debug, Args)]
pub struct QuizArgs {
    /// The exercise's seed: the same seed draws the same exercise on every
    /// machine (default: a random one, printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// easy: a leak, which case? hard: also fixes and healthy controls
    /// (`none` is a possible answer).
    #[arg(long, value_enum, default_value_t = LevelArg::Easy)]
    pub level: LevelArg,
    /// Output folder (default `runs/quiz-SEED`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Length of the load phase, as `leaklab run`'s.
    #[arg(long, default_value = "8s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Snapshot interval.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    pub interval: Duration,
    /// The answer, for scripts: KIND or KIND:TAG (`request-field-held:2`);
    /// without it the quiz asks on stdin.
    #[arg(long, value_name = "KIND[:TAG]", value_parser = parse_answer)]
    pub answer: Option<Answer>,
    /// Print the exercise the seed draws (scenario, variant, parameters,
    /// expected verdict) and run nothing: for teachers.
    #[arg(long)]
    pub plan: bool,
}

/// Easy or hard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LevelArg {
    /// The leak variant of a leak scenario.
    Easy,
    /// Also fix variants and healthy controls.
    Hard,
}

impl From<LevelArg> for Level {
    fn from(l: LevelArg) -> Level {
        match l {
            LevelArg::Easy => Level::Easy,
            LevelArg::Hard => Level::Hard,
        }
    }
}

/// What the learner said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// The kind.
    pub kind: Kind,
    /// The field tag, for a held field.
    pub tag: Option<i16>,
}

/// The kinds whose answer includes the tag of the held field.
const HELD_FIELD_KINDS: [Kind; 3] = [Kind::RequestFieldHeld, Kind::ResponseFieldHeld, Kind::ZeroCopyStringHeld];

/// Parses `KIND` or `KIND:TAG`; the kind may also be its number in the
/// quiz's list (`2:2`).
fn parse_answer(s: &str) -> Result<Answer, String> {
    let (kind, tag) = match s.split_once(':') {
        Some((k, t)) => (k, Some(parse_tag(t)?)),
        None => (s, None),
    };
    Ok(Answer { kind: parse_kind(kind)?, tag })
}

fn parse_kind(s: &str) -> Result<Kind, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<usize>() {
        return Kind::ALL.get(n.wrapping_sub(1)).copied().ok_or_else(|| format!("pick 1 to {}", Kind::ALL.len()));
    }
    s.parse::<Kind>().map_err(|_| format!("{s:?} is no kind: one of {}", diagnosis::KINDS.join(", ")))
}

fn parse_tag(s: &str) -> Result<i16, String> {
    let s = s.trim();
    s.parse::<i16>().ok().filter(|t| *t > 0).ok_or_else(|| format!("{s:?} is no field tag: a number such as 2"))
}

/// `leaklab quiz`.
pub fn quiz(args: QuizArgs) -> anyhow::Result<ExitCode> {
    let seed = args.seed.unwrap_or_else(|| rand::random_range(1..100_000));
    let level = Level::from(args.level);
    let exercise = draw_exercise(level, &mut StdRng::seed_from_u64(seed));
    let out = args.out.unwrap_or_else(|| PathBuf::from("runs").join(format!("quiz-{seed}")));
    if args.plan {
        print!("{}", plan_text(seed, level, &exercise));
        return Ok(ExitCode::SUCCESS);
    }
    let timing = Timing::for_duration(args.duration, args.interval);
    println!("leaklab quiz: seed {seed}, level {level}");
    println!(
        "A service is about to run under load: one of the guide's cases{}. Its name is hidden: find the \
         case from its profiles, as you would in production. (The process under test has the scenario on its \
         command line: looking at `ps` is cheating.)",
        if level == Level::Hard { ", or a healthy run" } else { "" }
    );
    let total = timing.warmup + timing.load + timing.drain + timing.settle;
    let secs = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    println!(
        "\nRunning it into {}: warm-up {}, load {}, drain, settle {} (about {:.0} s)...",
        out.display(),
        secs(timing.warmup),
        secs(timing.load),
        secs(timing.settle),
        total.as_secs_f64()
    );
    std::io::stdout().flush()?;
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    // What a quiz into the same folder left sealed goes back, to be replaced.
    seal::unseal(&out)?;
    let plan = RunPlan {
        info: exercise.info,
        variant: exercise.variant,
        set: exercise.set.clone(),
        out: out.clone(),
        timing,
        progress: false,
        profile_rate: RUN_PROFILE_RATE,
        holders: true,
        serve: ServeCommand::default(),
    };
    let made = run::execute(&plan);
    // Sealed even when the run failed: its logs name the scenario.
    seal::seal(&out)?;
    let (record, verdict) = made?;
    print!("{}", guide_text(&out, &record));
    let answer = match args.answer {
        Some(a) => Some(a),
        None => ask(&out)?,
    };
    seal::unseal(&out)?;
    print!("{}", reveal_text(&out, &exercise, &record, &verdict, answer));
    Ok(ExitCode::SUCCESS)
}

/// `--plan`: the exercise, and the `leaklab run` that makes the same run.
fn plan_text(seed: u64, level: Level, e: &Exercise) -> String {
    let sets: String = e.set.iter().map(|(k, v)| format!(" --set {k}={v}")).collect();
    let mut text = format!(
        "seed {seed}, level {level}: {} ({} variant{}), expected {}",
        e.info.name,
        e.variant,
        if e.info.control { ", a healthy control" } else { "" },
        e.expected()
    );
    if let (Some(field), false) = (e.info.held_field(), e.expected() == "none") {
        text.push_str(&format!(", {field}"));
    }
    text.push_str(&format!("\n  parameters drawn: {}\n", pairs(&e.set)));
    text.push_str(&format!("  the same run: leaklab run {} --variant {}{sets}\n", e.info.name, e.variant));
    text
}

fn pairs(set: &[(String, String)]) -> String {
    if set.is_empty() {
        return "none (defaults)".to_owned();
    }
    set.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
}

/// Snapshot numbers of a run's `PREFIX-NNN.pb.gz`, in order.
fn numbers(dir: &Path, prefix: &str) -> Vec<usize> {
    let mut n: Vec<usize> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_prefix(prefix)?.strip_suffix(".pb.gz")?.parse().ok()
                })
                .collect()
        })
        .unwrap_or_default();
    n.sort_unstable();
    n
}

/// Where the profiles are and how to read them, with the run's real file
/// names; nothing in it names the scenario.
fn guide_text(dir: &Path, record: &RunRecord) -> String {
    let last = record.snapshots.saturating_sub(1);
    let metrics = dir.join("metrics.jsonl");
    let phases: Vec<Option<String>> = std::fs::read(&metrics)
        .ok()
        .and_then(|bytes| diagnosis::parse_metrics(&bytes, &metrics).ok())
        .map(|lines| lines.into_iter().map(|l| l.phase).collect())
        .unwrap_or_default();
    let last_load = phases.iter().rposition(|p| p.as_deref() == Some("load")).unwrap_or(last);
    let base = 1.min(last);
    let f = |kind: &str, n: usize| dir.join(format!("{kind}-{n:03}.pb.gz")).display().to_string();
    let holders = numbers(dir, "holders-");
    let mut t = String::new();
    let mut line = |s: String| {
        t.push_str(&s);
        t.push('\n');
    };
    line(format!(
        "done: {} snapshots, one every {} ms; the load ends after snapshot {last_load:03}, then the drain and settle.\n",
        record.snapshots,
        (record.interval_s * 1000.0).round()
    ));
    line(format!("Heap profiles (who allocated the memory in use), heap-000 to heap-{last:03}:"));
    line("  # what grew during the load, then what stays after the drain".into());
    line(format!(
        "  go tool pprof -top -sample_index=inuse_space -diff_base {} {}",
        f("heap", base),
        f("heap", last_load)
    ));
    line(format!("  go tool pprof -top -sample_index=inuse_space -diff_base {} {}", f("heap", base), f("heap", last)));
    line("  # the callers and the code of a row (FUNC: a regexp such as read_field_2)".into());
    line(format!(
        "  go tool pprof -peek 'FUNC' -sample_index=inuse_space -diff_base {} {}",
        f("heap", base),
        f("heap", last)
    ));
    line(format!("  go tool pprof -list 'FUNC' -sample_index=inuse_space {}", f("heap", last)));
    line(format!(
        "  go tool pprof -http=:8080 -sample_index=inuse_space -diff_base {} {}",
        f("heap", base),
        f("heap", last)
    ));
    line("Pool profiles (pooled chunks: who took each one and who still holds it):".into());
    line(format!("  go tool pprof -top -diff_base {} {}", f("pool", base), f("pool", last)));
    line(format!("  go tool pprof -traces {}", f("pool", last)));
    if let (Some(&first), Some(&end)) = (holders.first(), holders.last()) {
        let all: Vec<String> = holders.iter().map(|n| format!("holders-{n:03}")).collect();
        line(format!("Holder profiles (who holds it: chains from a root to the held block): {}", all.join(", ")));
        line(format!("  go tool pprof -top -diff_base {} {}", f("holders", first), f("holders", end)));
        line(format!("  go tool pprof -tree {}", f("holders", end)));
    }
    line(
        "Metrics, one JSON line per snapshot (phase, requests, open_conns, opened_conns, clients_created, pool bytes):"
            .into(),
    );
    line(format!("  {}", metrics.display()));
    line(format!(
        "The run's record, its verdict and its logs are sealed in {} until you answer.",
        dir.join(seal::ANSWER_DIR).display()
    ));
    t
}

/// Asks for the kind and, for a held field, its tag, on stdin; `None` at
/// the end of input. An interrupt (Ctrl-C) leaves the answer sealed.
fn ask(dir: &Path) -> anyhow::Result<Option<Answer>> {
    let lines = stdin_lines();
    println!("\nWhich case is it?");
    for (i, kind) in Kind::ALL.iter().enumerate() {
        println!("  {:>2}  {kind}", i + 1);
    }
    let Some(kind) = prompt(&lines, dir, "Your answer (number or name): ", parse_kind)? else {
        println!("\n(no answer: end of input)");
        return Ok(None);
    };
    let mut tag = None;
    if HELD_FIELD_KINDS.contains(&kind) {
        tag = prompt(&lines, dir, "Which field is held? Its tag in rpc/idl/echo.thrift: ", parse_tag)?;
    }
    Ok(Some(Answer { kind, tag }))
}

/// Lines of stdin, read by a thread of their own so that an interrupt is
/// seen while waiting.
fn stdin_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Asks until `parse` takes a line; `None` at the end of input.
fn prompt<T>(
    lines: &mpsc::Receiver<String>,
    dir: &Path,
    question: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> anyhow::Result<Option<T>> {
    loop {
        print!("{question}");
        std::io::stdout().flush()?;
        let line = loop {
            if crate::runner::interrupted() {
                anyhow::bail!("interrupted: the answer stays sealed in {}", dir.join(seal::ANSWER_DIR).display());
            }
            match lines.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => break line,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(None),
            }
        };
        match parse(&line) {
            Ok(v) => return Ok(Some(v)),
            Err(why) => println!("  {why}"),
        }
    }
}

/// The reveal: the exercise, whether the answer was right, the engine's
/// verdict, and where to read on.
fn reveal_text(dir: &Path, e: &Exercise, record: &RunRecord, v: &VerdictFile, answer: Option<Answer>) -> String {
    let expected = e.expected();
    let field = e.info.held_field().filter(|_| expected != "none");
    let mut t = String::new();
    let mut line = |s: String| {
        t.push_str(&s);
        t.push('\n');
    };
    line("\n== The answer ==".into());
    line(format!(
        "  scenario:   {} ({} variant; {} side{})",
        e.info.name,
        e.variant,
        record.side,
        if e.info.control { "; a healthy control" } else { "" }
    ));
    line(format!("  parameters: {} (the others at their defaults: leaklab explain {})", pairs(&e.set), e.info.name));
    let mut want = expected.to_owned();
    if let Some(f) = field {
        want.push_str(&format!(", {f}"));
    }
    line(format!("  expected:   {want}"));
    match answer {
        None => line("  you said:   nothing".into()),
        Some(a) => {
            let kind_right = a.kind == expected;
            let mut said = format!("  you said:   {}", a.kind);
            if let Some(tag) = a.tag {
                said.push_str(&format!(", field tag {tag}"));
            }
            let verdict = match (kind_right, field, a.tag) {
                (false, _, _) => "wrong kind".to_owned(),
                (true, Some(f), Some(tag)) if tag == f.tag => "right, and the right field".to_owned(),
                (true, Some(f), Some(_)) => format!("right kind, wrong field (tag {} is {})", f.tag, f.name),
                (true, Some(_), None) => "right kind (no field tag given)".to_owned(),
                (true, None, _) => "right".to_owned(),
            };
            line(format!("{said}: {verdict}"));
        }
    }
    line(format!("\n== The engine's verdict ({}) ==", if v.correct { "correct" } else { "wrong: see verdict.json" }));
    line(format!("  {}", v.verdict.summary));
    if let Some(h) = v.verdict.findings.first().and_then(|f| f.holder.as_ref()) {
        line(format!("  holder: {} ({:.0}% of the held growth)", h.chain.join(" -> "), h.share * 100.0));
    }
    line(format!("\nThe run is whole again in {}: run.json, verdict.json, the logs.", dir.display()));
    let report = dir.join("report.html");
    if report.exists() {
        line(format!("The report: {}", report.display()));
    }
    line(format!("Read on: leaklab explain {}", e.info.name));
    if !e.info.control {
        let sets: String = e.set.iter().map(|(k, v)| format!(" --set {k}={v}")).collect();
        let other = match e.variant {
            scenarios::Variant::Leak => scenarios::Variant::Fix,
            scenarios::Variant::Fix => scenarios::Variant::Leak,
        };
        let other_dir = format!("{}-{other}", dir.display());
        line(format!(
            "The {other} variant beside it: leaklab run {} --variant {other}{sets} --out {other_dir}",
            e.info.name
        ));
        line(format!("  then: leaklab report {} --compare {other_dir}", dir.display()));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_by_name_or_number_with_a_tag() {
        assert_eq!(parse_answer("request-field-held:2"), Ok(Answer { kind: Kind::RequestFieldHeld, tag: Some(2) }));
        assert_eq!(parse_answer("1"), Ok(Answer { kind: Kind::None, tag: None }));
        assert_eq!(parse_answer("9"), Ok(Answer { kind: Kind::Unknown, tag: None }));
        assert_eq!(parse_answer(" 8 : 3 "), Ok(Answer { kind: Kind::ZeroCopyStringHeld, tag: Some(3) }));
        for bad in ["0", "10", "leaky", "request-field-held:", "request-field-held:x", "2:-1"] {
            assert!(parse_answer(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn the_list_is_the_design_kinds_in_order() {
        let listed: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        let mut design = scenarios::VERDICT_KINDS.to_vec();
        design.push("unknown");
        assert_eq!(listed, design);
    }

    #[test]
    fn the_plan_names_the_exercise_and_its_run() {
        let e = draw_exercise(Level::Hard, &mut StdRng::seed_from_u64(42));
        let text = plan_text(42, Level::Hard, &e);
        assert!(text.starts_with(&format!("seed 42, level hard: {} ({} variant", e.info.name, e.variant)), "{text}");
        assert!(text.contains(&format!("leaklab run {} --variant {}", e.info.name, e.variant)), "{text}");
        for (k, v) in &e.set {
            assert!(text.contains(&format!("--set {k}={v}")), "{text}");
        }
    }
}
