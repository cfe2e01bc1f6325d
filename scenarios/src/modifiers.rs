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
//! test (a handler, a caller) or in the peer (connections the upstream
//! leaves open, surges, oversized calls). Each gate's clock starts at the
//! first call through it, which is when the warm-up begins (the peer
//! starts calling as soon as it starts; a client scenario starts calling as
//! soon as it is ready), and the load phase begins the warm-up's length
//! after that: the harness passes it (`leaklab serve --warmup D`, `leaklab
//! peer --latency-from D`; [`Params::with_warmup`]). A gate therefore opens
//! at, or a few milliseconds after (the peer's start-up), the onset the
//! label gives: never before it.
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

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::error::ScenarioError;
use crate::params::{Check, Param, Params, Vary};
use crate::registry::catalogue;
use crate::scenario::{HeldField, Info, Role, Variant};
use crate::side::Side;

/// Every scenario name, then `none`: what `mix` may name before the
/// scenario checks the pair.
const MIX_NAMES: &[&str] = &[
    "none",
    "request-field-hold",
    "response-field-hold",
    "conn-surge-request",
    "conn-surge-response-nocopy",
    "conn-surge-response-copy",
    "idle-connections",
    "oversized-request",
    "duplicate-clients",
    "sonic-string-hold",
    "steady",
    "bounded-cache",
    "warmup",
    "burst",
];

/// The background choices.
const BACKGROUNDS: &[&str] = &["none", "churn", "cache", "burst", "all"];

static MODIFIERS: [Param; 4] = [
    Param {
        name: "onset",
        default: "0s",
        help: "the leak variant behaves like the fix for this long from the start of the load phase, then leaks \
               (fix variants and controls: no effect)",
        check: Check::DURATION,
        vary: Vary::Choices(&["0s", "2s", "4s", "10s", "30s", "60s"]),
    },
    Param {
        name: "leak_rate",
        default: "1",
        help: "one in N leaks: calls (field holds, duplicate clients), connections left open (idle-connections), \
               surges that grow (connection surges), oversized calls sent (oversized-request); 1: every one",
        check: Check::Whole { min: 1, why: "must be at least 1: one call in N leaks" },
        vary: Vary::Range { lo: 1, hi: 256 },
    },
    Param {
        name: "background",
        default: "none",
        help: "healthy noise in the same process: churn (a 4 KiB buffer allocated and freed per call), cache (a \
               capped cache: 500 entries of 1 KiB a second up to 1000, full after 2 s, then flat), burst (every \
               3 s, 16 more connections for 1 s at 160 calls/s in all, then closed), all",
        check: Check::Choice(BACKGROUNDS),
        vary: Vary::Choices(BACKGROUNDS),
    },
    Param {
        name: "mix",
        default: "none",
        help: "a second leak mechanism in the same process (leak variant only; onset and leak_rate apply to it, \
               its own parameters keep their defaults); see `scenarios::mix_candidates`",
        check: Check::Choice(MIX_NAMES),
        vary: Vary::Fixed,
    },
];

/// The modifiers every scenario accepts, appended to its own parameters:
/// `onset`, `leak_rate`, `background`, `mix`. Their `vary` ranges are the
/// documented distributions a sweep may draw from; exercises (`leaklab
/// quiz`, [`draw_params`](crate::draw_params)) keep their defaults.
pub fn modifiers() -> &'static [Param] {
    &MODIFIERS
}

/// Healthy noise in the process under test (`background=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Background {
    /// None.
    #[default]
    None,
    /// A 4 KiB temporary buffer allocated, filled and freed per call
    /// ([`CHURN_BYTES`]).
    Churn,
    /// A capped cache filled at [`CACHE_PER_SECOND`] entries of
    /// [`CACHE_ENTRY`] bytes a second up to [`CACHE_CAPACITY`] entries (full
    /// after 2 s), then each insert evicts the oldest: memory rises, then is
    /// flat.
    Cache,
    /// Periodic bursts of connections from the peer (server scenarios;
    /// [`BURST_EVERY`], [`BURST_CONNS`], [`BURST_LENGTH`], [`BURST_RPS`]),
    /// or of concurrent calls through a second, well-behaved client that
    /// keeps one idle connection (client scenarios).
    Burst,
    /// Churn, cache and burst.
    All,
}

