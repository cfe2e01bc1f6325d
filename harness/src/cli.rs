//! The command line: parses the raw flags (clap) and dispatches to the
//! command's module in `cmd`, which owns its flags.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::cmd::compare::CompareArgs;
use crate::cmd::diagnose::DiagnoseArgs;
use crate::cmd::explain::ExplainArgs;
use crate::cmd::export::ExportArgs;
use crate::cmd::list::ListArgs;
use crate::cmd::load::LoadArgs;
use crate::cmd::matrix::MatrixArgs;
use crate::cmd::peer::PeerArgs;
use crate::cmd::quiz::QuizArgs;
use crate::cmd::report::ReportArgs;
use crate::cmd::run::RunArgs;
use crate::cmd::serve::ServeArgs;
use crate::cmd::sweep::SweepArgs;

/// Reproduce, profile and diagnose the memory leaks of pooled-buffer RPC
/// frameworks (Kitex/Netpoll-style).
#[derive(Debug, Parser)]
#[command(name = "leaklab", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Scenarios, their variants and the diagnosis each should get.
    List(ListArgs),
    /// What a scenario reproduces, what its profile shows, the fix, its parameters.
    Explain(ExplainArgs),
    /// Run one scenario as a user would: process under test, peer, phases, snapshots.
    Run(RunArgs),
    /// Run the process under test: an Echo server, a scenario's side, or the raw-echo baseline.
    Serve(ServeArgs),
    /// Every scenario x variant, run and diagnosed; exits 1 on a wrong verdict.
    Matrix(MatrixArgs),
    /// Seeded, labelled runs drawn from documented distributions (onsets, slow leaks, noise, mixtures), scored per kind.
    Sweep(SweepArgs),
    /// What a fix costs: two sides in alternating rounds, req/s, latency, CPU and allocations per call, memory.
    Compare(CompareArgs),
    /// A blind exercise for workshops: a seeded, hidden scenario to diagnose from its profiles.
    Quiz(QuizArgs),
    /// The diagnosis engine on a run folder, or on a live pprof endpoint.
    Diagnose(DiagnoseArgs),
    /// Matrix runs as a labelled dataset (profiles, metrics, label.json).
    Export(ExportArgs),
    /// report.html for people: verdict, timeline, flame graph of the growth, the pool's view.
    Report(ReportArgs),
    /// The peer of a server scenario: sends the scenario's load shape, then closes everything.
    Peer(PeerArgs),
    /// Open-loop load generator: Thrift Echo calls at a fixed rate.
    Load(LoadArgs),
}

impl Cli {
    /// Whether the command only prints (a list, an explanation, files it
    /// writes) and talks to no peer: then a reader that goes away ends it
    /// quietly, as any Unix filter.
    pub fn filters_stdout(&self) -> bool {
        matches!(self.command, Command::List(_) | Command::Explain(_) | Command::Export(_) | Command::Report(_))
    }
}

