//! `steady`: plain Echo at a constant load.

use rpc::{Pool, ServerConfig};

use crate::catalogue::{conns, payload, rps, Info, Side, Variant};
use crate::error::ScenarioError;
use crate::handler::{Behaviour, Reply, ScenarioHandler, ServerScenario};
use crate::params::Params;
use crate::registry::ServerSpec;
use crate::shape::{self, LoadShape};

pub(crate) const NAME: &str = "steady";

pub(crate) const INFO: Info = Info {
    name: NAME,
    side: Side::Server,
    control: true,
    expected: "none",
    holder: "",
    reproduces: "A healthy control: a plain Echo service under a constant load (`conns` connections, `rps` calls \
        per second, `payload` bytes). After the first calls every buffer a request needs comes from the pool's \
        cache and goes back to it, so memory is flat: what a diagnosis must not call a leak.",
    profile_shows: "inuse_space is flat: the pooled chunks of the connections' buffers \
        (`rpc::pool::RawChunk::alloc` under `InputBuffer::new` / `OutputBuffer::grow`) are allocated once, in the \
        first second, and reused; per-request copies (`Request::read_field_2`) are freed at the end of each call. \
        The pool profile shows no pinned chunk: every lease belongs to a live buffer.",
    fix: "Nothing to fix: both variants run the same code.",
    params: &[payload("4KiB"), rps("200"), conns("4")],
};

pub(crate) struct Settings {
    pub payload: usize,
    pub rps: u64,
    pub conns: usize,
}

pub(crate) fn settings(p: &Params) -> Result<Settings, ScenarioError> {
    Ok(Settings { payload: p.usize("payload")?, rps: p.u64("rps")?, conns: p.usize("conns")? })
}

/// A plain Echo service on `pool`.
pub(crate) fn echo_server(pool: Pool) -> ServerScenario {
    ServerScenario {
        config: ServerConfig { pool, ..ServerConfig::default() },
        handler: ScenarioHandler::new(Reply::ECHO, Behaviour::Echo),
    }
}

pub(crate) struct Spec;

impl ServerSpec for Spec {
    fn check(&self, p: &Params) -> Result<(), ScenarioError> {
        settings(p).map(drop)
    }

    fn server(&self, _v: Variant, p: &Params, pool: Pool) -> Result<ServerScenario, ScenarioError> {
        settings(p)?;
        Ok(echo_server(pool))
    }

    fn load(&self, _v: Variant, p: &Params) -> Result<LoadShape, ScenarioError> {
        let s = settings(p)?;
        Ok(shape::steady(s.conns, s.rps, s.payload))
    }
}
