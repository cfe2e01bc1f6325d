//! The plain baseline the engine is scored against: a trend on RSS alone
//! (Theil–Sen slope with a Mann–Kendall test), as a detector without
//! profiles would do. It can say "leak", never which kind.

use crate::input::RunInput;
use crate::kind::{Kind, Mode};
use crate::stats::{fewest_points_for, mann_kendall, theil_sen};
use crate::units::{mib, MIB};
use crate::verdict::{Finding, Verdict};

/// Mann–Kendall's significance level for RSS: stricter than the engine's
/// per-site level, since RSS also moves with the allocator and the pool.
const RSS_TREND_SIGNIFICANCE: f64 = 0.01;

/// Leak when RSS over the load (warm-up and load phases, or every
/// snapshot when there are no phases) has a Mann–Kendall trend with
/// p < 0.01 and a Theil–Sen rise of at least `min_growth_bytes`.
pub fn rss_trend(input: &RunInput, min_growth_bytes: f64) -> Verdict {
    let rss = input.metric("rss_bytes");
    // Each metrics line carries its own phase; without one, the phase of
    // the run's spans at that time.
    let points: Vec<(f64, f64)> = input
        .metrics
        .iter()
        .filter_map(|l| {
            let v = l.get("rss_bytes")?;
            let phase = l.phase.as_deref().or_else(|| input.phase_at(l.t));
            (!matches!(phase, Some("drain" | "settle"))).then_some((l.t, v))
        })
        .collect();
    let none = |summary: String| Verdict {
        leak: false,
        kind: Kind::None,
        findings: Vec::new(),
        mode: Mode::RssTrend,
        snapshots: rss.len(),
        summary,
    };
    let fewest = fewest_points_for(RSS_TREND_SIGNIFICANCE);
    if points.len() < fewest {
        return none(format!(
            "{} RSS reading(s) under load: Mann-Kendall needs at least {fewest} to reach p < {RSS_TREND_SIGNIFICANCE}",
            points.len()
        ));
    }
    let (t, y): (Vec<f64>, Vec<f64>) = points.into_iter().unzip();
    let mk = mann_kendall(&y);
    let slope = theil_sen(&t, &y).map_or(0.0, |(s, _)| s);
    let rise = slope * (t[t.len() - 1] - t[0]);
    if mk.p_value < RSS_TREND_SIGNIFICANCE && slope > 0.0 && rise >= min_growth_bytes {
        Verdict {
            leak: true,
            kind: Kind::Unknown,
            findings: vec![Finding {
                kind: Kind::Unknown,
                score: 1.0 - mk.p_value,
                site: "process RSS".into(),
                growth_bytes_per_s: slope,
                growth_bytes: rise,
                evidence: vec![format!("RSS rises {:.0} B/s (Mann-Kendall p = {:.4})", slope, mk.p_value)],
                remedy: Kind::Unknown.remedy().into(),
                holder: None,
                also_held_by: Vec::new(),
            }],
            mode: Mode::RssTrend,
            snapshots: y.len(),
            summary: format!("RSS grows {:.2} MiB/s", slope / MIB),
        }
    } else {
        none(format!("no RSS trend (p = {:.3}, rise {})", mk.p_value, mib(rise)))
    }
}
