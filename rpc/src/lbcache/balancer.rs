//! Picking: the [`Loadbalancer`] policies and the [`Balancer`] that caches
//! one target's instances and the policy's state.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use super::resolver::Instance;
use super::sync::lock;

/// A picking policy. One policy object serves every [`Balancer`] of a
/// factory; per-target state lives in the [`Balancer`].
pub trait Loadbalancer: Send + Sync {
    /// Identifies the policy; part of the [`FactoryKey`](super::FactoryKey).
    fn name(&self) -> &str;

    /// Picks an instance of `balancer`'s current list; `None` when no
    /// instance can take traffic.
    fn pick(&self, balancer: &Balancer) -> Option<Instance>;

    /// Whether factories using this policy may be shared between clients.
    ///
    /// `false` by default: as in Kitex, a custom policy might keep state of
    /// its own, so its factory is never put in the registry (and its ticker
    /// never stops). The built-in policies return `true`.
    fn shareable(&self) -> bool {
        false
    }
}

/// Smooth weighted round robin (nginx's algorithm, Kitex's default
/// policy): with weights 5, 1, 1 the picks go `a a b a c a a`, then repeat.
#[derive(Clone, Copy, Debug, Default)]
pub struct WeightedRoundRobin;

impl Loadbalancer for WeightedRoundRobin {
    fn name(&self) -> &str {
        "weighted_round_robin"
    }

    fn pick(&self, balancer: &Balancer) -> Option<Instance> {
        let mut guard = lock(&balancer.state);
        let PickState { instances, current } = &mut *guard;
        let total: i64 = instances.iter().map(|i| i64::from(i.weight)).sum();
        let mut best: Option<usize> = None;
        for (i, instance) in instances.iter().enumerate() {
            if instance.weight == 0 {
                continue;
            }
            current[i] += i64::from(instance.weight);
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        let best = best?;
        current[best] -= total;
        Some(instances[best].clone())
    }

    fn shareable(&self) -> bool {
        true
    }
}

/// Weighted random: each pick draws an instance with probability
/// proportional to its weight.
#[derive(Clone, Copy, Debug, Default)]
pub struct WeightedRandom;

impl Loadbalancer for WeightedRandom {
    fn name(&self) -> &str {
        "weighted_random"
    }

    fn pick(&self, balancer: &Balancer) -> Option<Instance> {
        let instances = balancer.instances();
        let total: u64 = instances.iter().map(|i| u64::from(i.weight)).sum();
        if total == 0 {
            return None;
        }
        let mut r = next_random() % total;
        for instance in instances.iter() {
            let w = u64::from(instance.weight);
            if r < w {
                return Some(instance.clone());
            }
            r -= w;
        }
        None
    }

    fn shareable(&self) -> bool {
        true
    }
}

/// A per-thread xorshift64 generator, seeded from the clock and a global
/// sequence; good enough to spread picks, not for anything secret.
fn next_random() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(random_seed());
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

fn random_seed() -> u64 {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    // splitmix64 finaliser, so that close seeds give unrelated streams.
    let mut z = nanos ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) | 1 // xorshift needs a non-zero state
}

// ---------------------------------------------------------------------------
// Balancer

/// The cached resolution of one target: its instance list and the picker's
/// state (Kitex's `lbcache.Balancer`).
pub struct Balancer {
    target: String,
    cache_key: String,
    lb: Arc<dyn Loadbalancer>,
    state: Mutex<PickState>,
    /// Kitex's `expire` flag: set by a sweep, cleared by use.
    expire: AtomicBool,
    sequence: AtomicU64,
    refreshes: AtomicU64,
}

struct PickState {
    instances: Arc<[Instance]>,
    /// Smooth weighted round robin's current weights, one per instance.
    current: Vec<i64>,
}

impl Balancer {
    /// A balancer for `target` of `resolver`, with the instances just
    /// resolved.
    pub(super) fn new(target: &str, resolver: &str, lb: Arc<dyn Loadbalancer>, instances: Vec<Instance>) -> Self {
        let current = vec![0; instances.len()];
        Balancer {
            target: target.to_owned(),
            cache_key: format!("{resolver}:{target}"),
            lb,
            state: Mutex::new(PickState { instances: instances.into(), current }),
            expire: AtomicBool::new(false),
            sequence: AtomicU64::new(0),
            refreshes: AtomicU64::new(0),
        }
    }

