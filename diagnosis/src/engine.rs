//! The engine: from a run's snapshots to a [`Verdict`].
//!
//! 1. Every heap sample's stack is read for its *site* (the frame a person
//!    should open) and for the frames that tell the documented cases apart
//!    ([`frames`](crate::frames)). In-use bytes are summed per site and
//!    snapshot ([`shape`](crate::shape)).
//! 2. A site *grows* when its in-use bytes rise by at least the minimum
//!    over the baseline (the first snapshot), with a Mann–Kendall trend
//!    (p < 0.05) or a step (a change point).
//! 3. Each growing site is measured against the work the process did:
//!    bytes kept per request, how much of the growth came in intervals where
//!    connections were opened, how closely it follows the connections open
//!    now, whether it plateaued, whether it stayed after the load stopped,
//!    and whether it is made of abnormally large blocks.
//! 4. Rules in the guide's terms name the kind ([`rules`](crate::rules));
//!    the pool profile, when there is one, confirms it with who holds the
//!    pinned chunks ([`confirm`](crate::confirm)).
//!
//! Nothing here knows scenarios: only frames, sizes, times and metrics.

use std::collections::BTreeMap;

use crate::confirm;
use crate::frames;
use crate::input::RunInput;
use crate::kind::{Kind, Mode};
use crate::profile::HeapSnapshot;
use crate::rules::{classify, Context, TREND_SIGNIFICANCE};
use crate::shape::{measure, sites, Span, Work};
use crate::stats::{fewest_points_for, MIN_TREND_POINTS};
use crate::units::{mib, MIB};
use crate::verdict::{Finding, Verdict};

/// A heap profile samples one allocation per `period` bytes on average, so
/// growth under this many periods may be sampling alone: the growth floor
/// is never below it.
const SAMPLING_PERIODS: f64 = 4.0;

/// Settings of a diagnosis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    /// Use heap profiles and metrics only, not the pool profile.
    pub pprof_only: bool,
    /// Growth smaller than this is never a finding (bytes; 256 KiB by
    /// default). The engine also never trusts growth under four sampling
    /// periods of the profile.
    pub min_growth_bytes: f64,
    /// A site that keeps less than this per request, and per block it
    /// gained, is bookkeeping, not a held payload (256 bytes by default: the
    /// size of a map entry with its key, where a held field pins a whole
    /// buffer). Per block, so that a field held by one call in many is
    /// still a held field.
    pub min_bytes_per_request: f64,
    /// Blocks this large may be abnormal for an RPC request (1 MiB by
    /// default), when they are also 32 times what the process allocates per
    /// request.
    pub large_block_bytes: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            pprof_only: false,
            min_growth_bytes: 256.0 * 1024.0,
            min_bytes_per_request: 256.0,
            large_block_bytes: MIB,
        }
    }
}

/// Whether the process parses JSON: any allocation under a JSON parser's
/// frames during the run.
fn parses_json(heaps: &[HeapSnapshot]) -> bool {
    let (Some(first), Some(last)) = (heaps.first(), heaps.last()) else { return false };
    let json_alloc = |h: &HeapSnapshot| -> f64 {
        h.samples
            .iter()
            .filter(|s| s.frames.iter().any(|f| frames::role(&f.function) == frames::Role::Json))
            .map(|s| s.alloc_bytes)
            .sum()
    };
    json_alloc(last) > json_alloc(first)
}

/// What the process allocates per request on average over the load (all
/// sites); without request counts, the allocation-weighted median block
/// size of the read path.
fn typical_request(heaps: &[HeapSnapshot], active: &[usize], work: &Work) -> Option<f64> {
    let (first, last) = (*active.first()?, *active.last()?);
    if let Some(r) = &work.requests {
        let done = r[last] - r[first];
        let allocated = heaps[last].total_alloc_bytes() - heaps[first].total_alloc_bytes();
        if done > 0.0 && allocated > 0.0 {
            return Some(allocated / done);
        }
    }
    let mut sizes: Vec<(i64, f64)> = heaps[last]
        .samples
        .iter()
        .filter(|s| {
            let names: Vec<&str> = s.frames.iter().map(|f| f.function.as_str()).collect();
            frames::facts(&names).read_path
        })
        .filter_map(|s| Some((s.block_size?, s.alloc_objects)))
        .collect();
    sizes.sort_by_key(|p| p.0);
    let total: f64 = sizes.iter().map(|p| p.1).sum();
    let mut seen = 0.0;
    for (size, n) in sizes {
        seen += n;
        if seen >= total / 2.0 {
            return Some(size as f64);
        }
    }
    None
}

/// Where abnormally large requests came from: the field whose decoding
/// allocated the large blocks, and the largest request and its sender from
/// the metrics (`largest_request_bytes`, `large_requests`, `largest_peer`).
fn oversized_origin(input: &RunInput, opts: &Options) -> Vec<String> {
    let mut out = Vec::new();
    let mut fields: BTreeMap<(String, u32), f64> = BTreeMap::new();
    if let Some(last) = input.heaps.last() {
        for s in &last.samples {
            if s.block_size.is_some_and(|b| b as f64 >= opts.large_block_bytes) {
                let field = s.frames.iter().find_map(|f| frames::field_of(&f.function));
                if let Some(field) = field {
                    *fields.entry(field).or_default() += s.alloc_objects;
                }
            }
        }
    }
    if let Some(((owner, tag), n)) = fields.into_iter().max_by(|a, b| a.1.total_cmp(&b.1)) {
        out.push(format!(
            "{owner} field {tag} carried them (about {n:.0} blocks of {} or more decoded)",
            mib(opts.large_block_bytes)
        ));
    }
    if let Some(line) = input.metrics.iter().rev().find(|l| l.get("largest_request_bytes").is_some_and(|b| b > 0.0)) {
        let bytes = line.get("largest_request_bytes").unwrap_or(0.0);
        let mut s = format!("the largest request was {}", mib(bytes));
        if let Some(n) = line.get("large_requests") {
            s.push_str(&format!(", one of {n:.0} of 1 MiB or more"));
        }
        if let Some(peer) = line.text.get("largest_peer") {
            s.push_str(&format!(", sent by {peer}"));
        }
        out.push(s);
    }
    out
}

