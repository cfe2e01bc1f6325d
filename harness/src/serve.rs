//! `leaklab serve`: the process under test.

use anyhow::Context;
use rpc::codec::{Limits, Request, Response};
use rpc::{Barriers, Handler, HandlerError, Server, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::cli::ServeArgs;

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
        let server = Server::new(config, Echo);
        tracing::info!(%local, admin = %args.admin, "echo server listening");
        server.serve(listener, shutdown_signal()).await?;
        tracing::info!("server stopped");
        Ok(())
    })
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
