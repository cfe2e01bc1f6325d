//! The Echo server: an accept loop and one task per connection, each with a
//! pooled [`InputBuffer`], an [`OutputBuffer`] and a barrier slot, as a
//! Netpoll connection has.
//!
//! A connection's first message decides its transport (framed or unframed,
//! sniffed as Kitex does). A corrupt message, or a length beyond the limit,
//! closes that connection with a logged reason; the others go on.
//!
//! # Hostile peers
//!
//! Every budget below closes only the connection that passes it, with a
//! `tracing::warn!` naming the peer and the reason, and a counter in
//! [`ServerStats`]:
//!
//! | budget | default | counter |
//! |---|---|---|
//! | [`Limits::max_frame`]: one message, framed or not | 64 MiB | `protocol_errors` |
//! | [`ServerConfig::max_conns`]: connections open at once | 10 000 | `refused_conns` |
//! | [`ServerConfig::max_input_bytes`]: input buffered and replies queued, all connections together | 256 MiB | `budget_closes` |
//! | [`ServerConfig::max_output_bytes`]: replies queued on one connection | 64 MiB | `output_overflows` |
//! | [`ServerConfig::write_timeout`]: a send making no progress | 30 s | `write_timeouts` |
//! | [`ServerConfig::frame_timeout`]: one message, first byte to last | 60 s | `frame_timeouts` |
//! | [`ServerConfig::idle_timeout`]: nothing read or sent | 10 min | `idle_closed` |
//!
//! - **Decoding is linear.** Each connection keeps a [`FrameDecoder`] that
//!   resumes where the last read stopped (tokio-util's `DecodeState`), so an
//!   unframed message costs its length whatever the read sizes, and is
//!   refused as soon as it passes `max_frame`, as a framed one is refused on
//!   its length prefix (Netty's `LengthFieldBasedFrameDecoder` with
//!   `failFast`). tokio-util's `max_frame_length` defaults to 8 MiB; ours
//!   stays at 64 MiB because the scenarios send messages of tens of MiB.
//! - **Input memory is one budget across connections**, as Apache Thrift's
//!   `TNonblockingServer` caps all read buffers together with
//!   `maxReadBufferBytes` (256 MiB there too). What counts is what the
//!   input buffers hold from the pool: node capacities, not message bytes
//!   (gauge `input_bytes`). Before a read that needs a new node, the
//!   connection reserves it; when that would pass the budget, the
//!   **greediest** connection (most input held, possibly the reader itself)
//!   is closed. Thrift instead stops reading until memory comes back; with
//!   partial frames on many connections nothing ever comes back, and every
//!   connection waits forever. Closing the greediest frees the most memory
//!   per close and spares the small requests of well-behaved peers. A
//!   reader that is not the greediest waits for the memory to come back
//!   (at most [`BUDGET_WAIT`]) rather than overshoot; if it does not, it is
//!   closed itself. Slack: the budget can be passed by the first node of
//!   each connection (8 KiB, at accept) and, for a message that spans
//!   nodes, by its one contiguous copy while it is handled.
//! - **Output buffers count in the same budget.** A reply waiting for a
//!   peer that reads slowly holds its pooled output nodes, and the output
//!   buffer keeps its tail node for the next reply (a NoCopy reply's linked
//!   values are input the budget already counted): both are part of the
//!   connection's share, so a connection that the next read finds greediest
//!   is closed whether its memory is a partial request or replies, and the
//!   budget bounds both. Slack: a reply is made before it is counted, one
//!   per connection dispatching at that moment.
//! - **No connection holds a thread for long.** One read takes at most
//!   [`MAX_READ`] bytes, and a connection gives way to
//!   the others (`tokio::task::yield_now`, counted in `yields`) after each
//!   [`WORK_QUANTUM`] of bytes read without waiting for its socket (a
//!   peer that waits for each reply never makes it give way), scanned by
//!   its [`FrameDecoder`]
//!   ([`FrameDecoder::decode_within`]) or copied out of several nodes into
//!   one message ([`InputBuffer::begin_span`]); a message of
//!   [`OFFLOAD_DECODE`] bytes or more is decoded with
//!   `tokio::task::block_in_place` on a multi-thread runtime (counted in
//!   `offloaded_decodes`), so its worker's other connections move to
//!   another thread meanwhile. Without this, one 32 MiB unframed message of
//!   small list elements kept a worker for its whole scan, copy and decode
//!   (hundreds of milliseconds), and two of them stalled every other
//!   connection of a two-thread runtime.
//! - **Accepting pauses at `max_conns`.** While that many connections are
//!   open the accept loop stops accepting, as Go's `netutil.LimitListener`
//!   does, and resumes as soon as one closes; new peers wait in the listen
//!   backlog meanwhile. It still refuses (accepts and closes, counted in
//!   `refused_conns`) one waiting connection per [`REFUSE_INTERVAL`], so
//!   that a peer is not left waiting forever; closing every connection as
//!   it came made a flood of reconnecting peers cost the server a
//!   handshake, a close and a log line each, thousands per second.
//! - **Output is bounded per connection.** Replies to the messages of one
//!   read queue until they are sent; a reply is queued only while fewer
//!   than `max_output_bytes` wait (so a single large reply always fits),
//!   and a send that makes no progress for `write_timeout` closes the
//!   connection: a peer that never reads its replies is closed.
//! - **Slow peers have a deadline per message.** `frame_timeout` runs from
//!   a message's first byte to its last, however the bytes trickle in;
//!   `idle_timeout` closes a connection on which nothing was read or sent
//!   for that long (checked [`IDLE_CHECKS`] times per period by one task for
//!   all connections: closed after 1 to 1.25 times the timeout). Apache Thrift and Netty leave
//!   both to the application (Netty's `ReadTimeoutHandler` is per read).
//! - **Exceptions never repeat unbounded input**: a method name is cut to
//!   [`MAX_NAME_ECHO`] bytes (on a character boundary, then `…`) in the
//!   exception's message and its header, and error texts to 256 bytes.
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

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

