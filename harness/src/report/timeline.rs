//! The timeline: in-use bytes of the sites that grew most, stacked (sites
//! as the engine names them, [`diagnosis::site_of`]), the rest of the
//! profiled heap above them, RSS as a line, open connections and requests
//! per second on a second (log) axis, the phases shaded, and the snapshot
//! at which the verdict became right.

use std::collections::HashMap;

use diagnosis::{Name, PhaseSpan};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::chart::{
    count_label, draw_legend, finite, legend_height, nice_ceil, stack, Entry, Mark, FONT, INK, MIB, PALETTE, REST,
};
use super::run::Run;

/// How many sites the timeline names; the rest is one band.
const TOP_SITES: usize = 6;

/// Height of the plot (axes included), without the legend.
const PLOT_HEIGHT: u32 = 400;

/// Open connections.
const CONNS: RGBColor = RGBColor(123, 63, 160);

/// Requests per second.
const RATE: RGBColor = RGBColor(20, 140, 140);

/// Where the verdict became right.
const DETECTED: RGBColor = RGBColor(200, 30, 30);

/// What the timeline of one run shows.
#[derive(Debug, Clone)]
pub(super) struct Timeline {
    /// Snapshot times (s).
    t: Vec<f64>,
    /// The sites that grew most, most first: name and in-use bytes per
    /// snapshot.
    sites: Vec<(String, Vec<f64>)>,
    /// In-use bytes of every other site.
    rest: Vec<f64>,
    /// RSS over time (bytes).
    rss: Vec<(f64, f64)>,
    /// Open connections over time.
    conns: Vec<(f64, f64)>,
    /// Requests per second over time.
    rate: Vec<(f64, f64)>,
    /// The phases.
    phases: Vec<PhaseSpan>,
    /// The snapshot at which the verdict became right, and its time.
    detected: Option<(usize, f64)>,
}

/// In-use bytes per site and snapshot, sites as the engine names them.
pub(super) fn site_series(run: &Run) -> Vec<(String, Vec<f64>)> {
    let heaps = &run.input.heaps;
    let n = heaps.len();
    let mut site_of_stack: HashMap<Vec<Name>, usize> = HashMap::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut sites: Vec<(String, Vec<f64>)> = Vec::new();
    for (i, heap) in heaps.iter().enumerate() {
        for s in &heap.samples {
            let key: Vec<Name> = s.frames.iter().map(|f| f.function.clone()).collect();
            let at = *site_of_stack.entry(key).or_insert_with_key(|key| {
                let names: Vec<&str> = key.iter().map(Name::as_str).collect();
                let site = diagnosis::site_of(&names);
                *index.entry(site.clone()).or_insert_with(|| {
                    sites.push((site, vec![0.0; n]));
                    sites.len() - 1
                })
            });
            sites[at].1[i] += finite(s.inuse_bytes);
        }
    }
    sites
}

impl Timeline {
    /// Reads the timeline of a run.
    pub(super) fn of(run: &Run) -> Timeline {
        let t: Vec<f64> = run.times.iter().map(|s| finite(s.t)).collect();
        let mut sites = site_series(run);
        let growth = |v: &[f64]| v.iter().copied().fold(0.0, f64::max) - v.first().copied().unwrap_or(0.0);
        sites.sort_by(|a, b| growth(&b.1).total_cmp(&growth(&a.1)).then_with(|| a.0.cmp(&b.0)));
        let total: Vec<f64> = run.input.heaps.iter().map(|h| finite(h.total_inuse_bytes())).collect();
        let top: Vec<(String, Vec<f64>)> = sites.into_iter().filter(|(_, v)| growth(v) > 0.0).take(TOP_SITES).collect();
        let rest: Vec<f64> =
            (0..t.len()).map(|i| (total[i] - top.iter().map(|(_, v)| v[i]).sum::<f64>()).max(0.0)).collect();
        let metric = |name: &str| -> Vec<(f64, f64)> {
            run.input.metric(name).into_iter().filter(|(t, v)| t.is_finite() && v.is_finite()).collect()
        };
        let requests = metric("requests");
        let rate = requests
            .windows(2)
            .filter(|w| w[1].0 > w[0].0)
            .map(|w| (w[1].0, ((w[1].1 - w[0].1) / (w[1].0 - w[0].0)).max(0.0)))
            .collect();
        let detected = run.judged.detected_at.and_then(|i| Some((i, *t.get(i)?)));
        Timeline {
            sites: top,
            rest,
            rss: metric("rss_bytes"),
            conns: metric("open_conns"),
            rate,
            phases: run.phases().iter().filter(|p| p.start_s.is_finite() && p.end_s.is_finite()).cloned().collect(),
            detected,
            t,
        }
    }

