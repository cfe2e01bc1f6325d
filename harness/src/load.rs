//! `leaklab load`: an open-loop load generator speaking Thrift Echo.
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
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use rpc::codec::{self, DecodeCtx, DecodeMode, Limits, MessageType, Request, Transport};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cli::LoadArgs;

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

/// `leaklab load`.
pub fn run(args: LoadArgs) -> anyhow::Result<ExitCode> {
    let plan = LoadPlan {
        target: args.target,
        conns: args.conns.max(1),
        rps: args.rps,
        payload: args.payload,
        duration: args.duration,
        transport: args.transport.into(),
    };
    let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    let summary = rt.block_on(generate(&plan))?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "{} ok, {} errors in {:.2}s: {:.0} req/s; latency p50 {:.3} ms, p99 {:.3} ms, p999 {:.3} ms, max {:.3} ms{}",
            summary.ok,
            summary.errors,
            summary.seconds,
            summary.rps,
            summary.p50_ms,
            summary.p99_ms,
            summary.p999_ms,
            summary.max_ms,
            if summary.raw_echo { " (raw echo)" } else { "" }
        );
    }
    Ok(if summary.ok > 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
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
        tasks.push(tokio::spawn(async move { connection(&plan, i as i64, start + offset, interval, deadline).await }));
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

async fn connection(
    plan: &LoadPlan,
    conn_id: i64,
    first_due: Instant,
    interval: Option<Duration>,
    deadline: Instant,
) -> ConnResult {
    let mut r = ConnResult {
        hist: Histogram::new_with_bounds(1, 120_000_000_000, 3).expect("valid bounds"),
        ok: 0,
        errors: 0,
        raw_echo: false,
    };
    let msg = Bytes::from(vec![b'x'; plan.payload]);
    let mut due = first_due;
    let mut seq: i64 = 0;
    let mut conn: Option<Conn> = None;
    while Instant::now() < deadline {
        if interval.is_some() {
            tokio::time::sleep_until(due.into()).await;
            if Instant::now() >= deadline {
                break;
            }
        }
        let sent_at = Instant::now();
        let measured_from = if interval.is_some() { due } else { sent_at };
        if conn.is_none() {
            match Conn::connect(plan.target, plan.transport).await {
                Ok(c) => conn = Some(c),
                Err(_) => {
                    r.errors += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    due = next_due(due, interval);
                    continue;
                }
            }
        }
        seq += 1;
        let req = Request { id: conn_id << 32 | seq, msg: msg.clone(), json: None };
        let c = conn.as_mut().expect("connected above");
        match c.call(&req).await {
            Ok(raw) => {
                r.ok += 1;
                r.raw_echo |= raw;
                let _ = r.hist.record((measured_from.elapsed().as_nanos() as u64).max(1));
            }
            Err(e) => {
                tracing::debug!(error = %e, "call failed; reconnecting");
                r.errors += 1;
                conn = None;
            }
        }
        due = next_due(due, interval);
    }
    r
}

fn next_due(due: Instant, interval: Option<Duration>) -> Instant {
    interval.map_or(due, |iv| due + iv)
}

/// One connection of the load generator, one call in flight.
pub struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    transport: Transport,
    seq: i32,
}

impl Conn {
    /// Connects to `target`.
    pub async fn connect(target: SocketAddr, transport: Transport) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(target).await?;
        let _ = stream.set_nodelay(true);
        Ok(Conn { stream, buf: BytesMut::with_capacity(16 << 10), transport, seq: 0 })
    }

    /// One call of `echo(req)`; checks the reply. `Ok(true)` when the peer
    /// echoed the call back verbatim (a raw echo server).
    pub async fn call(&mut self, req: &Request) -> anyhow::Result<bool> {
        self.seq = self.seq.wrapping_add(1);
        let (seq, id, msg) = (self.seq, req.id, &req.msg);
        let mut out = Vec::with_capacity(msg.len() + req.json.as_ref().map_or(0, |j| j.len()) + 64);
        codec::encode_call(&mut out, self.transport, seq, req)?;
        self.stream.write_all(&out).await?;
        let limits = Limits::default();
        let frame = loop {
            if let Some(frame) = codec::probe(&self.buf[..], Some(self.transport), &limits)? {
                break frame;
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                bail!("server closed the connection");
            }
        };
        let mut body = self.buf.split_to(frame.header_len + frame.len).freeze();
        let body = body.split_off(frame.header_len);
        let (header, mut reader) = codec::read_message_header(&body)?;
        if header.seqid != seq {
            bail!("reply seqid {} for call {seq}", header.seqid);
        }
        match header.mtype {
            MessageType::Reply => {
                let ctx = DecodeCtx { mode: DecodeMode::NoCopy, marker: None, limits };
                let resp = codec::decode_echo_result(&mut reader, &ctx)?;
                // Echo returns the id; scenarios decide the reply's size.
                if resp.id != id {
                    bail!("reply id {} for call id {id}", resp.id);
                }
                Ok(false)
            }
            MessageType::Call if body.len() + frame.header_len == out.len() => Ok(true),
            MessageType::Exception => {
                let ctx = DecodeCtx { mode: DecodeMode::Copy, marker: None, limits };
                bail!("server exception: {:?}", codec::decode_exception(&mut reader, &ctx)?)
            }
            other => bail!("unexpected {other:?} message"),
        }
    }
}
