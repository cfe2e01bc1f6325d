//! The labelled dataset that sweeps and `leaklab export` write, and how
//! detectors are scored on it.
//!
//! Every run folder of a dataset holds the run's profiles and
//! `metrics.jsonl` beside a `label.json` ([`Label`]): what was run, every
//! leak mechanism present, when the leak began (`onset_at_s`), how fast it
//! leaks (`leak_rate`), and the healthy noise around it (`background`). The
//! JSON Schemas of `label.json` and of the metrics lines are
//! [`LABEL_SCHEMA`] and [`METRICS_SCHEMA`] (`harness/schema/`); export
//! copies them into the dataset.
//!
//! - [`trace`]: a detector's answer after each snapshot of one run, and
//!   what it means against the label (alarms before the onset, delay);
//! - [`score`]: the scores of many runs, overall and per kind.

pub mod detector;
pub mod score;
pub mod trace;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use scenarios::{Side, Variant};
use serde::{Deserialize, Serialize};

use crate::runner::{PhaseSpan, RunRecord};

/// The JSON Schema of `label.json`.
pub const LABEL_SCHEMA: &str = include_str!("../../schema/label.schema.json");
/// The JSON Schema of one line of `metrics.jsonl`.
pub const METRICS_SCHEMA: &str = include_str!("../../schema/metrics.schema.json");

/// The version of the label format; readers refuse a newer one.
pub const LABEL_FORMAT: u32 = 1;

/// The names of the modifiers every scenario takes (`--set`), as the
/// labels record them.
pub mod modifier {
    /// The leak begins this long after the load starts.
    pub const ONSET: &str = "onset";
    /// One call (or connection, or surge) in N leaks.
    pub const LEAK_RATE: &str = "leak_rate";
    /// Healthy noise in the same process.
    pub const BACKGROUND: &str = "background";
    /// A second leak mechanism in the same process.
    pub const MIX: &str = "mix";
}

/// One leak mechanism present in a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mechanism {
    /// The scenario whose mechanism it is.
    pub scenario: String,
    /// The verdict kind that names it.
    pub kind: String,
    /// The Thrift field it holds, for held fields (`Request field 2 (msg)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What holds the memory (a fragment of the holder chain; `|`
    /// separates alternatives).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub holder: String,
}

/// `label.json`: the truth about one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Label {
    /// [`LABEL_FORMAT`].
    pub format: u32,
    /// The scenario run.
    pub scenario: String,
    /// `leak` or `fix`.
    pub variant: String,
    /// `server` or `client`: which side the process under test plays.
    pub side: String,
    /// Whether any leak mechanism is present.
    pub leak: bool,
    /// The verdict expected of a detector that names one kind: the
    /// scenario's own, or `none`.
    pub kind: String,
    /// Every leak mechanism present (two in a mixture; none in a healthy
    /// run).
    pub mechanisms: Vec<Mechanism>,
    /// The `onset` modifier: seconds after the load starts before the leak
    /// begins.
    pub onset_s: f64,
    /// When the leak begins, in seconds from the start of the run (the
    /// warm-up's start, the clock of `metrics.jsonl` and `phases`): 0
    /// without an onset (the process leaks from its start), else the load's
    /// planned start (the end of the planned warm-up, which `phases` marks
    /// at the first snapshot after it) plus `onset_s`; null for a healthy
    /// run. An alarm before it is a false alarm.
    pub onset_at_s: Option<f64>,
    /// The `leak_rate` modifier: one call (connection, surge) in N leaks.
    pub leak_rate: u64,
    /// The `background` modifier: `none`, `churn`, `cache`, `burst`, `all`.
    pub background: String,
    /// Every parameter with its effective value.
    pub params: BTreeMap<String, String>,
    /// The phases as they happened (seconds from the run's start).
    pub phases: Vec<PhaseSpan>,
    /// The snapshot interval, in seconds.
    pub interval_s: f64,
    /// The heap profiler's sampling rate (bytes; 1 records every
    /// allocation).
    pub profile_rate: usize,
    /// The sweep seed that drew this run, if a sweep drew it.
    #[serde(default)]
    pub seed: Option<u64>,
}

impl Label {
    /// The label of a finished run, from its `run.json` record.
    pub fn of_run(record: &RunRecord, seed: Option<u64>) -> anyhow::Result<Label> {
        let info = scenarios::find(&record.scenario).with_context(|| {
            format!("run.json names the scenario {:?}, which this leaklab does not know", record.scenario)
        })?;
        let variant: Variant = record.variant.parse().map_err(|e| anyhow::anyhow!("run.json: {e}"))?;
        let parsed = scenarios::Params::parse(info, &record.params).context("run.json: its parameters")?;
        let m = parsed.modifiers();
        let mechanisms: Vec<Mechanism> = scenarios::mechanisms(info, variant, &parsed)
            .into_iter()
            .map(|x| Mechanism {
                scenario: x.scenario.to_owned(),
                kind: x.kind.to_owned(),
                field: x.field.map(|f| f.to_string()),
                holder: scenarios::find(x.scenario).map_or(String::new(), |i| i.holder.to_owned()),
            })
            .collect();
        // When the load began: as planned (what the gates count from), else
        // as the phases saw it.
        let load_start = record
            .warmup_s
            .or_else(|| record.phases.iter().find(|p| p.name == crate::runner::Phase::Load).map(|p| p.start_s));
        let leak = !mechanisms.is_empty();
        let onset = m.onset.as_secs_f64();
        Ok(Label {
            format: LABEL_FORMAT,
            scenario: record.scenario.clone(),
            variant: record.variant.clone(),
            side: match info.side {
                Side::Server => "server".into(),
                Side::Client => "client".into(),
            },
            leak,
            kind: if leak { info.expected.to_owned() } else { "none".to_owned() },
            mechanisms,
            onset_s: onset,
            // Without an onset the process leaks from its start, warm-up
            // included; with one, from that long into the load.
            onset_at_s: match (leak, onset > 0.0) {
                (false, _) => None,
                (true, false) => Some(0.0),
                (true, true) => load_start.map(|s| s + onset),
            },
            leak_rate: m.leak_rate,
            background: m.background.to_string(),
            params: record.params.iter().cloned().collect(),
            phases: record.phases.clone(),
            interval_s: record.interval_s,
            profile_rate: record.profile_rate,
            seed,
        })
    }

