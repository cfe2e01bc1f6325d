//! The balancer cache: Kitex's `pkg/loadbalance/lbcache`, with the hooks
//! that make duplicate clients leak.
//!
//! A [`BalancerFactory`] combines a [`Resolver`] (service discovery) with a
//! [`Loadbalancer`] (the picking policy) and caches one [`Balancer`] per
//! target: the resolved instance list and the picker's state. Factories are
//! **process-global**, kept in a registry keyed by resolver name, balancer
//! name, refresh interval and expire interval ([`FactoryKey`]), so every
//! client with the same settings shares one factory. Each factory runs one
//! ticker task that re-resolves its cached targets every `refresh_interval`
//! and evicts targets that nobody picked from for an `expire_interval`.
//!
//! Every client registers its hooks on the shared factory
//! ([`BalancerFactory::register_hooks`]) and removes them when it is closed
//! ([`HookHandle::remove`]). On every refresh of a target, every registered
//! hook formats a copy of the new instance list into its client's own
//! [`EventQueue`] (a ring of [`EVENT_QUEUE_CAPACITY`] events).
//!
//! ```
//! use std::sync::Arc;
//! use rpc::lbcache::{BalancerFactory, EventQueue, Instance, Options, StaticResolver, WeightedRoundRobin};
//!
//! let resolver = Arc::new(
//!     StaticResolver::new("doc-example")
//!         .with_target("echo", vec![Instance::new("127.0.0.1:8888".parse().unwrap(), 10)]),
//! );
//! let factory = BalancerFactory::get_or_create(resolver, Arc::new(WeightedRoundRobin), Options::default());
//!
//! // What a client does when it is created ...
//! let queue = Arc::new(EventQueue::new());
//! let hooks = factory.register_hooks(queue.clone());
//! // ... on each call ...
//! let balancer = factory.get("echo").unwrap();
//! assert_eq!(balancer.pick().unwrap().addr.port(), 8888);
//! // ... what the shared ticker does every 5 s ...
//! factory.refresh_now();
//! assert_eq!(queue.len(), 1);
//! assert!(queue.dump()[0].detail.starts_with("rebalance: doc-example:echo"));
//! // ... and what `Client::close()` does.
//! hooks.remove();
//! factory.refresh_now();
//! assert_eq!(queue.len(), 1);
//! ```
//!
//! # The duplicate-clients leak
//!
//! The guide's "High Memory Usage of lbcache": a client is meant to be
//! created once and reused. A program that creates a new client per call
//! (and never closes it) registers one more hook on the shared factory each
//! time. A [`HookHandle`] dropped without [`HookHandle::remove`] leaves its
//! hook registered **forever**: the factory lives in the global registry, the
//! hook keeps the client's [`EventQueue`] alive, and each refresh formats one
//! more copy of the instance list per leaked client.
//!
//! ```text
//!   registry ──► BalancerFactory{resolver|balancer|{5s 15s}}
//!                  ├─ balancers: "echo" ─► [instances, picker state]
//!                  └─ hooks: #0 ─► EventQueue (client 0, up to 200 events)
//!                            #1 ─► EventQueue (client 1, up to 200 events)
//!                            ...   one per client ever created and not closed
//! ```
//!
//! A heap profile of the leak reads, from the root:
//! `lbcache::run_ticker` → [`BalancerFactory::refresh`] →
//! `BalancerFactory::rebalance` → [`EventQueue::on_rebalance`] →
//! [`format_instances`]. [`registry_stats`] shows the hooks piling up.
//!
//! A factory whose balancer is not [`Loadbalancer::shareable`] (a custom
//! one) is not put in the registry: each client gets its own factory, whose
//! ticker task holds it and never stops, as Kitex's `watcher` goroutine
//! never does. Creating such clients repeatedly leaks factories and tasks.
//!
//! # Differences from Kitex
//!
//! - Kitex calls the rebalance hooks only when the resolver reports a
//!   change; here every refresh does, so that the leak shows at a steady
//!   rate with a static resolver.
//! - Kitex has one shared refresh ticker per refresh interval and a
//!   separate expiry watcher per factory; here one task per factory does
//!   both. Expiry is Kitex's mark-and-sweep: a sweep marks each balancer,
//!   [`Balancer::pick`] (or [`BalancerFactory::get`]) clears the mark, and a
//!   balancer still marked at the next sweep is evicted.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Refresh interval when [`Options`] leaves it at zero (Kitex's default).
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(5);
/// Expire interval when [`Options`] leaves it at zero (Kitex's default).
pub const DEFAULT_EXPIRE_INTERVAL: Duration = Duration::from_secs(15);
/// Events an [`EventQueue`] keeps (Kitex's `event.MaxEventNum`).
pub const EVENT_QUEUE_CAPACITY: usize = 200;

