//! `burst`: a load spike in the middle of a steady load.

use std::time::Duration;

use rpc::Pool;

use crate::error::ScenarioError;
use crate::handler::ServerScenario;
use crate::params::{conns, payload, rps, Check, Param, Params, Vary};
use crate::scenario::{Info, Role, Scenario, Serves, Variant};
use crate::shape::{self, LoadShape};
use crate::side::Side;

pub(crate) const NAME: &str = "burst";

pub(crate) const INFO: Info = Info {
    name: NAME,
    side: Side::Server,
    control: true,
    expected: "none",
    holder: "",
    guide: "A healthy control: the guide documents no leak here. The connections of the spike each get a \
        buffer (\"Netpoll creates an initial-sized buffer for each connection.\") and give it back when they close.",
    reproduces: "A healthy control: a steady Echo load with a spike in the middle (`burst_conns` extra connections \
        at `burst_rps` calls per second, from `burst_at` for `burst_length`). Memory rises during the spike; when \
        the extra connections close their buffers go back to the pool (which keeps them cached), so memory \
        returns or plateaus and does not grow afterwards: what a diagnosis must not call a leak.",
    profile_shows: "inuse_space steps up during the burst under `rpc::pool::RawChunk::alloc` <- `Pool::grow` \
        (the extra connections' buffers) and then stays level; the pool profile shows those bytes move from \
        leased to cached when the burst ends, with nothing pinned.",
    fix: "Nothing to fix: both variants run the same code.",
    params: &[
        payload("4KiB").varying(Vary::Choices(&["1KiB", "4KiB", "8KiB"])),
        rps("200"),
        conns("4"),
        Param {
            name: "burst_at",
            default: "2s",
            help: "when the spike starts, from the start of the load",
            check: Check::DURATION,
            vary: Vary::Fixed,
        },
        Param {
            name: "burst_length",
            default: "1s",
            help: "how long it lasts",
            check: Check::DURATION,
            vary: Vary::Fixed,
        },
        Param {
            name: "burst_conns",
            default: "32",
            help: "extra connections during the spike",
            check: Check::SIZE,
            vary: Vary::Fixed,
        },
        Param {
            name: "burst_rps",
            default: "1600",
            help: "their total call rate",
            check: Check::WHOLE,
            vary: Vary::Fixed,
        },
    ],
    scenario: &Burst,
};

/// A load spike in the middle of a steady load.
#[derive(Debug)]
pub(crate) struct Burst;

/// The spike.
fn spike(p: &Params) -> Result<shape::Burst, ScenarioError> {
    Ok(shape::Burst {
        at: p.duration("burst_at")?,
        length: p.duration("burst_length")?,
        conns: p.usize("burst_conns")?,
        rps: p.u64("burst_rps")?,
        every: None,
    })
}

impl Scenario for Burst {
    fn check(&self, p: &Params) -> Result<(), ScenarioError> {
        let burst = spike(p)?;
        if burst.length.is_zero() || burst.conns == 0 {
            return Err(p.bad("burst_length", "a burst needs a length and at least one connection"));
        }
        if burst.length > Duration::from_secs(3600) {
            return Err(p.bad("burst_length", "at most an hour"));
        }
        Ok(())
    }

    fn role(&self) -> Role<'_> {
        Role::Server(self)
    }
}

impl Serves for Burst {
    fn server(&self, _v: Variant, _p: &Params, pool: Pool) -> Result<ServerScenario, ScenarioError> {
        Ok(ServerScenario::echo(pool))
    }

    fn load(&self, _v: Variant, p: &Params) -> Result<LoadShape, ScenarioError> {
        Ok(LoadShape { burst: Some(spike(p)?), ..p.common().steady() })
    }
}
