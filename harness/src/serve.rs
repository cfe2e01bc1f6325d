//! `leaklab serve`: the process under test.

use anyhow::Context;
use rpc::codec::{Limits, Request, Response};
use rpc::{Barriers, Handler, HandlerError, Server, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::cli::{ProfilerKind, ServeArgs};
use crate::probe::Probe;
use crate::PROFILER;

/// The healthy Echo service: returns the request's fields.
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

impl Handler for Echo {
    async fn echo(&self, req: Request) -> Result<Response, HandlerError> {
        Ok(Response { id: req.id, msg: req.msg, json: req.json })
    }
}

/// Runs until SIGINT or SIGTERM.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    if let Some(rate) = args.profile_rate {
        PROFILER.set_rate(rate);
    }
    let _dhat = start_dhat(args.profiler)?;
    let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    rt.block_on(async move {
        let listener = TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
        let local = listener.local_addr()?;
        if args.raw_echo {
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
            limits: Limits { max_frame: args.max_frame, ..Limits::default() },
            idle_timeout: args.idle_timeout,
            ..ServerConfig::default()
        };
        let pool = config.pool.clone();
        let barriers = config.barriers.clone();
        let server = Server::new(config, Echo);
        let probe =
            Probe { profiler: &PROFILER, pool, server: Some(server.stats()), barriers: Some(barriers), calls: None };
        let admin = crate::admin::spawn(args.admin, std::sync::Arc::new(probe)).await?;
        tracing::info!(%local, %admin, rate = PROFILER.rate(), "echo server listening");
        server.serve(listener, shutdown_signal()).await?;
        tracing::info!("server stopped");
        Ok(())
    })
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
