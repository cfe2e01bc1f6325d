//! `warmup`: connections and the pool fill up in the first seconds, then
//! memory stays flat.

use std::time::Duration;

use rpc::Pool;

use crate::error::ScenarioError;
use crate::handler::ServerScenario;
use crate::params::{conns, payload, rps, Check, Param, Params, Vary};
use crate::scenario::{Info, Role, Scenario, Serves, Variant};
use crate::shape::{Burst, LoadShape};
use crate::side::Side;

pub(crate) const NAME: &str = "warmup";

pub(crate) const INFO: Info = Info {
    name: NAME,
    side: Side::Server,
    control: true,
    expected: "none",
    holder: "",
    guide: "A healthy control: the guide documents no leak here. What grows at first is what it describes as \
        normal: \"Netpoll creates an initial-sized buffer for each connection.\"",
    reproduces: "A healthy control: many connections with large calls from the start, plus extra connections \
        during the first `warmup` (a burst at time zero). Connection buffers and the pool's cache fill during the \
        first seconds (chunks allocated once, then cached and reused) and memory stays flat afterwards, even \
        when the extra connections close: a warm-up plateau, which a diagnosis must not call a leak.",
    profile_shows: "inuse_space rises steeply in the first seconds under `rpc::pool::RawChunk::alloc` <- \
        `Pool::grow` (input nodes, output nodes, span copies), then is flat. The pool profile moves bytes from \
        leased to cached when the early connections close; nothing is pinned.",
    fix: "Nothing to fix: both variants run the same code.",
    params: &[
        payload("16KiB").varying(Vary::Choices(&["4KiB", "8KiB", "16KiB"])),
        rps("320"),
        conns("32"),
        Param {
            name: "warmup",
            default: "1s",
            help: "how long the extra connections of the start last",
            check: Check::DURATION,
            vary: Vary::Fixed,
        },
        Param {
            name: "warmup_conns",
            default: "32",
            help: "extra connections during the warm-up",
            check: Check::SIZE,
            vary: Vary::Fixed,
        },
        Param {
            name: "warmup_rps",
            default: "640",
            help: "their total call rate",
            check: Check::WHOLE,
            vary: Vary::Fixed,
        },
    ],
    scenario: &Warmup,
};

/// Extra connections in the first seconds, then a steady load.
#[derive(Debug)]
pub(crate) struct Warmup;

impl Scenario for Warmup {
    fn role(&self) -> Role<'_> {
        Role::Server(self)
    }
}

impl Serves for Warmup {
    fn server(&self, _v: Variant, _p: &Params, pool: Pool) -> Result<ServerScenario, ScenarioError> {
        Ok(ServerScenario::echo(pool))
    }

    fn load(&self, _v: Variant, p: &Params) -> Result<LoadShape, ScenarioError> {
        let (warmup, conns) = (p.duration("warmup")?, p.usize("warmup_conns")?);
        let burst = (conns > 0 && !warmup.is_zero()).then_some(Burst {
            at: Duration::ZERO,
            length: warmup,
            conns,
            rps: p.u64("warmup_rps")?,
            every: None,
        });
        Ok(LoadShape { burst, ..p.common().steady() })
    }
}