use crate::codec::Binary;
use atomic_waker::AtomicWaker;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::barrier::{BarrierMode, Barriers, SlotGuard};
use crate::codec::{
    self, ApplicationExceptionKind, CodecError, DecodeCtx, DecodeMode, FrameDecoder, Limits, MessageType, Progress,
    Request, Response, Transport,
};
use crate::linkbuf::{InputBuffer, OutputBuffer, DEFAULT_INPUT_NODE};
use crate::pool::{class_of, Pool};

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
    /// Close a connection on which nothing was read or sent for this long
    /// (`None`: never); closed after 1 to 1.25 times it.
    /// Default 10 minutes: far beyond a keep-alive client's pause between
    /// calls, and a connection that never sends a byte still goes (without
    /// it, `max_conns` silent connections would keep every other peer out
    /// for good).
    pub idle_timeout: Option<Duration>,
    /// Connections open at once. At the limit accepting pauses until one
    /// closes; one waiting connection is accepted and closed per
    /// [`REFUSE_INTERVAL`] (counted in `refused_conns`). Default 10 000.
    pub max_conns: usize,
    /// Input buffered and replies queued by all connections together,
    /// counted as the pooled node capacity their input and output buffers
    /// hold; past it the connection holding the most is closed
    /// (`budget_closes`). Default 256 MiB.
    pub max_input_bytes: usize,
    /// Reply bytes one connection may have waiting to be sent before
    /// another reply is queued; past it the connection is closed
    /// (`output_overflows`). Default 64 MiB.
    pub max_output_bytes: usize,
    /// Close a connection whose send makes no progress for this long
    /// (`write_timeouts`). Default 30 s.
    pub write_timeout: Duration,
    /// Close a connection whose message is not whole this long after its
    /// first byte (`frame_timeouts`); on by default, 60 s.
    pub frame_timeout: Option<Duration>,
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
            idle_timeout: Some(Self::DEFAULT_IDLE_TIMEOUT),
            max_conns: Self::DEFAULT_MAX_CONNS,
            max_input_bytes: Self::DEFAULT_MAX_INPUT_BYTES,
            max_output_bytes: Self::DEFAULT_MAX_OUTPUT_BYTES,
            write_timeout: Self::DEFAULT_WRITE_TIMEOUT,
            frame_timeout: Some(Self::DEFAULT_FRAME_TIMEOUT),
            initial_input: DEFAULT_INPUT_NODE,
            grace: Duration::from_secs(5),
        }
    }
}

impl ServerConfig {
    /// Default of [`max_conns`](Self::max_conns): 10 000.
    pub const DEFAULT_MAX_CONNS: usize = 10_000;
    /// Default of [`max_input_bytes`](Self::max_input_bytes): 256 MiB, as
    /// Apache Thrift's `maxReadBufferBytes`.
    pub const DEFAULT_MAX_INPUT_BYTES: usize = 256 << 20;
    /// Default of [`max_output_bytes`](Self::max_output_bytes): 64 MiB.
    pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 64 << 20;
    /// Default of [`write_timeout`](Self::write_timeout): 30 s.
    pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default of [`frame_timeout`](Self::frame_timeout): 60 s.
    pub const DEFAULT_FRAME_TIMEOUT: Duration = Duration::from_secs(60);
    /// Default of [`idle_timeout`](Self::idle_timeout): 10 minutes.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
}

/// How long a reader that is not the greediest waits for input memory to
/// come back before it is closed itself: 1 s.
pub const BUDGET_WAIT: Duration = Duration::from_secs(1);

