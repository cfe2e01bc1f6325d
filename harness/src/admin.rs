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
//! Stacks of the heap, allocs and pool profiles start at their site, the
//! first frame outside the allocation machinery (`Vec`'s and `hashbrown`'s
//! growth, `bytes`' buffers, `String` formatting, …; see
//! [`profiler::Stacks`]), as Go's runtime hides `mallocgc` and its kin: the
//! flat row of `go tool pprof -top` is the function that asked for the
//! memory. `?full=1` on these routes gives full stacks, the machinery
//! included (`full=0` or no query: from the site; another value is a
//! `400`). The pool's chains are names, none of them machinery, so both
//! give it the same stacks.
//!
//! It binds to loopback by default: a profile endpoint must not face the
//! internet (profiles reveal code and data layout, and cost CPU to make).
//!
//! Its own limits ([`AdminLimits`]): a request's headers must arrive whole
//! within 5 s (a client trickling them, or idle between requests, is
//! closed); at most 64 connections (more are closed on accept); at most 2
//! builds of each profile and 8 `/metrics` encodings at once (more get `503`
//! with `Retry-After`). A build's permit is held until the build ends, even
//! when its client has gone. The listener's own refusals are counted on
//! `/metrics` (`leaklab_admin_*`).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use profiler::{SampleType, Stacks};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::alloc::GlobalProfiler;
use crate::metrics::{Kind, Metric, FIGURES, LARGEST_PEER, LARGEST_PEER_HELP, LARGEST_PEER_LABEL};
use crate::probe::Probe;

mod stall;

/// Limits of the admin listener against slow or greedy clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminLimits {
    /// A request's headers must arrive whole within this; a connection idle
    /// this long between requests is closed too.
    pub header_read_timeout: Duration,
    /// Connections served at once; more are closed as soon as accepted.
    pub max_conns: usize,
    /// Builds of each profile (`heap`, `allocs`, `pool`) at once.
    pub profile_builds: usize,
    /// `/metrics` encodings at once.
    pub metrics_scrapes: usize,
    /// A response write that makes no progress this long closes its
    /// connection: a client that asks and never reads.
    pub write_timeout: Duration,
    /// A connection is closed this long after it opened, whatever it is
    /// doing: a client reading a byte at a time keeps making progress, and
    /// a keep-alive client simply connects again.
    pub max_conn_life: Duration,
}

impl Default for AdminLimits {
    fn default() -> Self {
        AdminLimits {
            header_read_timeout: Duration::from_secs(5),
            max_conns: 64,
            profile_builds: 2,
            metrics_scrapes: 8,
            write_timeout: Duration::from_secs(10),
            max_conn_life: Duration::from_secs(120),
        }
    }
}

/// What the admin listener refused, since start.
#[derive(Debug, Default)]
pub struct AdminStats {
    /// Connections closed on accept because `max_conns` were open.
    pub refused_conns: AtomicU64,
    /// Connections closed because headers did not arrive in time.
    pub header_timeouts: AtomicU64,
    /// Connections closed because a response write made no progress for
    /// `write_timeout`, or the connection outlived `max_conn_life`.
    pub slow_closes: Arc<AtomicU64>,
    /// Requests answered `503` because their route was at its limit.
    pub shed_requests: AtomicU64,
    /// Blocks allocated answering: accepting, HTTP, building the profiles
    /// and metrics served (but for a holder scan's own threads).
    pub allocations: AtomicU64,
    /// Their bytes.
    pub allocated_bytes: AtomicU64,
}

impl AdminStats {
    /// Runs `f`, which must not run other work on its thread meanwhile (a
    /// poll, a blocking build), and counts what it allocated on this thread
    /// as the admin listener's.
    fn counting<R>(&self, profiler: &GlobalProfiler, f: impl FnOnce() -> R) -> R {
        let before = profiler.thread_allocated();
        let r = f();
        if let Some((before, after)) = before.zip(profiler.thread_allocated()) {
            let cost = after.since(before);
            self.allocations.fetch_add(cost.blocks, Ordering::Relaxed);
            self.allocated_bytes.fetch_add(cost.bytes, Ordering::Relaxed);
        }
        r
    }
}

/// The admin listener: its routes, limits and counters.
#[derive(Debug)]
pub struct Admin {
    state: AdminState,
    limits: AdminLimits,
}

