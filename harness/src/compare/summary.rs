//! A comparison's result: per metric, each side's median over the rounds
//! with its spread and the per-round ratio b/a; as the table `leaklab
//! compare` prints, and as its JSON (`compare.json`, `--json`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::measure::RunFigures;
use super::stats::{paired_ratios, Change, Spread};

/// Which way a metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    /// Less is better (a cost).
    Lower,
    /// More is better (throughput).
    Higher,
}

/// One figure a comparison reports.
#[derive(Debug)]
pub struct Metric {
    /// Its key in JSON: the [`RunFigures`] field.
    pub key: &'static str,
    /// Its name in the table and the figure.
    pub label: &'static str,
    /// The unit of its JSON values.
    pub unit: &'static str,
    /// The table shows values divided by this.
    pub scale: f64,
    /// Which way is better.
    pub better: Better,
    /// Reads it from one run.
    pub read: fn(&RunFigures) -> Option<f64>,
}

const KIB: f64 = 1024.0;
const MIB: f64 = 1048576.0;

macro_rules! metric {
    ($key:ident, $label:literal, $unit:literal, $scale:expr, $better:ident) => {
        Metric {
            key: stringify!($key),
            label: $label,
            unit: $unit,
            scale: $scale,
            better: Better::$better,
            read: |f| f.$key,
        }
    };
}

/// Every metric, in the order the table and the figure show them.
pub const METRICS: [Metric; 10] = [
    metric!(rps, "req/s", "calls/s", 1.0, Higher),
    metric!(p50_ms, "latency p50 ms", "ms", 1.0, Lower),
    metric!(p99_ms, "latency p99 ms", "ms", 1.0, Lower),
    metric!(p999_ms, "latency p99.9 ms", "ms", 1.0, Lower),
    metric!(cpu_us_per_call, "CPU µs/call", "µs", 1.0, Lower),
    metric!(allocs_per_call, "allocs/call", "allocations", 1.0, Lower),
    metric!(alloc_bytes_per_call, "alloc KiB/call", "bytes", KIB, Lower),
    metric!(peak_rss_bytes, "peak RSS MiB", "bytes", MIB, Lower),
    metric!(leaked_bytes_per_s, "leaked MiB/s", "bytes/s", MIB, Lower),
    metric!(held_after_drain_bytes, "held after drain MiB", "bytes", MIB, Lower),
];

/// What one side ran.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SideInfo {
    /// How the table names it (`leak`, `fix,payload=64KiB`, `serve
    /// --decode nocopy`).
    pub label: String,
    /// The scenario's variant (absent for a plain server).
    pub variant: Option<String>,
    /// The scenario's parameters as set (shared `--set` and the side's).
    pub set: Vec<(String, String)>,
    /// Flags of a plain `leaklab serve`.
    pub serve_flags: Vec<String>,
    /// The binary started as the process under test, when not this one.
    pub serve_bin: Option<String>,
}

/// One run of a comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEntry {
    /// `a` or `b`.
    pub side: String,
    /// From 1.
    pub round: usize,
    /// Its folder.
    pub dir: String,
    /// What it measured.
    pub figures: RunFigures,
}

/// One metric over the rounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSummary {
    /// The [`RunFigures`] field.
    pub key: String,
    /// The table's name.
    pub label: String,
    /// Unit of the values.
    pub unit: String,
    /// Which way is better.
    pub better: Better,
    /// a over the rounds; absent when never measured.
    pub a: Option<Spread>,
    /// b over the rounds.
    pub b: Option<Spread>,
    /// b/a of each round where both were measured and a was above 0.
    pub ratio: Option<Spread>,
    /// Which way b moved, when there are ratios of two rounds or more.
    pub change: Option<Change>,
}

/// Everything `leaklab compare` measured (`compare.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// The scenario; absent when both sides are plain servers.
    pub scenario: Option<String>,
    /// Rounds made.
    pub rounds: usize,
    /// The order the runs were made in (`a`, `b`, `b`, `a`, ...).
    pub order: Vec<String>,
    /// Seconds of load in each run.
    pub load_s: f64,
    /// The heap profiler's sampling seed, the same for every run.
    pub seed: u64,
    /// The heap profiler's sampling rate (bytes).
    pub profile_rate: usize,
    /// Parameters set for both sides (`--set`; plain servers: their load).
    pub shared_set: Vec<(String, String)>,
    /// Side a.
    pub a: SideInfo,
    /// Side b.
    pub b: SideInfo,
    /// Every run, in the order made.
    pub runs: Vec<RunEntry>,
    /// Per metric, in [`METRICS`]' order.
    pub metrics: Vec<MetricSummary>,
    /// The engine's verdicts on each side's runs, with their counts.
    pub verdicts: BTreeMap<String, BTreeMap<String, usize>>,
}