    fn x_end(&self) -> f64 {
        let last_t = self.t.iter().copied().fold(0.0, f64::max);
        let last_phase = self.phases.iter().map(|p| p.end_s).fold(0.0, f64::max);
        last_t.max(last_phase)
    }

    fn y_top(&self) -> f64 {
        let stacked: f64 = (0..self.t.len())
            .map(|i| self.sites.iter().map(|(_, v)| v[i]).sum::<f64>() + self.rest[i])
            .fold(0.0, f64::max);
        let rss = self.rss.iter().map(|p| p.1).fold(0.0, f64::max);
        stacked.max(rss) / MIB
    }

    fn y2_top(&self) -> f64 {
        self.conns.iter().chain(&self.rate).map(|p| p.1).fold(0.0, f64::max)
    }
}

/// The axes' ranges, shared by the runs of a comparison.
#[derive(Debug, Clone, Copy)]
pub(super) struct Scale {
    x: f64,
    y_mib: f64,
    y2: f64,
}

impl Scale {
    /// Ranges that hold every timeline given.
    pub(super) fn of(timelines: &[&Timeline]) -> Scale {
        let x = timelines.iter().map(|t| t.x_end()).fold(0.0, f64::max);
        let y = timelines.iter().map(|t| t.y_top()).fold(0.0, f64::max);
        let y2 = timelines.iter().map(|t| t.y2_top()).fold(0.0, f64::max);
        Scale {
            x: x.max(1.0).ceil(),
            y_mib: nice_ceil(y * 1.08, 1.0),
            y2: 10f64.powf((y2.max(1.0) * 3.0).log10().ceil()).max(10.0),
        }
    }
}

/// The phase's shade.
fn phase_color(name: &str) -> RGBColor {
    match name {
        "warmup" => RGBColor(232, 238, 246),
        "load" => RGBColor(253, 246, 227),
        "drain" => RGBColor(250, 229, 222),
        "settle" => RGBColor(230, 243, 230),
        _ => RGBColor(240, 240, 240),
    }
}

/// The phase's label.
fn phase_label(name: &str) -> &str {
    match name {
        "warmup" => "warm-up",
        other => other,
    }
}

/// The legend of a timeline.
fn legend(tl: &Timeline) -> Vec<Entry> {
    let mut entries: Vec<Entry> = tl
        .sites
        .iter()
        .enumerate()
        .map(|(i, (name, _))| Entry { label: name.clone(), color: PALETTE[i % PALETTE.len()], mark: Mark::Area })
        .collect();
    entries.push(Entry { label: "other sites (profiled in-use bytes)".into(), color: REST, mark: Mark::Area });
    if !tl.rss.is_empty() {
        entries.push(Entry { label: "RSS of the process".into(), color: INK, mark: Mark::Line });
    }
    if !tl.conns.is_empty() {
        entries.push(Entry { label: "open connections (right axis)".into(), color: CONNS, mark: Mark::Dashed });
    }
    if !tl.rate.is_empty() {
        entries.push(Entry { label: "requests/s (right axis)".into(), color: RATE, mark: Mark::Dashed });
    }
    if tl.detected.is_some() {
        entries.push(Entry { label: "verdict right from here on".into(), color: DETECTED, mark: Mark::Dashed });
    }
    entries
}

/// The timeline as an SVG document `width` pixels wide.
pub(super) fn svg(tl: &Timeline, scale: &Scale, width: u32, title: &str) -> anyhow::Result<String> {
    let entries = legend(tl);
    let columns = if width >= 900 { 2 } else { 1 };
    let height = PLOT_HEIGHT + legend_height(entries.len(), columns);
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (width, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let (upper, lower) = root.split_vertically(PLOT_HEIGHT);
        draw_plot(&upper, tl, scale, title)?;
        draw_legend(&lower, &entries, columns)?;
        root.present()?;
    }
    Ok(out)
}

