//! The command line: raw flags (clap) and the dispatch to each command.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    Matrix(crate::matrix::MatrixArgs),
    /// The diagnosis engine on a run folder, or on a live pprof endpoint.
    Diagnose(DiagnoseArgs),
    /// Matrix runs as a labelled dataset (profiles, metrics, label.json).
    Export(crate::matrix::ExportArgs),
    /// The peer of a server scenario: sends the scenario's load shape, then closes everything.
    Peer(PeerArgs),
    /// Open-loop load generator: Thrift Echo calls at a fixed rate.
    Load(LoadArgs),
}

/// Flags of `leaklab list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// One JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `leaklab explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Scenario name (see `leaklab list`).
    pub scenario: String,
}

/// Leak or fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VariantArg {
    /// The documented leak.
    Leak,
    /// The guide's remedy applied.
    Fix,
}

impl From<VariantArg> for scenarios::Variant {
    fn from(v: VariantArg) -> Self {
        match v {
            VariantArg::Leak => scenarios::Variant::Leak,
            VariantArg::Fix => scenarios::Variant::Fix,
        }
    }
}

/// Parses `KEY=VALUE`.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// A scenario and its settings, shared by `run`, `serve` and `peer`.
#[derive(Debug, Args, Clone)]
pub struct ScenarioArgs {
    /// Scenario name (see `leaklab list`).
    #[arg(long)]
    pub scenario: Option<String>,
    /// Which variant.
    #[arg(long, value_enum, default_value_t = VariantArg::Leak)]
    pub variant: VariantArg,
    /// A scenario parameter (`leaklab explain S` lists them); repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub set: Vec<(String, String)>,
}

/// Flags of `leaklab run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Scenario name (see `leaklab list`).
    pub scenario: String,
    /// Which variant.
    #[arg(long, value_enum, default_value_t = VariantArg::Leak)]
    pub variant: VariantArg,
    /// Output folder (default `runs/SCENARIO-VARIANT`).
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    /// Length of the load phase; warm-up is a quarter of it, settle a third.
    #[arg(long, default_value = "8s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Snapshot interval.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    pub interval: Duration,
    /// A scenario parameter; repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub set: Vec<(String, String)>,
    /// The heap profiler's sampling rate in the process under test (mean
    /// bytes between samples).
    #[arg(long, default_value_t = crate::run::RUN_PROFILE_RATE)]
    pub profile_rate: usize,
    /// Do not run the process under test in holder mode (no
    /// `holders-NNN.pb.gz`; the verdict then names no holder).
    #[arg(long)]
    pub no_holders: bool,
}

