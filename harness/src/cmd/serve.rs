//! `leaklab serve`: the process under test.
//!
//! Without `--scenario` it is a healthy Echo server (or, with
//! `--raw-echo`, a byte echo without codec or pool). With a server
//! scenario it runs that scenario's server configuration and handler; with
//! a client scenario it is the scenario's caller of the Echo server at
//! `--peer`; a server scenario mixed with a client leak (`--set
//! mix=duplicate-clients`) also calls the Echo server at `--peer`. Either
//! way the admin listener serves `/debug/pprof/heap`,
//! `/debug/pprof/allocs`, `/debug/pprof/pool` and `/metrics`.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use anyhow::Context;
use rpc::codec::{Limits, Request, Response};
use rpc::{Barriers, Handler, HandlerError, Pool, Server, ServerConfig};
use scenarios::Side;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::alloc::PROFILER;
use crate::cmd::args::scenario_of;
use crate::probe::Probe;
use crate::runner::Ready;

mod args;
pub use args::{ProfilerKind, ServeArgs};

/// The healthy Echo service: returns the request's fields.
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

impl Handler for Echo {
    async fn echo(&self, req: Request) -> Result<Response, HandlerError> {
        Ok(Response { id: req.id, msg: req.msg, json: req.json })
    }
}

/// `leaklab serve`: runs until SIGINT or SIGTERM.
pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    if let Some(rate) = args.profile_rate {
        PROFILER.set_rate(rate);
    }
    if args.holders {
        // Before the runtime starts, so that its blocks are indexed too.
        PROFILER.set_holder_mode(true);
    }
    let _dhat = start_dhat(args.profiler)?;
    warn_if_exposed("--admin", args.admin);
    let scenario = scenario_of(&args.scenario)?.map(|(i, v, p)| (i, v, p.with_warmup(args.warmup)));
    let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    rt.block_on(async move {
        match scenario {
            Some((info, variant, params)) if info.side == Side::Client => {
                let peer =
                    args.peer.with_context(|| format!("{} is a client scenario: give --peer ADDR", info.name))?;
                let pool = Pool::global().clone();
                let calls = Arc::new(AtomicU64::new(0));
                let probe = Probe {
                    profiler: &PROFILER,
                    pool: pool.clone(),
                    server: None,
                    barriers: None,
                    calls: Some(calls.clone()),
                };
                let admin = crate::admin::spawn(args.admin, Arc::new(probe)).await?;
                write_ready(&args, None, admin)?;
                tracing::info!(scenario = info.name, %variant, %peer, %admin, "client scenario calling its peer");
                let drive_for = args.drive_for;
                let stop = async move {
                    match drive_for {
                        Some(d) => tokio::time::sleep(d).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    r = scenarios::run_client(info, variant, &params, peer, pool, calls, stop) => r?,
                    _ = shutdown_signal() => return Ok(()),
                }
                tracing::info!("calls stopped; serving the admin endpoint until stopped");
                shutdown_signal().await;
                Ok(())
            }
            Some((info, variant, params)) => {
                let listener = bind(args.listen).await?;
                let s = scenarios::server(info, variant, &params, Pool::global().clone())?;
                tracing::info!(scenario = info.name, %variant, "server scenario");
                if let Some((mix, mix_params)) = scenarios::mixed_client(info, &params)? {
                    let peer = args.peer.with_context(|| {
                        format!("{} is mixed with {}, a client leak: give --peer ADDR", info.name, mix.name)
                    })?;
                    tracing::info!(mix = mix.name, %peer, "also calling a peer");
                    let drive_for = args.drive_for;
                    tokio::spawn(async move {
                        let stop = async move {
                            match drive_for {
                                Some(d) => tokio::time::sleep(d).await,
                                None => std::future::pending().await,
                            }
                        };
                        let calls = Arc::new(AtomicU64::new(0));
                        let pool = Pool::global().clone();
                        if let Err(e) = scenarios::run_client(mix, variant, &mix_params, peer, pool, calls, stop).await
                        {
                            tracing::warn!(error = %e, "the mixed-in client failed");
                        }
                    });
                }
                serve_rpc(&args, listener, with_budgets(&args, s.config), s.handler).await
            }
            None => {
                let listener = bind(args.listen).await?;
                if args.raw_echo {
                    let local = listener.local_addr()?;
                    write_ready(&args, Some(local), local)?;
                    tracing::info!(%local, "raw echo listening (no codec, no pool)");
                    tokio::select! {
                        r = raw_echo(listener) => r?,
                        _ = shutdown_signal() => {}
                    }
                    return Ok(());
                }
                let config = ServerConfig {
                    barriers: Barriers::new(args.barriers),
                    decode: args.decode.into(),
                    nocopy_write: args.nocopy_write,
                    ..ServerConfig::default()
                };
                serve_rpc(&args, listener, with_budgets(&args, config), Echo).await
            }
        }
    })
}

