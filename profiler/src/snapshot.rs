//! [`Snapshot`]: the sampled counters copied out of the tables, unsymbolized.
//!
//! Plain data: the profiler fills it, the encoder (`encode/heap.rs`) turns
//! it into a [`Profile`](crate::Profile); this module knows neither.

use std::time::SystemTime;

/// What the profiler sampled, at one moment: one [`HeapRecord`] per call
/// stack and block size, with raw (unscaled) sample counts, like Go's
/// `runtime.MemProfile` records.
///
/// Taking a snapshot is cheap; symbols are looked up only when it becomes a
/// [`Profile`](crate::Profile) ([`Snapshot::to_profile`]).
#[derive(Debug, Clone)]
pub struct Snapshot {
    rate: usize,
    time: SystemTime,
    records: Vec<HeapRecord>,
    dropped: Vec<(&'static str, u64)>,
}

/// Sampled counts of one call stack and block size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeapRecord {
    /// Return addresses, innermost first, as captured (the profiler's own
    /// frames are still there; profiles trim them).
    pub frames: Vec<usize>,
    /// Size in bytes of each block.
    pub size: usize,
    /// Sampled blocks allocated.
    pub alloc_objects: u64,
    /// Their bytes.
    pub alloc_bytes: u64,
    /// Sampled blocks freed.
    pub free_objects: u64,
    /// Their bytes.
    pub free_bytes: u64,
}

impl HeapRecord {
    /// Sampled blocks still live.
    pub fn inuse_objects(&self) -> u64 {
        self.alloc_objects.saturating_sub(self.free_objects)
    }

    /// Their bytes.
    pub fn inuse_bytes(&self) -> u64 {
        self.alloc_bytes.saturating_sub(self.free_bytes)
    }
}

impl Snapshot {
    /// A snapshot of `records` sampled at `rate`, taken now.
    pub fn new(rate: usize, records: Vec<HeapRecord>) -> Self {
        Snapshot { rate, time: SystemTime::now(), records, dropped: Vec::new() }
    }

    /// The same snapshot, saying that samples were dropped before it was
    /// taken: `(cause, count)`, such as `("stack table full", 12)`. Its
    /// profiles carry one comment per cause: `dropped 12 samples: stack
    /// table full`.
    pub fn with_dropped(mut self, dropped: Vec<(&'static str, u64)>) -> Self {
        self.dropped = dropped;
        self
    }

    /// The samples dropped since the profiler started, by cause (only
    /// causes with drops).
    pub fn dropped(&self) -> &[(&'static str, u64)] {
        &self.dropped
    }

    /// The sampling rate in force when the snapshot was taken.
    pub fn rate(&self) -> usize {
        self.rate
    }

    /// When the snapshot was taken.
    pub fn time(&self) -> SystemTime {
        self.time
    }

    /// The records, in no particular order.
    pub fn records(&self) -> &[HeapRecord] {
        &self.records
    }
}
