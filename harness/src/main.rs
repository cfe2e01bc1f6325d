//! `leaklab`: reproduce, profile and diagnose the memory leaks of
//! pooled-buffer RPC frameworks. A thin binary over the workspace's
//! libraries; it owns the command line, files, HTTP and exit codes.

mod cli;
mod load;
mod serve;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("LEAKLAB_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("leaklab: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
