//! A matrix's pages, from its `matrix.json`: `leak-vs-fix.svg` (leaked
//! MiB/s of each scenario's leak against its fix, and the detectors'
//! scores) and `index.html` (that figure, the matrix table, and a link to
//! every run's report, as criterion's index links its benchmarks).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::Deserialize;

use super::chart::{nice_ceil, FONT, INK, MIB};
use super::markup::{escape, svg_body};
use super::run::read_json;

/// The parts of `matrix.json` the pages show.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Matrix {
    rows: Vec<Row>,
    scores: Vec<Score>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Row {
    scenario: String,
    variant: String,
    expected: String,
    verdict: String,
    correct: bool,
    pprof_only: String,
    site: String,
    leaked_bytes_per_s: f64,
    delay_snapshots: Option<usize>,
    peak_rss_bytes: u64,
    holder: String,
    holder_right: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Score {
    detector: String,
    precision: f64,
    recall: f64,
    kind_accuracy: f64,
    false_alarms: usize,
    mean_delay_snapshots: Option<f64>,
}

/// The leak variant's bar.
const LEAK: RGBColor = RGBColor(214, 69, 65);
/// The fix variant's bar.
const FIX: RGBColor = RGBColor(60, 150, 80);
/// A control's bar.
const CONTROL: RGBColor = RGBColor(150, 150, 150);

/// Writes `leak-vs-fix.svg` and `index.html` into a matrix's folder from
/// its `matrix.json`; returns the index's path.
pub(crate) fn write_index(out: &Path) -> anyhow::Result<PathBuf> {
    let json = out.join("matrix.json");
    let matrix: Matrix = read_json(&json)?.with_context(|| format!("{}: no such file", json.display()))?;
    let figure = leak_vs_fix(&matrix)?;
    crate::files::write_new(&out.join("leak-vs-fix.svg"), &figure)?;
    let index = out.join("index.html");
    crate::files::write_new(&index, page(&matrix, &figure, out))?;
    Ok(index)
}

/// One bar group: a scenario, its leak (or control) row and its fix row.
struct Group<'a> {
    scenario: &'a str,
    leak: Option<&'a Row>,
    fix: Option<&'a Row>,
    control: bool,
}

fn groups(m: &Matrix) -> Vec<Group<'_>> {
    let mut out: Vec<Group<'_>> = Vec::new();
    for r in &m.rows {
        let at = match out.iter().position(|g| g.scenario == r.scenario) {
            Some(at) => at,
            None => {
                out.push(Group { scenario: &r.scenario, leak: None, fix: None, control: false });
                out.len() - 1
            }
        };
        let g = &mut out[at];
        if r.variant == "fix" {
            g.fix = Some(r);
        } else {
            g.leak = Some(r);
            g.control = r.expected == "none";
        }
    }
    out
}

/// Height of one scenario's group of bars.
const GROUP: u32 = 36;

