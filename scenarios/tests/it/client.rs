//! The client scenarios against an in-process Echo server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rpc::lbcache::{registry_dump, FactoryStats};
use rpc::{Pool, PoolConfig};
use scenarios::{client_cached_entries, find, run_client, server, Params, ScenarioError, Variant};

use crate::peer::Running;
use crate::{heap_in_use, kib, runtime, serial, set};

struct Outcome {
    calls: u64,
    retained: isize,
    entries_added: usize,
    factory: Option<FactoryStats>,
    /// The Echo server called.
    addr: std::net::SocketAddr,
}

/// Runs client scenario `name` against a fresh Echo server for `length`.
fn run(name: &str, variant: Variant, sets: &[(&str, &str)], length: Duration) -> Outcome {
    let info = find(name).unwrap();
    let params = Params::parse(info, &set(sets)).unwrap();
    let echo = find("steady").unwrap();
    let server_pool = Pool::new(PoolConfig::default());
    let peer = || server(echo, Variant::Leak, &Params::defaults(echo).unwrap(), server_pool.clone()).unwrap();
    let client_pool = Pool::new(PoolConfig::default());
    let calls = Arc::new(AtomicU64::new(0));
    let entries_before = client_cached_entries();
    let before = heap_in_use();
    let rt = runtime();
    let addr = rt.block_on(async {
        // The balancer registry lives as long as the process, and a client's
        // factory is keyed by its server's address: a factory that an
        // earlier test left for a server on the same port would be taken
        // for this run's. Servers on used ports stay bound until one gets a
        // fresh port.
        let fresh =
            |addr: std::net::SocketAddr| registry_dump().iter().all(|f| !f.key.resolver.ends_with(&addr.to_string()));
        let mut used = Vec::new();
        let running = loop {
            let p = peer();
            let running = Running::start(p.config, p.handler).await;
            if fresh(running.addr) {
                break running;
            }
            used.push(running);
        };
        for r in used {
            r.shutdown().await;
        }
        let stop = tokio::time::sleep(length);
        run_client(info, variant, &params, running.addr, client_pool.clone(), calls.clone(), stop).await.unwrap();
        running.wait_closed().await;
        let addr = running.addr;
        running.shutdown().await;
        addr
    });
    rt.shutdown_timeout(Duration::from_secs(5));
    server_pool.trim();
    client_pool.trim();
    let retained = heap_in_use() - before;
    let factory = registry_dump().into_iter().find(|f| f.key.resolver.ends_with(&addr.to_string()));
    let calls = calls.load(Ordering::Relaxed);
    eprintln!("{name} {variant}: {calls} calls, retained {} heap, factory {factory:?}", kib(retained));
    Outcome { calls, retained, entries_added: client_cached_entries() - entries_before, factory, addr }
}

#[test]
fn response_field_hold_leak_keeps_each_response_msg() {
    let _alone = serial();
    let sets = [("payload", "16KiB"), ("rps", "600"), ("conns", "4")];
    let leak = run("response-field-hold", Variant::Leak, &sets, Duration::from_millis(700));
    let fix = run("response-field-hold", Variant::Fix, &sets, Duration::from_millis(700));
    for o in [&leak, &fix] {
        assert!(o.calls >= 100, "{} calls", o.calls);
    }
    assert_eq!(leak.entries_added as u64, leak.calls, "every held slice stays");
    // The fix's copies go to a bounded cache shared by the process, which
    // earlier calls may have filled: at most one entry per call.
    assert!(fix.entries_added as u64 <= fix.calls, "{} entries for {} calls", fix.entries_added, fix.calls);
    let per_call = |o: &Outcome| o.retained / o.calls as isize;
    assert!(per_call(&leak) >= 15 << 10, "leak keeps ~16 KiB per call: {} per call", per_call(&leak));
    assert!(per_call(&fix) < 256, "fix keeps a tiny entry per call: {} per call", per_call(&fix));
}

#[test]
fn duplicate_clients_leak_piles_hooks_on_the_shared_factory() {
    let _alone = serial();
    let sets = [("rps", "200"), ("refresh", "100ms"), ("instances", "64")];
    let leak = run("duplicate-clients", Variant::Leak, &sets, Duration::from_millis(800));
    let fix = run("duplicate-clients", Variant::Fix, &sets, Duration::from_millis(800));
    let lf = leak.factory.expect("the leak's factory is in the registry");
    assert!(leak.calls >= 50);
    assert!(lf.hooks as u64 >= leak.calls, "one hook per client created and never closed");
    assert!(lf.events_formatted > lf.hooks as u64, "each refresh formats one copy per hook");
    assert!(leak.retained > (lf.hooks * (4 << 10)) as isize, "{}", kib(leak.retained));
    let ff = fix.factory.expect("the fix's factory is in the registry");
    assert_eq!(ff.hooks, 0, "the one shared client was closed");
    assert!(fix.calls >= 50);
    assert!(fix.retained < 256 << 10, "{}", kib(fix.retained));
}