    /// Reads `DIR/label.json`, or, for a run folder without one, makes it
    /// from `DIR/run.json`.
    pub fn read(dir: &Path) -> anyhow::Result<Label> {
        let path = dir.join("label.json");
        if path.exists() {
            let text = read_bounded(&path)?;
            let label: Label =
                serde_json::from_str(&text).with_context(|| format!("{}: not a leaklab label", path.display()))?;
            if label.format > LABEL_FORMAT {
                anyhow::bail!(
                    "{}: label format {} is newer than this leaklab's {LABEL_FORMAT}",
                    path.display(),
                    label.format
                );
            }
            return Ok(label);
        }
        Label::of_run(&read_record(dir)?, None)
    }

    /// Writes `DIR/label.json`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        crate::files::write_new(&dir.join("label.json"), serde_json::to_string_pretty(self)?)
    }

    /// The kinds of every mechanism present.
    pub fn kinds(&self) -> Vec<&str> {
        self.mechanisms.iter().map(|m| m.kind.as_str()).collect()
    }
}

/// The largest `label.json` or `run.json` read (a hostile file gets an
/// error, not the memory): a real one is a few KiB.
const MAX_RECORD_BYTES: u64 = 4 << 20;

/// Reads `DIR/run.json`.
pub fn read_record(dir: &Path) -> anyhow::Result<RunRecord> {
    let run = dir.join("run.json");
    serde_json::from_str(&read_bounded(&run)?).with_context(|| format!("{}: not a leaklab run record", run.display()))
}

fn read_bounded(path: &Path) -> anyhow::Result<String> {
    crate::files::read_text_at_most(path, MAX_RECORD_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hostile_label_gets_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("label.json");
        let err = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            format!("{:#}", Label::read(dir.path()).unwrap_err())
        };
        assert!(err(b"{\"format\": 1}").contains("label.json: not a leaklab label"));
        assert!(err(b"\xff\xfe garbage").contains("label.json"));
        let newer = err(br#"{"format": 9, "scenario": "s", "variant": "leak", "side": "server", "leak": true,
            "kind": "none", "mechanisms": [], "onset_s": 0, "onset_at_s": null, "leak_rate": 1,
            "background": "none", "params": {}, "phases": [], "interval_s": 0.5, "profile_rate": 1}"#);
        assert!(newer.contains("label format 9 is newer"), "{newer}");
        let big = vec![b' '; (MAX_RECORD_BYTES + 1) as usize];
        let refused = err(&big);
        assert!(refused.contains("label.json: more than 4194304 bytes"), "{refused}");
    }

    #[test]
    fn the_onset_counts_from_the_planned_warm_up_not_the_snapshot_that_saw_the_load() {
        let record = |warmup: Option<f64>| -> RunRecord {
            let mut json = serde_json::json!({
                "scenario": "request-field-hold", "variant": "leak", "side": "server",
                "expected": "request-field-held", "params": [["onset", "1s"]],
                "phases": [{"name": "warmup", "start_s": 0.0, "end_s": 2.5},
                           {"name": "load", "start_s": 2.5, "end_s": 9.5}],
                "interval_s": 0.5, "snapshots": 20, "started_unix": 0, "rpc_addr": "", "admin_addr": "",
                "peer": null,
            });
            if let Some(w) = warmup {
                json["warmup_s"] = w.into();
            }
            serde_json::from_value(json).unwrap()
        };
        // A 9 s load warms up for 2.25 s; the first snapshot in the load is
        // at 2.5 s. The gates open 1 s after 2.25 s.
        assert_eq!(Label::of_run(&record(Some(2.25)), None).unwrap().onset_at_s, Some(3.25));
        // A record from before the planned warm-up was kept.
        assert_eq!(Label::of_run(&record(None), None).unwrap().onset_at_s, Some(3.5));
    }

    #[test]
    fn the_schemas_are_json_and_require_what_a_label_has() {
        let schema: serde_json::Value = serde_json::from_str(LABEL_SCHEMA).unwrap();
        let required: Vec<&str> = schema["required"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
        let label = Label {
            format: LABEL_FORMAT,
            scenario: "s".into(),
            variant: "leak".into(),
            side: "server".into(),
            leak: false,
            kind: "none".into(),
            mechanisms: Vec::new(),
            onset_s: 0.0,
            onset_at_s: None,
            leak_rate: 1,
            background: "none".into(),
            params: BTreeMap::new(),
            phases: Vec::new(),
            interval_s: 0.5,
            profile_rate: 1,
            seed: Some(3),
        };
        let written = serde_json::to_value(&label).unwrap();
        let fields: Vec<&str> = written.as_object().unwrap().keys().map(String::as_str).collect();
        for r in &required {
            assert!(fields.contains(r), "the schema requires {r}, which a label does not write");
        }
        for f in &fields {
            assert!(schema["properties"].get(f).is_some(), "a label writes {f}, which the schema does not know");
        }
        let _: serde_json::Value = serde_json::from_str(METRICS_SCHEMA).unwrap();
    }
}