// ---------------------------------------------------------------------------
// Instances, resolvers, errors

/// One service instance as discovery reports it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Instance {
    /// Where the instance listens.
    pub addr: SocketAddr,
    /// Relative share of the traffic; 0 means never picked.
    pub weight: u32,
    /// Discovery tags (`idc`, `cluster`, ...), in the resolver's order.
    pub tags: Vec<(String, String)>,
}

impl Instance {
    /// An instance without tags.
    pub fn new(addr: SocketAddr, weight: u32) -> Self {
        Instance { addr, weight, tags: Vec::new() }
    }

    /// Adds a tag.
    pub fn with_tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.push((key.into(), value.into()));
        self
    }
}

impl fmt::Display for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} weight={} tags={{", self.addr, self.weight)?;
        for (i, (k, v)) in self.tags.iter().enumerate() {
            if i > 0 {
                f.write_char(',')?;
            }
            write!(f, "{k}={v}")?;
        }
        f.write_char('}')
    }
}

/// Why a target could not be resolved.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LbError {
    /// The resolver knows no such target.
    #[error("resolver {resolver}: unknown target {target:?}")]
    UnknownTarget {
        /// The resolver's name.
        resolver: String,
        /// The target asked for.
        target: String,
    },
    /// The resolver failed.
    #[error("resolver {resolver} failed to resolve {target:?}: {reason}")]
    Resolve {
        /// The resolver's name.
        resolver: String,
        /// The target asked for.
        target: String,
        /// What went wrong.
        reason: String,
    },
}

/// Service discovery: turns a target (a service name) into instances.
pub trait Resolver: Send + Sync {
    /// Identifies the resolver; part of the [`FactoryKey`].
    fn name(&self) -> &str;
    /// The current instances of `target`.
    fn resolve(&self, target: &str) -> Result<Vec<Instance>, LbError>;
}

/// A resolver with fixed instance lists per target, which tests and
/// scenarios can change at any time ([`StaticResolver::set`]).
///
/// ```
/// use rpc::lbcache::{Instance, Resolver, StaticResolver};
/// let r = StaticResolver::new("static").with_target("echo", vec![Instance::new("127.0.0.1:1".parse().unwrap(), 1)]);
/// assert_eq!(r.resolve("echo").unwrap().len(), 1);
/// assert!(r.resolve("other").is_err());
/// ```
#[derive(Debug)]
pub struct StaticResolver {
    name: String,
    targets: Mutex<HashMap<String, Vec<Instance>>>,
    resolves: AtomicU64,
}

impl StaticResolver {
    /// A resolver that knows no target yet.
    pub fn new(name: impl Into<String>) -> Self {
        StaticResolver { name: name.into(), targets: Mutex::new(HashMap::new()), resolves: AtomicU64::new(0) }
    }

    /// Adds (or replaces) a target; builder form of [`StaticResolver::set`].
    pub fn with_target(self, target: impl Into<String>, instances: Vec<Instance>) -> Self {
        self.set(target, instances);
        self
    }