/// `config` (a scenario's, or the server's defaults) with the budgets of
/// the command line; `--max-frame` and `--idle-timeout` replace the
/// config's own only when given.
pub(crate) fn with_budgets(args: &ServeArgs, config: ServerConfig) -> ServerConfig {
    ServerConfig {
        max_conns: args.max_conns,
        max_input_bytes: args.max_input_bytes,
        max_output_bytes: args.max_output_bytes,
        write_timeout: args.write_timeout,
        frame_timeout: args.frame_timeout.0,
        limits: Limits { max_frame: args.max_frame.unwrap_or(config.limits.max_frame), ..config.limits },
        idle_timeout: args.idle_timeout.map_or(config.idle_timeout, |t| t.0),
        ..config
    }
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    warn_if_exposed("--listen", addr);
    TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))
}

/// The warning for listening on `addr` with `flag` (`--admin` or
/// `--listen`), or `None` for a loopback address (IPv4-mapped included).
pub fn exposure_warning(flag: &str, addr: SocketAddr) -> Option<String> {
    let ip = match addr.ip() {
        IpAddr::V6(v6) => v6.to_canonical(),
        v4 => v4,
    };
    if ip.is_loopback() {
        return None;
    }
    Some(if flag == "--admin" {
        format!(
            "--admin {addr} is not a loopback address: anyone who reaches it can read heap and pool profiles \
             (code layout, allocation sites, peer addresses) and make the process build them; keep it on 127.0.0.1"
        )
    } else {
        format!(
            "{flag} {addr} is not a loopback address: any host that reaches it can call this lab server, \
             whose only defences are its budgets (--max-conns, --max-input-bytes, --max-output-bytes, \
             --write-timeout, --frame-timeout, --max-frame)"
        )
    })
}

/// Logs and prints [`exposure_warning`] when there is one.
fn warn_if_exposed(flag: &str, addr: SocketAddr) {
    if let Some(warning) = exposure_warning(flag, addr) {
        tracing::warn!("{warning}");
        eprintln!("leaklab: WARNING: {warning}");
    }
}

async fn serve_rpc<H: Handler>(
    args: &ServeArgs,
    listener: TcpListener,
    config: ServerConfig,
    handler: H,
) -> anyhow::Result<()> {
    let local = listener.local_addr()?;
    let pool = config.pool.clone();
    let barriers = config.barriers.clone();
    let server = Server::new(config, handler);
    let probe =
        Probe { profiler: &PROFILER, pool, server: Some(server.stats()), barriers: Some(barriers), calls: None };
    let admin = crate::admin::spawn(args.admin, Arc::new(probe)).await?;
    write_ready(args, Some(local), admin)?;
    tracing::info!(%local, %admin, rate = PROFILER.rate(), "echo server listening");
    server.serve(listener, shutdown_signal()).await?;
    tracing::info!("server stopped");
    Ok(())
}

fn write_ready(args: &ServeArgs, rpc: Option<SocketAddr>, admin: SocketAddr) -> anyhow::Result<()> {
    if let Some(path) = &args.ready_file {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_string(&Ready { rpc, admin })?)?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Starts DHAT when asked; it writes `dhat-heap.json` when dropped.
#[cfg(feature = "dhat")]
fn start_dhat(kind: ProfilerKind) -> anyhow::Result<Option<dhat::Profiler>> {
    if kind != ProfilerKind::Dhat {
        return Ok(None);
    }
    PROFILER.set_rate(0);
    tracing::info!("DHAT is profiling; dhat-heap.json is written on exit");
    Ok(Some(dhat::Profiler::new_heap()))
}

#[cfg(not(feature = "dhat"))]
fn start_dhat(kind: ProfilerKind) -> anyhow::Result<Option<()>> {
    if kind == ProfilerKind::Dhat {
        anyhow::bail!("this leaklab was built without DHAT: cargo build --release --features dhat");
    }
    Ok(None)
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Echoes every byte back: the cost floor of a TCP round trip.
async fn raw_echo(listener: TcpListener) -> anyhow::Result<()> {
    loop {
        let (mut stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 << 10];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_addresses_are_quiet() {
        let quiet = ["127.0.0.1:6060", "127.3.2.1:0", "[::1]:6060", "[::ffff:127.0.0.1]:8888"];
        let loud = ["0.0.0.0:6060", "[::]:6060", "192.168.1.10:8888", "[::ffff:10.0.0.1]:8888", "[2001:db8::1]:1"];
        for flag in ["--admin", "--listen"] {
            let warned = |a: &&&str| exposure_warning(flag, a.parse().expect("address")).is_some();
            assert_eq!(quiet.iter().filter(warned).count(), 0, "{flag}");
            assert_eq!(loud.iter().filter(warned).count(), loud.len(), "{flag}");
        }
        let w = exposure_warning("--admin", "0.0.0.0:6060".parse().expect("address")).expect("warned");
        assert!(w.starts_with("--admin 0.0.0.0:6060 is not a loopback address"), "{w}");
    }
}
