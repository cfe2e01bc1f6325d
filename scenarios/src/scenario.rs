//! What a scenario is: its catalogue entry ([`Info`]), its parameters
//! (declared as data in `Info::params`), the checks across them, and what it
//! runs: a server with its peer's load ([`Serves`]) or a client ([`Calls`]).
//!
//! Each scenario is one type implementing [`Scenario`], in its own file, and
//! its `Info` points to it; the registry lists the `Info`s.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use rpc::{Pool, PoolConfig};

use crate::caller::Caller;
use crate::error::ScenarioError;
use crate::handler::ServerScenario;
use crate::params::{Param, Params};
use crate::shape::LoadShape;
use crate::side::Side;

/// A scenario's code. Each value of its parameters has passed its own
/// [`Check`](crate::params::Check) before any of these runs.
pub(crate) trait Scenario: Sync + fmt::Debug {
    /// Checks the values together (`surge_payload` above `payload`, ...).
    fn check(&self, _p: &Params) -> Result<(), ScenarioError> {
        Ok(())
    }

    /// What it runs; must agree with `Info::side`.
    fn role(&self) -> Role<'_>;

    /// The IDL field whose memory the leak variant keeps, for the leaks
    /// that hold a field.
    fn held_field(&self) -> Option<HeldField> {
        None
    }

    /// What the leak variant keeps per second at `leak_rate=1`, for the
    /// leaks that keep a little at a time (a held field per call, a buffer
    /// per idle connection), so that one call or connection in N leaking is
    /// a steady trickle; `None` for those that leak in steps (a surge, a
    /// duplicate client, an oversized request keep MiB at once).
    fn trickle(&self, _p: &Params) -> Option<f64> {
        None
    }
}

/// What a framed message takes beyond its field: the frame and message
/// headers, the method name, the other fields (a generous bound).
pub(crate) const MESSAGE_OVERHEAD: usize = 256;

/// What one call that holds its `payload`-byte field keeps: the field's
/// bytes, or with `decode=nocopy` the input node the slice pins (the pool's
/// size class of the message, at least a first node), times the calls per
/// second (`rps`).
pub(crate) fn held_field_trickle(p: &Params) -> Option<f64> {
    let field = p.usize("payload").ok()?;
    let per_call = if p.string("decode").ok()? == "nocopy" {
        (1usize << rpc::class_of((field + MESSAGE_OVERHEAD).max(rpc::DEFAULT_INPUT_NODE))) as f64
    } else {
        field as f64
    };
    Some(p.f64("rps").ok()? * per_call)
}

/// A field of `rpc/idl/echo.thrift` that a leak keeps: the guide reads it
/// from the decoder frame that names its tag (`read_field_2` is tag 2 of
/// `Request`, `msg`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldField {
    /// The struct: `Request` or `Response`.
    pub message: &'static str,
    /// The field's tag.
    pub tag: i16,
    /// The field's name.
    pub name: &'static str,
}

impl fmt::Display for HeldField {
    /// `Request field 2 (msg)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} field {} ({})", self.message, self.tag, self.name)
    }
}

/// What a scenario runs.
pub(crate) enum Role<'a> {
    /// The process under test serves; the peer loads it.
    Server(&'a dyn Serves),
    /// The process under test calls a plain Echo server.
    Client(&'a dyn Calls),
}

/// A server scenario: the server, its pool policy, and its peer's load.
pub(crate) trait Serves: Sync {
    /// The server settings and handler, on `pool`.
    fn server(&self, v: Variant, p: &Params, pool: Pool) -> Result<ServerScenario, ScenarioError>;

    /// The peer's load.
    fn load(&self, v: Variant, p: &Params) -> Result<LoadShape, ScenarioError>;

    /// The pool policy the scenario needs.
    fn pool_config(&self, _v: Variant, _p: &Params) -> Result<PoolConfig, ScenarioError> {
        Ok(PoolConfig::default())
    }

    /// Whether its mechanism composes with another one (`mix=`): it then
    /// implements `mix_server` and `mix_load`.
    fn mixable(&self) -> bool {
        false
    }

    /// Adds its mechanism, in `v`, to another server scenario's process:
    /// its handler behaviour, its server settings. `p` are its own
    /// parameters (defaults, with the run's onset and leak rate).
    fn mix_server(&self, _v: Variant, _p: &Params, _s: &mut ServerScenario) -> Result<(), ScenarioError> {
        Ok(())
    }

    /// Adds what its mechanism needs from the peer to another scenario's
    /// load.
    fn mix_load(&self, _v: Variant, _p: &Params, _shape: &mut LoadShape) -> Result<(), ScenarioError> {
        Ok(())
    }
}

/// A client scenario: how it calls its peer.
pub(crate) trait Calls: Sync {
    /// The call each caller repeats (and the client to close when the
    /// calls stop), calling `peer` with buffers from `pool`.
    fn caller(&self, v: Variant, p: &Params, peer: SocketAddr, pool: Pool) -> Result<Caller, ScenarioError>;
}

/// The leaking code, or the same code with the guide's remedy applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Variant {
    /// The documented leak.
    #[default]
    Leak,
    /// The guide's remedy: must be diagnosed `none`.
    Fix,
}

