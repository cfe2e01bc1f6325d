//! The engine: from a run's snapshots to a [`Verdict`].
//!
//! 1. Every heap sample's stack is read for its *site* (the frame a person
//!    should open) and for the frames that tell the documented cases apart
//!    ([`frames`](crate::frames)). In-use bytes are summed per site and
//!    snapshot.
//! 2. A site *grows* when its in-use bytes rise by at least the minimum
//!    over the baseline (the first snapshot), with a Mann–Kendall trend
//!    (p < 0.05) or a step (a change point).
//! 3. Each growing site is measured against the work the process did:
//!    bytes kept per request, how much of the growth came in intervals where
//!    connections were opened, how closely it follows the connections open
//!    now, whether it plateaued, whether it stayed after the load stopped,
//!    and whether it is made of abnormally large blocks.
//! 4. Rules in the guide's terms name the kind; the pool profile, when
//!    there is one, confirms it with who holds the pinned chunks.
//!
//! Nothing here knows scenarios: only frames, sizes, times and metrics.

use std::collections::{BTreeMap, HashMap};

use crate::frames::{self, StackFacts};
use crate::input::{RunInput, SnapshotTime};
use crate::profile::{HeapSnapshot, Name};
use crate::stats::{change_points, mann_kendall, median, pearson, plateau, theil_sen};
use crate::verdict::{remedy, Finding, Verdict};

/// Settings of a diagnosis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    /// Use heap profiles and metrics only, not the pool profile.
    pub pprof_only: bool,
    /// Growth smaller than this is never a finding (bytes). The engine also
    /// never trusts growth under four sampling periods of the profile.
    pub min_growth_bytes: f64,
    /// A site that keeps less than this per request is bookkeeping (a map
    /// entry), not a held payload.
    pub min_bytes_per_request: f64,
    /// Blocks this large may be abnormal for an RPC request, when they are
    /// also [`ABNORMAL_FACTOR`] times what the process allocates per request.
    pub large_block_bytes: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            pprof_only: false,
            min_growth_bytes: 256.0 * 1024.0,
            min_bytes_per_request: 256.0,
            large_block_bytes: 1024.0 * 1024.0,
        }
    }
}

/// Growth of no documented kind must reach this many times the growth floor
/// to be called a leak.
pub const UNKNOWN_FLOOR_FACTOR: f64 = 8.0;

/// A block is abnormal when it is this many times larger than what the
/// process allocates per request on average.
pub const ABNORMAL_FACTOR: f64 = 32.0;

/// One site's in-use bytes over the snapshots.
#[derive(Debug, Clone, Default)]
struct Site {
    facts: StackFacts,
    inuse: Vec<f64>,
    /// In-use bytes per block size, first and peak snapshot.
    sizes_first: BTreeMap<i64, f64>,
    sizes_peak: BTreeMap<i64, f64>,
}

/// Metrics aligned with the snapshots (`None` where the run has none).
#[derive(Debug, Clone, Default)]
struct Work {
    requests: Option<Vec<f64>>,
    open_conns: Option<Vec<f64>>,
    opened_conns: Option<Vec<f64>>,
    clients_created: Option<Vec<f64>>,
}

fn aligned(input: &RunInput, times: &[SnapshotTime], name: &str) -> Option<Vec<f64>> {
    let series = input.metric(name);
    if series.is_empty() {
        return None;
    }
    if input.metrics.len() == times.len() && series.len() == times.len() {
        return Some(series.into_iter().map(|(_, v)| v).collect());
    }
    // Nearest line in time.
    Some(
        times
            .iter()
            .map(|s| series.iter().min_by(|a, b| (a.0 - s.t).abs().total_cmp(&(b.0 - s.t).abs())).map_or(0.0, |p| p.1))
            .collect(),
    )
}

