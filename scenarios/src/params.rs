//! Scenario parameters: each scenario declares its own as data ([`Param`]:
//! name, default, [`Check`], help, and the range exercises draw from,
//! [`Vary`]), so that `explain`, validation and drawing read the same
//! declaration; `--set key=value` pairs are checked against it once, and the
//! parameters every scenario shares are read once ([`Common`]).

use std::fmt;
use std::time::Duration;

use rpc::codec::DecodeMode;

use crate::error::ScenarioError;
use crate::noise::{Gate, BACKGROUNDS};
use crate::shape::LoadShape;

/// One parameter a scenario takes (`--set name=value`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Param {
    /// The key.
    pub name: &'static str,
    /// The value when not set; always passes `check`.
    pub default: &'static str,
    /// What it changes, with its unit.
    pub help: &'static str,
    /// What a value must be, checked when the parameters are parsed.
    pub check: Check,
    /// The values an exercise draws from (`leaklab quiz`): each passes
    /// `check`, keeps the scenario diagnosable in a run of the default
    /// length, and the range holds the default.
    pub vary: Vary,
}

impl Param {
    /// The same parameter, drawn from `vary` in exercises.
    pub const fn varying(self, vary: Vary) -> Param {
        Param { vary, ..self }
    }
}

/// The documented range of a [`Param`]: what an exercise may set it to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vary {
    /// Exercises keep the default: a parameter of the fix only, or one
    /// whose other values would change what the scenario shows or how
    /// surely its variants are told apart.
    Fixed,
    /// One of these values (`&["4KiB", "16KiB", "64KiB"]`, `&["copy",
    /// "nocopy"]`).
    Choices(&'static [&'static str]),
    /// A whole number from `lo` to `hi`, both included.
    Range {
        /// The smallest value.
        lo: u64,
        /// The largest value.
        hi: u64,
    },
}

impl Vary {
    /// Whether `value` is in the range (a [`Vary::Fixed`] range holds only
    /// `default`).
    pub fn holds(&self, value: &str, default: &str) -> bool {
        match *self {
            Vary::Fixed => value == default,
            Vary::Choices(choices) => choices.contains(&value),
            Vary::Range { lo, hi } => parse_whole(value).is_ok_and(|v| (lo..=hi).contains(&v)),
        }
    }
}

impl fmt::Display for Vary {
    /// `fixed`, `4KiB | 16KiB | 64KiB`, `100..=400`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Vary::Fixed => f.write_str("fixed"),
            Vary::Choices(choices) => f.write_str(&choices.join(" | ")),
            Vary::Range { lo, hi } => write!(f, "{lo}..={hi}"),
        }
    }
}

/// What the value of a [`Param`] must be: its type and, for some, its
/// range, with what to say when it is out of range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// A size or count (`1024`, `64KiB`, `1MiB`) from `min` to `max`.
    Size {
        /// The smallest value allowed.
        min: usize,
        /// The largest value allowed.
        max: usize,
        /// What is wrong with a value out of range.
        why: &'static str,
    },
    /// A whole number (`400`) of at least `min`.
    Whole {
        /// The smallest value allowed.
        min: u64,
        /// What is wrong with a smaller value.
        why: &'static str,
    },
    /// A number above zero (`150`, `0.5`).
    Positive {
        /// What is wrong with zero or less.
        why: &'static str,
    },
    /// A duration (`250ms`, `2s`) of at least `min`.
    Duration {
        /// The shortest value allowed.
        min: Duration,
        /// What is wrong with a shorter value.
        why: &'static str,
    },
    /// A switch: `true`/`false` (also `yes`/`no`, `on`/`off`, `1`/`0`).
    Switch,
    /// One of these words.
    Choice(&'static [&'static str]),
}

