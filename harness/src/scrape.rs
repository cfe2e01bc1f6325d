//! Scraping a process's admin endpoint: profiles as bytes, `/metrics` as
//! figures, and the `metrics.jsonl` line format.

use std::io::Read;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::probe::Figures;

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetricsLine {
    /// Seconds since the run started.
    pub t: f64,
    /// `warmup`, `load`, `drain`, `settle`.
    pub phase: String,
    /// The figures.
    #[serde(flatten)]
    pub figures: Figures,
}

/// An HTTP agent with short timeouts, for loopback scraping.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(true)
        .build()
        .into()
}

/// GET `http://ADDR/PATH` as bytes.
pub fn get_bytes(agent: &ureq::Agent, addr: SocketAddr, path: &str) -> anyhow::Result<Vec<u8>> {
    get_url(agent, &format!("http://{addr}{path}"))
}

/// GET a URL as bytes (at most 1 GiB).
pub fn get_url(agent: &ureq::Agent, url: &str) -> anyhow::Result<Vec<u8>> {
    let mut resp = agent.get(url).call().with_context(|| format!("GET {url}"))?;
    let mut body = Vec::new();
    resp.body_mut().as_reader().take(1 << 30).read_to_end(&mut body).with_context(|| format!("reading {url}"))?;
    Ok(body)
}

/// GET as text.
pub fn get_text(agent: &ureq::Agent, addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    Ok(String::from_utf8_lossy(&get_bytes(agent, addr, path)?).into_owned())
}

/// The figures `leaklab serve` exposes, from its `/metrics` text.
pub fn figures(text: &str) -> Figures {
    let m = diagnosis::parse_prometheus(text);
    let g = |name: &str| m.get(name).copied().unwrap_or(0.0).max(0.0) as u64;
    Figures {
        rss_bytes: g("process_resident_memory_bytes"),
        inuse_bytes: g("leaklab_profiled_inuse_bytes"),
        requests: g("leaklab_requests_total"),
        open_conns: g("leaklab_open_connections"),
        opened_conns: g("leaklab_opened_connections_total"),
        clients_created: g("leaklab_clients_created_total"),
        clients_closed: g("leaklab_clients_closed_total"),
        pool_leased_bytes: g("leaklab_pool_leased_bytes"),
        pool_cached_bytes: g("leaklab_pool_cached_bytes"),
        barrier_slots: g("leaklab_barrier_slots"),
        barrier_held_bytes: g("leaklab_barrier_held_bytes"),
        lb_hooks: g("leaklab_lbcache_hooks"),
        protocol_errors: g("leaklab_protocol_errors_total"),
        idle_closed: g("leaklab_idle_closed_total"),
        largest_request_bytes: g("leaklab_largest_request_bytes"),
        large_requests: g("leaklab_large_requests_total"),
        largest_peer: label_value(text, "leaklab_largest_request_peer", "peer"),
        refused_conns: g("leaklab_refused_connections_total"),
        budget_closes: g("leaklab_budget_closes_total"),
        write_timeouts: g("leaklab_write_timeouts_total"),
        output_overflows: g("leaklab_output_overflows_total"),
        frame_timeouts: g("leaklab_frame_timeouts_total"),
        profiler_dropped_samples: g("leaklab_profiler_dropped_samples_total"),
    }
}

/// The value of label `label` on the first sample of `name`.
pub fn label_value(text: &str, name: &str, label: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))?;
    let start = line.find(&format!("{label}=\""))? + label.len() + 2;
    let end = start + line[start..].find('"')?;
    Some(line[start..end].to_owned())
}

/// Renames the Prometheus names `leaklab serve` exposes to the
/// `metrics.jsonl` names the diagnosis reads; other names pass through.
pub fn leaklab_names(values: std::collections::BTreeMap<String, f64>) -> std::collections::BTreeMap<String, f64> {
    values
        .into_iter()
        .map(|(k, v)| {
            let name = match k.as_str() {
                "process_resident_memory_bytes" => "rss_bytes",
                "leaklab_profiled_inuse_bytes" => "inuse_bytes",
                "leaklab_requests_total" => "requests",
                "leaklab_open_connections" => "open_conns",
                "leaklab_opened_connections_total" => "opened_conns",
                "leaklab_clients_created_total" => "clients_created",
                "leaklab_clients_closed_total" => "clients_closed",
                "leaklab_pool_leased_bytes" => "pool_leased_bytes",
                "leaklab_pool_cached_bytes" => "pool_cached_bytes",
                "leaklab_barrier_slots" => "barrier_slots",
                "leaklab_barrier_held_bytes" => "barrier_held_bytes",
                "leaklab_lbcache_hooks" => "lb_hooks",
                "leaklab_protocol_errors_total" => "protocol_errors",
                "leaklab_idle_closed_total" => "idle_closed",
                "leaklab_largest_request_bytes" => "largest_request_bytes",
                "leaklab_large_requests_total" => "large_requests",
                "leaklab_refused_connections_total" => "refused_conns",
                "leaklab_budget_closes_total" => "budget_closes",
                "leaklab_write_timeouts_total" => "write_timeouts",
                "leaklab_output_overflows_total" => "output_overflows",
                "leaklab_frame_timeouts_total" => "frame_timeouts",
                "leaklab_profiler_dropped_samples_total" => "profiler_dropped_samples",
                other => other,
            };
            (name.to_owned(), v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_text() {
        let text = "# HELP x y\n# TYPE x gauge\nprocess_resident_memory_bytes 5844992.0\n\
                    leaklab_requests_total 196080\nwith_labels{a=\"b c\"} 3.5\nbad line\n";
        let m = diagnosis::parse_prometheus(text);
        assert_eq!(m["process_resident_memory_bytes"], 5844992.0);
        assert_eq!(m["leaklab_requests_total"], 196080.0);
        assert_eq!(m["with_labels"], 3.5);
        assert_eq!(m.len(), 3);
        let f = figures(text);
        assert_eq!((f.rss_bytes, f.requests), (5844992, 196080));
        let peer = "leaklab_largest_request_peer{peer=\"127.0.0.1:5555\"} 1.0\n";
        assert_eq!(figures(peer).largest_peer.as_deref(), Some("127.0.0.1:5555"));
    }
}
