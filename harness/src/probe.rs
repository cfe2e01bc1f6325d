//! What the process under test knows about its own memory and work: the
//! numbers behind `/metrics` and each line of `metrics.jsonl`.

use std::sync::Arc;

use rpc::{Barriers, Pool, ServerStats};
use serde::{Deserialize, Serialize};

use crate::alloc::GlobalProfiler;

/// The live sources of the process's figures.
#[derive(Debug)]
pub struct Probe {
    /// The global allocator.
    pub profiler: &'static GlobalProfiler,
    /// The pool the RPC side uses.
    pub pool: Pool,
    /// Server counters, on the server side.
    pub server: Option<Arc<ServerStats>>,
    /// The slot table, on the server side.
    pub barriers: Option<Barriers>,
    /// Calls made, on the client side.
    pub calls: Option<Arc<std::sync::atomic::AtomicU64>>,
}

/// One reading of every figure.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// Resident set size.
    pub rss_bytes: u64,
    /// Bytes live through the global allocator (exact).
    pub inuse_bytes: u64,
    /// Requests answered (server) or calls made (client).
    pub requests: u64,
    /// Connections open now.
    pub open_conns: u64,
    /// Connections opened since start.
    pub opened_conns: u64,
    /// RPC clients created since start.
    pub clients_created: u64,
    /// RPC clients closed since start.
    pub clients_closed: u64,
    /// Bytes in leased pool chunks.
    pub pool_leased_bytes: u64,
    /// Bytes cached by the pool.
    pub pool_cached_bytes: u64,
    /// Slots in the barrier table.
    pub barrier_slots: u64,
    /// Bytes barrier slots reference.
    pub barrier_held_bytes: u64,
    /// Rebalance hooks registered.
    pub lb_hooks: u64,
    /// Connections closed for a bad message.
    pub protocol_errors: u64,
    /// Connections closed by the idle timeout.
    pub idle_closed: u64,
    /// Bytes of the largest request received (or refused).
    pub largest_request_bytes: u64,
    /// Requests of 1 MiB or more.
    pub large_requests: u64,
    /// Who sent the largest request.
    pub largest_peer: Option<String>,
    /// Connections refused at `--max-conns`.
    #[serde(default)]
    pub refused_conns: u64,
    /// Connections closed because buffered input passed `--max-input-bytes`.
    #[serde(default)]
    pub budget_closes: u64,
    /// Connections closed because a write stalled past `--write-timeout`.
    #[serde(default)]
    pub write_timeouts: u64,
    /// Connections closed because unsent output passed `--max-output-bytes`.
    #[serde(default)]
    pub output_overflows: u64,
    /// Connections closed because a message did not arrive whole within
    /// `--frame-timeout`.
    #[serde(default)]
    pub frame_timeouts: u64,
    /// Heap profile samples the profiler dropped (a fixed table was full).
    #[serde(default)]
    pub profiler_dropped_samples: u64,
    /// Blocks allocated through the global allocator since start, counted
    /// on every allocation (exact, not sampled); 0 from a build without
    /// the counter.
    #[serde(default)]
    pub allocations: u64,
    /// Bytes allocated through the global allocator since start (exact).
    #[serde(default)]
    pub allocated_bytes: u64,
    /// Of `allocations`, those the admin listener made building the
    /// profiles and metrics it served, HTTP included: the cost of being
    /// watched.
    #[serde(default)]
    pub scrape_allocations: u64,
    /// Of `allocated_bytes`, the admin listener's.
    #[serde(default)]
    pub scrape_allocated_bytes: u64,
}

impl Probe {
    /// Reads every figure now.
    pub fn read(&self) -> Figures {
        let pool = self.pool.stats();
        let server = self.server.as_ref().map(|s| s.counts()).unwrap_or_default();
        let barriers = self.barriers.as_ref().map(|b| b.stats()).unwrap_or_default();
        let clients = rpc::client_counts();
        let lb = rpc::lbcache::registry_stats();
        let calls = self.calls.as_ref().map_or(0, |c| c.load(std::sync::atomic::Ordering::Relaxed));
        let stats = self.profiler.stats();
        Figures {
            rss_bytes: rss_bytes(),
            inuse_bytes: stats.inuse_bytes(),
            requests: server.requests + calls,
            open_conns: server.open_conns,
            opened_conns: server.opened_conns,
            clients_created: clients.created,
            clients_closed: clients.closed,
            pool_leased_bytes: pool.leased_bytes as u64,
            pool_cached_bytes: pool.cached_bytes as u64,
            barrier_slots: barriers.slots as u64,
            barrier_held_bytes: barriers.held_bytes as u64,
            lb_hooks: lb.hooks as u64,
            protocol_errors: server.protocol_errors,
            idle_closed: server.idle_closed,
            largest_request_bytes: server.largest_request,
            large_requests: server.large_requests,
            largest_peer: server.largest_peer.map(|p| p.to_string()),
            refused_conns: server.refused_conns,
            budget_closes: server.budget_closes,
            write_timeouts: server.write_timeouts,
            output_overflows: server.output_overflows,
            frame_timeouts: server.frame_timeouts,
            profiler_dropped_samples: stats.dropped_samples,
            allocations: stats.allocations,
            allocated_bytes: stats.allocated_bytes,
            // Known to the admin listener, which fills them in.
            scrape_allocations: 0,
            scrape_allocated_bytes: 0,
        }
    }
}

/// Resident set size from `/proc/self/statm` (0 where there is none).
pub fn rss_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else { return 0 };
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * page.max(0) as u64
}