impl Check {
    /// Any size.
    pub const SIZE: Check = Check::Size { min: 0, max: usize::MAX, why: "" };
    /// Any whole number.
    pub const WHOLE: Check = Check::Whole { min: 0, why: "" };
    /// Any duration.
    pub const DURATION: Check = Check::Duration { min: Duration::ZERO, why: "" };
    /// A duration above zero.
    pub const ABOVE_ZERO: Check = Check::Duration { min: Duration::from_nanos(1), why: "must be above zero" };
    /// How the server decodes string and binary fields: `copy` or `nocopy`.
    pub const DECODE: Check = Check::Choice(&["copy", "nocopy"]);

    /// Checks `value`; the error says what is wrong and what would be right.
    pub fn check(&self, value: &str) -> Result<(), String> {
        let (within, why) = match *self {
            Check::Size { min, max, why } => ((min..=max).contains(&parse_size(value)?), why),
            Check::Whole { min, why } => (parse_whole(value)? >= min, why),
            Check::Positive { why } => (parse_number(value)? > 0.0, why),
            Check::Duration { min, why } => (parse_duration(value)? >= min, why),
            Check::Switch => return parse_switch(value).map(drop),
            Check::Choice(choices) => return choice(value, choices).map(drop),
        };
        if within {
            Ok(())
        } else {
            Err(why.to_owned())
        }
    }
}

/// `payload`: msg bytes of the steady calls.
pub(crate) const fn payload(default: &'static str) -> Param {
    Param {
        name: "payload",
        default,
        help: "msg bytes of each steady call (1024, 16KiB, 1MiB)",
        check: Check::SIZE,
        vary: Vary::Fixed,
    }
}

/// `rps`: total steady call rate.
pub(crate) const fn rps(default: &'static str) -> Param {
    Param {
        name: "rps",
        default,
        help: "steady calls per second over all connections (0: as fast as answered)",
        check: Check::WHOLE,
        vary: Vary::Fixed,
    }
}

/// `conns`: steady connections.
pub(crate) const fn conns(default: &'static str) -> Param {
    Param {
        name: "conns",
        default,
        help: "steady connections, each with one call in flight",
        check: Check::SIZE,
        vary: Vary::Fixed,
    }
}

/// The parameters every scenario has: its steady load.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Common {
    /// Msg bytes of each steady call.
    pub payload: usize,
    /// Steady calls per second over all connections (0: as fast as answered).
    pub rps: u64,
    /// Steady connections.
    pub conns: usize,
}

impl Common {
    /// A plain steady load of these calls.
    pub(crate) fn steady(&self) -> LoadShape {
        LoadShape { conns: self.conns, rps: self.rps, payload: self.payload, ..LoadShape::default() }
    }
}

/// The parameters of one scenario run: every parameter the scenario has,
/// defaults applied, each value checked when parsed.
///
/// ```
/// let info = scenarios::find("request-field-hold").unwrap();
/// let set = [("payload".to_owned(), "64KiB".to_owned())];
/// let params = scenarios::Params::parse(info, &set).unwrap();
/// assert_eq!(params.usize("payload").unwrap(), 64 << 10);
/// assert!(scenarios::Params::parse(info, &[("paylod".into(), "1".into())]).is_err());
/// ```
#[derive(Clone, Debug)]
pub struct Params {
    scenario: &'static str,
    values: Vec<(&'static Param, String)>,
    common: Common,
    warmup: Duration,
}

impl Params {
    /// Applies `pairs` (later pairs win) over the defaults of `params`,
    /// checks each value against its [`Check`] in the order declared, and
    /// reads the [`Common`] ones. An unknown key is an error that names the
    /// valid ones. [`Params::parse`] then lets the scenario check the values
    /// together.
    pub(crate) fn new(
        scenario: &'static str,
        params: &'static [Param],
        pairs: &[(String, String)],
    ) -> Result<Params, ScenarioError> {
        let mut values: Vec<(&'static Param, String)> =
            params.iter().chain(modifiers()).map(|p| (p, p.default.to_owned())).collect();
        for (key, value) in pairs {
            let key = key.trim();
            let Some(slot) = values.iter_mut().find(|(p, _)| p.name == key) else {
                return Err(ScenarioError::UnknownParam {
                    scenario,
                    key: key.to_owned(),
                    valid: params.iter().chain(modifiers()).map(|p| p.name).collect::<Vec<_>>().join(", "),
                });
            };
            slot.1 = value.trim().to_owned();
        }
        let mut params = Params { scenario, values, common: Common::default(), warmup: Duration::ZERO };
        for (param, value) in &params.values {
            param.check.check(value).map_err(|reason| params.bad(param.name, reason))?;
        }
        params.common =
            Common { payload: params.usize("payload")?, rps: params.u64("rps")?, conns: params.usize("conns")? };
        Ok(params)
    }

    /// The same parameters, with the load phase beginning `warmup` after
    /// the first call (the harness's warm-up; zero by default, when the
    /// load begins with the first call): `onset` counts from there. Not a
    /// `--set` parameter: `leaklab serve --warmup` and `leaklab peer
    /// --latency-from` pass it.
    pub fn with_warmup(mut self, warmup: Duration) -> Params {
        self.warmup = warmup;
        self
    }

    /// The warm-up before the load phase ([`Params::with_warmup`]).
    pub fn warmup(&self) -> Duration {
        self.warmup
    }

    /// The scenario these parameters are for.
    pub fn scenario(&self) -> &'static str {
        self.scenario
    }

