//! `leaklab load`: an open-loop load generator speaking Thrift Echo (see
//! `loadgen::open_loop`).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};

use crate::loadgen::open_loop::{generate, LoadPlan};
use crate::units::parse_duration;

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

/// `leaklab load`.
pub fn load(args: LoadArgs) -> anyhow::Result<ExitCode> {
    let plan = LoadPlan {
        target: args.target,
        conns: args.conns.max(1),
        rps: args.rps,
        payload: args.payload,
        duration: args.duration,
        transport: args.transport.into(),
    };
    let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    let summary = rt.block_on(generate(&plan))?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "{} ok, {} errors in {:.2}s: {:.0} req/s; latency p50 {:.3} ms, p99 {:.3} ms, p999 {:.3} ms, max {:.3} ms{}",
            summary.ok,
            summary.errors,
            summary.seconds,
            summary.rps,
            summary.p50_ms,
            summary.p99_ms,
            summary.p999_ms,
            summary.max_ms,
            if summary.raw_echo { " (raw echo)" } else { "" }
        );
    }
    Ok(if summary.ok > 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
