//! Robust trend statistics for short, noisy series (tens to a few thousand
//! points): slope, monotonic trend test, correlation, mean shifts, plateau.
//!
//! Every function ignores points that are NaN or infinite (for two series,
//! the pairs where either is) and returns `None` (or a neutral result) when
//! too few points remain; none panics on any input.
//!
//! Costs: [`mann_kendall`], [`median`], [`mad`], [`pearson`] and
//! [`spearman`] take O(n log n) on any length; [`theil_sen`] and
//! [`change_points`] are O(n²) on at most [`MAX_TREND_POINTS`] points, a
//! longer series being thinned to that many first.

/// The fewest points a series is read from at all: a slope needs two,
/// and a rise that stays (first point, peak, last point) three. A trend
/// *test* needs more: see [`fewest_points_for`].
pub(crate) const MIN_TREND_POINTS: usize = 3;

/// The fewest points at which [`mann_kendall`] can call a trend
/// significant at `alpha`: those of a strictly rising series, whose S is
/// the largest possible, `n(n−1)/2`. With fewer, no series passes, so a
/// rule that needs the test cannot fire (5 points at 0.05, 6 at 0.01).
pub(crate) fn fewest_points_for(alpha: f64) -> usize {
    (2..=MAX_TREND_POINTS)
        .find(|&n| mann_kendall(&(0..n).map(|i| i as f64).collect::<Vec<_>>()).p_value < alpha)
        .unwrap_or(MAX_TREND_POINTS)
}

/// [`theil_sen`] and [`change_points`] use at most this many points; a
/// longer series is thinned to this many, evenly spaced, keeping its first
/// and last points (both cost O(n²): at most 2 million pairs).
pub const MAX_TREND_POINTS: usize = 2000;

/// Multiply a [`mad`] by this to estimate a normal distribution's standard
/// deviation.
pub const MAD_TO_SIGMA: f64 = 1.482_602_218_505_602;

/// [`plateau`] calls a series flat at its end when the rise over its last
/// third is at most this fraction of its total rise.
pub const PLATEAU_TOLERANCE: f64 = 0.1;

/// A rising series has levelled off when its last third climbs at less than
/// this fraction of its overall Theil–Sen slope.
pub const LEVEL_OFF_PACE: f64 = 0.2;

fn finite(values: &[f64]) -> Vec<f64> {
    values.iter().copied().filter(|v| v.is_finite()).collect()
}

fn finite_pairs(x: &[f64], y: &[f64]) -> Vec<(f64, f64)> {
    x.iter().zip(y).map(|(&a, &b)| (a, b)).filter(|(a, b)| a.is_finite() && b.is_finite()).collect()
}

