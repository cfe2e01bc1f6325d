//! The admin HTTP listener of the process under test, as Go's
//! `net/http/pprof` and a Prometheus client serve them:
//!
//! - `GET /debug/pprof/heap`: gzip'd profile.proto, default sample
//!   `inuse_space` (`go tool pprof http://ADDR/debug/pprof/heap`);
//! - `GET /debug/pprof/allocs`: the same data, default sample `alloc_space`;
//! - `GET /debug/pprof/pool`: the buffer pool's view in the same format
//!   (who took each chunk, who still holds it; see `poolprof`);
//! - `GET /metrics`: Prometheus text format;
//! - `GET /debug/pprof/`: an index.
//!
//! It binds to loopback by default: a profile endpoint must not face the
//! internet (profiles reveal code and data layout, and cost CPU to make).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::probe::Probe;

/// Serves the admin endpoints until the task is dropped.
pub async fn serve(listener: TcpListener, probe: Arc<Probe>) -> std::io::Result<()> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(MetricsCollector { probe: probe.clone() }));
    let state = AdminState { probe, registry: Arc::new(registry) };
    let app = Router::new()
        .route("/debug/pprof/", get(index))
        .route("/debug/pprof/heap", get(heap))
        .route("/debug/pprof/allocs", get(allocs))
        .route("/debug/pprof/pool", get(pool))
        .route("/debug/pprof/holders", get(holders))
        .route("/metrics", get(metrics))
        .with_state(state);
    axum::serve(listener, app).await
}

/// Binds `addr` and serves in the background; returns the bound address.
pub async fn spawn(addr: SocketAddr, probe: Arc<Probe>) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("binding admin address {addr}: {e}"))?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = serve(listener, probe).await {
            tracing::error!(error = %e, "admin listener failed");
        }
    });
    Ok(local)
}

#[derive(Clone)]
struct AdminState {
    probe: Arc<Probe>,
    registry: Arc<Registry>,
}

async fn index() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<html><body><h1>/debug/pprof/</h1><ul>\
         <li><a href=\"heap\">heap</a>: in-use memory by allocation stack (default sample inuse_space)</li>\
         <li><a href=\"allocs\">allocs</a>: all allocations since start (default sample alloc_space)</li>\
         <li><a href=\"pool\">pool</a>: pooled buffers by who took them and who still holds them</li>\
         <li><a href=\"holders\">holders</a>: who holds each live block, as chains from a root (holder mode only)</li>\
         <li><a href=\"/metrics\">/metrics</a>: Prometheus metrics</li>\
         </ul><p>Read a profile with <code>go tool pprof http://HOST/debug/pprof/heap</code>.</p></body></html>",
    )
}

fn profile_response(gz: Vec<u8>, name: &str) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
        ],
        gz,
    )
        .into_response()
}

async fn heap(State(s): State<AdminState>) -> Response {
    let gz = tokio::task::spawn_blocking(move || s.probe.profiler.heap_profile().encode_gzip()).await;
    match gz {
        Ok(gz) => profile_response(gz, "heap"),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("profile failed: {e}")).into_response(),
    }
}

async fn allocs(State(s): State<AdminState>) -> Response {
    let gz = tokio::task::spawn_blocking(move || s.probe.profiler.allocs_profile().encode_gzip()).await;
    match gz {
        Ok(gz) => profile_response(gz, "allocs"),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("profile failed: {e}")).into_response(),
    }
}

async fn pool(State(s): State<AdminState>) -> Response {
    let gz = tokio::task::spawn_blocking(move || crate::poolprof::pool_profile(&s.probe.pool).encode_gzip()).await;
    match gz {
        Ok(gz) => profile_response(gz, "pool"),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("profile failed: {e}")).into_response(),
    }
}

async fn holders(
    State(s): State<AdminState>,
    axum::extract::Query(q): axum::extract::Query<crate::holdersprof::HoldersQuery>,
) -> Response {
    crate::holdersprof::serve(s.probe.clone(), q).await
}

async fn metrics(State(s): State<AdminState>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &s.registry) {
        Ok(()) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("metrics failed: {e}")).into_response(),
    }
}

/// Reads every figure of the [`Probe`] at scrape time.
#[derive(Debug)]
struct MetricsCollector {
    probe: Arc<Probe>,
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

impl Collector for MetricsCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = self.probe.read();
        let e = &mut enc;
        gauge(e, "process_resident_memory_bytes", "Resident set size of the process.", m.rss_bytes as f64)?;
        gauge(e, "leaklab_profiled_inuse_bytes", "Bytes live through the global allocator.", m.inuse_bytes as f64)?;
        counter(e, "leaklab_requests", "Requests answered (server) or calls made (client).", m.requests)?;
        gauge(e, "leaklab_open_connections", "Connections open now.", m.open_conns as f64)?;
        counter(e, "leaklab_opened_connections", "Connections opened since start.", m.opened_conns)?;
        counter(e, "leaklab_clients_created", "RPC clients created since start.", m.clients_created)?;
        counter(e, "leaklab_clients_closed", "RPC clients closed since start.", m.clients_closed)?;
        gauge(e, "leaklab_pool_leased_bytes", "Bytes in pooled chunks leased now.", m.pool_leased_bytes as f64)?;
        gauge(e, "leaklab_pool_cached_bytes", "Bytes cached in the pool's free lists.", m.pool_cached_bytes as f64)?;
        gauge(e, "leaklab_barrier_slots", "Slots in the poller's barrier table.", m.barrier_slots as f64)?;
        gauge(e, "leaklab_barrier_held_bytes", "Bytes referenced by barrier slots.", m.barrier_held_bytes as f64)?;
        gauge(e, "leaklab_lbcache_hooks", "Rebalance hooks registered on balancer factories.", m.lb_hooks as f64)?;
        counter(e, "leaklab_protocol_errors", "Connections closed for a bad message.", m.protocol_errors)?;
        counter(e, "leaklab_idle_closed", "Connections closed by the idle timeout.", m.idle_closed)?;
        let largest = m.largest_request_bytes as f64;
        gauge(e, "leaklab_largest_request_bytes", "Bytes of the largest request received or refused.", largest)?;
        counter(e, "leaklab_large_requests", "Requests of 1 MiB or more.", m.large_requests)?;
        if let Some(peer) = &m.largest_peer {
            let g = ConstGauge::new(1.0);
            let help = "The peer that sent the largest request (label `peer`).";
            let mut metric = e.encode_descriptor("leaklab_largest_request_peer", help, None, g.metric_type())?;
            g.encode(metric.encode_family(&vec![("peer".to_owned(), peer.clone())])?)?;
        }
        Ok(())
    }
}