impl Admin {
    /// The admin endpoints over `probe`, within `limits`.
    pub fn new(probe: Arc<Probe>, limits: AdminLimits) -> Admin {
        let stats = Arc::new(AdminStats::default());
        let mut registry = Registry::default();
        registry.register_collector(Box::new(MetricsCollector { probe: probe.clone(), admin: stats.clone() }));
        let route = |n: usize| RouteLimit { permits: Arc::new(Semaphore::new(n)), limit: n };
        let state = AdminState {
            probe,
            registry: Arc::new(registry),
            stats,
            heap: route(limits.profile_builds),
            allocs: route(limits.profile_builds),
            pool: route(limits.profile_builds),
            metrics: route(limits.metrics_scrapes),
            #[cfg(test)]
            gate: None,
        };
        Admin { state, limits }
    }

    /// The listener's counters.
    #[cfg(test)]
    fn stats(&self) -> Arc<AdminStats> {
        self.state.stats.clone()
    }

    /// Builds of profile `name` wait on `gate` (read) while a test holds it
    /// (write).
    #[cfg(test)]
    fn gated(mut self, name: &'static str, gate: Arc<std::sync::RwLock<()>>) -> Admin {
        self.state.gate = Some((name, gate));
        self
    }

    fn router(&self) -> Router {
        Router::new()
            .route("/debug/pprof/", get(index))
            .route("/debug/pprof/heap", get(heap))
            .route("/debug/pprof/allocs", get(allocs))
            .route("/debug/pprof/pool", get(pool))
            .route("/debug/pprof/holders", get(holders))
            .route("/metrics", get(metrics))
            .with_state(self.state.clone())
    }

    /// Serves until the task is dropped: one HTTP/1 connection per task,
    /// with the header-read timeout and the connection limit. What the
    /// accept loop and the connections allocate counts as the listener's
    /// (`leaklab_admin_allocations_total`).
    pub fn serve(self, listener: TcpListener) -> impl Future<Output = ()> + Send {
        let (stats, profiler) = (self.state.stats.clone(), self.state.probe.profiler);
        Counted::new(self.accept(listener), stats, profiler)
    }

    async fn accept(self, listener: TcpListener) {
        let app = self.router();
        let conns = Arc::new(Semaphore::new(self.limits.max_conns));
        let stats = self.state.stats.clone();
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors or a connection reset before accept:
                    // wait a little instead of spinning, then go on.
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = conns.clone().try_acquire_owned() else {
                stats.refused_conns.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, max = self.limits.max_conns, "admin connection refused: too many open");
                drop(stream);
                continue;
            };
            let service = TowerToHyperService::new(app.clone());
            let stats = stats.clone();
            let limits = self.limits;
            let profiler = self.state.probe.profiler;
            let counted = stats.clone();
            tokio::spawn(Counted::new(
                async move {
                    let _permit = permit;
                    let io = stall::WriteDeadline::new(stream, limits.write_timeout, stats.slow_closes.clone());
                    let conn = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(limits.header_read_timeout)
                        .serve_connection(TokioIo::new(io), service);
                    match tokio::time::timeout(limits.max_conn_life, conn).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            if e.is_timeout() {
                                stats.header_timeouts.fetch_add(1, Ordering::Relaxed);
                            }
                            tracing::debug!(%peer, error = %e, "admin connection closed");
                        }
                        Err(_) => {
                            stats.slow_closes.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%peer, life = ?limits.max_conn_life, "admin connection closed: too old");
                        }
                    }
                },
                counted,
                profiler,
            ));
        }
    }
}

/// Binds `addr` and serves in the background with the default limits;
/// returns the bound address.
pub async fn spawn(addr: SocketAddr, probe: Arc<Probe>) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("binding admin address {addr}: {e}"))?;
    let local = listener.local_addr()?;
    tokio::spawn(Admin::new(probe, AdminLimits::default()).serve(listener));
    Ok(local)
}

/// A task of the admin listener: each poll runs on one thread without
/// interruption, so what the thread allocated during the poll is the
/// task's, counted as the listener's. Profile builds run on the blocking
/// pool and count themselves ([`build`]).
struct Counted<F> {
    inner: Pin<Box<F>>,
    stats: Arc<AdminStats>,
    profiler: &'static GlobalProfiler,
}

