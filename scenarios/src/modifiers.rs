//! The modifiers every scenario accepts besides its own parameters
//! (`--set onset=D`, `leak_rate=N`, `background=...`, `mix=SCENARIO`): they
//! make a run look like production, where a leak starts long after a
//! deploy, leaks on a share of the calls only, inside a process that also
//! churns, caches and bursts, and sometimes next to a second leak.
//!
//! They are declared once ([`modifiers`]) and appended to every scenario's
//! parameters when they are parsed; [`Params::modifiers`] reads them, and
//! [`mechanisms`] lists every leak mechanism a run contains, for labels.
//!
//! # When the load begins
//!
//! `onset` counts from the start of the LOAD phase. The gate that decides
//! whether a call leaks lives where the leak does: in the process under
//! test for the handler and caller leaks, in the peer for the leaks the
//! load makes (connections the upstream leaves open, surges, oversized
//! calls). A gate in the process under test starts its clock at the first
//! call through it, which is when the warm-up begins (the peer calls as
//! soon as it starts; a client scenario calls as soon as it is ready); the
//! peer's gates count from its own start. The load phase begins the
//! warm-up's length after that, which the harness passes: `leaklab serve
//! --warmup D` (only when `onset` is set) and `leaklab peer --latency-from
//! D`, read with [`Params::with_warmup`]. A gate therefore opens at the
//! onset a label gives, or a few milliseconds after it (the peer's
//! start-up), never before it. Without an onset (`0s`, the default) the
//! gate is open from the first call, warm-up included, as runs were
//! before the modifiers.
//!
//! # What each modifier does to each mechanism
//!
//! | scenario | `onset`: before it | `leak_rate` N: one in N of |
//! |---|---|---|
//! | `request-field-hold`, `sonic-string-hold`, `response-field-hold` | the fix's copy is cached | the calls cache the slice that keeps the field |
//! | `duplicate-clients` | calls share one client (the fix) | the calls create a client never closed |
//! | `idle-connections` | the upstream closes each connection after `idle_timeout` (as the fix's server would) | the connections stay open |
//! | `oversized-request` | no oversized call | the oversized calls are sent (one in `every * N`) |
//! | `conn-surge-*` | no surge | the surges grow (legacy slots keep what the peak of connections left) |
//! | controls, fix variants | nothing changes | nothing changes |
//!
//! `background=churn|cache` runs in the process under test (the handler,
//! or the caller, on every call); `background=burst` in the peer (server
//! scenarios) or in a second, well-behaved client (client scenarios).
//! `mix=` composes the second mechanism's handler behaviour, server
//! settings and load with the first's ([`mix_candidates`]); a server
//! scenario mixed with a client leak also calls a plain Echo server
//! ([`mixed_client`], [`calls_a_peer`]).
//!
//! ```
//! use scenarios::{find, mechanisms, Background, Params, Variant};
//! use std::time::Duration;
//!
//! let info = find("request-field-hold").unwrap();
//! let set = [("onset".to_owned(), "30s".to_owned()), ("mix".to_owned(), "sonic-string-hold".to_owned()),
//!            ("background".to_owned(), "all".to_owned())];
//! let params = Params::parse(info, &set).unwrap();
//! let m = params.modifiers();
//! assert_eq!((m.onset, m.leak_rate, m.background), (Duration::from_secs(30), 1, Background::All));
//! assert_eq!(m.mix.unwrap().name, "sonic-string-hold");
//! let kinds: Vec<&str> = mechanisms(info, Variant::Leak, &params).iter().map(|m| m.kind).collect();
//! assert_eq!(kinds, ["request-field-held", "zero-copy-string-held"]);
//! assert!(mechanisms(info, Variant::Fix, &params).is_empty());
//! ```

use std::time::Duration;

use crate::catalogue::{catalogue, find};
use crate::error::ScenarioError;
use crate::noise::Background;
use crate::params::Params;
use crate::scenario::{HeldField, Info, Role, Variant};
use crate::side::Side;

