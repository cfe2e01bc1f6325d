//! `oversized-request`: rare abnormally large requests among small ones.

use rpc::codec::Limits;
use rpc::{Pool, PoolConfig, ServerConfig};

use crate::error::ScenarioError;
use crate::handler::{capped, capped_pool, Behaviour, Reply, ScenarioHandler, ServerScenario};
use crate::params::{conns, payload, rps, Check, Param, Params, Vary};
use crate::scenario::{Info, Role, Scenario, Serves, Variant};
use crate::shape::{LoadShape, Oversized, OVERSIZED_REPLY};
use crate::side::Side;

pub(crate) const NAME: &str = "oversized-request";

pub(crate) const INFO: Info = Info {
    name: NAME,
    side: Side::Server,
    control: false,
    expected: "oversized-request",
    // Three holders, each a part of the guide's case: the pool's cache
    // (what stays after the drain), the connection that keeps its
    // high-water node (its input buffer, reached through the connection's
    // task when the node list is inline in it), and the task decoding an
    // abnormal request still in flight ("these abnormally sized requests
    // themselves require a large amount of memory").
    holder: "rpc::pool::|rpc::linkbuf::InputBuffer|tokio task spawned in rpc::server::",
    guide: "Large Request with Abnormal Size\n\
        First, make sure that github.com/cloudwego/netpoll\n\
        is >= v0.2.5 or Kitex >= v0.3.3. If not, it could be the bug mentioned earlier, caused by a sudden \
        increase in the number of connections.\n\
        Strictly speaking, this case is not considered a memory leak. However, Netpoll will cache (sync.Pool\n\
        ) some memory for these abnormally sized requests, resulting in increased memory usage. Even \
        without caching, these abnormally sized requests themselves require a large amount of memory and \
        pose a risk.\n\
        Typical profile:\n\
        Common scenarios:\n\
        - Abnormally large field in the upstream.\n\
        - Upstream or upstream’s upstream transmitting a very large value. For example, some businesses \
        like to transmit large volumes of debug info, or they use transmission to fulfill requirements not \
        defined in the IDL.\n\
        Resolution: Identify the source of abnormally sized requests through packet capture and ask the \
        other party to modify such usage.",
    reproduces: "The guide's \"Large Request with Abnormal Size\": among small steady calls, one in `every` carries \
        an abnormally large msg (`size`, e.g. debug info or data the IDL does not define). Reading it grows that \
        connection's input buffer node by node up to the message's size; the connection keeps that high-water \
        mark (later reads take nodes that large), and when the nodes are released the pool caches them (up to \
        64 MiB per size class, as Go's sync.Pool keeps them until GC). Strictly not a leak, but memory climbs \
        with each abnormal request and stays high, and such requests are a risk in themselves.",
    profile_shows: "The heap profile blames the read path: `rpc::pool::RawChunk::alloc` <- `Pool::grow` <- \
        `Pool::lease` <- `rpc::linkbuf::InputBuffer::new_node` <- `InputBuffer::book` <- `InputBuffer::fill` \
        (Netpoll's wait -> inputs -> book -> new node -> malloc -> pool get), in chunks of the largest classes \
        (up to 8 MiB), plus `InputBuffer::next_span` for the copy of the whole message. The pool profile shows \
        cached bytes in the large classes and a few large leased nodes; the server's largest-request gauge \
        names the size and the peer that sent it.",
    fix: "Find the source of the abnormal requests (packet capture; the server's largest-request gauge names the \
        peer) and have it stop sending them; refuse them meanwhile. The fix variant sets `Limits { max_frame }` so \
        a message above `max_frame` is refused as soon as its length prefix arrives (the connection is closed with \
        a logged reason; the peer reconnects), and caps what the pool caches per size class (`pool_cache`).",
    params: &[
        payload("1KiB"),
        rps("200"),
        conns("4"),
        Param {
            name: "every",
            default: "200",
            help: "one steady call in this many is oversized",
            check: Check::Whole { min: 1, why: "must be at least 1" },
            vary: Vary::Range { lo: 100, hi: 250 },
        },
        Param {
            name: "size",
            default: "6MiB",
            help: "msg bytes of an oversized call",
            check: Check::SIZE,
            vary: Vary::Choices(&["4MiB", "6MiB", "7MiB"]),
        },
        Param {
            name: "max_frame",
            default: "1MiB",
            help: "fix: largest message the server accepts",
            check: Check::SIZE,
            vary: Vary::Fixed,
        },
        Param {
            name: "pool_cache",
            default: "1MiB",
            help: "fix: bytes the pool caches per size class",
            check: Check::SIZE,
            vary: Vary::Fixed,
        },
    ],
    scenario: &OversizedRequest,
};

