//! `warmup`: connections and the pool fill up in the first seconds, then
//! memory stays flat.

use std::time::Duration;

use rpc::Pool;

use crate::catalogue::{conns, payload, rps, Info, Param, Side, Variant};
use crate::error::ScenarioError;
use crate::handler::ServerScenario;
use crate::params::Params;
use crate::registry::ServerSpec;
use crate::shape::{self, Burst, LoadShape};

pub(crate) const NAME: &str = "warmup";

pub(crate) const INFO: Info = Info {
    name: NAME,
    side: Side::Server,
    control: true,
    expected: "none",
    holder: "",
    reproduces: "A healthy control: many connections with large calls from the start, plus extra connections \
        during the first `warmup` (a burst at time zero). Connection buffers and the pool's cache fill during the \
        first seconds (chunks allocated once, then cached and reused) and memory stays flat afterwards, even \
        when the extra connections close: a warm-up plateau, which a diagnosis must not call a leak.",
    profile_shows: "inuse_space rises steeply in the first seconds under `rpc::pool::RawChunk::alloc` <- \
        `Pool::grow` (input nodes, output nodes, span copies), then is flat. The pool profile moves bytes from \
        leased to cached when the early connections close; nothing is pinned.",
    fix: "Nothing to fix: both variants run the same code.",
    params: &[
        payload("16KiB"),
        rps("320"),
        conns("32"),
        Param { name: "warmup", default: "1s", help: "how long the extra connections of the start last" },
        Param { name: "warmup_conns", default: "32", help: "extra connections during the warm-up" },
        Param { name: "warmup_rps", default: "640", help: "their total call rate" },
    ],
};

pub(crate) struct Settings {
    payload: usize,
    rps: u64,
    conns: usize,
    warmup: Duration,
    warmup_conns: usize,
    warmup_rps: u64,
}

pub(crate) fn settings(p: &Params) -> Result<Settings, ScenarioError> {
    Ok(Settings {
        payload: p.usize("payload")?,
        rps: p.u64("rps")?,
        conns: p.usize("conns")?,
        warmup: p.duration("warmup")?,
        warmup_conns: p.usize("warmup_conns")?,
        warmup_rps: p.u64("warmup_rps")?,
    })
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
        let burst = (s.warmup_conns > 0 && !s.warmup.is_zero()).then_some(Burst {
            at: Duration::ZERO,
            length: s.warmup,
            conns: s.warmup_conns,
            rps: s.warmup_rps,
        });
        Ok(LoadShape { burst, ..shape::steady(s.conns, s.rps, s.payload) })
    }
}