/// The modifiers of a run, read from its [`Params`] ([`Params::modifiers`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Modifiers {
    /// How long into the load phase the leak variant starts leaking.
    pub onset: Duration,
    /// One in this many calls (connections, surges, oversized calls)
    /// leaks; at least 1.
    pub leak_rate: u64,
    /// Healthy noise.
    pub background: Background,
    /// The second leak mechanism, if any.
    pub mix: Option<&'static Info>,
}

impl Params {
    /// Applies `pairs` (later pairs win) over the defaults of `info` and of
    /// the modifiers every scenario accepts, checks
    /// every value against its parameter's `Check`, then lets
    /// the scenario check the values together (and `mix` against it). An unknown key is an error
    /// that names the valid ones.
    pub fn parse(info: &Info, pairs: &[(String, String)]) -> Result<Params, ScenarioError> {
        let params = Params::new(info.name, info.params, pairs)?;
        info.scenario.check(&params)?;
        check_mix(info, &params)?;
        Ok(params)
    }

    /// Every parameter with its defaults: `Params::parse(info, &[])`.
    pub fn defaults(info: &Info) -> Result<Params, ScenarioError> {
        Params::parse(info, &[])
    }
}

impl PartialEq for Modifiers {
    fn eq(&self, other: &Modifiers) -> bool {
        (self.onset, self.leak_rate, self.background, self.mix.map(|m| m.name))
            == (other.onset, other.leak_rate, other.background, other.mix.map(|m| m.name))
    }
}

impl Eq for Modifiers {}

impl Params {
    /// The modifiers (`onset`, `leak_rate`, `background`, `mix`) of this
    /// run, which every scenario accepts: what a label records. Their
    /// values were checked when the parameters were parsed.
    pub fn modifiers(&self) -> Modifiers {
        Modifiers {
            onset: self.onset(),
            leak_rate: self.leak_rate(),
            background: self.string("background").ok().and_then(|b| b.parse().ok()).unwrap_or_default(),
            mix: self.string("mix").ok().and_then(|name| find(name).ok()),
        }
    }
}

/// One leak mechanism present in a run: what a detector should name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mechanism {
    /// The scenario whose mechanism it is.
    pub scenario: &'static str,
    /// The verdict kind that names it (`request-field-held`, ...).
    pub kind: &'static str,
    /// The IDL field it keeps, for the held-field kinds.
    pub field: Option<HeldField>,
}

impl Mechanism {
    fn of(info: &Info) -> Mechanism {
        Mechanism { scenario: info.name, kind: info.expected, field: info.held_field() }
    }
}

/// Every leak mechanism present in a run of `info`'s `variant` with
/// `params`: none for a fix variant or a control, the scenario's own for a
/// leak variant, then the mixed-in one (`mix=`), if any.
pub fn mechanisms(info: &Info, variant: Variant, params: &Params) -> Vec<Mechanism> {
    if variant == Variant::Fix || info.control {
        return Vec::new();
    }
    let mut out = vec![Mechanism::of(info)];
    if let Some(mix) = params.modifiers().mix {
        out.push(Mechanism::of(mix));
    }
    out
}

/// Whether `info` composes with a second mechanism at all, as the first
/// one: the handler leaks, the load-shape leaks `idle-connections` and
/// `oversized-request`, and the client leaks.
fn mixable(info: &Info) -> bool {
    match info.scenario.role() {
        Role::Server(s) => s.mixable(),
        Role::Client(_) => !info.control,
    }
}