/// The median of finite values, reordering them.
fn median_in_place(v: &mut [f64]) -> Option<f64> {
    let n = v.len();
    if n == 0 {
        return None;
    }
    let mid = n / 2;
    let (lower, upper, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
    let upper = *upper;
    if n % 2 == 1 {
        return Some(upper);
    }
    let lower = lower.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some(lower / 2.0 + upper / 2.0)
}

/// The median of the finite values; `None` if there are none.
pub fn median(values: &[f64]) -> Option<f64> {
    median_in_place(&mut finite(values))
}

/// The median absolute deviation from the median of the finite values
/// (unscaled: multiply by [`MAD_TO_SIGMA`] for a standard deviation).
pub fn mad(values: &[f64]) -> Option<f64> {
    let mut v = finite(values);
    let m = median_in_place(&mut v)?;
    let mut deviations: Vec<f64> = v.iter().map(|x| (x - m).abs()).collect();
    median_in_place(&mut deviations)
}

/// `n` points of `points`, evenly spaced, first and last included.
fn thin<T: Copy>(points: &[T], n: usize) -> Vec<T> {
    if points.len() <= n || n < 2 {
        return points.to_vec();
    }
    let last = points.len() - 1;
    (0..n).map(|k| points[k * last / (n - 1)]).collect()
}

/// The Theil–Sen line through `(x, y)`: `(slope, intercept)`.
///
/// The slope is the median of the slopes between all pairs of points with
/// different `x`; the intercept is Sen's, the median of `y − slope·x`.
/// Half the points can be outliers without moving it much. `None` with
/// fewer than two distinct finite `x`.
pub fn theil_sen(x: &[f64], y: &[f64]) -> Option<(f64, f64)> {
    let points = thin(&finite_pairs(x, y), MAX_TREND_POINTS);
    let mut slopes = Vec::with_capacity(points.len() * points.len().saturating_sub(1) / 2);
    for (i, &(xi, yi)) in points.iter().enumerate() {
        for &(xj, yj) in &points[i + 1..] {
            let slope = (yj - yi) / (xj - xi);
            if xj != xi && slope.is_finite() {
                slopes.push(slope);
            }
        }
    }
    let slope = median_in_place(&mut slopes)?;
    let mut residuals: Vec<f64> = points.iter().map(|&(x, y)| y - slope * x).filter(|r| r.is_finite()).collect();
    let intercept = median_in_place(&mut residuals)?;
    Some((slope, intercept))
}

/// The Mann–Kendall trend test of a series (in order), see [`mann_kendall`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MkResult {
    /// Finite points used.
    pub n: usize,
    /// `S`: rising pairs minus falling pairs.
    pub s: i64,
    /// The variance of `S` under no trend, corrected for ties.
    pub var_s: f64,
    /// The normal score, with continuity correction (`(S − 1)/√var` for
    /// `S > 0`, `(S + 1)/√var` for `S < 0`, else 0).
    pub z: f64,
    /// The two-sided p-value of "no monotonic trend".
    pub p_value: f64,
    /// Kendall's tau: `S / (n(n−1)/2)`, from −1 (always falls) to 1
    /// (always rises).
    pub tau: f64,
}

/// The Mann–Kendall test for a monotonic trend in `y` (taken in order),
/// with tie correction and the normal approximation. With fewer than two
/// finite points, or all of them equal: `S = 0`, `p = 1`.
///
/// `S` is counted in O(n log n) as Knight's algorithm counts Kendall's tau:
/// of the `n(n−1)/2` pairs, `T` are ties (from the sorted values' runs)
/// and `D` fall (the inversions a merge sort counts), so
/// `S = n(n−1)/2 − T − 2D`, exactly the sum of `sign(y_j − y_i)` over
/// `i < j`.
pub fn mann_kendall(y: &[f64]) -> MkResult {
    let y = finite(y);
    let n = y.len();
    let mut sorted = y.clone();
    let falling = inversions(&mut sorted);
    let mut tied_pairs: i64 = 0;
    let ties: f64 = sorted
        .chunk_by(|a, b| a == b)
        .map(|group| {
            let t = group.len() as f64;
            tied_pairs += (group.len() as i64) * (group.len() as i64 - 1) / 2;
            t * (t - 1.0) * (2.0 * t + 5.0)
        })
        .sum();
    let all_pairs = (n as i64) * (n as i64 - 1).max(0) / 2;
    let s = all_pairs - tied_pairs - 2 * falling;
    let nf = n as f64;
    let var_s = ((nf * (nf - 1.0) * (2.0 * nf + 5.0) - ties) / 18.0).max(0.0);
    let z = if var_s <= 0.0 {
        0.0
    } else if s > 0 {
        (s - 1) as f64 / var_s.sqrt()
    } else if s < 0 {
        (s + 1) as f64 / var_s.sqrt()
    } else {
        0.0
    };
    let p_value = erfc(z.abs() / std::f64::consts::SQRT_2).clamp(0.0, 1.0);
    let pairs = nf * (nf - 1.0) / 2.0;
    let tau = if pairs > 0.0 { s as f64 / pairs } else { 0.0 };
    MkResult { n, s, var_s, z, p_value, tau }
}

