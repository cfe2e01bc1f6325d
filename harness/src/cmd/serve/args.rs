//! Flags of `leaklab serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::cmd::args::ScenarioArgs;
use crate::units::{parse_bytes, parse_duration, parse_timeout, Timeout};

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
    /// Close connections that send nothing for this long (e.g. `30s`), or
    /// `off`. Default: the scenario's, else 10 minutes.
    #[arg(long, value_parser = parse_timeout)]
    pub idle_timeout: Option<Timeout>,
    /// Largest message accepted (bytes, or `64KiB`, `1MiB`...); larger ones
    /// close the connection before anything is allocated for them.
    /// Default: the scenario's, else 64MiB.
    #[arg(long, value_parser = parse_bytes)]
    pub max_frame: Option<usize>,
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
    /// How long after the first call the load phase begins (a run passes
    /// its warm-up): a scenario's `onset` counts from there.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Write the bound addresses as JSON here once listening (for scripts).
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
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