#[test]
fn client_functions_refuse_the_other_side() {
    let _alone = serial();
    let info = find("steady").unwrap();
    let params = Params::defaults(info).unwrap();
    let rt = runtime();
    let e = rt
        .block_on(run_client(
            info,
            Variant::Leak,
            &params,
            "127.0.0.1:9".parse().unwrap(),
            Pool::new(PoolConfig::default()),
            Arc::new(AtomicU64::new(0)),
            async {},
        ))
        .unwrap_err();
    assert!(matches!(e, ScenarioError::WrongSide { .. }), "{e}");
    let info = find("duplicate-clients").unwrap();
    let params = Params::defaults(info).unwrap();
    let e = server(info, Variant::Leak, &params, Pool::new(PoolConfig::default())).unwrap_err();
    assert!(e.to_string().contains("client scenario"), "{e}");
    assert!(scenarios::load_shape(info, Variant::Leak, &params).is_err());
}

#[test]
fn a_client_run_against_nobody_fails_with_the_reason() {
    let _alone = serial();
    let info = find("response-field-hold").unwrap();
    let params = Params::defaults(info).unwrap();
    let rt = runtime();
    // Nothing listens on a port we just bound and released.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let e = rt
        .block_on(async {
            let stop = tokio::time::sleep(Duration::from_millis(200));
            let pool = Pool::new(PoolConfig::default());
            run_client(info, Variant::Fix, &params, addr, pool, Arc::new(AtomicU64::new(0)), stop).await
        })
        .unwrap_err();
    assert!(matches!(e, ScenarioError::Client { .. }), "{e}");
}

#[test]
fn response_field_hold_leak_rate_keeps_one_response_in_n() {
    let _alone = serial();
    let sets = [("payload", "16KiB"), ("rps", "600"), ("conns", "4"), ("leak_rate", "4")];
    let o = run("response-field-hold", Variant::Leak, &sets, Duration::from_millis(700));
    assert!(o.calls >= 100, "{} calls", o.calls);
    // One call in 4 keeps its 16 KiB msg, the others a tiny copy.
    let per_call = o.retained / o.calls as isize;
    // (Calls still in flight when the run stops are counted but may not be
    // cached: the share is a little under a quarter.)
    assert!((5 << 9..=6 << 10).contains(&per_call), "{per_call} bytes per call, not about 4 KiB");
}

#[test]
fn duplicate_clients_onset_and_leak_rate_create_clients_late_and_rarely() {
    let _alone = serial();
    let sets = [("rps", "200"), ("refresh", "100ms"), ("onset", "300ms"), ("leak_rate", "3")];
    let start = std::time::Instant::now();
    let o = run("duplicate-clients", Variant::Leak, &sets, Duration::from_millis(900));
    let f = o.factory.expect("the factory is in the registry");
    assert!(start.elapsed() >= Duration::from_millis(900));
    // About 600 ms of 900 after the onset, one call in 3 makes a client
    // that is never closed; the shared one was closed.
    let expected = o.calls as f64 * 600.0 / 900.0 / 3.0;
    let hooks = f.hooks as f64;
    assert!(hooks > expected * 0.6 && hooks < expected * 1.4, "{hooks} hooks, about {expected:.0} expected");
}

#[test]
fn a_client_mixture_runs_both_callers() {
    let _alone = serial();
    let sets = [("payload", "16KiB"), ("rps", "300"), ("conns", "2"), ("mix", "duplicate-clients")];
    let leak = run("response-field-hold", Variant::Leak, &sets, Duration::from_millis(700));
    // Both callers count their calls; the response cache grows with the
    // first one's, the duplicate clients' hooks with the second one's.
    assert!(leak.entries_added >= 100, "{} responses cached", leak.entries_added);
    assert!(leak.calls as usize > leak.entries_added, "the mixed-in caller called too");
    assert!(leak.retained > leak.entries_added as isize * (15 << 10), "{}", kib(leak.retained));
    let resolver = format!("leaklab-duplicate-clients-{}", leak.addr);
    let hooks = rpc::lbcache::registry_dump().into_iter().find(|f| f.key.resolver == resolver).map_or(0, |f| f.hooks);
    assert!(hooks >= 20, "duplicate clients left {hooks} hooks");
}