/// Bytes of work (read, scanned or copied) after which a connection gives
/// way to the others: 64 KiB, about a tenth of a millisecond of scanning.
pub const WORK_QUANTUM: usize = 64 << 10;

/// Bytes one socket read takes at most (256 KiB): a read into a fresh
/// 8 MiB node copies and faults in 8 MiB, milliseconds during which the
/// thread's other connections wait.
pub const MAX_READ: usize = 256 << 10;

/// Messages this large (1 MiB) are decoded off the runtime's worker
/// (`tokio::task::block_in_place`) on a multi-thread runtime.
pub const OFFLOAD_DECODE: usize = 1 << 20;

/// While `max_conns` connections are open, one waiting connection is
/// refused per interval (10 ms): at most 100 refusals a second.
pub const REFUSE_INTERVAL: Duration = Duration::from_millis(10);

/// Bytes of a method name an exception repeats: 128.
pub const MAX_NAME_ECHO: usize = 128;

/// Bytes of an error text an exception carries: 256.
const MAX_ERROR_TEXT: usize = 256;

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
    /// Connections closed at accept: `max_conns` were open.
    pub refused_conns: AtomicU64,
    /// Connections closed to keep buffered input and queued replies
    /// within `max_input_bytes`.
    pub budget_closes: AtomicU64,
    /// Connections closed with `max_output_bytes` of replies unsent.
    pub output_overflows: AtomicU64,
    /// Connections closed because a send made no progress for
    /// `write_timeout`.
    pub write_timeouts: AtomicU64,
    /// Connections closed because a message was not whole within
    /// `frame_timeout`.
    pub frame_timeouts: AtomicU64,
    /// Bytes the input buffers and queued replies of all connections hold
    /// now (node capacities), the quantity `max_input_bytes` bounds.
    pub input_bytes: AtomicU64,
    /// Times a connection gave way to the others after [`WORK_QUANTUM`]
    /// bytes of work.
    pub yields: AtomicU64,
    /// Messages decoded off the runtime's worker ([`OFFLOAD_DECODE`]).
    pub offloaded_decodes: AtomicU64,
    /// Times the accept loop paused with `max_conns` connections open.
    pub accept_pauses: AtomicU64,
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
    /// See [`ServerStats::refused_conns`].
    pub refused_conns: u64,
    /// See [`ServerStats::budget_closes`].
    pub budget_closes: u64,
    /// See [`ServerStats::output_overflows`].
    pub output_overflows: u64,
    /// See [`ServerStats::write_timeouts`].
    pub write_timeouts: u64,
    /// See [`ServerStats::frame_timeouts`].
    pub frame_timeouts: u64,
    /// See [`ServerStats::input_bytes`].
    pub input_bytes: u64,
    /// See [`ServerStats::yields`].
    pub yields: u64,
    /// See [`ServerStats::offloaded_decodes`].
    pub offloaded_decodes: u64,
    /// See [`ServerStats::accept_pauses`].
    pub accept_pauses: u64,
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
            refused_conns: self.refused_conns.load(Ordering::Relaxed),
            budget_closes: self.budget_closes.load(Ordering::Relaxed),
            output_overflows: self.output_overflows.load(Ordering::Relaxed),
            write_timeouts: self.write_timeouts.load(Ordering::Relaxed),
            frame_timeouts: self.frame_timeouts.load(Ordering::Relaxed),
            input_bytes: self.input_bytes.load(Ordering::Relaxed),
            yields: self.yields.load(Ordering::Relaxed),
            offloaded_decodes: self.offloaded_decodes.load(Ordering::Relaxed),
            accept_pauses: self.accept_pauses.load(Ordering::Relaxed),
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
        // A load first: the counter is shared by every connection, and it
        // rarely changes.
        if self.largest_request.load(Ordering::Relaxed) < len as u64
            && self.largest_request.fetch_max(len as u64, Ordering::Relaxed) < len as u64
        {
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
    budget: InputBudget,
    /// Set once the server stops accepting: each connection finishes what
    /// it has read and closes.
    stopping: AtomicBool,
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
    #[error("{0}")]
    Closed(Close),
}

/// A budget that closed a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
enum Close {
    #[error("buffer budget exhausted (max_input_bytes) and this connection holds the most input and queued replies")]
    InputBudget,
    #[error("more than max_output_bytes of replies unsent: the peer does not read")]
    OutputOverflow,
    #[error("a send made no progress for write_timeout: the peer does not read")]
    WriteTimeout,
    #[error("a message was not whole within frame_timeout of its first byte")]
    FrameTimeout,
    #[error("nothing read or sent for idle_timeout")]
    Idle,
}

