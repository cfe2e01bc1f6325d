//! A mini RPC framework built the way Kitex and its network library Netpoll
//! are built, so that their memory leaks can be reproduced faithfully:
//!
//! - [`Pool`]: the size-class buffer pool (Netpoll's `mcache`), whose
//!   handles are reference-counted [`Slice`]s: any slice keeps its whole
//!   chunk leased, and a decoded field ([`Binary`]) is one.
//! - [`InputBuffer`] / [`OutputBuffer`]: the per-connection linked buffers
//!   (Netpoll's `LinkBuffer`), with zero-copy reads and NoCopy writes.
//! - [`Barriers`]: the poller's per-slot scratch records for vectored I/O,
//!   with the `legacy` behaviour that kept buffer references after the
//!   syscall (fixed in Netpoll v0.2.5) and the `fixed` one.
//! - [`codec`]: Thrift strict binary, framed and unframed, and the Echo IDL.
//! - [`Server`], [`Client`] and [`lbcache`]: the service side, the caller
//!   side and the shared balancer-factory registry.
//!
//! ```
//! use rpc::{Pool, PoolConfig, Taker};
//! let pool = Pool::new(PoolConfig::default());
//! let chunk = pool.lease(8 << 10, Taker::ConnRead);
//! assert_eq!(chunk.capacity(), 8 << 10);
//! ```

mod barrier;
mod client;
pub mod codec;
pub mod lbcache;
mod linkbuf;
mod pool;
mod server;

pub use barrier::{BarrierMode, Barriers, BarriersStats, Held, SlotGuard, SLOT_REFS};
pub use client::{client_counts, Client, ClientConfig, ClientCounts, ClientError};
pub use codec::Binary;
pub use linkbuf::{
    InputBuffer, OutputBuffer, SpanCopy, DEFAULT_INPUT_NODE, MALLOC_MAX, MIN_OUTPUT_NODE, NOCOPY_THRESHOLD,
};
pub use pool::{
    class_of, Chunk, ChunkRef, ClassStats, FieldId, Lease, Pool, PoolConfig, PoolStats, Slice, Taker, MAX_POOLED,
    NUM_CLASSES,
};
pub use server::{
    Handler, HandlerError, Server, ServerConfig, ServerCounts, ServerStats, BUDGET_WAIT, LARGE_REQUEST, MAX_NAME_ECHO,
    MAX_READ, OFFLOAD_DECODE, REFUSE_INTERVAL, WORK_QUANTUM,
};
