//! Hostile peers against the real server over real TCP, one test per
//! attack. Each runs a well-behaved client on its own connection alongside
//! and checks that every one of its calls is answered, that the attacking
//! connection is closed with the matching counter, and that the pool (one
//! per test, so its counters are exact) stays within the input budget plus
//! a stated slack.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rpc::codec::{self, DecodeMode, Limits, MessageType, Request, Transport};
use rpc::lbcache::{Instance, StaticResolver};
use rpc::Binary;
use rpc::{Client, ClientConfig, Pool, PoolConfig, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::start;

/// A pool that keeps what it caches until trimmed, so `leased_bytes` is
/// exactly what the buffers hold.
fn own_pool() -> Pool {
    Pool::new(PoolConfig { release_after: None, ..PoolConfig::default() })
}

fn config(pool: &Pool) -> ServerConfig {
    ServerConfig { pool: pool.clone(), grace: Duration::from_secs(2), ..ServerConfig::default() }
}

/// A well-behaved caller on its own connection, calling until stopped, and
/// the highest `leased_bytes` of the server's pool seen meanwhile.
struct GoodClient {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(u64, Vec<String>)>,
    peak: Arc<AtomicUsize>,
    sampler: tokio::task::JoinHandle<()>,
}

impl GoodClient {
    async fn start(addr: SocketAddr, name: &str, pool: &Pool) -> GoodClient {
        let resolver = StaticResolver::new(name).with_target("echo", vec![Instance::new(addr, 10)]);
        let mut cfg = ClientConfig::new("echo", Arc::new(resolver));
        cfg.transport = Transport::Framed;
        cfg.decode = DecodeMode::Copy;
        cfg.pool = Pool::new(PoolConfig::default());
        let client = Client::new(cfg).unwrap();
        // Connected before any attack.
        client.call(&Request { id: 0, msg: Binary::from_static(b"hello"), json: None }).await.unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let task = tokio::spawn(async move {
            let (mut ok, mut errors) = (0u64, Vec::new());
            let mut i = 1;
            while !stop2.load(Ordering::Relaxed) {
                let req = Request { id: i, msg: Binary::from(vec![b'g'; 100]), json: None };
                match client.call(&req).await {
                    Ok(resp) if resp.id == i && resp.msg == req.msg => ok += 1,
                    Ok(resp) => errors.push(format!("wrong reply {}", resp.id)),
                    Err(e) => errors.push(e.to_string()),
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            client.close();
            (ok, errors)
        });
        let peak = Arc::new(AtomicUsize::new(0));
        let (peak2, pool2, stop3) = (peak.clone(), pool.clone(), stop.clone());
        let sampler = tokio::spawn(async move {
            while !stop3.load(Ordering::Relaxed) {
                peak2.fetch_max(pool2.stats().leased_bytes, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        GoodClient { stop, task, peak, sampler }
    }

    /// Stops; asserts every call was answered; returns the peak of the
    /// pool's leased bytes.
    async fn finish(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let (ok, errors) = self.task.await.unwrap();
        self.sampler.await.unwrap();
        assert!(errors.is_empty(), "good calls failed: {errors:?}");
        assert!(ok > 0, "the good client made no call");
        self.peak.load(Ordering::Relaxed)
    }
}

/// Reads until the server closes the connection (end or reset); fails if it
/// stays open for 10 s.
async fn assert_closed(stream: &mut TcpStream) {
    let mut sink = vec![0u8; 64 << 10];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server left the connection open");
}

/// Waits (up to 10 s) until `f` holds.
async fn eventually(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..1000 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// An unframed echo call whose arguments carry, before the request, an
/// unknown field 9: a list<struct> of `n` empty structs.
fn unframed_list_call(n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    codec::write_message_header(&mut v, b"echo", MessageType::Call, 1);
    codec::write_field_header(&mut v, codec::TType::List, 9);
    codec::write_list_header(&mut v, codec::TType::Struct, n);
    v.resize(v.len() + n, 0); // each struct: its stop byte
                              // field 1: the request { 1: id, 2: msg }
    codec::write_field_header(&mut v, codec::TType::Struct, 1);
    codec::write_field_header(&mut v, codec::TType::I64, 1);
    codec::write_i64(&mut v, 42);
    codec::write_field_header(&mut v, codec::TType::String, 2);
    codec::write_binary_slice(&mut v, b"list");
    codec::write_stop(&mut v);
    codec::write_stop(&mut v);
    v
}

/// Reads one unframed reply message of a call whose reply is small: the
/// whole stream up to its end is the reply.
async fn read_unframed_reply(stream: &mut TcpStream) -> Binary {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "closed before the reply");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(f) = codec::probe(&buf[..], Some(Transport::Unframed), &Limits::default()).unwrap() {
            return Binary::from(buf).slice(f.body());
        }
    }
}

#[tokio::test]
async fn unframed_8m_list_of_structs_in_1k_writes_is_scanned_once_on_two_connections() {
    let pool = own_pool();
    let limits = Limits { max_frame: 9 << 20, ..Limits::default() };
    let server = start(ServerConfig { limits, ..config(&pool) }).await;
    let good = GoodClient::start(server.addr, "adv-quadratic", &pool).await;
    let call = Arc::new(unframed_list_call(8 << 20));
    let mut attackers = Vec::new();
    for _ in 0..2 {
        let (addr, call) = (server.addr, call.clone());
        attackers.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            for piece in call.chunks(1 << 10) {
                s.write_all(piece).await.unwrap();
            }
            read_unframed_reply(&mut s).await
        }));
    }
    for a in attackers {
        let reply = a.await.unwrap();
        let (header, mut r) = codec::read_message_header(&reply).unwrap();
        assert_eq!(header.mtype, MessageType::Reply);
        let resp = codec::decode_echo_result(&mut r, &codec::DecodeCtx::default()).unwrap();
        assert_eq!((resp.id, &resp.msg[..]), (42, &b"list"[..]));
    }
    let peak = good.finish().await;
    let counts = server.stats.counts();
    assert_eq!(counts.protocol_errors, 0);
    assert_eq!(counts.budget_closes, 0);
    // Two 9 MiB messages, each in up to two generations of nodes and one
    // contiguous copy, plus the good client's buffers.
    assert!(peak <= 2 * 3 * (16 << 20), "pool peak {peak}");
    server.shutdown().await;
}

#[tokio::test]
async fn unframed_list_past_max_frame_is_refused_on_its_header() {
    let pool = own_pool();
    let limits = Limits { max_frame: 1 << 20, ..Limits::default() };
    let server = start(ServerConfig { limits, ..config(&pool) }).await;
    let good = GoodClient::start(server.addr, "adv-refused-list", &pool).await;
    let call = unframed_list_call(8 << 20);
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    // Only the first KiB: the list's count already passes max_frame.
    s.write_all(&call[..1 << 10]).await.unwrap();
    assert_closed(&mut s).await;
    let peak = good.finish().await;
    assert_eq!(server.stats.counts().protocol_errors, 1);
    assert!(peak <= 1 << 20, "pool peak {peak}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_huge_unknown_method_name_is_not_repeated() {
    let pool = own_pool();
    let server = start(config(&pool)).await;
    let good = GoodClient::start(server.addr, "adv-name", &pool).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    // "é" is two bytes: a cut at 128 bytes would split one.
    let name: Vec<u8> = std::iter::once(b'x').chain("é".repeat(8 << 20).bytes()).collect();
    for seq in 0..3 {
        let mut body = Vec::new();
        codec::write_message_header(&mut body, &name, MessageType::Call, seq);
        codec::write_stop(&mut body);
        s.write_all(&(body.len() as i32).to_be_bytes()).await.unwrap();
        s.write_all(&body).await.unwrap();
    }
    for seq in 0..3 {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).await.unwrap();
        let len = u32::from_be_bytes(len) as usize;
        assert!(len < 1024, "reply of {len} bytes");
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).await.unwrap();
        let body = Binary::from(body);
        let (header, mut r) = codec::read_message_header(&body).unwrap();
        assert_eq!((header.mtype, header.seqid), (MessageType::Exception, seq));
        let cut = std::str::from_utf8(&header.name).expect("cut on a character boundary");
        assert!(cut.ends_with('…') && cut.len() <= 128 + '…'.len_utf8(), "name {cut:?}");
        let exc = codec::decode_exception(&mut r, &codec::DecodeCtx::default()).unwrap();
        assert_eq!(exc.kind, codec::ApplicationExceptionKind::UnknownMethod);
        assert!(exc.message.len() <= "unknown method ".len() + 128 + 3, "message of {} bytes", exc.message.len());
    }
    good.finish().await;
    server.shutdown().await;
}

#[tokio::test]
async fn partial_frames_on_many_connections_close_the_greediest_within_the_budget() {
    let pool = own_pool();
    let max_input = 8 << 20;
    let server = start(ServerConfig { max_input_bytes: max_input, ..config(&pool) }).await;
    let good = GoodClient::start(server.addr, "adv-partial", &pool).await;
    // 16 connections each declare a 4 MiB frame and send 3 MiB of it: 48
    // MiB would be buffered without the budget.
    let conns = 16;
    let closed = Arc::new(AtomicU64::new(0));
    let mut attackers = Vec::new();
    for i in 0..conns {
        let (addr, closed) = (server.addr, closed.clone());
        attackers.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let mut head = (4i32 << 20).to_be_bytes().to_vec();
            codec::write_message_header(&mut head, b"echo", MessageType::Call, i);
            let _ = s.write_all(&head).await;
            let piece = vec![0u8; 64 << 10];
            for _ in 0..48 {
                if s.write_all(&piece).await.is_err() {
                    break;
                }
            }
            // Hold the partial frame; see whether the server closes it.
            let mut one = [0u8; 1];
            match tokio::time::timeout(Duration::from_secs(3), s.read(&mut one)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    closed.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }));
    }
    for a in attackers {
        a.await.unwrap();
    }
    let peak = good.finish().await;
    let counts = server.stats.counts();
    // Slack: the first 8 KiB node of each connection, one node admitted
    // while the greediest gives its memory back, and the good client's
    // buffers (a few 8 KiB nodes).
    let slack = (conns as usize + 2) * (8 << 10) + (4 << 20) + (64 << 10);
    eprintln!("partial frames: peak {peak} bytes, {counts:?}");
    assert!(peak <= max_input + slack, "pool peak {peak} over {max_input} + {slack}");
    assert!(counts.budget_closes >= 8, "closed {} connections", counts.budget_closes);
    assert_eq!(closed.load(Ordering::Relaxed), counts.budget_closes, "every closed attacker was counted");
    assert_eq!(counts.protocol_errors, 0);
    server.shutdown().await;
    assert_eq!(pool.stats().leased_bytes, 0);
}

