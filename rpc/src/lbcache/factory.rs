//! The [`BalancerFactory`]: one [`Balancer`] per target, the hooks its
//! clients registered ([`HookHandle`]), and its ticker task, which
//! refreshes the targets and sweeps away the unused ones.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::balancer::{Balancer, Loadbalancer};
use super::counters::{BALANCERS, FACTORIES, HOOKS, REFRESHES, TICKERS};
use super::hooks::{EventQueue, Hooks};
use super::options::{FactoryKey, Options};
use super::resolver::{Instance, LbError, Resolver};
use super::sync::lock;

/// Ids of ticker tasks, so that a task that ends knows whether the factory
/// has started another since.
static TICKER_IDS: AtomicU64 = AtomicU64::new(1);

/// Counts for one factory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FactoryStats {
    /// The factory's key.
    pub key: FactoryKey,
    /// Whether it is in the registry.
    pub shared: bool,
    /// Cached balancers (targets).
    pub balancers: usize,
    /// Registered hook pairs.
    pub hooks: usize,
    /// Target refreshes.
    pub refreshes: u64,
    /// Instance lists formatted into event queues.
    pub events_formatted: u64,
    /// Balancers evicted by sweeps.
    pub evictions: u64,
    /// Ticks of its ticker task.
    pub ticks: u64,
    /// Whether its ticker task is running.
    pub ticker_running: bool,
}

/// Gets or creates balancers per target, and refreshes them (Kitex's
/// `lbcache.BalancerFactory`). See the [module doc](super).
pub struct BalancerFactory {
    key: FactoryKey,
    shared: bool,
    opts: Options,
    resolver: Arc<dyn Resolver>,
    lb: Arc<dyn Loadbalancer>,
    me: Weak<BalancerFactory>,
    cache: Mutex<Cache>,
    hooks: Mutex<Hooks>,
    refreshes: AtomicU64,
    events_formatted: AtomicU64,
    evictions: AtomicU64,
    ticks: AtomicU64,
}

struct Cache {
    balancers: HashMap<String, Arc<Balancer>>,
    /// Id of the running ticker task, if any.
    ticker: Option<u64>,
}

impl BalancerFactory {
    /// A new factory; [`BalancerFactory::get_or_create`] decides whether it
    /// is shared.
    pub(super) fn create(
        key: FactoryKey,
        shared: bool,
        opts: Options,
        resolver: Arc<dyn Resolver>,
        lb: Arc<dyn Loadbalancer>,
    ) -> Arc<Self> {
        FACTORIES.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(key = %key, shared, "balancer factory created");
        Arc::new_cyclic(|me| BalancerFactory {
            key,
            shared,
            opts,
            resolver,
            lb,
            me: me.clone(),
            cache: Mutex::new(Cache { balancers: HashMap::new(), ticker: None }),
            hooks: Mutex::new(Hooks::new()),
            refreshes: AtomicU64::new(0),
            events_formatted: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            ticks: AtomicU64::new(0),
        })
    }

    /// The balancer of `target`, resolved and cached on first use (Kitex's
    /// `BalancerFactory.Get`). Inside a tokio runtime, starts the ticker if
    /// it is not running.
    pub fn get(&self, target: &str) -> Result<Arc<Balancer>, LbError> {
        {
            let cached = lock(&self.cache).balancers.get(target).cloned();
            if let Some(balancer) = cached {
                balancer.touch();
                self.ensure_ticker();
                return Ok(balancer);
            }
        }
        // Resolve without the lock; if another caller got there first, its
        // balancer wins (Kitex uses a singleflight group for the same end).
        let instances = self.resolver.resolve(target)?;
        let fresh = Balancer::new(target, self.resolver.name(), self.lb.clone(), instances);
        let balancer = lock(&self.cache)
            .balancers
            .entry(target.to_owned())
            .or_insert_with(|| {
                BALANCERS.fetch_add(1, Ordering::Relaxed);
                Arc::new(fresh)
            })
            .clone();
        self.ensure_ticker();
        Ok(balancer)
    }

