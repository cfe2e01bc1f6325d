//! Who holds a finding's memory, from holder profiles (`holders-NNN.pb.gz`,
//! `/debug/pprof/holders`).
//!
//! A holder profile is a heap-format profile whose stacks are retainer
//! chains: the leaf is the held block's allocation site, then each block on
//! the way to it, nearest first, and last the root (a static, a thread's
//! stack, or `$unreachable$`). leaklab's profiles also carry the held
//! block's whole allocation stack in the label `stack`; goref's and other
//! tools' profiles, without it, are read by their leaf alone.
//!
//! For each leak finding, the held blocks are read like the heap profile's
//! samples (the same site rule, [`crate::frames`]), so the blocks whose
//! growth made the finding are found by the finding's own sites. Among their
//! chains, the one that gained most between the first holder profile and
//! the last (what stays, when it stays) or else the fullest is the holder;
//! its share is the part of the finding's held growth it explains.

use std::collections::BTreeMap;

use crate::frames;
use crate::profile::HeapSnapshot;
use crate::verdict::{Finding, Holder, Verdict, ALSO_HELD};

/// Growth of held bytes per (site, chain).
struct Chains {
    /// site -> chain (root first) -> bytes per holder snapshot.
    by_site: BTreeMap<String, BTreeMap<Vec<String>, Vec<f64>>>,
    snapshots: usize,
}

fn read_chains(holders: &[HeapSnapshot]) -> Chains {
    let n = holders.len();
    let mut by_site: BTreeMap<String, BTreeMap<Vec<String>, Vec<f64>>> = BTreeMap::new();
    let mut facts_cache: BTreeMap<String, String> = BTreeMap::new();
    for (i, h) in holders.iter().enumerate() {
        for s in &h.samples {
            let Some(leaf) = s.frames.first() else { continue };
            let stack = s.labels.iter().find(|(k, _)| k == "stack").map(|(_, v)| v.clone());
            let key = stack.clone().unwrap_or_else(|| leaf.function.to_string());
            let site = facts_cache
                .entry(key)
                .or_insert_with_key(|k| {
                    let functions: Vec<&str> = k.split('\n').collect();
                    frames::facts(&functions).site
                })
                .clone();
            let chain: Vec<String> = s.frames[1..].iter().rev().map(|f| f.function.to_string()).collect();
            let series = by_site.entry(site).or_default().entry(chain).or_insert_with(|| vec![0.0; n]);
            series[i] += s.inuse_bytes;
        }
    }
    Chains { by_site, snapshots: n }
}

/// The sites a finding stands for: its own, the one a pool holder was
/// named at, and those merged into it.
fn finding_sites(f: &Finding) -> Vec<String> {
    let mut out = vec![f.site.clone()];
    if let Some((_, taken_at)) = f.site.split_once(" taken at ") {
        out.push(taken_at.to_owned());
    }
    for e in &f.evidence {
        if let Some(rest) = e.strip_prefix("also at ") {
            if let Some((site, _)) = rest.rsplit_once(" (+") {
                out.push(site.to_owned());
            }
        }
    }
    // A site named twice (taken at X, also at X) counts once.
    let mut seen = std::collections::BTreeSet::new();
    out.retain(|s| seen.insert(s.clone()));
    out
}

/// Gives each leak finding of `v` its holder, from holder profiles in time
/// order, and says so in the summary. Findings whose blocks no holder
/// profile shows keep none.
pub fn attribute_holders(v: &mut Verdict, holders: &[HeapSnapshot]) {
    if holders.is_empty() {
        return;
    }
    let chains = read_chains(holders);
    for f in v.findings.iter_mut().filter(|f| f.kind.is_leak()) {
        let sites = finding_sites(f);
        let per_site: Vec<&BTreeMap<Vec<String>, Vec<f64>>> =
            sites.iter().filter_map(|site| chains.by_site.get(site)).collect();
        let at = |k: usize| -> BTreeMap<&Vec<String>, f64> {
            let mut growth = BTreeMap::new();
            for per_chain in &per_site {
                for (chain, series) in per_chain.iter() {
                    *growth.entry(chain).or_default() += gained(series, k);
                }
            }
            growth
        };
        let positive = |g: &BTreeMap<&Vec<String>, f64>| g.values().filter(|v| **v > 0.0).sum::<f64>();
        // What stays (the last profile, taken after the drain) when it
        // stays; else the fullest moment: connections the drain closes free
        // the buffers they held, and then the load shows who held them.
        let n = chains.snapshots;
        let last = at(n.saturating_sub(1));
        let fullest = (1..n).map(at).max_by(|a, b| positive(a).total_cmp(&positive(b))).unwrap_or_default();
        let growth = if positive(&last) >= HOLDER_STAYS * positive(&fullest) { last } else { fullest };
        let total: f64 = growth.values().filter(|g| **g > 0.0).sum();
        let mut groups = by_holding(growth).into_iter();
        let Some((chain, best)) = groups.next() else { continue };
        if best <= 0.0 || total <= 0.0 {
            continue;
        }
        let holder = Holder { chain, share: best / total, growth_bytes: best };
        f.evidence.push(evidence("held by", &holder));
        f.also_held_by = groups
            .take_while(|(_, g)| *g >= ALSO_HELD * total)
            .take(3)
            .map(|(chain, g)| Holder { chain, share: g / total, growth_bytes: g })
            .collect();
        for h in &f.also_held_by {
            f.evidence.push(evidence("also held by", h));
        }
        f.holder = Some(holder);
    }
    if let Some(h) = v.findings.first().and_then(|f| f.holder.as_ref()) {
        v.summary = format!("{}, held by {}", v.summary, h.describe());
    }
}