impl Variant {
    /// Both variants, leak first.
    pub const ALL: [Variant; 2] = [Variant::Leak, Variant::Fix];
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Variant::Leak => "leak",
            Variant::Fix => "fix",
        })
    }
}

impl FromStr for Variant {
    type Err = ScenarioError;
    fn from_str(s: &str) -> Result<Variant, ScenarioError> {
        match s {
            "leak" => Ok(Variant::Leak),
            "fix" => Ok(Variant::Fix),
            other => Err(ScenarioError::UnknownVariant(other.to_owned())),
        }
    }
}

/// A scenario of the catalogue.
#[derive(Clone, Copy, Debug)]
pub struct Info {
    /// The catalogue name (`request-field-hold`, ...).
    pub name: &'static str,
    /// Which side the process under test is.
    pub side: Side,
    /// A healthy control (`steady`, `bounded-cache`, `warmup`, `burst`):
    /// one behaviour, either variant accepted.
    pub control: bool,
    /// The verdict kind of the leak variant (`none` for controls).
    pub expected: &'static str,
    /// A part of the name of the link that holds the leaked memory, as the
    /// holder scan names it (`ScenarioHandler::remember` for the handler's
    /// cache); a right holder chain contains it. Empty for controls.
    pub holder: &'static str,
    /// The guide's own paragraph(s) on this case, quoted verbatim from the
    /// Memory Leak Self-Check Guide, line breaks included (its inline code
    /// sits on lines of its own); excerpts that are apart in the guide are
    /// separated by a blank line. A control has a sentence saying that it
    /// is healthy, quoting what the guide says of normal growth if anything.
    pub guide: &'static str,
    /// What it reproduces, in the guide's words.
    pub reproduces: &'static str,
    /// Where the growth shows in a heap profile (frame names) and in the
    /// pool profile.
    pub profile_shows: &'static str,
    /// The guide's remedy and what the fix variant changes.
    pub fix: &'static str,
    /// Its parameters.
    pub params: &'static [Param],
    /// Its code.
    pub(crate) scenario: &'static dyn Scenario,
}

impl Info {
    /// The verdict a correct diagnosis gives for `variant`: the leak's kind,
    /// or `none` for a fix and for every control.
    pub fn expected_kind(&self, variant: Variant) -> &'static str {
        match variant {
            Variant::Leak => self.expected,
            Variant::Fix => "none",
        }
    }

    /// The parameter called `name` (its own, or a modifier).
    pub fn param(&self, name: &str) -> Option<&'static Param> {
        self.params.iter().chain(crate::params::modifiers()).find(|p| p.name == name)
    }

    /// The IDL field the leak variant keeps, for the scenarios whose kind
    /// is a held field (`request-field-held`, `response-field-held`,
    /// `zero-copy-string-held`).
    ///
    /// ```
    /// let info = scenarios::find("sonic-string-hold").unwrap();
    /// assert_eq!(info.held_field().unwrap().to_string(), "Request field 3 (json)");
    /// assert_eq!(scenarios::find("steady").unwrap().held_field(), None);
    /// ```
    pub fn held_field(&self) -> Option<HeldField> {
        self.scenario.held_field()
    }

    /// What the leak variant keeps per second at `leak_rate=1` with the
    /// parameters `p`, for the leaks that keep a little at a time (a held
    /// field per call, a buffer per idle connection); `None` for those that
    /// leak in steps of MiB, and for controls.
    ///
    /// ```
    /// let info = scenarios::find("request-field-hold").unwrap();
    /// let p = scenarios::Params::parse(info, &[("rps".into(), "100".into()), ("payload".into(), "1000".into())]).unwrap();
    /// assert_eq!(info.trickle_rate(&p), Some(100.0 * 1000.0));
    /// assert_eq!(scenarios::find("oversized-request").unwrap().trickle_rate(&p), None);
    /// ```
    pub fn trickle_rate(&self, p: &Params) -> Option<f64> {
        self.scenario.trickle(p)
    }
}

