//! Exercises drawn at random: a scenario, a variant, and a value for each
//! parameter in its documented range ([`Vary`]), for blind exercises
//! (`leaklab quiz`) and detector sweeps.
//!
//! Everything is drawn from the random number generator given, in a fixed
//! order (the catalogue's, then the parameters' as declared; a
//! [`Vary::Fixed`] parameter draws nothing), so that the same seed gives the
//! same exercise on every machine.
//!
//! ```
//! use rand::SeedableRng;
//! use scenarios::{draw_exercise, Level};
//!
//! let a = draw_exercise(Level::Easy, &mut rand::rngs::StdRng::seed_from_u64(7));
//! let b = draw_exercise(Level::Easy, &mut rand::rngs::StdRng::seed_from_u64(7));
//! assert_eq!(a, b);
//! assert!(!a.info.control && a.expected() != "none");
//! scenarios::Params::parse(a.info, &a.set).unwrap();
//! ```

use std::fmt;

use rand::Rng;

use crate::catalogue::catalogue;
use crate::params::Vary;
use crate::scenario::{Info, Variant};

/// Which runs an exercise is drawn from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Level {
    /// The leak variant of a leak scenario: something leaks; which case?
    #[default]
    Easy,
    /// Also the fix variants and the healthy controls, one exercise in
    /// three: `none` is a possible answer.
    Hard,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Easy => "easy",
            Level::Hard => "hard",
        })
    }
}

/// A drawn run: the scenario, its variant and the parameters set.
#[derive(Clone, Debug)]
pub struct Exercise {
    /// The scenario.
    pub info: &'static Info,
    /// Its variant (`leak` for a control, which has one behaviour).
    pub variant: Variant,
    /// The parameters drawn, as `--set` pairs, in the scenario's order; the
    /// others keep their defaults.
    pub set: Vec<(String, String)>,
}

impl PartialEq for Exercise {
    fn eq(&self, other: &Exercise) -> bool {
        (self.info.name, self.variant, &self.set) == (other.info.name, other.variant, &other.set)
    }
}

impl Eq for Exercise {}

impl Exercise {
    /// The verdict kind a right diagnosis gives.
    pub fn expected(&self) -> &'static str {
        self.info.expected_kind(self.variant)
    }
}