    /// Registers a client's rebalance and delete hooks, which push into
    /// `queue` (Kitex's `RegisterRebalanceHook` + `RegisterDeleteHook`).
    ///
    /// **The hooks stay registered until [`HookHandle::remove`] is called.**
    /// Dropping the handle does not remove them: the factory keeps `queue`
    /// alive and formats into it on every refresh, forever. This is the
    /// guide's duplicate-clients leak.
    pub fn register_hooks(&self, queue: Arc<EventQueue>) -> HookHandle {
        let index = lock(&self.hooks).register(queue);
        HOOKS.fetch_add(1, Ordering::Relaxed);
        let factory = self.me.upgrade().expect("a factory is only reachable through its Arc");
        HookHandle { factory, index, removed: AtomicBool::new(false) }
    }

    /// Re-resolves every cached target now, as a tick does; returns how
    /// many targets were refreshed.
    pub fn refresh_now(&self) -> usize {
        self.refresh()
    }

    /// Runs one expiry sweep now, as the ticker does every expire
    /// interval: marks every balancer, evicts those still marked from the
    /// previous sweep (unused since). Returns how many were evicted.
    pub fn expire_now(&self) -> usize {
        self.sweep()
    }

    /// The shared ticker's work: re-resolves every cached target, stores
    /// the new instances and calls the rebalance hooks.
    #[inline(never)]
    pub fn refresh(&self) -> usize {
        let balancers: Vec<Arc<Balancer>> = lock(&self.cache).balancers.values().cloned().collect();
        let mut refreshed = 0;
        for balancer in &balancers {
            match self.resolver.resolve(balancer.target()) {
                Ok(instances) => {
                    let instances: Arc<[Instance]> = instances.into();
                    balancer.store_refreshed(instances.clone());
                    self.refreshes.fetch_add(1, Ordering::Relaxed);
                    REFRESHES.fetch_add(1, Ordering::Relaxed);
                    self.rebalance(balancer, &instances);
                    refreshed += 1;
                }
                Err(e) => {
                    tracing::warn!(key = %balancer.cache_key(), error = %e, "resolver refresh failed, keeping instances");
                }
            }
        }
        refreshed
    }

    /// Calls every registered rebalance hook with the new instances
    /// (Kitex's `hookableRebalancer.Rebalance`): one formatted copy per
    /// registered client.
    #[inline(never)]
    fn rebalance(&self, balancer: &Balancer, instances: &[Instance]) {
        let hooks = lock(&self.hooks);
        for queue in hooks.rebalance() {
            queue.on_rebalance(balancer.cache_key(), instances);
        }
        self.events_formatted.fetch_add(hooks.len() as u64, Ordering::Relaxed);
    }

    /// Calls every registered delete hook for an evicted balancer.
    #[inline(never)]
    fn delete(&self, balancer: &Balancer) {
        let hooks = lock(&self.hooks);
        for queue in hooks.delete() {
            queue.on_delete(balancer.cache_key());
        }
    }

    /// Kitex's `watcher` pass: mark, or evict what was already marked.
    fn sweep(&self) -> usize {
        let mut evicted = Vec::new();
        lock(&self.cache).balancers.retain(|_, balancer| {
            if balancer.mark_expired() {
                evicted.push(balancer.clone());
                false
            } else {
                true
            }
        });
        BALANCERS.fetch_sub(evicted.len(), Ordering::Relaxed);
        self.evictions.fetch_add(evicted.len() as u64, Ordering::Relaxed);
        for balancer in &evicted {
            tracing::debug!(key = %balancer.cache_key(), "unused balancer evicted");
            self.delete(balancer);
        }
        evicted.len()
    }