    /// Every parameter and its value (defaults applied), in the scenario's
    /// order, then the modifiers: what a run records.
    pub fn effective(&self) -> Vec<(String, String)> {
        self.values.iter().map(|(p, v)| (p.name.to_owned(), v.clone())).collect()
    }

    /// The steady load every scenario has.
    pub(crate) fn common(&self) -> Common {
        self.common
    }

    /// The raw value of `name`.
    pub fn string(&self, name: &str) -> Result<&str, ScenarioError> {
        self.values.iter().find(|(p, _)| p.name == name).map(|(_, v)| v.as_str()).ok_or_else(|| {
            ScenarioError::UnknownParam {
                scenario: self.scenario,
                key: name.to_owned(),
                valid: self.values.iter().map(|(p, _)| p.name).collect::<Vec<_>>().join(", "),
            }
        })
    }

    fn typed<T>(&self, name: &str, parse: impl FnOnce(&str) -> Result<T, String>) -> Result<T, ScenarioError> {
        let value = self.string(name)?;
        parse(value).map_err(|reason| self.bad(name, reason))
    }

    /// A [`ScenarioError::BadValue`] for `name` with its current value.
    pub(crate) fn bad(&self, name: &str, reason: impl Into<String>) -> ScenarioError {
        let (key, value) =
            self.values.iter().find(|(p, _)| p.name == name).map_or(("?", String::new()), |(p, v)| (p.name, v.clone()));
        ScenarioError::BadValue { scenario: self.scenario, key, value, reason: reason.into() }
    }

    /// A size or count: `1024`, `64KiB`, `64K`, `1MiB`, `8M` (binary units).
    pub fn usize(&self, name: &str) -> Result<usize, ScenarioError> {
        self.typed(name, parse_size)
    }

    /// A whole number: `400`.
    pub fn u64(&self, name: &str) -> Result<u64, ScenarioError> {
        self.typed(name, parse_whole)
    }

    /// A number: `150`, `0.5`.
    pub fn f64(&self, name: &str) -> Result<f64, ScenarioError> {
        self.typed(name, parse_number)
    }

    /// A duration: `250ms`, `2s`, `1.5s`, `1m`.
    pub fn duration(&self, name: &str) -> Result<Duration, ScenarioError> {
        self.typed(name, parse_duration)
    }

    /// A switch: `true`/`false` (also `yes`/`no`, `on`/`off`, `1`/`0`).
    pub fn bool(&self, name: &str) -> Result<bool, ScenarioError> {
        self.typed(name, parse_switch)
    }

