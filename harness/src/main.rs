//! `leaklab`: reproduce, profile and diagnose the memory leaks of
//! pooled-buffer RPC frameworks. A thin binary over the workspace's
//! libraries; it owns the command line, files, HTTP and exit codes.
//!
//! - `cli`: the command line, dispatched to `cmd::*`, one module per
//!   subcommand (its flags and its entry point);
//! - beside them, what the commands share: `runner` (a scenario run with
//!   its child processes and snapshots), `scrape`, `verdict`, `loadgen`
//!   (connections, the paced sender, load shapes), the process under
//!   test's `alloc`, `probe`, `metrics`, `admin`, `poolprof`,
//!   `holdersprof`, `report` (pages and pictures for people, written at
//!   the end of every run), `compare` (what the runs of a comparison
//!   measured, and its statistics), `dataset` (labels of runs, and the
//!   scores of detectors over them), and `units` (durations and sizes on
//!   the command line).

mod admin;
mod alloc;
mod cli;
mod cmd;
mod compare;
mod dataset;
mod files;
mod holdersprof;
mod loadgen;
mod metrics;
mod poolprof;
mod probe;
mod report;
mod runner;
mod scrape;
mod units;
mod verdict;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    // Like any Unix filter: `leaklab list | head` ends quietly when the
    // reader goes away, instead of panicking on a broken pipe. Only the
    // commands that print and talk to no peer: a server's vectored writes
    // (`writev` takes no MSG_NOSIGNAL) to a peer that reset would raise
    // SIGPIPE, and the default disposition would kill the process under
    // test; they keep Rust's, ignored.
    if cli.filters_stdout() {
        // SAFETY: restoring the default disposition of SIGPIPE before any
        // other thread exists has no memory effects.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("LEAKLAB_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match cli::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("leaklab: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
