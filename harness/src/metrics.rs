//! The figures `/metrics` serves, one row each: the name as served, its
//! help, its kind and the [`Figures`] field (the `metrics.jsonl` name) it
//! comes from. The admin listener encodes from this table and the scraper
//! reads back through it, so each name is written once.
//!
//! Names are the sample names a scraper sees: a counter's ends in `_total`,
//! which the Prometheus encoder adds to the family name it is given
//! ([`Metric::family`]).

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::probe::Figures;

/// Prometheus metric kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A value now (encoded as a float).
    Gauge,
    /// A count since start (encoded as a whole number).
    Counter,
}

/// One figure of `/metrics`.
#[derive(Debug)]
pub struct Metric<T> {
    /// The sample name as served (`leaklab_requests_total`).
    pub name: &'static str,
    /// The `# HELP` text.
    pub help: &'static str,
    /// Gauge or counter.
    pub kind: Kind,
    /// Where the value comes from.
    pub read: fn(&T) -> u64,
}

impl<T> Metric<T> {
    /// The family name the encoder is given: a counter's name without the
    /// `_total` the encoder adds back.
    pub fn family(&self) -> &'static str {
        match self.kind {
            Kind::Counter => self.name.strip_suffix("_total").unwrap_or(self.name),
            Kind::Gauge => self.name,
        }
    }

    /// Encodes this metric with the value read from `source`.
    pub fn encode(&self, enc: &mut DescriptorEncoder, source: &T) -> Result<(), std::fmt::Error> {
        let v = (self.read)(source);
        match self.kind {
            Kind::Gauge => {
                let g = ConstGauge::new(v as f64);
                g.encode(enc.encode_descriptor(self.family(), self.help, None, g.metric_type())?)
            }
            Kind::Counter => {
                let c = ConstCounter::new(v);
                c.encode(enc.encode_descriptor(self.family(), self.help, None, c.metric_type())?)
            }
        }
    }
}

/// A figure of [`Figures`]: a [`Metric`] with the field it reads and writes.
#[derive(Debug)]
pub struct FigureMetric {
    /// Name, help, kind and reader.
    pub metric: Metric<Figures>,
    /// The field's name in [`Figures`] and in `metrics.jsonl`.
    pub field: &'static str,
    /// Sets the field from a scraped value.
    pub write: fn(&mut Figures, u64),
}

macro_rules! figure {
    ($kind:ident, $name:literal, $field:ident, $help:literal) => {
        FigureMetric {
            metric: Metric { name: $name, help: $help, kind: Kind::$kind, read: |f| f.$field },
            field: stringify!($field),
            write: |f, v| f.$field = v,
        }
    };
}