/// Sorts finite `v` ascending (a stable merge sort) and returns how many
/// pairs `i < j` had `v[i] > v[j]`: equal values are no inversion.
fn inversions(v: &mut [f64]) -> i64 {
    let mut buffer = v.to_vec();
    let mut count = 0i64;
    let n = v.len();
    let mut width = 1;
    // Bottom-up: merge runs of `width` from `v` into `buffer`, then swap
    // roles, so no recursion and one extra buffer.
    let (mut from, mut to) = (v, buffer.as_mut_slice());
    let mut in_buffer = false;
    while width < n {
        let mut start = 0;
        while start < n {
            let mid = (start + width).min(n);
            let end = (start + 2 * width).min(n);
            let (mut i, mut j, mut k) = (start, mid, start);
            while i < mid && j < end {
                if from[j] < from[i] {
                    // Every value still waiting on the left is larger.
                    count += (mid - i) as i64;
                    to[k] = from[j];
                    j += 1;
                } else {
                    to[k] = from[i];
                    i += 1;
                }
                k += 1;
            }
            to[k..k + (mid - i)].copy_from_slice(&from[i..mid]);
            let k = k + (mid - i);
            to[k..k + (end - j)].copy_from_slice(&from[j..end]);
            start = end;
        }
        std::mem::swap(&mut from, &mut to);
        in_buffer = !in_buffer;
        width *= 2;
    }
    if in_buffer {
        // The sorted values are in `from`, which is the buffer: copy back.
        to.copy_from_slice(from);
    }
    count
}

/// The complementary error function, to a relative error below 1.2e-7
/// (the Chebyshev fit of Numerical Recipes, `erfcc`).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// Pearson's correlation of the finite pairs; `None` with fewer than two,
/// or if either series is constant.
pub fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    pearson_of(&finite_pairs(x, y))
}

fn pearson_of(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for &(x, y) in points {
        let (dx, dy) = (x - mx, y - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    let r = sxy / (sxx * syy).sqrt();
    (sxx > 0.0 && syy > 0.0 && r.is_finite()).then(|| r.clamp(-1.0, 1.0))
}

/// Ranks from 1, ties given their average rank.
fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        let average = (start + end + 1) as f64 / 2.0; // ranks start+1 ..= end
        for &i in &order[start..end] {
            ranks[i] = average;
        }
        start = end;
    }
    ranks
}

/// Spearman's rank correlation of the finite pairs (Pearson's on ranks,
/// ties averaged); `None` as for [`pearson`].
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    let points = finite_pairs(x, y);
    let xs: Vec<f64> = points.iter().map(|p| p.0).collect();
    let ys: Vec<f64> = points.iter().map(|p| p.1).collect();
    let ranked: Vec<(f64, f64)> = ranks(&xs).into_iter().zip(ranks(&ys)).collect();
    pearson_of(&ranked)
}

