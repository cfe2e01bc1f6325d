//! The modifiers every scenario accepts (`onset`, `leak_rate`,
//! `background`, `mix`), in process: a server scenario on a fresh pool,
//! loaded by the in-test peer, with the heap measured between batches of
//! calls as the other scenario tests measure it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use rpc::Pool;
use scenarios::{find, load_shape, pool_config, server, LoadShape, Params, ScenarioHandler, Variant};

use crate::peer::{self, Running};
use crate::{heap_in_use, kib, runtime, serial, set};

/// Runs scenario `name` in `variant` with `sets`; `load` gets the address,
/// the load shape and the handler, and returns what it measured.
fn with_server<T, F, Fut>(name: &str, variant: Variant, sets: &[(&str, &str)], load: F) -> T
where
    F: FnOnce(SocketAddr, LoadShape, ScenarioHandler) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let info = find(name).unwrap();
    let params = Params::parse(info, &set(sets)).unwrap();
    let shape = load_shape(info, variant, &params).unwrap();
    let pool = Pool::new(pool_config(info, variant, &params).unwrap());
    let scenario = server(info, variant, &params, pool).unwrap();
    let handler = scenario.handler.clone();
    let rt = runtime();
    let out = rt.block_on(async {
        let running = Running::start(scenario.config, scenario.handler).await;
        let out = load(running.addr, shape, handler).await;
        running.wait_closed().await;
        running.shutdown().await;
        out
    });
    rt.shutdown_timeout(Duration::from_secs(5));
    out
}

/// Heap growth over `calls` steady calls, with ids no other batch uses.
async fn grows_by(addr: SocketAddr, shape: &LoadShape, calls: usize) -> isize {
    static BATCH: AtomicI64 = AtomicI64::new(1);
    let batch = BATCH.fetch_add(1, Ordering::Relaxed);
    let before = heap_in_use();
    assert_eq!(peer::steady_from(addr, shape, calls, batch).await, calls);
    heap_in_use() - before
}

const FIELD: isize = 16 << 10;

#[test]
fn onset_delays_the_growth() {
    let _alone = serial();
    let onset = Duration::from_millis(600);
    let sets = [("payload", "16KiB"), ("conns", "2"), ("onset", "600ms")];
    let (before, after) = with_server("request-field-hold", Variant::Leak, &sets, |addr, shape, _| async move {
        let start = Instant::now();
        // Connections' buffers and the pool's cache warm up first.
        grows_by(addr, &shape, 40).await;
        let before = grows_by(addr, &shape, 200).await;
        assert!(start.elapsed() < onset, "the first calls took {:?}: past the onset", start.elapsed());
        tokio::time::sleep_until((start + onset + Duration::from_millis(100)).into()).await;
        (before, grows_by(addr, &shape, 200).await)
    });
    eprintln!("onset: before {} after {}", kib(before), kib(after));
    // Before the onset the fix's copies: one tiny entry per call (until
    // the cache of copies is full), and what
    // the pool may add to the connections' buffers between batches (up to
    // a few hundred KiB): under an eighth of a field per call.
    assert!(before < 200 * FIELD / 8, "grew {} over 200 calls before the onset", kib(before));
    assert!(after > 200 * FIELD * 9 / 10, "grew {} over 200 calls after the onset", kib(after));
}

#[test]
fn onset_changes_nothing_in_the_fix() {
    let _alone = serial();
    let sets = [("payload", "16KiB"), ("conns", "2"), ("onset", "1ms")];
    let grew = with_server("request-field-hold", Variant::Fix, &sets, |addr, shape, _| async move {
        grows_by(addr, &shape, 40).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        grows_by(addr, &shape, 200).await
    });
    assert!(grew < 200 * FIELD / 8, "{}", kib(grew));
}

#[test]
fn leak_rate_scales_the_growth() {
    let _alone = serial();
    let calls = 800;
    let growth = |rate: &'static str| {
        let sets = [("payload", "16KiB"), ("conns", "2"), ("leak_rate", rate)];
        with_server("request-field-hold", Variant::Leak, &sets, |addr, shape, _| async move {
            grows_by(addr, &shape, 40).await;
            grows_by(addr, &shape, calls).await
        })
    };
    let every = growth("1");
    let quarter = growth("4");
    let ratio = quarter as f64 / every as f64;
    eprintln!("leak_rate: 1 -> {}, 4 -> {} ({ratio:.3})", kib(every), kib(quarter));
    assert!(every > calls as isize * FIELD * 9 / 10, "{}", kib(every));
    // The gate counts calls: exactly one in 4 keeps its 16 KiB field, the
    // others a tiny copy (about 0.3% of a field each, with the map's own
    // growth); the pool may add up to about 0.5 MiB of connection buffers
    // between batches, 0.04 of the 12.5 MiB the rate of 1 keeps.
    assert!((0.21..=0.30).contains(&ratio), "leak_rate=4 grew {ratio:.3} as fast as leak_rate=1");
}

