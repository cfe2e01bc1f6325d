//! Scenario parameters: `--set key=value` pairs checked against a
//! scenario's [`Param`](crate::Param) list, with typed getters.

use std::time::Duration;

use crate::catalogue::{Info, Param};
use crate::error::ScenarioError;

/// The parameters of one scenario run: every parameter the scenario has,
/// defaults applied, each value checked by the scenario when parsed.
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
}

impl Params {
    /// Applies `pairs` (later pairs win) over the defaults of `info`, then
    /// lets the scenario check every value. An unknown key is an error that
    /// names the valid ones.
    pub fn parse(info: &Info, pairs: &[(String, String)]) -> Result<Params, ScenarioError> {
        let mut values: Vec<(&'static Param, String)> = info.params.iter().map(|p| (p, p.default.to_owned())).collect();
        for (key, value) in pairs {
            let key = key.trim();
            let Some(slot) = values.iter_mut().find(|(p, _)| p.name == key) else {
                return Err(ScenarioError::UnknownParam {
                    scenario: info.name,
                    key: key.to_owned(),
                    valid: info.params.iter().map(|p| p.name).collect::<Vec<_>>().join(", "),
                });
            };
            slot.1 = value.trim().to_owned();
        }
        let params = Params { scenario: info.name, values };
        crate::registry::check(info, &params)?;
        Ok(params)
    }

    /// Every parameter with its defaults: `Params::parse(info, &[])`.
    pub fn defaults(info: &Info) -> Result<Params, ScenarioError> {
        Params::parse(info, &[])
    }

    /// The scenario these parameters are for.
    pub fn scenario(&self) -> &'static str {
        self.scenario
    }

    /// Every parameter and its value (defaults applied), in the scenario's
    /// order: what a run records.
    pub fn effective(&self) -> Vec<(String, String)> {
        self.values.iter().map(|(p, v)| (p.name.to_owned(), v.clone())).collect()
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
        self.typed(name, |s| {
            s.replace('_', "").parse::<u64>().map_err(|_| "expected a whole number such as 400".to_owned())
        })
    }

    /// A number: `150`, `0.5`.
    pub fn f64(&self, name: &str) -> Result<f64, ScenarioError> {
        self.typed(name, |s| match s.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            _ => Err("expected a number such as 150 or 0.5".to_owned()),
        })
    }

    /// A duration: `250ms`, `2s`, `1.5s`, `1m`.
    pub fn duration(&self, name: &str) -> Result<Duration, ScenarioError> {
        self.typed(name, parse_duration)
    }

    /// A switch: `true`/`false` (also `yes`/`no`, `on`/`off`, `1`/`0`).
    pub fn bool(&self, name: &str) -> Result<bool, ScenarioError> {
        self.typed(name, |s| match s.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok(true),
            "false" | "no" | "off" | "0" => Ok(false),
            _ => Err("expected true or false".to_owned()),
        })
    }

    /// One of `choices`.
    pub(crate) fn choice(&self, name: &str, choices: &[&'static str]) -> Result<&'static str, ScenarioError> {
        let value = self.string(name)?;
        choices
            .iter()
            .copied()
            .find(|c| *c == value)
            .ok_or_else(|| self.bad(name, format!("expected {}", choices.join(" or "))))
    }
}

/// Parses a byte size: a whole number with an optional binary unit (`K`,
/// `KB`, `KiB`: 1024; `M`...: 1 MiB; `G`...: 1 GiB), case-insensitive.
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
    num.checked_mul(1 << shift).ok_or_else(|| format!("{s} is too large"))
}

/// Parses a duration: a number followed by `ns`, `us`, `ms`, `s`, `m` or
/// `h`.
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
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s} is not a valid duration"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::{catalogue, find};

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
    fn unknown_keys_are_rejected_with_the_valid_ones() {
        let info = find("request-field-hold").unwrap();
        let e = Params::parse(info, &[("paylod".into(), "1KiB".into())]).unwrap_err().to_string();
        assert!(e.contains("\"paylod\""), "{e}");
        for p in info.params {
            assert!(e.contains(p.name), "{e} should list {}", p.name);
        }
    }

    #[test]
    fn values_are_checked_when_parsed() {
        let info = find("request-field-hold").unwrap();
        let e = Params::parse(info, &[("payload".into(), "lots".into())]).unwrap_err().to_string();
        assert!(e.contains("payload") && e.contains("64KiB"), "{e}");
        let e = Params::parse(info, &[("decode".into(), "zero".into())]).unwrap_err().to_string();
        assert!(e.contains("copy or nocopy"), "{e}");
    }

    #[test]
    fn later_pairs_win_and_effective_lists_every_param() {
        let info = find("steady").unwrap();
        let set = [("rps".to_owned(), "10".to_owned()), ("rps".to_owned(), "20".to_owned())];
        let p = Params::parse(info, &set).unwrap();
        assert_eq!(p.u64("rps").unwrap(), 20);
        let eff = p.effective();
        assert_eq!(eff.len(), info.params.len());
        assert!(eff.contains(&("rps".to_owned(), "20".to_owned())));
        assert!(eff.contains(&("payload".to_owned(), info.param("payload").unwrap().default.to_owned())));
    }

    #[test]
    fn every_default_parses() {
        for info in catalogue() {
            let p = Params::defaults(info).unwrap_or_else(|e| panic!("{}: {e}", info.name));
            assert_eq!(p.effective().len(), info.params.len());
        }
    }

    #[test]
    fn typed_getters() {
        let info = find("idle-connections").unwrap();
        let set = [("first_call".to_owned(), "no".to_owned()), ("idle_rate".to_owned(), "12.5".to_owned())];
        let p = Params::parse(info, &set).unwrap();
        assert!(!p.bool("first_call").unwrap());
        assert_eq!(p.f64("idle_rate").unwrap(), 12.5);
        assert_eq!(p.duration("idle_timeout").unwrap(), Duration::from_secs(1));
        assert!(p.u64("nope").is_err());
    }
}
