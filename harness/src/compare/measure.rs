//! What one run of a comparison measured, read back from its folder.
//!
//! The load window runs from the first to the last snapshot taken in the
//! load phase. Over it:
//!
//! - calls and req/s: the process's own request counter (`requests`);
//! - CPU per call: the process's CPU time (`cpu_s`, read by the run from
//!   outside) less what its scrapes and holder scans cost it
//!   (`scrape_cpu_s`), per call;
//! - allocations and allocated bytes per call: the profiler's exact
//!   counters (`allocations`, `allocated_bytes`, kept on every
//!   allocation) less what the admin listener allocated answering the
//!   scrapes (`scrape_allocations`, `scrape_allocated_bytes`), per call.
//!   A process built without the counters (they read 0, or are missing
//!   from older runs) falls back to `alloc_objects` and `alloc_space` of
//!   the heap profiles at the window's ends (counts when the profiler
//!   records every allocation, else estimates scaled from the samples, as
//!   Go's are), without the stacks that answered the scrapes;
//!
//! and from the whole run: latency (the peer's, from `run.json`), peak RSS,
//! leaked bytes/s (the matrix's slope), and what in-use memory stayed after
//! the drain over the first snapshot.

use std::path::Path;

use anyhow::Context;
use diagnosis::{HeapSnapshot, RunInput};
use serde::{Deserialize, Serialize};

use crate::runner::RunRecord;

/// What one run measured; a figure that cannot be told is `None`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunFigures {
    /// Calls answered (a server) or made (a client) over the load window.
    pub calls: u64,
    /// Seconds of the load window.
    pub seconds: f64,
    /// Calls per second over the window.
    pub rps: Option<f64>,
    /// Median latency of the peer's steady calls over the load, in ms
    /// (server scenarios only).
    pub p50_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
    /// 99.9th percentile.
    pub p999_ms: Option<f64>,
    /// CPU time of the process under test per call, in µs, scrapes left
    /// out.
    pub cpu_us_per_call: Option<f64>,
    /// The share of the process's CPU time over the window that went to
    /// its scrapes (left out of `cpu_us_per_call`).
    pub scrape_cpu_share: Option<f64>,
    /// Heap allocations per call: counted if `allocs_counted`, else
    /// estimated from the sampled profile.
    pub allocs_per_call: Option<f64>,
    /// Bytes allocated per call, counted or estimated as
    /// `allocs_per_call`.
    pub alloc_bytes_per_call: Option<f64>,
    /// Whether the two figures above come from the profiler's exact
    /// counters (else from the heap profiles).
    #[serde(default)]
    pub allocs_counted: bool,
    /// Largest RSS of the process under test.
    pub peak_rss_bytes: Option<f64>,
    /// In-use bytes gained per second over the warm-up and load.
    pub leaked_bytes_per_s: Option<f64>,
    /// In-use bytes at the end over those at the first snapshot.
    pub held_after_drain_bytes: Option<f64>,
    /// Heap samples the profiler dropped over the window (a table was
    /// full): allocations are undercounted by about as many.
    #[serde(default)]
    pub dropped_samples: u64,
    /// The engine's verdict (`kind`).
    pub verdict: String,
}

/// Function prefixes of the code that answers scrapes: what a heap
/// profile holds of them is the cost of being watched, not of the calls.
const WATCHING: [&str; 3] = ["leaklab::admin::", "leaklab::poolprof::", "leaklab::holdersprof::"];

/// Whether a sample was allocated while answering a scrape.
fn watching(frames: &[diagnosis::Frame]) -> bool {
    frames.iter().any(|f| WATCHING.iter().any(|p| f.function.starts_with(p)))
}

/// `alloc_objects` and `alloc_space` of a heap profile, without the
/// scrapes'.
fn allocated(heap: &HeapSnapshot) -> (f64, f64) {
    heap.samples
        .iter()
        .filter(|s| !watching(&s.frames))
        .fold((0.0, 0.0), |(n, b), s| (n + s.alloc_objects, b + s.alloc_bytes))
}

