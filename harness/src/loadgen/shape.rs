//! A scenario's load shape, sent to the process under test: steady calls,
//! connection surges, idle connections, oversized calls, a burst; for a
//! duration, then every connection closes (the drain).
//!
//! The latency of the steady (and burst) calls is measured as `leaklab
//! load` measures it: from when each call was due, so that a server that
//! falls behind shows it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use rpc::codec::{Request, Transport};
use scenarios::LoadShape;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use crate::loadgen::conn::Conn;
use crate::loadgen::paced::{send_paced, Schedule, Sender};

/// What the peer did, printed as one JSON line on exit.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct PeerReport {
    /// Calls answered.
    pub ok: u64,
    /// Calls that failed (refused, closed, bad reply).
    pub errors: u64,
    /// Connections opened.
    pub connections: u64,
    /// Peak of connections open at once.
    pub peak_connections: u64,
    /// Connections opened by surges.
    pub surge_connections: u64,
    /// Idle connections left open until the end.
    pub idle_connections: u64,
    /// Oversized calls sent.
    pub oversized_calls: u64,
    /// Latency of the steady and burst calls due from `--latency-from` on
    /// (surge and idle connections' calls are not in it); absent when none
    /// was answered.
    #[serde(default)]
    pub latency: Option<Latency>,
}

/// Latency percentiles of answered calls, measured from when each was due
/// (in closed loop, from when it went out).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Calls measured.
    pub calls: u64,
    /// Median, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// The largest.
    pub max_ms: f64,
}

impl Latency {
    /// The percentiles of a histogram of nanoseconds; `None` when empty.
    pub fn of(hist: &Histogram<u64>) -> Option<Latency> {
        if hist.is_empty() {
            return None;
        }
        let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1e6;
        Some(Latency {
            calls: hist.len(),
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: hist.max() as f64 / 1e6,
        })
    }
}

/// An empty histogram of nanoseconds, 1 ns to 2 minutes, 3 significant
/// digits (as `leaklab load`'s).
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000_000, 3).expect("valid bounds")
}

struct Counters {
    ok: AtomicU64,
    errors: AtomicU64,
    connections: AtomicU64,
    open: AtomicU64,
    peak: AtomicU64,
    surge_connections: AtomicU64,
    idle_connections: AtomicU64,
    oversized_calls: AtomicU64,
    calls: AtomicU64,
    /// When the load started (the warm-up's start).
    start: Instant,
    /// Calls due before this are not in `latency`.
    latency_from: Instant,
    /// Every connection's latencies, merged when it ends.
    latency: Mutex<Histogram<u64>>,
}

impl Counters {
    fn new(start: Instant, latency_from: Instant) -> Self {
        Counters {
            ok: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            open: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            surge_connections: AtomicU64::new(0),
            idle_connections: AtomicU64::new(0),
            oversized_calls: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            start,
            latency_from,
            latency: Mutex::new(latency_histogram()),
        }
    }

    fn opened(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
        let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(open, Ordering::Relaxed);
    }
    fn closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
    fn report(&self) -> PeerReport {
        PeerReport {
            ok: self.ok.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            connections: self.connections.load(Ordering::Relaxed),
            peak_connections: self.peak.load(Ordering::Relaxed),
            surge_connections: self.surge_connections.load(Ordering::Relaxed),
            idle_connections: self.idle_connections.load(Ordering::Relaxed),
            oversized_calls: self.oversized_calls.load(Ordering::Relaxed),
            latency: Latency::of(&self.latency.lock().unwrap_or_else(PoisonError::into_inner)),
        }
    }
}

/// A connection counted while it lives.
struct Counted {
    conn: Conn,
    counters: Arc<Counters>,
}

