//! The Echo server: an accept loop and one task per connection, each with a
//! pooled [`InputBuffer`], an [`OutputBuffer`] and a barrier slot, as a
//! Netpoll connection has.
//!
//! A connection's first message decides its transport (framed or unframed,
//! sniffed as Kitex does). A corrupt message, or a length beyond the limit,
//! closes that connection with a logged reason; the others go on.
//!
//! ```no_run
//! use rpc::codec::{Request, Response};
//! use rpc::{Handler, HandlerError, Server, ServerConfig};
//!
//! struct Echo;
//! impl Handler for Echo {
//!     async fn echo(&self, req: Request) -> Result<Response, HandlerError> {
//!         Ok(Response { id: req.id, msg: req.msg, json: req.json })
//!     }
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8888").await?;
//! Server::new(ServerConfig::default(), Echo).serve(listener, std::future::pending()).await
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::barrier::{BarrierMode, Barriers, SlotGuard};
use crate::codec::{
    self, ApplicationExceptionKind, CodecError, DecodeCtx, DecodeMode, Limits, MessageType, Request, Response,
    Transport,
};
use crate::linkbuf::{InputBuffer, OutputBuffer, DEFAULT_INPUT_NODE};
use crate::pool::{Marker, Pool};

/// What a service does with a request.
pub trait Handler: Send + Sync + 'static {
    /// The `echo` method of the IDL.
    fn echo(&self, req: Request) -> impl Future<Output = Result<Response, HandlerError>> + Send;
}

/// A handler's failure; the caller receives a Thrift application exception
/// (`InternalError`) carrying the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError(pub String);

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HandlerError {}

/// Server settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The buffer pool of every connection.
    pub pool: Pool,
    /// The poller's slot table (legacy or fixed).
    pub barriers: Barriers,
    /// Copy fields out of the read buffer (Kitex's default) or slice them.
    pub decode: DecodeMode,
    /// Link binary values over 4 KiB into the output without copying.
    pub nocopy_write: bool,
    /// Largest message and nesting depth accepted.
    pub limits: Limits,
    /// Close a connection that sends nothing for this long (off by default).
    pub idle_timeout: Option<Duration>,
    /// First input node of each connection (Netpoll: 8 KiB).
    pub initial_input: usize,
    /// How long a shutdown waits for open connections.
    pub grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            pool: Pool::global().clone(),
            barriers: Barriers::new(BarrierMode::Fixed),
            decode: DecodeMode::Copy,
            nocopy_write: false,
            limits: Limits::default(),
            idle_timeout: None,
            initial_input: DEFAULT_INPUT_NODE,
            grace: Duration::from_secs(5),
        }
    }
}

/// Live counters of a server.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Connections open now.
    pub open_conns: AtomicU64,
    /// Connections accepted since start.
    pub opened_conns: AtomicU64,
    /// Requests answered (replies and exceptions).
    pub requests: AtomicU64,
    /// Connections closed for a protocol error or an oversized message.
    pub protocol_errors: AtomicU64,
    /// Connections closed by the idle timeout.
    pub idle_closed: AtomicU64,
    /// Bytes of the largest message received.
    pub largest_request: AtomicU64,
    /// Messages of [`LARGE_REQUEST`] bytes or more.
    pub large_requests: AtomicU64,
    /// Who sent the largest message.
    largest_peer: std::sync::Mutex<Option<SocketAddr>>,
}

/// A message this large (1 MiB) counts as large in [`ServerStats`].
pub const LARGE_REQUEST: usize = 1 << 20;

/// A snapshot of [`ServerStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerCounts {
    /// See [`ServerStats::open_conns`].
    pub open_conns: u64,
    /// See [`ServerStats::opened_conns`].
    pub opened_conns: u64,
    /// See [`ServerStats::requests`].
    pub requests: u64,
    /// See [`ServerStats::protocol_errors`].
    pub protocol_errors: u64,
    /// See [`ServerStats::idle_closed`].
    pub idle_closed: u64,
    /// See [`ServerStats::largest_request`].
    pub largest_request: u64,
    /// See [`ServerStats::large_requests`].
    pub large_requests: u64,
    /// The peer that sent the largest message.
    pub largest_peer: Option<SocketAddr>,
}

