//! `leaklab peer`: the other side of a server scenario, sending the load
//! shape it describes (see `loadgen::shape`) for a duration, then closing
//! every connection: the drain.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use scenarios::Side;

use crate::cmd::args::{scenario_of, ScenarioArgs};
use crate::cmd::serve::shutdown_signal;
use crate::loadgen::shape::{drive, PeerReport};
use crate::units::parse_duration;

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
    pub report: Option<PathBuf>,
    /// Measure the latency of calls due this long after the start or later
    /// (a run passes its warm-up).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub latency_from: Duration,
}

/// `leaklab peer`.
pub fn peer(args: PeerArgs) -> anyhow::Result<ExitCode> {
    let (info, variant, params) =
        scenario_of(&args.scenario)?.context("leaklab peer needs --scenario (a server scenario)")?;
    if info.side != Side::Server {
        anyhow::bail!("{} is a client scenario: its peer is a plain `leaklab serve`", info.name);
    }
    // Onset counts from the end of the warm-up the run passes.
    let params = params.with_warmup(args.latency_from);
    let shape = scenarios::load_shape(info, variant, &params)?;
    let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    let report = rt.block_on(async {
        tokio::select! {
            r = drive(args.target, &shape, args.duration, args.latency_from) => r,
            _ = shutdown_signal() => PeerReport::default(),
        }
    });
    let json = serde_json::to_string(&report)?;
    println!("{json}");
    if let Some(path) = args.report {
        std::fs::write(&path, &json).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}
