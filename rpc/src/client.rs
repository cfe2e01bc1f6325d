//! The Echo client: a balancer from the shared [`lbcache`](crate::lbcache)
//! registry picks an instance, a pool of idle connections per address
//! carries the call, each connection with its own pooled buffers and
//! barrier slot, as a Kitex client's are.
//!
//! A client is meant to be created once and shared. Creating it registers
//! rebalance hooks on the process-global balancer factory; [`Client::close`]
//! removes them. **A client dropped without `close()` leaves its hooks
//! registered**, and every refresh of the factory (every 5 s) keeps
//! formatting the instance list into that dead client's event queue, as in
//! Kitex: the guide's duplicate-clients leak.
//!
//! ```no_run
//! use std::sync::Arc;
//! use rpc::codec::Request;
//! use rpc::lbcache::{Instance, StaticResolver};
//! use rpc::{Client, ClientConfig};
//!
//! # async fn run() -> Result<(), rpc::ClientError> {
//! let resolver = StaticResolver::new("static")
//!     .with_target("echo", vec![Instance::new("127.0.0.1:8888".parse().unwrap(), 10)]);
//! let client = Client::new(ClientConfig::new("echo", Arc::new(resolver)))?;
//! let resp = client.call(&Request { id: 1, msg: "hi".into(), json: None }).await?;
//! assert_eq!(&resp.msg[..], b"hi");
//! client.close();
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpStream;

use crate::barrier::{BarrierMode, Barriers, SlotGuard};
use crate::codec::{self, CodecError, DecodeCtx, DecodeMode, Limits, MessageType, Request, Response, Transport};
use crate::lbcache::{
    BalancerFactory, EventQueue, HookHandle, LbError, Loadbalancer, Options, Resolver, WeightedRoundRobin,
};
use crate::linkbuf::{InputBuffer, OutputBuffer, DEFAULT_INPUT_NODE};
use crate::pool::Pool;

static CREATED: AtomicU64 = AtomicU64::new(0);
static CLOSED: AtomicU64 = AtomicU64::new(0);

/// Clients created and closed in this process, for metrics: a number of
/// created clients that keeps growing is the duplicate-clients smell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientCounts {
    /// `Client::new` calls that succeeded.
    pub created: u64,
    /// `Client::close` calls (the first per client).
    pub closed: u64,
}