/// Every numeric figure, in the order `/metrics` serves them.
pub const FIGURES: [FigureMetric; 26] = [
    figure!(Gauge, "process_resident_memory_bytes", rss_bytes, "Resident set size of the process."),
    figure!(Gauge, "leaklab_profiled_inuse_bytes", inuse_bytes, "Bytes live through the global allocator."),
    figure!(Counter, "leaklab_requests_total", requests, "Requests answered (server) or calls made (client)."),
    figure!(Gauge, "leaklab_open_connections", open_conns, "Connections open now."),
    figure!(Counter, "leaklab_opened_connections_total", opened_conns, "Connections opened since start."),
    figure!(Counter, "leaklab_clients_created_total", clients_created, "RPC clients created since start."),
    figure!(Counter, "leaklab_clients_closed_total", clients_closed, "RPC clients closed since start."),
    figure!(Gauge, "leaklab_pool_leased_bytes", pool_leased_bytes, "Bytes in pooled chunks leased now."),
    figure!(Gauge, "leaklab_pool_cached_bytes", pool_cached_bytes, "Bytes cached in the pool's free lists."),
    figure!(Gauge, "leaklab_barrier_slots", barrier_slots, "Slots in the poller's barrier table."),
    figure!(Gauge, "leaklab_barrier_held_bytes", barrier_held_bytes, "Bytes referenced by barrier slots."),
    figure!(Gauge, "leaklab_lbcache_hooks", lb_hooks, "Rebalance hooks registered on balancer factories."),
    figure!(Counter, "leaklab_protocol_errors_total", protocol_errors, "Connections closed for a bad message."),
    figure!(Counter, "leaklab_idle_closed_total", idle_closed, "Connections closed by the idle timeout."),
    figure!(
        Gauge,
        "leaklab_largest_request_bytes",
        largest_request_bytes,
        "Bytes of the largest request received or refused."
    ),
    figure!(Counter, "leaklab_large_requests_total", large_requests, "Requests of 1 MiB or more."),
    figure!(
        Counter,
        "leaklab_refused_connections_total",
        refused_conns,
        "Connections refused because --max-conns were open."
    ),
    figure!(
        Counter,
        "leaklab_budget_closes_total",
        budget_closes,
        "Connections closed because buffered input passed --max-input-bytes (the greediest first)."
    ),
    figure!(
        Counter,
        "leaklab_write_timeouts_total",
        write_timeouts,
        "Connections closed because a write made no progress within --write-timeout."
    ),
    figure!(
        Counter,
        "leaklab_output_overflows_total",
        output_overflows,
        "Connections closed because unsent output passed --max-output-bytes."
    ),
    figure!(
        Counter,
        "leaklab_frame_timeouts_total",
        frame_timeouts,
        "Connections closed because a message did not arrive whole within --frame-timeout."
    ),
    figure!(
        Counter,
        "leaklab_profiler_dropped_samples_total",
        profiler_dropped_samples,
        "Heap profile samples dropped because a fixed-size table of the profiler was full."
    ),
    figure!(
        Counter,
        "leaklab_heap_allocations_total",
        allocations,
        "Blocks allocated through the global allocator, counted on every allocation (a realloc counts as one)."
    ),
    figure!(
        Counter,
        "leaklab_heap_allocated_bytes_total",
        allocated_bytes,
        "Bytes allocated through the global allocator, counted on every allocation."
    ),
    figure!(
        Counter,
        "leaklab_admin_allocations_total",
        scrape_allocations,
        "Of leaklab_heap_allocations_total, the blocks the admin listener allocated answering requests (HTTP, profiles, metrics)."
    ),
    figure!(
        Counter,
        "leaklab_admin_allocated_bytes_total",
        scrape_allocated_bytes,
        "Of leaklab_heap_allocated_bytes_total, the bytes the admin listener allocated answering requests."
    ),
];

/// The gauge (value 1) that names the peer of the largest request in its
/// label [`LARGEST_PEER_LABEL`]; its [`Figures`] field is `largest_peer`.
pub const LARGEST_PEER: &str = "leaklab_largest_request_peer";
/// The label of [`LARGEST_PEER`].
pub const LARGEST_PEER_LABEL: &str = "peer";
/// The `# HELP` text of [`LARGEST_PEER`].
pub const LARGEST_PEER_HELP: &str = "The peer that sent the largest request (label `peer`).";
/// The `metrics.jsonl` name of [`LARGEST_PEER`]'s label value.
pub const LARGEST_PEER_FIELD: &str = "largest_peer";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_end_in_total_and_names_are_unique() {
        let mut names: Vec<&str> = FIGURES.iter().map(|m| m.metric.name).collect();
        for m in FIGURES.map(|m| m.metric) {
            assert_eq!(m.kind == Kind::Counter, m.name.ends_with("_total"), "{}", m.name);
            assert!(!m.family().ends_with("_total"), "{}", m.name);
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FIGURES.len());
    }

    #[test]
    fn each_row_reads_and_writes_its_own_field() {
        for (i, m) in FIGURES.iter().enumerate() {
            let mut f = Figures::default();
            (m.write)(&mut f, i as u64 + 1);
            assert_eq!((m.metric.read)(&f), i as u64 + 1, "{}", m.field);
            let json = serde_json::to_value(&f).expect("figures as JSON");
            assert_eq!(json[m.field], i as u64 + 1, "{} is not the field {}", m.metric.name, m.field);
        }
    }
}
