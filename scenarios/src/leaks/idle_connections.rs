//! `idle-connections`: the upstream keeps opening connections and never
//! closes them.

use std::time::Duration;

use rpc::{Pool, ServerConfig};

use crate::error::ScenarioError;
use crate::handler::{Behaviour, Reply, ScenarioHandler, ServerScenario};
use crate::params::{conns, payload, rps, Check, Param, Params, Vary};
use crate::scenario::{Info, Role, Scenario, Serves, Variant};
use crate::shape::{Idle, LoadShape};
use crate::side::Side;

pub(crate) const NAME: &str = "idle-connections";

pub(crate) const INFO: Info = Info {
    name: NAME,
    side: Side::Server,
    control: false,
    expected: "idle-connection-buffers",
    holder: "tokio task spawned in rpc::server",
    guide: "Excessive Creation of Idle Connections\n\
        Netpoll creates an initial-sized buffer for each connection. If the upstream continuously creates \
        connections, it may appear as if Netpoll is occupying all the downstream memory.",
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
        payload("1KiB").varying(Vary::Choices(&["512", "1KiB", "2KiB"])),
        rps("50").varying(Vary::Range { lo: 30, hi: 80 }),
        conns("2"),
        Param {
            name: "idle_rate",
            default: "150",
            help: "new idle connections per second",
            check: Check::Positive { why: "must be above zero" },
            vary: Vary::Range { lo: 100, hi: 200 },
        },
        Param {
            name: "first_call",
            default: "true",
            help: "each idle connection sends one call before going idle",
            check: Check::Switch,
            vary: Vary::Fixed,
        },
        Param {
            name: "idle_timeout",
            default: "1s",
            help: "fix: close connections idle this long",
            check: Check::ABOVE_ZERO,
            vary: Vary::Fixed,
        },
        Param {
            name: "initial_input",
            default: "8KiB",
            help: "first input node of every connection (Netpoll: 8KiB); lower it in the fix to shrink what an \
                   idle connection costs",
            check: Check::Size { min: 1, max: rpc::MALLOC_MAX, why: "must be between 1 byte and 8MiB" },
            vary: Vary::Fixed,
        },
    ],
    scenario: &IdleConnections,
};

/// The peer opens connections and leaves them idle; the fix closes idle
/// connections.
#[derive(Debug)]
pub(crate) struct IdleConnections;

impl Scenario for IdleConnections {
    fn check(&self, p: &Params) -> Result<(), ScenarioError> {
        let (common, idle_timeout) = (p.common(), p.duration("idle_timeout")?);
        // An interval too long for a `Duration` is longer than any timeout.
        if common.rps > 0
            && common.conns > 0
            && Duration::try_from_secs_f64(common.conns as f64 / common.rps as f64)
                .map_or(true, |gap| gap >= idle_timeout)
        {
            return Err(p.bad("idle_timeout", "must be longer than the interval between steady calls on a connection"));
        }
        Ok(())
    }

    fn role(&self) -> Role<'_> {
        Role::Server(self)
    }

    /// An idle connection left open keeps its first input node
    /// (`initial_input`), and after a first call the output node its reply
    /// was encoded in (the pool's class of the reply, 4 KiB at least), one
    /// per connection opened at `idle_rate`.
    fn trickle(&self, p: &Params) -> Option<f64> {
        let reply = p.usize("payload").ok()?.saturating_add(crate::scenario::MESSAGE_OVERHEAD);
        let output =
            if p.bool("first_call").ok()? { 1usize << rpc::class_of(reply.max(rpc::MIN_OUTPUT_NODE)) } else { 0 };
        Some(p.f64("idle_rate").ok()? * p.usize("initial_input").ok()?.saturating_add(output) as f64)
    }
}

impl Serves for IdleConnections {
    fn server(&self, v: Variant, p: &Params, pool: Pool) -> Result<ServerScenario, ScenarioError> {
        let idle_timeout = (v == Variant::Fix).then_some(p.duration("idle_timeout")?);
        let initial_input = p.usize("initial_input")?;
        let config = ServerConfig { pool, idle_timeout, initial_input, ..ServerConfig::default() };
        Ok(ServerScenario { config, handler: ScenarioHandler::new(Reply::ECHO, Behaviour::Echo) })
    }

    fn load(&self, v: Variant, p: &Params) -> Result<LoadShape, ScenarioError> {
        Ok(LoadShape { idle: Some(idle(v, p)?), ..p.common().steady() })
    }

    fn mixable(&self) -> bool {
        true
    }

    /// The fix's idle timeout (the leak's server has none).
    fn mix_server(&self, v: Variant, p: &Params, s: &mut ServerScenario) -> Result<(), ScenarioError> {
        s.config.idle_timeout = (v == Variant::Fix).then_some(p.duration("idle_timeout")?);
        Ok(())
    }

    /// The idle connections on top of the other load.
    fn mix_load(&self, v: Variant, p: &Params, shape: &mut LoadShape) -> Result<(), ScenarioError> {
        shape.idle = Some(idle(v, p)?);
        Ok(())
    }
}

/// The idle connections: in the leak variant, with `onset` the upstream
/// closes every connection it opens before the onset after `idle_timeout`
/// (as the fix's server would), and with `leak_rate` N it leaves one in N
/// open after it.
fn idle(v: Variant, p: &Params) -> Result<Idle, ScenarioError> {
    let (leave_from, leave_every) = p.peer_gate(v == Variant::Leak);
    Ok(Idle {
        per_second: p.f64("idle_rate")?,
        first_call: p.bool("first_call")?,
        leave_from,
        leave_every,
        close_after: p.duration("idle_timeout")?,
    })
}