impl<F: Future> Counted<F> {
    fn new(inner: F, stats: Arc<AdminStats>, profiler: &'static GlobalProfiler) -> Self {
        Counted { inner: Box::pin(inner), stats, profiler }
    }
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        this.stats.counting(this.profiler, || this.inner.as_mut().poll(cx))
    }
}

/// At most `limit` requests of one route at once.
#[derive(Debug, Clone)]
struct RouteLimit {
    permits: Arc<Semaphore>,
    limit: usize,
}

impl RouteLimit {
    /// A permit, or [`Busy`] to answer.
    fn enter(&self, stats: &AdminStats, route: &'static str) -> Result<OwnedSemaphorePermit, Busy> {
        self.permits.clone().try_acquire_owned().map_err(|_| {
            stats.shed_requests.fetch_add(1, Ordering::Relaxed);
            Busy { route, limit: self.limit }
        })
    }
}

/// A route at its limit: `503 Service Unavailable` with `Retry-After: 1`.
#[derive(Debug)]
struct Busy {
    route: &'static str,
    limit: usize,
}

impl IntoResponse for Busy {
    fn into_response(self) -> Response {
        let body = format!("{}: {} requests at once at most; retry later\n", self.route, self.limit);
        let mut resp = (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        resp
    }
}

#[derive(Clone)]
struct AdminState {
    probe: Arc<Probe>,
    registry: Arc<Registry>,
    stats: Arc<AdminStats>,
    heap: RouteLimit,
    allocs: RouteLimit,
    pool: RouteLimit,
    metrics: RouteLimit,
    /// Builds of this profile wait on the gate (read) while a test holds
    /// it (write).
    #[cfg(test)]
    gate: Option<(&'static str, Arc<std::sync::RwLock<()>>)>,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState").field("probe", &self.probe).finish_non_exhaustive()
    }
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
         </ul><p>Read a profile with <code>go tool pprof http://HOST/debug/pprof/heap</code>. \
         Stacks start at the first frame outside the allocation machinery; \
         <code>?full=1</code> keeps it (heap, allocs, pool).</p></body></html>",
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

/// The query of the profile routes: `?full=1` for full stacks.
#[derive(Debug, Default, serde::Deserialize)]
struct ProfileQuery {
    full: Option<String>,
}

impl ProfileQuery {
    /// The stacks asked for, or why the query is refused.
    fn stacks(&self) -> Result<Stacks, String> {
        match self.full.as_deref() {
            None | Some("0" | "false") => Ok(Stacks::FromSite),
            Some("1" | "true") => Ok(Stacks::Full),
            Some(other) => {
                Err(format!("full={other}: expected full=1 (stacks with the allocation machinery) or full=0\n"))
            }
        }
    }
}

/// Builds a profile on the blocking pool within `limit`; the permit goes
/// with the build, so a client that hangs up does not free it early.
async fn build(
    s: &AdminState,
    limit: &RouteLimit,
    name: &'static str,
    q: &ProfileQuery,
    make: fn(&Probe, Stacks) -> Vec<u8>,
) -> Response {
    let stacks = match q.stacks() {
        Ok(stacks) => stacks,
        Err(why) => return (StatusCode::BAD_REQUEST, why).into_response(),
    };
    let permit = match limit.enter(&s.stats, name) {
        Ok(permit) => permit,
        Err(busy) => return busy.into_response(),
    };
    let probe = s.probe.clone();
    let stats = s.stats.clone();
    #[cfg(test)]
    let gate = s.gate.clone().filter(|(gated, _)| *gated == name);
    let gz = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        #[cfg(test)]
        let _open = gate.as_ref().map(|(_, g)| g.read());
        stats.counting(probe.profiler, || make(&probe, stacks))
    })
    .await;
    match gz {
        Ok(gz) => profile_response(gz, name),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("profile failed: {e}")).into_response(),
    }
}

async fn heap(State(s): State<AdminState>, Query(q): Query<ProfileQuery>) -> Response {
    build(&s, &s.heap, "heap", &q, |p, stacks| p.profiler.profile(SampleType::InuseSpace, stacks).encode_gzip()).await
}

async fn allocs(State(s): State<AdminState>, Query(q): Query<ProfileQuery>) -> Response {
    build(&s, &s.allocs, "allocs", &q, |p, stacks| p.profiler.profile(SampleType::AllocSpace, stacks).encode_gzip())
        .await
}

