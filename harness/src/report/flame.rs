//! The flame graph of the growth: the in-use bytes each stack gained from
//! the first to the last load snapshot (positive growth only), as folded
//! stacks, drawn by inferno. Its SVG keeps inferno's own search, zoom and
//! hover (which shows bytes).

use std::collections::HashMap;

use diagnosis::{HeapSnapshot, Name};
use inferno::flamegraph::color::{MultiPalette, Palette};

use super::chart::finite;
use super::markup::escape;
use super::run::Run;

/// What grew between two snapshots, as folded stacks.
#[derive(Debug, Clone)]
pub(super) struct Growth {
    /// `root;…;leaf BYTES` lines, largest first.
    pub(super) folded: Vec<String>,
    /// The bytes they add up to.
    pub(super) total: f64,
    /// The snapshots compared.
    pub(super) from: usize,
    pub(super) to: usize,
}

/// A frame's name as a folded stack can carry it: no `;` (the separator),
/// no line breaks, and no trailing number that would read as a count.
fn frame(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c == ';' {
                ','
            } else if c.is_whitespace() && c != ' ' {
                ' '
            } else {
                c
            }
        })
        .collect();
    let last = s.rsplit(' ').next().unwrap_or("");
    if s.contains(' ') && !last.is_empty() && last.parse::<f64>().is_ok() {
        s = s.replace(' ', "\u{a0}");
    }
    if s.is_empty() {
        s.push('?');
    }
    s
}

/// The growth of in-use bytes per stack from `from` to `to`.
pub(super) fn growth_between(before: &HeapSnapshot, after: &HeapSnapshot, from: usize, to: usize) -> Growth {
    let mut by_stack: HashMap<Vec<Name>, f64> = HashMap::new();
    for (sign, snap) in [(1.0, after), (-1.0, before)] {
        for s in &snap.samples {
            let key: Vec<Name> = s.frames.iter().map(|f| f.function.clone()).collect();
            *by_stack.entry(key).or_default() += sign * finite(s.inuse_bytes);
        }
    }
    let mut grown: Vec<(f64, String)> = by_stack
        .into_iter()
        .filter(|(_, g)| *g >= 1.0)
        .map(|(stack, g)| {
            let path: Vec<String> = stack.iter().rev().map(|f| frame(f.as_str())).collect();
            let path = if path.is_empty() { "(no stack)".to_owned() } else { path.join(";") };
            (g, path)
        })
        .collect();
    grown.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let total = grown.iter().map(|g| g.0.round()).sum();
    let folded = grown.into_iter().map(|(g, path)| format!("{path} {}", g.round() as u64)).collect();
    Growth { folded, total, from, to }
}

/// The growth over a run's load.
pub(super) fn growth(run: &Run) -> Growth {
    let (from, to) = run.load_window();
    match (run.input.heaps.get(from), run.input.heaps.get(to)) {
        (Some(a), Some(b)) if to > from => growth_between(a, b, from, to),
        _ => Growth { folded: Vec::new(), total: 0.0, from, to },
    }
}

/// The flame graph as an SVG document (inferno's, with its script), or a
/// small SVG saying that nothing grew.
pub(super) fn svg(run: &Run, g: &Growth) -> anyhow::Result<String> {
    let (from, to) = (run.heap_name(g.from), run.heap_name(g.to));
    if g.folded.is_empty() {
        return Ok(nothing_grew(&format!("No stack gained in-use bytes from {from} to {to}.")));
    }
    let mut opts = inferno::flamegraph::Options::default();
    opts.title = format!("In-use growth of {}", run.title());
    opts.subtitle = Some(format!("{from} → {to}, the load's first and last: +{:.1} MiB", g.total / 1048576.0));
    opts.count_name = "bytes".to_owned();
    opts.name_type = "Function:".to_owned();
    opts.colors = Palette::Multi(MultiPalette::Rust);
    opts.hash = true;
    opts.deterministic = true;
    opts.font_type = "sans-serif".to_owned();
    let mut out = Vec::new();
    inferno::flamegraph::from_lines(&mut opts, g.folded.iter().map(String::as_str), &mut out)
        .map_err(|e| anyhow::anyhow!("drawing the flame graph of {}: {e}", run.dir.display()))?;
    String::from_utf8(out).map_err(|_| anyhow::anyhow!("the flame graph of {} is not UTF-8", run.dir.display()))
}

/// A small SVG with one line of text.
fn nothing_grew(message: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"100%\" height=\"60\">\
         <text x=\"16\" y=\"34\" font-family=\"sans-serif\" font-size=\"14\" fill=\"#555\">{}</text></svg>",
        escape(message)
    )
}

#[cfg(test)]
mod tests {
    use diagnosis::{Frame, HeapSample};

    use super::*;

    fn snapshot(samples: &[(&[&str], f64)]) -> HeapSnapshot {
        let samples = samples
            .iter()
            .map(|(stack, bytes)| HeapSample {
                frames: stack
                    .iter()
                    .map(|f| Frame { function: Name::from(*f), file: Name::from(""), line: 0 })
                    .collect(),
                alloc_objects: 0.0,
                alloc_bytes: 0.0,
                inuse_objects: 0.0,
                inuse_bytes: *bytes,
                block_size: None,
                labels: Vec::new(),
            })
            .collect();
        HeapSnapshot { time_s: None, period: 1, samples }
    }

    #[test]
    fn growth_is_positive_and_folded_root_first() {
        let before = snapshot(&[(&["leaf", "read_field_2", "main"], 100.0), (&["freed", "main"], 500.0)]);
        let after = snapshot(&[(&["leaf", "read_field_2", "main"], 1100.0), (&["new; odd\nname 3", "main"], 7.0)]);
        let g = growth_between(&before, &after, 1, 5);
        assert_eq!(g.folded, ["main;read_field_2;leaf 1000", "main;new,\u{a0}odd\u{a0}name\u{a0}3 7"]);
        assert_eq!(g.total, 1007.0);
    }
}
