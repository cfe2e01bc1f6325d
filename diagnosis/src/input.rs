//! [`RunInput`]: everything a diagnosis reads from a run's directory (or
//! from a live process): heap profiles, pool profiles, metrics lines, and
//! the phases' spans.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::DiagnosisError;
use crate::profile::{DecodeLimits, HeapSnapshot, ProfileDecoder};

/// The largest metrics file or `run.json` read: 1 GiB.
const MAX_TEXT_BYTES: u64 = 1 << 30;

/// One line of `metrics.jsonl`: a snapshot's time, phase and figures.
///
/// ```text
/// {"t":12.5,"phase":"load","rss_bytes":5844992,"requests":196080,...}
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetricsLine {
    /// Seconds since the run started (`t`).
    pub t: f64,
    /// `warmup`, `load`, `drain`, `settle`, or whatever the process calls
    /// its phases; `None` if the line has none.
    pub phase: Option<String>,
    /// Every other numeric field, by name (`rss_bytes`, `inuse_bytes`,
    /// `requests`, `open_conns`, `pool_leased_bytes`, ...). Fields that are
    /// not numbers are left out.
    pub values: BTreeMap<String, f64>,
    /// String fields (`largest_peer`, ...), by name.
    pub text: BTreeMap<String, String>,
}

impl MetricsLine {
    /// One value, if the line has it.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.values.get(name).copied()
    }

    /// Parses one JSON object; the error is the reason only.
    fn parse(line: &str) -> Result<MetricsLine, String> {
        let value: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
        let serde_json::Value::Object(object) = value else {
            return Err("not a JSON object".into());
        };
        let mut t = None;
        let mut phase = None;
        let mut values = BTreeMap::new();
        let mut text = BTreeMap::new();
        for (key, value) in object {
            match key.as_str() {
                "t" => match value.as_f64() {
                    Some(v) if v.is_finite() => t = Some(v),
                    _ => return Err(format!("`t` is not a number: {value}")),
                },
                "phase" => match value {
                    serde_json::Value::String(s) => phase = Some(s),
                    serde_json::Value::Null => {}
                    other => return Err(format!("`phase` is not a string: {other}")),
                },
                _ => {
                    if let Some(v) = value.as_f64().filter(|v| v.is_finite()) {
                        values.insert(key, v);
                    } else if let serde_json::Value::String(s) = value {
                        text.insert(key, s);
                    }
                }
            }
        }
        let t = t.ok_or("no time `t`")?;
        Ok(MetricsLine { t, phase, values, text })
    }
}

/// Parses the text of a `metrics.jsonl` file: one JSON object a line, blank
/// lines skipped. `path` names the file for errors, which give the line
/// number (from 1).
pub fn parse_metrics(bytes: &[u8], path: impl AsRef<Path>) -> Result<Vec<MetricsLine>, DiagnosisError> {
    let mut lines = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let error = |reason: String| DiagnosisError::Metrics { path: path.as_ref().to_path_buf(), line: i + 1, reason };
        let text = std::str::from_utf8(raw).map_err(|e| error(format!("not UTF-8: {e}")))?;
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        lines.push(MetricsLine::parse(text).map_err(error)?);
    }
    Ok(lines)
}

/// Parses Prometheus text format into `name -> value`, for live scraping.
///
/// Labels are ignored, so the last sample of a name wins; names are kept as
/// they are (`leaklab_requests_total` keeps its `_total`); comments,
/// malformed lines and values that are not finite are skipped.
///
/// ```
/// let m = diagnosis::parse_prometheus("# TYPE x counter\nx_total{a=\"}\"} 3\nrss 5.5e6 1700000000\n");
/// assert_eq!(m["x_total"], 3.0);
/// assert_eq!(m["rss"], 5.5e6);
/// ```
pub fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line.find(|c: char| c == '{' || c.is_whitespace()).unwrap_or(line.len());
        let name = &line[..name_end];
        let mut rest = &line[name_end..];
        if rest.starts_with('{') {
            match label_set_end(rest) {
                Some(end) => rest = &rest[end..],
                None => continue,
            }
        }
        let value = rest.split_whitespace().next().and_then(|v| v.parse::<f64>().ok());
        if let Some(v) = value.filter(|v| v.is_finite()) {
            if !name.is_empty() {
                out.insert(name.to_owned(), v);
            }
        }
    }
    out
}

/// The byte just past the `}` that closes the label set `s` opens, skipping
/// quoted label values (which may hold `}` and `\"`).
fn label_set_end(s: &str) -> Option<usize> {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '}' if !in_quotes => return Some(i + 1),
            _ => {}
        }
    }
    None
}

