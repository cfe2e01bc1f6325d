//! The pool profile's word on the findings. The guide warns that pprof heap
//! "only shows which functions created the leaked objects and doesn't track
//! who is holding onto those objects", and that memory reused from a pool
//! is not counted where it is used; the pool profile says who holds each
//! pinned chunk (a barrier slot, a request's or a response's field), which
//! confirms a finding, renames one that the heap profile could only place
//! on the read path, or adds one the heap profile does not show.

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

/// Pinned bytes per holder in the pool profiles: (holder, series), in the
/// order holders first appear (a sample's fields in the pool's order).
fn pool_holders(pools: &[HeapSnapshot]) -> Vec<(String, Vec<f64>)> {
    let n = pools.len();
    let mut out: Vec<(String, Vec<f64>)> = Vec::new();
    for (i, p) in pools.iter().enumerate() {
        for s in &p.samples {
            let pinned = s.labels.iter().any(|(k, v)| k == "pinned" && v == "true");
            if !pinned {
                continue;
            }
            let holder = s.frames.first().map_or("unknown holder", |f| f.function.as_str());
            let holders = holders_of(holder);
            let share = s.inuse_bytes / holders.len() as f64;
            for h in holders {
                let at = match out.iter().position(|(name, _)| name == h) {
                    Some(at) => at,
                    None => {
                        out.push((h.to_owned(), vec![0.0; n]));
                        out.len() - 1
                    }
                };
                out[at].1[i] += share;
            }
        }
    }
    out
}

/// The holders one pool sample names: the pool lists every field that
/// still references a chunk (`held by A + held by B`), and each is a
/// holder of its own, so that two mechanisms keeping two fields of the
/// same calls are both seen. They share the chunks' bytes in equal parts,
/// as a page mapped by N processes counts 1/N to each in Linux's
/// proportional set size: the holders' sum stays the pinned bytes.
///
/// A chunk a barrier slot holds stays the slot's, whole: a slot keeps its
/// references past the call that made them, and pools that list every
/// field ever cut from a chunk (not only the live ones) name such fields
/// beside the slot that pins it.
fn holders_of(holder: &str) -> Vec<&str> {
    if holder.contains("barrier slot") {
        return vec![holder];
    }
    holder.split(" + ").collect()
}

/// The case a holder's name shows: a barrier slot; a `string` field in a
/// process that parses JSON; or a field of a response or a request.
///
/// *Caching Objects by Parsing String Fields in Request/Response Using
/// Sonic*: sonic's values parsed from a string field reuse the field's
/// memory, so a held `string` field of a JSON-parsing process is held
/// through what was parsed from it. The pool names each field with its
/// Thrift type (`Request.json (field 3, string)`); a `binary` field is no
/// JSON text and stays a held field of its message.
fn holder_kind(holder: &str, parses_json: bool) -> Option<Kind> {
    if holder.contains("barrier slot") {
        Some(Kind::ConnectionSurgeBarriers)
    } else if parses_json && holder.contains(", string)") {
        Some(Kind::ZeroCopyStringHeld)
    } else if holder.contains("Response.") {
        Some(Kind::ResponseFieldHeld)
    } else if holder.contains("Request.") {
        Some(Kind::RequestFieldHeld)
    } else {
        None
    }
}

/// A holder's pinned bytes over the pool profiles.
struct Pinned {
    holder: String,
    /// The peak over the first profile: enough to confirm a finding the
    /// heap profile made.
    growth: f64,
    /// Over the first profile at each of the last two, the smaller: what
    /// the holder still pins at the end. Chunks pinned by calls in flight
    /// (a nocopy request's field, while its call runs) go back, so a peak
    /// alone is no leak: a finding only the pool shows needs this.
    stays: f64,
    kind: Kind,
}

