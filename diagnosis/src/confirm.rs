//! The pool profile's word on the findings. The guide warns that pprof heap
//! "only shows which functions created the leaked objects and doesn't track
//! who is holding onto those objects", and that memory reused from a pool
//! is not counted where it is used; the pool profile says who holds each
//! pinned chunk (a barrier slot, a request's or a response's field), which
//! confirms a finding, renames one that the heap profile could only place
//! on the read path, or adds one the heap profile does not show.

use std::collections::BTreeMap;

use crate::frames;
use crate::kind::Kind;
use crate::profile::HeapSnapshot;
use crate::units::mib;
use crate::verdict::Finding;

/// Added to a finding's score (up to 1) when the pool names a holder of
/// its kind: two profiles agree.
const SCORE_POOL_CONFIRMS: f64 = 0.1;

/// A finding without a named field, renamed by the pool's holder: the pool
/// names the holder as a decoder's frame names a field.
const SCORE_POOL_RENAMED: f64 = 0.9;

/// Pinned growth that only the pool profile shows: below a renamed finding,
/// which the heap profile also saw grow.
const SCORE_POOL_ONLY: f64 = 0.8;

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

/// The case a holder's name shows: a barrier slot, or a field of a
/// response or a request.
fn holder_kind(holder: &str) -> Option<Kind> {
    if holder.contains("barrier slot") {
        Some(Kind::ConnectionSurgeBarriers)
    } else if holder.contains("Response.") {
        Some(Kind::ResponseFieldHeld)
    } else if holder.contains("Request.") {
        Some(Kind::RequestFieldHeld)
    } else {
        None
    }
}

/// Holders whose pinned bytes grew by at least `min_growth`: (holder,
/// growth, kind).
fn pool_findings(pools: &[HeapSnapshot], min_growth: f64) -> Vec<(String, f64, Kind)> {
    let mut out = Vec::new();
    for (holder, series) in pool_holders(pools) {
        let growth = series.iter().copied().fold(0.0, f64::max) - series[0];
        if growth < min_growth {
            continue;
        }
        let Some(kind) = holder_kind(&holder) else { continue };
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

/// A finding whose site names no decoded field.
fn unnamed_field(f: &Finding) -> bool {
    frames::field_of(&f.site).is_none() && !f.site.contains(" field ")
}

/// Confirms, renames or adds findings by who holds the pinned chunks.
pub(crate) fn by_pool(findings: &mut Vec<Finding>, pools: &[HeapSnapshot], min_growth: f64) {
    for (holder, growth, kind) in pool_findings(pools, min_growth) {
        let evidence = vec![format!("pool profile: {} pinned in pooled chunks {holder}", mib(growth))];
        // The largest finding of the kind: the pool's holder confirms the
        // bulk of the growth, not a connection's small buffer beside it.
        if let Some(f) =
            findings.iter_mut().filter(|f| f.kind == kind).max_by(|a, b| a.growth_bytes.total_cmp(&b.growth_bytes))
        {
            // A field the heap profile could not name, now named by the
            // pool: at least what renaming it would score.
            let named_now = holder.contains("field") && unnamed_field(f);
            let floor = if named_now { SCORE_POOL_RENAMED } else { 0.0 };
            f.score = (f.score + SCORE_POOL_CONFIRMS).max(floor).min(1.0);
            f.evidence.extend(evidence);
            name_holder(f, &holder);
            continue;
        }
        // Only a finding made from pooled memory without a decoded field
        // (the read path's "pinned call after call", whose side the stacks
        // guessed, or growth of no known shape) is renamed by who holds
        // the chunks.
        if let Some(f) = findings.iter_mut().find(|f| {
            matches!(f.kind, Kind::RequestFieldHeld | Kind::ResponseFieldHeld | Kind::Unknown) && unnamed_field(f)
        }) {
            f.kind = kind;
            f.remedy = kind.remedy().to_owned();
            f.score = SCORE_POOL_RENAMED;
            f.evidence.extend(evidence);
            name_holder(f, &holder);
            continue;
        }
        findings.push(Finding {
            kind,
            score: SCORE_POOL_ONLY,
            site: holder.clone(),
            growth_bytes_per_s: 0.0,
            growth_bytes: growth,
            evidence,
            remedy: kind.remedy().to_owned(),
            holder: None,
        });
    }
}