/// The figure: horizontal bars of leaked MiB/s, then the scores.
fn leak_vs_fix(m: &Matrix) -> anyhow::Result<String> {
    let groups = groups(m);
    let n = groups.len().max(1);
    let (width, plot_h) = (1000u32, 90 + GROUP * n as u32);
    let scores_h = 40 + 22 * m.scores.len() as u32;
    let height = plot_h + scores_h + 30;
    let max = m.rows.iter().map(|r| r.leaked_bytes_per_s / MIB).filter(|v| v.is_finite()).fold(0.0, f64::max);
    let x_max = nice_ceil(max * 1.2, 0.5);
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (width, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let (upper, rest) = root.split_vertically(plot_h);
        let (legend, lower) = rest.split_vertically(30);
        let mut chart = ChartBuilder::on(&upper)
            .caption("Leaked MiB/s over the load: each scenario's leak against its fix", (FONT, 17))
            .margin(10)
            .margin_left(230)
            .x_label_area_size(40)
            .y_label_area_size(0)
            .build_cartesian_2d(0f64..x_max, 0f64..n as f64)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_desc("in-use bytes gained per second over the load, Theil-Sen slope (MiB/s)")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .light_line_style(TRANSPARENT)
            .bold_line_style(BLACK.mix(0.08))
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 13))
            .draw()?;
        let name_style = TextStyle::from((FONT, 13).into_font()).color(&INK).pos(Pos::new(HPos::Right, VPos::Center));
        let value_style = TextStyle::from((FONT, 11).into_font()).color(&INK).pos(Pos::new(HPos::Left, VPos::Center));
        for (i, g) in groups.iter().enumerate() {
            let top = (n - i) as f64;
            let bars: Vec<(&Row, RGBColor, f64)> = match (g.leak, g.fix) {
                (Some(l), _) if g.control => vec![(l, CONTROL, top - 0.5)],
                (l, f) => l.map(|l| (l, LEAK, top - 0.32)).into_iter().chain(f.map(|f| (f, FIX, top - 0.68))).collect(),
            };
            for (row, color, y) in bars {
                let v = if row.leaked_bytes_per_s.is_finite() { (row.leaked_bytes_per_s / MIB).max(0.0) } else { 0.0 };
                chart.draw_series(std::iter::once(Rectangle::new([(0.0, y - 0.15), (v, y + 0.15)], color.filled())))?;
                let mut label = format!("{v:.2}");
                if !row.correct {
                    let _ = write!(label, "  wrong verdict: {}", row.verdict);
                }
                let (px, py) = chart.backend_coord(&(v, y));
                root.draw(&Text::new(label, (px + 4, py), value_style.clone()))?;
            }
            let (px, py) = chart.backend_coord(&(0.0, top - 0.5));
            let name = if g.control { format!("{} (control)", g.scenario) } else { g.scenario.to_owned() };
            root.draw(&Text::new(name, (px - 8, py), name_style.clone()))?;
        }
        // The legend, on its own line.
        let key = TextStyle::from((FONT, 13).into_font()).color(&INK).pos(Pos::new(HPos::Left, VPos::Center));
        for (k, (label, color)) in
            [("leak variant", LEAK), ("fix variant (the guide's remedy)", FIX), ("healthy control", CONTROL)]
                .into_iter()
                .enumerate()
        {
            let x = 240 + k as i32 * 240;
            legend.draw(&Rectangle::new([(x, 9), (x + 22, 21)], color.filled()))?;
            legend.draw(&Text::new(label, (x + 30, 15), key.clone()))?;
        }
        draw_scores(&lower, &m.scores)?;
        root.present()?;
    }
    Ok(out)
}

fn draw_scores(area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>, scores: &[Score]) -> anyhow::Result<()> {
    let cols = [
        (20, HPos::Left),
        (560, HPos::Right),
        (640, HPos::Right),
        (750, HPos::Right),
        (850, HPos::Right),
        (980, HPos::Right),
    ];
    let head = ["detector", "precision", "recall", "kind accuracy", "false alarms", "mean snapshots to verdict"];
    let style =
        |size: u32, h: HPos| TextStyle::from((FONT, size).into_font()).color(&INK).pos(Pos::new(h, VPos::Center));
    area.draw(&Text::new("Scores over the matrix", (20, 12), style(14, HPos::Left)))?;
    for (k, text) in head.iter().enumerate() {
        area.draw(&Text::new(*text, (cols[k].0, 34), style(12, cols[k].1)))?;
    }
    for (i, s) in scores.iter().enumerate() {
        let y = 56 + 22 * i as i32;
        let cells = [
            s.detector.clone(),
            format!("{:.2}", s.precision),
            format!("{:.2}", s.recall),
            format!("{:.2}", s.kind_accuracy),
            s.false_alarms.to_string(),
            s.mean_delay_snapshots.map_or("-".to_owned(), |d| format!("{d:.1}")),
        ];
        for (k, text) in cells.into_iter().enumerate() {
            area.draw(&Text::new(text, (cols[k].0, y), style(12, cols[k].1)))?;
        }
    }
    Ok(())
}