    /// Picks an instance with the factory's policy, and marks the balancer
    /// as used (so that the next sweep does not evict it).
    pub fn pick(&self) -> Option<Instance> {
        self.touch();
        self.lb.pick(self)
    }

    /// The target this balancer resolves.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// `resolver:target`, Kitex's result cache key.
    pub fn cache_key(&self) -> &str {
        &self.cache_key
    }

    /// The instance list of the last successful resolve.
    pub fn instances(&self) -> Arc<[Instance]> {
        lock(&self.state).instances.clone()
    }

    /// A counter that increases by one per call, for custom round-robin
    /// policies.
    pub fn next_sequence(&self) -> u64 {
        self.sequence.fetch_add(1, Ordering::Relaxed)
    }

    /// How many times this target was re-resolved.
    pub fn refreshes(&self) -> u64 {
        self.refreshes.load(Ordering::Relaxed)
    }

    /// Marks the balancer as used: the next sweep does not evict it.
    pub(super) fn touch(&self) {
        self.expire.store(false, Ordering::Relaxed);
    }

    /// Marks the balancer for expiry, as a sweep does; returns whether it
    /// was already marked (unused since the previous sweep).
    pub(super) fn mark_expired(&self) -> bool {
        self.expire.swap(true, Ordering::Relaxed)
    }

    /// Stores the instances of a refresh and counts it. The picker's state
    /// starts over only if the list changed.
    pub(super) fn store_refreshed(&self, instances: Arc<[Instance]>) {
        {
            let mut state = lock(&self.state);
            if state.instances != instances {
                state.current = vec![0; instances.len()];
                state.instances = instances;
            }
        }
        self.refreshes.fetch_add(1, Ordering::Relaxed);
    }
}

impl fmt::Debug for Balancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balancer")
            .field("cache_key", &self.cache_key)
            .field("policy", &self.lb.name())
            .field("instances", &self.instances().len())
            .field("expire", &self.expire.load(Ordering::Relaxed))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::lbcache::fixtures::{instances, shared};
    use crate::lbcache::{BalancerFactory, Options, StaticResolver};

    #[test]
    fn weighted_round_robin_is_smooth_and_exact() {
        let r = Arc::new(StaticResolver::new("t-wrr").with_target("echo", instances(&[5, 1, 1])));
        let balancer = shared(&r).get("echo").unwrap();
        let order: Vec<u16> = (0..14).map(|_| balancer.pick().unwrap().addr.port() - 9000).collect();
        assert_eq!(order, [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]);

        r.set("echo", instances(&[3, 0, 2]));
        let factory = shared(&r);
        factory.refresh_now();
        let mut counts = [0; 3];
        for _ in 0..500 {
            counts[usize::from(balancer.pick().unwrap().addr.port() - 9000)] += 1;
        }
        assert_eq!(counts, [300, 0, 200]);

        r.set("echo", instances(&[0, 0]));
        factory.refresh_now();
        assert_eq!(balancer.pick(), None);
        r.set("echo", Vec::new());
        factory.refresh_now();
        assert_eq!(balancer.pick(), None);
    }

    #[test]
    fn weighted_random_respects_weights() {
        let r = Arc::new(StaticResolver::new("t-wrand").with_target("echo", instances(&[3, 1, 0])));
        let factory = BalancerFactory::get_or_create(r.clone(), Arc::new(WeightedRandom), Options::default());
        let balancer = factory.get("echo").unwrap();
        let mut counts = [0u32; 3];
        for _ in 0..40_000 {
            counts[usize::from(balancer.pick().unwrap().addr.port() - 9000)] += 1;
        }
        assert_eq!(counts[2], 0, "weight 0 is never picked");
        let share = f64::from(counts[0]) / 40_000.0;
        assert!((0.70..0.80).contains(&share), "share of weight 3 of 4: {share}");
        r.set("echo", instances(&[0]));
        factory.refresh_now();
        assert_eq!(balancer.pick(), None);
    }
}