/// What the process allocated per call over a window, from its exact
/// counters at the window's ends: the growth of `total` less that of
/// `scrapes` (the admin listener's share of it), over `calls`. `None`
/// without calls.
fn counted_per_call(total: (f64, f64), scrapes: (f64, f64), calls: f64) -> Option<f64> {
    let grown = (total.1 - total.0).max(0.0);
    let watching = (scrapes.1 - scrapes.0).clamp(0.0, grown);
    (calls > 0.0).then(|| (grown - watching) / calls)
}

/// The largest `run.json` or `verdict.json` read: a real one is a few KiB.
const MAX_RECORD_BYTES: u64 = 4 << 20;

/// Reads a run folder that a run wrote (`run.json`, `metrics.jsonl`,
/// profiles, `verdict.json`).
pub fn measure(dir: &Path) -> anyhow::Result<RunFigures> {
    let run_json = dir.join("run.json");
    let record: RunRecord = serde_json::from_slice(&crate::files::read_at_most(&run_json, MAX_RECORD_BYTES)?)
        .with_context(|| format!("reading {}", run_json.display()))?;
    let input = RunInput::from_dir(dir)?;
    let verdict = crate::files::read_at_most(&dir.join("verdict.json"), MAX_RECORD_BYTES)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_owned))
        .unwrap_or_default();
    let mut f = figures(&input, &record);
    f.verdict = verdict;
    Ok(f)
}

/// The figures of a run's input and record (everything but the verdict).
pub fn figures(input: &RunInput, record: &RunRecord) -> RunFigures {
    let lines = &input.metrics;
    let value = |i: usize, name: &str| lines.get(i).and_then(|l| l.get(name));
    let mut f = RunFigures::default();
    let load: Vec<usize> = (0..lines.len()).filter(|&i| lines[i].phase.as_deref() == Some("load")).collect();
    if let (Some(&k1), Some(&k2)) = (load.first(), load.last()) {
        let seconds = lines[k2].t - lines[k1].t;
        let calls = value(k2, "requests").zip(value(k1, "requests")).map(|(b, a)| (b - a).max(0.0));
        f.seconds = seconds;
        f.calls = calls.unwrap_or(0.0) as u64;
        let per_call = |x: f64| calls.filter(|&c| c > 0.0).map(|c| x / c);
        if seconds > 0.0 {
            f.rps = calls.map(|c| c / seconds);
        }
        if let (Some(c1), Some(c2)) = (value(k1, "cpu_s"), value(k2, "cpu_s")) {
            // The scrapes of snapshots k1..k2 began after k1's reading and
            // ended before k2's.
            let scrapes: f64 = (k1..k2).filter_map(|i| value(i, "scrape_cpu_s")).sum();
            let total = c2 - c1;
            if total > 0.0 {
                f.scrape_cpu_share = Some((scrapes / total).clamp(0.0, 1.0));
                f.cpu_us_per_call = per_call((total - scrapes).max(0.0) * 1e6);
            }
        }
        f.dropped_samples = value(k2, "profiler_dropped_samples")
            .zip(value(k1, "profiler_dropped_samples"))
            .map_or(0, |(b, a)| (b - a).max(0.0) as u64);
        // The counters, if the process has them: a process allocates
        // before it serves, so 0 means a build without them.
        let ends = |name: &str| value(k1, name).zip(value(k2, name)).filter(|&(_, b)| b > 0.0);
        let scrapes = |name: &str| value(k1, name).zip(value(k2, name)).unwrap_or((0.0, 0.0));
        if let (Some(n), Some(b), Some(c)) = (ends("allocations"), ends("allocated_bytes"), calls) {
            f.allocs_per_call = counted_per_call(n, scrapes("scrape_allocations"), c);
            f.alloc_bytes_per_call = counted_per_call(b, scrapes("scrape_allocated_bytes"), c);
            f.allocs_counted = true;
        } else if input.heaps.len() == lines.len() {
            let (n1, b1) = allocated(&input.heaps[k1]);
            let (n2, b2) = allocated(&input.heaps[k2]);
            f.allocs_per_call = per_call((n2 - n1).max(0.0));
            f.alloc_bytes_per_call = per_call((b2 - b1).max(0.0));
        }
    }
    if let Some(latency) = record.peer.as_ref().and_then(|p| p.latency.as_ref()) {
        f.p50_ms = Some(latency.p50_ms);
        f.p99_ms = Some(latency.p99_ms);
        f.p999_ms = Some(latency.p999_ms);
    }
    f.peak_rss_bytes = input.metric("rss_bytes").iter().map(|p| p.1).reduce(f64::max);
    if !lines.is_empty() {
        f.leaked_bytes_per_s = Some(crate::verdict::leaked_bytes_per_s(input));
    }
    let inuse = input.metric("inuse_bytes");
    if let (Some(first), Some(last)) = (inuse.first(), inuse.last()) {
        f.held_after_drain_bytes = Some(last.1 - first.1);
    }
    f
}