/// Where the mean of `y` shifts: the indexes at which a new segment
/// starts (never 0), in order.
///
/// Optimal partitioning (PELT without pruning, O(n²)): the segmentation
/// that minimises the sum of squared deviations from each segment's mean
/// plus `penalty` per change, every segment at least `min_size` points
/// long (at least 1). `penalty` is in the squared units of `y`; `None`
/// takes a BIC-like default, `2·σ²·ln n`, with the noise σ estimated
/// robustly from the differences of consecutive points (so steps do not
/// inflate it). A steady ramp is no mean shift: expect it cut into pieces.
/// NaN and infinite points are skipped; indexes still refer to `y`.
///
/// A series of more than [`MAX_TREND_POINTS`] finite points is first
/// thinned to that many, evenly spaced (first and last kept): the search
/// then costs at most 2 million segment costs, and a change is placed to
/// within `n / MAX_TREND_POINTS` points of where it is; `min_size` counts
/// thinned points.
pub fn change_points(y: &[f64], min_size: usize, penalty: Option<f64>) -> Vec<usize> {
    let finite: Vec<usize> = (0..y.len()).filter(|&i| y[i].is_finite()).collect();
    let kept = thin(&finite, MAX_TREND_POINTS);
    let values: Vec<f64> = kept.iter().map(|&i| y[i]).collect();
    let n = values.len();
    let min_size = min_size.max(1);
    if n < 2 * min_size {
        return Vec::new();
    }
    // Prefix sums of the centred series; cost(s, t) is the squared
    // deviation of values[s..t] from their mean.
    let mean = values.iter().sum::<f64>() / n as f64;
    let mut sum = vec![0.0; n + 1];
    let mut sum_sq = vec![0.0; n + 1];
    for (i, v) in values.iter().enumerate() {
        let c = v - mean;
        sum[i + 1] = sum[i] + c;
        sum_sq[i + 1] = sum_sq[i] + c * c;
    }
    let cost = |s: usize, t: usize| {
        let (d, d2) = (sum[t] - sum[s], sum_sq[t] - sum_sq[s]);
        (d2 - d * d / (t - s) as f64).max(0.0)
    };
    let beta = match penalty {
        Some(p) if p.is_finite() && p >= 0.0 => p,
        _ => default_penalty(&values, cost(0, n)),
    };
    // best[t]: the least penalised cost of values[..t]; last[t]: where its
    // last segment starts.
    let mut best = vec![f64::INFINITY; n + 1];
    let mut last = vec![0usize; n + 1];
    best[0] = -beta;
    for t in min_size..=n {
        let starts = std::iter::once(0).chain(min_size..=t - min_size);
        for s in starts {
            let candidate = best[s] + cost(s, t) + beta;
            if candidate < best[t] {
                best[t] = candidate;
                last[t] = s;
            }
        }
    }
    let mut changes = Vec::new();
    let mut t = n;
    while t > 0 && last[t] > 0 {
        t = last[t];
        changes.push(kept[t]);
    }
    changes.reverse();
    changes
}

/// `2·σ²·ln n` with σ from the differences of consecutive points; a
/// negligible floor keeps exact, noise-free steps from being split without
/// end.
fn default_penalty(values: &[f64], total_cost: f64) -> f64 {
    let diffs: Vec<f64> = values.windows(2).map(|w| w[1] - w[0]).collect();
    let sigma = mad(&diffs).unwrap_or(0.0) * MAD_TO_SIGMA / std::f64::consts::SQRT_2;
    let n = values.len() as f64;
    let bic = 2.0 * sigma * sigma * n.ln();
    let floor = 1e-9 * total_cost + f64::MIN_POSITIVE;
    if bic.is_finite() {
        bic.max(floor)
    } else {
        floor
    }
}

/// Whether a series stopped rising, see [`plateau`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlateauInfo {
    /// A rising series' last third climbs at less than [`LEVEL_OFF_PACE`]
    /// of its overall slope (or, when the series does not rise, its last
    /// third moves by at most [`PLATEAU_TOLERANCE`] of its range).
    pub is_plateau: bool,
    /// The level at the end minus the level at the start (each the median
    /// of the first or last twentieth of the points, one to five).
    pub total_rise: f64,
    /// The Theil–Sen slope of the last third, per point.
    pub last_third_slope: f64,
    /// That slope times the last third's length: what the last third
    /// rose.
    pub last_third_rise: f64,
    /// The fraction of the total rise reached by the end of the first two
    /// thirds; `None` if the series did not rise or fall at all.
    pub early_rise_fraction: Option<f64>,
}

