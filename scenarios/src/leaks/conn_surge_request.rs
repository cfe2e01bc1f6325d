//! `conn-surge-request`: legacy barrier slots keep the large read buffers
//! of connections long closed.

use rpc::{Pool, PoolConfig};

use super::surge::{self, POOL_CACHE, SURGE_EVERY, SURGE_FIRST, SURGE_STEP};
use crate::error::ScenarioError;
use crate::handler::ServerScenario;
use crate::params::{conns, payload, rps, Check, Param, Params, Vary};
use crate::scenario::{Info, Role, Scenario, Serves, Variant};
use crate::shape::LoadShape;
use crate::side::Side;

pub(crate) const NAME: &str = "conn-surge-request";

pub(crate) const INFO: Info = Info {
    name: NAME,
    side: Side::Server,
    control: false,
    expected: "connection-surge-barriers",
    holder: "rpc::barrier::new_slot",
    guide: "Increased Connection Count + Large Payload Scenarios\n\
        In the past, Netpoll had a barriers\n\
        variable internally, which temporarily stored some buffers across connections. If the number of \
        connections increased, it would lead to its capacity expansion, and then there would be lingering \
        buffer references from historical connections, resulting in memory leaks.\n\
        This issue was fixed in Netpoll v0.2.5. Upgrade to Kitex >= v0.3.3 to resolve it.\n\
        Strictly speaking, even for small payloads, there may be some leakage cases, but they are not \
        significant (e.g., 10MB leakage for 10,000 connections, each with 1KB). Therefore, it is generally \
        difficult to detect and has no significant impact. In scenarios with large payloads and a large \
        number of connections created in the past, the memory leak becomes more noticeable.\n\
        \n\
        Server Request Leak: Large incoming request size",
    reproduces: "The guide's \"Increased Connection Count + Large Payload\", server request leak: Netpoll before \
        v0.2.5 kept a scratch record per poller event slot (`barriers`) with the buffers of its last readv, and \
        never cleared it; the slot table grows with the number of connections open at once. Here the peer opens \
        surges of new connections (`surge_first`, then `surge_step` more each `surge_every`), each sending one \
        call of `surge_payload` bytes. Each connection's input buffer grows to hold it, and the slot of a closed \
        connection keeps its last read node (as large as the request) until another connection lands on the same \
        index: retained memory tracks the peak number of connections, rises a step at each larger surge, and \
        stays after the drain.",
    profile_shows: "The heap profile blames the poller's read path: `rpc::pool::RawChunk::alloc` <- \
        `Pool::grow` <- `Pool::lease` <- `rpc::linkbuf::InputBuffer::new_node` <- `InputBuffer::book` <- \
        `InputBuffer::fill` (Netpoll's wait -> inputs -> book -> new node -> malloc). The pool profile shows \
        pinned chunks taken by `rpc::linkbuf::InputBuffer::book`, released by their buffer but held by barrier \
        slots (slot_refs > 0), no decoded field; `Barriers::stats().held_bytes` rises at each surge and never \
        falls.",
    fix: "Upgrade: Netpoll >= v0.2.5 (Kitex >= v0.3.3) clears every slot right after each readv/writev. The fix \
        variant runs `Barriers::new(BarrierMode::Fixed)`; memory rises during a surge and goes back to the pool \
        when its connections close (the pool keeps at most `pool_cache` per size class, as Go's GC empties \
        sync.Pool).",
    params: &[
        payload("1KiB").varying(Vary::Choices(&["512", "1KiB", "2KiB"])),
        rps("50").varying(Vary::Range { lo: 30, hi: 80 }),
        conns("2"),
        Param {
            name: "surge_payload",
            default: "256KiB",
            help: "msg bytes of each surge call (the large request)",
            check: Check::SIZE,
            // Smaller surges bring the fix's own slot-table growth near
            // the diagnosis's floor.
            vary: Vary::Fixed,
        },
        SURGE_EVERY,
        SURGE_FIRST,
        SURGE_STEP,
        Param {
            name: "response",
            default: "64",
            help: "msg bytes the handler answers a surge call with (small: the request side is what leaks)",
            check: Check::SIZE,
            vary: Vary::Fixed,
        },
        POOL_CACHE,
    ],
    scenario: &ConnSurgeRequest,
};

/// Surges of large requests; legacy barrier slots keep their read nodes.
#[derive(Debug)]
pub(crate) struct ConnSurgeRequest;

impl Scenario for ConnSurgeRequest {
    fn check(&self, p: &Params) -> Result<(), ScenarioError> {
        surge::check(p)
    }

    fn role(&self) -> Role<'_> {
        Role::Server(self)
    }
}

impl Serves for ConnSurgeRequest {
    fn server(&self, v: Variant, p: &Params, pool: Pool) -> Result<ServerScenario, ScenarioError> {
        surge::server(v, p, pool, false)
    }

    fn load(&self, v: Variant, p: &Params) -> Result<LoadShape, ScenarioError> {
        surge::load(v, p)
    }

    fn pool_config(&self, _v: Variant, p: &Params) -> Result<PoolConfig, ScenarioError> {
        surge::pool_config(p)
    }
}
