//! A detector's answers over one run, read against its label.
//!
//! A production detector does not wait for a run's end: it answers after
//! every scrape. So each detector that can be asked at any moment (the
//! engine in both modes, the RSS-trend baseline) is asked after every
//! snapshot, on the snapshots so far ([`RunInput::prefix`]); an outside
//! command answers once, on the whole run.
//!
//! Against the label ([`Outcome::judge`]):
//! - an **alarm** is an answer other than `none`; an alarm raised before
//!   the leak's onset (or in a run with no leak) is a **false alarm**, and
//!   an alarm that stays raised over several snapshots is one alarm;
//! - the **delay** is counted from the onset to the first snapshot of the
//!   right answer that stays right to the run's end, in snapshots taken
//!   after the onset and in seconds;
//! - in a mixture, a mechanism is **named** when one of the final answer's
//!   findings has its kind.

use std::path::Path;

use diagnosis::{diagnose, rss_trend, Options, RunInput, Verdict};
use serde::{Deserialize, Serialize};

use super::Label;

/// Prefixes shorter than this are not asked: the engine needs a baseline
/// and two more snapshots before any slope means something (the matrix's
/// [`crate::verdict::snapshots_to_verdict`] starts there too).
pub const MIN_SNAPSHOTS: usize = 3;

/// The detectors that answer after every snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// The engine, with heap and pool profiles and metrics.
    Engine,
    /// The engine on heap profiles and metrics only.
    EnginePprofOnly,
    /// Theil–Sen slope and Mann–Kendall test of RSS over the load.
    RssTrend,
}

impl Builtin {
    /// All of them, in table order.
    pub const ALL: [Builtin; 3] = [Builtin::Engine, Builtin::EnginePprofOnly, Builtin::RssTrend];

    /// The name the tables give it.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Engine => "engine",
            Builtin::EnginePprofOnly => "engine --pprof-only",
            Builtin::RssTrend => "RSS trend (Theil-Sen + Mann-Kendall)",
        }
    }

    fn ask(self, input: &RunInput) -> Verdict {
        let opts = Options { pprof_only: self == Builtin::EnginePprofOnly, ..Options::default() };
        match self {
            Builtin::Engine | Builtin::EnginePprofOnly => diagnose(input, &opts),
            Builtin::RssTrend => rss_trend(input, opts.min_growth_bytes),
        }
    }
}

/// One answer: after the snapshot taken at `t` (seconds from the run's
/// start).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// When the last snapshot it read was taken.
    pub t: f64,
    /// The top kind (`none`: no leak).
    pub kind: String,
    /// The kinds of every leak finding, strongest first.
    pub kinds: Vec<String>,
}

impl Answer {
    fn of(t: f64, v: &Verdict) -> Answer {
        let mut kinds: Vec<String> = Vec::new();
        for f in v.findings.iter().filter(|f| f.kind.is_leak()) {
            let k = f.kind.to_string();
            if !kinds.contains(&k) {
                kinds.push(k);
            }
        }
        Answer { t, kind: v.kind.to_string(), kinds }
    }

    fn alarm(&self) -> bool {
        self.kind != "none"
    }
}

/// A built-in detector's answer after every snapshot from the
/// [`MIN_SNAPSHOTS`]-th on; the last is its answer on the whole run.
pub fn answers(input: &RunInput, detector: Builtin) -> Vec<Answer> {
    let times = input.timeline();
    (MIN_SNAPSHOTS..=input.heaps.len())
        .map(|k| {
            let t = times.get(k - 1).map_or(0.0, |s| s.t);
            Answer::of(t, &detector.ask(&input.prefix(k)))
        })
        .collect()
}

