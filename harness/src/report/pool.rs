//! The pool's view (`pool-NNN.pb.gz`): bytes pinned in pooled chunks after
//! the buffer that took them let go, by who holds them (a decoded field, a
//! barrier slot) and by who took them from the pool (the read path,
//! encoding), over time; beside them, as lines, the bytes that connection
//! buffers are using and those cached in the free list.
//!
//! Each pool sample's stack is, leaf first, `[holder, taker, Pool::lease]`
//! (`harness::poolprof`), with the string label `pinned`.

use std::collections::BTreeMap;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::chart::{
    draw_legend, draw_message, finite, legend_height, nice_ceil, stack, Entry, Mark, FONT, MIB, PALETTE,
};
use super::run::Run;

/// How many holders or takers a chart names; the rest is one band.
const TOP: usize = 6;

/// Height of a plot, without its legend.
const PLOT_HEIGHT: u32 = 300;

/// Bytes in use by the connection buffers that took them (not pinned).
const IN_USE: RGBColor = RGBColor(40, 40, 40);

/// Bytes cached in the free list.
const CACHED: RGBColor = RGBColor(120, 120, 200);

/// The frame of a chunk in use by its own buffer.
const IN_USE_HOLDER: &str = "held by its connection buffer";

/// The frame of cached chunks.
const CACHED_HOLDER: &str = "cached in the free list";

/// The pool's view of one run.
#[derive(Debug, Clone, Default)]
pub(super) struct PoolView {
    /// Snapshot times.
    t: Vec<f64>,
    /// Pinned bytes by holder, most first.
    by_holder: Vec<(String, Vec<f64>)>,
    /// Pinned bytes by taker, most first.
    by_taker: Vec<(String, Vec<f64>)>,
    /// Bytes in use by connection buffers.
    in_use: Vec<f64>,
    /// Bytes cached.
    cached: Vec<f64>,
}

/// The series with the largest peaks first, at most [`TOP`] of them and
/// the rest summed as "other".
fn top(map: BTreeMap<String, Vec<f64>>, n: usize) -> Vec<(String, Vec<f64>)> {
    let peak = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let mut all: Vec<(String, Vec<f64>)> = map.into_iter().filter(|(_, v)| peak(v) > 0.0).collect();
    all.sort_by(|a, b| peak(&b.1).total_cmp(&peak(&a.1)).then_with(|| a.0.cmp(&b.0)));
    if all.len() > TOP {
        let rest: Vec<(String, Vec<f64>)> = all.split_off(TOP - 1);
        let mut sum = vec![0.0; n];
        for (_, v) in rest {
            for (s, x) in sum.iter_mut().zip(v) {
                *s += x;
            }
        }
        all.push(("other".to_owned(), sum));
    }
    all
}

impl PoolView {
    /// Reads the pool profiles of a run (none: an empty view).
    pub(super) fn of(run: &Run) -> PoolView {
        let pools = &run.input.pools;
        let n = pools.len();
        let t: Vec<f64> = (0..n)
            .map(|i| match run.times.get(i) {
                Some(s) if run.times.len() == n => finite(s.t),
                _ => i as f64 * if run.record.interval_s > 0.0 { run.record.interval_s } else { 1.0 },
            })
            .collect();
        let mut holders: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        let mut takers: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        let (mut in_use, mut cached) = (vec![0.0; n], vec![0.0; n]);
        for (i, p) in pools.iter().enumerate() {
            for s in &p.samples {
                let bytes = finite(s.inuse_bytes);
                let holder = s.frames.first().map_or("unknown holder", |f| f.function.as_str());
                let pinned = s.labels.iter().any(|(k, v)| k == "pinned" && v == "true");
                if pinned {
                    holders.entry(holder.to_owned()).or_insert_with(|| vec![0.0; n])[i] += bytes;
                    let taker = s.frames.get(1).map_or("unknown taker", |f| f.function.as_str());
                    takers.entry(taker.to_owned()).or_insert_with(|| vec![0.0; n])[i] += bytes;
                } else if holder == CACHED_HOLDER {
                    cached[i] += bytes;
                } else if holder == IN_USE_HOLDER {
                    in_use[i] += bytes;
                }
            }
        }
        PoolView { t, by_holder: top(holders, n), by_taker: top(takers, n), in_use, cached }
    }