    /// Sets the instances of `target`; the next refresh picks them up.
    pub fn set(&self, target: impl Into<String>, instances: Vec<Instance>) {
        lock(&self.targets).insert(target.into(), instances);
    }

    /// Forgets `target`; resolving it fails from now on.
    pub fn remove(&self, target: &str) -> Option<Vec<Instance>> {
        lock(&self.targets).remove(target)
    }

    /// How many times [`Resolver::resolve`] was called.
    pub fn resolves(&self) -> u64 {
        self.resolves.load(Ordering::Relaxed)
    }
}

impl Resolver for StaticResolver {
    fn name(&self) -> &str {
        &self.name
    }

    fn resolve(&self, target: &str) -> Result<Vec<Instance>, LbError> {
        self.resolves.fetch_add(1, Ordering::Relaxed);
        lock(&self.targets)
            .get(target)
            .cloned()
            .ok_or_else(|| LbError::UnknownTarget { resolver: self.name.clone(), target: target.to_owned() })
    }
}

// ---------------------------------------------------------------------------
// Load balancers

/// A picking policy. One policy object serves every [`Balancer`] of a
/// factory; per-target state lives in the [`Balancer`].
pub trait Loadbalancer: Send + Sync {
    /// Identifies the policy; part of the [`FactoryKey`].
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
    fn new(target: &str, resolver: &str, lb: Arc<dyn Loadbalancer>, instances: Vec<Instance>) -> Self {
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

    fn touch(&self) {
        self.expire.store(false, Ordering::Relaxed);
    }

    fn replace(&self, instances: Arc<[Instance]>) {
        let mut state = lock(&self.state);
        if state.instances != instances {
            state.current = vec![0; instances.len()];
            state.instances = instances;
        }
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

// ---------------------------------------------------------------------------
// Event queue

/// One event of a client's [`EventQueue`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// `"rebalance"` or `"delete"`, as Kitex's discovery event names.
    pub name: &'static str,
    /// When it was pushed.
    pub at: SystemTime,
    /// The formatted text ([`format_instances`] for a rebalance).
    pub detail: String,
}

/// A client's bounded ring of events (Kitex's `event.Queue`): it keeps the
/// last [`EVENT_QUEUE_CAPACITY`] events and drops the oldest.
///
/// Bounded per client; what grows is the number of queues that registered
/// hooks keep alive.
pub struct EventQueue {
    ring: Mutex<Ring>,
    pushed: AtomicU64,
}

struct Ring {
    slots: Vec<Option<Event>>,
    tail: usize,
    bytes: usize,
}

impl EventQueue {
    /// A queue of [`EVENT_QUEUE_CAPACITY`] events.
    pub fn new() -> Self {
        Self::with_capacity(EVENT_QUEUE_CAPACITY)
    }

    /// A queue of `capacity` events (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        let slots = (0..capacity.max(1)).map(|_| None).collect();
        EventQueue { ring: Mutex::new(Ring { slots, tail: 0, bytes: 0 }), pushed: AtomicU64::new(0) }
    }

    /// Adds an event, dropping the oldest when the ring is full.
    pub fn push(&self, event: Event) {
        let added = event.detail.capacity();
        QUEUED_BYTES.fetch_add(added, Ordering::Relaxed);
        let old = {
            let mut ring = lock(&self.ring);
            let tail = ring.tail;
            let old = ring.slots[tail].replace(event);
            ring.tail = (tail + 1) % ring.slots.len();
            let removed = old.as_ref().map_or(0, |e| e.detail.capacity());
            ring.bytes = ring.bytes + added - removed;
            old
        };
        if let Some(old) = old {
            QUEUED_BYTES.fetch_sub(old.detail.capacity(), Ordering::Relaxed);
        }
        self.pushed.fetch_add(1, Ordering::Relaxed);
    }

    /// The rebalance hook a client registers: formats a copy of the
    /// instance list and queues it.
    #[inline(never)]
    pub fn on_rebalance(&self, cache_key: &str, instances: &[Instance]) {
        let detail = format_instances(cache_key, instances);
        EVENTS_FORMATTED.fetch_add(1, Ordering::Relaxed);
        self.push(Event { name: "rebalance", at: SystemTime::now(), detail });
    }

    /// The delete hook a client registers: notes that a target's balancer
    /// was evicted.
    #[inline(never)]
    pub fn on_delete(&self, cache_key: &str) {
        self.push(Event { name: "delete", at: SystemTime::now(), detail: format!("delete: {cache_key}") });
    }

    /// Events held (at most the capacity).
    pub fn len(&self) -> usize {
        lock(&self.ring).slots.iter().filter(|s| s.is_some()).count()
    }

    /// Whether no event was ever pushed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many events it holds at most.
    pub fn capacity(&self) -> usize {
        lock(&self.ring).slots.len()
    }

    /// Heap bytes held by the queued events' text.
    pub fn bytes(&self) -> usize {
        lock(&self.ring).bytes
    }

    /// Events pushed since creation, including those dropped since.
    pub fn pushed(&self) -> u64 {
        self.pushed.load(Ordering::Relaxed)
    }

    /// The events held, newest first (as Kitex's `Dump`).
    pub fn dump(&self) -> Vec<Event> {
        let ring = lock(&self.ring);
        let n = ring.slots.len();
        (1..=n).map_while(|back| ring.slots[(ring.tail + n - back) % n].clone()).collect()
    }
}

impl Default for EventQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for EventQueue {
    fn drop(&mut self) {
        let bytes = self.ring.get_mut().unwrap_or_else(|e| e.into_inner()).bytes;
        QUEUED_BYTES.fetch_sub(bytes, Ordering::Relaxed);
    }
}

impl fmt::Debug for EventQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventQueue")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .field("bytes", &self.bytes())
            .field("pushed", &self.pushed())
            .finish()
    }
}