/// One connection's share of the input budget.
#[derive(Debug)]
struct ConnSlot {
    peer: SocketAddr,
    /// Bytes its input buffer holds (or has reserved for a read).
    reserved: AtomicUsize,
    /// Chosen to be closed; not chosen again.
    doomed: AtomicBool,
    /// Bumped by the connection at each read and each send that made
    /// progress; the idle check ([`reap_idle`]) compares it with `seen`.
    activity: AtomicU64,
    /// `activity` at the idle check's last look (`u64::MAX` before it).
    seen: AtomicU64,
    /// Idle checks in a row that found no activity.
    quiet: AtomicU32,
    /// Found idle for `idle_timeout`: the connection closes.
    idle: AtomicBool,
    /// The connection's task while it waits for its socket: woken to look
    /// at `doomed` and at the server's `stopping`. One waker and two
    /// flags, where a `Notify` per condition took a lock to register and
    /// another to deregister on every read.
    waker: AtomicWaker,
}

impl ConnSlot {
    /// Marks the connection to close and wakes it; false if it was marked
    /// already.
    fn doom(&self) -> bool {
        let first = !self.doomed.swap(true, Ordering::AcqRel);
        self.waker.wake();
        first
    }

    /// One idle check: counts a check without activity, and closes the
    /// connection at the [`IDLE_CHECKS`]-th in a row.
    fn check_idle(&self) {
        let now = self.activity.load(Ordering::Relaxed);
        if self.seen.swap(now, Ordering::Relaxed) != now {
            self.quiet.store(0, Ordering::Relaxed);
        } else if self.quiet.fetch_add(1, Ordering::Relaxed) + 1 >= IDLE_CHECKS {
            self.idle.store(true, Ordering::Release);
            self.waker.wake();
        }
    }
}

/// Idle checks per `idle_timeout`: a connection is closed after between
/// `idle_timeout` and 1.25 times it without activity. Checking from one
/// task for all connections costs a read nothing but one store; a timer
/// per read cost about 800 instructions a call.
const IDLE_CHECKS: u32 = 4;

/// Checks every connection for activity, `IDLE_CHECKS` times per
/// `idle_timeout`, until dropped (as Netty's `IdleStateHandler`, with one
/// timer for the server instead of one per connection).
async fn reap_idle<H>(shared: Arc<Shared<H>>, idle_timeout: Duration) {
    let mut every = tokio::time::interval(idle_timeout / IDLE_CHECKS);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        for slot in shared.budget.conns.lock().unwrap_or_else(|e| e.into_inner()).values() {
            slot.check_idle();
        }
    }
}

/// Why a connection waiting on its socket must stop waiting.
#[derive(Clone, Copy)]
enum Signal {
    /// Chosen to close by the input budget ([`ConnSlot::doom`]).
    Doomed,
    /// Nothing read or sent for `idle_timeout` ([`ConnSlot::check_idle`]).
    Idle,
    /// The server stops.
    Stopping,
}

impl Signal {
    /// How the connection ends: closed by a budget, or done (the server
    /// stops, and what was read has been answered).
    fn closes(self) -> Result<(), ConnError> {
        match self {
            Signal::Doomed => Err(ConnError::Closed(Close::InputBudget)),
            Signal::Idle => Err(ConnError::Closed(Close::Idle)),
            Signal::Stopping => Ok(()),
        }
    }
}

/// The input memory of all connections ([`ServerConfig::max_input_bytes`]).
#[derive(Debug)]
struct InputBudget {
    max: usize,
    total: AtomicUsize,
    conns: Mutex<HashMap<u64, Arc<ConnSlot>>>,
    next_id: AtomicU64,
    /// Signalled whenever a connection gives input memory back.
    freed: Notify,
}

impl InputBudget {
    fn new(max: usize) -> InputBudget {
        InputBudget {
            max,
            total: AtomicUsize::new(0),
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            freed: Notify::new(),
        }
    }

    fn register(&self, peer: SocketAddr) -> (u64, Arc<ConnSlot>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(ConnSlot {
            peer,
            reserved: AtomicUsize::new(0),
            doomed: AtomicBool::new(false),
            activity: AtomicU64::new(0),
            seen: AtomicU64::new(u64::MAX),
            quiet: AtomicU32::new(0),
            idle: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        });
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).insert(id, slot.clone());
        (id, slot)
    }

    /// Wakes every connection (to see that the server stops).
    fn wake_all(&self) {
        for slot in self.conns.lock().unwrap_or_else(|e| e.into_inner()).values() {
            slot.waker.wake();
        }
    }

    fn unregister(&self, id: u64, slot: &ConnSlot) {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        self.set(slot, 0);
    }

    /// Records what the connection's input buffer holds now.
    fn set(&self, slot: &ConnSlot, held: usize) {
        let old = slot.reserved.swap(held, Ordering::AcqRel);
        if held >= old {
            self.total.fetch_add(held - old, Ordering::AcqRel);
        } else {
            self.total.fetch_sub(old - held, Ordering::AcqRel);
            self.freed.notify_waiters();
        }
    }

    /// Reserves `n` more bytes for `slot` if the budget allows.
    fn try_reserve(&self, slot: &ConnSlot, n: usize) -> bool {
        let ok = self
            .total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| t.checked_add(n).filter(|&after| after <= self.max))
            .is_ok();
        if ok {
            slot.reserved.fetch_add(n, Ordering::AcqRel);
        }
        ok
    }

    /// The connection holding the most input, counting `wants` more for
    /// `me`; connections already chosen are left out.
    fn greediest(&self, me: &Arc<ConnSlot>, wants: usize) -> Arc<ConnSlot> {
        let conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let mut best = me.clone();
        let mut most = me.reserved.load(Ordering::Acquire) + wants;
        for c in conns.values() {
            let held = c.reserved.load(Ordering::Acquire);
            if held > most && !c.doomed.load(Ordering::Acquire) {
                best = c.clone();
                most = held;
            }
        }
        best
    }
}

