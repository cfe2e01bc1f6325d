//! `conn-surge-response-nocopy`: legacy barrier slots keep large response
//! fields that were linked into the output without a copy.
//!
//! Netpoll's legacy slot kept its references until a later syscall
//! overwrote *the same positions*: a readv overwrites only position 0, so the
//! response slices a writev put at positions 1.. stay, long after the
//! connection closed (`rpc::SlotGuard::io` behaves the same in legacy mode).

use rpc::{Pool, PoolConfig};

use super::surge;
use crate::error::ScenarioError;
use crate::handler::ServerScenario;
use crate::params::Params;
use crate::scenario::{Info, Role, Scenario, Serves, Variant};
use crate::shape::LoadShape;
use crate::side::Side;

pub(crate) const NAME: &str = "conn-surge-response-nocopy";

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
        Server Response Leak: If a field supports NoCopy serialization, the memory will appear to be \
        created within the business handler.",
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
    params: surge::RESPONSE_PARAMS,
    scenario: &ConnSurgeResponseNocopy,
};

/// Surges of small calls answered with large responses linked in without a
/// copy; legacy barrier slots keep them.
#[derive(Debug)]
pub(crate) struct ConnSurgeResponseNocopy;

impl Scenario for ConnSurgeResponseNocopy {
    fn check(&self, p: &Params) -> Result<(), ScenarioError> {
        surge::check(p)
    }

    fn role(&self) -> Role<'_> {
        Role::Server(self)
    }
}

impl Serves for ConnSurgeResponseNocopy {
    fn server(&self, v: Variant, p: &Params, pool: Pool) -> Result<ServerScenario, ScenarioError> {
        surge::server(v, p, pool, true)
    }

    fn load(&self, v: Variant, p: &Params) -> Result<LoadShape, ScenarioError> {
        surge::load(v, p)
    }

    fn pool_config(&self, _v: Variant, p: &Params) -> Result<PoolConfig, ScenarioError> {
        surge::pool_config(p)
    }
}