#[test]
fn the_background_stays_bounded() {
    let _alone = serial();
    let sets = [("conns", "2"), ("background", "all")];
    let info = find("idle-connections").unwrap();
    let params = Params::parse(info, &set(&sets)).unwrap();
    let shape = load_shape(info, Variant::Fix, &params).unwrap();
    let burst = shape.noise_burst.clone().expect("background=all bursts connections");
    assert_eq!((burst.every, burst.conns), (Some(scenarios::BURST_EVERY), scenarios::BURST_CONNS));
    let (filling, full, cached) = with_server("idle-connections", Variant::Fix, &sets, |addr, shape, h| async move {
        let start = Instant::now();
        let full_at =
            Duration::from_secs_f64(scenarios::CACHE_CAPACITY as f64 / scenarios::CACHE_PER_SECOND as f64 + 0.3);
        let calls_until = |t: Duration| {
            let shape = shape.clone();
            async move {
                while start.elapsed() < t {
                    peer::steady(addr, &shape, 20).await;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        let h0 = heap_in_use();
        calls_until(full_at).await;
        let h1 = heap_in_use();
        calls_until(full_at + Duration::from_millis(900)).await;
        (h1 - h0, heap_in_use() - h1, h.background_cached())
    });
    eprintln!("background: filling {} then {} with the cache full ({cached} entries)", kib(filling), kib(full));
    assert_eq!(cached, scenarios::CACHE_CAPACITY);
    let capacity = (scenarios::CACHE_CAPACITY * scenarios::CACHE_ENTRY) as isize;
    assert!(filling > capacity, "the cache filled: {}", kib(filling));
    assert!(full.abs() < 64 << 10, "nothing grows once the cache is full: {}", kib(full));
}

#[test]
fn a_mixture_grows_at_both_sites() {
    let _alone = serial();
    let calls = 200;
    let sets = [("payload", "16KiB"), ("conns", "2"), ("mix", "sonic-string-hold")];
    let run = |v| {
        with_server("request-field-hold", v, &sets, |addr, shape, h| async move {
            assert!(shape.json.is_some(), "the mixed-in mechanism's load is there");
            grows_by(addr, &shape, 40).await;
            let before = h.cached_entries_each();
            let grew = grows_by(addr, &shape, calls).await;
            let after = h.cached_entries_each();
            (grew, before, after, h.cached_value_bytes())
        })
    };
    let (leak, before, after, _) = run(Variant::Leak);
    eprintln!("mixture: leak grew {} ({before:?} -> {after:?} entries)", kib(leak));
    assert_eq!(after.len(), 2, "both mechanisms' caches");
    assert!(after.iter().zip(&before).all(|(a, b)| a - b == calls), "{before:?} -> {after:?}");
    // Each call keeps its 16 KiB msg (field 2) and its 32 KiB document
    // (field 3).
    let both = calls as isize * (FIELD + (32 << 10));
    assert!(leak > both * 9 / 10, "grew {} of {} for both fields", kib(leak), kib(both));
    let (fix, ..) = run(Variant::Fix);
    eprintln!("mixture: fix grew {}", kib(fix));
    // The fix of both keeps tiny entries; the pool may add a few chunks to
    // the connections' buffers between batches (up to about 0.5 MiB).
    assert!(fix < both / 10, "the fix of both keeps tiny entries: {}", kib(fix));
}

#[test]
fn a_mixture_with_oversized_calls_keeps_the_mechanisms_apart() {
    let _alone = serial();
    let sets = [("payload", "16KiB"), ("conns", "2"), ("mix", "oversized-request")];
    let info = find("request-field-hold").unwrap();
    let params = Params::parse(info, &set(&sets)).unwrap();
    let shape = load_shape(info, Variant::Leak, &params).unwrap();
    let o = shape.oversized.clone().expect("the oversized calls are in the load");
    assert_eq!((o.every, o.size), (200, 6 << 20));
    let shape = LoadShape { oversized: Some(scenarios::Oversized { every: 50, ..o }), ..shape };
    let (grew, held) = with_server("request-field-hold", Variant::Leak, &sets, |addr, _, h| async move {
        grows_by(addr, &shape, 20).await;
        let grew = grows_by(addr, &shape, 200).await;
        (grew, h.cached_value_bytes())
    });
    eprintln!("mixture with oversized: grew {}, held {}", kib(grew), kib(held as isize));
    // 220 calls, 4 oversized: the handler keeps the other 216 (the fields it
    // holds are 16 KiB each), not the 6 MiB ones; the pool caches those.
    assert_eq!(held, 216);
    assert!(grew > 196 * FIELD * 9 / 10 + (6 << 20), "{}", kib(grew));
}