/// Sums a snapshot's in-use bytes per site.
fn sites(heaps: &[HeapSnapshot]) -> Vec<Site> {
    let mut cache: HashMap<Vec<Name>, StackFacts> = HashMap::new();
    let mut by_site: BTreeMap<String, Site> = BTreeMap::new();
    let n = heaps.len();
    for (i, heap) in heaps.iter().enumerate() {
        for s in &heap.samples {
            if s.inuse_bytes <= 0.0 && i + 1 < n {
                continue;
            }
            let key: Vec<Name> = s.frames.iter().map(|f| f.function.clone()).collect();
            let facts = cache
                .entry(key)
                .or_insert_with_key(|k| frames::facts(&k.iter().map(Name::as_str).collect::<Vec<_>>()))
                .clone();
            let site = by_site.entry(facts.site.clone()).or_insert_with(|| Site {
                facts: facts.clone(),
                inuse: vec![0.0; n],
                ..Site::default()
            });
            merge_facts(&mut site.facts, &facts);
            site.inuse[i] += s.inuse_bytes;
        }
    }
    // Block sizes at the first snapshot and at each site's peak.
    let mut out: Vec<Site> = by_site.into_values().collect();
    for site in &mut out {
        let peak = argmax(&site.inuse);
        for (idx, target) in [(0usize, 0u8), (peak, 1u8)] {
            let mut map = BTreeMap::new();
            for s in &heaps[idx].samples {
                let key: Vec<Name> = s.frames.iter().map(|f| f.function.clone()).collect();
                if cache.get(&key).is_some_and(|f| f.site == site.facts.site) {
                    *map.entry(s.block_size.unwrap_or(0)).or_insert(0.0) += s.inuse_bytes;
                }
            }
            if target == 0 {
                site.sizes_first = map;
            } else {
                site.sizes_peak = map;
            }
        }
    }
    out
}

fn merge_facts(into: &mut StackFacts, other: &StackFacts) {
    into.pooled |= other.pooled;
    into.read_path |= other.read_path;
    into.conn_setup |= other.conn_setup;
    into.encode |= other.encode;
    into.balancer |= other.balancer;
    into.json |= other.json;
    into.handler |= other.handler;
    if into.field.is_none() {
        into.field = other.field.clone();
    }
}

fn argmax(y: &[f64]) -> usize {
    y.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i)
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

/// Pinned bytes per holder in the pool profiles: holder -> series.
fn pool_holders(pools: &[HeapSnapshot]) -> BTreeMap<String, Vec<f64>> {
    let n = pools.len();
    let mut out: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (i, p) in pools.iter().enumerate() {
        for s in &p.samples {
            let pinned = s.labels.iter().any(|(k, v)| k == "pinned" && v == "true");
            if !pinned {
                continue;
            }
            let holder = s.frames.first().map_or("unknown holder", |f| f.function.as_str());
            out.entry(holder.to_owned()).or_insert_with(|| vec![0.0; n])[i] += s.inuse_bytes;
        }
    }
    out
}

/// What one growing site looks like.
#[derive(Debug, Clone)]
struct Shape {
    growth: f64,
    slope: f64,
    trend_p: f64,
    steps: usize,
    plateaued: bool,
    /// Fraction of the growth still there after the load (None: no
    /// after-load snapshots).
    retained: Option<f64>,
    per_request: Option<f64>,
    /// Fraction of the growth made in intervals where connections opened.
    at_openings: Option<f64>,
    /// Correlation with the connections open now.
    with_open: Option<f64>,
    /// Connections opened from the first snapshot to the peak.
    opened: Option<f64>,
    /// Clients created from the first snapshot to the peak.
    clients: Option<f64>,
    /// Whether the connections open now kept rising over the load (none
    /// without that metric).
    open_rising: Option<bool>,
    /// Correlation with clients created.
    with_clients: Option<f64>,
    /// Fraction of the growth in blocks of at least `large_block_bytes`.
    large_blocks: f64,
    largest_block: i64,
}