/// The scenarios `info` may be mixed with (`mix=NAME`), in catalogue order:
///
/// - a server leak whose mechanism is in its handler (`request-field-hold`,
///   `sonic-string-hold`) or in its load (`idle-connections`,
///   `oversized-request`) mixes with another of these, and with a client
///   leak (`response-field-hold`, `duplicate-clients`): the process under
///   test then also calls a plain Echo server (`leaklab run` starts one);
/// - a client leak mixes with the other client leak (two callers in one
///   process).
///
/// The connection-surge scenarios do not mix (their handler tells a surge
/// call by its size, which other loads' calls pass, and their barrier
/// slots would keep the other mechanism's buffers), nor do controls
/// (`background=` is their noise).
///
/// ```
/// let names = |s| scenarios::mix_candidates(scenarios::find(s).unwrap()).iter().map(|i| i.name).collect::<Vec<_>>();
/// assert_eq!(names("duplicate-clients"), ["response-field-hold"]);
/// assert!(names("request-field-hold").contains(&"duplicate-clients"));
/// assert!(names("steady").is_empty());
/// ```
pub fn mix_candidates(info: &Info) -> Vec<&'static Info> {
    if !mixable(info) {
        return Vec::new();
    }
    catalogue()
        .iter()
        .filter(|m| m.name != info.name && mixable(m))
        .filter(|m| info.side == Side::Server || m.side == Side::Client)
        .collect()
}

/// Checks `mix` against the scenario: the error names what is allowed.
pub(crate) fn check_mix(info: &Info, p: &Params) -> Result<(), ScenarioError> {
    let Some(mix) = p.modifiers().mix else { return Ok(()) };
    let allowed = mix_candidates(info);
    if allowed.iter().any(|m| m.name == mix.name) {
        return Ok(());
    }
    let reason = if allowed.is_empty() {
        format!(
            "{} does not mix with a second mechanism (mixtures: a handler leak, idle-connections or \
             oversized-request first, or a client leak with the other client leak)",
            info.name
        )
    } else if mix.side == Side::Server && info.side == Side::Client && allowed_rev(mix, info) {
        format!("put the server scenario first: leaklab run {} --set mix={}", mix.name, info.name)
    } else {
        format!("{} mixes with: {}", info.name, allowed.iter().map(|m| m.name).collect::<Vec<_>>().join(", "))
    };
    Err(p.bad("mix", reason))
}

fn allowed_rev(first: &Info, second: &Info) -> bool {
    mix_candidates(first).iter().any(|m| m.name == second.name)
}

/// The parameters of the mixed-in scenario: its defaults, with the run's
/// `onset`, `leak_rate` and warm-up (no background, no mix).
pub(crate) fn mix_params(mix: &'static Info, p: &Params) -> Result<Params, ScenarioError> {
    let m = p.modifiers();
    let set =
        [("onset".to_owned(), format!("{}ns", m.onset.as_nanos())), ("leak_rate".to_owned(), m.leak_rate.to_string())];
    Ok(Params::parse(mix, &set)?.with_warmup(p.warmup()))
}

/// The client mechanism the process under test runs besides its own role:
/// the mixed-in client scenario and its parameters, for a server scenario
/// mixed with a client leak (the process under test then also calls a
/// plain Echo server: give it one, and run
/// [`run_client`](crate::run_client) with these). `None` otherwise (a client
/// scenario runs its mixed-in caller itself).
///
/// ```
/// let info = scenarios::find("request-field-hold").unwrap();
/// let set = [("mix".to_owned(), "duplicate-clients".to_owned())];
/// let params = scenarios::Params::parse(info, &set).unwrap();
/// let (mix, mix_params) = scenarios::mixed_client(info, &params).unwrap().unwrap();
/// assert_eq!((mix.name, mix_params.u64("rps").unwrap()), ("duplicate-clients", 50));
/// assert!(scenarios::calls_a_peer(info, &params));
/// ```
pub fn mixed_client(info: &Info, p: &Params) -> Result<Option<(&'static Info, Params)>, ScenarioError> {
    match p.modifiers().mix {
        Some(mix) if info.side == Side::Server && mix.side == Side::Client => Ok(Some((mix, mix_params(mix, p)?))),
        _ => Ok(None),
    }
}

