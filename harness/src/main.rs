//! `leaklab`: reproduce, profile and diagnose the memory leaks of
//! pooled-buffer RPC frameworks. A thin binary over the workspace's
//! libraries; it owns the command line, files, HTTP and exit codes.

mod admin;
mod catalogue;
mod cli;
mod diagnose;
mod holdersprof;
mod load;
mod matrix;
mod peer;
mod poolprof;
mod probe;
mod run;
mod scrape;
mod serve;

use clap::Parser;

#[cfg(not(feature = "dhat"))]
type InnerAlloc = std::alloc::System;
#[cfg(feature = "dhat")]
type InnerAlloc = dhat::Alloc;

/// The allocator every `leaklab` process runs on.
pub type GlobalProfiler = profiler::Profiler<InnerAlloc>;

/// The heap profiler, sampling every allocation of the process (rate from
/// `--profile-rate` or `LEAKLAB_PROFILE_RATE`, default 512 KiB).
#[global_allocator]
pub static PROFILER: GlobalProfiler = profiler::Profiler::with_allocator(InnerAlloc {});

fn main() -> std::process::ExitCode {
    // Like any Unix filter: `leaklab list | head` ends quietly when the
    // reader goes away, instead of panicking on a broken pipe.
    // SAFETY: restoring the default disposition of SIGPIPE before any other
    // thread exists has no memory effects.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
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