fn shape(site: &Site, times: &[SnapshotTime], active: &[usize], after: &[usize], work: &Work, opts: &Options) -> Shape {
    let y = &site.inuse;
    let base = y[0];
    let ya: Vec<f64> = active.iter().map(|&i| y[i]).collect();
    let ta: Vec<f64> = active.iter().map(|&i| times[i].t).collect();
    let peak_i = active.iter().copied().max_by(|a, b| y[*a].total_cmp(&y[*b])).unwrap_or(0);
    let growth = y[peak_i] - base;
    let slope = theil_sen(&ta, &ya).map_or(0.0, |(s, _)| s);
    let mk = mann_kendall(&ya);
    let steps = change_points(&ya, 2, None).len();
    let plateaued = plateau(&ya).is_plateau;
    let retained = (!after.is_empty() && growth > 0.0).then(|| {
        let tail: Vec<f64> = after.iter().rev().take(3).map(|&i| y[i]).collect();
        (median(&tail).unwrap_or(base) - base) / growth
    });
    let per_request = work.requests.as_ref().and_then(|r| {
        let done = r[peak_i] - r[0];
        (done > 0.0).then(|| growth / done)
    });
    let at_openings = work.opened_conns.as_ref().map(|o| {
        let (mut with, mut all) = (0.0, 0.0);
        for w in 1..y.len() {
            let dy = (y[w] - y[w - 1]).max(0.0);
            all += dy;
            if o[w] > o[w - 1] {
                with += dy;
            }
        }
        if all > 0.0 {
            with / all
        } else {
            0.0
        }
    });
    let corr = |series: &Option<Vec<f64>>| {
        series.as_ref().and_then(|s| {
            let xs: Vec<f64> = active.iter().map(|&i| s[i]).collect();
            pearson(&xs, &ya)
        })
    };
    let gained: f64 = site
        .sizes_peak
        .iter()
        .map(|(size, b)| (size, (b - site.sizes_first.get(size).copied().unwrap_or(0.0)).max(0.0)))
        .filter(|(size, _)| **size as f64 >= opts.large_block_bytes)
        .map(|(_, b)| b)
        .sum();
    let total_gained: f64 =
        site.sizes_peak.iter().map(|(size, b)| (b - site.sizes_first.get(size).copied().unwrap_or(0.0)).max(0.0)).sum();
    Shape {
        growth,
        slope,
        trend_p: mk.p_value,
        steps,
        plateaued,
        retained,
        per_request,
        at_openings,
        with_open: corr(&work.open_conns),
        opened: work.opened_conns.as_ref().map(|o| o[peak_i] - o[0]),
        clients: work.clients_created.as_ref().map(|c| c[peak_i] - c[0]),
        open_rising: work.open_conns.as_ref().map(|o| {
            // Still climbing in the second half of the load, not only while
            // the first connections came in.
            let open: Vec<f64> = active.iter().map(|&i| o[i]).collect();
            let (mid, last) = (open[open.len() / 2], open[open.len() - 1]);
            let mk = mann_kendall(&open[open.len() / 2..]);
            last - mid > (0.1 * mid).max(2.0) && mk.s > 0
        }),
        with_clients: corr(&work.clients_created),
        large_blocks: if total_gained > 0.0 { gained / total_gained } else { 0.0 },
        largest_block: site.sizes_peak.keys().next_back().copied().unwrap_or(0),
    }
}

fn mib(b: f64) -> String {
    format!("{:.1} MiB", b / 1048576.0)
}