/// Formats an instance list the way a rebalance event records it: a header
/// line, then one line per instance.
///
/// ```
/// use rpc::lbcache::{format_instances, Instance};
/// let text = format_instances("r:echo", &[Instance::new("127.0.0.1:1".parse().unwrap(), 5).with_tag("idc", "a")]);
/// assert_eq!(text, "rebalance: r:echo (1 instances)\n  127.0.0.1:1 weight=5 tags={idc=a}\n");
/// ```
#[inline(never)]
pub fn format_instances(cache_key: &str, instances: &[Instance]) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = writeln!(out, "rebalance: {cache_key} ({} instances)", instances.len());
    for instance in instances {
        let _ = writeln!(out, "  {instance}");
    }
    out
}

// ---------------------------------------------------------------------------
// Factory and registry

/// Factory settings (Kitex's `lbcache.Options`); part of the [`FactoryKey`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Options {
    /// How often cached targets are re-resolved (0 means the default, 5 s).
    pub refresh_interval: Duration,
    /// How long an unused target stays cached, at least (0 means the
    /// default, 15 s); see the module doc for the mark-and-sweep.
    pub expire_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options { refresh_interval: DEFAULT_REFRESH_INTERVAL, expire_interval: DEFAULT_EXPIRE_INTERVAL }
    }
}

impl Options {
    /// Zero intervals replaced by the defaults (Kitex's `Options.check`).
    pub fn normalized(self) -> Self {
        Options {
            refresh_interval: if self.refresh_interval.is_zero() {
                DEFAULT_REFRESH_INTERVAL
            } else {
                self.refresh_interval
            },
            expire_interval: if self.expire_interval.is_zero() {
                DEFAULT_EXPIRE_INTERVAL
            } else {
                self.expire_interval
            },
        }
    }
}

