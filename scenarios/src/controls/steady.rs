//! `steady`: plain Echo at a constant load.

use rpc::Pool;

use crate::error::ScenarioError;
use crate::handler::ServerScenario;
use crate::params::{conns, payload, rps, Params, Vary};
use crate::scenario::{Info, Role, Scenario, Serves, Variant};
use crate::shape::LoadShape;
use crate::side::Side;

pub(crate) const NAME: &str = "steady";

pub(crate) const INFO: Info = Info {
    name: NAME,
    side: Side::Server,
    control: true,
    expected: "none",
    holder: "",
    guide: "A healthy control: the guide documents no leak here. Under a constant load the heap stays flat \
        once the connections have their buffers.",
    reproduces: "A healthy control: a plain Echo service under a constant load (`conns` connections, `rps` calls \
        per second, `payload` bytes). After the first calls every buffer a request needs comes from the pool's \
        cache and goes back to it, so memory is flat: what a diagnosis must not call a leak.",
    profile_shows: "inuse_space is flat: the pooled chunks of the connections' buffers \
        (`rpc::pool::RawChunk::alloc` under `InputBuffer::new` / `OutputBuffer::grow`) are allocated once, in the \
        first second, and reused; per-request copies (`Request::read_field_2`) are freed at the end of each call. \
        The pool profile shows no pinned chunk: every lease belongs to a live buffer.",
    fix: "Nothing to fix: both variants run the same code.",
    params: &[
        payload("4KiB").varying(Vary::Choices(&["1KiB", "4KiB", "16KiB"])),
        rps("200").varying(Vary::Range { lo: 100, hi: 400 }),
        conns("4").varying(Vary::Range { lo: 2, hi: 8 }),
    ],
    scenario: &Steady,
};

/// Plain Echo at a constant load.
#[derive(Debug)]
pub(crate) struct Steady;

impl Scenario for Steady {
    fn role(&self) -> Role<'_> {
        Role::Server(self)
    }
}

impl Serves for Steady {
    fn server(&self, _v: Variant, _p: &Params, pool: Pool) -> Result<ServerScenario, ScenarioError> {
        Ok(ServerScenario::echo(pool))
    }

    fn load(&self, _v: Variant, p: &Params) -> Result<LoadShape, ScenarioError> {
        Ok(p.common().steady())
    }
}
