//! A comparison's figure (`compare.svg`): one bar per metric, the median
//! of the per-round ratios b/a on a logarithmic axis around 1 (no change),
//! with a whisker from the smallest to the largest round's ratio, coloured
//! by whether b is better, worse, or within the rounds' noise.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::chart::{FONT, INK};

/// One metric's bar.
#[derive(Debug, Clone)]
pub(crate) struct RatioBar {
    /// The metric, as the table names it.
    pub(crate) label: String,
    /// Median, smallest and largest per-round ratio b/a; `None` when it
    /// could not be taken (the figure was not measured, or a was 0).
    pub(crate) ratio: Option<(f64, f64, f64)>,
    /// `Some(true)` when b is better on every round, `Some(false)` when it
    /// is worse on every round, `None` within the noise.
    pub(crate) b_better: Option<bool>,
}

/// b better than a on every round.
const BETTER: RGBColor = RGBColor(60, 150, 80);
/// b worse than a on every round.
const WORSE: RGBColor = RGBColor(214, 69, 65);
/// Rounds disagree on the direction.
const NOISE: RGBColor = RGBColor(160, 160, 160);

/// Height of one metric's row.
const ROW: u32 = 34;
/// The smallest and largest ratio the axis shows (a fix that removes a
/// leak can divide its rate by thousands).
const FLOOR: f64 = 1e-4;
const CEILING: f64 = 1e4;

/// The axis: powers of ten (as log10) around every finite ratio, at least
/// 0.5 to 2.
fn axis(bars: &[RatioBar]) -> (f64, f64) {
    let (mut lo, mut hi) = (0.5f64, 2.0f64);
    for (median, min, max) in bars.iter().filter_map(|b| b.ratio) {
        for v in [median, min] {
            if v > 0.0 && v.is_finite() {
                lo = lo.min(v);
            }
        }
        if max.is_finite() {
            hi = hi.max(max);
        }
    }
    (lo.clamp(FLOOR, 1.0).log10().floor(), hi.clamp(1.0, CEILING).log10().ceil())
}

/// Where a ratio sits on the axis (log10), pinned to its ends; a ratio of
/// zero or less sits at the left end.
fn place(v: f64, (lo, hi): (f64, f64)) -> f64 {
    if v > 0.0 {
        v.log10().clamp(lo, hi)
    } else {
        lo
    }
}

/// A ratio as the figure writes it.
fn ratio_text(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() < 0.01 {
        format!("{v:.1e}")
    } else if v.abs() < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.0}")
    }
}

/// Ticks of the axis: each power of ten, and 2 and 5 times it when the
/// axis spans at most two decades.
fn ticks((lo, hi): (f64, f64)) -> Vec<f64> {
    let mut out = Vec::new();
    let mut p = lo as i32;
    while p as f64 <= hi {
        for m in [1.0, 2.0, 5.0] {
            // 10^k is exact for the axis' k, so a division is rounded once.
            let v = if p < 0 { m / 10f64.powi(-p) } else { m * 10f64.powi(p) };
            let at = v.log10();
            if (m == 1.0 || hi - lo <= 2.0) && at <= hi + 1e-9 {
                out.push(v);
            }
        }
        p += 1;
    }
    out
}

