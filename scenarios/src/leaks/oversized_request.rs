//! `oversized-request`: rare abnormally large requests among small ones.

use rpc::codec::Limits;
use rpc::{Pool, PoolConfig, ServerConfig};

use crate::catalogue::{conns, payload, rps, Info, Param, Side, Variant};
use crate::error::ScenarioError;
use crate::handler::{Behaviour, Reply, ScenarioHandler, ServerScenario};
use crate::params::Params;
use crate::registry::{capped, capped_pool, ServerSpec};
use crate::shape::{self, LoadShape, Oversized, OVERSIZED_REPLY};

pub(crate) const NAME: &str = "oversized-request";

pub(crate) const INFO: Info = Info {
    name: NAME,
    side: Side::Server,
    control: false,
    expected: "oversized-request",
    holder: "rpc::pool::|rpc::linkbuf::InputBuffer",
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
        Param { name: "every", default: "200", help: "one steady call in this many is oversized" },
        Param { name: "size", default: "6MiB", help: "msg bytes of an oversized call" },
        Param { name: "max_frame", default: "1MiB", help: "fix: largest message the server accepts" },
        Param { name: "pool_cache", default: "1MiB", help: "fix: bytes the pool caches per size class" },
    ],
};

pub(crate) struct Settings {
    payload: usize,
    rps: u64,
    conns: usize,
    every: u64,
    size: usize,
    max_frame: usize,
    pool_cache: usize,
}

pub(crate) fn settings(p: &Params) -> Result<Settings, ScenarioError> {
    let s = Settings {
        payload: p.usize("payload")?,
        rps: p.u64("rps")?,
        conns: p.usize("conns")?,
        every: p.u64("every")?,
        size: p.usize("size")?,
        max_frame: p.usize("max_frame")?,
        pool_cache: p.usize("pool_cache")?,
    };
    if s.every == 0 {
        return Err(p.bad("every", "must be at least 1"));
    }
    if s.size <= s.payload.max(OVERSIZED_REPLY) {
        return Err(p.bad("size", format!("must be larger than payload ({})", s.payload)));
    }
    if s.max_frame <= s.payload + 256 {
        return Err(p.bad("max_frame", "must leave room for the steady calls (payload plus headers)"));
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
        // Oversized calls get a short answer, so that only the read side
        // shows in the profiles.
        let reply = Reply { large_from: s.size, large_size: OVERSIZED_REPLY };
        let handler = ScenarioHandler::new(reply, Behaviour::Echo);
        let config = match v {
            Variant::Leak => ServerConfig { pool, ..ServerConfig::default() },
            Variant::Fix => {
                let pool = capped_pool(pool, s.pool_cache);
                let limits = Limits { max_frame: s.max_frame, ..Limits::default() };
                ServerConfig { pool, limits, ..ServerConfig::default() }
            }
        };
        Ok(ServerScenario { config, handler })
    }

    fn load(&self, _v: Variant, p: &Params) -> Result<LoadShape, ScenarioError> {
        let s = settings(p)?;
        let oversized = Oversized { every: s.every, size: s.size };
        Ok(LoadShape { oversized: Some(oversized), ..shape::steady(s.conns, s.rps, s.payload) })
    }

    fn pool_config(&self, v: Variant, p: &Params) -> Result<PoolConfig, ScenarioError> {
        let s = settings(p)?;
        Ok(match v {
            Variant::Leak => PoolConfig::default(),
            Variant::Fix => capped(s.pool_cache),
        })
    }
}