/// Flags of `leaklab diagnose`.
#[derive(Debug, Args)]
pub struct DiagnoseArgs {
    /// A run folder (heap-NNN.pb.gz, pool-NNN.pb.gz, metrics.jsonl), or the
    /// admin URL of a live process (`http://127.0.0.1:6060`).
    pub target: String,
    /// Print the verdict as JSON.
    #[arg(long)]
    pub json: bool,
    /// Heap profiles and metrics only, as a user of plain pprof has them.
    #[arg(long)]
    pub pprof_only: bool,
    /// Live mode: time between snapshots.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Live mode: give up after this long.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Flags of `leaklab peer`.
#[derive(Debug, Args)]
pub struct PeerArgs {
    /// The process under test's RPC address.
    #[arg(long, default_value = "127.0.0.1:8888")]
    pub target: SocketAddr,
    /// The scenario whose load to send.
    #[command(flatten)]
    pub scenario: ScenarioArgs,
    /// How long to send.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Write the peer's report (JSON) here as well as to stdout.
    #[arg(long)]
    pub report: Option<std::path::PathBuf>,
}

/// Flags of `leaklab serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// RPC listen address.
    #[arg(long, default_value = "127.0.0.1:8888")]
    pub listen: SocketAddr,
    /// Admin HTTP address (pprof and metrics). Keep it on loopback: a
    /// profile endpoint must never face the internet.
    #[arg(long, default_value = "127.0.0.1:6060")]
    pub admin: SocketAddr,
    /// Echo raw bytes with no codec and no pool: the baseline that measures
    /// what the codec and the pool cost.
    #[arg(long)]
    pub raw_echo: bool,
    /// How string and binary fields are decoded.
    #[arg(long, value_enum, default_value_t = Decode::Copy)]
    pub decode: Decode,
    /// Link binary response fields over 4 KiB into the output without a copy.
    #[arg(long)]
    pub nocopy_write: bool,
    /// Barrier slots: `legacy` keeps buffer references after each syscall
    /// (Netpoll before v0.2.5), `fixed` clears them.
    #[arg(long, default_value = "fixed")]
    pub barriers: rpc::BarrierMode,
    /// Close connections idle for this long (e.g. `30s`); off by default.
    #[arg(long, value_parser = parse_duration)]
    pub idle_timeout: Option<Duration>,
    /// Largest message accepted (bytes, or `64KiB`, `1MiB`...); larger ones
    /// close the connection before anything is allocated for them.
    #[arg(long, default_value = "64MiB", value_parser = parse_bytes)]
    pub max_frame: usize,
    /// Connections served at once; more are refused (closed when accepted).
    #[arg(long, default_value_t = 10_000)]
    pub max_conns: usize,
    /// Input buffered by all connections together; past it the connection
    /// holding the most is closed.
    #[arg(long, default_value = "256MiB", value_parser = parse_bytes)]
    pub max_input_bytes: usize,
    /// Output not yet sent, per connection; past it the connection is closed
    /// (a peer that never reads its replies).
    #[arg(long, default_value = "64MiB", value_parser = parse_bytes)]
    pub max_output_bytes: usize,
    /// Close a connection whose pending write makes no progress for this long.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub write_timeout: Duration,
    /// A message must arrive whole within this once its first byte has come;
    /// `off` waits forever.
    #[arg(long, default_value = "60s", value_parser = parse_timeout)]
    pub frame_timeout: Timeout,
    /// Heap profiler sampling rate: mean bytes between samples (Go's
    /// MemProfileRate); 1 records every allocation, 0 turns sampling off.
    /// Default: $LEAKLAB_PROFILE_RATE, else 524288.
    #[arg(long)]
    pub profile_rate: Option<usize>,
    /// Which heap profiler runs: the built-in sampler (pprof endpoints), or
    /// DHAT (writes dhat-heap.json on exit; needs `--features dhat`).
    #[arg(long, value_enum, default_value_t = ProfilerKind::Pprof)]
    pub profiler: ProfilerKind,
    /// Run this scenario's side instead of the plain Echo server.
    #[command(flatten)]
    pub scenario: ScenarioArgs,
    /// The Echo server a client scenario calls.
    #[arg(long)]
    pub peer: Option<SocketAddr>,
    /// How long a client scenario calls its peer before it stops (the
    /// drain); the process keeps running until it is stopped.
    #[arg(long, value_parser = parse_duration)]
    pub drive_for: Option<Duration>,
    /// Write the bound addresses as JSON here once listening (for scripts).
    #[arg(long)]
    pub ready_file: Option<std::path::PathBuf>,
    /// Holder mode: index every live block with its allocation stack and
    /// serve `/debug/pprof/holders`, the chains from a root (a static, a
    /// thread's stack) to the memory each holds. Costs a stack walk per
    /// allocation.
    #[arg(long)]
    pub holders: bool,
}

/// Heap profilers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProfilerKind {
    /// The built-in sampling profiler, served at /debug/pprof/heap.
    Pprof,
    /// DHAT, for its viewer: dhat-heap.json in the working directory.
    Dhat,
}