fn page(m: &Matrix, figure: &str, out: &Path) -> String {
    let mut h = String::new();
    h.push_str(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>leaklab matrix</title>\n<style>\n\
         body { font-family: system-ui, sans-serif; color: #1e1e1e; margin: 0; background: #fafafa; }\n\
         main { max-width: 1340px; margin: 0 auto; padding: 16px 24px 48px; }\n\
         table { border-collapse: collapse; background: #fff; font-size: 13px; }\n\
         th, td { border: 1px solid #ddd; padding: 3px 6px; text-align: left; vertical-align: top; }\n\
         td.name { white-space: nowrap; }\n\
         td.holder { font-size: 12px; overflow-wrap: anywhere; min-width: 240px; }\n\
         td.num { text-align: right; }\n\
         .wrong { color: #b41e1e; font-weight: 600; }\n\
         .figure { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 4px; }\n\
         .figure svg { display: block; max-width: 100%; height: auto; }\n\
         </style>\n</head>\n<body>\n<main>\n<h1>leaklab matrix</h1>\n\
         <p>Every scenario and variant, run, diagnosed and scored. Each run's name opens its report.</p>\n",
    );
    let _ = writeln!(h, "<div class=\"figure\">{}</div>", svg_body(figure));
    h.push_str(
        "<h2>Runs</h2>\n<table>\n<tr><th>scenario</th><th>variant</th><th>expected</th><th>verdict</th>\
         <th>correct</th><th>holder</th><th>pprof-only</th><th>leaked MiB/s</th><th>snapshots to verdict</th>\
         <th>peak RSS MiB</th></tr>\n",
    );
    for r in &m.rows {
        let dir = format!("{}-{}", r.scenario, r.variant);
        // Linked only when the folder's name is a plain one (a scenario and
        // a variant are): a name from a hostile matrix.json could make the
        // link a `javascript:` URL.
        let plain = dir.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        let name = if plain && out.join(&dir).join("report.html").is_file() {
            format!("<a href=\"./{}/report.html\">{}</a>", escape(&dir), escape(&r.scenario))
        } else {
            escape(&r.scenario)
        };
        let holder = match r.holder_right {
            Some(true) => format!("{} (right)", escape(&r.holder)),
            Some(false) => format!(
                "<span class=\"wrong\">{} (wrong)</span>",
                escape(if r.holder.is_empty() { "none" } else { &r.holder })
            ),
            None => "-".to_owned(),
        };
        let _ = writeln!(
            h,
            "<tr><td class=\"name\">{name}</td><td>{}</td><td>{}</td><td title=\"{}\">{}</td><td>{}</td>\
             <td class=\"holder\">{holder}</td><td>{}</td>\
             <td class=\"num\">{:.2}</td><td class=\"num\">{}</td><td class=\"num\">{:.0}</td></tr>",
            escape(&r.variant),
            escape(&r.expected),
            escape(&r.site),
            escape(&r.verdict),
            if r.correct { "yes".to_owned() } else { "<span class=\"wrong\">no</span>".to_owned() },
            escape(&r.pprof_only),
            r.leaked_bytes_per_s / MIB,
            r.delay_snapshots.map_or("-".to_owned(), |d| d.to_string()),
            r.peak_rss_bytes as f64 / MIB
        );
    }
    h.push_str(
        "</table>\n<h2>Scores</h2>\n<table>\n<tr><th>detector</th><th>precision</th><th>recall</th>\
                <th>kind accuracy</th><th>false alarms</th><th>mean snapshots to verdict</th></tr>\n",
    );
    for s in &m.scores {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td class=\"num\">{:.2}</td><td class=\"num\">{:.2}</td><td class=\"num\">{:.2}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            escape(&s.detector),
            s.precision,
            s.recall,
            s.kind_accuracy,
            s.false_alarms,
            s.mean_delay_snapshots.map_or("-".to_owned(), |d| format!("{d:.1}"))
        );
    }
    h.push_str("</table>\n<p>Written by <code>leaklab matrix</code>; nothing on this page is fetched from the network.</p>\n</main>\n</body>\n</html>\n");
    h
}
