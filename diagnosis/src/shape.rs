//! The measurement of a site: its in-use bytes over the snapshots
//! ([`Site`]), the work the process did meanwhile ([`Work`]), and how the
//! one followed the other ([`Shape`]).

use std::collections::{BTreeMap, HashMap};

use crate::frames::{self, StackFacts};
use crate::input::{RunInput, SnapshotTime};
use crate::profile::{HeapSnapshot, Name};
use crate::stats::{change_points, mann_kendall, median, pearson, plateau, theil_sen};

/// What stays is the median of this many last settled snapshots: one
/// snapshot may catch the pool still giving memory back.
const SETTLED_TAIL: usize = 3;

/// A step (a change point) spans at least this many snapshots on each side,
/// so that one noisy snapshot is no step.
const STEP_MIN_SNAPSHOTS: usize = 2;

/// The connections open now "keep rising" when, over the second half of
/// the load, they rose by more than this share of their number at its
/// middle...
const RISING_SHARE: f64 = 0.1;

/// ...and by more than this many connections, so that a handful of
/// reconnections is no rise.
const RISING_MIN_CONNECTIONS: f64 = 2.0;

/// ...and they rose from one snapshot to the next in at least this share
/// of the second half's intervals, as idle connections that stay open pile
/// up interval after interval: a surge caught in flight by the last
/// snapshots is one jump, not a climb. (A share of steps, not a trend
/// test, so that a short run's few snapshots can show it.)
const RISING_STEPS_SHARE: f64 = 2.0 / 3.0;

/// ...or, when the second half has at least this many snapshots, the open
/// connections rose with a Mann–Kendall trend at this significance. (Under
/// twenty points the test cannot tell a climb from a surge caught in
/// flight.)
const RISING_TREND_POINTS: usize = 20;
const RISING_TREND_SIGNIFICANCE: f64 = 0.01;

/// The smallest buffer node a connection takes: Netpoll's output nodes are
/// at least a 4 KiB page (`rpc`'s too) and its input nodes 8 KiB. What a
/// connection owns beyond its buffers (its barrier slot, its task, a
/// cache entry it made) is smaller blocks.
pub(crate) const NODE_BYTES: f64 = 4096.0;

/// One site's in-use bytes over the snapshots.
#[derive(Debug, Clone, Default)]
pub(crate) struct Site {
    /// What the stacks of the site say, merged over them.
    pub(crate) facts: StackFacts,
    /// In-use bytes per snapshot.
    pub(crate) inuse: Vec<f64>,
    /// In-use bytes per block size, first and peak snapshot.
    sizes_first: BTreeMap<i64, f64>,
    sizes_peak: BTreeMap<i64, f64>,
    /// In-use bytes summed over the snapshots, of stacks under a client's
    /// call and of the others: a site's reads are the client's when most
    /// of its bytes are (a process may both serve and call, and read into
    /// the same function).
    calling_bytes: f64,
    other_bytes: f64,
}