#[tokio::test]
async fn connections_beyond_max_conns_are_refused() {
    let pool = own_pool();
    let server = start(ServerConfig { max_conns: 4, ..config(&pool) }).await;
    let good = GoodClient::start(server.addr, "adv-conns", &pool).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(server.addr).await.unwrap());
    }
    let stats = server.stats.clone();
    assert!(eventually(|| stats.counts().open_conns == 4).await);
    for _ in 0..5 {
        let mut extra = TcpStream::connect(server.addr).await.unwrap();
        assert_closed(&mut extra).await;
    }
    let peak = good.finish().await;
    let counts = server.stats.counts();
    assert_eq!(counts.refused_conns, 5);
    assert_eq!(counts.opened_conns, 4);
    assert!(peak <= 4 * (64 << 10), "pool peak {peak}");
    drop(held);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_unframed_message_gives_way_every_quantum_and_is_decoded_off_the_worker() {
    let pool = own_pool();
    let server = start(config(&pool)).await;
    let good = GoodClient::start(server.addr, "adv-yield", &pool).await;
    let call = unframed_list_call(12 << 20);
    let before = server.stats.counts();
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(&call).await.unwrap();
    let reply = read_unframed_reply(&mut s).await;
    let (header, mut r) = codec::read_message_header(&reply).unwrap();
    assert_eq!(header.mtype, MessageType::Reply);
    let resp = codec::decode_echo_result(&mut r, &codec::DecodeCtx::default()).unwrap();
    assert_eq!((resp.id, &resp.msg[..]), (42, &b"list"[..]));
    good.finish().await;
    let after = server.stats.counts();
    // The message is larger than an input node (MALLOC_MAX), so its copy
    // into one chunk alone gives way once per quantum but the last; the
    // scan and the reads add more.
    let quanta = (call.len() / rpc::WORK_QUANTUM) as u64;
    assert!(after.yields - before.yields >= quanta - 1, "{} yields for {quanta} quanta", after.yields - before.yields);
    assert_eq!(after.offloaded_decodes - before.offloaded_decodes, 1);
    assert_eq!(after.protocol_errors, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn small_messages_never_give_way_nor_leave_the_worker() {
    let pool = own_pool();
    let server = start(config(&pool)).await;
    let good = GoodClient::start(server.addr, "adv-small", &pool).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    good.finish().await;
    let counts = server.stats.counts();
    assert!(counts.requests > 1);
    assert_eq!((counts.yields, counts.offloaded_decodes, counts.accept_pauses), (0, 0, 0));
    server.shutdown().await;
}

#[tokio::test]
async fn accepting_pauses_at_max_conns_and_a_waiting_peer_is_admitted_when_one_closes() {
    let pool = own_pool();
    let server = start(ServerConfig { max_conns: 3, ..config(&pool) }).await;
    let good = GoodClient::start(server.addr, "adv-pause", &pool).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(TcpStream::connect(server.addr).await.unwrap());
    }
    let stats = server.stats.clone();
    assert!(eventually(|| stats.counts().open_conns == 3).await);
    // The kernel completes these handshakes; they wait in the backlog.
    let waiting = 100;
    let mut extras = Vec::new();
    for _ in 0..waiting {
        extras.push(TcpStream::connect(server.addr).await.unwrap());
    }
    assert!(eventually(|| stats.counts().accept_pauses >= 1).await);
    // One held connection closes: a waiting peer takes its place instead
    // of every waiting peer having been closed as it arrived.
    drop(held.pop());
    assert!(eventually(|| stats.counts().opened_conns == 4).await, "{:?}", stats.counts());
    // Each waiting peer is either the admitted one or refused in turn.
    assert!(eventually(|| stats.counts().refused_conns == waiting - 1).await, "{:?}", stats.counts());
    let counts = stats.counts();
    assert_eq!(counts.opened_conns, 4);
    assert!(counts.accept_pauses >= 2, "paused {} times", counts.accept_pauses);
    good.finish().await;
    drop((held, extras));
    server.shutdown().await;
}

#[tokio::test]
async fn a_peer_that_never_reads_is_closed() {
    let pool = own_pool();
    let server =
        start(ServerConfig { write_timeout: Duration::from_millis(300), max_output_bytes: 1 << 20, ..config(&pool) })
            .await;
    let good = GoodClient::start(server.addr, "adv-noread", &pool).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let (mut rd, mut wr) = s.split();
    let req = Request { id: 1, msg: Binary::from(vec![b'r'; 256 << 10]), json: None };
    let mut call = Vec::new();
    codec::encode_call(&mut call, Transport::Framed, 1, &req).unwrap();
    // 64 calls of 256 KiB: 16 MiB of replies that are never read.
    let writing = async {
        for _ in 0..64 {
            if wr.write_all(&call).await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), writing).await;
    let stats = server.stats.clone();
    assert!(
        eventually(|| {
            let c = stats.counts();
            c.write_timeouts + c.output_overflows == 1
        })
        .await
    );
    // Now read: what was sent ends, the connection is closed.
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), rd.read_to_end(&mut sink)).await.expect("closed");
    let peak = good.finish().await;
    let counts = server.stats.counts();
    assert_eq!(counts.write_timeouts + counts.output_overflows, 1);
    // The replies queued: at most max_output_bytes plus one reply; the input
    // read but not answered: the default input budget bounds it, and here
    // the peer sent 16 MiB.
    assert!(peak <= (1 << 20) + (512 << 10) + 2 * (16 << 20), "pool peak {peak}");
    server.shutdown().await;
}