    /// Starts the ticker task if none runs and a tokio runtime is at hand.
    pub(super) fn ensure_ticker(&self) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let id = {
            let mut cache = lock(&self.cache);
            if cache.ticker.is_some() {
                return;
            }
            let id = TICKER_IDS.fetch_add(1, Ordering::Relaxed);
            cache.ticker = Some(id);
            id
        };
        TICKERS.fetch_add(1, Ordering::Relaxed);
        // An unshared factory's ticker owns it and never lets go, as
        // Kitex's watcher goroutine; a shared one's only watches it.
        let owner = if self.shared { None } else { self.me.upgrade() };
        let guard = TickerGuard { factory: self.me.clone(), id };
        // Spawned without the cache lock: a runtime that is shutting down
        // drops the task at once, and the guard's drop takes that lock.
        handle.spawn(run_ticker(guard, owner, self.opts));
    }

    /// Ends a shared factory's ticker when no target is left to refresh
    /// (Kitex's shared ticker stops when its last balancer is removed).
    fn stop_ticker_if_idle(&self, id: u64) -> bool {
        let mut cache = lock(&self.cache);
        if self.shared && cache.balancers.is_empty() && cache.ticker == Some(id) {
            cache.ticker = None;
            true
        } else {
            false
        }
    }

    /// The key this factory was created with.
    pub fn key(&self) -> &FactoryKey {
        &self.key
    }

    /// The (normalized) options.
    pub fn options(&self) -> Options {
        self.opts
    }

    /// Whether it is in the registry.
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// This factory's counts.
    pub fn stats(&self) -> FactoryStats {
        let (balancers, ticker_running) = {
            let cache = lock(&self.cache);
            (cache.balancers.len(), cache.ticker.is_some())
        };
        FactoryStats {
            key: self.key.clone(),
            shared: self.shared,
            balancers,
            hooks: lock(&self.hooks).len(),
            refreshes: self.refreshes.load(Ordering::Relaxed),
            events_formatted: self.events_formatted.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            ticks: self.ticks.load(Ordering::Relaxed),
            ticker_running,
        }
    }
}

impl Drop for BalancerFactory {
    fn drop(&mut self) {
        // Only unshared factories without a ticker ever get here.
        let balancers = self.cache.get_mut().unwrap_or_else(|e| e.into_inner()).balancers.len();
        let hooks = self.hooks.get_mut().unwrap_or_else(|e| e.into_inner()).len();
        BALANCERS.fetch_sub(balancers, Ordering::Relaxed);
        HOOKS.fetch_sub(hooks, Ordering::Relaxed);
        FACTORIES.fetch_sub(1, Ordering::Relaxed);
    }
}

impl fmt::Debug for BalancerFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BalancerFactory").field("key", &self.key.to_string()).field("stats", &self.stats()).finish()
    }
}