async fn pool(State(s): State<AdminState>, Query(q): Query<ProfileQuery>) -> Response {
    build(&s, &s.pool, "pool", &q, |p, stacks| crate::poolprof::pool_profile(&p.pool, stacks).encode_gzip()).await
}

async fn holders(State(s): State<AdminState>, Query(q): Query<crate::holdersprof::HoldersQuery>) -> Response {
    crate::holdersprof::serve(s.probe.clone(), q).await
}

async fn metrics(State(s): State<AdminState>) -> Response {
    let _permit = match s.metrics.enter(&s.stats, "metrics") {
        Ok(permit) => permit,
        Err(busy) => return busy.into_response(),
    };
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
    admin: Arc<AdminStats>,
}

/// The listener's own refusals on `/metrics`, after the [`FIGURES`].
const ADMIN_METRICS: [Metric<AdminStats>; 4] = [
    Metric {
        name: "leaklab_admin_refused_connections_total",
        help: "Admin connections closed on accept because the admin connection limit was reached.",
        kind: Kind::Counter,
        read: |a| a.refused_conns.load(Ordering::Relaxed),
    },
    Metric {
        name: "leaklab_admin_header_timeouts_total",
        help: "Admin connections closed because request headers did not arrive in time.",
        kind: Kind::Counter,
        read: |a| a.header_timeouts.load(Ordering::Relaxed),
    },
    Metric {
        name: "leaklab_admin_slow_closes_total",
        help: "Admin connections closed because a response write made no progress in time, or the connection \
               outlived its longest life.",
        kind: Kind::Counter,
        read: |a| a.slow_closes.load(Ordering::Relaxed),
    },
    Metric {
        name: "leaklab_admin_shed_requests_total",
        help: "Admin requests answered 503 because their route was at its concurrency limit.",
        kind: Kind::Counter,
        read: |a| a.shed_requests.load(Ordering::Relaxed),
    },
];