#[tokio::test]
async fn output_buffers_of_slow_readers_count_in_the_budget() {
    let pool = own_pool();
    let max_input = 8 << 20;
    let server = start(ServerConfig { max_input_bytes: max_input, ..config(&pool) }).await;
    let good = GoodClient::start(server.addr, "adv-slowread", &pool).await;
    // Peers one after the other (300 ms apart) each send one 1 MiB call
    // and then read its reply 4 KiB at a time, every 100 ms: each read is
    // progress, so no write timeout fires. Each reply was copied into an
    // output node of its connection (the kernel takes what it can of it;
    // the node stays as the buffer's tail), held beside the input it
    // answers. Their inputs alone fit the budget (three read buffers of
    // about 2 MiB each); with their output nodes counted they do not, and
    // one is closed. Uncounted, the output would hold as much again as
    // the input, past the budget, and nothing would be closed.
    let conns = 3;
    let req = Request { id: 1, msg: Binary::from(vec![b's'; 1 << 20]), json: None };
    let mut call = Vec::new();
    codec::encode_call(&mut call, Transport::Framed, 1, &req).unwrap();
    let call = Arc::new(call);
    let mut attackers = Vec::new();
    for i in 0..conns {
        let (addr, call) = (server.addr, call.clone());
        attackers.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300 * i as u64)).await;
            let mut s = TcpStream::connect(addr).await.unwrap();
            if s.write_all(&call).await.is_err() {
                return;
            }
            let mut piece = [0u8; 4 << 10];
            for _ in 0..40 {
                match s.read(&mut piece).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }));
    }
    for a in attackers {
        a.await.unwrap();
    }
    let peak = good.finish().await;
    let counts = server.stats.counts();
    // Slack: the first node of each connection, and a reply made before it
    // is counted by each connection whose call the budget admitted (1 MiB
    // each) with a node of its input.
    let slack = (conns + 2) * (8 << 10) + conns * (1 << 20) + (2 << 20);
    eprintln!("slow readers: peak {peak} bytes, {counts:?}");
    assert!(peak <= max_input + slack, "pool peak {peak} over {max_input} + {slack}");
    assert!(counts.budget_closes >= 1, "{counts:?}");
    assert_eq!(counts.write_timeouts + counts.output_overflows + counts.protocol_errors, 0, "{counts:?}");
    server.shutdown().await;
    assert_eq!(pool.stats().leased_bytes, 0);
}