/// What identifies a shared factory in the registry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FactoryKey {
    /// [`Resolver::name`].
    pub resolver: String,
    /// [`Loadbalancer::name`].
    pub balancer: String,
    /// [`Options::refresh_interval`].
    pub refresh_interval: Duration,
    /// [`Options::expire_interval`].
    pub expire_interval: Duration,
}

impl fmt::Display for FactoryKey {
    /// Kitex's cache key: `resolver|balancer|{5s 15s}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}|{}|{{{:?} {:?}}}", self.resolver, self.balancer, self.refresh_interval, self.expire_interval)
    }
}

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

static FACTORIES: AtomicUsize = AtomicUsize::new(0);
static BALANCERS: AtomicUsize = AtomicUsize::new(0);
static HOOKS: AtomicUsize = AtomicUsize::new(0);
static TICKERS: AtomicUsize = AtomicUsize::new(0);
static REFRESHES: AtomicU64 = AtomicU64::new(0);
static EVENTS_FORMATTED: AtomicU64 = AtomicU64::new(0);
static QUEUED_BYTES: AtomicUsize = AtomicUsize::new(0);
static TICKER_IDS: AtomicU64 = AtomicU64::new(1);

/// Kitex's `balancerFactories`: shared factories, never removed.
static REGISTRY: LazyLock<Mutex<HashMap<FactoryKey, Arc<BalancerFactory>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

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

/// Gets or creates balancers per target, and refreshes them (Kitex's
/// `lbcache.BalancerFactory`). See the module doc.
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

/// Kitex's `hookableRebalancer`: hook tables indexed by registration.
struct Hooks {
    next: u64,
    rebalance: BTreeMap<u64, Arc<EventQueue>>,
    delete: BTreeMap<u64, Arc<EventQueue>>,
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

