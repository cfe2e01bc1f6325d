//! From a catalogue entry to the code that runs it, with the modifiers
//! applied.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use rpc::{Pool, PoolConfig};

use crate::caller::{self, CallFuture};
use crate::error::ScenarioError;
use crate::handler::ServerScenario;
use crate::modifiers::mix_params;
use crate::noise::{Noise, BURST_CONNS, BURST_EVERY, BURST_LENGTH, BURST_RPS};
use crate::params::Params;
use crate::scenario::{Calls, Info, Role, Serves, Variant};
use crate::shape::{Burst, LoadShape};

fn serves(info: &Info, what: &'static str) -> Result<&'static dyn Serves, ScenarioError> {
    match info.scenario.role() {
        Role::Server(s) => Ok(s),
        Role::Client(_) => Err(ScenarioError::WrongSide { scenario: info.name, side: info.side, what }),
    }
}

fn calls(info: &Info, what: &'static str) -> Result<&'static dyn Calls, ScenarioError> {
    match info.scenario.role() {
        Role::Client(c) => Ok(c),
        Role::Server(_) => Err(ScenarioError::WrongSide { scenario: info.name, side: info.side, what }),
    }
}

/// The server settings and handler of a server scenario, on `pool` (see
/// [`ServerScenario`] for the one exception).
///
/// ```
/// let info = scenarios::find("conn-surge-request").unwrap();
/// let params = scenarios::Params::defaults(info).unwrap();
/// let pool = rpc::Pool::new(rpc::PoolConfig::default());
/// let s = scenarios::server(info, scenarios::Variant::Leak, &params, pool).unwrap();
/// assert_eq!(s.config.barriers.mode(), rpc::BarrierMode::Legacy);
/// ```
///
/// With `mix=` naming a server scenario, the handler and settings carry
/// both mechanisms; with `background=churn|cache`, the handler makes the
/// noise on every call.
pub fn server(info: &Info, variant: Variant, params: &Params, pool: Pool) -> Result<ServerScenario, ScenarioError> {
    let mut s = serves(info, "server()")?.server(variant, params, pool)?;
    if let Some(mix) = params.modifiers().mix {
        if let Role::Server(m) = mix.scenario.role() {
            m.mix_server(variant, &mix_params(mix, params)?, &mut s)?;
        }
    }
    s.parts().noise = Noise::of(params.modifiers().background);
    Ok(s)
}

/// The load the peer of a server scenario sends.
///
/// ```
/// let info = scenarios::find("conn-surge-request").unwrap();
/// let params = scenarios::Params::defaults(info).unwrap();
/// let shape = scenarios::load_shape(info, scenarios::Variant::Leak, &params).unwrap();
/// assert!(shape.surge.is_some());
/// ```
///
/// With `mix=` naming a server scenario, the load carries what both
/// mechanisms need; with `background=burst`, the periodic bursts of
/// connections ([`LoadShape::noise_burst`]).
pub fn load_shape(info: &Info, variant: Variant, params: &Params) -> Result<LoadShape, ScenarioError> {
    let mut shape = serves(info, "load_shape()")?.load(variant, params)?;
    if let Some(mix) = params.modifiers().mix {
        if let Role::Server(m) = mix.scenario.role() {
            m.mix_load(variant, &mix_params(mix, params)?, &mut shape)?;
        }
    }
    if params.modifiers().background.burst() {
        shape.noise_burst = Some(Burst {
            at: BURST_EVERY,
            length: BURST_LENGTH,
            conns: BURST_CONNS,
            rps: BURST_RPS,
            every: Some(BURST_EVERY),
        });
    }
    Ok(shape)
}

/// The pool policy a scenario wants: `PoolConfig::default()` (Netpoll's
/// generous caching) except where the scenario caps the cache: the fix of
/// `oversized-request`, and the connection-surge scenarios (`pool_cache`).
/// Build the pool given to [`server`] or [`run_client`] with it; [`server`]
/// swaps in a pool of its own when the given one caches more.
pub fn pool_config(info: &Info, variant: Variant, params: &Params) -> Result<PoolConfig, ScenarioError> {
    let own = match info.scenario.role() {
        Role::Server(s) => s.pool_config(variant, params)?,
        Role::Client(_) => PoolConfig::default(),
    };
    // A mixture caches no more than either mechanism wants.
    match params.modifiers().mix.map(|m| m.scenario.role()) {
        Some(Role::Server(m)) if info.side == crate::side::Side::Server => {
            let mixed = m.pool_config(variant, &mix_params(params.modifiers().mix.expect("a mix"), params)?)?;
            Ok(if mixed.max_cached_per_class < own.max_cached_per_class { mixed } else { own })
        }
        _ => Ok(own),
    }
}

/// Runs a client scenario until `stop` completes: the process under test
/// calls the plain Echo server at `peer`, counting answered calls in
/// `calls`. Fails only when no call at all succeeded.
pub async fn run_client(
    info: &Info,
    variant: Variant,
    params: &Params,
    peer: SocketAddr,
    pool: Pool,
    calls: Arc<AtomicU64>,
    stop: impl Future<Output = ()>,
) -> Result<(), ScenarioError> {
    let mut caller = self::calls(info, "run_client()")?.caller(variant, params, peer, pool.clone())?;
    let modifiers = params.modifiers();
    if let Some(noise) = Noise::of(modifiers.background) {
        let (noise, call) = (Arc::new(noise), caller.call.clone());
        caller.call = Arc::new(move |id: i64| -> CallFuture {
            noise.on_call();
            call(id)
        });
    }
    // The mixed-in caller, when the mixture is of two client leaks.
    let mixed = match modifiers.mix {
        Some(mix) if info.side == crate::side::Side::Client => {
            let p = mix_params(mix, params)?;
            let c = self::calls(mix, "run_client()")?.caller(variant, &p, peer, pool.clone())?;
            Some((mix.name, p.common(), c))
        }
        _ => None,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let signal = async move {
        stop.await;
        let _ = stop_tx.send(true);
    };
    let common = params.common();
    let own = caller.run(info.name, common.conns, common.rps, calls.clone(), stopped(stop_rx.clone()));
    let mix = async {
        match mixed {
            Some((name, c, caller)) => caller.run(name, c.conns, c.rps, calls.clone(), stopped(stop_rx.clone())).await,
            None => Ok(()),
        }
    };
    let burst = async {
        if modifiers.background.burst() {
            background_bursts(info.name, peer, pool.clone(), stopped(stop_rx.clone())).await;
        }
    };
    let (_, own, mix, _) = tokio::join!(signal, own, mix, burst);
    own.and(mix)
}

/// `background=burst` in a client scenario: every [`BURST_EVERY`],
/// [`BURST_CONNS`] concurrent callers through a second, well-behaved client
/// (one idle connection kept, closed at the end) for [`BURST_LENGTH`], at
/// [`BURST_RPS`] calls a second in all.
async fn background_bursts(scenario: &'static str, peer: SocketAddr, pool: Pool, stop: impl Future<Output = ()>) {
    let config = caller::client_config(
        &format!("{scenario}-background"),
        peer,
        vec![rpc::lbcache::Instance::new(peer, 10)],
        pool,
        1,
    );
    let Ok(client) = rpc::Client::new(config) else { return };
    let c = client.clone();
    let call: Arc<dyn Fn(i64) -> CallFuture + Send + Sync> = Arc::new(move |id: i64| -> CallFuture {
        let client = c.clone();
        Box::pin(async move {
            let req = rpc::codec::Request { id, msg: rpc::Binary::from_static(b"background burst"), json: None };
            client.call(&req).await.map(drop)
        })
    });
    let bursts = async {
        loop {
            tokio::time::sleep(BURST_EVERY).await;
            let _ = caller::drive(
                "background burst",
                BURST_CONNS,
                BURST_RPS,
                Arc::new(AtomicU64::new(0)),
                tokio::time::sleep(BURST_LENGTH),
                call.clone(),
            )
            .await;
        }
    };
    tokio::select! {
        _ = stop => {}
        _ = bursts => {}
    }
    client.close();
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::catalogue::{catalogue, find};
    use crate::scenario::VERDICT_KINDS;
    use crate::side::Side;

    #[test]
    fn names_are_exactly_the_design_catalogue() {
        let names: Vec<&str> = catalogue().iter().map(|i| i.name).collect();
        assert_eq!(
            names,
            [
                "request-field-hold",
                "response-field-hold",
                "conn-surge-request",
                "conn-surge-response-nocopy",
                "conn-surge-response-copy",
                "idle-connections",
                "oversized-request",
                "duplicate-clients",
                "sonic-string-hold",
                "steady",
                "bounded-cache",
                "warmup",
                "burst",
            ]
        );
    }

    #[test]
    fn expected_kinds_are_design_verdicts() {
        for info in catalogue() {
            assert!(VERDICT_KINDS.contains(&info.expected), "{}: {}", info.name, info.expected);
            assert_eq!(info.control, info.expected == "none", "{}", info.name);
            assert_eq!(info.control, info.holder.is_empty(), "{}", info.name);
            assert_eq!(info.expected_kind(Variant::Fix), "none");
            assert_eq!(info.expected_kind(Variant::Leak), info.expected);
        }
    }

    #[test]
    fn find_names_the_known_scenarios_when_it_fails() {
        assert_eq!(find("steady").unwrap().name, "steady");
        let e = find("stedy").unwrap_err().to_string();
        assert!(e.contains("\"stedy\"") && e.contains("request-field-hold") && e.contains("burst"), "{e}");
    }

    #[test]
    fn every_scenario_has_teaching_text_and_unique_params() {
        for info in catalogue() {
            assert!(info.reproduces.len() > 80, "{}", info.name);
            assert!(info.profile_shows.len() > 80, "{}", info.name);
            assert!(info.fix.len() > 40, "{}", info.name);
            let mut names: Vec<&str> = info.params.iter().map(|p| p.name).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), info.params.len(), "{}: duplicate parameter", info.name);
        }
    }

    #[test]
    fn every_guide_quote_is_the_section_its_scenario_reproduces() {
        for info in catalogue() {
            if info.control {
                assert!(info.guide.starts_with("A healthy control"), "{}: {}", info.name, info.guide);
                continue;
            }
            // `reproduces` opens with the guide's section title, which the
            // quote opens with.
            let title = info.reproduces.split('"').nth(1).unwrap_or_else(|| panic!("{}: no quoted title", info.name));
            let heading = info.guide.lines().next().unwrap_or("");
            assert!(heading.starts_with(title), "{}: quote opens with {heading:?}, not {title:?}", info.name);
            assert!(!info.guide.contains("\n\n\n") && !info.guide.ends_with('\n'), "{}", info.name);
        }
    }

    #[test]
    fn every_side_is_what_the_scenario_runs() {
        for info in catalogue() {
            let side = match info.scenario.role() {
                Role::Server(_) => Side::Server,
                Role::Client(_) => Side::Client,
            };
            assert_eq!(side, info.side, "{}", info.name);
        }
    }

    #[test]
    fn every_default_passes_its_check() {
        for info in catalogue() {
            for p in info.params {
                assert_eq!(p.check.check(p.default), Ok(()), "{}: {}", info.name, p.name);
            }
        }
    }

    #[test]
    fn unknown_keys_are_rejected_with_the_valid_ones() {
        let info = find("request-field-hold").unwrap();
        let e = Params::parse(info, &[("paylod".into(), "1KiB".into())]).unwrap_err().to_string();
        assert!(e.contains("\"paylod\""), "{e}");
        for p in info.params {
            assert!(e.contains(p.name), "{e} should list {}", p.name);
        }
    }

    #[test]
    fn values_are_checked_when_parsed() {
        let info = find("request-field-hold").unwrap();
        let e = Params::parse(info, &[("payload".into(), "lots".into())]).unwrap_err().to_string();
        assert!(e.contains("payload") && e.contains("64KiB"), "{e}");
        let e = Params::parse(info, &[("decode".into(), "zero".into())]).unwrap_err().to_string();
        assert!(e.contains("copy or nocopy"), "{e}");
    }

    #[test]
    fn later_pairs_win_and_effective_lists_every_param() {
        let info = find("steady").unwrap();
        let set = [("rps".to_owned(), "10".to_owned()), ("rps".to_owned(), "20".to_owned())];
        let p = Params::parse(info, &set).unwrap();
        assert_eq!(p.u64("rps").unwrap(), 20);
        let eff = p.effective();
        assert_eq!(eff.len(), info.params.len() + crate::modifiers().len());
        assert!(eff.contains(&("rps".to_owned(), "20".to_owned())));
        assert!(eff.contains(&("payload".to_owned(), info.param("payload").unwrap().default.to_owned())));
    }

    #[test]
    fn every_default_parses() {
        for info in catalogue() {
            let p = Params::defaults(info).unwrap_or_else(|e| panic!("{}: {e}", info.name));
            assert_eq!(p.effective().len(), info.params.len() + crate::modifiers().len());
        }
    }

    #[test]
    fn typed_getters() {
        let info = find("idle-connections").unwrap();
        let set = [("first_call".to_owned(), "no".to_owned()), ("idle_rate".to_owned(), "12.5".to_owned())];
        let p = Params::parse(info, &set).unwrap();
        assert!(!p.bool("first_call").unwrap());
        assert_eq!(p.f64("idle_rate").unwrap(), 12.5);
        assert_eq!(p.duration("idle_timeout").unwrap(), Duration::from_secs(1));
        assert!(p.u64("nope").is_err());
    }
}