    /// Whether the run has pool profiles.
    pub(super) fn is_empty(&self) -> bool {
        self.t.is_empty()
    }

    fn pinned_top(&self) -> f64 {
        (0..self.t.len()).map(|i| self.by_holder.iter().map(|(_, v)| v[i]).sum::<f64>()).fold(0.0, f64::max)
    }

    fn top(&self) -> f64 {
        let lines = self.in_use.iter().chain(&self.cached).copied().fold(0.0, f64::max);
        self.pinned_top().max(lines) / MIB
    }
}

/// The ranges that hold every view given: seconds, MiB.
pub(super) fn scale(views: &[&PoolView]) -> (f64, f64) {
    let x = views.iter().flat_map(|v| v.t.iter().copied()).fold(1.0, f64::max).ceil();
    (x, nice_ceil(views.iter().map(|v| v.top()).fold(0.0, f64::max) * 1.08, 0.5))
}

/// The two charts (by holder, by taker) as one SVG `width` pixels wide.
pub(super) fn svg(view: &PoolView, (x, y_mib): (f64, f64), width: u32, title: &str) -> anyhow::Result<String> {
    let holder_entries = entries(&view.by_holder, true);
    let taker_entries = entries(&view.by_taker, false);
    let legend = legend_height(holder_entries.len().max(taker_entries.len()), 1);
    let height = PLOT_HEIGHT + legend + 24;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (width, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(title, (FONT, 16))?;
        let (left, right) = root.split_horizontally(width / 2);
        for (area, series, entries, what, lines) in [
            (&left, &view.by_holder, &holder_entries, "pinned, by holder", true),
            (&right, &view.by_taker, &taker_entries, "pinned, by who took it from the pool", false),
        ] {
            let (plot, legend_area) = area.split_vertically(PLOT_HEIGHT);
            draw_plot(&plot, view, series, (x, y_mib), what, lines)?;
            if view.pinned_top() <= 0.0 && !lines {
                draw_message(&plot.margin(40, 50, 70, 10), "nothing pinned: every chunk is in use or cached")?;
            }
            draw_legend(&legend_area, entries, 1)?;
        }
        root.present()?;
    }
    Ok(out)
}

fn entries(series: &[(String, Vec<f64>)], lines: bool) -> Vec<Entry> {
    let mut out: Vec<Entry> = series
        .iter()
        .enumerate()
        .map(|(i, (name, _))| Entry { label: name.clone(), color: PALETTE[i % PALETTE.len()], mark: Mark::Area })
        .collect();
    if lines {
        out.push(Entry { label: "in use by a connection buffer".into(), color: IN_USE, mark: Mark::Line });
        out.push(Entry { label: "cached in the free list".into(), color: CACHED, mark: Mark::Dashed });
    }
    out
}

fn draw_plot(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    view: &PoolView,
    series: &[(String, Vec<f64>)],
    (x, y): (f64, f64),
    caption: &str,
    lines: bool,
) -> anyhow::Result<()> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 13))
        .margin(8)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..x, 0f64..y)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("MiB")
        .x_labels(8)
        .y_labels(6)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| if y < 5.0 { format!("{v:.1}") } else { format!("{v:.0}") })
        .light_line_style(TRANSPARENT)
        .bold_line_style(BLACK.mix(0.08))
        .label_style((FONT, 12))
        .axis_desc_style((FONT, 13))
        .draw()?;
    let layers: Vec<Vec<f64>> = series.iter().map(|(_, v)| v.iter().map(|b| b / MIB).collect()).collect();
    for (i, top) in stack(&layers).iter().enumerate().rev() {
        let points: Vec<(f64, f64)> = view.t.iter().copied().zip(top.iter().copied()).collect();
        let color = PALETTE[i % PALETTE.len()];
        chart.draw_series(AreaSeries::new(points, 0.0, color.mix(0.9).filled()).border_style(WHITE.stroke_width(1)))?;
    }
    if lines {
        let pts = |v: &[f64]| -> Vec<(f64, f64)> { view.t.iter().copied().zip(v.iter().map(|b| b / MIB)).collect() };
        chart.draw_series(LineSeries::new(pts(&view.in_use), IN_USE.stroke_width(2)))?;
        chart.draw_series(DashedLineSeries::new(pts(&view.cached), 6, 4, CACHED.stroke_width(2)))?;
    }
    Ok(())
}