/// Reads the process-wide client counters.
pub fn client_counts() -> ClientCounts {
    ClientCounts { created: CREATED.load(Ordering::Relaxed), closed: CLOSED.load(Ordering::Relaxed) }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No instance to call.
    #[error("no instance for {0}")]
    NoInstance(String),
    /// Service discovery failed.
    #[error(transparent)]
    Resolve(#[from] LbError),
    /// Connect, read or write failed.
    #[error("i/o error talking to {addr}: {source}")]
    Io {
        /// The instance.
        addr: SocketAddr,
        /// What failed.
        source: std::io::Error,
    },
    /// The call did not complete within the RPC timeout.
    #[error("call to {0} timed out")]
    Timeout(SocketAddr),
    /// The reply was not valid Thrift, or not the reply to this call.
    #[error("bad reply from {addr}: {source}")]
    Codec {
        /// The instance.
        addr: SocketAddr,
        /// What was wrong.
        source: CodecError,
    },
    /// A well-formed message that is not the reply to this call.
    #[error("unexpected reply from {addr}: {reason}")]
    Mismatch {
        /// The instance.
        addr: SocketAddr,
        /// What did not match.
        reason: String,
    },
    /// The server answered with an application exception.
    #[error("server exception from {addr}: {message}")]
    Application {
        /// The instance.
        addr: SocketAddr,
        /// The exception's message.
        message: String,
    },
    /// The server closed the connection before answering.
    #[error("{0} closed the connection before replying")]
    Closed(SocketAddr),
    /// The client was closed.
    #[error("client is closed")]
    ClientClosed,
}

/// Client settings.
#[derive(Clone)]
pub struct ClientConfig {
    /// The service name the resolver knows.
    pub target: String,
    /// Service discovery.
    pub resolver: Arc<dyn Resolver>,
    /// Picking policy; shareable ones share a factory across clients.
    pub balancer: Arc<dyn Loadbalancer>,
    /// Refresh and expiry of the balancer cache.
    pub lb_options: Options,
    /// Framed (Kitex's default) or unframed.
    pub transport: Transport,
    /// How response fields are decoded.
    pub decode: DecodeMode,
    /// Link request binaries over 4 KiB without copying.
    pub nocopy_write: bool,
    /// Buffer pool of the client's connections.
    pub pool: Pool,
    /// Slot table of the client's connections.
    pub barriers: Barriers,
    /// Largest reply accepted.
    pub limits: Limits,
    /// Idle connections kept per instance.
    pub max_idle_per_addr: usize,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Whole-call timeout.
    pub rpc_timeout: Duration,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("target", &self.target)
            .field("resolver", &self.resolver.name())
            .field("balancer", &self.balancer.name())
            .field("transport", &self.transport)
            .field("decode", &self.decode)
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    /// Defaults: weighted round robin, framed, copy decoding, the global
    /// pool, fixed barriers, 1 s connect and 10 s call timeouts.
    pub fn new(target: impl Into<String>, resolver: Arc<dyn Resolver>) -> ClientConfig {
        ClientConfig {
            target: target.into(),
            resolver,
            balancer: Arc::new(WeightedRoundRobin),
            lb_options: Options::default(),
            transport: Transport::Framed,
            decode: DecodeMode::Copy,
            nocopy_write: false,
            pool: Pool::global().clone(),
            barriers: Barriers::new(BarrierMode::Fixed),
            limits: Limits::default(),
            max_idle_per_addr: 64,
            connect_timeout: Duration::from_secs(1),
            rpc_timeout: Duration::from_secs(10),
        }
    }
}

struct Conn {
    stream: TcpStream,
    slot: SlotGuard,
    input: InputBuffer,
    output: OutputBuffer,
}

/// An Echo client. Cheap to clone; clones share connections and hooks.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    factory: Arc<BalancerFactory>,
    hooks: HookHandle,
    events: Arc<EventQueue>,
    idle: Mutex<HashMap<SocketAddr, Vec<Conn>>>,
    seq: AtomicI32,
    closed: std::sync::atomic::AtomicBool,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

impl Client {
    /// Creates a client: takes (or creates) the shared balancer factory for
    /// its settings and registers this client's hooks on it.
    pub fn new(config: ClientConfig) -> Result<Client, ClientError> {
        let factory =
            BalancerFactory::get_or_create(config.resolver.clone(), config.balancer.clone(), config.lb_options);
        let events = Arc::new(EventQueue::new());
        let hooks = factory.register_hooks(events.clone());
        CREATED.fetch_add(1, Ordering::Relaxed);
        Ok(Client {
            inner: Arc::new(Inner {
                config,
                factory,
                hooks,
                events,
                idle: Mutex::new(HashMap::new()),
                seq: AtomicI32::new(0),
                closed: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// This client's event queue (rebalance and delete events).
    pub fn events(&self) -> &Arc<EventQueue> {
        &self.inner.events
    }

    /// Removes the hooks and closes idle connections. Calls after this fail.
    pub fn close(&self) {
        if !self.inner.closed.swap(true, Ordering::AcqRel) {
            self.inner.hooks.remove();
            self.inner.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
            CLOSED.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Calls `echo(req)` on an instance the balancer picks.
    pub async fn call(&self, req: &Request) -> Result<Response, ClientError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(ClientError::ClientClosed);
        }
        let balancer = self.inner.factory.get(&self.inner.config.target)?;
        let instance = balancer.pick().ok_or_else(|| ClientError::NoInstance(self.inner.config.target.clone()))?;
        let addr = instance.addr;
        let timeout = self.inner.config.rpc_timeout;
        match tokio::time::timeout(timeout, self.call_addr(addr, req)).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout(addr)),
        }
    }

    async fn call_addr(&self, addr: SocketAddr, req: &Request) -> Result<Response, ClientError> {
        let cfg = &self.inner.config;
        let mut conn = match self.take_idle(addr) {
            Some(c) => c,
            None => self.connect(addr).await?,
        };
        let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        let codec_err = |source| ClientError::Codec { addr, source };
        let io_err = |source| ClientError::Io { addr, source };
        codec::encode_call(&mut conn.output, cfg.transport, seq, req).map_err(codec_err)?;
        conn.output.flush();
        conn.output.send(&conn.stream, &conn.slot).await.map_err(io_err)?;
        let frame = loop {
            if let Some(frame) = codec::probe(&conn.input, Some(cfg.transport), &cfg.limits).map_err(codec_err)? {
                break frame;
            }
            if conn.input.fill(&conn.stream, &conn.slot).await.map_err(io_err)? == 0 {
                return Err(ClientError::Closed(addr));
            }
        };
        conn.input.skip(frame.header_len);
        let body = conn.input.next(frame.len);
        let (header, mut reader) = codec::read_message_header(&body).map_err(codec_err)?;
        let ctx = DecodeCtx { mode: cfg.decode, limits: cfg.limits };
        let result = match header.mtype {
            _ if header.seqid != seq => {
                Err(ClientError::Mismatch { addr, reason: format!("seqid {} answers call {seq}", header.seqid) })
            }
            MessageType::Reply => codec::decode_echo_result(&mut reader, &ctx).map_err(codec_err),
            MessageType::Exception => {
                let exc = codec::decode_exception(&mut reader, &ctx).map_err(codec_err)?;
                Err(ClientError::Application { addr, message: exc.message })
            }
            other => Err(ClientError::Mismatch { addr, reason: format!("a {other:?} message instead of a reply") }),
        };
        drop(body);
        conn.input.release();
        if matches!(result, Ok(_) | Err(ClientError::Application { .. })) {
            self.put_idle(addr, conn);
        }
        result
    }

    fn take_idle(&self, addr: SocketAddr) -> Option<Conn> {
        self.inner.idle.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&addr)?.pop()
    }

    fn put_idle(&self, addr: SocketAddr, conn: Conn) {
        if self.inner.closed.load(Ordering::Acquire) {
            return;
        }
        let mut idle = self.inner.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(addr).or_default();
        if list.len() < self.inner.config.max_idle_per_addr {
            list.push(conn);
        }
    }

    async fn connect(&self, addr: SocketAddr) -> Result<Conn, ClientError> {
        let cfg = &self.inner.config;
        let stream = match tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => return Err(ClientError::Io { addr, source }),
            Err(_) => return Err(ClientError::Timeout(addr)),
        };
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            stream,
            slot: cfg.barriers.acquire(),
            input: InputBuffer::new(cfg.pool.clone(), DEFAULT_INPUT_NODE),
            output: OutputBuffer::new(cfg.pool.clone(), cfg.nocopy_write),
        })
    }
}
