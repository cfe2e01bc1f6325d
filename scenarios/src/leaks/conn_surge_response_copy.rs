//! `conn-surge-response-copy`: legacy barrier slots keep the pooled output
//! nodes large responses were serialized into.
//!
//! The reply's header goes into the output's tail node and its large body
//! into a node of its own, so the writev uses two slot positions and the
//! next readv overwrites only the first: the body's node stays pinned.

use rpc::Pool;

use super::conn_surge_request::surge_settings;
use super::conn_surge_response_nocopy::response_server;
use crate::catalogue::{Info, Side, Variant};
use crate::error::ScenarioError;
use crate::handler::ServerScenario;
use crate::params::Params;
use crate::registry::ServerSpec;
use crate::shape::LoadShape;

pub(crate) const NAME: &str = "conn-surge-response-copy";

pub(crate) const INFO: Info = Info {
    name: NAME,
    side: Side::Server,
    control: false,
    expected: "connection-surge-barriers",
    holder: "rpc::barrier::new_slot",
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
    params: super::conn_surge_response_nocopy::INFO.params,
};

pub(crate) struct Spec;

impl ServerSpec for Spec {
    fn check(&self, p: &Params) -> Result<(), ScenarioError> {
        surge_settings(p).map(drop)
    }

    fn server(&self, v: Variant, p: &Params, pool: Pool) -> Result<ServerScenario, ScenarioError> {
        Ok(response_server(&surge_settings(p)?, v, pool, false))
    }

    fn load(&self, v: Variant, p: &Params) -> Result<LoadShape, ScenarioError> {
        super::conn_surge_response_nocopy::Spec.load(v, p)
    }

    fn pool_config(&self, v: Variant, p: &Params) -> Result<rpc::PoolConfig, ScenarioError> {
        super::conn_surge_response_nocopy::Spec.pool_config(v, p)
    }
}