/// What a pool lease of `size` bytes really takes: its size class, or
/// `size` itself when too large to pool.
fn lease_size(pool: &Pool, size: usize) -> usize {
    if size <= pool.config().max_pooled {
        1 << class_of(size)
    } else {
        size
    }
}

/// `text` cut to at most `max` bytes on a character boundary, with `…`
/// when cut.
fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// A method name as an exception repeats it: at most [`MAX_NAME_ECHO`]
/// bytes, cut before a UTF-8 continuation byte, then `…`.
fn clip_name(name: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if name.len() <= MAX_NAME_ECHO {
        return name.into();
    }
    let mut end = MAX_NAME_ECHO;
    // Step back over continuation bytes (at most 3 in UTF-8).
    while end > MAX_NAME_ECHO - 3 && name[end] & 0xc0 == 0x80 {
        end -= 1;
    }
    let mut v = name[..end].to_vec();
    v.extend_from_slice("…".as_bytes());
    v.into()
}

impl<H: Handler> Server<H> {
    /// A server calling `handler`.
    pub fn new(config: ServerConfig, handler: H) -> Server<H> {
        let budget = InputBudget::new(config.max_input_bytes);
        let stats = Arc::new(ServerStats::default());
        Server { shared: Arc::new(Shared { config, handler, stats, budget, stopping: AtomicBool::new(false) }) }
    }

    /// Its counters (share them with a metrics endpoint).
    pub fn stats(&self) -> Arc<ServerStats> {
        self.shared.stats.clone()
    }

    /// Accepts connections until `shutdown` completes, then stops accepting,
    /// lets each connection finish the requests it has read, and waits up to
    /// the grace period for them to close.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let mut conns = JoinSet::new();
        tokio::pin!(shutdown);
        // Ends with the server (aborted on drop).
        let _reaper = self
            .shared
            .config
            .idle_timeout
            .filter(|t| !t.is_zero())
            .map(|t| AbortOnDrop(tokio::spawn(reap_idle(self.shared.clone(), t))));
        let stats = &self.shared.stats;
        let max_conns = self.shared.config.max_conns as u64;
        // While at the limit: when the next waiting connection may be
        // refused, and whether this pause was logged.
        let mut next_refusal: Option<Instant> = None;
        loop {
            let full = stats.open_conns.load(Ordering::Relaxed) >= max_conns;
            if !full {
                next_refusal = None;
            } else if next_refusal.is_none() {
                stats.accept_pauses.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(open = max_conns, "max_conns connections open: accepting paused until one closes");
                next_refusal = Some(Instant::now() + REFUSE_INTERVAL);
            }
            let may_accept = !full || next_refusal.is_some_and(|t| t <= Instant::now());
            tokio::select! {
                _ = &mut shutdown => break,
                _ = sleep_until(next_refusal), if !may_accept => {}
                accepted = listener.accept(), if may_accept => match accepted {
                    Ok((stream, peer)) => {
                        if stats.open_conns.load(Ordering::Relaxed) >= max_conns {
                            stats.refused_conns.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%peer, reason = "max_conns connections open", "refusing connection");
                            drop(stream);
                            next_refusal = Some(Instant::now() + REFUSE_INTERVAL);
                            continue;
                        }
                        let open = Open::new(stats);
                        stats.opened_conns.fetch_add(1, Ordering::Relaxed);
                        let shared = self.shared.clone();
                        conns.spawn(async move { shared.connection(stream, peer, open).await });
                    }
                    Err(e) => {
                        // Out of descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(ended) = conns.join_next(), if !conns.is_empty() => {
                    if let Err(e) = ended {
                        if e.is_panic() {
                            tracing::error!(error = %e, "a connection's task panicked: its connection is closed");
                        }
                    }
                }
            }
        }
        drop(listener);
        // A connection registers its slot before it first looks at the
        // flag, and looks again after each registration of its waker: each
        // one either is woken here or sees the flag itself.
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.budget.wake_all();
        let grace = self.shared.config.grace;
        let drained = tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(open = conns.len(), "grace period over, closing remaining connections");
            conns.shutdown().await;
        }
        Ok(())
    }
}