/// The figure, as SVG text.
pub(crate) fn ratio_chart(title: &str, a: &str, b: &str, bars: &[RatioBar]) -> anyhow::Result<String> {
    let n = bars.len().max(1);
    let (width, plot_h) = (1000u32, 110 + ROW * n as u32);
    let height = plot_h + 86;
    let range = axis(bars);
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (width, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let (upper, lower) = root.split_vertically(plot_h);
        let mut chart = ChartBuilder::on(&upper)
            .caption(title, (FONT, 17))
            .margin(10)
            .margin_left(190)
            .margin_right(150)
            .x_label_area_size(44)
            .y_label_area_size(0)
            .build_cartesian_2d(range.0..range.1, 0f64..n as f64)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(0)
            .y_labels(0)
            .x_desc("b / a: median of the per-round ratios (logarithmic; 1 = no change)")
            .axis_desc_style((FONT, 13))
            .draw()?;
        let small = |h: HPos| TextStyle::from((FONT, 11).into_font()).color(&INK).pos(Pos::new(h, VPos::Center));
        let tick_style = TextStyle::from((FONT, 12).into_font()).color(&INK).pos(Pos::new(HPos::Center, VPos::Top));
        for v in ticks(range) {
            let x = v.log10();
            let grid = if (v - 1.0).abs() < 1e-9 { INK.mix(0.7) } else { BLACK.mix(0.1) };
            chart.draw_series(std::iter::once(PathElement::new(vec![(x, 0.0), (x, n as f64)], grid)))?;
            let (px, py) = chart.backend_coord(&(x, 0.0));
            // Ticks are 1, 2 or 5 times a power of ten: written in full.
            root.draw(&Text::new(format!("×{v}"), (px, py + 6), tick_style.clone()))?;
        }
        let name_style = TextStyle::from((FONT, 13).into_font()).color(&INK).pos(Pos::new(HPos::Right, VPos::Center));
        for (i, bar) in bars.iter().enumerate() {
            let y = (n - i) as f64 - 0.5;
            let (px, py) = chart.backend_coord(&(range.0, y));
            root.draw(&Text::new(bar.label.clone(), (px - 8, py), name_style.clone()))?;
            let Some((median, min, max)) = bar.ratio else {
                let (px, py) = chart.backend_coord(&(0.0, y));
                root.draw(&Text::new("not measured (or a was 0)", (px + 6, py), small(HPos::Left)))?;
                continue;
            };
            let color = match bar.b_better {
                Some(true) => BETTER,
                Some(false) => WORSE,
                None => NOISE,
            };
            let m = place(median, range);
            chart.draw_series(std::iter::once(Rectangle::new(
                [(0f64.min(m), y - 0.28), (0f64.max(m), y + 0.28)],
                color.filled(),
            )))?;
            let (lo, hi) = (place(min, range), place(max, range));
            let whisker = INK.stroke_width(2);
            chart.draw_series(std::iter::once(PathElement::new(vec![(lo, y), (hi, y)], whisker)))?;
            for end in [lo, hi] {
                chart
                    .draw_series(std::iter::once(PathElement::new(vec![(end, y - 0.15), (end, y + 0.15)], whisker)))?;
            }
            let label = if min == max {
                format!("×{}", ratio_text(median))
            } else {
                format!("×{} ({}–{})", ratio_text(median), ratio_text(min), ratio_text(max))
            };
            // Right of the bar, the whisker and the line of 1, whichever
            // ends last.
            let (px, py) = chart.backend_coord(&(hi.max(m).max(0.0), y));
            root.draw(&Text::new(label, (px + 6, py), small(HPos::Left)))?;
        }
        // The legend, and what a and b are.
        let key = TextStyle::from((FONT, 13).into_font()).color(&INK).pos(Pos::new(HPos::Left, VPos::Center));
        let entries = [
            ("b better on every round", BETTER),
            ("b worse on every round", WORSE),
            ("within the rounds' noise", NOISE),
        ];
        for (k, (label, color)) in entries.into_iter().enumerate() {
            let x = 60 + k as i32 * 215;
            lower.draw(&Rectangle::new([(x, 9), (x + 22, 21)], color.filled()))?;
            lower.draw(&Text::new(label, (x + 30, 15), key.clone()))?;
        }
        let x = 60 + 3 * 215;
        lower.draw(&PathElement::new(vec![(x, 15), (x + 22, 15)], INK.stroke_width(2)))?;
        lower.draw(&PathElement::new(vec![(x, 10), (x, 20)], INK.stroke_width(2)))?;
        lower.draw(&PathElement::new(vec![(x + 22, 10), (x + 22, 20)], INK.stroke_width(2)))?;
        lower.draw(&Text::new("smallest to largest round", (x + 30, 15), key.clone()))?;
        lower.draw(&Text::new(format!("a: {a}"), (60, 45), key.clone()))?;
        lower.draw(&Text::new(format!("b: {b}"), (60, 68), key))?;
        root.present()?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(label: &str, ratio: Option<(f64, f64, f64)>, b_better: Option<bool>) -> RatioBar {
        RatioBar { label: label.into(), ratio, b_better }
    }

    #[test]
    fn the_axis_holds_every_ratio_in_whole_decades() {
        assert_eq!(axis(&[]), (-1.0, 1.0));
        assert_eq!(axis(&[bar("x", Some((0.9, 0.8, 1.1)), None)]), (-1.0, 1.0));
        assert_eq!(axis(&[bar("x", Some((0.002, 0.0, 0.003)), Some(true))]), (-3.0, 1.0));
        assert_eq!(axis(&[bar("x", Some((1e-9, 1e-9, 1e9)), None)]), (-4.0, 4.0));
        assert_eq!(place(0.0, (-3.0, 1.0)), -3.0);
        assert_eq!(place(-2.0, (-3.0, 1.0)), -3.0);
        assert_eq!(place(100.0, (-3.0, 1.0)), 1.0);
        assert_eq!(ticks((-1.0, 1.0)), [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0]);
        assert_eq!(ticks((-3.0, 1.0)), [0.001, 0.01, 0.1, 1.0, 10.0]);
    }

    #[test]
    fn the_figure_names_every_metric_and_both_sides() {
        let bars = [
            bar("req/s", Some((1.0, 0.97, 1.02)), None),
            bar("CPU µs/call", Some((0.8, 0.7, 0.9)), Some(true)),
            bar("leaked MiB/s", Some((0.0, 0.0, 0.001)), Some(true)),
            bar("latency p50 ms", None, None),
            bar("held <after> drain", Some((3.0, 2.0, 4.0)), Some(false)),
        ];
        let svg = ratio_chart("leaklab compare x", "leak", "fix & co", &bars).expect("drawn");
        assert!(svg.starts_with("<svg"), "{}", &svg[..60]);
        for text in ["req/s", "CPU µs/call", "×0.80 (0.70–0.90)", "not measured", "a: leak", "b: fix &amp; co"] {
            assert!(svg.contains(text), "{text} missing");
        }
        assert!(svg.contains("held &lt;after&gt; drain"), "labels are escaped");
    }
}
