//! `bounded-cache`: a capped LRU of copied entries.

use rpc::{Pool, ServerConfig};

use crate::error::ScenarioError;
use crate::handler::{Behaviour, Reply, ScenarioHandler, ServerScenario};
use crate::params::{conns, payload, rps, Check, Param, Params, Vary};
use crate::scenario::{Info, Role, Scenario, Serves, Variant};
use crate::shape::LoadShape;
use crate::side::Side;

pub(crate) const NAME: &str = "bounded-cache";

pub(crate) const INFO: Info = Info {
    name: NAME,
    side: Side::Server,
    control: true,
    expected: "none",
    holder: "",
    guide: "A healthy control: the guide documents no leak here. Compare its \"Holding onto a Field of Request \
        Object Persistently\": this cache copies what it keeps and has a cap, so it stops growing.",
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
        payload("4KiB").varying(Vary::Choices(&["2KiB", "4KiB", "8KiB"])),
        rps("400"),
        conns("4"),
        Param {
            name: "capacity",
            default: "500",
            help: "entries the cache keeps (at the default rate it is full after about 1.3 s)",
            check: Check::Size { min: 1, max: usize::MAX, why: "must be at least 1" },
            vary: Vary::Fixed,
        },
        Param {
            name: "entry",
            default: "1KiB",
            help: "bytes of each request copied into the cache",
            check: Check::SIZE,
            vary: Vary::Fixed,
        },
    ],
    scenario: &BoundedCache,
};

/// The handler keeps copies in a capped LRU.
#[derive(Debug)]
pub(crate) struct BoundedCache;

impl Scenario for BoundedCache {
    fn role(&self) -> Role<'_> {
        Role::Server(self)
    }
}

impl Serves for BoundedCache {
    fn server(&self, _v: Variant, p: &Params, pool: Pool) -> Result<ServerScenario, ScenarioError> {
        let behaviour = Behaviour::bounded_cache(p.usize("entry")?, p.usize("capacity")?);
        Ok(ServerScenario {
            config: ServerConfig { pool, ..ServerConfig::default() },
            handler: ScenarioHandler::new(Reply::ECHO, behaviour),
        })
    }

    fn load(&self, _v: Variant, p: &Params) -> Result<LoadShape, ScenarioError> {
        Ok(p.common().steady())
    }
}