/// `held by X (N% of the held growth, +M MiB); chain: A -> B`, after `what`.
fn evidence(what: &str, h: &Holder) -> String {
    format!(
        "{what} {} ({:.0}% of the held growth, +{:.1} MiB); chain: {}",
        h.describe(),
        h.share * 100.0,
        h.growth_bytes / 1048576.0,
        h.chain.join(" -> ")
    )
}

/// The chains that end at the same holding block (its allocation site), by
/// whatever path the scan reached it, as one: the largest member's chain
/// and the group's growth, for each group, the one that gained most first
/// (ties in the groups' order).
///
/// Mechanism: the path to a holder is incidental, the holder is not. A
/// block that a runtime shares between threads (a tokio task, a
/// goroutine's objects) is reached from the stack of whichever thread held
/// a pointer into the shared state at the scan, and through whichever
/// runtime block the scan met first (a task list, a worker's queue).
/// Counting each path apart splits one holder into as many chains as there
/// are threads and runtime blocks on the way, and lets a smaller holder
/// reached by one path win. Chains that are only a root (a static or a
/// thread's stack holding the block itself) are grouped by that root.
fn by_holding(growth: BTreeMap<&Vec<String>, f64>) -> Vec<(Vec<String>, f64)> {
    let mut groups: BTreeMap<&str, (f64, &Vec<String>, f64)> = BTreeMap::new();
    for (chain, g) in growth {
        let key = chain.last().map_or("", String::as_str);
        let e = groups.entry(key).or_insert((0.0, chain, f64::NEG_INFINITY));
        e.0 += g;
        if g > e.2 {
            e.1 = chain;
            e.2 = g;
        }
    }
    let mut out: Vec<(Vec<String>, f64)> = groups.into_values().map(|(sum, chain, _)| (chain.clone(), sum)).collect();
    // Stable, in reverse: of equal groups the last in the map's order comes
    // first, as `max_by` picked it before there was a list.
    out.reverse();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}

/// The share of its fullest growth that held memory must still have in the
/// last profile (after a run's drain) to be read as what stays; below it,
/// the fullest profile says who held it. The two cases it tells apart are
/// far from it: a held field or a pool's cache keeps all of its growth
/// after the drain, while the buffers of connections the drain closes go
/// back with them, to the few blocks still in flight or met at stale
/// addresses (a tenth or less, as [`ALSO_HELD`] counts them). A quarter
/// sits between with room on both sides.
pub const HOLDER_STAYS: f64 = 0.25;

