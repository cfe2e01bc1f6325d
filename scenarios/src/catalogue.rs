//! What each scenario is: its name, side, expected verdict, teaching text
//! and parameters.

use std::fmt;
use std::str::FromStr;

use crate::controls::{bounded_cache, burst, steady, warmup};
use crate::error::ScenarioError;
use crate::leaks::{
    conn_surge_request, conn_surge_response_copy, conn_surge_response_nocopy, duplicate_clients, idle_connections,
    oversized_request, request_field_hold, response_field_hold, sonic_string_hold,
};

/// Which side of an RPC the process under test is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The process under test serves; the peer sends the load.
    Server,
    /// The process under test calls a plain Echo server (the peer).
    Client,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Server => "server",
            Side::Client => "client",
        })
    }
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

/// One parameter a scenario takes (`--set name=value`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Param {
    /// The key.
    pub name: &'static str,
    /// The value when not set; always parses.
    pub default: &'static str,
    /// What it changes, with its unit.
    pub help: &'static str,
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
    /// What it reproduces, in the guide's words.
    pub reproduces: &'static str,
    /// Where the growth shows in a heap profile (frame names) and in the
    /// pool profile.
    pub profile_shows: &'static str,
    /// The guide's remedy and what the fix variant changes.
    pub fix: &'static str,
    /// Its parameters.
    pub params: &'static [Param],
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

    /// The parameter called `name`.
    pub fn param(&self, name: &str) -> Option<&'static Param> {
        self.params.iter().find(|p| p.name == name)
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

static CATALOGUE: [Info; 13] = [
    request_field_hold::INFO,
    response_field_hold::INFO,
    conn_surge_request::INFO,
    conn_surge_response_nocopy::INFO,
    conn_surge_response_copy::INFO,
    idle_connections::INFO,
    oversized_request::INFO,
    duplicate_clients::INFO,
    sonic_string_hold::INFO,
    steady::INFO,
    bounded_cache::INFO,
    warmup::INFO,
    burst::INFO,
];

/// Every scenario, leaks first, then the controls.
pub fn catalogue() -> &'static [Info] {
    &CATALOGUE
}

/// The scenario called `name`; the error lists the known names.
pub fn find(name: &str) -> Result<&'static Info, ScenarioError> {
    CATALOGUE.iter().find(|i| i.name == name).ok_or_else(|| ScenarioError::UnknownScenario {
        name: name.to_owned(),
        known: CATALOGUE.iter().map(|i| i.name).collect::<Vec<_>>().join(", "),
    })
}

// Parameters shared by many scenarios.

/// `payload`: msg bytes of the steady calls.
pub(crate) const fn payload(default: &'static str) -> Param {
    Param { name: "payload", default, help: "msg bytes of each steady call (1024, 16KiB, 1MiB)" }
}

/// `rps`: total steady call rate.
pub(crate) const fn rps(default: &'static str) -> Param {
    Param { name: "rps", default, help: "steady calls per second over all connections (0: as fast as answered)" }
}

/// `conns`: steady connections.
pub(crate) const fn conns(default: &'static str) -> Param {
    Param { name: "conns", default, help: "steady connections, each with one call in flight" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_exactly_the_design_catalogue() {
        let names: Vec<&str> = catalogue().iter().map(|i| i.name).collect();
        assert_eq!(
            names,
            [
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
            ]
        );
    }

    #[test]
    fn expected_kinds_are_design_verdicts() {
        for info in catalogue() {
            assert!(VERDICT_KINDS.contains(&info.expected), "{}: {}", info.name, info.expected);
            assert_eq!(info.control, info.expected == "none", "{}", info.name);
            assert_eq!(info.control, info.holder.is_empty(), "{}", info.name);
            assert_eq!(info.expected_kind(Variant::Fix), "none");
            assert_eq!(info.expected_kind(Variant::Leak), info.expected);
        }
    }

    #[test]
    fn variants_parse_and_print() {
        for v in Variant::ALL {
            assert_eq!(v.to_string().parse::<Variant>().unwrap(), v);
        }
        let e = "leaky".parse::<Variant>().unwrap_err();
        assert!(e.to_string().contains("leak or fix"), "{e}");
    }

    #[test]
    fn find_names_the_known_scenarios_when_it_fails() {
        assert_eq!(find("steady").unwrap().name, "steady");
        let e = find("stedy").unwrap_err().to_string();
        assert!(e.contains("\"stedy\"") && e.contains("request-field-hold") && e.contains("burst"), "{e}");
    }

    #[test]
    fn every_scenario_has_teaching_text_and_unique_params() {
        for info in catalogue() {
            assert!(info.reproduces.len() > 80, "{}", info.name);
            assert!(info.profile_shows.len() > 80, "{}", info.name);
            assert!(info.fix.len() > 40, "{}", info.name);
            let mut names: Vec<&str> = info.params.iter().map(|p| p.name).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), info.params.len(), "{}: duplicate parameter", info.name);
        }
    }
}