/// Decode modes.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Decode {
    /// Copy each field out of the read buffer (Kitex's default).
    Copy,
    /// Slice fields out of the pooled read buffer (zero copy).
    Nocopy,
}

impl From<Decode> for rpc::codec::DecodeMode {
    fn from(d: Decode) -> Self {
        match d {
            Decode::Copy => rpc::codec::DecodeMode::Copy,
            Decode::Nocopy => rpc::codec::DecodeMode::NoCopy,
        }
    }
}

/// Flags of `leaklab load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:8888")]
    pub target: SocketAddr,
    /// Connections, each with one call in flight.
    #[arg(long, default_value_t = 4)]
    pub conns: usize,
    /// Requests per second over all connections; 0 sends as fast as the
    /// server answers (closed loop).
    #[arg(long, default_value_t = 1000)]
    pub rps: u64,
    /// Bytes of the `msg` field.
    #[arg(long, default_value_t = 1024)]
    pub payload: usize,
    /// How long to send (e.g. `10s`, `500ms`).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Transport: framed (TFramedTransport) or buffered (unframed).
    #[arg(long, value_enum, default_value_t = TransportArg::Framed)]
    pub transport: TransportArg,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Transports.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TransportArg {
    /// 4-byte length before each message.
    Framed,
    /// No length: unframed (buffered) transport.
    Buffered,
}

impl From<TransportArg> for rpc::codec::Transport {
    fn from(t: TransportArg) -> Self {
        match t {
            TransportArg::Framed => rpc::codec::Transport::Framed,
            TransportArg::Buffered => rpc::codec::Transport::Unframed,
        }
    }
}

/// A timeout that can be turned off (`off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout(pub Option<Duration>);

/// Parses a duration as [`parse_duration`] does, or `off`.
pub fn parse_timeout(s: &str) -> Result<Timeout, String> {
    match s.trim() {
        "off" | "none" => Ok(Timeout(None)),
        d => parse_duration(d).map(|d| Timeout(Some(d))),
    }
}

/// Parses a byte count: a whole number with an optional binary unit
/// (`KiB`, `MiB`, `GiB`; `K`, `KB`, `M`... mean the same), any case.
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '_').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: usize = num
        .replace('_', "")
        .parse()
        .map_err(|_| format!("expected a size such as 1024, 64KiB or 256MiB, not {s:?}"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => return Err(format!("unknown size unit {other:?}: use KiB, MiB or GiB (or none for bytes)")),
    };
    num.checked_mul(1 << shift).ok_or_else(|| format!("{s} is too large"))
}

/// Parses `10s`, `500ms`, `2m`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|e| e.to_string());
    }
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::List(args) => crate::catalogue::list(&args).map(|()| ExitCode::SUCCESS),
        Command::Explain(args) => crate::catalogue::explain(&args).map(|()| ExitCode::SUCCESS),
        Command::Run(args) => crate::catalogue::run(args),
        Command::Serve(args) => crate::serve::run(args).map(|()| ExitCode::SUCCESS),
        Command::Peer(args) => crate::catalogue::peer(args),
        Command::Diagnose(args) => crate::diagnose::run(&args),
        Command::Matrix(args) => crate::matrix::run(args),
        Command::Export(args) => crate::matrix::export(&args),
        Command::Load(args) => crate::load::run(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(s.max_frame, 64 << 20);
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
    fn serve_budgets_parse_units_and_off() {
        let s = serve(&[
            "--max-conns=3",
            "--max-input-bytes=1GiB",
            "--max-output-bytes=512k",
            "--write-timeout=250ms",
            "--frame-timeout=off",
            "--max-frame=1_048_576",
        ])
        .expect("valid flags");
        assert_eq!((s.max_conns, s.max_input_bytes, s.max_output_bytes), (3, 1 << 30, 512 << 10));
        assert_eq!((s.write_timeout, s.frame_timeout), (Duration::from_millis(250), Timeout(None)));
        assert_eq!(s.max_frame, 1 << 20);
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
