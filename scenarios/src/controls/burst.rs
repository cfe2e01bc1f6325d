//! `burst`: a load spike in the middle of a steady load.

use std::time::Duration;

use rpc::Pool;

use crate::catalogue::{conns, payload, rps, Info, Param, Side, Variant};
use crate::error::ScenarioError;
use crate::handler::ServerScenario;
use crate::params::Params;
use crate::registry::ServerSpec;
use crate::shape::{self, Burst, LoadShape};

pub(crate) const NAME: &str = "burst";

pub(crate) const INFO: Info = Info {
    name: NAME,
    side: Side::Server,
    control: true,
    expected: "none",
    holder: "",
    reproduces: "A healthy control: a steady Echo load with a spike in the middle (`burst_conns` extra connections \
        at `burst_rps` calls per second, from `burst_at` for `burst_length`). Memory rises during the spike; when \
        the extra connections close their buffers go back to the pool (which keeps them cached), so memory \
        returns or plateaus and does not grow afterwards: what a diagnosis must not call a leak.",
    profile_shows: "inuse_space steps up during the burst under `rpc::pool::RawChunk::alloc` <- `Pool::grow` \
        (the extra connections' buffers) and then stays level; the pool profile shows those bytes move from \
        leased to cached when the burst ends, with nothing pinned.",
    fix: "Nothing to fix: both variants run the same code.",
    params: &[
        payload("4KiB"),
        rps("200"),
        conns("4"),
        Param { name: "burst_at", default: "2s", help: "when the spike starts, from the start of the load" },
        Param { name: "burst_length", default: "1s", help: "how long it lasts" },
        Param { name: "burst_conns", default: "32", help: "extra connections during the spike" },
        Param { name: "burst_rps", default: "1600", help: "their total call rate" },
    ],
};

pub(crate) struct Settings {
    payload: usize,
    rps: u64,
    conns: usize,
    burst: Burst,
}

pub(crate) fn settings(p: &Params) -> Result<Settings, ScenarioError> {
    let burst = Burst {
        at: p.duration("burst_at")?,
        length: p.duration("burst_length")?,
        conns: p.usize("burst_conns")?,
        rps: p.u64("burst_rps")?,
    };
    if burst.length.is_zero() || burst.conns == 0 {
        return Err(p.bad("burst_length", "a burst needs a length and at least one connection"));
    }
    if burst.length > Duration::from_secs(3600) {
        return Err(p.bad("burst_length", "at most an hour"));
    }
    Ok(Settings { payload: p.usize("payload")?, rps: p.u64("rps")?, conns: p.usize("conns")?, burst })
}

pub(crate) struct Spec;

impl ServerSpec for Spec {
    fn check(&self, p: &Params) -> Result<(), ScenarioError> {
        settings(p).map(drop)
    }

    fn server(&self, _v: Variant, p: &Params, pool: Pool) -> Result<ServerScenario, ScenarioError> {
        settings(p)?;
        Ok(super::steady::echo_server(pool))
    }

    fn load(&self, _v: Variant, p: &Params) -> Result<LoadShape, ScenarioError> {
        let s = settings(p)?;
        Ok(LoadShape { burst: Some(s.burst), ..shape::steady(s.conns, s.rps, s.payload) })
    }
}