/// Names the kind of one growing site, or `None` if it is not a leak.
#[allow(clippy::too_many_arguments)]
fn classify(
    site: &Site,
    s: &Shape,
    json: bool,
    typical: Option<f64>,
    oversized_origin: &[String],
    min_growth: f64,
    opts: &Options,
    evidence: &mut Vec<String>,
) -> Option<(&'static str, f64)> {
    let f = &site.facts;
    let trending = s.trend_p < 0.05 && s.slope > 0.0;
    let kept = s.retained.is_none_or(|r| r >= 0.5);
    let per_request_ok = s.per_request.is_none_or(|b| b >= opts.min_bytes_per_request);
    if let Some(r) = s.retained {
        evidence.push(format!("{:.0}% of the growth stayed after the load stopped", (r * 100.0).clamp(0.0, 999.0)));
    }
    if let Some(b) = s.per_request {
        evidence.push(format!("{:.0} bytes kept per request", b));
    }
    // Abnormally large blocks on connections that were already open: large,
    // and far larger than what a request usually costs.
    let abnormal = typical.is_some_and(|t| s.largest_block as f64 >= ABNORMAL_FACTOR * t);
    if s.large_blocks >= 0.5
        && abnormal
        && s.at_openings.is_none_or(|o| o < 0.5)
        && (f.read_path || f.pooled || f.field.is_some())
    {
        evidence.push(format!(
            "{:.0}% of the growth is blocks of {} or more (largest {}), on connections that were already open",
            s.large_blocks * 100.0,
            mib(opts.large_block_bytes),
            mib(s.largest_block as f64)
        ));
        if let Some(t) = typical {
            evidence.push(format!(
                "a typical request costs {:.1} KiB: the largest block is {:.0} times that",
                t / 1024.0,
                s.largest_block as f64 / t
            ));
        }
        evidence.extend(oversized_origin.iter().cloned());
        return Some(("oversized-request", 0.7 + 0.3 * s.large_blocks));
    }
    if f.balancer {
        // One client's event queue fills up to its bound and stops: only
        // more and more clients (or, without metrics, growth that keeps
        // going and stays) make the balancer cache leak.
        let more_clients = s.clients.map(|c| c > 1.0);
        let leaking = match more_clients {
            Some(more) => more && (trending || kept),
            None => trending && kept && !s.plateaued,
        };
        if !leaking {
            return None;
        }
        evidence.push("allocated by the balancer cache's refresh (rebalance hooks formatting instance lists)".into());
        if let Some(c) = s.clients {
            evidence.push(format!("{c:.0} clients were created while it grew"));
        }
        if let Some(c) = s.with_clients {
            evidence.push(format!("follows the number of clients created (r = {c:.2})"));
        }
        return Some(("duplicate-clients", 0.95));
    }
    if let Some(c) = s.with_clients.filter(|c| *c > 0.95) {
        if !f.read_path && f.field.is_none() && trending {
            evidence.push(format!("follows the number of clients created (r = {c:.2})"));
            return Some(("duplicate-clients", 0.7));
        }
    }
    if !(trending || s.steps > 0) {
        return None;
    }
    if let Some((owner, tag)) = &f.field {
        if !kept || !per_request_ok || s.plateaued {
            return None;
        }
        evidence.push(format!("allocated by the decoding of {owner} field {tag} (copied out of the read buffer)"));
        if json {
            evidence
                .push("the process parses JSON: values parsed zero-copy from that string field pin all of it".into());
            return Some(("zero-copy-string-held", 0.85));
        }
        let kind = if owner.contains("Response") || owner.contains("Result") {
            "response-field-held"
        } else {
            "request-field-held"
        };
        return Some((kind, 0.9));
    }
    // Connection buffers that follow the connections open now: a leak while
    // they keep growing, bounded (an idle timeout at work) once they level.
    if let (Some(r), true) = (s.with_open, f.pooled || f.conn_setup || f.read_path || f.encode) {
        if r > 0.8 {
            // The upstream keeps opening connections: their number keeps
            // rising. Bounded by an idle timeout, it levels off.
            if s.open_rising.unwrap_or(trending && !s.plateaued) && trending {
                evidence.push(format!("follows the connections open now (r = {r:.2}): buffers of idle connections"));
                return Some(("idle-connection-buffers", 0.6 + 0.4 * r.min(1.0)));
            }
            return None;
        }
    }
    if f.pooled || f.read_path || f.encode || f.handler || f.conn_setup {
        let at_openings = s.at_openings.unwrap_or(0.0);
        if kept && (at_openings >= 0.6 || s.at_openings.is_none() && s.steps >= 2) {
            evidence.push(format!(
                "{:.0}% of the growth came when connections were opened, and it stays after they closed",
                at_openings * 100.0
            ));
            if let Some(opened) = s.opened {
                evidence.push(format!(
                    "memory follows the peak of connections, not requests: {opened:.0} connections opened, {:.0} KiB kept per connection opened",
                    s.growth / opened.max(1.0) / 1024.0
                ));
            }
            let path = if f.read_path {
                "the poller's read path into the pool (a request leak)"
            } else if f.encode {
                "serialization into pooled output nodes (a response leak without NoCopy)"
            } else if f.handler {
                "the business handler (response fields linked in without a copy)"
            } else {
                "connection buffers"
            };
            evidence.push(format!("attributed to {path}"));
            return Some(("connection-surge-barriers", 0.6 + 0.4 * at_openings));
        }
        if kept && per_request_ok && trending && !s.plateaued && at_openings < 0.3 && f.read_path {
            evidence.push("read buffers pinned request after request: a field sliced without a copy".into());
            return Some(("request-field-held", 0.6));
        }
    }
    // Growth no documented case explains is named only when it is large
    // enough not to be a cache still filling up.
    if trending && kept && per_request_ok && !s.plateaued && s.growth >= UNKNOWN_FLOOR_FACTOR * min_growth {
        return Some(("unknown", 0.4));
    }
    None
}

/// Evidence from the pool profile: pinned bytes by holder.
fn pool_findings(pools: &[HeapSnapshot], min_growth: f64) -> Vec<(String, f64, &'static str)> {
    let mut out = Vec::new();
    for (holder, series) in pool_holders(pools) {
        let growth = series.iter().copied().fold(0.0, f64::max) - series[0];
        if growth < min_growth {
            continue;
        }
        let kind = if holder.contains("barrier slot") {
            "connection-surge-barriers"
        } else if holder.contains("Response.") {
            "response-field-held"
        } else if holder.contains("Request.") {
            "request-field-held"
        } else {
            continue;
        };
        out.push((holder, growth, kind));
    }
    out
}