/// What a chain gained from the first profile to profile `k`; with one
/// profile, what it holds.
fn gained(series: &[f64], k: usize) -> f64 {
    match k {
        0 => series.first().copied().unwrap_or(0.0),
        k => series.get(k).copied().unwrap_or(0.0) - series[0],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::{Kind, Mode};
    use crate::profile::HeapSample;

    fn sample(chain_leaf_first: &[&str], stack: &str, bytes: f64) -> HeapSample {
        HeapSample { labels: vec![("stack".into(), stack.into())], ..HeapSample::of(chain_leaf_first, bytes) }
    }

    fn snapshot(samples: Vec<HeapSample>) -> HeapSnapshot {
        HeapSnapshot { time_s: None, period: 1, samples }
    }

    /// A leak verdict of one finding at `site`, from `snapshots` snapshots.
    fn leak_verdict(kind: Kind, site: &str, snapshots: usize) -> Verdict {
        Verdict { leak: true, kind, findings: vec![finding(site)], mode: Mode::Full, snapshots, summary: "leak".into() }
    }

    fn finding(site: &str) -> Finding {
        Finding {
            kind: Kind::RequestFieldHeld,
            score: 0.9,
            site: site.into(),
            growth_bytes_per_s: 1.0,
            growth_bytes: 1.0,
            evidence: Vec::new(),
            remedy: String::new(),
            holder: None,
            also_held_by: Vec::new(),
        }
    }

    #[test]
    fn the_chain_that_grew_most_holds_it() {
        let stack = "rpc::codec::binary::Reader::read_binary_copy\nrpc::codec::echo::Request::read_field_2\n\
                     rpc::codec::echo::Request::decode";
        let cache =
            ["rpc::codec::binary::Reader::read_binary_copy", "hashbrown table in app::remember", "thread main stack"];
        let inflight = [
            "rpc::codec::binary::Reader::read_binary_copy",
            "tokio task spawned in rpc::server::serve",
            "thread w stack",
        ];
        let other = ["app::log_line", "Vec in app::log", "static app::LOG"];
        let h0 = snapshot(vec![
            sample(&cache, stack, 1e6),
            sample(&inflight, stack, 5e5),
            sample(&other, "app::log_line", 1e6),
        ]);
        let h1 = snapshot(vec![
            sample(&cache, stack, 9e6),
            sample(&inflight, stack, 1.5e6),
            sample(&other, "app::log_line", 9e6),
        ]);
        let mut v = leak_verdict(Kind::RequestFieldHeld, "rpc::codec::echo::Request::read_field_2", 2);
        attribute_holders(&mut v, &[h0, h1]);
        let h = v.findings[0].holder.as_ref().expect("a holder");
        assert_eq!(h.chain, vec!["thread main stack", "hashbrown table in app::remember"]);
        assert!((h.share - 8.0 / 9.0).abs() < 1e-9, "{}", h.share);
        assert_eq!(h.describe(), "hashbrown table in app::remember (from thread main stack)");
        assert!(v.summary.ends_with("held by hashbrown table in app::remember (from thread main stack)"));
        // The task in flight explains a ninth of the held growth: listed
        // after the cache (the unrelated log is not a holder of these
        // blocks at all).
        let also = &v.findings[0].also_held_by;
        assert_eq!(also.len(), 1, "{also:?}");
        assert_eq!(also[0].holder(), "tokio task spawned in rpc::server::serve");
        assert!((also[0].share - 1.0 / 9.0).abs() < 1e-9, "{}", also[0].share);
    }

    #[test]
    fn one_holder_reached_through_different_runtime_blocks_is_one_holder() {
        // The same connection tasks, reached from the main thread's stack
        // through the runtime's block or directly from a worker's stack.
        let stack = "rpc::pool::Pool::lease\nrpc::linkbuf::InputBuffer::new_node";
        let leaf = "rpc::pool::Pool::lease";
        let task = "tokio task spawned in rpc::server::Server<H>::serve";
        let via_runtime = [leaf, task, "tokio block in tokio::runtime::builder::Builder::build", "thread main stack"];
        let direct = [leaf, task, "thread w1 stack"];
        let cache = [leaf, "Vec in rpc::pool::Shared::flush", "static rpc::pool::GLOBAL"];
        let h0 = snapshot(vec![]);
        let h1 =
            snapshot(vec![sample(&via_runtime, stack, 6e6), sample(&direct, stack, 4e6), sample(&cache, stack, 8e6)]);
        let mut v = leak_verdict(Kind::OversizedRequest, "rpc::linkbuf::InputBuffer::new_node", 2);
        attribute_holders(&mut v, &[h0, h1]);
        let f = &v.findings[0];
        let h = f.holder.as_ref().expect("a holder");
        // 10 MiB through the tasks against 8 in the cache: apart, the cache
        // would win with either path's share.
        assert_eq!(h.holder(), task);
        assert_eq!(h.chain.len(), 3, "the larger path's chain: {:?}", h.chain);
        assert!((h.growth_bytes - 10e6).abs() < 1e-3, "{}", h.growth_bytes);
        let also: Vec<&str> = f.also_held_by.iter().map(Holder::holder).collect();
        assert_eq!(also, ["Vec in rpc::pool::Shared::flush"]);
    }

    #[test]
    fn a_leak_held_in_several_places_lists_each_holder() {
        // One 8 MiB chunk in a pool's cache, one kept by a connection, one
        // in a request in flight; and a holder of under a tenth.
        let stack = "rpc::pool::Pool::lease\nrpc::linkbuf::InputBuffer::new_node";
        let leaf = "rpc::pool::Pool::lease";
        let cache = [leaf, "Vec in rpc::pool::Shared::flush", "static rpc::pool::GLOBAL"];
        let conn = [leaf, "tokio task spawned in rpc::server::Server<H>::serve", "thread w1 stack"];
        let inflight = [leaf, "tokio task spawned in rpc::server::Shared<H>::dispatch", "thread w2 stack"];
        let small = [leaf, "Box in app::Counted::new", "thread w1 stack"];
        let mib = 1048576.0;
        let h0 = snapshot(vec![]);
        let h1 = snapshot(vec![
            sample(&cache, stack, 8.0 * mib),
            sample(&conn, stack, 8.0 * mib),
            sample(&inflight, stack, 7.0 * mib),
            sample(&small, stack, 1.0 * mib),
        ]);
        let mut v = leak_verdict(Kind::OversizedRequest, "rpc::linkbuf::InputBuffer::new_node", 2);
        attribute_holders(&mut v, &[h0, h1]);
        let f = &v.findings[0];
        let first = f.holder.as_ref().expect("a holder");
        let also: Vec<&str> = f.also_held_by.iter().map(Holder::holder).collect();
        // The two 8 MiB holders first (either order), then the 7 MiB one;
        // the 1 MiB box is not listed.
        let mut eights = vec![first.holder(), also[0]];
        eights.sort_unstable();
        assert_eq!(eights, ["Vec in rpc::pool::Shared::flush", "tokio task spawned in rpc::server::Server<H>::serve"]);
        assert_eq!(also[1..], ["tokio task spawned in rpc::server::Shared<H>::dispatch"]);
        assert!((f.also_held_by[1].share - 7.0 / 24.0).abs() < 1e-9, "{}", f.also_held_by[1].share);
        assert_eq!(f.evidence.iter().filter(|e| e.starts_with("also held by ")).count(), 2);
        // The list goes through verdict.json and back.
        let back: Finding = serde_json::from_str(&serde_json::to_string(f).unwrap()).unwrap();
        assert_eq!(&back, f);
    }

    #[test]
    fn one_task_reached_from_several_threads_is_one_holder() {
        let stack = "rpc::pool::Pool::lease\nrpc::linkbuf::InputBuffer::new_node";
        let via = |thread: &'static str| {
            [
                "rpc::pool::Pool::lease",
                "VecDeque in rpc::linkbuf::InputBuffer::new_node",
                "tokio task spawned in serve",
                thread,
            ]
        };
        let other = ["rpc::pool::Pool::lease", "tokio task spawned in dispatch", "thread w1 stack"];
        let h0 = snapshot(vec![]);
        let h1 = snapshot(vec![
            sample(&via("thread main stack"), stack, 3e6),
            sample(&via("thread w1 stack"), stack, 2e6),
            sample(&via("thread w2 stack"), stack, 2e6),
            sample(&other, stack, 4e6),
        ]);
        let mut v = leak_verdict(Kind::OversizedRequest, "rpc::linkbuf::InputBuffer::new_node", 2);
        attribute_holders(&mut v, &[h0, h1]);
        let h = v.findings[0].holder.as_ref().expect("a holder");
        assert_eq!(
            h.chain,
            vec!["thread main stack", "tokio task spawned in serve", "VecDeque in rpc::linkbuf::InputBuffer::new_node"]
        );
        assert!((h.share - 7.0 / 11.0).abs() < 1e-9, "{}", h.share);
        assert!((h.growth_bytes - 7e6).abs() < 1e-3);
    }

    #[test]
    fn no_matching_blocks_no_holder() {
        let h = snapshot(vec![sample(&["x::y", "static X"], "x::y", 1e6)]);
        let mut v = leak_verdict(Kind::RequestFieldHeld, "rpc::codec::echo::Request::read_field_2", 1);
        attribute_holders(&mut v, &[h]);
        assert!(v.findings[0].holder.is_none());
        assert_eq!(v.summary, "leak");
    }

    #[test]
    fn a_renamed_or_merged_finding_keeps_its_sites() {
        let mut f = finding("Request.msg (field 2), pinned in pooled buffers taken at rpc::linkbuf::InputBuffer::book");
        f.evidence.push("also at rpc::linkbuf::InputBuffer::next_span (+3.0 MiB)".into());
        assert_eq!(
            finding_sites(&f)[1..],
            ["rpc::linkbuf::InputBuffer::book".to_owned(), "rpc::linkbuf::InputBuffer::next_span".to_owned()]
        );
    }
}