/// The ticker task: refreshes every `refresh_interval`, sweeps every
/// `expire_interval`.
async fn run_ticker(guard: TickerGuard, owner: Option<Arc<BalancerFactory>>, opts: Options) {
    let _owner = owner;
    let start = tokio::time::Instant::now();
    let mut interval = tokio::time::interval_at(start + opts.refresh_interval, opts.refresh_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sweep = start;
    loop {
        interval.tick().await;
        let Some(factory) = guard.factory.upgrade() else {
            return;
        };
        factory.ticks.fetch_add(1, Ordering::Relaxed);
        factory.refresh();
        if last_sweep.elapsed() >= opts.expire_interval {
            last_sweep = tokio::time::Instant::now();
            factory.sweep();
        }
        if factory.stop_ticker_if_idle(guard.id) {
            return;
        }
    }
}

/// Keeps the ticker counts true however the task ends (including its
/// runtime shutting down).
struct TickerGuard {
    factory: Weak<BalancerFactory>,
    id: u64,
}

impl Drop for TickerGuard {
    fn drop(&mut self) {
        TICKERS.fetch_sub(1, Ordering::Relaxed);
        if let Some(factory) = self.factory.upgrade() {
            let mut cache = lock(&factory.cache);
            if cache.ticker == Some(self.id) {
                cache.ticker = None;
            }
        }
    }
}

/// A client's registration on a factory, returned by
/// [`BalancerFactory::register_hooks`].
///
/// **Dropping a `HookHandle` does not deregister the hooks.** Only
/// [`HookHandle::remove`] does (`Client::close()` calls it). A client
/// dropped without being closed leaves its hooks, and its event queue,
/// registered on the process-global factory forever, and every refresh
/// formats one more instance list for it: the duplicate-clients leak.
#[must_use = "dropping a HookHandle without remove() leaves its hooks registered forever"]
pub struct HookHandle {
    factory: Arc<BalancerFactory>,
    index: u64,
    removed: AtomicBool,
}

impl HookHandle {
    /// Deregisters both hooks (Kitex's `Deregister*Hook` close callbacks).
    /// Returns `false` if they were already removed.
    pub fn remove(&self) -> bool {
        if self.removed.swap(true, Ordering::AcqRel) {
            return false;
        }
        let mut hooks = lock(&self.factory.hooks);
        if hooks.remove(self.index) {
            HOOKS.fetch_sub(1, Ordering::Relaxed);
        }
        true
    }

    /// Whether [`HookHandle::remove`] was called.
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    /// The registration index on the factory.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// The factory the hooks are registered on.
    pub fn factory(&self) -> &Arc<BalancerFactory> {
        &self.factory
    }
}

impl fmt::Debug for HookHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HookHandle")
            .field("factory", &self.factory.key.to_string())
            .field("index", &self.index)
            .field("removed", &self.is_removed())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::lbcache::fixtures::{instances, resolver, shared, wait_until, First};
    use crate::lbcache::{format_instances, registry_stats, WeightedRoundRobin};

    #[test]
    fn hooks_pile_up_when_handles_dropped_without_remove() {
        let r = resolver("t-hooks-pile", &[1, 2]);
        let queues: Vec<Arc<EventQueue>> = (0..10).map(|_| Arc::new(EventQueue::new())).collect();
        for queue in &queues {
            // A client created per call and never closed.
            let client_factory = shared(&r);
            drop(client_factory.register_hooks(queue.clone()));
        }
        let factory = shared(&r);
        assert_eq!(factory.stats().hooks, 10);
        assert!(registry_stats().hooks >= 10);
        // The factory keeps every queue alive.
        for queue in &queues {
            assert_eq!(Arc::strong_count(queue), 3);
        }
        factory.get("echo").unwrap();
        factory.refresh_now();
        assert!(queues.iter().all(|q| q.len() == 1));
    }

    #[test]
    fn remove_deregisters_hooks() {
        let r = resolver("t-hooks-remove", &[1]);
        let factory = shared(&r);
        let queue = Arc::new(EventQueue::new());
        let handles: Vec<HookHandle> = (0..5).map(|_| factory.register_hooks(queue.clone())).collect();
        assert_eq!(factory.stats().hooks, 5);
        assert_eq!(Arc::strong_count(&queue), 11);
        for handle in &handles {
            assert!(handle.remove());
            assert!(handle.is_removed());
            assert!(!handle.remove(), "remove is idempotent");
        }
        assert_eq!(factory.stats().hooks, 0);
        assert_eq!(Arc::strong_count(&queue), 1);
        factory.get("echo").unwrap();
        factory.refresh_now();
        assert!(queue.is_empty());
        assert_eq!(factory.stats().events_formatted, 0);
    }

    #[test]
    fn each_refresh_formats_one_copy_per_hook() {
        let r = resolver("t-refresh-copies", &[3, 1]);
        let factory = shared(&r);
        let queues: Vec<Arc<EventQueue>> = (0..4).map(|_| Arc::new(EventQueue::new())).collect();
        let handles: Vec<HookHandle> = queues.iter().map(|q| factory.register_hooks(q.clone())).collect();
        factory.get("echo").unwrap();
        let before = registry_stats().events_formatted;
        for _ in 0..3 {
            assert_eq!(factory.refresh_now(), 1);
        }
        let stats = factory.stats();
        assert_eq!(stats.refreshes, 3);
        assert_eq!(stats.events_formatted, 12);
        assert!(registry_stats().events_formatted >= before + 12);
        for queue in &queues {
            assert_eq!(queue.len(), 3);
            let newest = &queue.dump()[0];
            assert_eq!(newest.name, "rebalance");
            assert_eq!(newest.detail, format_instances("t-refresh-copies:echo", &instances(&[3, 1])));
        }
        // Each copy is its own allocation.
        let a = queues[0].dump();
        let b = queues[1].dump();
        assert_ne!(a[0].detail.as_ptr(), b[0].detail.as_ptr());
        handles.iter().for_each(|h| {
            h.remove();
        });
    }

    #[test]
    fn refresh_picks_up_changed_instances() {
        let r = resolver("t-refresh-change", &[1]);
        let factory = shared(&r);
        let balancer = factory.get("echo").unwrap();
        assert_eq!(balancer.instances().len(), 1);
        r.set("echo", instances(&[1, 1, 1]));
        assert_eq!(balancer.instances().len(), 1, "cached until the next refresh");
        factory.refresh_now();
        assert_eq!(balancer.instances().len(), 3);
        assert_eq!(balancer.refreshes(), 1);
        // A failing resolve keeps the last instances.
        r.remove("echo");
        assert_eq!(factory.refresh_now(), 0);
        assert_eq!(balancer.instances().len(), 3);
    }

    #[test]
    fn get_unknown_target_fails() {
        let r = resolver("t-unknown", &[1]);
        let factory = shared(&r);
        let err = factory.get("nope").unwrap_err();
        assert_eq!(err, LbError::UnknownTarget { resolver: "t-unknown".into(), target: "nope".into() });
        assert_eq!(factory.stats().balancers, 0);
    }

    #[test]
    fn expiry_evicts_unused_targets() {
        let r = resolver("t-expiry", &[1]);
        r.set("other", instances(&[1]));
        let factory = shared(&r);
        let queue = Arc::new(EventQueue::new());
        let hooks = factory.register_hooks(queue.clone());
        let used = factory.get("echo").unwrap();
        factory.get("other").unwrap();
        assert_eq!(factory.stats().balancers, 2);

        assert_eq!(factory.expire_now(), 0, "the first sweep only marks");
        used.pick().unwrap();
        assert_eq!(factory.expire_now(), 1, "the unused target goes");
        assert_eq!(factory.stats().balancers, 1);
        assert_eq!(factory.stats().evictions, 1);
        assert_eq!(queue.dump()[0].detail, "delete: t-expiry:other");

        assert_eq!(factory.expire_now(), 1, "no pick since the last sweep");
        assert_eq!(factory.stats().balancers, 0);

        // Used again: resolved again.
        let resolves = r.resolves();
        factory.get("echo").unwrap();
        assert_eq!(r.resolves(), resolves + 1);
        hooks.remove();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ticker_refreshes_and_stops_when_idle() {
        let r = resolver("t-ticker", &[1]);
        let opts = Options { refresh_interval: Duration::from_millis(5), expire_interval: Duration::from_millis(20) };
        let factory = BalancerFactory::get_or_create(r.clone(), Arc::new(WeightedRoundRobin), opts);
        let queue = Arc::new(EventQueue::new());
        let hooks = factory.register_hooks(queue.clone());
        assert!(!factory.stats().ticker_running, "a shared ticker starts on first use");
        factory.get("echo").unwrap();
        assert!(factory.stats().ticker_running);
        assert!(registry_stats().tickers >= 1);
        let balancer = factory.get("echo").unwrap();
        wait_until("three refreshes", || {
            balancer.pick(); // in use: not evicted yet
            factory.stats().refreshes >= 3
        })
        .await;
        assert!(queue.len() >= 3);
        // Nobody picks: the target expires and the shared ticker ends.
        wait_until("the ticker stops", || !factory.stats().ticker_running).await;
        assert_eq!(factory.stats().balancers, 0);
        assert!(queue.dump().iter().any(|e| e.name == "delete"));
        // Next use starts it again.
        factory.get("echo").unwrap();
        assert!(factory.stats().ticker_running);
        hooks.remove();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn custom_factory_ticker_never_stops() {
        let r = resolver("t-ticker-custom", &[1]);
        let opts = Options { refresh_interval: Duration::from_millis(5), expire_interval: Duration::from_millis(10) };
        let factory = BalancerFactory::get_or_create(r.clone(), Arc::new(First), opts);
        assert!(factory.stats().ticker_running, "started at creation inside a runtime");
        factory.get("echo").unwrap();
        wait_until("the target expires", || factory.stats().balancers == 0).await;
        let ticks = factory.stats().ticks;
        wait_until("more ticks", || factory.stats().ticks >= ticks + 3).await;
        assert!(factory.stats().ticker_running);
        // The task owns the factory: dropping ours does not free it.
        let weak = Arc::downgrade(&factory);
        drop(factory);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(weak.upgrade().is_some());
    }
}