/// The verdict kinds of `DESIGN.md`.
pub const VERDICT_KINDS: [&str; 8] = [
    "none",
    "request-field-held",
    "response-field-held",
    "connection-surge-barriers",
    "idle-connection-buffers",
    "oversized-request",
    "duplicate-clients",
    "zero-copy-string-held",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_parse_and_print() {
        for v in Variant::ALL {
            assert_eq!(v.to_string().parse::<Variant>().unwrap(), v);
        }
        let e = "leaky".parse::<Variant>().unwrap_err();
        assert!(e.to_string().contains("leak or fix"), "{e}");
    }

    #[test]
    fn the_leaks_that_keep_a_little_at_a_time_say_how_fast() {
        // A held field keeps one block per call, an idle connection one
        // buffer: a trickle. The other kinds keep MiB at once.
        let trickles =
            ["request-field-held", "response-field-held", "zero-copy-string-held", "idle-connection-buffers"];
        for info in crate::catalogue() {
            let p = Params::parse(info, &[]).unwrap();
            let rate = info.trickle_rate(&p);
            assert_eq!(rate.is_some(), trickles.contains(&info.expected), "{}: {rate:?}", info.name);
            assert!(rate.is_none_or(|r| r > 0.0), "{}: {rate:?}", info.name);
        }
        // With nocopy decoding a held field pins its whole input node.
        let info = crate::find("request-field-hold").unwrap();
        let set = |decode: &str| vec![("payload".into(), "100".into()), ("decode".into(), decode.into())];
        let copy = info.trickle_rate(&Params::parse(info, &set("copy")).unwrap()).unwrap();
        let nocopy = info.trickle_rate(&Params::parse(info, &set("nocopy")).unwrap()).unwrap();
        assert_eq!(nocopy / copy, rpc::DEFAULT_INPUT_NODE as f64 / 100.0);
        // An idle connection that answered a call also keeps its reply's
        // output node.
        let info = crate::find("idle-connections").unwrap();
        let set = |first: &str| vec![("idle_rate".into(), "100".into()), ("first_call".into(), first.into())];
        let silent = info.trickle_rate(&Params::parse(info, &set("false")).unwrap()).unwrap();
        let answered = info.trickle_rate(&Params::parse(info, &set("true")).unwrap()).unwrap();
        assert_eq!(silent, 100.0 * rpc::DEFAULT_INPUT_NODE as f64);
        assert_eq!(answered, 100.0 * (rpc::DEFAULT_INPUT_NODE + rpc::MIN_OUTPUT_NODE) as f64);
    }

    #[test]
    fn sizes_counts_and_durations_past_their_bounds_are_refused_not_a_panic() {
        let cases = [
            ("idle-connections", "conns", u64::MAX.to_string(), "too large"),
            ("sonic-string-hold", "json_size", "8589934592G".into(), "too large"),
            ("response-field-hold", "payload", "3GiB".into(), "too large"),
            ("conn-surge-request", "surge_every", "3000000000000000h".into(), "too long"),
            ("request-field-hold", "onset", "25h".into(), "too long"),
        ];
        for (scenario, key, value, why) in cases {
            let info = crate::find(scenario).unwrap();
            let e = Params::parse(info, &[(key.into(), value.clone())]).unwrap_err();
            assert!(e.to_string().contains(why), "{scenario} {key}={value}: {e}");
        }
        // The largest values that are taken.
        let info = crate::find("request-field-hold").unwrap();
        assert!(Params::parse(info, &[("payload".into(), "2GiB".into()), ("onset".into(), "24h".into())]).is_ok());
    }
}