/// One phase's span, in seconds from the start of the run (`run.json`'s
/// `phases`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PhaseSpan {
    /// The phase (`warmup`, `load`, `drain`, `settle`).
    pub name: String,
    /// Start, in seconds.
    pub start_s: f64,
    /// End, in seconds.
    pub end_s: f64,
}

/// When snapshot `i` was taken, and in which phase (see
/// [`RunInput::timeline`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotTime {
    /// Seconds.
    pub t: f64,
    /// The phase, if known.
    pub phase: Option<String>,
}

/// What a diagnosis reads: heap profiles in order, optional pool profiles,
/// optional metrics lines and phase spans. Nothing in it names a scenario.
#[derive(Debug, Clone, Default)]
pub struct RunInput {
    /// The directory read, if the input came from one.
    pub dir: Option<PathBuf>,
    /// The heap profiles, oldest first.
    pub heaps: Vec<HeapSnapshot>,
    /// The pool profiles (chunks pinned in a buffer pool, by who holds
    /// them), oldest first; empty if the process serves none.
    pub pools: Vec<HeapSnapshot>,
    /// The holder profiles (in-use memory by the chain of blocks that
    /// reach it, for [`attribute_holders`](crate::attribute_holders)),
    /// oldest first; empty if the run took none.
    pub holders: Vec<HeapSnapshot>,
    /// The metrics lines, oldest first; empty if there are none.
    pub metrics: Vec<MetricsLine>,
    /// The phases' spans; empty if unknown.
    pub phases: Vec<PhaseSpan>,
}

/// The parts of `run.json` a diagnosis reads: the phases and nothing else.
#[derive(Deserialize)]
struct RunPhases {
    #[serde(default)]
    phases: Vec<PhaseSpan>,
}

impl RunInput {
    /// Reads a run's directory: `heap-NNN.pb.gz` (at least one, sorted by
    /// NNN), `pool-NNN.pb.gz`, `holders-NNN.pb.gz`, `metrics.jsonl` and the
    /// phases of `run.json` where present; all profiles together within the default
    /// [`DecodeLimits`] (at most 256 MiB decoded for the whole run).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<RunInput, DiagnosisError> {
        RunInput::from_dir_with(dir, DecodeLimits::default())
    }

    /// As [`RunInput::from_dir`], within `limits`: one [`ProfileDecoder`]
    /// reads every profile, so [`DecodeLimits::run_memory`] bounds them
    /// together and names repeated across profiles are kept once. An error
    /// names the file that would have gone past a limit.
    pub fn from_dir_with(dir: impl AsRef<Path>, limits: DecodeLimits) -> Result<RunInput, DiagnosisError> {
        let dir = dir.as_ref();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| DiagnosisError::Io { path, source }
        };
        // Heap, pool and holder profiles, in that order.
        let mut files: [Vec<(u64, PathBuf)>; 3] = Default::default();
        let mut count = 0;
        for entry in fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some((kind, n)) =
                ["heap-", "pool-", "holders-"].iter().enumerate().find_map(|(k, p)| Some((k, numbered(name, p)?)))
            else {
                continue;
            };
            if count >= limits.run_profiles {
                let reason = format!("more than {} profiles in the run's directory, the limit", limits.run_profiles);
                return Err(DiagnosisError::Profile { path: entry.path(), reason });
            }
            count += 1;
            files[kind].push((n, entry.path()));
        }
        if files[0].is_empty() {
            return Err(DiagnosisError::NoProfiles { dir: dir.to_path_buf() });
        }
        let mut decoder = ProfileDecoder::new(limits);
        let [heaps, pools, holders] = files.map(|mut f| {
            f.sort();
            f.iter().map(|(_, p)| decoder.read(p)).collect::<Result<Vec<_>, _>>()
        });
        let (heaps, pools, holders) = (heaps?, pools?, holders?);

        let metrics_path = dir.join("metrics.jsonl");
        let metrics = match read_if_present(&metrics_path).map_err(io(&metrics_path))? {
            Some(bytes) => parse_metrics(&bytes, &metrics_path)?,
            None => Vec::new(),
        };
        let run_path = dir.join("run.json");
        let phases = match read_if_present(&run_path).map_err(io(&run_path))? {
            Some(bytes) => {
                let run: RunPhases = serde_json::from_slice(&bytes)
                    .map_err(|e| DiagnosisError::Phases { path: run_path.clone(), reason: e.to_string() })?;
                run.phases
            }
            None => Vec::new(),
        };
        Ok(RunInput { dir: Some(dir.to_path_buf()), heaps, pools, holders, metrics, phases })
    }

    /// Input gathered live (scraped from a process's endpoints): heap
    /// profiles, pool profiles (may be empty) and metrics lines (may be
    /// empty), oldest first.
    pub fn from_parts(heaps: Vec<HeapSnapshot>, pools: Vec<HeapSnapshot>, metrics: Vec<MetricsLine>) -> RunInput {
        RunInput { dir: None, heaps, pools, holders: Vec::new(), metrics, phases: Vec::new() }
    }

    /// The first `k` snapshots only (heap, pool and metrics lines), as the
    /// run looked after its `k`-th snapshot: to measure how early a verdict
    /// comes. Holder profiles are left out (a prefix's verdict names no
    /// holder).
    pub fn prefix(&self, k: usize) -> RunInput {
        RunInput {
            dir: self.dir.clone(),
            heaps: self.heaps.iter().take(k).cloned().collect(),
            pools: self.pools.iter().take(k).cloned().collect(),
            holders: Vec::new(),
            metrics: self.metrics.iter().take(k).cloned().collect(),
            phases: self.phases.clone(),
        }
    }

    /// The same input with these phase spans.
    pub fn with_phases(mut self, phases: Vec<PhaseSpan>) -> RunInput {
        self.phases = phases;
        self
    }

    /// The time and phase of each heap snapshot, in order.
    ///
    /// Time: metrics line `i`'s `t` when there is one line per snapshot;
    /// else the profiles' own times relative to the first, when every
    /// profile has one; else `i` seconds. Phase: metrics line `i`'s phase
    /// when there is one line per snapshot and it has one; else the phase
    /// span (from `run.json`) holding the time; else `None`.
    pub fn timeline(&self) -> Vec<SnapshotTime> {
        let n = self.heaps.len();
        let aligned = self.metrics.len() == n;
        let profile_times: Option<Vec<f64>> = self.heaps.iter().map(|h| h.time_s).collect();
        (0..n)
            .map(|i| {
                let t = if aligned {
                    self.metrics[i].t
                } else if let Some(times) = &profile_times {
                    times[i] - times[0]
                } else {
                    i as f64
                };
                let phase = aligned
                    .then(|| self.metrics[i].phase.clone())
                    .flatten()
                    .or_else(|| self.phase_at(t).map(str::to_owned));
                SnapshotTime { t, phase }
            })
            .collect()
    }

    /// The phase whose span holds time `t` (start inclusive, end exclusive,
    /// except the last span's end), if any.
    pub fn phase_at(&self, t: f64) -> Option<&str> {
        let last = self.phases.len().checked_sub(1)?;
        self.phases
            .iter()
            .enumerate()
            .find(|(i, span)| span.start_s <= t && (t < span.end_s || (*i == last && t <= span.end_s)))
            .map(|(_, span)| span.name.as_str())
    }

    /// One metric over time: `(t, value)` for every metrics line that has
    /// it.
    pub fn metric(&self, name: &str) -> Vec<(f64, f64)> {
        self.metrics.iter().filter_map(|m| Some((m.t, m.get(name)?))).collect()
    }
}