/// A connection's buffers and its share of the input budget. Fields drop
/// in order: the buffers go back before the share does.
struct Conn<'a> {
    input: InputBuffer,
    output: OutputBuffer,
    share: Share<'a>,
}

/// A registration in the input budget, removed on drop.
struct Share<'a> {
    budget: &'a InputBudget,
    stats: &'a ServerStats,
    id: u64,
    slot: Arc<ConnSlot>,
    /// The waker last registered in `slot.waker`: registering it again is a
    /// compare-and-swap on a line other threads may touch, twice per call,
    /// for a waker that has not changed.
    registered: Option<Waker>,
}

impl Drop for Share<'_> {
    fn drop(&mut self) {
        self.budget.unregister(self.id, &self.slot);
        self.stats.input_bytes.store(self.budget.total.load(Ordering::Acquire) as u64, Ordering::Relaxed);
    }
}

impl Conn<'_> {
    /// Notes a read or a send that made progress, for the idle check. Only
    /// the connection writes its count (the check reads it): a load and a
    /// store, no atomic add.
    fn active(&self) {
        let activity = &self.share.slot.activity;
        activity.store(activity.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }

    /// Records what the input buffer and the output buffer (replies
    /// waiting to be sent, and the node it keeps for the next one) hold
    /// now.
    fn sync(&self) {
        let share = &self.share;
        let held = self.input.reserved() + self.output.reserved();
        // Most calls leave the input nodes as they were: then the shared
        // counters, written by every connection, are left alone.
        if share.slot.reserved.load(Ordering::Acquire) == held {
            return;
        }
        share.budget.set(&share.slot, held);
        share.stats.input_bytes.store(share.budget.total.load(Ordering::Acquire) as u64, Ordering::Relaxed);
    }
}

/// A task aborted when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Counts a connection open until dropped: when its task ends, even by a
/// panic of the handler or cancelled before it ran, its place under
/// `max_conns` is given back.
struct Open(Arc<ServerStats>);