/// Sums a snapshot's in-use bytes per site.
pub(crate) fn sites(heaps: &[HeapSnapshot]) -> Vec<Site> {
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
            if facts.calling {
                site.calling_bytes += s.inuse_bytes;
            } else {
                site.other_bytes += s.inuse_bytes;
            }
        }
    }
    // Block sizes at the first snapshot and at each site's peak.
    let mut out: Vec<Site> = by_site.into_values().collect();
    for site in &mut out {
        site.facts.calling = site.calling_bytes > site.other_bytes;
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

/// Metrics aligned with the snapshots (`None` where the run has none).
#[derive(Debug, Clone, Default)]
pub(crate) struct Work {
    pub(crate) requests: Option<Vec<f64>>,
    open_conns: Option<Vec<f64>>,
    opened_conns: Option<Vec<f64>>,
    clients_created: Option<Vec<f64>>,
    pool_cached: Option<Vec<f64>>,
    pool_leased: Option<Vec<f64>>,
    inuse: Option<Vec<f64>>,
}

impl Work {
    /// The run's counters of requests, connections and clients, one value
    /// per snapshot.
    pub(crate) fn of(input: &RunInput, times: &[SnapshotTime]) -> Work {
        Work {
            requests: aligned(input, times, "requests"),
            open_conns: aligned(input, times, "open_conns"),
            opened_conns: aligned(input, times, "opened_conns"),
            clients_created: aligned(input, times, "clients_created"),
            pool_cached: aligned(input, times, "pool_cached_bytes"),
            pool_leased: aligned(input, times, "pool_leased_bytes"),
            inuse: aligned(input, times, "inuse_bytes"),
        }
    }
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

/// Which snapshots are read for what.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span<'a> {
    /// Every snapshot's time.
    pub(crate) times: &'a [SnapshotTime],
    /// The snapshots under load, where growth is measured.
    pub(crate) active: &'a [usize],
    /// The settled snapshots after the load, where what stays is read.
    pub(crate) after: &'a [usize],
}

/// What one growing site looks like.
#[derive(Debug, Clone, Default)]
pub(crate) struct Shape {
    /// In-use bytes gained from the first snapshot to the peak under load.
    pub(crate) growth: f64,
    /// What the site gained over the second half of the snapshots under
    /// load: from the first of them to the most it held across an
    /// interval there (at each pair of consecutive snapshots, the smaller,
    /// so that one snapshot of calls in flight is no gain).
    pub(crate) late_growth: f64,
    /// Theil–Sen slope under load (bytes/s).
    pub(crate) slope: f64,
    /// Mann–Kendall p-value under load.
    pub(crate) trend_p: f64,
    /// Change points under load.
    pub(crate) steps: usize,
    /// Whether the series levelled off.
    pub(crate) plateaued: bool,
    /// Fraction of the growth still there after the load (None: no
    /// after-load snapshots).
    pub(crate) retained: Option<f64>,
    /// What the site holds now over the baseline: at each of the last two
    /// snapshots under load with no surge in flight the smaller, net of the
    /// pool's cache and at most the process's exact gain.
    pub(crate) held_now: f64,
    /// Bytes gained per request done up to the peak.
    pub(crate) per_request: Option<f64>,
    /// Fraction of the growth made in intervals where connections opened.
    pub(crate) at_openings: Option<f64>,
    /// Whether some interval under load opened no connection: when every
    /// interval opened some (a process that keeps taking connections), all
    /// growth came "at openings", and [`at_openings`](Self::at_openings)
    /// tells nothing of surges. (Under load only: warm-up and settle open
    /// none, and say nothing of how the load opens them.)
    pub(crate) quiet_intervals: Option<bool>,
    /// Correlation with the connections open now.
    pub(crate) with_open: Option<f64>,
    /// Connections opened from the first snapshot to the peak.
    pub(crate) opened: Option<f64>,
    /// Of the connections opened from the first snapshot to the last one
    /// under load, the share that closed again by then.
    pub(crate) closed_share: Option<f64>,
    /// The share of the growth that the connections open now, beyond those
    /// open at the baseline, account for at the site's bytes per open
    /// connection (a connection's own buffers and task); none without
    /// connection metrics or when their number never changed.
    pub(crate) open_share: Option<f64>,
    /// The most connections open at once under load.
    pub(crate) peak_open: Option<f64>,
    /// Clients created from the first snapshot to the peak.
    pub(crate) clients: Option<f64>,
    /// Whether the connections open now kept rising over the load (none
    /// without that metric).
    pub(crate) open_rising: Option<bool>,
    /// Correlation with clients created.
    pub(crate) with_clients: Option<f64>,
    /// Fraction of the growth in blocks of at least `large_block_bytes`.
    pub(crate) large_blocks: f64,
    /// The largest block size at the peak.
    pub(crate) largest_block: i64,
    /// What each block the site gained holds on average: the bytes gained
    /// in blocks of known size over the blocks gained, from the first
    /// snapshot to the peak (none without block sizes).
    pub(crate) per_block: Option<f64>,
    /// How many blocks the site gained from the first snapshot to the peak
    /// (estimated from the sampled bytes per block size).
    pub(crate) blocks_gained: f64,
}

/// Measures a site's shape over `span`; blocks of `large_block_bytes` or
/// more count as large.
pub(crate) fn measure(site: &Site, span: Span<'_>, work: &Work, large_block_bytes: f64) -> Shape {
    let Span { times, active, after } = span;
    let y = &site.inuse;
    let base = y[0];
    let ya: Vec<f64> = active.iter().map(|&i| y[i]).collect();
    let ta: Vec<f64> = active.iter().map(|&i| times[i].t).collect();
    let peak_i = active.iter().copied().max_by(|a, b| y[*a].total_cmp(&y[*b])).unwrap_or(0);
    let growth = y[peak_i] - base;
    let late = &active[active.len() / 2..];
    let late_growth = late
        .first()
        .map_or(0.0, |&from| late.windows(2).map(|w| y[w[0]].min(y[w[1]])).fold(y[from], f64::max) - y[from]);
    let slope = theil_sen(&ta, &ya).map_or(0.0, |(s, _)| s);
    let mk = mann_kendall(&ya);
    let steps = change_points(&ya, STEP_MIN_SNAPSHOTS, None).len();
    let plateaued = plateau(&ya).is_plateau;
    // What the site holds at snapshot i, over the baseline: not what the
    // pool's cache gained by then (chunks given back and kept for reuse,
    // which its GC frees within two cycles when they are not reused, as
    // `sync.Pool` does), and never more than the whole process gained by
    // its exact count (`inuse_bytes`): a sampled site's growth that the
    // exact total does not show is sampling error, or memory moving
    // between sites. A site under the pool's frames holds pool chunks, and
    // a chunk that anything still holds (a field sliced from it, a barrier
    // slot's reference, a connection's buffer) is leased until it is given
    // back: such a site never holds more than the pool's leased bytes
    // gained (`pool_leased_bytes`). What the sampled site shows beyond it
    // is chunks the pool allocated and later freed or cached. Without
    // those metrics (another process), the site's own bytes.
    let held_at = |i: usize| {
        let cached = work.pool_cached.as_ref().map_or(0.0, |c| (c[i] - c[0]).max(0.0));
        let held = y[i] - base - cached;
        let held = match (&work.pool_leased, site.facts.pooled) {
            (Some(l), true) => held.min((l[i] - l[0]).max(0.0)),
            _ => held,
        };
        work.inuse.as_ref().map_or(held, |t| held.min(t[i] - t[0] - cached))
    };
    // Held now: the smaller at the last two snapshots under load. Memory
    // one snapshot caught in calls or connections in flight (a surge's
    // connections live for one call, far shorter than an interval) is gone
    // at the next one; what is held outlives an interval.
    // And read when no surge is in flight: at snapshots where no more
    // connections were open than at the baseline (up to a handful of
    // reconnections), so that buffers of connections still open are not
    // taken for what they leave behind.
    let calm: Vec<usize> = match &work.open_conns {
        Some(o) => active.iter().copied().filter(|&i| o[i] - o[0] <= RISING_MIN_CONNECTIONS).collect(),
        None => active.to_vec(),
    };
    let recent = if calm.len() >= 2 { &calm[..] } else { active };
    let held_now = recent.iter().rev().take(2).map(|&i| held_at(i)).fold(f64::INFINITY, f64::min);
    // What stays, read the same way once the load is over.
    let retained = (!after.is_empty() && growth > 0.0).then(|| {
        let tail: Vec<f64> = after.iter().rev().take(SETTLED_TAIL).map(|&i| held_at(i) + base).collect();
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
    // Bytes gained per block size, from the first snapshot to the peak.
    let gains: Vec<(i64, f64)> = site
        .sizes_peak
        .iter()
        .map(|(&size, b)| (size, (b - site.sizes_first.get(&size).copied().unwrap_or(0.0)).max(0.0)))
        .collect();
    let gained_from = |least: f64| -> f64 { gains.iter().filter(|(size, _)| *size as f64 >= least).map(|g| g.1).sum() };
    let total_gained = gained_from(f64::NEG_INFINITY);
    let blocks_gained: f64 = gains.iter().filter(|(size, _)| *size > 0).map(|(size, b)| b / *size as f64).sum();
    Shape {
        growth,
        late_growth,
        slope,
        trend_p: mk.p_value,
        steps,
        plateaued,
        retained,
        held_now,
        per_request,
        at_openings,
        quiet_intervals: work
            .opened_conns
            .as_ref()
            .filter(|_| active.len() >= 2)
            .map(|o| active.windows(2).any(|w| o[w[1]] <= o[w[0]])),
        with_open: corr(&work.open_conns),
        opened: work.opened_conns.as_ref().map(|o| o[peak_i] - o[0]),
        open_share: work.open_conns.as_ref().and_then(|o| {
            // Bytes per open connection: the Theil-Sen slope of the site's
            // bytes against the connections open, over the snapshots under
            // load (a sampled site's bytes at the baseline alone are too
            // few samples to say).
            // The connections open when what is held now was read.
            let last = recent.last().copied().unwrap_or(0);
            let xs: Vec<f64> = active.iter().map(|&i| o[i]).collect();
            let (per_connection, _) = theil_sen(&xs, &ya)?;
            (growth > 0.0).then(|| (per_connection.max(0.0) * (o[last] - o[0]).max(0.0) / growth).min(1.0))
        }),
        closed_share: match (&work.opened_conns, &work.open_conns) {
            (Some(opened), Some(open)) => {
                let last = active.last().copied().unwrap_or(0);
                let gained = opened[last] - opened[0];
                (gained > 0.0).then(|| ((gained - (open[last] - open[0])) / gained).clamp(0.0, 1.0))
            }
            _ => None,
        },
        peak_open: work.open_conns.as_ref().map(|o| active.iter().map(|&i| o[i]).fold(0.0, f64::max)),
        clients: work.clients_created.as_ref().map(|c| c[peak_i] - c[0]),
        open_rising: work.open_conns.as_ref().map(|o| {
            // Still climbing in the second half of the load, not only while
            // the first connections came in.
            let open: Vec<f64> = active.iter().map(|&i| o[i]).collect();
            let (mid, last) = (open[open.len() / 2], open[open.len() - 1]);
            let half = &open[open.len() / 2..];
            let rises = half.windows(2).filter(|w| w[1] > w[0]).count();
            let steps = half.len().saturating_sub(1).max(1);
            // Or, over a long second half, a significant upward trend:
            // periodic bursts of connections that come and go put falls
            // between the rises, and a slow climb under them still shows.
            let climbs = half.len() >= RISING_TREND_POINTS && {
                let mk = mann_kendall(half);
                mk.p_value < RISING_TREND_SIGNIFICANCE && mk.s > 0
            };
            last - mid > (RISING_SHARE * mid).max(RISING_MIN_CONNECTIONS)
                && (rises as f64 >= RISING_STEPS_SHARE * steps as f64 || climbs)
        }),
        with_clients: corr(&work.clients_created),
        large_blocks: if total_gained > 0.0 { gained_from(large_block_bytes) / total_gained } else { 0.0 },
        per_block: (blocks_gained > 0.0).then(|| gained_from(1.0) / blocks_gained),
        blocks_gained,
        largest_block: site.sizes_peak.keys().next_back().copied().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::HeapSample;

    /// A read into a pooled node, under a client's call or a server's.
    fn read_into_node(calling: bool, bytes: f64) -> HeapSample {
        let caller =
            if calling { "rpc::client::Client::call::{{closure}}" } else { "rpc::server::Shared<H>::serve_conn" };
        HeapSample::of(&["rpc::pool::Pool::lease", "rpc::linkbuf::InputBuffer::new_node", caller], bytes)
    }

    #[test]
    fn a_site_reads_for_the_side_that_holds_most_of_its_bytes() {
        let side = |client: f64, server: f64| {
            let heap = HeapSnapshot {
                time_s: None,
                period: 1,
                samples: vec![read_into_node(true, client), read_into_node(false, server)],
            };
            let all = sites(&[heap.clone(), heap]);
            assert_eq!(all.len(), 1, "one site: {:?}", all.iter().map(|s| &s.facts.site).collect::<Vec<_>>());
            all[0].facts.calling
        };
        assert!(side(8.0e6, 1.0e5));
        assert!(!side(1.0e5, 8.0e6));
        // Not the first stack listed (the client's, here).
        assert!(!side(0.0, 1.0));
    }

    const KIB: f64 = 1024.0;

    fn times(n: usize) -> Vec<SnapshotTime> {
        (0..n).map(|i| SnapshotTime { t: i as f64 * 0.5, phase: Some("load".into()) }).collect()
    }

    /// `site` measured over a load of as many snapshots as it has.
    fn measured(site: &Site, work: &Work) -> Shape {
        let n = site.inuse.len();
        let t = times(n);
        let active: Vec<usize> = (0..n).collect();
        measure(site, Span { times: &t, active: &active, after: &[] }, work, 1e6)
    }

    /// A site that gains one block of `block` bytes a snapshot, in blocks
    /// of that size.
    fn growing(n: usize, block: f64, facts: StackFacts) -> Site {
        let inuse: Vec<f64> = (0..n).map(|i| i as f64 * block).collect();
        let peak = inuse[n - 1];
        Site { facts, inuse, sizes_peak: BTreeMap::from([(block as i64, peak)]), ..Site::default() }
    }

    #[test]
    fn a_pooled_site_holds_no_more_than_the_pool_leased() {
        // Eight input nodes of 64 KiB appear at the read path's allocation
        // site while the pool's leased bytes stay flat: chunks the pool
        // allocated and then cached or freed, as a connection's buffer grows
        // to fit larger requests. Nothing holds them.
        let n = 20;
        let pooled = StackFacts { pooled: true, read_path: true, ..StackFacts::default() };
        let site = growing(n, 64.0 * KIB, pooled.clone());
        let flat = Work { pool_leased: Some(vec![256.0 * KIB; n]), ..Work::default() };
        let s = measured(&site, &flat);
        assert_eq!(s.held_now, 0.0, "{s:?}");
        // The same growth, leased (fields pinning the chunks), is held.
        let leased = Work { pool_leased: Some(site.inuse.clone()), ..Work::default() };
        assert_eq!(measured(&site, &leased).held_now, site.inuse[n - 2]);
        // Off the pool's frames the pool's count says nothing of the site.
        let handler = growing(n, 64.0 * KIB, StackFacts { handler: true, ..StackFacts::default() });
        assert_eq!(measured(&handler, &flat).held_now, handler.inuse[n - 2]);
    }

    #[test]
    fn per_block_is_what_each_gained_block_holds() {
        let n = 10;
        let fields = growing(n, 8.0 * KIB, StackFacts::default());
        assert_eq!(measured(&fields, &Work::default()).per_block, Some(8.0 * KIB));
        // A map of one-byte copies: its table (one block that doubled, 1 MiB)
        // and 30 000 one-byte blocks hold 35 bytes a block.
        let mut map = growing(n, 1.0, StackFacts::default());
        map.sizes_peak = BTreeMap::from([(1, 30_000.0), (1 << 20, 1048576.0)]);
        let b = measured(&map, &Work::default()).per_block.expect("block sizes");
        assert!((30.0..40.0).contains(&b), "{b}");
        // Blocks already there at the first snapshot are no gain.
        let mut steady = fields.clone();
        steady.sizes_first = steady.sizes_peak.clone();
        assert_eq!(measured(&steady, &Work::default()).per_block, None);
    }

    #[test]
    fn idle_connections_climbing_under_bursts_keep_rising() {
        // 80 one-second snapshots: bursts of 16 connections every other
        // second over 150 open, so that half the steps fall; with a leak,
        // 1.8 more stay open each second.
        let n = 80;
        let site = growing(n, 8.0 * KIB, StackFacts { conn_setup: true, ..StackFacts::default() });
        let open = |leak: f64| -> Vec<f64> {
            (0..n).map(|i| 150.0 + if i % 2 == 0 { 16.0 } else { 0.0 } + leak * i as f64).collect()
        };
        let rising = |o: Vec<f64>| measured(&site, &Work { open_conns: Some(o), ..Work::default() }).open_rising;
        assert_eq!(rising(open(1.8)), Some(true));
        assert_eq!(rising(open(0.0)), Some(false));
        // A surge caught in flight by the last two snapshots: the second
        // half ends far above its middle, but does not climb.
        let mut caught = open(0.0);
        caught[n - 1] += 60.0;
        caught[n - 2] += 60.0;
        assert_eq!(rising(caught), Some(false));
    }
}
