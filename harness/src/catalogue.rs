//! `leaklab list`, `explain`, `run` and `peer`: the scenario catalogue from
//! the command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use scenarios::{Info, Side, Variant};

use crate::cli::{ExplainArgs, ListArgs, PeerArgs, RunArgs, ScenarioArgs};
use crate::run::{RunPlan, Timing};

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Server => "server",
        Side::Client => "client",
    }
}

/// `leaklab list`.
pub fn list(args: &ListArgs) -> anyhow::Result<()> {
    let all = scenarios::catalogue();
    if args.json {
        let rows: Vec<serde_json::Value> = all
            .iter()
            .map(|i| {
                serde_json::json!({
                    "scenario": i.name, "side": side_name(i.side), "control": i.control,
                    "expected": { "leak": i.expected_kind(Variant::Leak), "fix": i.expected_kind(Variant::Fix) },
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!("{:<28} {:<7} {:<10} {:<28} EXPECTED (fix)", "SCENARIO", "SIDE", "VARIANTS", "EXPECTED (leak)");
    for i in all {
        let variants = if i.control { "one" } else { "leak, fix" };
        println!(
            "{:<28} {:<7} {:<10} {:<28} {}",
            i.name,
            side_name(i.side),
            variants,
            i.expected_kind(Variant::Leak),
            i.expected_kind(Variant::Fix)
        );
    }
    Ok(())
}

/// `leaklab explain`.
pub fn explain(args: &ExplainArgs) -> anyhow::Result<()> {
    let i = scenarios::find(&args.scenario)?;
    println!("{} ({} side{})", i.name, side_name(i.side), if i.control { ", healthy control" } else { "" });
    println!(
        "expected diagnosis: leak variant `{}`, fix variant `{}`\n",
        i.expected_kind(Variant::Leak),
        i.expected_kind(Variant::Fix)
    );
    println!("What it reproduces\n{}\n", wrap(i.reproduces));
    println!("What the profiles show\n{}\n", wrap(i.profile_shows));
    println!("The fix\n{}\n", wrap(i.fix));
    println!("Parameters (--set KEY=VALUE)");
    for p in i.params {
        println!("  {:<16} default {:<10} {}", p.name, p.default, p.help);
    }
    println!("\nTry it: leaklab run {} --variant leak, then --variant fix", i.name);
    Ok(())
}

fn wrap(text: &str) -> String {
    let mut out = String::new();
    for para in text.split("\n\n") {
        let mut line = String::from("  ");
        for word in para.split_whitespace() {
            if line.len() + word.len() > 78 && !line.trim().is_empty() {
                out.push_str(line.trim_end());
                out.push('\n');
                line = String::from("  ");
            }
            line.push_str(word);
            line.push(' ');
        }
        out.push_str(line.trim_end());
        out.push_str("\n\n");
    }
    out.trim_end().to_owned()
}

/// Resolves `--scenario` of `serve`/`peer`.
pub fn scenario_of(args: &ScenarioArgs) -> anyhow::Result<Option<(&'static Info, Variant, scenarios::Params)>> {
    let Some(name) = &args.scenario else { return Ok(None) };
    let info = scenarios::find(name)?;
    let params = scenarios::Params::parse(info, &args.set)?;
    Ok(Some((info, args.variant.into(), params)))
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
    };
    let record = crate::run::run(&plan)?;
    let v = crate::diagnose::write_verdict(&out, &record.expected)?;
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
    Ok(ExitCode::SUCCESS)
}

/// `leaklab peer`.
pub fn peer(args: PeerArgs) -> anyhow::Result<ExitCode> {
    let (info, variant, params) =
        scenario_of(&args.scenario)?.context("leaklab peer needs --scenario (a server scenario)")?;
    if info.side != Side::Server {
        anyhow::bail!("{} is a client scenario: its peer is a plain `leaklab serve`", info.name);
    }
    let shape = scenarios::load_shape(info, variant, &params)?;
    let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    let report = rt.block_on(async {
        tokio::select! {
            r = crate::peer::drive(args.target, &shape, args.duration) => r,
            _ = crate::serve::shutdown_signal() => crate::peer::PeerReport::default(),
        }
    });
    let json = serde_json::to_string(&report)?;
    println!("{json}");
    if let Some(path) = args.report {
        std::fs::write(&path, &json).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    /// The scenarios' expected kinds and the engine's vocabulary are one
    /// list kept in two crates (neither may depend on the other).
    #[test]
    fn every_expected_kind_is_one_the_engine_can_give() {
        for info in scenarios::catalogue() {
            for v in scenarios::Variant::ALL {
                let kind = info.expected_kind(v);
                assert!(diagnosis::KINDS.contains(&kind), "{} {v}: {kind}", info.name);
            }
        }
        for kind in scenarios::VERDICT_KINDS {
            assert!(diagnosis::KINDS.contains(&kind), "{kind}");
        }
    }
}