impl Open {
    fn new(stats: &Arc<ServerStats>) -> Open {
        stats.open_conns.fetch_add(1, Ordering::Relaxed);
        Open(stats.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open_conns.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<H: Handler> Shared<H> {
    async fn connection(self: Arc<Self>, stream: TcpStream, peer: SocketAddr, open: Open) {
        let _open = open;
        let stats = &self.stats;
        let _ = stream.set_nodelay(true);
        let slot = self.config.barriers.acquire();
        {
            let (id, share) = self.budget.register(peer);
            let mut conn = Conn {
                input: InputBuffer::new(self.config.pool.clone(), self.config.initial_input),
                output: OutputBuffer::new(self.config.pool.clone(), self.config.nocopy_write),
                share: Share { budget: &self.budget, stats, id, slot: share, registered: None },
            };
            conn.sync();
            match self.serve_conn(&stream, peer, &slot, &mut conn).await {
                Ok(()) => {}
                Err(ConnError::Codec(e)) => {
                    stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                    let reason = clip(&e.to_string(), MAX_ERROR_TEXT);
                    tracing::warn!(%peer, %reason, "closing connection: corrupt or refused message");
                }
                Err(ConnError::Closed(why)) => {
                    let counter = match why {
                        Close::InputBudget => &stats.budget_closes,
                        Close::OutputOverflow => &stats.output_overflows,
                        Close::WriteTimeout => &stats.write_timeouts,
                        Close::FrameTimeout => &stats.frame_timeouts,
                        Close::Idle => &stats.idle_closed,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%peer, reason = %why, "closing connection");
                }
                Err(ConnError::Io(e)) => tracing::debug!(%peer, error = %e, "connection ended"),
            }
        }
    }

    /// Makes room in the input budget for a read that takes a new node of
    /// `wants` bytes: closes the greediest connection when the budget is
    /// spent, and waits (at most [`BUDGET_WAIT`]) for its memory.
    async fn admit(&self, conn: &Conn<'_>, wants: usize) -> Result<(), ConnError> {
        // Set at the first refusal: most reads fit and read no clock.
        let mut deadline = None;
        loop {
            if self.budget.try_reserve(&conn.share.slot, wants) {
                return Ok(());
            }
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + BUDGET_WAIT);
            let freed = self.budget.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let victim = self.budget.greediest(&conn.share.slot, wants);
            if Arc::ptr_eq(&victim, &conn.share.slot) {
                conn.share.slot.doomed.store(true, Ordering::Release);
                return Err(ConnError::Closed(Close::InputBudget));
            }
            if victim.doom() {
                tracing::debug!(peer = %victim.peer, by = %conn.share.slot.peer, "input budget spent: closing the greediest");
            }
            let now = Instant::now();
            if now >= deadline {
                conn.share.slot.doomed.store(true, Ordering::Release);
                return Err(ConnError::Closed(Close::InputBudget));
            }
            let _ = tokio::time::timeout((deadline - now).min(Duration::from_millis(50)), freed).await;
        }
    }

    /// Sends every queued reply; fails if a send makes no progress for
    /// `write_timeout` or the connection is chosen to close.
    async fn send_all(&self, stream: &TcpStream, slot: &SlotGuard, conn: &mut Conn<'_>) -> Result<(), ConnError> {
        // Most replies fit in the socket at once: then no timer and no
        // wake-up are set up.
        conn.output.try_send(stream, slot)?;
        if !conn.output.is_empty() {
            // What waits for the peer counts in the budget meanwhile.
            conn.sync();
        }
        while !conn.output.is_empty() {
            let before = conn.output.len();
            let sent = tokio::select! {
                r = tokio::time::timeout(self.config.write_timeout, conn.output.send(stream, slot)) => Ok(r),
                signal = self.signalled(&conn.share.slot, &mut conn.share.registered, false) => Err(signal),
            };
            match sent {
                // A stop does not count here: only a close ends the send.
                Err(signal) => return signal.closes(),
                Ok(Ok(r)) => r?,
                // `send` keeps its progress when cancelled.
                Ok(Err(_)) if conn.output.len() == before => return Err(ConnError::Closed(Close::WriteTimeout)),
                Ok(Err(_)) => {}
            }
            if conn.output.len() < before {
                conn.active();
            }
        }
        Ok(())
    }

    async fn serve_conn(
        &self,
        stream: &TcpStream,
        peer: SocketAddr,
        slot: &SlotGuard,
        conn: &mut Conn<'_>,
    ) -> Result<(), ConnError> {
        let mut decoder = FrameDecoder::new(self.config.limits);
        // When the first byte of the message in progress arrived.
        let mut started: Option<Instant> = None;
        // Bytes read since this connection last gave way.
        let mut work = 0;
        loop {
            let outcome = loop {
                match decoder.decode_within(&conn.input, WORK_QUANTUM) {
                    Ok(Progress::Paused) => self.give_way().await,
                    Ok(Progress::Complete(frame)) => {
                        started = None;
                        if conn.output.len() >= self.config.max_output_bytes {
                            // Send what the socket takes now, without waiting.
                            conn.output.try_send(stream, slot)?;
                            if conn.output.len() >= self.config.max_output_bytes {
                                break Err(ConnError::Closed(Close::OutputOverflow));
                            }
                        }
                        self.stats.note_request(frame.len, peer);
                        conn.input.skip(frame.header_len);
                        let body = if frame.len > WORK_QUANTUM && conn.input.spans(frame.len) {
                            let mut span = conn.input.begin_span(frame.len);
                            while !span.copy_from(&conn.input, WORK_QUANTUM) {
                                self.give_way().await;
                            }
                            conn.input.finish_span(span)
                        } else {
                            conn.input.next(frame.len)
                        };
                        let r = self.dispatch(body, frame.transport, &mut conn.output).await;
                        self.stats.requests.fetch_add(1, Ordering::Relaxed);
                        if let Err(e) = r {
                            break Err(e);
                        }
                    }
                    Ok(Progress::Incomplete) => break Ok(()),
                    Err(e) => {
                        if let CodecError::FrameTooLarge { len, .. } = e {
                            self.stats.note_request(len as usize, peer);
                        }
                        break Err(ConnError::Codec(e));
                    }
                }
            };
            // Replies (and a last exception) go out before a close, unless
            // the peer does not read them.
            if !matches!(outcome, Err(ConnError::Closed(_))) {
                self.send_all(stream, slot, conn).await?;
            }
            conn.input.release();
            conn.sync();
            outcome?;
            if self.stopping.load(Ordering::Acquire) {
                return Ok(());
            }
            if conn.input.is_empty() {
                started = None;
            } else if started.is_none() {
                started = Some(Instant::now());
            }
            // A read past the tail node takes a new node of `max_size`.
            let wants =
                if conn.input.book_len() == 0 { lease_size(&self.config.pool, conn.input.high_water().1) } else { 0 };
            if wants > 0 {
                self.admit(conn, wants).await?;
            }
            let deadline = started.zip(self.config.frame_timeout).map(|(s, t)| s + t);
            let read = conn.input.fill_at_most(stream, slot, MAX_READ);
            let n = tokio::select! {
                // The cheap checks first, in a fixed order: no random
                // number per read.
                biased;
                signal = self.signalled(&conn.share.slot, &mut conn.share.registered, true) => {
                    conn.sync();
                    return signal.closes();
                }
                _ = sleep_until(deadline) => {
                    conn.sync();
                    return Err(ConnError::Closed(Close::FrameTimeout));
                }
                r = read => r,
            };
            conn.sync();
            let n = n?;
            conn.active();
            if n == 0 {
                if !conn.input.is_empty() {
                    tracing::debug!(left = conn.input.len(), "peer closed with a partial message buffered");
                }
                return Ok(());
            }
            // A peer that keeps the socket full would otherwise be read
            // from until the runtime's own budget runs out. Bytes count
            // from the last time the connection waited for its socket: a
            // peer that waits for each reply never makes it give way.
            if conn.input.take_waited() {
                work = 0;
            }
            work += n;
            if work >= WORK_QUANTUM {
                work = 0;
                self.give_way().await;
            }
            // `started` is set after decoding, if a message stays partial.
        }
    }

    /// Completes when the connection `slot` is chosen to close, or (if
    /// `stop` counts) when the server stops; `registered` is the waker
    /// last registered in the slot ([`Share::registered`]).
    fn signalled<'a>(
        &'a self,
        slot: &'a ConnSlot,
        registered: &'a mut Option<Waker>,
        stop: bool,
    ) -> impl Future<Output = Signal> + 'a {
        std::future::poll_fn(move |cx| {
            // Registered before the flags are read: a `doom` or a stop
            // after this sees the waker; one before, its flag. A waker
            // registered earlier stays until a `doom` or a stop takes it,
            // after setting its flag. A doom is seen below for good; a
            // stop is not when `stop` does not count (a reply still
            // going out), so once the server stops the waker is
            // registered anew, for a doom that may follow.
            let stale = registered.as_ref().is_none_or(|w| !w.will_wake(cx.waker()));
            if stale || self.stopping.load(Ordering::Acquire) {
                slot.waker.register(cx.waker());
                *registered = Some(cx.waker().clone());
            }
            if slot.doomed.load(Ordering::Acquire) {
                Poll::Ready(Signal::Doomed)
            } else if slot.idle.load(Ordering::Acquire) {
                Poll::Ready(Signal::Idle)
            } else if stop && self.stopping.load(Ordering::Acquire) {
                Poll::Ready(Signal::Stopping)
            } else {
                Poll::Pending
            }
        })
    }

