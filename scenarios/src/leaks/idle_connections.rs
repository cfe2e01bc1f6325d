//! `idle-connections`: the upstream keeps opening connections and never
//! closes them.

use std::time::Duration;

use rpc::{Pool, ServerConfig};

use crate::catalogue::{conns, payload, rps, Info, Param, Side, Variant};
use crate::error::ScenarioError;
use crate::handler::{Behaviour, Reply, ScenarioHandler, ServerScenario};
use crate::params::Params;
use crate::registry::ServerSpec;
use crate::shape::{self, Idle, LoadShape};

pub(crate) const NAME: &str = "idle-connections";

pub(crate) const INFO: Info = Info {
    name: NAME,
    side: Side::Server,
    control: false,
    expected: "idle-connection-buffers",
    holder: "tokio task spawned in rpc::server",
    reproduces: "The guide's \"Excessive Creation of Idle Connections\": Netpoll creates an initial-sized buffer \
        for each connection, so if the upstream keeps creating connections it may look as if Netpoll occupies all \
        the memory. The peer opens `idle_rate` connections per second and never closes them (optionally after one \
        call); each holds its 8 KiB input node, plus a 4 KiB output tail node once it has answered a call. Memory \
        grows with the number of open connections, not with requests: the request rate stays low and flat.",
    profile_shows: "The heap profile shows many small chunks under `rpc::pool::RawChunk::alloc` <- `Pool::grow` \
        <- `Pool::lease` <- `rpc::linkbuf::InputBuffer::new` (each accept), and `OutputBuffer::grow` after a first \
        call. The pool profile shows them leased by live buffers (not pinned: released is false): 8 KiB chunks \
        taken by `InputBuffer::book`, 4 KiB ones by `OutputBuffer::malloc`, as many as open connections; the \
        server's open-connections gauge rises in step.",
    fix: "Find and fix the upstream that opens connections without reusing or closing them; on the server, close \
        idle connections. The fix variant sets `idle_timeout` (the server closes a connection that sends nothing \
        for that long, giving its buffers back) and, if `initial_input` is lowered, a smaller first input node.",
    params: &[
        payload("1KiB"),
        rps("50"),
        conns("2"),
        Param { name: "idle_rate", default: "150", help: "new idle connections per second" },
        Param { name: "first_call", default: "true", help: "each idle connection sends one call before going idle" },
        Param { name: "idle_timeout", default: "1s", help: "fix: close connections idle this long" },
        Param {
            name: "initial_input",
            default: "8KiB",
            help: "first input node of every connection (Netpoll: 8KiB); lower it in the fix to shrink what an \
                   idle connection costs",
        },
    ],
};

pub(crate) struct Settings {
    payload: usize,
    rps: u64,
    conns: usize,
    idle_rate: f64,
    first_call: bool,
    idle_timeout: Duration,
    initial_input: usize,
}

pub(crate) fn settings(p: &Params) -> Result<Settings, ScenarioError> {
    let s = Settings {
        payload: p.usize("payload")?,
        rps: p.u64("rps")?,
        conns: p.usize("conns")?,
        idle_rate: p.f64("idle_rate")?,
        first_call: p.bool("first_call")?,
        idle_timeout: p.duration("idle_timeout")?,
        initial_input: p.usize("initial_input")?,
    };
    if s.idle_rate <= 0.0 {
        return Err(p.bad("idle_rate", "must be above zero"));
    }
    if s.idle_timeout.is_zero() {
        return Err(p.bad("idle_timeout", "must be above zero"));
    }
    if s.initial_input == 0 || s.initial_input > rpc::MALLOC_MAX {
        return Err(p.bad("initial_input", "must be between 1 byte and 8MiB"));
    }
    if s.rps > 0 && s.conns > 0 && Duration::from_secs_f64(s.conns as f64 / s.rps as f64) >= s.idle_timeout {
        return Err(p.bad("idle_timeout", "must be longer than the interval between steady calls on a connection"));
    }
    Ok(s)
}

pub(crate) struct Spec;

impl ServerSpec for Spec {
    fn check(&self, p: &Params) -> Result<(), ScenarioError> {
        settings(p).map(drop)
    }

    fn server(&self, v: Variant, p: &Params, pool: Pool) -> Result<ServerScenario, ScenarioError> {
        let s = settings(p)?;
        let idle_timeout = (v == Variant::Fix).then_some(s.idle_timeout);
        let config = ServerConfig { pool, idle_timeout, initial_input: s.initial_input, ..ServerConfig::default() };
        Ok(ServerScenario { config, handler: ScenarioHandler::new(Reply::ECHO, Behaviour::Echo) })
    }

    fn load(&self, _v: Variant, p: &Params) -> Result<LoadShape, ScenarioError> {
        let s = settings(p)?;
        let idle = Idle { per_second: s.idle_rate, first_call: s.first_call };
        Ok(LoadShape { idle: Some(idle), ..shape::steady(s.conns, s.rps, s.payload) })
    }
}
