//! `conn-surge-response-copy`: legacy barrier slots keep the pooled output
//! nodes large responses were serialized into.
//!
//! The reply's header goes into the output's tail node and its large body
//! into a node of its own, so the writev uses two slot positions and the
//! next readv overwrites only the first: the body's node stays pinned.

use rpc::{Pool, PoolConfig};

use super::surge;
use crate::error::ScenarioError;
use crate::handler::ServerScenario;
use crate::params::Params;
use crate::scenario::{Info, Role, Scenario, Serves, Variant};
use crate::shape::LoadShape;
use crate::side::Side;

pub(crate) const NAME: &str = "conn-surge-response-copy";

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
        Server Response Leak: If a field does not support NoCopy serialization, the memory will appear to \
        be created during the serialization process.",
    reproduces: "The guide's \"Increased Connection Count + Large Payload\", server response leak without NoCopy: \
        the same `barriers` bug (Netpoll < v0.2.5) on the write side, with the large response field copied \
        (serialized) into pooled output nodes. Surge calls are small; the handler answers each with `response` \
        bytes, serialized into an output node of its own after the node holding the message header. The reads \
        that follow only overwrite the slot's first position, so the slot keeps the response's output node after \
        the connection is gone: retained memory tracks the peak number of connections and stays after the \
        drain.",
    profile_shows: "The heap profile blames serialization: `rpc::pool::RawChunk::alloc` <- `Pool::grow` <- \
        `Pool::lease` <- `rpc::linkbuf::OutputBuffer::grow` <- `OutputBuffer::malloc` <- `Response::write` / \
        `encode_reply` (Netpoll's marshal -> malloc -> growth -> new node -> pool malloc). The pool profile shows \
        pinned chunks taken by `rpc::linkbuf::OutputBuffer::malloc`, held by barrier slots (slot_refs > 0).",
    fix: "Upgrade: Netpoll >= v0.2.5 (Kitex >= v0.3.3) clears every slot right after each writev. The fix variant \
        runs `Barriers::new(BarrierMode::Fixed)`, everything else equal; output nodes go back to the pool once \
        sent (which keeps at most `pool_cache` per size class).",
    params: surge::RESPONSE_PARAMS,
    scenario: &ConnSurgeResponseCopy,
};

/// Surges of small calls answered with large responses serialized into
/// pooled output nodes; legacy barrier slots keep them.
#[derive(Debug)]
pub(crate) struct ConnSurgeResponseCopy;

impl Scenario for ConnSurgeResponseCopy {
    fn check(&self, p: &Params) -> Result<(), ScenarioError> {
        surge::check(p)
    }

    fn role(&self) -> Role<'_> {
        Role::Server(self)
    }
}

impl Serves for ConnSurgeResponseCopy {
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