impl ServerStats {
    /// Reads every counter.
    pub fn counts(&self) -> ServerCounts {
        ServerCounts {
            open_conns: self.open_conns.load(Ordering::Relaxed),
            opened_conns: self.opened_conns.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            protocol_errors: self.protocol_errors.load(Ordering::Relaxed),
            idle_closed: self.idle_closed.load(Ordering::Relaxed),
            largest_request: self.largest_request.load(Ordering::Relaxed),
            large_requests: self.large_requests.load(Ordering::Relaxed),
            largest_peer: *self.largest_peer.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }

    /// Records the size of a message (its frame, or a refused length).
    fn note_request(&self, len: usize, peer: SocketAddr) {
        if len >= LARGE_REQUEST {
            self.large_requests.fetch_add(1, Ordering::Relaxed);
        }
        if self.largest_request.fetch_max(len as u64, Ordering::Relaxed) < len as u64 {
            *self.largest_peer.lock().unwrap_or_else(|e| e.into_inner()) = Some(peer);
        }
    }
}

/// An Echo server.
pub struct Server<H> {
    shared: Arc<Shared<H>>,
}

struct Shared<H> {
    config: ServerConfig,
    handler: H,
    stats: Arc<ServerStats>,
}

impl<H> fmt::Debug for Server<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server").field("config", &self.shared.config).finish_non_exhaustive()
    }
}

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("protocol error: {0}")]
    Codec(#[from] CodecError),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl<H: Handler> Server<H> {
    /// A server calling `handler`.
    pub fn new(config: ServerConfig, handler: H) -> Server<H> {
        Server { shared: Arc::new(Shared { config, handler, stats: Arc::new(ServerStats::default()) }) }
    }

    /// Its counters (share them with a metrics endpoint).
    pub fn stats(&self) -> Arc<ServerStats> {
        self.shared.stats.clone()
    }

    /// Accepts connections until `shutdown` completes, then stops accepting,
    /// lets each connection finish the requests it has read, and waits up to
    /// the grace period for them to close.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut conns = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let shared = self.shared.clone();
                        let stop = stop_rx.clone();
                        conns.spawn(async move { shared.connection(stream, peer, stop).await });
                    }
                    Err(e) => {
                        // Out of descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        drop(listener);
        let _ = stop_tx.send(true);
        let grace = self.shared.config.grace;
        let drained = tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(open = conns.len(), "grace period over, closing remaining connections");
            conns.shutdown().await;
        }
        Ok(())
    }
}