impl Counted {
    async fn open(target: SocketAddr, counters: &Arc<Counters>) -> Option<Counted> {
        match Conn::connect(target, Transport::Framed).await {
            Ok(conn) => {
                counters.opened();
                Some(Counted { conn, counters: counters.clone() })
            }
            Err(e) => {
                tracing::debug!(error = %e, "connect failed");
                counters.errors.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    async fn call(&mut self, req: &Request) -> bool {
        match self.conn.call(req).await {
            Ok(_) => {
                self.counters.ok.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "call failed");
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.counters.closed();
    }
}

/// Sends `shape` to `target` for `duration`, then closes everything;
/// latency is measured for calls due `latency_from` after the start or
/// later.
pub async fn drive(target: SocketAddr, shape: &LoadShape, duration: Duration, latency_from: Duration) -> PeerReport {
    let start = Instant::now();
    let counters = Arc::new(Counters::new(start, start + latency_from));
    let deadline = start + duration;
    let mut tasks = JoinSet::new();
    let shape = Arc::new(shape.clone());

    // Steady calls over `conns` connections at `rps` in all.
    if shape.conns > 0 {
        for i in 0..shape.conns {
            let (shape, counters) = (shape.clone(), counters.clone());
            let rps = shape.rps as f64 / shape.conns as f64;
            tasks.spawn(async move {
                steady(target, &shape, &counters, i as i64 + 1, rps, start, deadline, true).await;
            });
        }
    }
    for burst in shape.burst.iter().chain(&shape.noise_burst).cloned() {
        let (shape, counters) = (shape.clone(), counters.clone());
        tasks.spawn(async move {
            let mut at = start + burst.at;
            while at < deadline {
                tokio::time::sleep_until(at.into()).await;
                let end = (at + burst.length).min(deadline);
                let mut burst_tasks = JoinSet::new();
                let conns = burst.conns.max(1);
                for i in 0..conns {
                    let (shape, counters) = (shape.clone(), counters.clone());
                    let rps = burst.rps as f64 / conns as f64;
                    let from = Instant::now();
                    burst_tasks.spawn(async move {
                        steady(target, &shape, &counters, 1000 + i as i64, rps, from, end, false).await;
                    });
                }
                while burst_tasks.join_next().await.is_some() {}
                match burst.every {
                    Some(every) if !every.is_zero() => at += every,
                    _ => break,
                }
            }
        });
    }
    if let Some(surge) = shape.surge.clone() {
        let counters = counters.clone();
        tasks.spawn(async move {
            let msg = Bytes::from(vec![b's'; surge.payload]);
            let mut i = 0u64;
            loop {
                let at = start + surge.from + surge.every.mul_f64((i + 1) as f64);
                if at >= deadline {
                    break;
                }
                tokio::time::sleep_until(at.into()).await;
                let n = surge.size(i as usize);
                one_surge(target, n, &msg, &counters, i).await;
                i += 1;
            }
        });
    }
    let idle_holder = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    if let Some(idle) = shape.idle.clone() {
        let counters = counters.clone();
        let holder = idle_holder.clone();
        tasks.spawn(async move {
            let every = Duration::from_secs_f64(1.0 / idle.per_second.max(0.001));
            let mut k = 0u64;
            // Connections opened from `leave_from` on, counted for
            // `leave_every`.
            let mut counted = 0u64;
            let mut closing = JoinSet::new();
            loop {
                let at = start + every.mul_f64(k as f64);
                if at >= deadline {
                    break;
                }
                tokio::time::sleep_until(at.into()).await;
                while closing.try_join_next().is_some() {}
                k += 1;
                let Some(mut c) = Counted::open(target, &counters).await else { continue };
                if idle.first_call {
                    let req = Request { id: 3 << 40 | k as i64, msg: rpc::Binary::from_static(b"hello"), json: None };
                    c.call(&req).await;
                }
                let leave = if at >= start + idle.leave_from {
                    counted += 1;
                    (counted - 1).is_multiple_of(idle.leave_every.max(1))
                } else {
                    false
                };
                if leave {
                    counters.idle_connections.fetch_add(1, Ordering::Relaxed);
                    holder.lock().await.push(c);
                } else {
                    // Closed after a while, as the fix's server would.
                    let close_after = idle.close_after;
                    closing.spawn(async move {
                        tokio::time::sleep(close_after).await;
                        drop(c);
                    });
                }
            }
            closing.shutdown().await;
        });
    }
    while tasks.join_next().await.is_some() {}
    // The drain: every connection closes now.
    idle_holder.lock().await.clear();
    counters.report()
}

/// One connection sending calls at `rps` (closed loop when 0) until `end`.
#[allow(clippy::too_many_arguments)]
async fn steady(
    target: SocketAddr,
    shape: &LoadShape,
    counters: &Arc<Counters>,
    conn_id: i64,
    rps: f64,
    from: Instant,
    end: Instant,
    oversized: bool,
) {
    let interval = (rps > 0.0).then(|| Duration::from_secs_f64(1.0 / rps));
    // Stagger the connections' schedules.
    let first = from + interval.map_or(Duration::ZERO, |iv| iv.mul_f64((conn_id % 97) as f64 / 97.0));
    let mut sender = SteadyCalls {
        target,
        shape,
        counters,
        conn_id,
        msg: Bytes::from(vec![b'x'; shape.payload]),
        big: shape
            .oversized
            .as_ref()
            .filter(|_| oversized)
            .map(|o| (o.every.max(1), o.from, Bytes::from(vec![b'O'; o.size]))),
        seq: 0,
        latency: latency_histogram(),
    };
    send_paced(Schedule { first, interval, end }, Duration::from_millis(50), &mut sender).await;
    let mut all = counters.latency.lock().unwrap_or_else(PoisonError::into_inner);
    all.add(&sender.latency).expect("same bounds");
}

/// The calls of one steady connection: every `every`-th call in all is
/// oversized when `big` is set, from its `from` on.
struct SteadyCalls<'a> {
    target: SocketAddr,
    shape: &'a LoadShape,
    counters: &'a Arc<Counters>,
    conn_id: i64,
    msg: Bytes,
    big: Option<(u64, Duration, Bytes)>,
    seq: i64,
    /// This connection's latencies, in nanoseconds.
    latency: Histogram<u64>,
}

impl Sender for SteadyCalls<'_> {
    type Conn = Counted;

    async fn open(&mut self) -> Option<Counted> {
        Counted::open(self.target, self.counters).await
    }

    async fn send(&mut self, conn: &mut Counted, due: Instant) -> bool {
        self.seq += 1;
        let n = self.counters.calls.fetch_add(1, Ordering::Relaxed) + 1;
        let body = match &self.big {
            Some((every, from, big)) if n.is_multiple_of(*every) && due >= self.counters.start + *from => {
                self.counters.oversized_calls.fetch_add(1, Ordering::Relaxed);
                big.clone()
            }
            _ => self.msg.clone(),
        };
        let req = Request {
            id: self.conn_id << 32 | self.seq,
            msg: body.into(),
            json: self.shape.json.clone().map(Into::into),
        };
        let ok = conn.call(&req).await;
        if ok && due >= self.counters.latency_from {
            let _ = self.latency.record((due.elapsed().as_nanos() as u64).max(1));
        }
        ok
    }
}

/// `n` new connections at once, each sending one call; all stay open until
/// every reply is in, so the server sees `n` connections at its peak.
async fn one_surge(target: SocketAddr, n: usize, msg: &Bytes, counters: &Arc<Counters>, round: u64) {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        if let Some(c) = Counted::open(target, counters).await {
            counters.surge_connections.fetch_add(1, Ordering::Relaxed);
            conns.push(c);
        }
    }
    let mut calls = JoinSet::new();
    for (i, mut c) in conns.into_iter().enumerate() {
        let req = Request { id: (2 << 40) | (round as i64) << 20 | i as i64, msg: msg.clone().into(), json: None };
        calls.spawn(async move {
            c.call(&req).await;
            c
        });
    }
    let mut done = Vec::with_capacity(n);
    while let Some(r) = calls.join_next().await {
        if let Ok(c) = r {
            done.push(c);
        }
    }
    drop(done);
}

#[cfg(test)]
mod tests {
    use scenarios::{Burst, Idle, Oversized};

