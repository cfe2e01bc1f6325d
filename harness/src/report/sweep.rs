//! A sweep's figure (`sweep.svg`): for each detector, kind accuracy and the
//! median delay from the onset, by measured leak rate, slow leaks on the
//! left.

use plotters::prelude::*;

use super::chart::{draw_legend, legend_height, nice_ceil, Entry, Mark, FONT, FULL_WIDTH, PALETTE};
use crate::dataset::score::{Table, RATE_BANDS};

/// The figure of `tables` as an SVG document.
pub(crate) fn svg(tables: &[Table]) -> anyhow::Result<String> {
    let bands: Vec<&str> = RATE_BANDS.iter().map(|b| b.1).collect();
    let at = |t: &Table, band: &str| t.by_rate.iter().find(|(b, _)| b == band).map(|(_, s)| s.clone());
    let max_delay =
        tables.iter().flat_map(|t| t.by_rate.iter().filter_map(|(_, s)| s.delay_median_s)).fold(0.0, f64::max);
    let y_delay = nice_ceil(max_delay * 1.15, 1.0);
    let entries: Vec<Entry> = tables
        .iter()
        .enumerate()
        .map(|(i, t)| Entry { label: t.detector.clone(), color: PALETTE[i % PALETTE.len()], mark: Mark::Line })
        .collect();
    let (width, plot_h) = (FULL_WIDTH, 420u32);
    let height = plot_h + legend_height(entries.len(), 2);
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (width, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let (plots, legend) = root.split_vertically(plot_h);
        let (left, right) = plots.split_horizontally(width / 2);
        let x = -0.5f64..(bands.len() as f64 - 0.5);
        let label = |v: &f64| {
            bands
                .get(v.round() as usize)
                .filter(|_| (v - v.round()).abs() < 1e-6)
                .map_or(String::new(), |b| (*b).to_owned())
        };
        for (area, title, y_max, y_desc) in [
            (&left, "Kind accuracy of leaks, by measured leak rate", 100.0, "runs whose final kind is right (%)"),
            (
                &right,
                "Median delay from the onset, by measured leak rate",
                y_delay,
                "seconds to a right answer that stays",
            ),
        ] {
            let mut chart = ChartBuilder::on(area)
                .caption(title, (FONT, 16))
                .margin(12)
                .x_label_area_size(44)
                .y_label_area_size(56)
                .build_cartesian_2d(x.clone(), 0f64..y_max)?;
            chart
                .configure_mesh()
                .x_labels(bands.len() * 2 + 1)
                .x_label_formatter(&label)
                .x_desc("in-use bytes gained per second over the load (Theil-Sen)")
                .y_desc(y_desc)
                .label_style((FONT, 12))
                .axis_desc_style((FONT, 13))
                .light_line_style(TRANSPARENT)
                .bold_line_style(BLACK.mix(0.08))
                .draw()?;
            for (i, t) in tables.iter().enumerate() {
                let color = PALETTE[i % PALETTE.len()];
                // Detectors side by side within a band, so that equal
                // points do not hide each other.
                let dx = (i as f64 - (tables.len() as f64 - 1.0) / 2.0) * 0.07;
                let points: Vec<(f64, f64)> = bands
                    .iter()
                    .enumerate()
                    .filter_map(|(k, b)| {
                        let s = at(t, b)?;
                        let v = if y_max == 100.0 { s.kind_accuracy.map(|a| a * 100.0) } else { s.delay_median_s };
                        Some((k as f64 + dx, v?))
                    })
                    .collect();
                chart.draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(3)))?;
                chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
            }
        }
        draw_legend(&legend, &entries, 2)?;
        root.present()?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::score::Stats;

    #[test]
    fn the_figure_names_its_axes_bands_and_detectors() {
        let s = Stats { runs: 3, kind_accuracy: Some(0.5), delay_median_s: Some(4.0), ..Stats::default() };
        let t = Table {
            detector: "engine".into(),
            overall: s.clone(),
            per_kind: Vec::new(),
            by_rate: vec![("< 32 KiB/s".into(), s.clone()), (">= 2 MiB/s".into(), s)],
        };
        let svg = svg(&[t]).unwrap();
        for text in ["Kind accuracy", "Median delay", "engine", "&lt; 32 KiB/s", "seconds to a right answer"] {
            assert!(svg.contains(text), "{text} missing");
        }
    }
}
