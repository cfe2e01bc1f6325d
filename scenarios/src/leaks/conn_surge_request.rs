//! `conn-surge-request`: legacy barrier slots keep the large read buffers
//! of connections long closed.

use std::time::Duration;

use rpc::{BarrierMode, Barriers, Pool, PoolConfig, ServerConfig};

use crate::catalogue::{Info, Param, Side, Variant};
use crate::error::ScenarioError;
use crate::handler::{Behaviour, Reply, ScenarioHandler, ServerScenario};
use crate::params::Params;
use crate::registry::{capped, capped_pool, ServerSpec};
use crate::shape::{LoadShape, Surge};

pub(crate) const NAME: &str = "conn-surge-request";

pub(crate) const INFO: Info = Info {
    name: NAME,
    side: Side::Server,
    control: false,
    expected: "connection-surge-barriers",
    holder: "rpc::barrier::new_slot",
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
        crate::catalogue::payload("1KiB"),
        crate::catalogue::rps("50"),
        crate::catalogue::conns("2"),
        Param { name: "surge_payload", default: "256KiB", help: "msg bytes of each surge call (the large request)" },
        Param { name: "surge_every", default: "700ms", help: "time between surges" },
        Param { name: "surge_first", default: "16", help: "connections of the first surge" },
        Param { name: "surge_step", default: "16", help: "connections each surge adds over the previous one" },
        Param {
            name: "response",
            default: "64",
            help: "msg bytes the handler answers a surge call with (small: the request side is what leaks)",
        },
        POOL_CACHE,
    ],
};

/// `pool_cache`: what the pool may cache per size class, in both variants.
pub(crate) const POOL_CACHE: Param = Param {
    name: "pool_cache",
    default: "1MiB",
    help: "bytes the pool caches per size class, in both variants: Go's sync.Pool gives its cache back over GC \
           cycles, so after a surge the fixed version's memory returns; a Rust pool needs a cap to do the same",
};

/// Settings shared by the three surge scenarios.
pub(crate) struct SurgeSettings {
    pub payload: usize,
    pub rps: u64,
    pub conns: usize,
    pub surge_payload: usize,
    pub every: Duration,
    pub first: usize,
    pub step: usize,
    pub response: usize,
    pub pool_cache: usize,
}

pub(crate) fn surge_settings(p: &Params) -> Result<SurgeSettings, ScenarioError> {
    let s = SurgeSettings {
        payload: p.usize("payload")?,
        rps: p.u64("rps")?,
        conns: p.usize("conns")?,
        surge_payload: p.usize("surge_payload")?,
        every: p.duration("surge_every")?,
        first: p.usize("surge_first")?,
        step: p.usize("surge_step")?,
        response: p.usize("response")?,
        pool_cache: p.usize("pool_cache")?,
    };
    if s.surge_payload <= s.payload {
        return Err(p.bad(
            "surge_payload",
            format!("must be larger than payload ({}): the handler tells a surge call by its size", s.payload),
        ));
    }
    if s.every.is_zero() {
        return Err(p.bad("surge_every", "must be above zero"));
    }
    Ok(s)
}

pub(crate) fn barriers(v: Variant) -> Barriers {
    Barriers::new(match v {
        Variant::Leak => BarrierMode::Legacy,
        Variant::Fix => BarrierMode::Fixed,
    })
}

pub(crate) fn surge_load(s: &SurgeSettings) -> LoadShape {
    LoadShape {
        surge: Some(Surge {
            every: s.every,
            first: s.first,
            step: s.step,
            payload: s.surge_payload,
            response: s.response,
        }),
        ..crate::shape::steady(s.conns, s.rps, s.payload)
    }
}

pub(crate) struct Spec;

impl ServerSpec for Spec {
    fn check(&self, p: &Params) -> Result<(), ScenarioError> {
        surge_settings(p).map(drop)
    }

    fn server(&self, v: Variant, p: &Params, pool: Pool) -> Result<ServerScenario, ScenarioError> {
        let s = surge_settings(p)?;
        let config =
            ServerConfig { pool: capped_pool(pool, s.pool_cache), barriers: barriers(v), ..ServerConfig::default() };
        let reply = Reply { large_from: s.surge_payload, large_size: s.response };
        Ok(ServerScenario { config, handler: ScenarioHandler::new(reply, Behaviour::Echo) })
    }

    fn load(&self, _v: Variant, p: &Params) -> Result<LoadShape, ScenarioError> {
        Ok(surge_load(&surge_settings(p)?))
    }

    fn pool_config(&self, _v: Variant, p: &Params) -> Result<PoolConfig, ScenarioError> {
        Ok(capped(surge_settings(p)?.pool_cache))
    }
}