/// Holders whose pinned bytes grew by at least `min_growth`.
fn pool_findings(pools: &[HeapSnapshot], min_growth: f64, parses_json: bool) -> Vec<Pinned> {
    let mut out = Vec::new();
    for (holder, series) in pool_holders(pools) {
        let growth = series.iter().copied().fold(0.0, f64::max) - series[0];
        if growth < min_growth {
            continue;
        }
        let Some(kind) = holder_kind(&holder, parses_json) else { continue };
        let stays = series.iter().rev().take(2).copied().fold(f64::INFINITY, f64::min) - series[0];
        out.push(Pinned { holder, growth, stays: stays.max(0.0), kind });
    }
    out
}

/// Between the fields a site names and where their chunks were taken.
const PINNED_AT: &str = ", pinned in pooled buffers taken at ";

/// Whether a holder is a decoded field (a barrier slot's holder stays the
/// slot's, whatever fields are listed beside it: see [`holders_of`]).
fn names_field(holder: &str) -> bool {
    holder.contains("field") && !holder.contains("barrier slot")
}

/// A held field named by the pool ("held by Request.msg (field 2,
/// binary)") is what a person needs: it goes first in the site, after the
/// fields already named there. A finding the pool alone made (`pool_only`)
/// lists its holders.
fn name_holder(f: &mut Finding, holder: &str, pool_only: bool) {
    let field = holder.trim_start_matches("held by ");
    if !names_field(holder) || f.site.contains(field) {
        return;
    }
    if pool_only {
        f.site = format!("{} + {holder}", f.site);
        return;
    }
    f.site = match f.site.split_once(PINNED_AT) {
        Some((named, at)) => format!("{named} + {field}{PINNED_AT}{at}"),
        None => format!("{field}{PINNED_AT}{}", f.site),
    };
}

/// A finding whose site names no decoded field.
fn unnamed_field(f: &Finding) -> bool {
    frames::field_of(&f.site).is_none() && !f.site.contains(" field ") && !f.site.contains("(field ")
}