/// A held field named by the pool ("held by Request.msg (field 2)") is
/// what a person needs: it goes first in the site.
fn name_holder(f: &mut Finding, holder: &str) {
    if holder.contains("field") && !f.site.contains(holder) {
        let field = holder.trim_start_matches("held by ");
        f.site = format!("{field}, pinned in pooled buffers taken at {}", f.site);
    }
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
    let mode = if opts.pprof_only || input.pools.is_empty() { "pprof-only" } else { "full" }.to_owned();
    if n < 3 {
        return Verdict {
            leak: false,
            kind: "none".into(),
            findings: Vec::new(),
            mode,
            snapshots: n,
            summary: format!("{n} snapshot(s): at least 3 are needed to see a trend"),
        };
    }
    let times = input.timeline();
    let is_after = |p: &Option<String>| matches!(p.as_deref(), Some("drain" | "settle"));
    let active: Vec<usize> = (0..n).filter(|&i| !is_after(&times[i].phase)).collect();
    // What stays is read once things settled: during the drain connections
    // are still closing and the pool still giving memory back.
    let after: Vec<usize> = (0..n).filter(|&i| times[i].phase.as_deref() == Some("settle")).collect();
    let active = if active.len() >= 3 { active } else { (0..n).collect() };
    let work = Work {
        requests: aligned(input, &times, "requests"),
        open_conns: aligned(input, &times, "open_conns"),
        opened_conns: aligned(input, &times, "opened_conns"),
        clients_created: aligned(input, &times, "clients_created"),
    };
    let json = parses_json(&input.heaps);
    let typical = typical_request(&input.heaps, &active, &work);
    let period = input.heaps.iter().map(|h| h.period).max().unwrap_or(0).max(0) as f64;
    let min_growth = opts.min_growth_bytes.max(4.0 * period);
    let origin = oversized_origin(input, opts);
    let mut findings: Vec<Finding> = Vec::new();
    for site in sites(&input.heaps) {
        let s = shape(&site, &times, &active, &after, &work, opts);
        if s.growth < min_growth {
            continue;
        }
        let mut evidence = vec![format!(
            "in-use at {} grew {} over the baseline ({:.2} MiB/s, Mann-Kendall p = {:.3}{})",
            site.facts.site,
            mib(s.growth),
            s.slope / 1048576.0,
            s.trend_p,
            if s.steps > 0 { format!(", {} step(s)", s.steps) } else { String::new() }
        )];
        let Some((kind, score)) = classify(&site, &s, json, typical, &origin, min_growth, opts, &mut evidence) else {
            continue;
        };
        // Of several sites of one kind, the one the guide points at leads:
        // for idle connections, the buffer each connection starts with.
        let characteristic = kind == "idle-connection-buffers" && site.facts.conn_setup;
        findings.push(Finding {
            kind: kind.to_owned(),
            score: if characteristic { 1.0 } else { score },
            site: site.facts.site.clone(),
            growth_bytes_per_s: s.slope.max(0.0),
            growth_bytes: s.growth,
            evidence,
            remedy: remedy(kind).to_owned(),
            holder: None,
        });
    }
    if mode == "full" {
        for (holder, growth, kind) in pool_findings(&input.pools, min_growth) {
            // The pool names who holds the chunks: it confirms (or corrects)
            // a read-path finding.
            let evidence = vec![format!("pool profile: {} pinned in pooled chunks {holder}", mib(growth))];
            if let Some(f) = findings.iter_mut().find(|f| f.kind == kind) {
                f.score = (f.score + 0.1).min(1.0);
                f.evidence.extend(evidence);
                name_holder(f, &holder);
                continue;
            }
            // Only a finding made from pooled memory without a decoded field
            // (the read path's "pinned request after request", or growth
            // of no known shape) is renamed by who holds the chunks.
            if let Some(f) = findings.iter_mut().find(|f| {
                matches!(f.kind.as_str(), "request-field-held" | "unknown")
                    && frames::field_of(&f.site).is_none()
                    && !f.site.contains(" field ")
            }) {
                f.kind = kind.to_owned();
                f.remedy = remedy(kind).to_owned();
                f.score = 0.9;
                f.evidence.extend(evidence);
                name_holder(f, &holder);
                continue;
            }
            findings.push(Finding {
                kind: kind.to_owned(),
                score: 0.8,
                site: holder.clone(),
                growth_bytes_per_s: 0.0,
                growth_bytes: growth,
                evidence,
                remedy: remedy(kind).to_owned(),
                holder: None,
            });
        }
    }
    let findings = merge_by_kind(findings);
    let kind = findings.first().map_or("none".to_owned(), |f| f.kind.clone());
    let leak = kind != "none";
    let summary = match findings.first() {
        Some(f) => format!(
            "leak: {} at {} (+{}, {:.2} MiB/s)",
            f.kind,
            f.site,
            mib(f.growth_bytes),
            f.growth_bytes_per_s / 1048576.0
        ),
        None => format!("no leak: no site kept growing over {n} snapshots"),
    };
    Verdict { leak, kind, findings, mode, snapshots: n, summary }
}
