//! Each server scenario in process: the scenario's `ServerConfig` on a
//! fresh pool, an `rpc::Server` on 127.0.0.1:0, and the in-test peer sending
//! a few hundred calls shaped like its `LoadShape`. What stays after the
//! connections close is read from the pool, the barrier slots, the handler
//! and the heap.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use rpc::{BarriersStats, Lease, Pool, PoolStats, ServerCounts, Taker};
use scenarios::{find, load_shape, pool_config, server, LoadShape, Params, ScenarioHandler, Variant};

use crate::peer::{self, Conn, Running};
use crate::{heap_in_use, kib, runtime, serial, set};

/// What a run left behind.
struct Outcome<T> {
    /// What the load returned.
    load: T,
    /// Heap bytes still in use after the server stopped and the pool's
    /// cache was emptied, over the start.
    retained: isize,
    pool: PoolStats,
    leases: Vec<Lease>,
    barriers: BarriersStats,
    counts: ServerCounts,
    handler: ScenarioHandler,
}

impl<T> Outcome<T> {
    /// Bytes in leased chunks that their buffers let go of.
    fn pinned_bytes(&self) -> usize {
        self.leases.iter().filter(|l| l.pinned()).map(|l| l.size).sum()
    }
}

/// The pool and slot table a load can look at while it runs.
#[derive(Clone)]
struct Ctx {
    pool: Pool,
    barriers: rpc::Barriers,
    stats: std::sync::Arc<rpc::ServerStats>,
}

/// Runs scenario `name` with `sets`, loads it with `load`, waits for every
/// connection to close, snapshots, stops the server and measures the heap.
fn run<T, F, Fut>(name: &str, variant: Variant, sets: &[(&str, &str)], load: F) -> Outcome<T>
where
    F: FnOnce(SocketAddr, LoadShape, Ctx) -> Fut,
    Fut: Future<Output = T>,
{
    let info = find(name).unwrap();
    let params = Params::parse(info, &set(sets)).unwrap();
    let shape = load_shape(info, variant, &params).unwrap();
    let pool = Pool::new(pool_config(info, variant, &params).unwrap());
    let scenario = server(info, variant, &params, pool).unwrap();
    let pool = scenario.config.pool.clone();
    let barriers = scenario.config.barriers.clone();
    let handler = scenario.handler.clone();
    let before = heap_in_use();
    let rt = runtime();
    let (load, pool_stats, leases, barrier_stats, counts) = rt.block_on(async {
        let running = Running::start(scenario.config, scenario.handler).await;
        let ctx = Ctx { pool: pool.clone(), barriers: barriers.clone(), stats: running.stats.clone() };
        let out = load(running.addr, shape, ctx).await;
        running.wait_closed().await;
        let snapshot = (pool.stats(), pool.leases(), barriers.stats(), running.stats.counts());
        running.shutdown().await;
        (out, snapshot.0, snapshot.1, snapshot.2, snapshot.3)
    });
    rt.shutdown_timeout(Duration::from_secs(5));
    pool.trim();
    let retained = heap_in_use() - before;
    eprintln!(
        "{name} {variant}: retained {} heap, pool leased {} (pinned {}) cached {}, barriers held {}, entries {}",
        kib(retained),
        kib(pool_stats.leased_bytes as isize),
        kib(leases.iter().filter(|l| l.pinned()).map(|l| l.size as isize).sum()),
        kib(pool_stats.cached_bytes as isize),
        kib(barrier_stats.held_bytes as isize),
        handler.cached_entries(),
    );
    Outcome { load, retained, pool: pool_stats, leases, barriers: barrier_stats, counts, handler }
}

const CALLS: usize = 300;

/// What the heap measure may be off by: runtime and test bookkeeping.
const SLACK: isize = 64 << 10;

