//! The open-loop load generator of `leaklab load`, speaking Thrift Echo.
//!
//! Each connection keeps one call in flight. With `--rps R` every
//! connection sends on a fixed schedule (R / conns per second) and a
//! request's latency is measured from when it was *due*, not when it went
//! out, so a slow server cannot hide its queueing (no coordinated omission).
//! With `--rps 0` each connection sends its next call as soon as the
//! previous one is answered.
//!
//! Replies are checked: a `REPLY` must carry the request's id and a `msg` of
//! the payload's length. A `CALL` echoed back verbatim is accepted too, so
//! the same load measures `leaklab serve --raw-echo`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use rpc::codec::{Request, Transport};
use serde::Serialize;

use crate::loadgen::conn::Conn;
use crate::loadgen::paced::{send_paced, Schedule, Sender};

/// What one load run measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadSummary {
    /// Calls answered correctly.
    pub ok: u64,
    /// Calls that failed (bad reply, closed connection, refused connect).
    pub errors: u64,
    /// Wall time of the run in seconds.
    pub seconds: f64,
    /// Correct answers per second.
    pub rps: f64,
    /// Latency percentiles in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest latency seen.
    pub max_ms: f64,
    /// Whether the peer echoed raw bytes instead of replying.
    pub raw_echo: bool,
}

/// Settings of one load run (also used by the harness's own runs).
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// Server address.
    pub target: SocketAddr,
    /// Connections.
    pub conns: usize,
    /// Requests per second in all; 0 for closed loop.
    pub rps: u64,
    /// `msg` bytes.
    pub payload: usize,
    /// Sending time.
    pub duration: Duration,
    /// Framed or unframed.
    pub transport: Transport,
}

struct ConnResult {
    hist: Histogram<u64>,
    ok: u64,
    errors: u64,
    raw_echo: bool,
}

/// Runs the plan and merges every connection's figures.
pub async fn generate(plan: &LoadPlan) -> anyhow::Result<LoadSummary> {
    let start = Instant::now();
    let deadline = start + plan.duration;
    let interval = (plan.rps > 0).then(|| Duration::from_secs_f64(plan.conns as f64 / plan.rps as f64));
    let mut tasks = Vec::with_capacity(plan.conns);
    for i in 0..plan.conns {
        let plan = plan.clone();
        // Stagger the schedules so the connections do not send in lockstep.
        let offset = interval.map_or(Duration::ZERO, |iv| iv.mul_f64(i as f64 / plan.conns as f64));
        let schedule = Schedule { first: start + offset, interval, end: deadline };
        tasks.push(tokio::spawn(async move { connection(&plan, i as i64, schedule).await }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 120_000_000_000, 3).expect("valid bounds");
    let (mut ok, mut errors, mut raw_echo) = (0, 0, false);
    for t in tasks {
        let r = t.await.context("load connection panicked")?;
        hist.add(&r.hist).expect("same bounds");
        ok += r.ok;
        errors += r.errors;
        raw_echo |= r.raw_echo;
    }
    let seconds = start.elapsed().as_secs_f64();
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1e6;
    Ok(LoadSummary {
        ok,
        errors,
        seconds,
        rps: ok as f64 / seconds,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: hist.max() as f64 / 1e6,
        raw_echo,
    })
}

async fn connection(plan: &LoadPlan, conn_id: i64, schedule: Schedule) -> ConnResult {
    let mut sender = Calls {
        plan,
        conn_id,
        msg: Bytes::from(vec![b'x'; plan.payload]),
        seq: 0,
        r: ConnResult {
            hist: Histogram::new_with_bounds(1, 120_000_000_000, 3).expect("valid bounds"),
            ok: 0,
            errors: 0,
            raw_echo: false,
        },
    };
    let failed_opens = send_paced(schedule, Duration::from_millis(100), &mut sender).await;
    let mut r = sender.r;
    r.errors += failed_opens;
    r
}

/// One connection's calls, measured from when each was due.
struct Calls<'a> {
    plan: &'a LoadPlan,
    conn_id: i64,
    msg: Bytes,
    seq: i64,
    r: ConnResult,
}

impl Sender for Calls<'_> {
    type Conn = Conn;

    async fn open(&mut self) -> Option<Conn> {
        Conn::connect(self.plan.target, self.plan.transport).await.ok()
    }

    async fn send(&mut self, c: &mut Conn, measured_from: Instant) -> bool {
        self.seq += 1;
        let req = Request { id: self.conn_id << 32 | self.seq, msg: self.msg.clone().into(), json: None };
        let r = &mut self.r;
        match c.call(&req).await {
            Ok(raw) => {
                r.ok += 1;
                r.raw_echo |= raw;
                let _ = r.hist.record((measured_from.elapsed().as_nanos() as u64).max(1));
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "call failed; reconnecting");
                r.errors += 1;
                false
            }
        }
    }
}
