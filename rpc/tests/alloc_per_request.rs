//! Heap allocations per request of the Echo server in steady state, counted
//! by dhat.
//!
//! A separate test binary because it needs its own global allocator: dhat
//! counts every allocation of the process, so it must be the
//! `#[global_allocator]` of a binary that runs nothing else (no other test
//! sharing the heap, no other counting allocator such as the one in
//! `tests/codec.rs`). One `#[test]`, as dhat allows one profiler at a time.
//!
//! The server runs as configured for the least copying (NoCopy decoding and
//! NoCopy writes) on a current-thread tokio runtime; the client is a blocking
//! `std` socket in a plain thread that sends a pre-encoded request and reads
//! the reply into a preallocated buffer, so that the client itself allocates
//! nothing per call and the count is the server's.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use rpc::codec::{self, DecodeMode, Request, Response, Transport};
use rpc::{Binary, Handler, HandlerError, Pool, PoolConfig, Server, ServerConfig};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// A small call, several to an input node, and a large one, a node of its
/// own each (the sizes at which the nocopy path made 0.144 and 1.0
/// allocations per call while a field was a `Bytes` handle).
const PAYLOADS: [usize; 2] = [1 << 10, 64 << 10];
const WARM_UP: u64 = 2_000;
const MEASURED: u64 = 5_000;

struct Echo;

impl Handler for Echo {
    async fn echo(&self, req: Request) -> Result<Response, HandlerError> {
        Ok(Response { id: req.id, msg: req.msg, json: req.json })
    }
}

/// Sends `request` and reads exactly `reply.len()` bytes back, `calls` times.
fn calls(stream: &mut TcpStream, request: &[u8], reply: &mut [u8], calls: u64) {
    for _ in 0..calls {
        stream.write_all(request).expect("request sent");
        stream.read_exact(reply).expect("whole reply read");
    }
}

#[test]
fn echo_allocates_nothing_per_request_in_steady_state() {
    // On failure, dhat saves the profile of the run here: open it in dhat's
    // viewer to see the allocation sites.
    let profile = concat!(env!("CARGO_TARGET_TMPDIR"), "/alloc_per_request-heap.json");
    let _profiler = dhat::Profiler::builder().testing().file_name(profile).build();
    for payload in PAYLOADS {
        let (blocks, bytes) = steady_state(payload);
        let per_request = blocks as f64 / MEASURED as f64;
        println!(
            "steady state, {payload} B payload, {MEASURED} calls: {blocks} allocations ({per_request:.3} per \
             request), {bytes} bytes ({:.0} per request)",
            bytes as f64 / MEASURED as f64
        );
        // Decoded fields are slices of the pooled input node, counted in
        // the chunk's own book-keeping, and NoCopy writes link them the
        // same way: nothing on the path allocates per call. A `Bytes`
        // handle made one owner box per node (0.144 per call at 1 KiB,
        // one at 64 KiB). A few allocations of the runtime's own (a timer
        // entry, a waker) may fall in the window: the bound is 0.1 per
        // call, where one allocation per node would be 0.14 at 1 KiB.
        dhat::assert!(per_request <= 0.1, "{payload} B: {per_request:.3} allocations per request, expected about 0");
    }
}

/// Runs an Echo server and one client for `WARM_UP` and then `MEASURED`
/// calls of `payload` bytes; the allocations and bytes of the measured
/// calls.
fn steady_state(payload: usize) -> (u64, u64) {
    let msg = Binary::from((0..payload).map(|i| i as u8).collect::<Vec<u8>>());
    let req = Request { id: 7, msg: msg.clone(), json: None };
    let mut request = Vec::new();
    codec::encode_call(&mut request, Transport::Framed, 1, &req).expect("encodable");
    let resp = Response { id: 7, msg, json: None };
    let mut expected = Vec::new();
    codec::encode_reply(&mut expected, Transport::Framed, 1, &resp).expect("encodable");
    assert_eq!(expected.len(), codec::encoded_len_reply(Transport::Framed, &resp));

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bound");
    let addr = listener.local_addr().expect("local address");
    let config = ServerConfig {
        pool: Pool::new(PoolConfig::default()),
        decode: DecodeMode::NoCopy,
        nocopy_write: true,
        grace: Duration::from_secs(2),
        ..ServerConfig::default()
    };
    let server = Server::new(config, Echo);
    let stats = server.stats();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();

    let client = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).expect("connected");
        stream.set_nodelay(true).expect("nodelay");
        let mut reply = vec![0u8; expected.len()];
        calls(&mut stream, &request, &mut reply, WARM_UP);
        assert_eq!(reply, expected, "the server echoes the request");
        let before = dhat::HeapStats::get();
        calls(&mut stream, &request, &mut reply, MEASURED);
        let after = dhat::HeapStats::get();
        assert_eq!(reply, expected, "the server echoes the request");
        drop(stream);
        let _ = stop_tx.send(());
        (before, after)
    });

    rt.block_on(server.serve(listener, async move {
        let _ = stop_rx.await;
    }))
    .expect("server ran");
    let (before, after) = client.join().expect("client thread");
    assert_eq!(stats.counts().requests, WARM_UP + MEASURED);
    (after.total_blocks - before.total_blocks, after.total_bytes - before.total_bytes)
}
