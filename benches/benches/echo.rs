//! The server's echo path in process, without sockets: a framed call
//! arrives in a connection's `InputBuffer` (written into its booked space,
//! standing in for the kernel's copy of a socket read), is framed by a
//! `FrameDecoder`, taken out (`next`), decoded, answered by an echo handler
//! and encoded into the connection's `OutputBuffer`, whose committed bytes
//! are then consumed as a `writev` would send them; the input is released.
//! Buffers live across iterations, as a connection's do, so node reuse,
//! node growth and messages that straddle two nodes are all measured.
//!
//! `copy` is the default server (fields copied out of the read buffer, the
//! reply copied into output nodes); `nocopy` is `--decode nocopy
//! --nocopy-write` (fields sliced, large reply values linked). Throughput
//! counts the call's bytes on the wire.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use rpc::codec::{self, DecodeCtx, DecodeMode, FrameDecoder, Limits, Progress, Request, Response, Transport};
use rpc::{Binary, InputBuffer, OutputBuffer, Pool, PoolConfig, DEFAULT_INPUT_NODE};

const SIZES: [usize; 3] = [1 << 10, 16 << 10, 256 << 10];

/// A connection's buffers and framing state.
struct Conn {
    input: InputBuffer,
    output: OutputBuffer,
    decoder: FrameDecoder,
    mode: DecodeMode,
}

impl Conn {
    fn new(pool: &Pool, mode: DecodeMode, nocopy_write: bool) -> Conn {
        Conn {
            input: InputBuffer::new(pool.clone(), DEFAULT_INPUT_NODE),
            output: OutputBuffer::new(pool.clone(), nocopy_write),
            decoder: FrameDecoder::new(Limits::default()),
            mode,
        }
    }

    /// Puts `wire` into the input as socket reads would.
    fn receive(&mut self, wire: &[u8]) {
        let mut rest = wire;
        while !rest.is_empty() {
            self.input.book();
            let n = self.input.book_len().min(rest.len());
            self.input.book().spare_mut()[..n].copy_from_slice(&rest[..n]);
            self.input.book_ack(n);
            rest = &rest[n..];
        }
    }

    /// Answers every whole call buffered; returns the reply bytes.
    fn serve(&mut self) -> usize {
        while let Progress::Complete(frame) = self.decoder.decode_within(&self.input, usize::MAX).expect("valid stream")
        {
            self.input.skip(frame.header_len);
            let body = self.input.next(frame.len);
            let (header, mut r) = codec::read_message_header(&body).expect("valid header");
            let ctx = DecodeCtx { mode: self.mode, limits: Limits::default() };
            let req = codec::decode_echo_args(&mut r, &ctx).expect("valid args");
            drop(body);
            let resp = Response { id: req.id, msg: req.msg, json: req.json };
            codec::encode_reply(&mut self.output, frame.transport, header.seqid, &resp).expect("encodable");
            self.output.flush();
        }
        let sent = self.output.len();
        self.output.consume(sent);
        self.input.release();
        sent
    }
}

pub fn echo(c: &mut Criterion) {
    let mut group = c.benchmark_group("echo_path");
    let pool = Pool::new(PoolConfig::default());
    for size in SIZES {
        let req = Request { id: 42, msg: Binary::from((0..size).map(|i| i as u8).collect::<Vec<u8>>()), json: None };
        let mut wire = Vec::new();
        codec::encode_call(&mut wire, Transport::Framed, 1, &req).expect("encodable");
        let reply_len =
            codec::encoded_len_reply(Transport::Framed, &Response { id: 42, msg: req.msg.clone(), json: None });
        group.throughput(Throughput::Bytes((wire.len() + reply_len) as u64));
        for (name, mode, nocopy_write) in [("copy", DecodeMode::Copy, false), ("nocopy", DecodeMode::NoCopy, true)] {
            let mut conn = Conn::new(&pool, mode, nocopy_write);
            group.bench_with_input(BenchmarkId::new(name, size), &wire, |b, wire| {
                b.iter(|| {
                    conn.receive(black_box(wire));
                    let sent = conn.serve();
                    debug_assert_eq!(sent, reply_len);
                    black_box(sent)
                })
            });
        }
    }
    group.finish();
}

criterion::criterion_group!(benches, echo);