    /// Lets the runtime's other tasks run before this connection goes on.
    async fn give_way(&self) {
        self.stats.yields.fetch_add(1, Ordering::Relaxed);
        tokio::task::yield_now().await;
    }

    /// Decodes one message, calls the handler, encodes the answer.
    async fn dispatch(&self, body: Binary, transport: Transport, output: &mut OutputBuffer) -> Result<(), ConnError> {
        let (header, mut reader) = codec::read_message_header(&body)?;
        let seqid = header.seqid;
        // What an exception repeats of the name is bounded.
        let name = clip_name(&header.name);
        match header.mtype {
            MessageType::Call | MessageType::Oneway if &header.name[..] == b"echo" => {
                let ctx = DecodeCtx { mode: self.config.decode, limits: self.config.limits };
                let mut decode = || codec::decode_echo_args(&mut reader, &ctx);
                let offload = body.len() >= OFFLOAD_DECODE
                    && tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread;
                let decoded = if offload {
                    self.stats.offloaded_decodes.fetch_add(1, Ordering::Relaxed);
                    tokio::task::block_in_place(decode)
                } else {
                    decode()
                };
                let req = match decoded {
                    Ok(req) => req,
                    Err(e) => {
                        let msg = clip(&format!("cannot decode echo arguments: {e}"), MAX_ERROR_TEXT);
                        let kind = ApplicationExceptionKind::ProtocolError;
                        codec::encode_exception(output, transport, &name, seqid, kind, &msg)?;
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
                        .map(|e| clip(&format!("cannot encode the reply: {e}"), MAX_ERROR_TEXT)),
                    Err(e) => Some(clip(&e.0, MAX_ERROR_TEXT)),
                };
                if let Some(msg) = failure {
                    let kind = ApplicationExceptionKind::InternalError;
                    codec::encode_exception(output, transport, &name, seqid, kind, &msg)?;
                }
            }
            MessageType::Call => {
                let quoted = format!("{:?}", String::from_utf8_lossy(&name));
                let msg = format!("unknown method {}", clip(&quoted, MAX_NAME_ECHO));
                let kind = ApplicationExceptionKind::UnknownMethod;
                codec::encode_exception(output, transport, &name, seqid, kind, &msg)?;
            }
            MessageType::Oneway => {}
            other => {
                let msg = format!("a server accepts calls, not {other:?}");
                let kind = ApplicationExceptionKind::InvalidMessageType;
                codec::encode_exception(output, transport, &name, seqid, kind, &msg)?;
            }
        }
        output.flush();
        Ok(())
    }
}