/// Each metric's summary over rounds: `a[i]` and `b[i]` are round i + 1's.
pub fn summarize(a: &[RunFigures], b: &[RunFigures]) -> Vec<MetricSummary> {
    METRICS
        .iter()
        .map(|m| {
            let av: Vec<Option<f64>> = a.iter().map(m.read).collect();
            let bv: Vec<Option<f64>> = b.iter().map(m.read).collect();
            let ratio = Spread::of(paired_ratios(&av, &bv));
            MetricSummary {
                key: m.key.to_owned(),
                label: m.label.to_owned(),
                unit: m.unit.to_owned(),
                better: m.better,
                a: Spread::of(av.into_iter().flatten()),
                b: Spread::of(bv.into_iter().flatten()),
                // One round has no spread to judge a change against.
                change: ratio.as_ref().filter(|r| r.n >= 2).map(Change::of),
                ratio,
            }
        })
        .collect()
}

/// Each verdict with how many of `runs` got it.
pub fn verdict_counts<'a>(runs: impl IntoIterator<Item = &'a RunFigures>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for f in runs {
        let v = if f.verdict.is_empty() { "?" } else { f.verdict.as_str() };
        *out.entry(v.to_owned()).or_insert(0) += 1;
    }
    out
}

/// The order of `rounds` rounds: a b, then b a, and so on (ABBA).
pub fn abba(rounds: usize) -> Vec<[char; 2]> {
    (0..rounds).map(|r| if r % 2 == 0 { ['a', 'b'] } else { ['b', 'a'] }).collect()
}

/// A value as the table writes it: three significant digits (whole
/// numbers from 100 up, powers of ten below 0.01).
pub fn number(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 || !v.is_finite() {
        return if v == 0.0 { "0".into() } else { v.to_string() };
    }
    if a < 0.01 {
        return format!("{v:.1e}");
    }
    let decimals = |x: f64| (2 - x.log10().floor() as i32).max(0) as usize;
    let d = decimals(a);
    let text = format!("{v:.d$}");
    // Rounding may carry into the next power of ten (0.9996 -> 1.000).
    match text.trim_start_matches('-').parse::<f64>() {
        Ok(r) if d > 0 && decimals(r) < d => format!("{v:.prec$}", prec = decimals(r)),
        _ => text,
    }
}

/// `median (min–max)`, scaled; `-` when absent.
fn spread_text(s: Option<&Spread>, scale: f64) -> String {
    match s {
        None => "-".into(),
        Some(s) if s.n == 1 || s.min == s.max => number(s.median / scale),
        Some(s) => format!("{} ({}–{})", number(s.median / scale), number(s.min / scale), number(s.max / scale)),
    }
}

/// `request-field-held ×4`, or `request-field-held ×3, unknown ×1`.
fn verdict_text(counts: Option<&BTreeMap<String, usize>>) -> String {
    let Some(counts) = counts else { return "-".into() };
    let mut v: Vec<(&String, &usize)> = counts.iter().collect();
    v.sort_by(|x, y| y.1.cmp(x.1).then(x.0.cmp(y.0)));
    v.iter().map(|(k, n)| format!("{k} ×{n}")).collect::<Vec<_>>().join(", ")
}