#[tokio::test]
async fn a_handler_that_panics_gives_its_connection_s_place_back() {
    let pool = own_pool();
    let server = start(ServerConfig { max_conns: 2, ..config(&pool) }).await;
    let req = Request { id: 7, msg: Binary::from_static(b"panic"), json: None };
    let mut call = Vec::new();
    codec::encode_call(&mut call, Transport::Framed, 7, &req).unwrap();
    // More panicking calls than `max_conns`: were a panicked connection
    // still counted open, accepting would pause for good after two.
    for _ in 0..4 {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(&call).await.unwrap();
        assert_closed(&mut s).await;
    }
    let stats = server.stats.clone();
    assert!(eventually(|| stats.counts().open_conns == 0).await, "{:?}", stats.counts());
    let good = GoodClient::start(server.addr, "adv-panic", &pool).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    good.finish().await;
    assert_eq!(server.stats.counts().refused_conns, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn a_trickle_is_closed_by_the_frame_timeout() {
    let pool = own_pool();
    let server = start(ServerConfig { frame_timeout: Some(Duration::from_millis(300)), ..config(&pool) }).await;
    let good = GoodClient::start(server.addr, "adv-trickle", &pool).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let req = Request { id: 1, msg: Binary::from_static(b"slow"), json: None };
    let mut call = Vec::new();
    codec::encode_call(&mut call, Transport::Framed, 1, &req).unwrap();
    // One byte every 100 ms: each read comes well within any per-read
    // timeout, the whole message would take 3 s.
    let mut sent = 0;
    for b in &call[..call.len() - 1] {
        if s.write_all(&[*b]).await.is_err() {
            break;
        }
        sent += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if server.stats.counts().frame_timeouts == 1 {
            break;
        }
    }
    assert!(sent < call.len() - 1, "the whole trickle was accepted");
    assert_closed(&mut s).await;
    let peak = good.finish().await;
    let counts = server.stats.counts();
    assert_eq!(counts.frame_timeouts, 1);
    assert!(peak <= 4 * (64 << 10), "pool peak {peak}");
    server.shutdown().await;
}