impl<H: Handler> Shared<H> {
    async fn connection(self: Arc<Self>, stream: TcpStream, peer: SocketAddr, mut stop: watch::Receiver<bool>) {
        let stats = &self.stats;
        stats.open_conns.fetch_add(1, Ordering::Relaxed);
        stats.opened_conns.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let slot = self.config.barriers.acquire();
        let mut input = InputBuffer::new(self.config.pool.clone(), self.config.initial_input);
        let mut output = OutputBuffer::new(self.config.pool.clone(), self.config.nocopy_write);
        match self.serve_conn(&stream, peer, &slot, &mut input, &mut output, &mut stop).await {
            Ok(()) => {}
            Err(ConnError::Codec(e)) => {
                stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, reason = %e, "closing connection: corrupt or refused message");
            }
            Err(ConnError::Io(e)) => tracing::debug!(%peer, error = %e, "connection ended"),
        }
        stats.open_conns.fetch_sub(1, Ordering::Relaxed);
    }

    async fn serve_conn(
        &self,
        stream: &TcpStream,
        peer: SocketAddr,
        slot: &SlotGuard,
        input: &mut InputBuffer,
        output: &mut OutputBuffer,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), ConnError> {
        let mut transport = None;
        loop {
            let outcome = loop {
                match codec::probe(&*input, transport, &self.config.limits) {
                    Ok(Some(frame)) => {
                        transport = Some(frame.transport);
                        self.stats.note_request(frame.len, peer);
                        input.skip(frame.header_len);
                        let (body, marker) = input.next(frame.len);
                        let r = self.dispatch(body, &marker, frame.transport, output).await;
                        self.stats.requests.fetch_add(1, Ordering::Relaxed);
                        if let Err(e) = r {
                            break Err(e);
                        }
                    }
                    Ok(None) => break Ok(()),
                    Err(e) => {
                        if let CodecError::FrameTooLarge { len, .. } = e {
                            self.stats.note_request(len as usize, peer);
                        }
                        break Err(ConnError::Codec(e));
                    }
                }
            };
            // Replies (and a last exception) go out before a close.
            if !output.is_empty() {
                output.send(stream, slot).await?;
            }
            input.release();
            outcome?;
            if *stop.borrow() {
                return Ok(());
            }
            let read = async {
                match self.config.idle_timeout {
                    Some(t) => tokio::time::timeout(t, input.fill(stream, slot)).await.ok(),
                    None => Some(input.fill(stream, slot).await),
                }
            };
            let n = tokio::select! {
                r = read => match r {
                    Some(r) => r?,
                    None => {
                        self.stats.idle_closed.fetch_add(1, Ordering::Relaxed);
                        return Ok(());
                    }
                },
                _ = stop.changed() => return Ok(()),
            };
            if n == 0 {
                if !input.is_empty() {
                    tracing::debug!(left = input.len(), "peer closed with a partial message buffered");
                }
                return Ok(());
            }
        }
    }

    /// Decodes one message, calls the handler, encodes the answer.
    async fn dispatch(
        &self,
        body: Bytes,
        marker: &Marker,
        transport: Transport,
        output: &mut OutputBuffer,
    ) -> Result<(), ConnError> {
        let (header, mut reader) = codec::read_message_header(&body)?;
        let seqid = header.seqid;
        match header.mtype {
            MessageType::Call | MessageType::Oneway if &header.name[..] == b"echo" => {
                let ctx = DecodeCtx { mode: self.config.decode, marker: Some(marker), limits: self.config.limits };
                let req = match codec::decode_echo_args(&mut reader, &ctx) {
                    Ok(req) => req,
                    Err(e) => {
                        let msg = format!("cannot decode echo arguments: {e}");
                        let kind = ApplicationExceptionKind::ProtocolError;
                        codec::encode_exception(output, transport, &header.name, seqid, kind, &msg)?;
                        output.flush();
                        return Err(e.into());
                    }
                };
                drop(body);
                let result = self.handler.echo(req).await;
                if header.mtype == MessageType::Oneway {
                    return Ok(());
                }
                // The encoder checks a reply before writing any of it.
                let failure = match result {
                    Ok(resp) => codec::encode_reply(output, transport, seqid, &resp)
                        .err()
                        .map(|e| format!("cannot encode the reply: {e}")),
                    Err(e) => Some(e.0),
                };
                if let Some(msg) = failure {
                    let kind = ApplicationExceptionKind::InternalError;
                    codec::encode_exception(output, transport, &header.name, seqid, kind, &msg)?;
                }
            }
            MessageType::Call => {
                let msg = format!("unknown method {:?}", String::from_utf8_lossy(&header.name));
                let kind = ApplicationExceptionKind::UnknownMethod;
                codec::encode_exception(output, transport, &header.name, seqid, kind, &msg)?;
            }
            MessageType::Oneway => {}
            other => {
                let msg = format!("a server accepts calls, not {other:?}");
                let kind = ApplicationExceptionKind::InvalidMessageType;
                codec::encode_exception(output, transport, &header.name, seqid, kind, &msg)?;
            }
        }
        output.flush();
        Ok(())
    }
}
