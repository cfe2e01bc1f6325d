//! `conn-surge-response-nocopy`: legacy barrier slots keep large response
//! fields that were linked into the output without a copy.
//!
//! Netpoll's legacy slot kept its references until a later syscall
//! overwrote *the same positions*: a readv overwrites only position 0, so the
//! response slices a writev put at positions 1.. stay, long after the
//! connection closed (`rpc::SlotGuard::io` behaves the same in legacy mode).

use rpc::{Pool, PoolConfig, ServerConfig};

use super::conn_surge_request::{barriers, surge_load, surge_settings, SurgeSettings};
use crate::catalogue::{Info, Param, Side, Variant};
use crate::error::ScenarioError;
use crate::handler::{Behaviour, Reply, ScenarioHandler, ServerScenario};
use crate::params::Params;
use crate::registry::{capped, capped_pool, ServerSpec};
use crate::shape::LoadShape;

pub(crate) const NAME: &str = "conn-surge-response-nocopy";

pub(crate) const INFO: Info = Info {
    name: NAME,
    side: Side::Server,
    control: false,
    expected: "connection-surge-barriers",
    holder: "rpc::barrier::new_slot",
    reproduces: "The guide's \"Increased Connection Count + Large Payload\", server response leak with a NoCopy \
        field: the same `barriers` bug as conn-surge-request (Netpoll < v0.2.5), on the write side. Surge calls \
        are small (`surge_payload`), but the handler answers each with a large msg (`response` bytes) it allocates \
        itself; with `nocopy_write` a binary over 4 KiB is linked into the output buffer as the handler's own \
        memory. The writev puts it in the slot after the message header, and the reads that follow only \
        overwrite the slot's first position, so the slot keeps referencing the response after the connection \
        is gone. Retained memory tracks the peak number of connections and stays after the drain.",
    profile_shows: "The heap profile blames the business handler, not the framework: inuse_space grows under \
        `scenarios::handler::build_response` (<- `ScenarioHandler::echo`), the function that allocated the \
        response field (the guide: \"the memory will appear to be created within the business handler\"). The \
        pool profile stays flat: the memory is not pooled. `Barriers::stats().held_bytes` (linked caller memory \
        counted by length) rises at each surge and never falls.",
    fix: "Upgrade: Netpoll >= v0.2.5 (Kitex >= v0.3.3) clears every slot right after each writev. The fix variant \
        runs `Barriers::new(BarrierMode::Fixed)`, everything else equal; each response is freed once sent.",
    params: &[
        crate::catalogue::payload("512"),
        crate::catalogue::rps("50"),
        crate::catalogue::conns("2"),
        Param {
            name: "surge_payload",
            default: "1KiB",
            help: "msg bytes of each surge call (small; larger than payload, which is how the handler tells a \
                   surge call)",
        },
        Param { name: "surge_every", default: "700ms", help: "time between surges" },
        Param { name: "surge_first", default: "16", help: "connections of the first surge" },
        Param { name: "surge_step", default: "16", help: "connections each surge adds over the previous one" },
        Param { name: "response", default: "256KiB", help: "msg bytes the handler answers a surge call with" },
        super::conn_surge_request::POOL_CACHE,
    ],
};

pub(crate) fn response_server(s: &SurgeSettings, v: Variant, pool: Pool, nocopy_write: bool) -> ServerScenario {
    let pool = capped_pool(pool, s.pool_cache);
    let config = ServerConfig { pool, barriers: barriers(v), nocopy_write, ..ServerConfig::default() };
    let reply = Reply { large_from: s.surge_payload, large_size: s.response };
    ServerScenario { config, handler: ScenarioHandler::new(reply, Behaviour::Echo) }
}

pub(crate) struct Spec;

impl ServerSpec for Spec {
    fn check(&self, p: &Params) -> Result<(), ScenarioError> {
        surge_settings(p).map(drop)
    }

    fn server(&self, v: Variant, p: &Params, pool: Pool) -> Result<ServerScenario, ScenarioError> {
        Ok(response_server(&surge_settings(p)?, v, pool, true))
    }

    fn load(&self, _v: Variant, p: &Params) -> Result<LoadShape, ScenarioError> {
        Ok(surge_load(&surge_settings(p)?))
    }

    fn pool_config(&self, _v: Variant, p: &Params) -> Result<PoolConfig, ScenarioError> {
        Ok(capped(surge_settings(p)?.pool_cache))
    }
}
