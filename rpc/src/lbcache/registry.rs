//! The process-global registry of shared factories (Kitex's
//! `balancerFactories`), keyed by resolver, balancer, refresh and expire
//! interval, and the process-wide counts.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock, Mutex};

use super::balancer::Loadbalancer;
use super::counters::{BALANCERS, EVENTS_FORMATTED, FACTORIES, HOOKS, QUEUED_BYTES, REFRESHES, TICKERS};
use super::factory::{BalancerFactory, FactoryStats};
use super::options::{FactoryKey, Options};
use super::resolver::Resolver;
use super::sync::lock;

/// Kitex's `balancerFactories`: shared factories, never removed.
static REGISTRY: LazyLock<Mutex<HashMap<FactoryKey, Arc<BalancerFactory>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Counts over every factory of the process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbStats {
    /// Live factories: the registry's, plus unshared ones still alive.
    pub factories: usize,
    /// Cached balancers (targets) over all factories.
    pub balancers: usize,
    /// Registered hook pairs (one per client that did not close).
    pub hooks: usize,
    /// Running ticker tasks.
    pub tickers: usize,
    /// Target refreshes since the process started.
    pub refreshes: u64,
    /// Instance lists formatted into event queues since the process started.
    pub events_formatted: u64,
    /// Heap bytes held by the text of all live event queues.
    pub queued_bytes: usize,
}

/// Counts over every factory of the process.
pub fn registry_stats() -> LbStats {
    LbStats {
        factories: FACTORIES.load(Ordering::Relaxed),
        balancers: BALANCERS.load(Ordering::Relaxed),
        hooks: HOOKS.load(Ordering::Relaxed),
        tickers: TICKERS.load(Ordering::Relaxed),
        refreshes: REFRESHES.load(Ordering::Relaxed),
        events_formatted: EVENTS_FORMATTED.load(Ordering::Relaxed),
        queued_bytes: QUEUED_BYTES.load(Ordering::Relaxed),
    }
}

/// The counts of every factory in the registry (Kitex's `lbcache.Dump`),
/// ordered by key.
pub fn registry_dump() -> Vec<FactoryStats> {
    let factories: Vec<Arc<BalancerFactory>> = lock(&REGISTRY).values().cloned().collect();
    let mut stats: Vec<FactoryStats> = factories.iter().map(|f| f.stats()).collect();
    stats.sort_by_key(|s| s.key.to_string());
    stats
}

impl BalancerFactory {
    /// The registry's factory for this resolver, policy and options,
    /// created on first use (Kitex's `NewBalancerFactory`).
    ///
    /// A policy that is not [`Loadbalancer::shareable`] gets a new factory
    /// on every call, kept out of the registry; if called inside a tokio
    /// runtime, its ticker starts now and never stops.
    pub fn get_or_create(resolver: Arc<dyn Resolver>, lb: Arc<dyn Loadbalancer>, opts: Options) -> Arc<Self> {
        let opts = opts.normalized();
        let key = FactoryKey {
            resolver: resolver.name().to_owned(),
            balancer: lb.name().to_owned(),
            refresh_interval: opts.refresh_interval,
            expire_interval: opts.expire_interval,
        };
        if !lb.shareable() {
            let factory = Self::create(key, false, opts, resolver, lb);
            factory.ensure_ticker();
            return factory;
        }
        let mut registry = lock(&REGISTRY);
        if let Some(factory) = registry.get(&key) {
            return factory.clone();
        }
        let factory = Self::create(key.clone(), true, opts, resolver, lb);
        registry.insert(key, factory.clone());
        factory
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::lbcache::fixtures::{addr, resolver, shared, First};
    use crate::lbcache::{WeightedRandom, WeightedRoundRobin};

    #[test]
    fn factories_shared_for_same_key() {
        let r = resolver("t-shared-same", &[1]);
        let a = shared(&r);
        let b = BalancerFactory::get_or_create(r.clone(), Arc::new(WeightedRoundRobin), Options::default());
        // Zero intervals mean the defaults, so this is the same key too.
        let c = BalancerFactory::get_or_create(
            r.clone(),
            Arc::new(WeightedRoundRobin),
            Options { refresh_interval: Duration::ZERO, expire_interval: Duration::ZERO },
        );
        assert!(Arc::ptr_eq(&a, &b));
        assert!(Arc::ptr_eq(&a, &c));
        assert!(a.is_shared());
        assert_eq!(a.key().to_string(), "t-shared-same|weighted_round_robin|{5s 15s}");
        assert!(registry_dump().iter().any(|s| s.key == *a.key()));
        // One balancer per target, shared by the "clients".
        assert!(Arc::ptr_eq(&a.get("echo").unwrap(), &b.get("echo").unwrap()));
        assert_eq!(r.resolves(), 1);
    }

    #[test]
    fn factories_distinct_for_other_keys() {
        let r = resolver("t-shared-distinct", &[1]);
        let other = resolver("t-shared-distinct-2", &[1]);
        let base = shared(&r);
        let by_resolver = shared(&other);
        let by_balancer = BalancerFactory::get_or_create(r.clone(), Arc::new(WeightedRandom), Options::default());
        let by_refresh = BalancerFactory::get_or_create(
            r.clone(),
            Arc::new(WeightedRoundRobin),
            Options { refresh_interval: Duration::from_secs(1), ..Options::default() },
        );
        let by_expire = BalancerFactory::get_or_create(
            r.clone(),
            Arc::new(WeightedRoundRobin),
            Options { expire_interval: Duration::from_secs(1), ..Options::default() },
        );
        let all = [&base, &by_resolver, &by_balancer, &by_refresh, &by_expire];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert!(!Arc::ptr_eq(a, b), "{} vs {}", a.key(), b.key());
            }
        }
    }

    #[test]
    fn custom_balancer_factory_not_shared() {
        let r = resolver("t-custom", &[1]);
        let a = BalancerFactory::get_or_create(r.clone(), Arc::new(First), Options::default());
        let b = BalancerFactory::get_or_create(r.clone(), Arc::new(First), Options::default());
        assert!(!Arc::ptr_eq(&a, &b));
        assert!(!a.is_shared());
        assert!(!registry_dump().iter().any(|s| s.key == *a.key()));
        assert_eq!(a.get("echo").unwrap().pick().unwrap().addr, addr(9000));
        assert!(registry_stats().factories >= 2);
        // Outside a runtime no ticker holds it: it can still be dropped.
        let weak = Arc::downgrade(&a);
        drop(a);
        assert!(weak.upgrade().is_none());
    }
}