/// An outside command's answer on the whole run (`sh -c 'CMD "$0"' DIR`):
/// a JSON object with `leak` (bool), `kind` (string) and optionally
/// `kinds` (every kind it names).
pub fn outside_answer(cmd: &str, dir: &Path, t_end: f64) -> anyhow::Result<Answer> {
    let v = super::detector::run(cmd, dir)?;
    let leak = v.get("leak").and_then(|l| l.as_bool()).unwrap_or(false);
    let kind = v.get("kind").and_then(|k| k.as_str()).unwrap_or(if leak { "unknown" } else { "none" }).to_owned();
    let mut kinds: Vec<String> = v
        .get("kinds")
        .and_then(|k| k.as_array())
        .map(|a| a.iter().filter_map(|k| k.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    if kinds.is_empty() && kind != "none" {
        kinds.push(kind.clone());
    }
    Ok(Answer { t: t_end, kind, kinds })
}

/// What one detector's answers on one run come to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// Which detector.
    pub detector: String,
    /// Its answer on the whole run.
    pub kind: String,
    /// Every kind its answer on the whole run names.
    pub kinds: Vec<String>,
    /// Whether the final answer's kind is right (one of the mechanisms'
    /// kinds, or `none` for a healthy run).
    pub right: bool,
    /// Alarms raised before the onset (or at all, in a healthy run).
    pub false_alarms: usize,
    /// Seconds of healthy run it watched: the whole run without a leak,
    /// else up to the onset.
    pub healthy_s: f64,
    /// Snapshots after the onset until the right answer that stays right.
    pub delay_snapshots: Option<usize>,
    /// The same in seconds.
    pub delay_s: Option<f64>,
    /// Mechanisms whose kind the final answer names, of those present.
    pub named: usize,
    /// The false alarms: when each was raised and its kind.
    #[serde(default)]
    pub alarms: Vec<(f64, String)>,
}

impl Outcome {
    /// Reads `answers` (in time order; the last is the answer on the whole
    /// run) against `label`.
    pub fn judge(detector: &str, label: &Label, answers: &[Answer]) -> Outcome {
        let last = answers.last().cloned().unwrap_or(Answer { t: 0.0, kind: "none".into(), kinds: Vec::new() });
        let truth = label.kinds();
        let right = if label.leak { truth.contains(&last.kind.as_str()) } else { last.kind == "none" };
        let healthy_until = if label.leak { label.onset_at_s.unwrap_or(0.0) } else { f64::INFINITY };
        // Alarms before the onset, an alarm held over several answers
        // counted once.
        let mut alarms = Vec::new();
        let mut raised = false;
        for a in answers.iter().filter(|a| a.t < healthy_until) {
            if a.alarm() && !raised {
                alarms.push((a.t, a.kind.clone()));
            }
            raised = a.alarm();
        }
        let false_alarms = alarms.len();
        let run_end = label.phases.last().map_or(last.t, |p| p.end_s.max(last.t));
        let healthy_s = if label.leak { label.onset_at_s.unwrap_or(0.0) } else { run_end };
        // The first answer of the right run that lasts to the end.
        let (mut delay_snapshots, mut delay_s) = (None, None);
        if label.leak && right {
            let onset = label.onset_at_s.unwrap_or(0.0);
            let first_right = answers.iter().rposition(|a| !truth.contains(&a.kind.as_str())).map_or(0, |i| i + 1);
            if let Some(a) = answers.get(first_right).filter(|a| a.t >= onset) {
                let after = answers.iter().filter(|x| x.t >= onset && x.t <= a.t).count();
                delay_snapshots = Some(after);
                delay_s = Some(a.t - onset);
            }
        }
        let named = label.mechanisms.iter().filter(|m| last.kinds.contains(&m.kind)).count();
        Outcome {
            detector: detector.to_owned(),
            kind: last.kind,
            kinds: last.kinds,
            right,
            false_alarms,
            healthy_s,
            delay_snapshots,
            delay_s,
            named,
            alarms,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::dataset::{Mechanism, LABEL_FORMAT};
    use crate::runner::{Phase, PhaseSpan};

    /// A label with these mechanisms' kinds (none: a healthy fix run) and
    /// onset, over a 10 s load; the tests of scores build on it too.
    pub(crate) fn label(kinds: &[&str], onset_at_s: Option<f64>) -> Label {
        Label {
            format: LABEL_FORMAT,
            scenario: "s".into(),
            variant: if kinds.is_empty() { "fix" } else { "leak" }.into(),
            side: "server".into(),
            leak: !kinds.is_empty(),
            kind: kinds.first().copied().unwrap_or("none").into(),
            mechanisms: kinds
                .iter()
                .map(|k| Mechanism { scenario: "s".into(), kind: (*k).into(), field: None, holder: String::new() })
                .collect(),
            onset_s: 0.0,
            onset_at_s,
            leak_rate: 1,
            background: "none".into(),
            params: Default::default(),
            phases: vec![PhaseSpan { name: Phase::Load, start_s: 0.0, end_s: 10.0 }],
            interval_s: 1.0,
            profile_rate: 1,
            seed: None,
        }
    }

    fn said(t: f64, kind: &str) -> Answer {
        Answer { t, kind: kind.into(), kinds: if kind == "none" { vec![] } else { vec![kind.into()] } }
    }

    #[test]
    fn delay_counts_from_the_onset_to_the_answer_that_stays_right() {
        let l = label(&["request-field-held"], Some(4.0));
        let a: Vec<Answer> = [(3.0, "none"), (4.5, "unknown"), (5.5, "request-field-held"), (6.5, "none")]
            .into_iter()
            .chain([(7.5, "request-field-held"), (8.5, "request-field-held")])
            .map(|(t, k)| said(t, k))
            .collect();
        let o = Outcome::judge("d", &l, &a);
        assert!(o.right);
        assert_eq!(o.false_alarms, 0);
        // Snapshots at or after 4.0 up to 7.5: 4.5, 5.5, 6.5, 7.5.
        assert_eq!(o.delay_snapshots, Some(4));
        assert_eq!(o.delay_s, Some(3.5));
        assert_eq!(o.healthy_s, 4.0);
    }

    #[test]
    fn an_alarm_before_the_onset_is_false_and_counted_once_while_held() {
        let l = label(&["oversized-request"], Some(5.0));
        let a: Vec<Answer> = [(1.0, "unknown"), (2.0, "unknown"), (3.0, "none"), (4.0, "oversized-request")]
            .into_iter()
            .chain([(6.0, "oversized-request")])
            .map(|(t, k)| said(t, k))
            .collect();
        let o = Outcome::judge("d", &l, &a);
        assert_eq!(o.false_alarms, 2);
        assert!(o.right);
        // The right answer began before the onset: no delay to speak of.
        assert_eq!(o.delay_snapshots, None);
    }

    #[test]
    fn a_healthy_run_is_right_only_when_nothing_was_flagged_at_the_end() {
        let l = label(&[], None);
        let o = Outcome::judge("d", &l, &[said(1.0, "none"), said(2.0, "unknown"), said(3.0, "none")]);
        assert!(o.right);
        assert_eq!(o.false_alarms, 1);
        assert_eq!(o.healthy_s, 10.0);
        let o = Outcome::judge("d", &l, &[said(1.0, "none"), said(2.0, "unknown")]);
        assert!(!o.right);
    }

    #[test]
    fn a_mixture_is_named_mechanism_by_mechanism() {
        let l = label(&["request-field-held", "duplicate-clients"], Some(0.0));
        let both = Answer {
            t: 5.0,
            kind: "duplicate-clients".into(),
            kinds: vec!["duplicate-clients".into(), "request-field-held".into()],
        };
        let o = Outcome::judge("d", &l, &[both]);
        assert!(o.right);
        assert_eq!(o.named, 2);
        let o = Outcome::judge("d", &l, &[said(5.0, "request-field-held")]);
        assert_eq!(o.named, 1);
    }
}