#[test]
fn request_field_hold_copy_keeps_each_copied_field() {
    let _alone = serial();
    let sets = [("payload", "16KiB"), ("conns", "4")];
    let steady = |addr, shape: LoadShape, _| async move { peer::steady(addr, &shape, CALLS).await };
    let leak = run("request-field-hold", Variant::Leak, &sets, steady);
    let fix = run("request-field-hold", Variant::Fix, &sets, steady);
    for o in [&leak, &fix] {
        assert_eq!(o.load, CALLS);
        assert_eq!(o.handler.cached_entries(), CALLS);
        assert_eq!(o.pool.leased_bytes, 0, "copy decoding leaves nothing pinned in the pool");
    }
    let field = (CALLS * (16 << 10)) as isize;
    assert!(leak.retained > field * 9 / 10, "leak keeps each copied msg: {}", kib(leak.retained));
    assert!(fix.retained < (CALLS * 256) as isize, "fix keeps one tiny entry per call: {}", kib(fix.retained));
}

#[test]
fn request_field_hold_nocopy_pins_pooled_nodes_under_field_2() {
    let _alone = serial();
    let sets = [("payload", "16KiB"), ("conns", "4"), ("decode", "nocopy")];
    let steady = |addr, shape: LoadShape, _| async move { peer::steady(addr, &shape, CALLS).await };
    let leak = run("request-field-hold", Variant::Leak, &sets, steady);
    let fix = run("request-field-hold", Variant::Fix, &sets, steady);
    assert!(!leak.leases.is_empty());
    for l in &leak.leases {
        assert!(l.pinned(), "every lease left is pinned once the connections closed: {l:?}");
        let fields: Vec<&str> = l.fields.iter().map(|f| f.name()).collect();
        assert_eq!(fields, ["Request.msg (field 2, binary)"], "{l:?}");
        assert!(matches!(l.taker, Taker::ConnRead | Taker::ReadSpan), "{l:?}");
    }
    assert!(leak.pinned_bytes() >= CALLS * (16 << 10) / 2, "pinned {}", kib(leak.pinned_bytes() as isize));
    assert!(leak.retained + SLACK >= leak.pinned_bytes() as isize, "{}", kib(leak.retained));
    assert_eq!(fix.pool.leased_bytes, 0);
    assert!(fix.retained < (CALLS * 256) as isize, "{}", kib(fix.retained));
}

#[test]
fn conn_surge_request_legacy_slots_keep_large_read_nodes() {
    let _alone = serial();
    let sets = [("conns", "1"), ("surge_first", "8"), ("surge_step", "8"), ("surge_payload", "256KiB")];
    let load = |addr, shape: LoadShape, _| async move {
        let steady = peer::steady(addr, &shape, 20).await;
        (steady, peer::surges(addr, shape.surge.as_ref().unwrap(), 3).await)
    };
    let leak = run("conn-surge-request", Variant::Leak, &sets, load);
    let fix = run("conn-surge-request", Variant::Fix, &sets, load);
    let peak = leak.load.1;
    assert_eq!(peak, 24);
    // Each slot used by a surge connection keeps the node its last read
    // (the end of the stream) was booked in: as large as the request.
    assert!(leak.barriers.held_bytes >= peak * (128 << 10), "held {}", kib(leak.barriers.held_bytes as isize));
    // Read nodes, one per surge slot; a steady connection's slot may also
    // keep an output node from a write that spanned two nodes.
    let slot_pinned: Vec<&Lease> =
        leak.leases.iter().filter(|l| l.pinned() && l.slot_refs > 0 && l.taker == Taker::ConnRead).collect();
    assert!(slot_pinned.len() >= peak, "{} slot-pinned read chunks", slot_pinned.len());
    assert!(leak.leases.iter().filter(|l| l.pinned()).all(|l| l.slot_refs > 0 && l.fields.is_empty()));
    assert!(leak.pinned_bytes() >= peak * (128 << 10));
    assert!(leak.retained + SLACK >= leak.pinned_bytes() as isize, "{}", kib(leak.retained));
    assert_eq!(fix.barriers.held_bytes, 0);
    assert_eq!(fix.pool.leased_bytes, 0);
    assert!(fix.pool.classes.iter().all(|c| c.cached_bytes <= 1 << 20), "pool_cache caps each class");
    assert!(fix.retained < 256 << 10, "{}", kib(fix.retained));
}