fn draw_plot(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    tl: &Timeline,
    scale: &Scale,
    title: &str,
) -> anyhow::Result<()> {
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 16))
        .margin(10)
        .x_label_area_size(44)
        .y_label_area_size(62)
        .right_y_label_area_size(66)
        .build_cartesian_2d(0f64..scale.x, 0f64..scale.y_mib)?
        .set_secondary_coord(0f64..scale.x, (0.5f64..scale.y2).log_scale());

    // Phases first, under everything.
    for p in &tl.phases {
        let (a, b) = (p.start_s.clamp(0.0, scale.x), p.end_s.clamp(0.0, scale.x));
        chart.draw_series(std::iter::once(Rectangle::new(
            [(a, 0.0), (b, scale.y_mib)],
            phase_color(&p.name).filled(),
        )))?;
    }
    chart
        .configure_mesh()
        .x_desc("time since the run started (s)")
        .y_desc("in-use bytes, RSS (MiB)")
        .x_labels(12)
        .y_labels(8)
        .y_label_formatter(&|v| format!("{v:.0}"))
        .x_label_formatter(&|v| format!("{v:.0}"))
        .light_line_style(TRANSPARENT)
        .bold_line_style(BLACK.mix(0.08))
        .label_style((FONT, 12))
        .axis_desc_style((FONT, 13))
        .draw()?;
    chart
        .configure_secondary_axes()
        .y_desc("connections, requests/s (log)")
        .y_label_formatter(&|v| count_label(*v))
        .label_style((FONT, 12))
        .axis_desc_style((FONT, 13))
        .draw()?;
    let label =
        TextStyle::from((FONT, 12).into_font()).color(&RGBColor(90, 90, 90)).pos(Pos::new(HPos::Center, VPos::Top));
    for p in &tl.phases {
        let mid = ((p.start_s + p.end_s) / 2.0).clamp(0.0, scale.x);
        chart.draw_series(std::iter::once(Text::new(
            phase_label(&p.name).to_owned(),
            (mid, scale.y_mib),
            label.clone(),
        )))?;
    }

    // The sites, stacked (most growth at the bottom), the rest on top.
    let mut layers: Vec<Vec<f64>> = tl.sites.iter().map(|(_, v)| v.iter().map(|b| b / MIB).collect()).collect();
    layers.push(tl.rest.iter().map(|b| b / MIB).collect());
    let tops = stack(&layers);
    for (i, top) in tops.iter().enumerate().rev() {
        let color = if i < tl.sites.len() { PALETTE[i % PALETTE.len()] } else { REST };
        let points: Vec<(f64, f64)> = tl.t.iter().copied().zip(top.iter().copied()).collect();
        chart.draw_series(AreaSeries::new(points, 0.0, color.mix(0.9).filled()).border_style(WHITE.stroke_width(1)))?;
    }
    if !tl.rss.is_empty() {
        chart.draw_series(LineSeries::new(tl.rss.iter().map(|&(t, b)| (t, b / MIB)), INK.stroke_width(2)))?;
    }
    let floor = |v: f64| v.max(0.5);
    if !tl.conns.is_empty() {
        chart.draw_secondary_series(DashedLineSeries::new(
            tl.conns.iter().map(|&(t, v)| (t, floor(v))),
            6,
            4,
            CONNS.stroke_width(2),
        ))?;
    }
    if !tl.rate.is_empty() {
        chart.draw_secondary_series(DashedLineSeries::new(
            tl.rate.iter().map(|&(t, v)| (t, floor(v))),
            6,
            4,
            RATE.stroke_width(2),
        ))?;
    }
    if let Some((i, t)) = tl.detected {
        chart.draw_series(DashedLineSeries::new(
            [(t, 0.0), (t, scale.y_mib * 0.93)],
            5,
            4,
            DETECTED.stroke_width(2),
        ))?;
        let style = TextStyle::from((FONT, 12).into_font()).color(&DETECTED).pos(Pos::new(HPos::Left, VPos::Center));
        chart.draw_series(std::iter::once(Text::new(
            format!("right at snapshot {i} ({t:.1} s)"),
            (t + scale.x * 0.006, scale.y_mib * 0.88),
            style,
        )))?;
    }
    Ok(())
}
