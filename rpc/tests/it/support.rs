//! What the integration tests share: an Echo handler and a server
//! running on a loopback port until shut down.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rpc::codec::{Request, Response};
use rpc::{Handler, HandlerError, Server, ServerConfig, ServerStats};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Echoes the request; a `msg` of `fail` makes the handler fail, and one
/// of `panic` makes it panic.
pub struct Echo;

impl Handler for Echo {
    async fn echo(&self, req: Request) -> Result<Response, HandlerError> {
        if &req.msg[..] == b"fail" {
            return Err(HandlerError("asked to fail".into()));
        }
        if &req.msg[..] == b"panic" {
            panic!("asked to panic");
        }
        Ok(Response { id: req.id, msg: req.msg, json: req.json })
    }
}

/// A server started by [`start`].
pub struct Running {
    pub addr: SocketAddr,
    pub stats: Arc<ServerStats>,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stops it and waits (at most 10 s) for it to end cleanly.
    pub async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.done).await.expect("server stops").unwrap().unwrap();
    }
}

/// An Echo server with `config` on a free loopback port.
pub async fn start(config: ServerConfig) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::new(config, Echo);
    let stats = server.stats();
    let (tx, rx) = oneshot::channel();
    let done = tokio::spawn(server.serve(listener, async move {
        let _ = rx.await;
    }));
    Running { addr, stats, stop: Some(tx), done }
}