/// Whether the process under test calls a plain Echo server: a client
/// scenario, or a server scenario mixed with a client leak.
pub fn calls_a_peer(info: &Info, p: &Params) -> bool {
    info.side == Side::Client || p.modifiers().mix.is_some_and(|m| m.side == Side::Client)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{modifiers, Vary, MIX_NAMES};

    fn set(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_are_todays_behaviour() {
        for info in catalogue() {
            let p = Params::defaults(info).unwrap();
            let m = p.modifiers();
            assert_eq!(m, Modifiers { onset: Duration::ZERO, leak_rate: 1, background: Background::None, mix: None });
            let gate = p.gate(!info.control);
            assert_eq!(gate.leaks(), !info.control, "{}", info.name);
            assert!(!p.gate(false).leaks());
        }
    }

    #[test]
    fn bad_modifiers_are_rejected_with_what_is_right() {
        let info = find("request-field-hold").unwrap();
        let err = |k: &str, v: &str| Params::parse(info, &set(&[(k, v)])).unwrap_err().to_string();
        assert!(err("onset", "5").contains("no unit"), "{}", err("onset", "5"));
        assert!(err("onset", "-1s").contains("onset"));
        assert!(err("leak_rate", "0").contains("at least 1"), "{}", err("leak_rate", "0"));
        assert!(err("leak_rate", "1.5").contains("whole number"));
        assert!(err("background", "noisy").contains("churn or cache or burst or all"), "{}", err("background", "x"));
        let e = err("mix", "request-field-hld");
        assert!(e.contains("sonic-string-hold"), "{e}");
        let e = err("mix", "conn-surge-request");
        assert!(e.contains("mixes with") && e.contains("idle-connections") && e.contains("duplicate-clients"), "{e}");
        let e = err("mix", "request-field-hold");
        assert!(e.contains("mixes with"), "a scenario does not mix with itself: {e}");
        let steady = find("steady").unwrap();
        let e = Params::parse(steady, &set(&[("mix", "request-field-hold")])).unwrap_err().to_string();
        assert!(e.contains("does not mix"), "{e}");
        let dup = find("duplicate-clients").unwrap();
        let e = Params::parse(dup, &set(&[("mix", "request-field-hold")])).unwrap_err().to_string();
        assert!(e.contains("put the server scenario first"), "{e}");
    }

    #[test]
    fn every_candidate_mix_parses_and_lists_two_mechanisms() {
        for info in catalogue() {
            for mix in mix_candidates(info) {
                let p = Params::parse(info, &set(&[("mix", mix.name)]))
                    .unwrap_or_else(|e| panic!("{} + {}: {e}", info.name, mix.name));
                let kinds: Vec<&str> = mechanisms(info, Variant::Leak, &p).iter().map(|m| m.kind).collect();
                assert_eq!(kinds, [info.expected, mix.expected]);
                assert!(mechanisms(info, Variant::Fix, &p).is_empty());
            }
        }
        let rfh = find("request-field-hold").unwrap();
        let m = mechanisms(rfh, Variant::Leak, &Params::defaults(rfh).unwrap());
        assert_eq!(m, [Mechanism { scenario: rfh.name, kind: "request-field-held", field: rfh.held_field() }]);
        assert!(mechanisms(find("bounded-cache").unwrap(), Variant::Leak, &Params::defaults(rfh).unwrap()).is_empty());
    }

    #[test]
    fn modifier_ranges_pass_their_checks_and_hold_their_defaults() {
        for p in modifiers() {
            assert!(p.vary.holds(p.default, p.default), "{}", p.name);
            assert_eq!(p.check.check(p.default), Ok(()), "{}", p.name);
            if let Vary::Choices(c) = p.vary {
                for v in c {
                    assert_eq!(p.check.check(v), Ok(()), "{}={v}", p.name);
                }
            }
        }
        assert_eq!(MIX_NAMES.len(), catalogue().len() + 1);
        for info in catalogue() {
            assert!(MIX_NAMES.contains(&info.name));
            assert!(info.params.iter().all(|p| modifiers().iter().all(|m| m.name != p.name)), "{}", info.name);
        }
    }
}