/// Rare oversized calls among small ones; the fix refuses them and caps the
/// pool's cache.
#[derive(Debug)]
pub(crate) struct OversizedRequest;

impl Scenario for OversizedRequest {
    fn check(&self, p: &Params) -> Result<(), ScenarioError> {
        let payload = p.common().payload;
        if p.usize("size")? <= payload.max(OVERSIZED_REPLY) {
            return Err(p.bad("size", format!("must be larger than payload ({payload})")));
        }
        if p.usize("max_frame")? <= payload + 256 {
            return Err(p.bad("max_frame", "must leave room for the steady calls (payload plus headers)"));
        }
        Ok(())
    }

    fn role(&self) -> Role<'_> {
        Role::Server(self)
    }
}

impl Serves for OversizedRequest {
    fn server(&self, v: Variant, p: &Params, pool: Pool) -> Result<ServerScenario, ScenarioError> {
        // Oversized calls get a short answer, so that only the read side
        // shows in the profiles.
        let reply = Reply { large_from: p.usize("size")?, large_size: OVERSIZED_REPLY };
        let handler = ScenarioHandler::new(reply, Behaviour::Echo);
        let config = match v {
            Variant::Leak => ServerConfig { pool, ..ServerConfig::default() },
            Variant::Fix => {
                let pool = capped_pool(pool, p.usize("pool_cache")?);
                let limits = Limits { max_frame: p.usize("max_frame")?, ..Limits::default() };
                ServerConfig { pool, limits, ..ServerConfig::default() }
            }
        };
        let mut s = ServerScenario { config, handler };
        // A handler leak mixed in does not cache the oversized calls.
        s.parts().hold_below = p.usize("size")?;
        Ok(s)
    }

    fn load(&self, v: Variant, p: &Params) -> Result<LoadShape, ScenarioError> {
        Ok(LoadShape { oversized: Some(oversized(v, p)?), ..p.common().steady() })
    }

    fn mixable(&self) -> bool {
        true
    }

    /// Oversized calls get a short answer and are not cached by the other
    /// mechanism's handler; the fix refuses them and caps the pool.
    fn mix_server(&self, v: Variant, p: &Params, s: &mut ServerScenario) -> Result<(), ScenarioError> {
        let size = p.usize("size")?;
        if s.config.limits.max_frame <= size {
            return Err(p.bad("size", "the other scenario already refuses messages this large"));
        }
        if v == Variant::Fix {
            s.config.pool = capped_pool(s.config.pool.clone(), p.usize("pool_cache")?);
            s.config.limits.max_frame = p.usize("max_frame")?;
        }
        let parts = s.parts();
        parts.reply = Reply { large_from: size, large_size: OVERSIZED_REPLY };
        parts.hold_below = size;
        Ok(())
    }

    fn mix_load(&self, v: Variant, p: &Params, shape: &mut LoadShape) -> Result<(), ScenarioError> {
        if p.usize("max_frame")? <= shape.payload + 256 {
            return Err(p.bad("max_frame", "must leave room for the other scenario's calls"));
        }
        shape.oversized = Some(oversized(v, p)?);
        Ok(())
    }

    fn pool_config(&self, v: Variant, p: &Params) -> Result<PoolConfig, ScenarioError> {
        Ok(match v {
            Variant::Leak => PoolConfig::default(),
            Variant::Fix => capped(p.usize("pool_cache")?),
        })
    }
}

/// The oversized calls: in the leak variant, with `onset` none before the
/// onset, and with `leak_rate` N one in N of those the default sends (one
/// call in `every * N`).
fn oversized(v: Variant, p: &Params) -> Result<Oversized, ScenarioError> {
    let (from, one_in) = p.peer_gate(v == Variant::Leak);
    Ok(Oversized { every: p.u64("every")?.saturating_mul(one_in), size: p.usize("size")?, from })
}