/// One finding per kind: the strongest site leads, the others' growth adds
/// to it and they are named in its evidence. Strongest kind first.
fn merge_by_kind(mut findings: Vec<Finding>) -> Vec<Finding> {
    let weight = |f: &Finding| f.score * f.growth_bytes;
    findings.sort_by(|a, b| b.score.total_cmp(&a.score).then(b.growth_bytes.total_cmp(&a.growth_bytes)));
    let mut merged: Vec<Finding> = Vec::new();
    for f in findings {
        match merged.iter_mut().find(|m| m.kind == f.kind) {
            Some(m) => {
                m.evidence.push(format!("also at {} (+{})", f.site, mib(f.growth_bytes)));
                m.growth_bytes += f.growth_bytes;
                m.growth_bytes_per_s += f.growth_bytes_per_s;
            }
            None => merged.push(f),
        }
    }
    merged.sort_by(|a, b| weight(b).total_cmp(&weight(a)));
    merged
}

/// Diagnoses a run.
pub fn diagnose(input: &RunInput, opts: &Options) -> Verdict {
    let n = input.heaps.len();
    let mode = if opts.pprof_only || input.pools.is_empty() { Mode::PprofOnly } else { Mode::Full };
    if n < MIN_TREND_POINTS {
        return Verdict {
            leak: false,
            kind: Kind::None,
            findings: Vec::new(),
            mode,
            snapshots: n,
            summary: format!("{n} snapshot(s): at least {MIN_TREND_POINTS} are needed to see a trend"),
        };
    }
    let times = input.timeline();
    let is_after = |p: &Option<String>| matches!(p.as_deref(), Some("drain" | "settle"));
    let active: Vec<usize> = (0..n).filter(|&i| !is_after(&times[i].phase)).collect();
    // What stays is read once things settled: during the drain connections
    // are still closing and the pool still giving memory back.
    let after: Vec<usize> = (0..n).filter(|&i| times[i].phase.as_deref() == Some("settle")).collect();
    let active = if active.len() >= MIN_TREND_POINTS { active } else { (0..n).collect() };
    let work = Work::of(input, &times);
    let period = input.heaps.iter().map(|h| h.period).max().unwrap_or(0).max(0) as f64;
    let min_growth = opts.min_growth_bytes.max(SAMPLING_PERIODS * period);
    let origin = oversized_origin(input, opts);
    let cx = Context {
        min_growth,
        min_bytes_per_request: opts.min_bytes_per_request,
        large_block_bytes: opts.large_block_bytes,
        parses_json: parses_json(&input.heaps),
        typical_request: typical_request(&input.heaps, &active, &work),
        oversized_origin: &origin,
    };
    let span = Span { times: &times, active: &active, after: &after };
    let mut findings: Vec<Finding> = Vec::new();
    for site in sites(&input.heaps) {
        let s = measure(&site, span, &work, opts.large_block_bytes);
        if s.growth < min_growth {
            continue;
        }
        let Some(named) = classify(&site.facts, &s, &cx) else { continue };
        let mut evidence = vec![format!(
            "in-use at {} grew {} over the baseline ({:.2} MiB/s, Mann-Kendall p = {:.3}{})",
            site.facts.site,
            mib(s.growth),
            s.slope / MIB,
            s.trend_p,
            if s.steps > 0 { format!(", {} step(s)", s.steps) } else { String::new() }
        )];
        evidence.extend(named.evidence);
        findings.push(Finding {
            kind: named.kind,
            score: named.score,
            site: site.facts.site.clone(),
            growth_bytes_per_s: s.slope.max(0.0),
            growth_bytes: s.growth,
            evidence,
            remedy: named.kind.remedy().to_owned(),
            holder: None,
            also_held_by: Vec::new(),
        });
    }
    if mode == Mode::Full {
        confirm::by_pool(&mut findings, &input.pools, min_growth, cx.parses_json);
    }
    let findings = merge_by_kind(findings);
    let kind = findings.first().map_or(Kind::None, |f| f.kind);
    let summary = match findings.first() {
        Some(f) => format!(
            "leak: {} at {} (+{}, {:.2} MiB/s)",
            f.kind,
            f.site,
            mib(f.growth_bytes),
            f.growth_bytes_per_s / MIB
        ),
        None if active.len() < fewest_points_for(TREND_SIGNIFICANCE) => format!(
            "no leak: no site kept growing over {n} snapshots; {} under load are too few for a trend test \
             (Mann-Kendall needs {} for p < {TREND_SIGNIFICANCE}), so only growth that stayed is seen",
            active.len(),
            fewest_points_for(TREND_SIGNIFICANCE)
        ),
        None => format!("no leak: no site kept growing over {n} snapshots"),
    };
    Verdict { leak: kind.is_leak(), kind, findings, mode, snapshots: n, summary }
}