/// Runs a parsed command line; the exit code is the command's.
pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    use crate::cmd::*;
    match cli.command {
        Command::List(args) => list::list(&args).map(|()| ExitCode::SUCCESS),
        Command::Explain(args) => explain::explain(&args).map(|()| ExitCode::SUCCESS),
        Command::Run(args) => run::run(args),
        Command::Serve(args) => serve::serve(args).map(|()| ExitCode::SUCCESS),
        Command::Peer(args) => peer::peer(args),
        Command::Diagnose(args) => diagnose::diagnose(&args),
        Command::Matrix(args) => matrix::matrix(args),
        Command::Sweep(args) => sweep::sweep(args),
        Command::Compare(args) => compare::compare(args),
        Command::Quiz(args) => quiz::quiz(args),
        Command::Export(args) => export::export(&args),
        Command::Report(args) => report::report(&args),
        Command::Load(args) => load::load(args),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::units::{parse_bytes, Timeout};

    fn serve(args: &[&str]) -> Result<ServeArgs, clap::Error> {
        let cli = Cli::try_parse_from(["leaklab", "serve"].iter().chain(args))?;
        match cli.command {
            Command::Serve(s) => Ok(s),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn serve_budgets_have_their_defaults() {
        let s = serve(&[]).expect("no flags");
        assert_eq!(s.max_conns, 10_000);
        assert_eq!(s.max_input_bytes, 256 << 20);
        assert_eq!(s.max_output_bytes, 64 << 20);
        assert_eq!(s.write_timeout, Duration::from_secs(30));
        assert_eq!(s.frame_timeout, Timeout(Some(Duration::from_secs(60))));
        // Not given: the scenario's own, else the server's default.
        assert_eq!((s.max_frame, s.idle_timeout), (None, None));
    }

    #[test]
    fn serve_budget_defaults_are_the_servers() {
        let s = serve(&[]).expect("no flags");
        let d = rpc::ServerConfig::default();
        assert_eq!(
            (s.max_conns, s.max_input_bytes, s.max_output_bytes, s.write_timeout, s.frame_timeout.0),
            (d.max_conns, d.max_input_bytes, d.max_output_bytes, d.write_timeout, d.frame_timeout)
        );
    }

    #[test]
    fn a_scenario_s_frame_limit_and_idle_timeout_stay_unless_flags_replace_them() {
        let own = rpc::ServerConfig {
            limits: rpc::codec::Limits { max_frame: 200 << 20, ..rpc::codec::Limits::default() },
            idle_timeout: None,
            ..rpc::ServerConfig::default()
        };
        let kept = crate::cmd::serve::with_budgets(&serve(&[]).unwrap(), own.clone());
        assert_eq!((kept.limits.max_frame, kept.idle_timeout), (200 << 20, None));
        let replaced = crate::cmd::serve::with_budgets(
            &serve(&["--max-frame", "1MiB", "--idle-timeout", "30s"]).unwrap(),
            own.clone(),
        );
        assert_eq!((replaced.limits.max_frame, replaced.idle_timeout), (1 << 20, Some(Duration::from_secs(30))));
        let off =
            crate::cmd::serve::with_budgets(&serve(&["--idle-timeout", "off"]).unwrap(), rpc::ServerConfig::default());
        assert_eq!(off.idle_timeout, None);
        // The plain server's defaults: 64 MiB and 10 minutes.
        let plain = crate::cmd::serve::with_budgets(&serve(&[]).unwrap(), rpc::ServerConfig::default());
        assert_eq!((plain.limits.max_frame, plain.idle_timeout), (64 << 20, Some(Duration::from_secs(600))));
    }

    #[test]
    fn serve_budgets_parse_units_and_off() {
        let s = serve(&[
            "--max-conns=3",
            "--max-input-bytes=1GiB",
            "--max-output-bytes=512k",
            "--write-timeout=250ms",
            "--frame-timeout=off",
            "--max-frame=1_048_576",
            "--idle-timeout=off",
        ])
        .expect("valid flags");
        assert_eq!((s.max_conns, s.max_input_bytes, s.max_output_bytes), (3, 1 << 30, 512 << 10));
        assert_eq!((s.write_timeout, s.frame_timeout), (Duration::from_millis(250), Timeout(None)));
        assert_eq!((s.max_frame, s.idle_timeout), (Some(1 << 20), Some(Timeout(None))));
        for bad in [["--max-input-bytes", "12XB"], ["--frame-timeout", "soon"], ["--max-output-bytes", "-1"]] {
            assert!(serve(&bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_bytes("99999999999999999999G").is_err());
    }

    #[test]
    fn serve_help_shows_every_budget_default() {
        let err = serve(&["--help"]).expect_err("help exits");
        let help = err.to_string();
        for shown in [
            "--max-conns <MAX_CONNS>",
            "[default: 10000]",
            "[default: 256MiB]",
            "[default: 64MiB]",
            "[default: 30s]",
            "[default: 60s]",
        ] {
            assert!(help.contains(shown), "{shown} missing from:\n{help}");
        }
    }
}