/// Bytes of the temporary buffer `churn` allocates per call.
pub const CHURN_BYTES: usize = 4 << 10;
/// Bytes of each `cache` entry.
pub const CACHE_ENTRY: usize = 1 << 10;
/// Entries the background cache keeps.
pub const CACHE_CAPACITY: usize = 1000;
/// Entries the background cache gets per second.
pub const CACHE_PER_SECOND: u64 = 500;
/// Time between background bursts (the first starts this long into the
/// warm-up).
pub const BURST_EVERY: Duration = Duration::from_secs(3);
/// How long a background burst lasts.
pub const BURST_LENGTH: Duration = Duration::from_secs(1);
/// Extra connections (server scenarios) or concurrent callers (client
/// scenarios) of a background burst.
pub const BURST_CONNS: usize = 16;
/// Calls per second of a background burst, in all.
pub const BURST_RPS: u64 = 160;

impl Background {
    /// Whether it churns temporary buffers.
    pub fn churn(self) -> bool {
        matches!(self, Background::Churn | Background::All)
    }

    /// Whether it fills a capped cache.
    pub fn cache(self) -> bool {
        matches!(self, Background::Cache | Background::All)
    }

    /// Whether connections burst periodically.
    pub fn burst(self) -> bool {
        matches!(self, Background::Burst | Background::All)
    }
}

impl fmt::Display for Background {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Background::None => "none",
            Background::Churn => "churn",
            Background::Cache => "cache",
            Background::Burst => "burst",
            Background::All => "all",
        })
    }
}

impl FromStr for Background {
    type Err = String;
    fn from_str(s: &str) -> Result<Background, String> {
        Ok(match s {
            "none" => Background::None,
            "churn" => Background::Churn,
            "cache" => Background::Cache,
            "burst" => Background::Burst,
            "all" => Background::All,
            _ => return Err(format!("expected {}", BACKGROUNDS.join(" or "))),
        })
    }
}

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

impl PartialEq for Modifiers {
    fn eq(&self, other: &Modifiers) -> bool {
        (self.onset, self.leak_rate, self.background, self.mix.map(|m| m.name))
            == (other.onset, other.leak_rate, other.background, other.mix.map(|m| m.name))
    }
}

impl Eq for Modifiers {}

