//! Encoding: plain data in, Go-format heap profiles out.
//!
//! - `heap.rs`: [`Snapshot::to_profile`](crate::Snapshot::to_profile), a
//!   snapshot's records symbolized, trimmed and scaled (Go's
//!   `scaleHeapSample`), with a comment per cause of dropped samples;
//! - `trim.rs`: [`Profile::trim_machinery`](crate::Profile::trim_machinery),
//!   stacks that start at their site, outside the allocation machinery
//!   ([`Stacks`]);
//! - `named.rs`: [`Profile::from_named`](crate::Profile::from_named), for
//!   "stacks" that are chains of names (the pool's and the holders' views);
//! - `proto.rs`: the `Builder` of their string, function, location and
//!   mapping tables.
//!
//! This module reads snapshots and knows nothing of the profiler that took
//! them: the profiler calls into it, never the reverse.

mod heap;
mod named;
mod proto;
mod trim;

pub use named::NamedSample;
pub use trim::Stacks;
