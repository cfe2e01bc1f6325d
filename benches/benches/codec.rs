//! The Echo codec: decoding a framed call with fields copied or sliced, and
//! encoding a reply into an output buffer with NoCopy writes off or on.
//!
//! Throughput counts the bytes of the message (frame header excluded for
//! decode, included for encode); the benchmark parameter is the `msg`
//! payload size.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use rpc::codec::{self, DecodeCtx, DecodeMode, Limits, Request, Response, Transport};
use rpc::{Binary, OutputBuffer, Pool, PoolConfig, Taker};

const SIZES: [usize; 5] = [64, 1 << 10, 16 << 10, 256 << 10, 1 << 20];

/// `data` written into a chunk leased from `pool` and handed out as a
/// slice of it, as the server's input buffer does with a socket read.
fn pooled(pool: &Pool, data: &[u8]) -> Binary {
    let mut chunk = pool.lease(data.len(), Taker::User("bench"));
    chunk.spare_mut()[..data.len()].copy_from_slice(data);
    chunk.freeze_to(data.len());
    Binary::from(chunk.slice(0..data.len()))
}

fn payload(size: usize) -> Binary {
    Binary::from((0..size).map(|i| i as u8).collect::<Vec<u8>>())
}

pub fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec_decode_echo_call");
    let pool = Pool::new(PoolConfig::default());
    for size in SIZES {
        let req = Request { id: 42, msg: payload(size), json: None };
        let mut wire = Vec::new();
        codec::encode_call(&mut wire, Transport::Framed, 1, &req).expect("encodable");
        // The frame header is consumed by `probe`/`skip`; the body is what
        // the server decodes.
        let header_len = Transport::Framed.header_len();
        let framed = pooled(&pool, &wire);
        let body = framed.slice(header_len..);
        group.throughput(Throughput::Bytes(body.len() as u64));
        for (name, mode) in [("copy", DecodeMode::Copy), ("nocopy", DecodeMode::NoCopy)] {
            let ctx = DecodeCtx { mode, limits: Limits::default() };
            group.bench_with_input(BenchmarkId::new(name, size), &body, |b, body| {
                b.iter(|| {
                    let (header, mut r) = codec::read_message_header(black_box(body)).expect("valid header");
                    let req = codec::decode_echo_args(&mut r, &ctx).expect("valid args");
                    black_box((header, req))
                })
            });
        }
    }
    group.finish();
}

pub fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec_encode_echo_reply");
    let pool = Pool::new(PoolConfig::default());
    for size in SIZES {
        // An echo handler returns the request's `msg`: a slice of a pooled
        // read buffer.
        let msg = pooled(&pool, &payload(size));
        let resp = Response { id: 42, msg, json: None };
        let len = codec::encoded_len_reply(Transport::Framed, &resp);
        group.throughput(Throughput::Bytes(len as u64));
        for (name, nocopy) in [("copy", false), ("nocopy", true)] {
            let mut out = OutputBuffer::new(pool.clone(), nocopy);
            group.bench_with_input(BenchmarkId::new(name, size), &resp, |b, resp| {
                b.iter(|| {
                    codec::encode_reply(&mut out, Transport::Framed, 1, black_box(resp)).expect("encodable");
                    out.flush();
                    debug_assert_eq!(out.len(), len);
                    // Stands in for the socket write: the buffer keeps its
                    // tail node for the next reply.
                    out.consume(len);
                })
            });
        }
    }
    group.finish();
}

criterion::criterion_group!(benches, decode, encode);