/// Confirms, renames or adds findings by who holds the pinned chunks.
pub(crate) fn by_pool(findings: &mut Vec<Finding>, pools: &[HeapSnapshot], min_growth: f64, parses_json: bool) {
    let mut holders = pool_findings(pools, min_growth, parses_json);
    // Holders that confirm a finding of their kind go first, so that a
    // co-holder of the same chunks cannot rename that finding away.
    holders.sort_by_key(|p| !findings.iter().any(|f| f.kind == p.kind));
    // Findings a holder already confirmed, and those the pool alone made
    // (pushed at the end: indices below stay valid).
    let (mut confirmed, first_pool_only) = (vec![false; findings.len()], findings.len());
    for Pinned { holder, growth, stays, kind } in holders {
        let evidence = vec![format!("pool profile: {} pinned in pooled chunks {holder}", mib(growth))];
        // The largest finding of the kind: the pool's holder confirms the
        // bulk of the growth, not a connection's small buffer beside it.
        let largest = findings
            .iter()
            .enumerate()
            .filter(|(_, f)| f.kind == kind)
            .max_by(|(_, a), (_, b)| a.growth_bytes.total_cmp(&b.growth_bytes))
            .map(|(i, _)| i);
        if let Some(i) = largest {
            let f = &mut findings[i];
            let pool_only = i >= first_pool_only;
            // A field the heap profile could not name, now named by the
            // pool: at least what renaming it would score.
            let named_now = names_field(&holder) && unnamed_field(f);
            let floor = if named_now { SCORE_POOL_RENAMED } else { 0.0 };
            // One confirmation per finding, however many holders agree.
            let bonus = if pool_only || std::mem::replace(&mut confirmed[i], true) { 0.0 } else { SCORE_POOL_CONFIRMS };
            f.score = (f.score + bonus).max(floor).min(1.0);
            // A finding the pool alone made has only the pool's bytes that
            // stay: a co-holder's share adds to them.
            if pool_only {
                f.growth_bytes += stays;
            }
            f.evidence.extend(evidence);
            name_holder(f, &holder, pool_only);
            continue;
        }
        // Only a finding made from pooled memory without a decoded field
        // (the read path's "pinned call after call", whose side the stacks
        // guessed, or growth of no known shape) is renamed by who holds
        // the chunks.
        if let Some(i) = findings.iter().position(|f| {
            matches!(f.kind, Kind::RequestFieldHeld | Kind::ResponseFieldHeld | Kind::Unknown) && unnamed_field(f)
        }) {
            // Renamed: the pool's word is in its score already.
            if let Some(c) = confirmed.get_mut(i) {
                *c = true;
            }
            let f = &mut findings[i];
            f.kind = kind;
            f.remedy = kind.remedy().to_owned();
            f.score = SCORE_POOL_RENAMED;
            f.evidence.extend(evidence);
            name_holder(f, &holder, false);
            continue;
        }
        if stays < min_growth {
            continue;
        }
        findings.push(Finding {
            kind,
            score: SCORE_POOL_ONLY,
            site: holder.clone(),
            growth_bytes_per_s: 0.0,
            growth_bytes: stays,
            evidence: vec![format!(
                "pool profile: {} pinned in pooled chunks {holder}, {} of it still at the end",
                mib(growth),
                mib(stays)
            )],
            remedy: kind.remedy().to_owned(),
            holder: None,
            also_held_by: Vec::new(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::HeapSample;

    const MIB_F: f64 = 1024.0 * 1024.0;

    /// Pool snapshots where `holder` pins `mib(i)` MiB in snapshot i.
    fn pools(holder: &str, mib: impl Fn(usize) -> f64) -> Vec<HeapSnapshot> {
        (0..6)
            .map(|i| {
                let mut s = HeapSample::of(&[holder, "rpc::linkbuf::InputBuffer::book"], mib(i) * MIB_F);
                s.labels.push(("pinned".into(), "true".into()));
                HeapSnapshot { time_s: Some(i as f64), period: 0, samples: vec![s] }
            })
            .collect()
    }

    fn read_path_finding(kind: Kind) -> Finding {
        Finding {
            kind,
            score: 0.6,
            site: "rpc::linkbuf::InputBuffer::new_node".into(),
            growth_bytes_per_s: MIB_F,
            growth_bytes: 40.0 * MIB_F,
            evidence: Vec::new(),
            remedy: String::new(),
            holder: None,
            also_held_by: Vec::new(),
        }
    }

    #[test]
    fn two_live_fields_of_the_same_chunks_are_two_holders_sharing_the_bytes() {
        let held = "held by Request.msg (field 2, binary) + held by Request.json (field 3, string)";
        let p = pools(held, |i| 8.0 * i as f64);
        // The read path's finding stays the request field's; sonic's
        // string is added beside it, with half the chunks' bytes.
        let mut findings = vec![read_path_finding(Kind::RequestFieldHeld)];
        by_pool(&mut findings, &p, MIB_F, true);
        let kinds: Vec<Kind> = findings.iter().map(|f| f.kind).collect();
        assert_eq!(kinds, [Kind::RequestFieldHeld, Kind::ZeroCopyStringHeld]);
        assert!(findings[0].site.starts_with("Request.msg (field 2, binary), pinned"), "{}", findings[0].site);
        // Half of what stays at the end (32 MiB: the smaller of the last
        // two profiles, 32 and 40).
        assert_eq!(findings[1].growth_bytes, 16.0 * MIB_F);
        assert!(findings[1].site.contains("Request.json (field 3, string)"));
        // Without JSON parsing a string field is a held request field.
        let mut findings = vec![read_path_finding(Kind::RequestFieldHeld)];
        by_pool(&mut findings, &p, MIB_F, false);
        let kinds: Vec<Kind> = findings.iter().map(|f| f.kind).collect();
        assert_eq!(kinds, [Kind::RequestFieldHeld], "both fields confirm the one finding");
        assert_eq!(
            (findings[0].site.as_str(), findings[0].score),
            (
                "Request.msg (field 2, binary) + Request.json (field 3, string), pinned in pooled buffers taken at \
                 rpc::linkbuf::InputBuffer::new_node",
                SCORE_POOL_RENAMED
            ),
            "named once each, confirmed once"
        );
    }

    #[test]
    fn a_string_field_alone_in_a_json_parsing_process_renames_the_read_path() {
        let p = pools("held by Request.json (field 3, string)", |i| 8.0 * i as f64);
        let mut findings = vec![read_path_finding(Kind::RequestFieldHeld)];
        by_pool(&mut findings, &p, MIB_F, true);
        assert_eq!(findings.len(), 1);
        assert_eq!((findings[0].kind, findings[0].score), (Kind::ZeroCopyStringHeld, SCORE_POOL_RENAMED));
        // A second string field of the same chunks confirms the renamed
        // finding without raising its score again.
        let p =
            pools("held by Request.json (field 3, string) + held by Request.doc (field 4, string)", |i| 8.0 * i as f64);
        let mut findings = vec![read_path_finding(Kind::RequestFieldHeld)];
        by_pool(&mut findings, &p, MIB_F, true);
        assert_eq!(findings.len(), 1);
        assert_eq!((findings[0].kind, findings[0].score), (Kind::ZeroCopyStringHeld, SCORE_POOL_RENAMED));
        assert!(findings[0].site.contains("Request.json (field 3, string) + Request.doc (field 4, string), pinned"));
    }

    #[test]
    fn a_barrier_slot_keeps_the_whole_sample_with_fields_beside_it() {
        let p = pools("held by Request.msg (field 2) + held by a barrier slot", |i| 8.0 * i as f64);
        let mut findings = Vec::new();
        by_pool(&mut findings, &p, MIB_F, false);
        assert_eq!(findings.len(), 1);
        assert_eq!((findings[0].kind, findings[0].growth_bytes), (Kind::ConnectionSurgeBarriers, 32.0 * MIB_F));
        // A barrier finding the heap profile made is confirmed, not named
        // after the field beside the slot.
        let mut barrier = read_path_finding(Kind::ConnectionSurgeBarriers);
        barrier.site = "rpc::barrier::new_slot".into();
        let mut findings = vec![barrier];
        by_pool(&mut findings, &p, MIB_F, false);
        assert_eq!(
            (findings.len(), findings[0].site.as_str(), findings[0].score),
            (1, "rpc::barrier::new_slot", 0.6 + SCORE_POOL_CONFIRMS)
        );
    }

    #[test]
    fn fields_only_the_pool_sees_are_one_finding_with_all_their_bytes() {
        let held = "held by Response.msg (field 2, binary) + held by Response.json (field 3, string)";
        let p = pools(held, |i| 8.0 * i as f64);
        let mut findings = Vec::new();
        by_pool(&mut findings, &p, MIB_F, false);
        assert_eq!(findings.len(), 1);
        let f = &findings[0];
        assert_eq!((f.kind, f.score, f.growth_bytes), (Kind::ResponseFieldHeld, SCORE_POOL_ONLY, 32.0 * MIB_F));
        assert_eq!(f.site, held);
    }

    #[test]
    fn chunks_pinned_by_calls_in_flight_that_go_back_are_no_finding() {
        // A nocopy request field pins 24 MiB at the busiest profile, and
        // nothing at the end: a call in flight, not a held field.
        let p = pools("held by Request.msg (field 2, binary)", |i| if i == 3 { 24.0 } else { 0.5 });
        let mut findings = Vec::new();
        by_pool(&mut findings, &p, MIB_F, false);
        assert!(findings.is_empty(), "{findings:?}");
        // The same peak still confirms a finding the heap profile made.
        let mut findings = vec![read_path_finding(Kind::RequestFieldHeld)];
        by_pool(&mut findings, &p, MIB_F, false);
        assert_eq!(findings.len(), 1);
        assert!(findings[0].site.starts_with("Request.msg (field 2, binary), pinned"), "{}", findings[0].site);
    }
}
