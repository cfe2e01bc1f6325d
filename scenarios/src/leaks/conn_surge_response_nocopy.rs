//! `conn-surge-response-nocopy`: legacy barrier slots keep large response
//! fields that were linked into the output without a copy.

use std::time::Duration;

use rpc::{Pool, ServerConfig};

use super::conn_surge_request::{barriers, surge_load, surge_settings, SurgeSettings};
use crate::catalogue::{Info, Param, Side, Variant};
use crate::error::ScenarioError;
use crate::handler::{Behaviour, Reply, ScenarioHandler, ServerScenario};
use crate::params::Params;
use crate::registry::ServerSpec;
use crate::shape::LoadShape;

pub(crate) const NAME: &str = "conn-surge-response-nocopy";

pub(crate) const INFO: Info = Info {
    name: NAME,
    side: Side::Server,
    control: false,
    expected: "connection-surge-barriers",
    reproduces: "The guide's \"Increased Connection Count + Large Payload\", server response leak with a NoCopy \
        field: the same `barriers` bug as conn-surge-request (Netpoll < v0.2.5), on the write side. Surge calls \
        are small (`surge_payload`), but the handler answers each with a large msg (`response` bytes) it allocates \
        itself; with `nocopy_write` a binary over 4 KiB is linked into the output buffer as the handler's own \
        memory, and the writev's slot keeps referencing it after the connection is gone. Retained memory tracks \
        the peak number of connections and stays after the drain. (In this model a slot is rewritten whole at \
        each syscall, so a reply stays pinned when it was its connection's last syscall: the callers leave the \
        surge connections idle (`linger`) and the server's `idle_timeout` closes them.)",
    profile_shows: "The heap profile blames the business handler, not the framework: inuse_space grows under \
        `scenarios::handler::build_response` (<- `ScenarioHandler::echo`), the function that allocated the \
        response field (the guide: \"the memory will appear to be created within the business handler\"). The \
        pool profile stays flat: the memory is not pooled. `Barriers::stats().held_bytes` (linked caller memory \
        counted by length) rises at each surge and never falls.",
    fix: "Upgrade: Netpoll >= v0.2.5 (Kitex >= v0.3.3) clears every slot right after each writev. The fix variant \
        runs `Barriers::new(BarrierMode::Fixed)`, everything else equal; each response is freed once sent.",
    params: &[
        crate::catalogue::payload("512"),
        crate::catalogue::rps("50"),
        crate::catalogue::conns("2"),
        Param {
            name: "surge_payload",
            default: "1KiB",
            help: "msg bytes of each surge call (small; larger than payload, which is how the handler tells a \
                   surge call)",
        },
        Param { name: "surge_every", default: "700ms", help: "time between surges" },
        Param { name: "surge_first", default: "16", help: "connections of the first surge" },
        Param { name: "surge_step", default: "16", help: "connections each surge adds over the previous one" },
        Param { name: "response", default: "256KiB", help: "msg bytes the handler answers a surge call with" },
        Param {
            name: "idle_timeout",
            default: "300ms",
            help: "the server closes a connection idle this long (keep it below linger and surge_every, above \
                   the steady calls' interval)",
        },
        Param { name: "linger", default: "1s", help: "how long a surge connection stays open after its reply" },
    ],
};

/// Settings of the two response surge scenarios.
pub(crate) struct ResponseSurge {
    pub surge: SurgeSettings,
    pub idle_timeout: Duration,
    pub linger: Duration,
}

pub(crate) fn response_settings(p: &Params) -> Result<ResponseSurge, ScenarioError> {
    let surge = surge_settings(p)?;
    let idle_timeout = p.duration("idle_timeout")?;
    let linger = p.duration("linger")?;
    if idle_timeout.is_zero() {
        return Err(p.bad("idle_timeout", "must be above zero"));
    }
    if surge.rps > 0 && surge.conns > 0 {
        let interval = Duration::from_secs_f64(surge.conns as f64 / surge.rps as f64);
        if interval >= idle_timeout {
            return Err(p.bad(
                "idle_timeout",
                format!("the steady connections call every {interval:?}: the timeout must be longer than that"),
            ));
        }
    }
    Ok(ResponseSurge { surge, idle_timeout, linger })
}

pub(crate) fn response_server(s: &ResponseSurge, v: Variant, pool: Pool, nocopy_write: bool) -> ServerScenario {
    let config = ServerConfig {
        pool,
        barriers: barriers(v),
        nocopy_write,
        idle_timeout: Some(s.idle_timeout),
        ..ServerConfig::default()
    };
    let reply = Reply { large_from: s.surge.surge_payload, large_size: s.surge.response };
    ServerScenario { config, handler: ScenarioHandler::new(reply, Behaviour::Echo) }
}

pub(crate) struct Spec;

impl ServerSpec for Spec {
    fn check(&self, p: &Params) -> Result<(), ScenarioError> {
        response_settings(p).map(drop)
    }

    fn server(&self, v: Variant, p: &Params, pool: Pool) -> Result<ServerScenario, ScenarioError> {
        Ok(response_server(&response_settings(p)?, v, pool, true))
    }

    fn load(&self, _v: Variant, p: &Params) -> Result<LoadShape, ScenarioError> {
        let s = response_settings(p)?;
        Ok(surge_load(&s.surge, s.linger))
    }
}