impl Collector for MetricsCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut m = self.probe.read();
        m.scrape_allocations = self.admin.allocations.load(Ordering::Relaxed);
        m.scrape_allocated_bytes = self.admin.allocated_bytes.load(Ordering::Relaxed);
        for f in &FIGURES {
            f.metric.encode(&mut enc, &m)?;
        }
        for a in &ADMIN_METRICS {
            a.encode(&mut enc, &self.admin)?;
        }
        if let Some(peer) = &m.largest_peer {
            let g = ConstGauge::new(1.0);
            let mut metric = enc.encode_descriptor(LARGEST_PEER, LARGEST_PEER_HELP, None, g.metric_type())?;
            g.encode(metric.encode_family(&vec![(LARGEST_PEER_LABEL.to_owned(), peer.clone())])?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpc::{Pool, PoolConfig, ServerStats};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    fn probe() -> Arc<Probe> {
        Arc::new(Probe {
            profiler: &crate::alloc::PROFILER,
            pool: Pool::new(PoolConfig::default()),
            server: Some(Arc::new(ServerStats::default())),
            barriers: None,
            calls: None,
        })
    }

    async fn start(admin: Admin) -> (SocketAddr, Arc<AdminStats>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let stats = admin.stats();
        tokio::spawn(admin.serve(listener));
        (addr, stats)
    }

    /// One response: status, head, body (by Content-Length); `None` if the
    /// connection closed first.
    async fn read_response(stream: &mut TcpStream) -> Option<(u16, String, Vec<u8>)> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let status = head.get(9..12)?.parse().ok()?;
                let len: usize = head
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                while buf.len() < end + 4 + len {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return None,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                return Some((status, head, buf[end + 4..end + 4 + len].to_vec()));
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    async fn get(addr: SocketAddr, path: &str) -> (u16, String, Vec<u8>) {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .expect("request");
        read_response(&mut s).await.expect("a response")
    }

    async fn metric(addr: SocketAddr, name: &str) -> Option<f64> {
        let (status, _, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        diagnosis::parse_prometheus(&String::from_utf8_lossy(&body)).get(name).copied()
    }

    #[tokio::test]
    async fn a_client_trickling_its_headers_is_closed() {
        let limits = AdminLimits { header_read_timeout: Duration::from_millis(300), ..AdminLimits::default() };
        let (addr, stats) = start(Admin::new(probe(), limits)).await;
        let request = b"GET /metrics HTTP/1.1\r\nHost: admin\r\nUser-Agent: slow\r\n\r\n";
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let (mut sent, mut answer, mut closed) = (0, Vec::new(), false);
        let mut buf = [0u8; 1024];
        'bytes: for byte in request {
            if s.write_all(&[*byte]).await.is_err() {
                closed = true;
                break;
            }
            sent += 1;
            // Whatever the server says or does during the pause.
            while let Ok(r) = tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
                match r {
                    Ok(0) | Err(_) => {
                        closed = true;
                        break 'bytes;
                    }
                    Ok(n) => answer.extend_from_slice(&buf[..n]),
                }
            }
        }
        assert!(closed, "the connection stayed open for the whole request");
        assert!(sent < request.len(), "all {sent} bytes were read");
        assert!(!answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
        assert_eq!(stats.header_timeouts.load(Ordering::Relaxed), 1);
        assert_eq!(metric(addr, "leaklab_admin_header_timeouts_total").await, Some(1.0));
    }

    #[tokio::test]
    async fn a_client_that_never_reads_its_responses_is_closed() {
        let limits = AdminLimits { write_timeout: Duration::from_millis(300), ..AdminLimits::default() };
        let (addr, stats) = start(Admin::new(probe(), limits)).await;
        // A small receive window, and requests pipelined without reading
        // a byte: the responses fill both sockets and the server's write
        // waits.
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("recv buffer");
        let mut s = socket.connect(addr).await.expect("connect");
        let request = b"GET /metrics HTTP/1.1\r\nHost: admin\r\n\r\n".repeat(2000);
        let _ = tokio::time::timeout(Duration::from_secs(10), s.write_all(&request)).await;
        let tripped = async {
            while stats.slow_closes.load(Ordering::Relaxed) == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(20), tripped).await.expect("the stalled write was not timed out");
        // The connection is gone: what was sent ends.
        let mut sink = Vec::new();
        let end = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut sink)).await;
        assert!(end.is_ok(), "the connection stayed open");
        assert_eq!(metric(addr, "leaklab_admin_slow_closes_total").await, Some(1.0));
    }

    #[tokio::test]
    async fn a_connection_lives_at_most_its_longest_life() {
        let limits = AdminLimits { max_conn_life: Duration::from_millis(300), ..AdminLimits::default() };
        let (addr, stats) = start(Admin::new(probe(), limits)).await;
        let mut s = TcpStream::connect(addr).await.expect("connect");
        // A keep-alive client asking every 100 ms, reading every answer.
        let mut answered = 0;
        for _ in 0..20 {
            if s.write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\n\r\n").await.is_err() {
                break;
            }
            match read_response(&mut s).await {
                Some((200, _, _)) => answered += 1,
                _ => break,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!((1..20).contains(&answered), "{answered} answers on one connection");
        assert_eq!(stats.slow_closes.load(Ordering::Relaxed), 1);
    }

    /// The next answer (a broken limit would let every build wait at the
    /// gate: give up rather than hang).
    async fn answer<T>(rx: &mut tokio::sync::mpsc::UnboundedReceiver<T>) -> T {
        let waited = tokio::time::timeout(Duration::from_secs(60), rx.recv()).await;
        waited.expect("no answer while the gate is closed").expect("an answer")
    }

    // The gate is a blocking lock on purpose: the builds run on blocking
    // threads, and the test holds it while it awaits their answers.
    #[allow(clippy::await_holding_lock)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn profile_builds_beyond_the_limit_get_503() {
        let gate = Arc::new(std::sync::RwLock::new(()));
        let closed = gate.write().expect("gate");
        let limits = AdminLimits { profile_builds: 2, ..AdminLimits::default() };
        let (addr, stats) = start(Admin::new(probe(), limits).gated("heap", gate.clone())).await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..6 {
            let tx = tx.clone();
            tokio::spawn(async move { tx.send(get(addr, "/debug/pprof/heap").await) });
        }
        // Two builds wait at the gate; the other four are turned away.
        let mut answers = Vec::new();
        for _ in 0..4 {
            answers.push(answer(&mut rx).await);
        }
        let busy = answers.iter().filter(|(status, head, _)| *status == 503 && head.contains("retry-after: 1")).count();
        assert_eq!(busy, 4, "{:?}", answers.iter().map(|a| &a.1).collect::<Vec<_>>());
        // Other routes have their own limits.
        assert_eq!(get(addr, "/debug/pprof/allocs").await.0, 200);
        assert_eq!(metric(addr, "leaklab_admin_shed_requests_total").await, Some(4.0));
        drop(closed);
        let mut ok = 0;
        for _ in 0..2 {
            let (status, _, body) = answer(&mut rx).await;
            assert!(body.starts_with(&[0x1f, 0x8b]), "not gzip");
            ok += usize::from(status == 200);
        }
        assert_eq!(ok, 2);
        assert_eq!(stats.shed_requests.load(Ordering::Relaxed), 4);
        // The permits came back with the builds.
        assert_eq!(get(addr, "/debug/pprof/heap").await.0, 200);
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_are_closed_on_accept() {
        let limits = AdminLimits { max_conns: 2, ..AdminLimits::default() };
        let (addr, stats) = start(Admin::new(probe(), limits)).await;
        let keep_alive = b"GET /debug/pprof/ HTTP/1.1\r\nHost: admin\r\n\r\n";
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.write_all(keep_alive).await.expect("request");
            assert_eq!(read_response(&mut s).await.map(|r| r.0), Some(200));
            held.push(s);
        }
        let mut third = TcpStream::connect(addr).await.expect("connect");
        let _ = third.write_all(keep_alive).await;
        assert_eq!(read_response(&mut third).await, None);
        assert_eq!(stats.refused_conns.load(Ordering::Relaxed), 1);
        // A connection that ends gives its place back.
        drop(held.pop());
        let mut served = None;
        for _ in 0..200 {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            let _ = s.write_all(keep_alive).await;
            served = read_response(&mut s).await;
            if served.is_some() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(served.map(|r| r.0), Some(200));
    }

    #[tokio::test]
    async fn metrics_show_the_refusal_counters() {
        let (addr, _) = start(Admin::new(probe(), AdminLimits::default())).await;
        let (status, _, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        let text = String::from_utf8_lossy(&body);
        let values = diagnosis::parse_prometheus(&text);
        let names = [
            "leaklab_refused_connections_total",
            "leaklab_budget_closes_total",
            "leaklab_write_timeouts_total",
            "leaklab_output_overflows_total",
            "leaklab_frame_timeouts_total",
            "leaklab_profiler_dropped_samples_total",
            "leaklab_admin_refused_connections_total",
            "leaklab_admin_header_timeouts_total",
            "leaklab_admin_shed_requests_total",
            "leaklab_admin_slow_closes_total",
        ];
        let present = names.iter().filter(|n| values.contains_key(**n)).count();
        assert_eq!(present, names.len(), "{text}");
        assert!(text.contains("# TYPE leaklab_refused_connections counter"), "{text}");
        // The scraper reads what is served, the old names included.
        let f = crate::scrape::figures(&text);
        assert_eq!(f.profiler_dropped_samples, crate::alloc::PROFILER.stats().dropped_samples);
        assert_eq!((f.refused_conns, f.budget_closes, f.frame_timeouts), (0, 0, 0));
        assert!(f.rss_bytes > 0);
    }

    #[tokio::test]
    async fn metrics_count_every_allocation_and_the_scrapes_own() {
        let (addr, _) = start(Admin::new(probe(), AdminLimits::default())).await;
        let figures = |body: Vec<u8>| crate::scrape::figures(&String::from_utf8_lossy(&body));
        let first = figures(get(addr, "/metrics").await.2);
        assert!(first.allocations > 0 && first.allocated_bytes > 0, "{first:?}");
        let kept: Vec<Box<[u8; 24]>> = (0..1000).map(|_| std::hint::black_box(Box::new([0u8; 24]))).collect();
        let second = figures(get(addr, "/metrics").await.2);
        assert!(second.allocations >= first.allocations + 1000, "{first:?}\n{second:?}");
        assert!(second.allocated_bytes >= first.allocated_bytes + 24_000);
        // The first scrape's encoding is the listener's.
        assert!(second.scrape_allocations > first.scrape_allocations);
        drop(kept);
        assert_eq!(get(addr, "/debug/pprof/heap").await.0, 200);
        let third = figures(get(addr, "/metrics").await.2);
        let profile = third.scrape_allocations - second.scrape_allocations;
        assert!(profile >= 10, "building a heap profile allocates: {profile}");
        assert!(third.allocations - second.allocations >= profile);
        assert!(
            third.scrape_allocated_bytes - second.scrape_allocated_bytes
                <= third.allocated_bytes - second.allocated_bytes
        );
    }
}
