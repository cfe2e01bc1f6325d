//! `bounded-cache`: a capped LRU of copied entries.

use rpc::{Pool, ServerConfig};

use crate::catalogue::{conns, payload, rps, Info, Param, Side, Variant};
use crate::error::ScenarioError;
use crate::handler::{Behaviour, Reply, ScenarioHandler, ServerScenario};
use crate::params::Params;
use crate::registry::ServerSpec;
use crate::shape::{self, LoadShape};

pub(crate) const NAME: &str = "bounded-cache";

pub(crate) const INFO: Info = Info {
    name: NAME,
    side: Side::Server,
    control: true,
    expected: "none",
    holder: "",
    reproduces: "A healthy control: the handler keeps a copy of the first `entry` bytes of each request in a \
        least-recently-used cache of `capacity` entries. Memory grows while the cache fills, then plateaus: every \
        new entry evicts the oldest. A cache that grows is not a leak when it is bounded and holds its own copies.",
    profile_shows: "inuse_space rises under the cache insert (`bytes::Bytes::copy_from_slice` from \
        `ScenarioHandler::echo`, and the map's own growth) for the first `capacity` requests, then stays flat; \
        nothing grows under `Request::read_field_2`, because the entries are copies, and the pool profile shows \
        no pinned chunk.",
    fix: "Nothing to fix: both variants run the same code. Compare request-field-hold, whose cache is unbounded \
        and keeps slices of the request.",
    params: &[
        payload("4KiB"),
        rps("400"),
        conns("4"),
        Param {
            name: "capacity",
            default: "500",
            help: "entries the cache keeps (at the default rate it is full after about 1.3 s)",
        },
        Param { name: "entry", default: "1KiB", help: "bytes of each request copied into the cache" },
    ],
};

pub(crate) struct Settings {
    payload: usize,
    rps: u64,
    conns: usize,
    capacity: usize,
    entry: usize,
}

pub(crate) fn settings(p: &Params) -> Result<Settings, ScenarioError> {
    let s = Settings {
        payload: p.usize("payload")?,
        rps: p.u64("rps")?,
        conns: p.usize("conns")?,
        capacity: p.usize("capacity")?,
        entry: p.usize("entry")?,
    };
    if s.capacity == 0 {
        return Err(p.bad("capacity", "must be at least 1"));
    }
    Ok(s)
}

pub(crate) struct Spec;

impl ServerSpec for Spec {
    fn check(&self, p: &Params) -> Result<(), ScenarioError> {
        settings(p).map(drop)
    }

    fn server(&self, _v: Variant, p: &Params, pool: Pool) -> Result<ServerScenario, ScenarioError> {
        let s = settings(p)?;
        Ok(ServerScenario {
            config: ServerConfig { pool, ..ServerConfig::default() },
            handler: ScenarioHandler::new(Reply::ECHO, Behaviour::bounded_cache(s.entry, s.capacity)),
        })
    }

    fn load(&self, _v: Variant, p: &Params) -> Result<LoadShape, ScenarioError> {
        let s = settings(p)?;
        Ok(shape::steady(s.conns, s.rps, s.payload))
    }
}