    use super::*;

    /// A healthy Echo server on a loopback port, for as long as the test's
    /// runtime lives.
    async fn echo() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let server = rpc::Server::new(rpc::ServerConfig::default(), crate::cmd::serve::Echo);
        tokio::spawn(server.serve(listener, std::future::pending()));
        addr
    }

    fn steady(conns: usize, rps: u64) -> LoadShape {
        LoadShape { conns, rps, payload: 64, ..LoadShape::default() }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_upstream_leaves_open_one_connection_in_n_from_the_onset() {
        let addr = echo().await;
        let idle = |leave_from, leave_every| Idle {
            per_second: 50.0,
            first_call: true,
            leave_from,
            leave_every,
            close_after: Duration::from_millis(50),
        };
        let run = Duration::from_millis(800);
        let all = drive(addr, &LoadShape { idle: Some(idle(Duration::ZERO, 1)), ..steady(0, 0) }, run, run).await;
        let gated = LoadShape { idle: Some(idle(Duration::from_millis(300), 2)), ..steady(0, 0) };
        let some = drive(addr, &gated, run, run).await;
        // 40 connections in 800 ms; 25 from 300 ms on, half of them left
        // open; the others are closed after 50 ms.
        assert_eq!(all.idle_connections, 40, "{all:?}");
        assert!((12..=13).contains(&some.idle_connections), "{some:?}");
        assert_eq!(some.connections, 40, "{some:?}");
        assert!(some.peak_connections < 20, "the upstream closed the others: {some:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn oversized_calls_start_at_their_onset() {
        let addr = echo().await;
        let shape =
            |from| LoadShape { oversized: Some(Oversized { every: 5, size: 64 << 10, from }), ..steady(1, 100) };
        let run = Duration::from_millis(800);
        let all = drive(addr, &shape(Duration::ZERO), run, run).await;
        let late = drive(addr, &shape(Duration::from_millis(400)), run, run).await;
        assert!((14..=17).contains(&all.oversized_calls), "{all:?}");
        assert!((6..=9).contains(&late.oversized_calls), "half the run, half the calls: {late:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn background_bursts_repeat_and_close() {
        let addr = echo().await;
        let burst = Burst {
            at: Duration::from_millis(200),
            length: Duration::from_millis(100),
            conns: 4,
            rps: 80,
            every: Some(Duration::from_millis(300)),
        };
        let shape = LoadShape { noise_burst: Some(burst), ..steady(1, 50) };
        let report = drive(addr, &shape, Duration::from_millis(900), Duration::ZERO).await;
        // Bursts at 200, 500 and 800 ms, four connections each, one at a time.
        assert_eq!(report.connections, 1 + 3 * 4, "{report:?}");
        assert_eq!(report.peak_connections, 1 + 4, "{report:?}");
    }
}
