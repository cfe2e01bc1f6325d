//! What a client registers on a factory: its [`EventQueue`] (the bounded
//! ring its rebalance and delete hooks push into), [`format_instances`]
//! (the copy of the instance list each rebalance event holds), and the
//! factory's table of registered hooks.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::counters::{EVENTS_FORMATTED, QUEUED_BYTES};
use super::resolver::Instance;
use super::sync::lock;

/// Events an [`EventQueue`] keeps (Kitex's `event.MaxEventNum`).
pub const EVENT_QUEUE_CAPACITY: usize = 200;

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

/// Kitex's `hookableRebalancer`: a factory's hook tables, indexed by
/// registration. Each client registers one rebalance and one delete hook,
/// both pushing into its [`EventQueue`].
pub(super) struct Hooks {
    next: u64,
    rebalance: BTreeMap<u64, Arc<EventQueue>>,
    delete: BTreeMap<u64, Arc<EventQueue>>,
}

impl Hooks {
    /// No hook registered yet.
    pub(super) fn new() -> Self {
        Hooks { next: 0, rebalance: BTreeMap::new(), delete: BTreeMap::new() }
    }

    /// Registers both hooks pushing into `queue`; returns their index.
    pub(super) fn register(&mut self, queue: Arc<EventQueue>) -> u64 {
        let index = self.next;
        self.next += 1;
        self.rebalance.insert(index, queue.clone());
        self.delete.insert(index, queue);
        index
    }

    /// Deregisters both hooks of `index`; returns whether its rebalance
    /// hook was still registered.
    pub(super) fn remove(&mut self, index: u64) -> bool {
        self.delete.remove(&index);
        self.rebalance.remove(&index).is_some()
    }

    /// The queues of the registered rebalance hooks, in registration order.
    pub(super) fn rebalance(&self) -> impl ExactSizeIterator<Item = &Arc<EventQueue>> {
        self.rebalance.values()
    }

    /// The queues of the registered delete hooks, in registration order.
    pub(super) fn delete(&self) -> impl Iterator<Item = &Arc<EventQueue>> {
        self.delete.values()
    }

    /// Registered hook pairs.
    pub(super) fn len(&self) -> usize {
        self.rebalance.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lbcache::fixtures::{addr, instances};
    use crate::lbcache::registry_stats;

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
    fn queued_bytes_released_with_queue() {
        let queue = EventQueue::new();
        queue.on_rebalance("r:x", &instances(&[1; 8]));
        let bytes = queue.bytes();
        assert!(bytes > 8 * 20);
        assert!(registry_stats().queued_bytes >= bytes);
        drop(queue);
    }
}