    fn create(
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
            hooks: Mutex::new(Hooks { next: 0, rebalance: BTreeMap::new(), delete: BTreeMap::new() }),
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
        let index = {
            let mut hooks = lock(&self.hooks);
            let index = hooks.next;
            hooks.next += 1;
            hooks.rebalance.insert(index, queue.clone());
            hooks.delete.insert(index, queue);
            index
        };
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
            match self.resolver.resolve(&balancer.target) {
                Ok(instances) => {
                    let instances: Arc<[Instance]> = instances.into();
                    balancer.replace(instances.clone());
                    balancer.refreshes.fetch_add(1, Ordering::Relaxed);
                    self.refreshes.fetch_add(1, Ordering::Relaxed);
                    REFRESHES.fetch_add(1, Ordering::Relaxed);
                    self.rebalance(balancer, &instances);
                    refreshed += 1;
                }
                Err(e) => {
                    tracing::warn!(key = %balancer.cache_key, error = %e, "resolver refresh failed, keeping instances");
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
        for queue in hooks.rebalance.values() {
            queue.on_rebalance(&balancer.cache_key, instances);
        }
        self.events_formatted.fetch_add(hooks.rebalance.len() as u64, Ordering::Relaxed);
    }

    /// Calls every registered delete hook for an evicted balancer.
    #[inline(never)]
    fn delete(&self, balancer: &Balancer) {
        let hooks = lock(&self.hooks);
        for queue in hooks.delete.values() {
            queue.on_delete(&balancer.cache_key);
        }
    }

    /// Kitex's `watcher` pass: mark, or evict what was already marked.
    fn sweep(&self) -> usize {
        let mut evicted = Vec::new();
        lock(&self.cache).balancers.retain(|_, balancer| {
            if balancer.expire.swap(true, Ordering::Relaxed) {
                evicted.push(balancer.clone());
                false
            } else {
                true
            }
        });
        BALANCERS.fetch_sub(evicted.len(), Ordering::Relaxed);
        self.evictions.fetch_add(evicted.len() as u64, Ordering::Relaxed);
        for balancer in &evicted {
            tracing::debug!(key = %balancer.cache_key, "unused balancer evicted");
            self.delete(balancer);
        }
        evicted.len()
    }

    /// Starts the ticker task if none runs and a tokio runtime is at hand.
    fn ensure_ticker(&self) {
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
            hooks: lock(&self.hooks).rebalance.len(),
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
        let hooks = self.hooks.get_mut().unwrap_or_else(|e| e.into_inner()).rebalance.len();
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
        hooks.delete.remove(&self.index);
        if hooks.rebalance.remove(&self.index).is_some() {
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

/// Locks, ignoring poisoning: every critical section here leaves the data
/// consistent, so a panic elsewhere does not make it unusable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn instances(weights: &[u32]) -> Vec<Instance> {
        weights.iter().enumerate().map(|(i, &w)| Instance::new(addr(9000 + i as u16), w)).collect()
    }

    fn resolver(name: &str, weights: &[u32]) -> Arc<StaticResolver> {
        Arc::new(StaticResolver::new(name).with_target("echo", instances(weights)))
    }

    fn shared(resolver: &Arc<StaticResolver>) -> Arc<BalancerFactory> {
        BalancerFactory::get_or_create(resolver.clone(), Arc::new(WeightedRoundRobin), Options::default())
    }

    /// A policy that is not shareable, as a user's custom one.
    #[derive(Debug)]
    struct First;
    impl Loadbalancer for First {
        fn name(&self) -> &str {
            "first"
        }
        fn pick(&self, balancer: &Balancer) -> Option<Instance> {
            balancer.instances().first().cloned()
        }
    }

    async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(std::time::Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

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
    fn event_queue_bounded_at_200() {
        let queue = EventQueue::new();
        assert_eq!(queue.capacity(), EVENT_QUEUE_CAPACITY);
        let list = instances(&[1, 2, 3]);
        for i in 0..EVENT_QUEUE_CAPACITY {
            queue.on_rebalance(&format!("r:{i:04}"), &list);
        }
        let full = queue.bytes();
        for i in EVENT_QUEUE_CAPACITY..EVENT_QUEUE_CAPACITY + 50 {
            queue.on_rebalance(&format!("r:{i:04}"), &list);
        }
        assert_eq!(queue.len(), 200);
        assert_eq!(queue.pushed(), 250);
        assert_eq!(queue.bytes(), full, "the oldest events' text was freed");
        let dump = queue.dump();
        assert_eq!(dump.len(), 200);
        assert!(dump[0].detail.starts_with("rebalance: r:0249 "), "newest first");
        assert!(dump[199].detail.starts_with("rebalance: r:0050 "), "the 50 oldest were dropped");
        assert!(full >= dump.iter().map(|e| e.detail.len()).sum::<usize>());
    }

    #[test]
    fn event_queue_dump_before_wrapping() {
        let queue = EventQueue::with_capacity(4);
        assert!(queue.is_empty());
        queue.on_delete("r:a");
        queue.on_delete("r:b");
        let names: Vec<String> = queue.dump().into_iter().map(|e| e.detail).collect();
        assert_eq!(names, ["delete: r:b", "delete: r:a"]);
    }

    #[test]
    fn format_instances_one_line_per_instance() {
        let list =
            vec![Instance::new(addr(1), 10).with_tag("idc", "a").with_tag("env", "prod"), Instance::new(addr(2), 0)];
        assert_eq!(
            format_instances("res:echo", &list),
            "rebalance: res:echo (2 instances)\n  127.0.0.1:1 weight=10 tags={idc=a,env=prod}\n  127.0.0.1:2 weight=0 tags={}\n"
        );
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

    #[test]
    fn queued_bytes_released_with_queue() {
        let queue = EventQueue::new();
        queue.on_rebalance("r:x", &instances(&[1; 8]));
        let bytes = queue.bytes();
        assert!(bytes > 8 * 20);
        assert!(registry_stats().queued_bytes >= bytes);
        drop(queue);
    }
}