/// The table `leaklab compare` prints.
pub fn table(c: &Comparison, out_dir: &str) -> String {
    let mut t = String::new();
    let what = c.scenario.as_deref().unwrap_or("two servers under steady calls");
    let _ = writeln!(t, "leaklab compare: {what}");
    if !c.shared_set.is_empty() {
        let set: Vec<String> = c.shared_set.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(t, "  both: {}", set.join(","));
    }
    let _ = writeln!(t, "  a: {}", c.a.label);
    let _ = writeln!(t, "  b: {}", c.b.label);
    let order: Vec<String> = c.order.chunks(2).map(|p| p.join(" ")).collect();
    let _ = writeln!(
        t,
        "  {} round{} ({}), {} s of load each; runs in {out_dir}/{{a,b}}-N",
        c.rounds,
        if c.rounds == 1 { "" } else { "s" },
        order.join(" | "),
        number(c.load_s)
    );
    t.push('\n');
    let mut rows: Vec<[String; 4]> = vec![[
        "metric".into(),
        "a: median (min–max)".into(),
        "b: median (min–max)".into(),
        "b/a: median (min–max)".into(),
    ]];
    for (m, def) in c.metrics.iter().zip(METRICS.iter()) {
        let ratio = match (&m.ratio, m.change) {
            (Some(r), Some(change)) => format!("{}  {}", spread_text(Some(r), 1.0), change.words()),
            (Some(r), None) => spread_text(Some(r), 1.0),
            (None, _) => "-".into(),
        };
        rows.push([m.label.clone(), spread_text(m.a.as_ref(), def.scale), spread_text(m.b.as_ref(), def.scale), ratio]);
    }
    rows.push(["verdict".into(), verdict_text(c.verdicts.get("a")), verdict_text(c.verdicts.get("b")), String::new()]);
    let widths: Vec<usize> = (0..4).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    for r in &rows {
        let line = format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
        let _ = writeln!(t, "{}", line.trim_end());
    }
    t.push('\n');
    t.push_str(
        "a and b of a round ran back to back and b/a is taken within each round; a b/a range that holds 1\n\
         is within this machine's noise. CPU leaves out what the scrapes cost the process",
    );
    let share = |side: &str| {
        Spread::of(c.runs.iter().filter(|r| r.side == side).filter_map(|r| r.figures.scrape_cpu_share))
            .map(|s| format!("{:.0}%", s.median * 100.0))
    };
    if let (Some(a), Some(b)) = (share("a"), share("b")) {
        let _ = write!(t, " ({a} of a's CPU, {b} of b's)");
    }
    if !c.runs.is_empty() && c.runs.iter().all(|r| r.figures.allocs_counted) {
        t.push_str(";\nallocations are counted on every one by the profiler, the scrapes' left out.\n");
    } else if c.profile_rate == 1 {
        t.push_str(";\nallocations are counted in heap profiles that record every one, the scrapes' left out.\n");
    } else {
        let _ = writeln!(
            t,
            ";\nallocations are estimated from heap profiles sampled every {} bytes, the scrapes' left out.",
            c.profile_rate
        );
    }
    if c.rounds == 1 {
        t.push_str("One round: no spread, so no change can be told from noise (--rounds 4 or more).\n");
    }
    let dropped: u64 = c.runs.iter().filter(|r| !r.figures.allocs_counted).map(|r| r.figures.dropped_samples).sum();
    if dropped > 0 {
        let _ = writeln!(
            t,
            "The profiler dropped {dropped} samples over the loads (a table was full): allocations are undercounted."
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rps: f64, cpu: f64, leaked: f64, verdict: &str) -> RunFigures {
        RunFigures {
            rps: Some(rps),
            cpu_us_per_call: Some(cpu),
            leaked_bytes_per_s: Some(leaked),
            verdict: verdict.into(),
            scrape_cpu_share: Some(0.1),
            ..RunFigures::default()
        }
    }

    fn comparison() -> Comparison {
        let a = [run(400.0, 100.0, 5e6, "request-field-held"), run(390.0, 120.0, 6e6, "request-field-held")];
        let b = [run(400.0, 80.0, 0.0, "none"), run(410.0, 90.0, 1e3, "none")];
        let mut runs = Vec::new();
        for (i, order) in abba(2).iter().enumerate() {
            for side in order {
                let f = if *side == 'a' { &a[i] } else { &b[i] };
                runs.push(RunEntry {
                    side: side.to_string(),
                    round: i + 1,
                    dir: format!("out/{side}-{}", i + 1),
                    figures: f.clone(),
                });
            }
        }
        Comparison {
            scenario: Some("request-field-hold".into()),
            rounds: 2,
            order: abba(2).iter().flatten().map(|c| c.to_string()).collect(),
            load_s: 8.0,
            seed: 1,
            profile_rate: 65536,
            shared_set: vec![("payload".into(), "16KiB".into())],
            a: SideInfo { label: "leak".into(), variant: Some("leak".into()), ..SideInfo::default() },
            b: SideInfo { label: "fix".into(), variant: Some("fix".into()), ..SideInfo::default() },
            runs,
            metrics: summarize(&a, &b),
            verdicts: BTreeMap::from([("a".into(), verdict_counts(&a)), ("b".into(), verdict_counts(&b))]),
        }
    }

    #[test]
    fn rounds_alternate_abba() {
        assert_eq!(abba(4), [['a', 'b'], ['b', 'a'], ['a', 'b'], ['b', 'a']]);
        assert_eq!(abba(1), [['a', 'b']]);
    }

    #[test]
    fn each_metric_gets_medians_spreads_and_paired_ratios() {
        let c = comparison();
        let m = |key: &str| c.metrics.iter().find(|m| m.key == key).expect(key);
        let cpu = m("cpu_us_per_call");
        assert_eq!(cpu.a.map(|s| (s.median, s.min, s.max, s.n)), Some((110.0, 100.0, 120.0, 2)));
        assert_eq!(cpu.b.map(|s| s.median), Some(85.0));
        // Round by round: 80/100 and 90/120.
        assert_eq!(cpu.ratio.map(|s| (s.min, s.max)), Some((0.75, 0.8)));
        assert_eq!(cpu.change, Some(Change::Lower));
        let rps = m("rps");
        assert_eq!(rps.better, Better::Higher);
        assert_eq!(rps.change, Some(Change::WithinNoise));
        let p99 = m("p99_ms");
        assert_eq!((p99.a, p99.ratio, p99.change), (None, None, None));
        assert_eq!(c.metrics.len(), METRICS.len());
    }

    #[test]
    fn the_json_has_the_documented_shape() {
        let c = comparison();
        let v = serde_json::to_value(&c).expect("JSON");
        for key in [
            "scenario",
            "rounds",
            "order",
            "load_s",
            "seed",
            "profile_rate",
            "shared_set",
            "a",
            "b",
            "runs",
            "metrics",
            "verdicts",
        ] {
            assert!(v.get(key).is_some(), "{key} missing");
        }
        assert_eq!(v["order"], serde_json::json!(["a", "b", "b", "a"]));
        assert_eq!(v["a"]["label"], "leak");
        assert_eq!(v["runs"][1]["side"], "b");
        assert_eq!(v["runs"][1]["round"], 1);
        assert_eq!(v["runs"][0]["figures"]["rps"], 400.0);
        assert!(v["runs"][0]["figures"]["p99_ms"].is_null());
        let cpu = &v["metrics"][4];
        assert_eq!(cpu["key"], "cpu_us_per_call");
        assert_eq!(cpu["better"], "lower");
        assert_eq!(cpu["unit"], "µs");
        assert_eq!(cpu["a"]["median"], 110.0);
        assert_eq!(cpu["ratio"]["max"], 0.8);
        assert_eq!(cpu["change"], "lower");
        assert_eq!(v["metrics"][0]["change"], "within-noise");
        assert_eq!(v["verdicts"]["a"]["request-field-held"], 2);
        // It reads back as it was written.
        let back: Comparison = serde_json::from_value(v).expect("read back");
        assert_eq!(back, c);
    }

    #[test]
    fn the_table_shows_every_metric() {
        let text = table(&comparison(), "runs/x");
        for shown in [
            "both: payload=16KiB",
            "a: leak",
            "2 rounds (a b | b a), 8.00 s of load each; runs in runs/x/{a,b}-N",
            "CPU µs/call",
            "110 (100–120)",
            "0.775 (0.750–0.800)  lower",
            "leaked MiB/s",
            "request-field-held ×2",
            "(10% of a's CPU, 10% of b's)",
            "sampled every 65536 bytes",
        ] {
            assert!(text.contains(shown), "{shown:?} missing from:\n{text}");
        }
        assert!(text.lines().any(|l| l.starts_with("latency p99 ms") && l.ends_with('-')), "{text}");
    }

    #[test]
    fn numbers_keep_three_digits() {
        for (v, s) in [
            (0.0, "0"),
            (0.004, "4.0e-3"),
            (0.25, "0.250"),
            (1.234, "1.23"),
            (12.34, "12.3"),
            (400.4, "400"),
            (-2.5, "-2.50"),
        ] {
            assert_eq!(number(v), s);
        }
    }
}