/// Draws an exercise of `level`: the expected verdict kind first, uniformly
/// among the leak kinds (at `Hard`, `none` one time in three), then a run
/// with that verdict, uniformly (the three connection-surge scenarios share
/// one kind; a healthy run is a fix variant or a control), then its
/// parameters ([`draw_params`]).
pub fn draw_exercise<R: Rng + ?Sized>(level: Level, rng: &mut R) -> Exercise {
    let runs: Vec<(&'static Info, Variant)> = catalogue()
        .iter()
        .flat_map(|i| if i.control { vec![(i, Variant::Leak)] } else { vec![(i, Variant::Leak), (i, Variant::Fix)] })
        .collect();
    let mut leak_kinds: Vec<&str> = Vec::new();
    for kind in runs.iter().map(|(i, v)| i.expected_kind(*v)).filter(|k| *k != "none") {
        if !leak_kinds.contains(&kind) {
            leak_kinds.push(kind);
        }
    }
    let kind = match level {
        Level::Hard if pick(rng, 3) == 0 => "none",
        _ => leak_kinds[pick(rng, leak_kinds.len())],
    };
    let with_kind: Vec<&(&'static Info, Variant)> = runs.iter().filter(|(i, v)| i.expected_kind(*v) == kind).collect();
    let &(info, variant) = with_kind[pick(rng, with_kind.len())];
    Exercise { info, variant, set: draw_params(info, rng) }
}

/// Draws a value for each parameter of `info` that varies, in the order
/// declared; the pairs go to [`Params::parse`](crate::Params::parse) as
/// `--set` pairs would.
pub fn draw_params<R: Rng + ?Sized>(info: &Info, rng: &mut R) -> Vec<(String, String)> {
    info.params
        .iter()
        .filter_map(|p| {
            let value = match p.vary {
                Vary::Fixed => return None,
                Vary::Choices(choices) => choices[pick(rng, choices.len())].to_owned(),
                Vary::Range { lo, hi } => rng.random_range(lo..=hi.max(lo)).to_string(),
            };
            Some((p.name.to_owned(), value))
        })
        .collect()
}

/// An index below `n`, drawn as a `u64` so that it is the same on 32- and
/// 64-bit machines.
fn pick<R: Rng + ?Sized>(rng: &mut R, n: usize) -> usize {
    rng.random_range(0..n.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;
    use crate::params::Params;

    #[test]
    fn every_value_in_a_range_passes_its_check_and_the_default_is_in_it() {
        for info in catalogue() {
            for p in info.params {
                assert!(p.vary.holds(p.default, p.default), "{}: {} default outside {}", info.name, p.name, p.vary);
                let ends: Vec<String> = match p.vary {
                    Vary::Fixed => vec![],
                    Vary::Choices(choices) => {
                        assert!(choices.len() >= 2, "{}: {} has one choice", info.name, p.name);
                        choices.iter().map(|c| c.to_string()).collect()
                    }
                    Vary::Range { lo, hi } => {
                        assert!(lo < hi, "{}: {} range {lo}..={hi}", info.name, p.name);
                        vec![lo.to_string(), hi.to_string()]
                    }
                };
                for value in ends {
                    assert_eq!(p.check.check(&value), Ok(()), "{}: {}={value}", info.name, p.name);
                }
            }
        }
    }

    #[test]
    fn drawn_parameters_parse_together() {
        for seed in 0..300 {
            let mut rng = StdRng::seed_from_u64(seed);
            for info in catalogue() {
                let set = draw_params(info, &mut rng);
                for (name, value) in &set {
                    let p = info.param(name).expect("a drawn parameter is declared");
                    assert!(p.vary.holds(value, p.default), "{}: {name}={value} outside {}", info.name, p.vary);
                    assert_eq!(p.check.check(value), Ok(()), "{}: {name}={value}", info.name);
                }
                if let Err(e) = Params::parse(info, &set) {
                    panic!("{} with {set:?}: {e}", info.name);
                }
            }
        }
    }

    #[test]
    fn every_scenario_has_a_parameter_that_varies() {
        for info in catalogue() {
            assert!(info.params.iter().any(|p| p.vary != Vary::Fixed), "{}", info.name);
        }
    }

    #[test]
    fn a_seed_gives_one_exercise() {
        for level in [Level::Easy, Level::Hard] {
            for seed in 0..50 {
                let a = draw_exercise(level, &mut StdRng::seed_from_u64(seed));
                let b = draw_exercise(level, &mut StdRng::seed_from_u64(seed));
                assert_eq!(a, b, "{level} seed {seed}");
            }
        }
    }

    #[test]
    fn easy_draws_leaks_and_hard_draws_healthy_runs_too() {
        let draws = |level| (0..300).map(move |seed| draw_exercise(level, &mut StdRng::seed_from_u64(seed)));
        assert!(draws(Level::Easy).all(|e| e.variant == Variant::Leak && !e.info.control));
        let easy: std::collections::HashSet<&str> = draws(Level::Easy).map(|e| e.info.name).collect();
        assert_eq!(easy.len(), catalogue().iter().filter(|i| !i.control).count(), "every leak is drawn: {easy:?}");
        let healthy = draws(Level::Hard).filter(|e| e.expected() == "none").count();
        assert!((60..=140).contains(&healthy), "{healthy} healthy of 300 at hard");
        let surges = draws(Level::Easy).filter(|e| e.expected() == "connection-surge-barriers").count();
        assert!((20..=70).contains(&surges), "{surges} of 300: kinds are drawn, not scenarios");
        assert!(draws(Level::Hard).any(|e| e.info.control));
        assert!(draws(Level::Hard).any(|e| e.variant == Variant::Fix));
    }

    /// The same seed is the same exercise on every machine: a change here
    /// (another rand, another order of drawing) changes every class's
    /// exercises, and must be deliberate.
    #[test]
    fn seed_42_is_pinned() {
        let e = draw_exercise(Level::Hard, &mut StdRng::seed_from_u64(42));
        let got = format!("{} {} {:?}", e.info.name, e.variant, e.set);
        assert_eq!(
            got, r#"idle-connections leak [("payload", "1KiB"), ("rps", "31"), ("idle_rate", "141")]"#,
            "update the pinned exercise only on purpose"
        );
    }
}
