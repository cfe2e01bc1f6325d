//! What the three connection-surge scenarios share: surges of new
//! connections, barrier slots in legacy or fixed mode, a server that answers
//! a surge call with `response` bytes, and a pool capped at `pool_cache`.

use rpc::{BarrierMode, Barriers, Pool, PoolConfig, ServerConfig};

use crate::error::ScenarioError;
use crate::handler::{capped, capped_pool, Behaviour, Reply, ScenarioHandler, ServerScenario};
use crate::params::{conns, payload, rps, Check, Param, Params, Vary};
use crate::scenario::Variant;
use crate::shape::{LoadShape, Surge};

/// `surge_every`: time between surges.
pub(crate) const SURGE_EVERY: Param = Param {
    name: "surge_every",
    default: "700ms",
    help: "time between surges",
    check: Check::ABOVE_ZERO,
    vary: Vary::Fixed,
};

/// `surge_first`: connections of the first surge.
pub(crate) const SURGE_FIRST: Param = Param {
    name: "surge_first",
    default: "16",
    help: "connections of the first surge",
    check: Check::SIZE,
    vary: Vary::Fixed,
};

/// `surge_step`: connections each surge adds.
pub(crate) const SURGE_STEP: Param = Param {
    name: "surge_step",
    default: "16",
    help: "connections each surge adds over the previous one",
    check: Check::SIZE,
    vary: Vary::Fixed,
};

/// `pool_cache`: what the pool may cache per size class, in both variants.
pub(crate) const POOL_CACHE: Param = Param {
    name: "pool_cache",
    default: "1MiB",
    help: "bytes the pool caches per size class, in both variants: Go's sync.Pool gives its cache back over GC \
           cycles, so after a surge the fixed version's memory returns; a Rust pool needs a cap to do the same",
    check: Check::SIZE,
    vary: Vary::Fixed,
};

/// The parameters of the two response scenarios: small surge calls, large
/// answers.
pub(crate) const RESPONSE_PARAMS: &[Param] = &[
    payload("512").varying(Vary::Choices(&["256", "512"])),
    rps("50").varying(Vary::Range { lo: 30, hi: 80 }),
    conns("2"),
    Param {
        name: "surge_payload",
        default: "1KiB",
        help: "msg bytes of each surge call (small; larger than payload, which is how the handler tells a \
               surge call)",
        check: Check::SIZE,
        vary: Vary::Fixed,
    },
    SURGE_EVERY,
    SURGE_FIRST,
    SURGE_STEP,
    Param {
        name: "response",
        default: "256KiB",
        help: "msg bytes the handler answers a surge call with",
        check: Check::SIZE,
        vary: Vary::Choices(&["256KiB", "512KiB"]),
    },
    POOL_CACHE,
];

/// The handler tells a surge call by its size.
pub(crate) fn check(p: &Params) -> Result<(), ScenarioError> {
    let payload = p.common().payload;
    if p.usize("surge_payload")? <= payload {
        return Err(p.bad(
            "surge_payload",
            format!("must be larger than payload ({payload}): the handler tells a surge call by its size"),
        ));
    }
    Ok(())
}

/// The barrier slots of `v`: legacy (the leak) or fixed.
fn barriers(v: Variant) -> Barriers {
    Barriers::new(match v {
        Variant::Leak => BarrierMode::Legacy,
        Variant::Fix => BarrierMode::Fixed,
    })
}

/// An Echo server that answers surge calls with `response` bytes, on a pool
/// capped at `pool_cache`, with `v`'s barrier slots.
pub(crate) fn server(v: Variant, p: &Params, pool: Pool, nocopy_write: bool) -> Result<ServerScenario, ScenarioError> {
    let pool = capped_pool(pool, p.usize("pool_cache")?);
    let config = ServerConfig { pool, barriers: barriers(v), nocopy_write, ..ServerConfig::default() };
    let reply = Reply { large_from: p.usize("surge_payload")?, large_size: p.usize("response")? };
    Ok(ServerScenario { config, handler: ScenarioHandler::new(reply, Behaviour::Echo) })
}

/// The steady load plus the surges; in the leak variant, with `onset`
/// the surges begin at the onset, and with `leak_rate` N they grow one in
/// N (the slot table, and what legacy slots keep, grow with the peak of
/// connections: a surge no larger than the peak so far adds nothing).
pub(crate) fn load(v: Variant, p: &Params) -> Result<LoadShape, ScenarioError> {
    let (from, grow_every) = p.peer_gate(v == Variant::Leak);
    let surge = Surge {
        from,
        grow_every,
        every: p.duration("surge_every")?,
        first: p.usize("surge_first")?,
        step: p.usize("surge_step")?,
        payload: p.usize("surge_payload")?,
        response: p.usize("response")?,
    };
    Ok(LoadShape { surge: Some(surge), ..p.common().steady() })
}

/// The pool capped at `pool_cache`.
pub(crate) fn pool_config(p: &Params) -> Result<PoolConfig, ScenarioError> {
    Ok(capped(p.usize("pool_cache")?))
}