    /// One of `choices`.
    pub(crate) fn choice(&self, name: &str, choices: &[&'static str]) -> Result<&'static str, ScenarioError> {
        self.typed(name, |value| choice(value, choices))
    }

    /// The `decode` parameter ([`Check::DECODE`]).
    pub(crate) fn decode(&self) -> Result<DecodeMode, ScenarioError> {
        Ok(match self.choice("decode", &["copy", "nocopy"])? {
            "copy" => DecodeMode::Copy,
            _ => DecodeMode::NoCopy,
        })
    }
}

/// Every scenario name, then `none`: what `mix` may name before the
/// scenario checks the pair.
pub(crate) const MIX_NAMES: &[&str] = &[
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

static MODIFIERS: [Param; 4] = [
    Param {
        name: "onset",
        default: "0s",
        help: "the leak variant behaves like the fix for this long from the start of the load phase, then leaks \
               (0s: it leaks from the first call, warm-up included, as without the modifier; fix variants and \
               controls: no effect)",
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
               3 s, 16 more connections for 1 s at 160 calls/s in all, then closed; in a client scenario, 16 \
               concurrent callers through a second client that keeps one idle connection), all",
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
/// quiz`, `scenarios::draw_params`) keep their defaults.
pub fn modifiers() -> &'static [Param] {
    &MODIFIERS
}

impl Params {
    /// The gate of this run's mechanism: `leak` in a leak variant of a
    /// leak, false in a fix or a control.
    pub(crate) fn gate(&self, leak: bool) -> Gate {
        Gate::new(leak, self.opens(), self.leak_rate())
    }

    /// `onset` (checked when parsed).
    pub(crate) fn onset(&self) -> Duration {
        self.duration("onset").unwrap_or_default()
    }

    /// `leak_rate` (checked when parsed: at least 1).
    pub(crate) fn leak_rate(&self) -> u64 {
        self.u64("leak_rate").unwrap_or(1).max(1)
    }

    /// When a leak variant's gate opens, from the first call: the warm-up
    /// plus `onset`, or at once when there is no onset (today's runs leak
    /// from the first call, warm-up included).
    pub(crate) fn opens(&self) -> Duration {
        let onset = self.onset();
        if onset.is_zero() {
            Duration::ZERO
        } else {
            self.warmup() + onset
        }
    }

    /// The gate of a mechanism the peer drives (connections it leaves
    /// open, surges, oversized calls), `leak` in a leak variant: from when, counted from the
    /// start of the peer's load (warm-up included), and one in how many.
    /// A fix variant gets today's load: `(0, 1)`.
    pub(crate) fn peer_gate(&self, leak: bool) -> (Duration, u64) {
        if leak {
            (self.opens(), self.leak_rate())
        } else {
            (Duration::ZERO, 1)
        }
    }
}

fn parse_whole(s: &str) -> Result<u64, String> {
    s.replace('_', "").parse::<u64>().map_err(|_| "expected a whole number such as 400".to_owned())
}

fn parse_number(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err("expected a number such as 150 or 0.5".to_owned()),
    }
}

fn parse_switch(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err("expected true or false".to_owned()),
    }
}

fn choice(value: &str, choices: &[&'static str]) -> Result<&'static str, String> {
    choices.iter().copied().find(|c| *c == value).ok_or_else(|| format!("expected {}", choices.join(" or ")))
}

/// The largest size or count a parameter takes: 2 Gi, about the most a
/// framed Thrift message carries (its length is an `i32`). Larger values
/// only fail later, as an allocation the machine cannot make or a clock
/// that overflows.
pub(crate) const MAX_SIZE: usize = 2 << 30;

/// The longest duration a parameter takes: no run lasts a day, and later
/// instants can overflow the clock.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Parses a byte size: a whole number with an optional binary unit (`K`,
/// `KB`, `KiB`: 1024; `M`...: 1 MiB; `G`...: 1 GiB), case-insensitive, up
/// to [`MAX_SIZE`].
pub(crate) fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '_').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: usize =
        num.replace('_', "").parse().map_err(|_| format!("expected a size such as 1024, 64KiB or 1MiB, not {s:?}"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => return Err(format!("unknown size unit {other:?}: use KiB, MiB or GiB (or none for bytes)")),
    };
    num.checked_mul(1 << shift)
        .filter(|&n| n <= MAX_SIZE)
        .ok_or_else(|| format!("{s} is too large: sizes and counts go up to 2GiB ({MAX_SIZE})"))
}

/// Parses a duration: a number followed by `ns`, `us`, `ms`, `s`, `m` or
/// `h`, up to [`MAX_DURATION`].
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num.parse().map_err(|_| format!("expected a duration such as 250ms or 2s, not {s:?}"))?;
    let secs = match unit.trim() {
        "ns" => num / 1e9,
        "us" | "µs" => num / 1e6,
        "ms" => num / 1e3,
        "s" => num,
        "m" | "min" => num * 60.0,
        "h" => num * 3600.0,
        "" => return Err(format!("{s:?} has no unit: write 250ms, 2s or 1m")),
        other => return Err(format!("unknown duration unit {other:?}: use ms, s, m or h")),
    };
    let d = Duration::try_from_secs_f64(secs).map_err(|_| format!("{s} is not a valid duration"))?;
    if d > MAX_DURATION {
        return Err(format!("{s} is too long: durations go up to 24h"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_units() {
        let cases = [
            ("1024", Ok(1024)),
            ("64KiB", Ok(64 << 10)),
            ("64k", Ok(64 << 10)),
            ("64KB", Ok(64 << 10)),
            ("1MiB", Ok(1 << 20)),
            ("8MiB", Ok(8 << 20)),
            ("2G", Ok(2 << 30)),
            ("1_000", Ok(1000)),
            (" 16 KiB ", Ok(16 << 10)),
        ];
        for (input, want) in cases {
            assert_eq!(parse_size(input), want, "{input}");
        }
        for bad in ["", "KiB", "1.5MiB", "12 parsecs", "-1", "99999999999999999999G"] {
            assert!(parse_size(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn durations_need_a_unit() {
        let cases = [
            ("250ms", Duration::from_millis(250)),
            ("2s", Duration::from_secs(2)),
            ("1.5s", Duration::from_millis(1500)),
            ("1m", Duration::from_secs(60)),
            ("500us", Duration::from_micros(500)),
            ("0s", Duration::ZERO),
        ];
        for (input, want) in cases {
            assert_eq!(parse_duration(input), Ok(want), "{input}");
        }
        for bad in ["250", "2 weeks", "ms", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad} should not parse");
        }
        assert!(parse_duration("250").unwrap_err().contains("no unit"));
    }

    #[test]
    fn checks_name_what_is_wrong() {
        let at_least_one = Check::Size { min: 1, max: 10, why: "must be between 1 and 10" };
        assert_eq!(at_least_one.check("1"), Ok(()));
        assert_eq!(at_least_one.check("0"), Err("must be between 1 and 10".to_owned()));
        assert_eq!(at_least_one.check("11"), Err("must be between 1 and 10".to_owned()));
        assert!(at_least_one.check("lots").unwrap_err().contains("64KiB"));
        assert_eq!(Check::ABOVE_ZERO.check("0s"), Err("must be above zero".to_owned()));
        assert_eq!(Check::ABOVE_ZERO.check("1ms"), Ok(()));
        assert_eq!(Check::Positive { why: "above zero" }.check("0"), Err("above zero".to_owned()));
        assert_eq!(Check::Whole { min: 1, why: "at least 1" }.check("0"), Err("at least 1".to_owned()));
        assert_eq!(Check::Switch.check("maybe"), Err("expected true or false".to_owned()));
        assert_eq!(Check::DECODE.check("zero"), Err("expected copy or nocopy".to_owned()));
        assert_eq!(Check::DECODE.check("nocopy"), Ok(()));
    }
}
