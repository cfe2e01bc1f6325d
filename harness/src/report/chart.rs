//! What the report's charts share: sizes, colours, fonts, units, the
//! legend, stacking, and plotters' SVG backend.
//!
//! Text is written as SVG `<text>` in a generic font family and left to the
//! browser to render: no font file is read. plotters escapes it.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// A mebibyte.
pub(super) const MIB: f64 = 1048576.0;

/// The font family of every label.
pub(super) const FONT: &str = "sans-serif";

/// A chart alone on its row of the page.
pub(super) const FULL_WIDTH: u32 = 1280;

/// A chart beside another (a comparison).
pub(super) const HALF_WIDTH: u32 = 640;

/// The series colours (Tableau 10), in order.
pub(super) const PALETTE: [RGBColor; 8] = [
    RGBColor(78, 121, 167),
    RGBColor(242, 142, 43),
    RGBColor(225, 87, 89),
    RGBColor(118, 183, 178),
    RGBColor(89, 161, 79),
    RGBColor(237, 201, 72),
    RGBColor(176, 122, 161),
    RGBColor(156, 117, 95),
];

/// "Everything else" in a stack.
pub(super) const REST: RGBColor = RGBColor(199, 192, 188);

/// Lines drawn over areas.
pub(super) const INK: RGBColor = RGBColor(30, 30, 30);

/// How a legend entry is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mark {
    /// A filled square (a stacked area).
    Area,
    /// A solid line.
    Line,
    /// A dashed line.
    Dashed,
}

/// One legend entry.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    /// The label.
    pub(super) label: String,
    /// The colour.
    pub(super) color: RGBColor,
    /// The mark.
    pub(super) mark: Mark,
}

/// Height of one legend row, in pixels.
const LEGEND_ROW: u32 = 20;

/// The height a legend of `n` entries in `columns` columns takes.
pub(super) fn legend_height(n: usize, columns: usize) -> u32 {
    let rows = n.div_ceil(columns.max(1)) as u32;
    8 + rows * LEGEND_ROW
}

/// Draws a legend on its own area (below a chart), in columns.
pub(super) fn draw_legend(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    entries: &[Entry],
    columns: usize,
) -> anyhow::Result<()> {
    let (w, _) = area.dim_in_pixel();
    let columns = columns.max(1);
    let col_w = (w as i32 - 60) / columns as i32;
    let rows = entries.len().div_ceil(columns);
    // The longest label a column holds, at about 0.55 em a character.
    let max_chars = ((col_w - 34) as f64 / (12.0 * 0.55)).max(10.0) as usize;
    let text = TextStyle::from((FONT, 12).into_font()).color(&INK).pos(Pos::new(HPos::Left, VPos::Center));
    for (i, e) in entries.iter().enumerate() {
        let (col, row) = (i / rows.max(1), i % rows.max(1));
        let x = 60 + col as i32 * col_w;
        let y = 4 + row as i32 * LEGEND_ROW as i32 + LEGEND_ROW as i32 / 2;
        match e.mark {
            Mark::Area => {
                area.draw(&Rectangle::new([(x, y - 6), (x + 22, y + 6)], e.color.filled()))?;
            }
            Mark::Line => {
                area.draw(&PathElement::new(vec![(x, y), (x + 22, y)], e.color.stroke_width(3)))?;
            }
            Mark::Dashed => {
                for k in 0..3 {
                    let x0 = x + k * 9;
                    area.draw(&PathElement::new(vec![(x0, y), (x0 + 5, y)], e.color.stroke_width(3)))?;
                }
            }
        }
        area.draw(&Text::new(shorten(&e.label, max_chars), (x + 30, y), text.clone()))?;
    }
    Ok(())
}

/// A name cut to `max` characters, keeping its end (where a Rust path
/// names the function) behind an ellipsis.
pub(super) fn shorten(name: &str, max: usize) -> String {
    let n = name.chars().count();
    if n <= max {
        return name.to_owned();
    }
    let tail: String = name.chars().skip(n - (max.saturating_sub(1))).collect();
    format!("…{tail}")
}

/// A round number at least `v` (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 times
/// a power of ten), and at least `floor`.
pub(super) fn nice_ceil(v: f64, floor: f64) -> f64 {
    let v = if v.is_finite() { v.max(floor) } else { floor };
    if v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0] {
        if m * p >= v * (1.0 - 1e-9) {
            return m * p;
        }
    }
    10.0 * p
}

/// Layers stacked: each layer's top, bottom layer first.
pub(super) fn stack(layers: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let mut out: Vec<Vec<f64>> = Vec::with_capacity(layers.len());
    for layer in layers {
        let top = match out.last() {
            Some(below) => layer.iter().zip(below).map(|(a, b)| a + b).collect(),
            None => layer.clone(),
        };
        out.push(top);
    }
    out
}

/// A count for an axis label: `0` below one, `1k` for a thousand.
pub(super) fn count_label(v: f64) -> String {
    if v < 0.95 {
        "0".to_owned()
    } else if v >= 1e6 {
        format!("{:.0}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// A message in the middle of an area that has nothing to chart.
pub(super) fn draw_message(area: &DrawingArea<SVGBackend<'_>, Shift>, message: &str) -> anyhow::Result<()> {
    let (w, h) = area.dim_in_pixel();
    let style =
        TextStyle::from((FONT, 14).into_font()).color(&RGBColor(90, 90, 90)).pos(Pos::new(HPos::Center, VPos::Center));
    area.draw(&Text::new(message.to_owned(), (w as i32 / 2, h as i32 / 2), style))?;
    Ok(())
}

/// Finite values only; anything else reads as 0.
pub(super) fn finite(v: f64) -> f64 {
    if v.is_finite() {
        v
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceil(0.0, 1.0), 1.0);
        assert_eq!(nice_ceil(3.2, 1.0), 4.0);
        assert_eq!(nice_ceil(61.0, 1.0), 80.0);
        assert_eq!(nice_ceil(180.0, 1.0), 200.0);
        assert_eq!(nice_ceil(11.3, 1.0), 12.0);
        assert_eq!(nice_ceil(24.0, 1.0), 25.0);
        assert_eq!(nice_ceil(f64::NAN, 2.0), 2.0);
    }

    #[test]
    fn names_keep_their_end() {
        assert_eq!(shorten("rpc::codec::echo::Request::read_field_2", 100), "rpc::codec::echo::Request::read_field_2");
        let s = shorten("rpc::codec::echo::Request::read_field_2", 16);
        assert_eq!(s.chars().count(), 16);
        assert!(s.ends_with("read_field_2") && s.starts_with('…'), "{s}");
    }

    #[test]
    fn layers_stack() {
        assert_eq!(stack(&[vec![1.0, 2.0], vec![3.0, 0.5]]), [vec![1.0, 2.0], vec![4.0, 2.5]]);
    }
}