impl Modifiers {
    pub(crate) fn read(p: &Params) -> Result<Modifiers, ScenarioError> {
        let background = p.string("background")?.parse::<Background>().map_err(|e| p.bad("background", e))?;
        let mix = match p.string("mix")? {
            "none" => None,
            name => Some(crate::registry::find(name)?),
        };
        Ok(Modifiers { onset: p.duration("onset")?, leak_rate: p.u64("leak_rate")?.max(1), background, mix })
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
        format!(
            "{} mixes with: {}",
            info.name,
            allowed.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
        )
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
    let set = [("onset".to_owned(), format!("{}ns", m.onset.as_nanos())), ("leak_rate".to_owned(), m.leak_rate.to_string())];
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

/// A clock that starts at its first reading: the first call through the
/// gate or noise that owns it.
#[derive(Debug, Default)]
pub(crate) struct Clock {
    origin: OnceLock<Instant>,
}

impl Clock {
    /// Time since the first reading.
    pub(crate) fn elapsed(&self) -> Duration {
        self.origin.get_or_init(Instant::now).elapsed()
    }
}

/// Whether a call (connection, surge, oversized call) leaks: never in a fix
/// variant or a control; in a leak variant, from `opens` after the first
/// call on (the warm-up plus `onset`), one in `every`, counting from the
/// first one after the gate opens.
#[derive(Debug)]
pub(crate) struct Gate {
    leak: bool,
    opens: Duration,
    every: u64,
    clock: Clock,
    seen: AtomicU64,
}

impl Gate {
    pub(crate) fn new(leak: bool, opens: Duration, every: u64) -> Gate {
        Gate { leak, opens, every: every.max(1), clock: Clock::default(), seen: AtomicU64::new(0) }
    }

    /// A gate that never opens (a fix).
    #[cfg(test)]
    pub(crate) fn never() -> Gate {
        Gate::new(false, Duration::ZERO, 1)
    }

    /// Whether any call may leak (a leak variant).
    pub(crate) fn can_leak(&self) -> bool {
        self.leak
    }

    /// Whether every call leaks (a leak variant without onset or rate):
    /// today's behaviour.
    pub(crate) fn opens_at_once(&self) -> bool {
        self.leak && self.opens.is_zero() && self.every == 1
    }

    /// Whether this call leaks.
    pub(crate) fn leaks(&self) -> bool {
        if !self.leak {
            return false;
        }
        if !self.opens.is_zero() && self.clock.elapsed() < self.opens {
            return false;
        }
        self.seen.fetch_add(1, Ordering::Relaxed).is_multiple_of(self.every)
    }
}

impl Params {
    /// The gate of this run's own mechanism in `v`.
    pub(crate) fn gate(&self, v: Variant, control: bool) -> Gate {
        let m = self.modifiers();
        Gate::new(v == Variant::Leak && !control, self.opens(), m.leak_rate)
    }

    /// When a leak variant's gate opens, from the first call: the warm-up
    /// plus `onset`, or at once when there is no onset (today's runs leak
    /// from the first call, warm-up included).
    pub(crate) fn opens(&self) -> Duration {
        let onset = self.modifiers().onset;
        if onset.is_zero() {
            Duration::ZERO
        } else {
            self.warmup() + onset
        }
    }

    /// The gate of a mechanism the peer drives (connections it leaves
    /// open, surges, oversized calls) in `v`: from when, counted from the
    /// start of the peer's load (warm-up included), and one in how many.
    /// A fix variant gets today's load: `(0, 1)`.
    pub(crate) fn peer_gate(&self, v: Variant) -> (Duration, u64) {
        match v {
            Variant::Leak => (self.opens(), self.modifiers().leak_rate),
            Variant::Fix => (Duration::ZERO, 1),
        }
    }
}

/// The background noise of the process under test: per call, a churned
/// buffer and the capped cache brought up to date.
#[derive(Debug, Default)]
pub(crate) struct Noise {
    churn: bool,
    cache: Option<Mutex<NoiseCache>>,
    clock: Clock,
}

#[derive(Debug, Default)]
struct NoiseCache {
    inserted: u64,
    order: VecDeque<u64>,
    entries: HashMap<u64, Vec<u8>>,
}

impl Noise {
    /// The noise of `background`, `None` when there is none in process.
    pub(crate) fn of(background: Background) -> Option<Noise> {
        (background.churn() || background.cache()).then(|| Noise {
            churn: background.churn(),
            cache: background.cache().then(|| Mutex::new(NoiseCache::default())),
            clock: Clock::default(),
        })
    }

    /// What one call does besides its work.
    pub(crate) fn on_call(&self) {
        if self.churn {
            background_churn();
        }
        if let Some(cache) = &self.cache {
            let due = (self.clock.elapsed().as_secs_f64() * CACHE_PER_SECOND as f64) as u64;
            let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
            while c.inserted <= due {
                let key = c.inserted;
                c.inserted += 1;
                background_cache_insert(&mut c, key);
            }
        }
    }

    /// Entries in the background cache.
    pub(crate) fn cached(&self) -> usize {
        self.cache.as_ref().map_or(0, |c| c.lock().unwrap_or_else(|e| e.into_inner()).entries.len())
    }
}

/// A request-scoped temporary buffer, filled and dropped.
#[inline(never)]
fn background_churn() {
    let mut scratch = vec![0u8; CHURN_BYTES];
    for (i, b) in scratch.iter_mut().enumerate().step_by(64) {
        *b = i as u8;
    }
    std::hint::black_box(&scratch);
}

/// One entry into the capped cache, evicting the oldest past the capacity.
#[inline(never)]
fn background_cache_insert(c: &mut NoiseCache, key: u64) {
    c.entries.insert(key, vec![(key % 251) as u8; CACHE_ENTRY]);
    c.order.push_back(key);
    while c.order.len() > CACHE_CAPACITY {
        if let Some(old) = c.order.pop_front() {
            c.entries.remove(&old);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::find;

    fn set(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_are_todays_behaviour() {
        for info in catalogue() {
            let p = Params::defaults(info).unwrap();
            let m = *p.modifiers();
            assert_eq!(m, Modifiers { onset: Duration::ZERO, leak_rate: 1, background: Background::None, mix: None });
            let gate = p.gate(Variant::Leak, info.control);
            assert_eq!(gate.leaks(), !info.control, "{}", info.name);
            assert!(!p.gate(Variant::Fix, info.control).leaks());
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
    fn a_gate_opens_after_its_onset_and_passes_one_in_n() {
        let gate = Gate::new(true, Duration::from_millis(60), 4);
        assert!((0..50).all(|_| !gate.leaks()));
        std::thread::sleep(Duration::from_millis(70));
        let leaked = (0..400).filter(|_| gate.leaks()).count();
        assert_eq!(leaked, 100);
        assert!((0..10).all(|_| !Gate::never().leaks()));
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

    #[test]
    fn the_background_cache_fills_then_stays_at_its_capacity() {
        let noise = Noise::of(Background::Cache).unwrap();
        noise.on_call();
        assert!(noise.cached() <= 2);
        // Pretend 10 s went by.
        let _ = noise.clock.origin.set(Instant::now());
        {
            let mut c = noise.cache.as_ref().unwrap().lock().unwrap();
            for k in 0..5000 {
                background_cache_insert(&mut c, 10_000 + k);
            }
        }
        assert_eq!(noise.cached(), CACHE_CAPACITY);
        assert!(Noise::of(Background::Burst).is_none());
    }
}