/// `NNN` of `{prefix}NNN.pb.gz`.
fn numbered(name: &str, prefix: &str) -> Option<u64> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(".pb.gz")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The file's bytes, `None` if it does not exist; at most
/// [`MAX_TEXT_BYTES`].
fn read_if_present(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let file = match crate::files::open_regular(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let too_long = || io::Error::new(io::ErrorKind::InvalidData, format!("more than {MAX_TEXT_BYTES} bytes"));
    let len = file.metadata()?.len();
    if len > MAX_TEXT_BYTES {
        return Err(too_long());
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(MAX_TEXT_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_TEXT_BYTES {
        return Err(too_long());
    }
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_line_keeps_every_numeric_field() {
        let m =
            MetricsLine::parse(r#"{"t":1.5,"phase":"load","rss_bytes":100,"custom":2.5,"note":"x","n":null}"#).unwrap();
        assert_eq!(m.t, 1.5);
        assert_eq!(m.phase.as_deref(), Some("load"));
        assert_eq!(m.values.len(), 2);
        assert_eq!(m.get("rss_bytes"), Some(100.0));
        assert_eq!(m.get("custom"), Some(2.5));
    }

    #[test]
    fn metrics_line_without_phase() {
        let m = MetricsLine::parse(r#"{"t":0,"inuse_bytes":7}"#).unwrap();
        assert_eq!(m.phase, None);
    }

    #[test]
    fn metrics_line_errors() {
        for (line, reason) in [
            ("[1,2]", "not a JSON object"),
            ("{\"phase\":\"load\"}", "no time `t`"),
            ("{\"t\":\"soon\"}", "`t` is not a number"),
            ("{\"t\":1,\"phase\":3}", "`phase` is not a string"),
            ("{\"t\":1", "not JSON"),
        ] {
            let err = MetricsLine::parse(line).unwrap_err();
            assert!(err.starts_with(reason), "{line}: {err}");
        }
    }

    #[test]
    fn metrics_file_error_names_file_and_line() {
        let text = b"{\"t\":0}\n\n{\"t\":1}\nnot json\n";
        let err = parse_metrics(text, "run/metrics.jsonl").unwrap_err();
        match &err {
            DiagnosisError::Metrics { path, line, .. } => {
                assert_eq!(path, Path::new("run/metrics.jsonl"));
                assert_eq!(*line, 4);
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().starts_with("run/metrics.jsonl:4: not JSON"), "{err}");
    }

    #[test]
    fn prometheus_text() {
        let text = "# HELP x y\n# TYPE x gauge\nprocess_resident_memory_bytes 5844992.0\n\
                    leaklab_requests_total 196080\nwith_labels{a=\"b} c\",d=\"\\\"\"} 3.5\nbad line\n\
                    nan_value NaN\ninf_value +Inf\nunclosed{a=\"b\" 1\n";
        let m = parse_prometheus(text);
        assert_eq!(m["process_resident_memory_bytes"], 5844992.0);
        assert_eq!(m["leaklab_requests_total"], 196080.0);
        assert_eq!(m["with_labels"], 3.5);
        assert_eq!(m.len(), 3, "{m:?}");
    }

    #[test]
    fn numbered_names() {
        assert_eq!(numbered("heap-007.pb.gz", "heap-"), Some(7));
        assert_eq!(numbered("heap-1000.pb.gz", "heap-"), Some(1000));
        assert_eq!(numbered("heap-.pb.gz", "heap-"), None);
        assert_eq!(numbered("heap-+1.pb.gz", "heap-"), None);
        assert_eq!(numbered("heap-001.pb", "heap-"), None);
        assert_eq!(numbered("pool-001.pb.gz", "heap-"), None);
    }

    fn line(t: f64, phase: Option<&str>) -> MetricsLine {
        MetricsLine { t, phase: phase.map(str::to_owned), values: BTreeMap::new(), text: BTreeMap::new() }
    }

    fn heap_at(time_s: Option<f64>) -> HeapSnapshot {
        HeapSnapshot { time_s, ..Default::default() }
    }

    fn spans() -> Vec<PhaseSpan> {
        [("warmup", 0.0, 2.0), ("load", 2.0, 10.0), ("settle", 10.0, 12.0)]
            .iter()
            .map(|&(name, start_s, end_s)| PhaseSpan { name: name.into(), start_s, end_s })
            .collect()
    }

    #[test]
    fn timeline_from_metrics_when_counts_match() {
        let input = RunInput::from_parts(
            vec![heap_at(None), heap_at(None)],
            vec![],
            vec![line(0.5, Some("warmup")), line(3.0, None)],
        )
        .with_phases(spans());
        let tl = input.timeline();
        assert_eq!(tl[0], SnapshotTime { t: 0.5, phase: Some("warmup".into()) });
        // No phase on the line: the span holding t = 3.0.
        assert_eq!(tl[1], SnapshotTime { t: 3.0, phase: Some("load".into()) });
    }

    #[test]
    fn timeline_from_profile_times_when_counts_differ() {
        let input = RunInput::from_parts(
            vec![heap_at(Some(1000.0)), heap_at(Some(1002.5)), heap_at(Some(1012.0))],
            vec![],
            vec![line(0.0, Some("warmup"))],
        )
        .with_phases(spans());
        let tl = input.timeline();
        let t: Vec<f64> = tl.iter().map(|s| s.t).collect();
        assert_eq!(t, [0.0, 2.5, 12.0]);
        let phases: Vec<Option<&str>> = tl.iter().map(|s| s.phase.as_deref()).collect();
        assert_eq!(phases, [Some("warmup"), Some("load"), Some("settle")]);
    }

    #[test]
    fn timeline_by_index_as_last_resort() {
        let input = RunInput::from_parts(vec![heap_at(Some(5.0)), heap_at(None), heap_at(None)], vec![], vec![]);
        let tl = input.timeline();
        assert_eq!(tl.iter().map(|s| s.t).collect::<Vec<_>>(), [0.0, 1.0, 2.0]);
        assert!(tl.iter().all(|s| s.phase.is_none()));
    }

    #[test]
    fn metric_series() {
        let mut a = line(0.0, None);
        a.values.insert("rss_bytes".into(), 10.0);
        let b = line(1.0, None);
        let mut c = line(2.0, None);
        c.values.insert("rss_bytes".into(), 30.0);
        let input = RunInput::from_parts(vec![], vec![], vec![a, b, c]);
        assert_eq!(input.metric("rss_bytes"), [(0.0, 10.0), (2.0, 30.0)]);
        assert!(input.metric("nothing").is_empty());
    }
}
