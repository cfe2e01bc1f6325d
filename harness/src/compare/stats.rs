//! The statistics of a comparison: the median of each side's rounds with
//! their spread, and the ratio b/a taken round by round.
//!
//! The two sides of a round run back to back, so a ratio of the same
//! round cancels what changed on the machine between rounds (other work on
//! shared cores, the CPU's clock); the median of those paired ratios, with
//! their smallest and largest, says how large the change is and how much
//! of it noise could make.

use serde::{Deserialize, Serialize};

/// The median of some values with their smallest and largest.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// The median (of an even count, the mean of the middle two).
    pub median: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
    /// How many values.
    pub n: usize,
}

impl Spread {
    /// Of the finite values among `values`; `None` when there are none.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Some(Spread { median, min: v[0], max: v[n - 1], n })
    }
}

/// The ratio b/a of each round where both sides were measured and a's
/// value is above zero (a ratio to zero or to a negative value says
/// nothing).
pub fn paired_ratios(a: &[Option<f64>], b: &[Option<f64>]) -> Vec<f64> {
    a.iter()
        .zip(b)
        .filter_map(|(a, b)| match (a, b) {
            (Some(a), Some(b)) if *a > 0.0 && a.is_finite() && b.is_finite() => Some(b / a),
            _ => None,
        })
        .collect()
}

/// Changes smaller than this share are not called a change, however
/// steady: a median b/a within 1 ± this is `within noise`.
pub const SMALLEST_CHANGE: f64 = 0.02;

/// Which way b moved from a, judged on the per-round ratios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Change {
    /// Every round's b/a is below 1, the median by more than
    /// [`SMALLEST_CHANGE`].
    Lower,
    /// Every round's b/a is above 1, the median by more than
    /// [`SMALLEST_CHANGE`].
    Higher,
    /// The rounds' ratios hold 1, or their median is within
    /// [`SMALLEST_CHANGE`] of it: no change that this machine's noise could
    /// not make.
    WithinNoise,
}

impl Change {
    /// Of the per-round ratios' spread.
    pub fn of(ratio: &Spread) -> Change {
        if ratio.max < 1.0 && ratio.median < 1.0 - SMALLEST_CHANGE {
            Change::Lower
        } else if ratio.min > 1.0 && ratio.median > 1.0 + SMALLEST_CHANGE {
            Change::Higher
        } else {
            Change::WithinNoise
        }
    }

    /// `lower`, `higher`, `within noise`.
    pub fn words(self) -> &'static str {
        match self {
            Change::Lower => "lower",
            Change::Higher => "higher",
            Change::WithinNoise => "within noise",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Median, smallest, largest and count.
    type Summed = (f64, f64, f64, usize);

    fn spread(values: &[f64]) -> Option<Summed> {
        Spread::of(values.iter().copied()).map(|s| (s.median, s.min, s.max, s.n))
    }

    #[test]
    fn medians_and_spreads() {
        let cases: &[(&[f64], Option<Summed>)] = &[
            (&[], None),
            (&[f64::NAN, f64::INFINITY], None),
            (&[3.0], Some((3.0, 3.0, 3.0, 1))),
            (&[5.0, 1.0, 3.0], Some((3.0, 1.0, 5.0, 3))),
            (&[4.0, 1.0, 3.0, 10.0], Some((3.5, 1.0, 10.0, 4))),
            (&[2.0, f64::NAN, -1.0], Some((0.5, -1.0, 2.0, 2))),
            (&[7.0, 7.0, 7.0, 7.0, 100.0], Some((7.0, 7.0, 100.0, 5))),
        ];
        for (values, want) in cases {
            assert_eq!(spread(values), *want, "{values:?}");
        }
    }

    #[test]
    fn ratios_pair_rounds_and_skip_what_says_nothing() {
        let a = [Some(100.0), Some(200.0), None, Some(0.0), Some(-5.0), Some(50.0)];
        let b = [Some(90.0), Some(220.0), Some(1.0), Some(3.0), Some(1.0), None];
        assert_eq!(paired_ratios(&a, &b), [0.9, 1.1]);
        // A fix that leaks nothing: a ratio of zero is a real answer.
        assert_eq!(paired_ratios(&[Some(4.0e6)], &[Some(0.0)]), [0.0]);
        assert!(paired_ratios(&[], &[]).is_empty());
    }

    #[test]
    fn a_change_must_be_larger_than_the_rounds_disagree() {
        let of = |v: &[f64]| Change::of(&Spread::of(v.iter().copied()).expect("values"));
        assert_eq!(of(&[0.5, 0.6, 0.7]), Change::Lower);
        assert_eq!(of(&[1.1, 1.3]), Change::Higher);
        assert_eq!(of(&[0.8, 1.2, 0.9]), Change::WithinNoise);
        assert_eq!(of(&[1.0]), Change::WithinNoise);
        // Steady, but too small to matter.
        assert_eq!(of(&[1.003, 1.004, 1.01]), Change::WithinNoise);
        assert_eq!(of(&[0.97, 0.99, 0.99]), Change::WithinNoise);
        assert_eq!(of(&[0.97, 0.975, 0.99]), Change::Lower);
    }
}