/// Whether `y` (taken at evenly spaced times) levels off: a pool warming up
/// rises early and then stays flat; a leak keeps rising to the end. With
/// fewer than six finite points nothing is known and `is_plateau` is
/// false.
pub fn plateau(y: &[f64]) -> PlateauInfo {
    let unknown = PlateauInfo {
        is_plateau: false,
        total_rise: 0.0,
        last_third_slope: 0.0,
        last_third_rise: 0.0,
        early_rise_fraction: None,
    };
    let points: Vec<(f64, f64)> =
        y.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(i, &v)| (i as f64, v)).collect();
    let n = points.len();
    if n < 6 {
        return unknown;
    }
    let level = |range: &[(f64, f64)]| median(&range.iter().map(|p| p.1).collect::<Vec<_>>()).unwrap_or(0.0);
    let w = (n / 20).clamp(1, 5);
    let start = level(&points[..w]);
    let end = level(&points[n - w..]);
    let total_rise = end - start;

    let boundary = n - n / 3; // first point of the last third
    let around = (boundary - 1).saturating_sub(w / 2);
    let early = level(&points[around..(around + w).min(n)]);

    let last = &points[boundary..];
    if last.len() < 3 {
        return unknown;
    }
    let (xs, ys): (Vec<f64>, Vec<f64>) = last.iter().copied().unzip();
    let Some((slope, _)) = theil_sen(&xs, &ys) else { return unknown };
    let span = last[last.len() - 1].0 - last[0].0;
    let last_third_rise = slope * span;

    let (lo, hi) = points.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    let scale = if total_rise != 0.0 { total_rise.abs() } else { hi - lo };
    // A rising series has levelled off when its last third climbs at under
    // a fifth of its overall pace (a ramp's last third keeps the pace, up to
    // noise); a series that does not rise, when its last third stays
    // within the tolerance of its range.
    let (all_x, all_y): (Vec<f64>, Vec<f64>) = points.iter().copied().unzip();
    let overall = theil_sen(&all_x, &all_y).map_or(0.0, |(s, _)| s);
    let is_plateau = if overall > 0.0 && total_rise > 0.0 {
        slope <= LEVEL_OFF_PACE * overall
    } else {
        last_third_rise.abs() <= PLATEAU_TOLERANCE * scale
    };
    let early_rise_fraction = (total_rise != 0.0).then(|| (early - start) / total_rise).filter(|f| f.is_finite());
    PlateauInfo { is_plateau, total_rise, last_third_slope: slope, last_third_rise, early_rise_fraction }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * (1.0 + b.abs())
    }

    /// A deterministic, zero-mean, roughly uniform noise in [-1, 1].
    fn noise(i: usize) -> f64 {
        let x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let x = (x ^ (x >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        ((x >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }

    #[test]
    fn a_trend_test_needs_five_points_at_five_percent_and_six_at_one() {
        assert_eq!(fewest_points_for(0.05), 5);
        assert_eq!(fewest_points_for(0.01), 6);
        // The rising series of one point fewer is not significant.
        assert!(mann_kendall(&[0.0, 1.0, 2.0, 3.0]).p_value > 0.05);
    }

    #[test]
    fn median_and_mad() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, f64::INFINITY]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[1.0, f64::NAN, 5.0, 3.0]), Some(3.0));
        // |x - 2| = 1, 1, 0, 2, 4 -> median 1
        assert_eq!(mad(&[1.0, 3.0, 2.0, 4.0, 6.0]), Some(1.0));
        assert_eq!(mad(&[7.0]), Some(0.0));
    }

    #[test]
    fn theil_sen_exact_line() {
        let x: Vec<f64> = (0..10).map(f64::from).collect();
        let y: Vec<f64> = x.iter().map(|x| 3.0 * x + 2.0).collect();
        assert_eq!(theil_sen(&x, &y), Some((3.0, 2.0)));
    }

    #[test]
    fn theil_sen_known_small_data() {
        // Slopes of the 6 pairs: 1, 1.5, 1, 2, 1, 0 -> median 1;
        // y - x = 1, 1, 2, 1 -> intercept 1.
        let (slope, intercept) = theil_sen(&[0.0, 1.0, 2.0, 3.0], &[1.0, 2.0, 4.0, 4.0]).unwrap();
        assert_eq!((slope, intercept), (1.0, 1.0));
    }

    #[test]
    fn theil_sen_ignores_outliers() {
        let x: Vec<f64> = (0..50).map(f64::from).collect();
        let mut y: Vec<f64> = x.iter().map(|x| 0.5 * x + 10.0).collect();
        for i in [3, 17, 30, 44] {
            y[i] = 1e9;
        }
        y[20] = f64::NAN;
        let (slope, intercept) = theil_sen(&x, &y).unwrap();
        assert!(close(slope, 0.5, 1e-12) && close(intercept, 10.0, 1e-12), "{slope} {intercept}");
    }

    #[test]
    fn theil_sen_degenerate() {
        assert_eq!(theil_sen(&[], &[]), None);
        assert_eq!(theil_sen(&[1.0], &[1.0]), None);
        assert_eq!(theil_sen(&[2.0, 2.0, 2.0], &[1.0, 2.0, 3.0]), None);
        assert_eq!(theil_sen(&[0.0, f64::NAN], &[1.0, 2.0]), None);
    }

    #[test]
    fn theil_sen_thins_long_series() {
        let x: Vec<f64> = (0..5000).map(f64::from).collect();
        let y: Vec<f64> = x.iter().enumerate().map(|(i, x)| 2.0 * x + noise(i)).collect();
        let (slope, _) = theil_sen(&x, &y).unwrap();
        assert!(close(slope, 2.0, 1e-3), "{slope}");
    }

    #[test]
    fn erfc_matches_reference_values() {
        // Reference values from a double-precision libm erfc.
        for (x, want) in [
            (0.0, 1.0),
            (0.5, 0.4795001221869535),
            (1.0, 0.15729920705028513),
            (3.0, 2.2090496998585438e-05),
            (-1.5, 1.9661051464753108),
        ] {
            let got = erfc(x);
            assert!((got - want).abs() <= 1.2e-7 * want, "erfc({x}) = {got}, want {want}");
        }
    }

    #[test]
    fn mann_kendall_known_data() {
        // y = 1 2 3 5 4: 10 pairs, 9 rise, 1 falls: S = 8, no ties,
        // var = 5*4*15/18 = 16.667, z = 7/4.0825 = 1.7146, p = 0.08642.
        let mk = mann_kendall(&[1.0, 2.0, 3.0, 5.0, 4.0]);
        assert_eq!((mk.n, mk.s), (5, 8));
        assert!(close(mk.var_s, 50.0 / 3.0, 1e-12));
        assert!(close(mk.z, 7.0 / (50.0f64 / 3.0).sqrt(), 1e-12));
        assert!(close(mk.p_value, 0.086410, 1e-4), "{}", mk.p_value);
        assert!(close(mk.tau, 0.8, 1e-12));
    }

    #[test]
    fn mann_kendall_tie_correction() {
        // y = 1 1 2 2 3: S = 8 (2 tied pairs), ties: two groups of 2 ->
        // var = (5*4*15 - 2*(2*1*9))/18 = (300 - 36)/18 = 14.667.
        let mk = mann_kendall(&[1.0, 1.0, 2.0, 2.0, 3.0]);
        assert_eq!(mk.s, 8);
        assert!(close(mk.var_s, 264.0 / 18.0, 1e-12));
        assert!(close(mk.z, 7.0 / (264.0f64 / 18.0).sqrt(), 1e-12));
    }

    #[test]
    fn mann_kendall_trend_and_no_trend() {
        let rising: Vec<f64> = (0..60).map(|i| i as f64 + 5.0 * noise(i)).collect();
        let mk = mann_kendall(&rising);
        assert!(mk.p_value < 1e-6 && mk.tau > 0.5, "{mk:?}");
        let falling: Vec<f64> = rising.iter().rev().copied().collect();
        let mk = mann_kendall(&falling);
        assert!(mk.s < 0 && mk.z < 0.0 && mk.p_value < 1e-6, "{mk:?}");
        let flat: Vec<f64> = (0..60).map(noise).collect();
        assert!(mann_kendall(&flat).p_value > 0.05);
    }

    /// S by its definition, over every pair.
    fn quadratic_s(y: &[f64]) -> i64 {
        let y = finite(y);
        let mut s = 0;
        for (i, a) in y.iter().enumerate() {
            for b in &y[i + 1..] {
                s += match b.partial_cmp(a) {
                    Some(std::cmp::Ordering::Greater) => 1,
                    Some(std::cmp::Ordering::Less) => -1,
                    _ => 0,
                };
            }
        }
        s
    }

    #[test]
    fn mann_kendall_counts_s_as_its_definition() {
        // Random series of every length to 200, from few distinct values
        // (many ties) to many, with NaN, infinities and signed zeros.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for len in 0..200 {
            for distinct in [1, 2, 3, 10, 1000] {
                let y: Vec<f64> = (0..len)
                    .map(|_| match next() % 50 {
                        0 => f64::NAN,
                        1 => f64::INFINITY,
                        2 => -0.0,
                        3 => 0.0,
                        r => (next() % distinct) as f64 - (r % 2) as f64 * 0.5,
                    })
                    .collect();
                let mk = mann_kendall(&y);
                assert_eq!(mk.s, quadratic_s(&y), "{y:?}");
                let mut sorted = finite(&y);
                sorted.sort_by(f64::total_cmp);
                let mut merged = finite(&y);
                inversions(&mut merged);
                assert!(merged.iter().zip(&sorted).all(|(a, b)| a == b), "{merged:?}");
            }
        }
    }

    #[test]
    fn mann_kendall_on_a_long_series() {
        // 100 000 points: n log n merges; S of a strict ramp is every pair.
        let y: Vec<f64> = (0..100_000).map(f64::from).collect();
        let mk = mann_kendall(&y);
        assert_eq!(mk.s, 100_000 * 99_999 / 2);
        assert_eq!(mk.tau, 1.0);
        let reversed: Vec<f64> = y.iter().rev().copied().collect();
        assert_eq!(mann_kendall(&reversed).s, -mk.s);
    }

    #[test]
    fn change_points_thin_long_series() {
        // A step at 60 000 of 100 000 points: found within one thinning
        // stride (50 points), with an index into the original series.
        let y: Vec<f64> = (0..100_000).map(|i| if i < 60_000 { 0.0 } else { 10.0 } + noise(i)).collect();
        let cps = change_points(&y, 2, None);
        assert_eq!(cps.len(), 1, "{cps:?}");
        assert!(cps[0].abs_diff(60_000) <= 100_000 / MAX_TREND_POINTS, "{cps:?}");
    }

    #[test]
    fn mann_kendall_degenerate() {
        for y in [&[][..], &[1.0], &[2.0, 2.0, 2.0], &[f64::NAN, 1.0]] {
            let mk = mann_kendall(y);
            assert_eq!((mk.s, mk.z, mk.p_value), (0, 0.0, 1.0), "{y:?}");
        }
    }

    #[test]
    fn pearson_and_spearman_known_data() {
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        let y = [2.0, 4.0, 5.0, 4.0, 5.0];
        // sxy = 6, sxx = 10, syy = 6 -> r = 6/sqrt(60)
        assert!(close(pearson(&x, &y).unwrap(), 6.0 / 60f64.sqrt(), 1e-12));
        // ranks of y: 1, 2.5, 4.5, 2.5, 4.5 -> rho = 0.7378647873726218
        assert!(close(spearman(&x, &y).unwrap(), 0.7378647873726218, 1e-12));
        // A monotone but non-linear relation: spearman 1.
        let cubes: Vec<f64> = x.iter().map(|v| v * v * v).collect();
        assert_eq!(spearman(&x, &cubes), Some(1.0));
        assert!(pearson(&x, &cubes).unwrap() < 1.0);
        assert_eq!(pearson(&x, &[1.0; 5]), None);
        assert_eq!(pearson(&[1.0], &[1.0]), None);
        assert_eq!(spearman(&[1.0, f64::NAN, 3.0], &[3.0, 2.0, 1.0]), Some(-1.0));
    }

    #[test]
    fn ranks_average_ties() {
        assert_eq!(ranks(&[10.0, 20.0, 10.0, 30.0]), [1.5, 3.0, 1.5, 4.0]);
    }

    #[test]
    fn change_points_on_steps() {
        let mut y = vec![10.0; 20];
        y.extend([50.0; 15]);
        y.extend([20.0; 25]);
        let y: Vec<f64> = y.iter().enumerate().map(|(i, v)| v + noise(i)).collect();
        assert_eq!(change_points(&y, 3, None), [20, 35]);
    }

    #[test]
    fn change_points_exact_steps_and_flat() {
        let y = [0.0, 0.0, 0.0, 0.0, 7.0, 7.0, 7.0, 7.0];
        assert_eq!(change_points(&y, 2, None), [4]);
        assert!(change_points(&[3.0; 30], 2, None).is_empty());
        let flat: Vec<f64> = (0..100).map(noise).collect();
        assert!(change_points(&flat, 5, None).is_empty());
    }

    #[test]
    fn change_points_min_size_and_penalty() {
        let y = [0.0, 0.0, 0.0, 9.0, 0.0, 0.0, 0.0];
        assert_eq!(change_points(&y, 1, Some(1.0)), [3, 4]);
        // A one-point spike cannot be its own segment of two.
        assert!(change_points(&y, 3, Some(1.0)).len() <= 1);
        // A large penalty keeps everything in one segment.
        assert!(change_points(&y, 1, Some(1e6)).is_empty());
        assert!(change_points(&[1.0, 2.0], 2, None).is_empty());
    }

    #[test]
    fn change_points_index_into_the_original_series() {
        let y = [0.0, f64::NAN, 0.0, 0.0, 5.0, f64::INFINITY, 5.0, 5.0];
        assert_eq!(change_points(&y, 2, Some(0.1)), [4]);
    }

    #[test]
    fn plateau_after_warm_up() {
        // Rises over the first 10 points, then flat with noise.
        let y: Vec<f64> = (0..60).map(|i| 1000.0 * (i.min(10) as f64 / 10.0) + 5.0 * noise(i)).collect();
        let p = plateau(&y);
        assert!(p.is_plateau, "{p:?}");
        assert!((850.0..1010.0).contains(&p.total_rise), "{p:?}");
        assert!(p.early_rise_fraction.unwrap() > 0.95, "{p:?}");
    }

    #[test]
    fn no_plateau_while_leaking() {
        let y: Vec<f64> = (0..60).map(|i| 100.0 * i as f64 + 20.0 * noise(i)).collect();
        let p = plateau(&y);
        assert!(!p.is_plateau, "{p:?}");
        assert!(close(p.last_third_slope, 100.0, 0.05), "{p:?}");
        let early = p.early_rise_fraction.unwrap();
        assert!((0.55..0.75).contains(&early), "{p:?}");
    }

    #[test]
    fn plateau_degenerate() {
        assert!(!plateau(&[1.0, 2.0, 3.0]).is_plateau);
        let flat = plateau(&[5.0; 12]);
        assert!(flat.is_plateau && flat.early_rise_fraction.is_none(), "{flat:?}");
        assert!(!plateau(&[f64::NAN; 20]).is_plateau);
    }
}