#[cfg(test)]
mod tests {
    use diagnosis::{Frame, HeapSample, MetricsLine, Name};

    use super::*;
    use crate::loadgen::shape::Latency;

    fn line(t: f64, phase: &str, values: &[(&str, f64)]) -> MetricsLine {
        MetricsLine {
            t,
            phase: Some(phase.into()),
            values: values.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            text: Default::default(),
        }
    }

    fn heap(samples: &[(&str, f64, f64)]) -> HeapSnapshot {
        let samples = samples
            .iter()
            .map(|&(function, alloc_objects, alloc_bytes)| HeapSample {
                frames: vec![Frame { function: Name::from(function), file: Name::default(), line: 0 }],
                alloc_objects,
                alloc_bytes,
                inuse_objects: 0.0,
                inuse_bytes: 0.0,
                block_size: None,
                labels: Vec::new(),
            })
            .collect();
        HeapSnapshot { time_s: None, period: 65536, samples }
    }

    fn record(latency: Option<Latency>) -> RunRecord {
        let json = serde_json::json!({
            "scenario": "steady", "variant": "leak", "side": "server", "expected": "none", "params": [],
            "phases": [], "interval_s": 0.5, "snapshots": 5, "started_unix": 0, "rpc_addr": "", "admin_addr": "",
            "peer": { "ok": 1, "errors": 0, "connections": 1, "peak_connections": 1, "surge_connections": 0,
                      "idle_connections": 0, "oversized_calls": 0, "latency": latency },
        });
        serde_json::from_value(json).expect("a run record")
    }

    #[test]
    fn figures_come_from_the_load_window() {
        let m = |t, phase, req, cpu, scrape, inuse, rss| {
            line(
                t,
                phase,
                &[
                    ("requests", req),
                    ("cpu_s", cpu),
                    ("scrape_cpu_s", scrape),
                    ("inuse_bytes", inuse),
                    ("rss_bytes", rss),
                ],
            )
        };
        let metrics = vec![
            m(0.0, "warmup", 0.0, 0.10, 0.01, 1000.0, 5e6),
            m(1.0, "load", 100.0, 0.20, 0.01, 2000.0, 6e6),
            m(2.0, "load", 300.0, 0.33, 0.02, 3000.0, 7e6),
            m(3.0, "load", 500.0, 0.44, 0.05, 4000.0, 9e6),
            m(4.0, "settle", 500.0, 0.50, 0.01, 1500.0, 8e6),
        ];
        let watched = "leaklab::admin::heap::{{closure}}";
        let heaps = vec![
            heap(&[]),
            heap(&[("rpc::codec::echo::Request::read_field_2", 100.0, 1.6e6), (watched, 50.0, 1e6)]),
            heap(&[("rpc::codec::echo::Request::read_field_2", 300.0, 4.8e6), (watched, 90.0, 2e6)]),
            heap(&[("rpc::codec::echo::Request::read_field_2", 500.0, 8.0e6), (watched, 400.0, 9e6)]),
            heap(&[("rpc::codec::echo::Request::read_field_2", 500.0, 8.0e6)]),
        ];
        let input = RunInput::from_parts(heaps, Vec::new(), metrics);
        let latency = Latency { calls: 400, p50_ms: 1.5, p99_ms: 20.0, p999_ms: 40.0, max_ms: 41.0 };
        let f = figures(&input, &record(Some(latency)));
        assert_eq!((f.calls, f.seconds), (400, 2.0));
        assert_eq!(f.rps, Some(200.0));
        // 0.24 s of CPU, 0.03 s of it the scrapes of snapshots 1 and 2.
        let cpu = f.cpu_us_per_call.expect("cpu per call");
        assert!((cpu - 0.21e6 / 400.0).abs() < 1e-6, "{cpu}");
        assert!((f.scrape_cpu_share.expect("share") - 0.125).abs() < 1e-9);
        // The admin listener's allocations are not the calls'.
        assert_eq!(f.allocs_per_call, Some(1.0));
        assert_eq!(f.alloc_bytes_per_call, Some(16000.0));
        assert_eq!((f.p50_ms, f.p99_ms, f.p999_ms), (Some(1.5), Some(20.0), Some(40.0)));
        assert!(!f.allocs_counted, "no counters in these lines");
        assert_eq!(f.peak_rss_bytes, Some(9e6));
        assert_eq!(f.held_after_drain_bytes, Some(500.0));
        let leaked = f.leaked_bytes_per_s.expect("leak rate");
        assert!((leaked - 1000.0).abs() < 1e-6, "{leaked}");
    }

