//! Process-wide counters of the balancer cache, for metrics
//! ([`registry_stats`](super::registry_stats) reads them). Each is updated
//! where the thing it counts is created or dropped; `Relaxed` is enough, as
//! no other memory is published through them.

use std::sync::atomic::{AtomicU64, AtomicUsize};

/// Live factories: the registry's, plus unshared ones still alive.
pub(super) static FACTORIES: AtomicUsize = AtomicUsize::new(0);
/// Cached balancers (targets) over all factories.
pub(super) static BALANCERS: AtomicUsize = AtomicUsize::new(0);
/// Registered hook pairs over all factories.
pub(super) static HOOKS: AtomicUsize = AtomicUsize::new(0);
/// Running ticker tasks.
pub(super) static TICKERS: AtomicUsize = AtomicUsize::new(0);
/// Target refreshes since the process started.
pub(super) static REFRESHES: AtomicU64 = AtomicU64::new(0);
/// Instance lists formatted into event queues since the process started.
pub(super) static EVENTS_FORMATTED: AtomicU64 = AtomicU64::new(0);
/// Heap bytes held by the text of all live event queues.
pub(super) static QUEUED_BYTES: AtomicUsize = AtomicUsize::new(0);