#[test]
fn conn_surge_request_grows_with_the_peak_not_the_surge_count() {
    let _alone = serial();
    let sets = [("conns", "0"), ("surge_first", "8"), ("surge_step", "0"), ("surge_payload", "256KiB")];
    let load = |addr, shape: LoadShape, ctx: Ctx| async move {
        let surge = shape.surge.clone().unwrap();
        peer::surges(addr, &surge, 1).await;
        let after_one = ctx.barriers.stats().held_bytes;
        peer::surges(addr, &surge, 3).await;
        (after_one, ctx.barriers.stats().held_bytes)
    };
    let leak = run("conn-surge-request", Variant::Leak, &sets, load);
    let (one, four) = leak.load;
    assert!(one >= 8 * (128 << 10));
    // Surges of the same size reuse the same slots: no further growth.
    assert!(four <= one + one / 2, "held after 1 surge {}, after 4 {}", kib(one as isize), kib(four as isize));
}

fn response_surge_sets() -> [(&'static str, &'static str); 4] {
    [("conns", "1"), ("surge_first", "8"), ("surge_step", "8"), ("response", "256KiB")]
}

async fn response_surges(addr: SocketAddr, shape: LoadShape, _: Ctx) -> usize {
    peer::steady(addr, &shape, 10).await;
    peer::surges(addr, shape.surge.as_ref().unwrap(), 3).await
}

#[test]
fn conn_surge_response_scenarios_answer_surges_large_and_legacy_slots_keep_buffers() {
    let _alone = serial();
    for (name, nocopy) in [("conn-surge-response-nocopy", true), ("conn-surge-response-copy", false)] {
        let info = find(name).unwrap();
        let params = Params::defaults(info).unwrap();
        let s = server(info, Variant::Leak, &params, Pool::new(rpc::PoolConfig::default())).unwrap();
        assert_eq!(s.config.nocopy_write, nocopy);
        assert_eq!(s.config.barriers.mode(), rpc::BarrierMode::Legacy);
        let s = server(info, Variant::Fix, &params, Pool::new(rpc::PoolConfig::default())).unwrap();
        assert_eq!((s.config.nocopy_write, s.config.barriers.mode()), (nocopy, rpc::BarrierMode::Fixed));

        let leak = run(name, Variant::Leak, &response_surge_sets(), response_surges);
        let fix = run(name, Variant::Fix, &response_surge_sets(), response_surges);
        assert_eq!(leak.load, 24, "every surge call was answered with `response` bytes");
        assert!(leak.barriers.held_bytes >= 24 * (8 << 10), "legacy slots keep the closed connections' buffers");
        assert_eq!(fix.barriers.held_bytes, 0);
        assert_eq!(fix.pool.leased_bytes, 0);
        assert!(fix.retained < 256 << 10, "{}", kib(fix.retained));
    }
}

#[test]
fn conn_surge_response_nocopy_slots_keep_the_handlers_responses() {
    let _alone = serial();
    let sets = response_surge_sets();
    let leak = run("conn-surge-response-nocopy", Variant::Leak, &sets, response_surges);
    let fix = run("conn-surge-response-nocopy", Variant::Fix, &sets, response_surges);
    let peak = leak.load;
    // The linked responses are the handler's own memory, not pooled.
    assert!(leak.barriers.held_bytes >= peak * (256 << 10), "held {}", kib(leak.barriers.held_bytes as isize));
    assert!(leak.retained + SLACK >= (peak * (256 << 10)) as isize, "{}", kib(leak.retained));
    assert_eq!(fix.barriers.held_bytes, 0);
    assert!(fix.retained < 256 << 10, "{}", kib(fix.retained));
}

#[test]
fn conn_surge_response_copy_slots_keep_pooled_output_nodes() {
    let _alone = serial();
    let sets = response_surge_sets();
    let leak = run("conn-surge-response-copy", Variant::Leak, &sets, response_surges);
    let fix = run("conn-surge-response-copy", Variant::Fix, &sets, response_surges);
    let peak = leak.load;
    let encode: usize =
        leak.leases.iter().filter(|l| l.pinned() && l.slot_refs > 0 && l.taker == Taker::Encode).map(|l| l.size).sum();
    assert!(encode >= peak * (256 << 10), "slot-pinned output nodes {}", kib(encode as isize));
    assert!(leak.retained + SLACK >= encode as isize);
    assert_eq!(fix.barriers.held_bytes, 0);
    assert_eq!(fix.pool.leased_bytes, 0);
    assert!(fix.retained < 256 << 10, "{}", kib(fix.retained));
}