    #[test]
    fn counted_allocations_leave_the_scrapes_out() {
        // 400 calls; 900 blocks allocated, 100 of them by the scrapes.
        assert_eq!(counted_per_call((1000.0, 1900.0), (50.0, 150.0), 400.0), Some(2.0));
        // Scrapes never count for more than the growth, nor below 0.
        assert_eq!(counted_per_call((1000.0, 1010.0), (0.0, 500.0), 10.0), Some(0.0));
        assert_eq!(counted_per_call((1000.0, 1010.0), (0.0, 0.0), 10.0), Some(1.0));
        assert_eq!(counted_per_call((1000.0, 1010.0), (0.0, 0.0), 0.0), None);
    }

    #[test]
    fn counters_win_over_the_profiles_and_fall_back_when_absent() {
        let m = |t, req, allocs, scrape| {
            line(
                t,
                "load",
                &[
                    ("requests", req),
                    ("allocations", allocs),
                    ("allocated_bytes", allocs * 64.0),
                    ("scrape_allocations", scrape),
                    ("scrape_allocated_bytes", scrape * 64.0),
                ],
            )
        };
        let profile = || heap(&[("rpc::codec::echo::Request::read_field_2", 100.0, 1.6e6)]);
        let metrics = vec![m(1.0, 100.0, 5000.0, 300.0), m(2.0, 1100.0, 5900.0, 700.0)];
        let input = RunInput::from_parts(vec![heap(&[]), profile()], Vec::new(), metrics);
        let f = figures(&input, &record(None));
        assert!(f.allocs_counted);
        // 900 blocks, 400 of them the scrapes', over 1000 calls.
        assert_eq!(f.allocs_per_call, Some(0.5));
        assert_eq!(f.alloc_bytes_per_call, Some(32.0));
        // Another build: the counters read 0, the profiles tell.
        let metrics = vec![m(1.0, 100.0, 0.0, 0.0), m(2.0, 1100.0, 0.0, 0.0)];
        let input = RunInput::from_parts(vec![heap(&[]), profile()], Vec::new(), metrics);
        let f = figures(&input, &record(None));
        assert!(!f.allocs_counted);
        assert_eq!(f.allocs_per_call, Some(0.1));
    }

    #[test]
    fn what_cannot_be_told_is_none() {
        // No load phase, no CPU readings, no peer latency (a client scenario).
        let metrics = vec![line(0.0, "warmup", &[("requests", 0.0)]), line(1.0, "settle", &[("requests", 9.0)])];
        let input = RunInput::from_parts(vec![heap(&[]), heap(&[])], Vec::new(), metrics);
        let f = figures(&input, &record(None));
        assert_eq!((f.rps, f.cpu_us_per_call, f.allocs_per_call, f.p99_ms), (None, None, None, None));
        assert_eq!(f.calls, 0);
        // One load snapshot: a window of no length.
        let metrics = vec![line(1.0, "load", &[("requests", 5.0), ("cpu_s", 1.0)])];
        let f = figures(&RunInput::from_parts(vec![heap(&[])], Vec::new(), metrics), &record(None));
        assert_eq!((f.rps, f.cpu_us_per_call, f.allocs_per_call), (None, None, None));
    }
}