/// Opens `n` idle connections (one call each), waits past the fix's idle
/// timeout, and reports (open connections, leased bytes) then.
async fn idle_load(n: usize, addr: SocketAddr, shape: LoadShape, ctx: Ctx) -> (u64, usize) {
    let idle = shape.idle.clone().unwrap();
    let mut conns = Vec::new();
    for i in 0..n {
        let mut c = Conn::connect(addr).await;
        if idle.first_call {
            c.call(&peer::request(i as i64, shape.payload, None)).await.unwrap();
        }
        conns.push(c);
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let seen = (ctx.stats.counts().open_conns, ctx.pool.stats().leased_bytes);
    drop(conns);
    seen
}

#[test]
fn idle_connections_hold_buffers_until_the_server_closes_them() {
    let _alone = serial();
    let n = 60;
    let sets = [("idle_timeout", "250ms"), ("conns", "0")];
    let leak = run("idle-connections", Variant::Leak, &sets, |a, s, c| idle_load(n, a, s, c));
    let fix = run("idle-connections", Variant::Fix, &sets, |a, s, c| idle_load(n, a, s, c));
    let (open, leased) = leak.load;
    assert_eq!(open, n as u64, "the leak keeps every idle connection open");
    assert!(leased >= n * (12 << 10), "8 KiB input + 4 KiB output per connection: {}", kib(leased as isize));
    let (open, leased) = fix.load;
    assert_eq!(open, 0, "the idle timeout closed them");
    assert_eq!(leased, 0);
    assert_eq!(fix.counts.idle_closed, n as u64);
    // Once the connections close, nothing stays in either variant.
    assert_eq!(leak.pool.leased_bytes, 0);
}

#[test]
fn idle_connections_fix_with_a_smaller_first_node() {
    let _alone = serial();
    let sets = [("idle_timeout", "2s"), ("conns", "0"), ("initial_input", "1KiB"), ("first_call", "false")];
    let fix = run("idle-connections", Variant::Fix, &sets, |a, s, c| idle_load(20, a, s, c));
    let (open, leased) = fix.load;
    assert_eq!(open, 20);
    assert_eq!(leased, 20 * 1024, "a 1 KiB input node per idle connection");
}

#[test]
fn oversized_request_leak_caches_large_chunks_fix_refuses_them() {
    let _alone = serial();
    let sets = [("payload", "1KiB"), ("conns", "2"), ("every", "50"), ("size", "6MiB")];
    let load = |addr, shape: LoadShape, _| async move { peer::steady(addr, &shape, 200).await };
    let leak = run("oversized-request", Variant::Leak, &sets, load);
    let fix = run("oversized-request", Variant::Fix, &sets, load);
    assert_eq!(leak.load, 200, "the leak answers the oversized calls too");
    assert!(leak.counts.large_requests >= 4, "{:?}", leak.counts);
    let big_cached: usize = leak.pool.classes.iter().filter(|c| c.size >= 1 << 20).map(|c| c.cached_bytes).sum();
    assert!(big_cached >= 8 << 20, "the pool keeps the large chunks: {}", kib(big_cached as isize));
    // The fix refuses each oversized call and closes its connection.
    assert_eq!(fix.load, 200 - 4);
    assert_eq!(fix.counts.protocol_errors, 4);
    assert!(fix.pool.classes.iter().all(|c| c.size < 1 << 20), "{:?}", fix.pool.classes);
    assert!(fix.pool.classes.iter().all(|c| c.cached_bytes <= 1 << 20));
    assert!(fix.retained < 256 << 10, "{}", kib(fix.retained));
}

#[test]
fn oversized_request_fix_brings_its_own_capped_pool() {
    let _alone = serial();
    let info = find("oversized-request").unwrap();
    let params = Params::defaults(info).unwrap();
    let default_pool = Pool::new(rpc::PoolConfig::default());
    let s = server(info, Variant::Fix, &params, default_pool).unwrap();
    assert_eq!(s.config.pool.config().max_cached_per_class, 1 << 20);
    assert_eq!(s.config.limits.max_frame, 1 << 20);
    let capped = Pool::new(pool_config(info, Variant::Fix, &params).unwrap());
    let s = server(info, Variant::Fix, &params, capped.clone()).unwrap();
    capped.lease(10, Taker::User("probe"));
    assert_eq!(s.config.pool.stats().cached_bytes, 16, "the given pool is used when its policy fits");
}

#[test]
fn sonic_string_hold_zero_copy_keeps_whole_documents() {
    let _alone = serial();
    let sets = [("json_size", "32KiB"), ("conns", "4")];
    let load = |addr, shape: LoadShape, _| async move { peer::steady(addr, &shape, CALLS).await };
    let leak = run("sonic-string-hold", Variant::Leak, &sets, load);
    let fix = run("sonic-string-hold", Variant::Fix, &sets, load);
    for o in [&leak, &fix] {
        assert_eq!(o.load, CALLS);
        assert_eq!(o.handler.cached_entries(), CALLS);
        assert_eq!(o.handler.cached_value_bytes(), CALLS * 48);
        assert_eq!(o.pool.leased_bytes, 0);
    }
    let user = leak.handler.cached_user(0).unwrap();
    assert!(user.starts_with("user-000042-") && user.len() == 48, "{user}");
    assert!(leak.retained > (CALLS * (32 << 10)) as isize * 9 / 10, "{}", kib(leak.retained));
    assert!(fix.retained < (CALLS * 512) as isize, "{}", kib(fix.retained));
}

#[test]
fn steady_control_gives_everything_back() {
    let _alone = serial();
    let load = |addr, shape: LoadShape, _| async move { peer::steady(addr, &shape, CALLS).await };
    for v in Variant::ALL {
        let o = run("steady", v, &[], load);
        assert_eq!(o.load, CALLS);
        assert_eq!(o.pool.leased_bytes, 0);
        assert!(o.leases.is_empty());
        assert!(o.retained < 64 << 10, "{}", kib(o.retained));
    }
}

#[test]
fn bounded_cache_control_plateaus_at_its_capacity() {
    let _alone = serial();
    let sets = [("capacity", "200"), ("entry", "1KiB")];
    let load = |addr, shape: LoadShape, _| async move { peer::steady(addr, &shape, 500).await };
    let o = run("bounded-cache", Variant::Leak, &sets, load);
    assert_eq!(o.handler.cached_entries(), 200);
    assert_eq!(o.handler.cached_value_bytes(), 200 * 1024);
    assert_eq!(o.pool.leased_bytes, 0);
    // The cache's own copies, nothing per request beyond them.
    assert!(o.retained < 200 * 1024 + (128 << 10), "{}", kib(o.retained));
}

/// The steady calls with the burst's connections on top, then the burst
/// ends: memory goes back to the pool.
async fn with_burst(addr: SocketAddr, shape: LoadShape, _: Ctx) -> (usize, usize) {
    let burst = shape.burst.clone().unwrap();
    let extra = LoadShape { conns: burst.conns, ..shape.clone() };
    tokio::join!(peer::steady(addr, &shape, 100), peer::steady(addr, &extra, 4 * burst.conns))
}

#[test]
fn warmup_and_burst_controls_return_their_buffers() {
    let _alone = serial();
    for name in ["warmup", "burst"] {
        let o = run(name, Variant::Fix, &[], with_burst);
        assert!(o.load.0 > 0 && o.load.1 > 0);
        assert_eq!(o.pool.leased_bytes, 0, "{name}");
        assert!(o.pool.cached_bytes > 0, "{name}: the pool keeps what the spike used");
        assert!(o.retained < 128 << 10, "{name}: {}", kib(o.retained));
    }
}
