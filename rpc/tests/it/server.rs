//! The server over real TCP: round trips with the crate's own client, bad
//! input on one connection leaving the others alone, the idle timeout,
//! graceful shutdown, and what legacy barrier slots keep after a surge.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rpc::codec::{self, DecodeMode, Limits, Request, Transport};
use rpc::lbcache::{Instance, StaticResolver};
use rpc::Binary;
use rpc::{BarrierMode, Barriers, Client, ClientConfig, Pool, PoolConfig, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::start;

fn test_config(pool: &Pool) -> ServerConfig {
    ServerConfig { pool: pool.clone(), grace: Duration::from_secs(2), ..ServerConfig::default() }
}

fn client_for(addr: SocketAddr, name: &str, transport: Transport, decode: DecodeMode) -> Client {
    let resolver = StaticResolver::new(name).with_target("echo", vec![Instance::new(addr, 10)]);
    let mut cfg = ClientConfig::new("echo", Arc::new(resolver));
    cfg.transport = transport;
    cfg.decode = decode;
    cfg.pool = Pool::new(PoolConfig::default());
    Client::new(cfg).unwrap()
}

fn frame_of(req: &Request, transport: Transport, seq: i32) -> Vec<u8> {
    let mut out = Vec::new();
    codec::encode_call(&mut out, transport, seq, req).unwrap();
    out
}

/// Reads one framed reply and returns its message bytes.
async fn read_framed(stream: &mut TcpStream) -> std::io::Result<Binary> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).await?;
    Ok(Binary::from(body))
}

/// The server closes the connection: reading reaches the end (or a reset)
/// instead of waiting forever.
async fn assert_closed(stream: &mut TcpStream) {
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "the server left the connection open");
}

#[tokio::test]
async fn round_trips_every_transport_and_mode() {
    for (decode, nocopy_write) in [(DecodeMode::Copy, false), (DecodeMode::NoCopy, true)] {
        let pool = Pool::new(PoolConfig::default());
        let server = start(ServerConfig { decode, nocopy_write, ..test_config(&pool) }).await;
        for transport in [Transport::Framed, Transport::Unframed] {
            for client_decode in [DecodeMode::Copy, DecodeMode::NoCopy] {
                let name = format!("rt-{decode:?}-{transport:?}-{client_decode:?}");
                let client = client_for(server.addr, &name, transport, client_decode);
                for (i, size) in [0usize, 1, 4096, 4097, 100_000, 3 << 20].into_iter().enumerate() {
                    let msg = Binary::from((0..size).map(|j| (j % 251) as u8).collect::<Vec<_>>());
                    let json = (i % 2 == 0).then(|| Binary::from(format!("{{\"n\":{size}}}")));
                    let req = Request { id: i as i64 - 3, msg: msg.clone(), json: json.clone() };
                    let resp = client.call(&req).await.unwrap();
                    assert_eq!((resp.id, &resp.msg, &resp.json), (req.id, &msg, &json), "{name} size {size}");
                }
                client.close();
            }
        }
        server.shutdown().await;
    }
}

#[tokio::test]
async fn handler_errors_and_unknown_methods_become_application_exceptions() {
    let pool = Pool::new(PoolConfig::default());
    let server = start(test_config(&pool)).await;
    let client = client_for(server.addr, "exc", Transport::Framed, DecodeMode::Copy);
    let err = client.call(&Request { id: 1, msg: Binary::from_static(b"fail"), json: None }).await.unwrap_err();
    assert!(err.to_string().contains("asked to fail"), "{err}");
    // The connection went back to the pool and still works.
    let ok = client.call(&Request { id: 2, msg: Binary::from_static(b"ok"), json: None }).await.unwrap();
    assert_eq!(ok.id, 2);

    let mut raw = TcpStream::connect(server.addr).await.unwrap();
    let mut msg = frame_of(&Request { id: 3, msg: Binary::new(), json: None }, Transport::Framed, 77);
    msg[12..16].copy_from_slice(b"nope"); // method name "echo" -> "nope"
    raw.write_all(&msg).await.unwrap();
    let reply = read_framed(&mut raw).await.unwrap();
    let (header, mut r) = codec::read_message_header(&reply).unwrap();
    assert_eq!((header.mtype, header.seqid), (codec::MessageType::Exception, 77));
    let exc = codec::decode_exception(&mut r, &codec::DecodeCtx::new(DecodeMode::Copy)).unwrap();
    assert_eq!(exc.kind, codec::ApplicationExceptionKind::UnknownMethod);
    server.shutdown().await;
}

#[tokio::test]
async fn oversized_length_prefix_is_refused_before_allocating() {
    let pool = Pool::new(PoolConfig::default());
    let limits = Limits { max_frame: 1 << 20, ..Limits::default() };
    let server = start(ServerConfig { limits, ..test_config(&pool) }).await;
    let mut bad = TcpStream::connect(server.addr).await.unwrap();
    // Claims 2 GiB - 1, then sends a message header.
    bad.write_all(&[0x7f, 0xff, 0xff, 0xff, 0x80, 0x01, 0x00, 0x01]).await.unwrap();
    assert_closed(&mut bad).await;
    let stats = pool.stats();
    assert!(stats.allocated_bytes < 1 << 20, "allocated {} bytes for a refused frame", stats.allocated_bytes);
    assert_eq!(server.stats.counts().protocol_errors, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn a_corrupt_or_partial_message_leaves_other_connections_alone() {
    let pool = Pool::new(PoolConfig::default());
    let server = start(test_config(&pool)).await;
    let good = client_for(server.addr, "isolation", Transport::Framed, DecodeMode::Copy);

    // A partial frame left idle on one connection ...
    let mut partial = TcpStream::connect(server.addr).await.unwrap();
    let whole = frame_of(&Request { id: 9, msg: Binary::from(vec![1u8; 5000]), json: None }, Transport::Framed, 1);
    partial.write_all(&whole[..whole.len() / 2]).await.unwrap();
    // ... garbage on another, and a negative string length on a third.
    let mut garbage = TcpStream::connect(server.addr).await.unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut negative = TcpStream::connect(server.addr).await.unwrap();
    let mut neg = frame_of(&Request { id: 1, msg: Binary::from_static(b"abcd"), json: None }, Transport::Framed, 2);
    let at = neg.len() - 4 - 1 - 1 - 4; // msg length: before the 4 bytes, the struct stop and the args stop
    neg[at..at + 4].copy_from_slice(&(-5i32).to_be_bytes());
    negative.write_all(&neg).await.unwrap();

    assert_closed(&mut garbage).await;
    for i in 0..50 {
        let resp = good.call(&Request { id: i, msg: Binary::from_static(b"still here"), json: None }).await.unwrap();
        assert_eq!(resp.id, i);
    }
    // The negative length is answered with a protocol exception, then closed.
    let reply = read_framed(&mut negative).await.unwrap();
    assert_eq!(codec::read_message_header(&reply).unwrap().0.mtype, codec::MessageType::Exception);
    assert_closed(&mut negative).await;

    // The partial frame completes later and is answered.
    partial.write_all(&whole[whole.len() / 2..]).await.unwrap();
    let reply = read_framed(&mut partial).await.unwrap();
    assert_eq!(codec::read_message_header(&reply).unwrap().0.mtype, codec::MessageType::Reply);
    assert_eq!(server.stats.counts().protocol_errors, 2);
    server.shutdown().await;
}

#[tokio::test]
async fn idle_timeout_closes_silent_connections() {
    let pool = Pool::new(PoolConfig::default());
    let server = start(ServerConfig { idle_timeout: Some(Duration::from_millis(100)), ..test_config(&pool) }).await;
    let start = std::time::Instant::now();
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    assert_closed(&mut idle).await;
    assert!(start.elapsed() >= Duration::from_millis(100), "closed after {:?}", start.elapsed());
    assert_eq!(server.stats.counts().idle_closed, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn idle_timeout_spares_a_connection_that_keeps_calling() {
    let pool = Pool::new(PoolConfig::default());
    let server = start(ServerConfig { idle_timeout: Some(Duration::from_millis(100)), ..test_config(&pool) }).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let req = Request { id: 1, msg: Binary::from_static(b"ping"), json: None };
    let mut call = Vec::new();
    rpc::codec::encode_call(&mut call, Transport::Framed, 1, &req).unwrap();
    // A call every 40 ms for 600 ms: six idle periods, never one silent.
    for _ in 0..15 {
        s.write_all(&call).await.unwrap();
        let mut reply = vec![0u8; 64];
        let n = s.read(&mut reply).await.unwrap();
        assert!(n > 0, "closed while calling");
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    assert_eq!(server.stats.counts().idle_closed, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_waits_for_connections_and_returns_their_buffers() {
    let pool = Pool::new(PoolConfig::default());
    let server = start(test_config(&pool)).await;
    let client = client_for(server.addr, "shutdown", Transport::Framed, DecodeMode::Copy);
    client.call(&Request { id: 1, msg: Binary::from_static(b"x"), json: None }).await.unwrap();
    assert_eq!(server.stats.counts().open_conns, 1);
    server.shutdown().await;
    assert_eq!(pool.stats().leased_bytes, 0, "every connection's buffers went back");
}

#[tokio::test]
async fn shutdown_wakes_connections_waiting_for_input_at_once() {
    // With a minute of grace, the shutdown below (which gives up after 10
    // s) only completes if each idle connection is woken to see it.
    let pool = Pool::new(PoolConfig::default());
    let server = start(ServerConfig { grace: Duration::from_secs(60), ..test_config(&pool) }).await;
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(TcpStream::connect(server.addr).await.unwrap());
    }
    let client = client_for(server.addr, "shutdown-idle", Transport::Framed, DecodeMode::NoCopy);
    client.call(&Request { id: 1, msg: Binary::from_static(b"x"), json: None }).await.unwrap();
    server.shutdown().await;
    for mut s in idle {
        assert_closed(&mut s).await;
    }
    assert_eq!(pool.stats().leased_bytes, 0);
}

#[tokio::test]
async fn a_peer_that_waits_for_each_reply_never_makes_the_server_give_way() {
    // 40 calls of 16 KiB read 640 KiB from one connection, ten times the
    // work quantum; but the connection waits for each next request, so the
    // runtime runs other tasks between them anyway. Counting the bytes
    // across those waits made it yield every fourth call.
    let pool = Pool::new(PoolConfig::default());
    let server = start(test_config(&pool)).await;
    let client = client_for(server.addr, "waits", Transport::Framed, DecodeMode::NoCopy);
    let msg = Binary::from(vec![7u8; 16 << 10]);
    for id in 0..40 {
        let resp = client.call(&Request { id, msg: msg.clone(), json: None }).await.unwrap();
        assert_eq!(resp.msg.len(), 16 << 10);
    }
    // A next request can land before the server reads again (the client
    // runs on the other worker); it takes four in a row to give way once.
    let yields = server.stats.counts().yields;
    assert!(yields <= 2, "{yields} yields for 40 calls");
    server.shutdown().await;
}

/// A surge of connections with large requests, then all close: legacy
/// slots keep the read buffers, fixed slots do not.
async fn pinned_after_surge(mode: BarrierMode) -> usize {
    let pool = Pool::new(PoolConfig::default());
    let server = start(ServerConfig { barriers: Barriers::new(mode), ..test_config(&pool) }).await;
    let mut tasks = Vec::new();
    for i in 0..32 {
        let addr = server.addr;
        tasks.push(tokio::spawn(async move {
            let client = client_for(addr, &format!("surge-{mode:?}-{i}"), Transport::Framed, DecodeMode::Copy);
            let req = Request { id: i, msg: Binary::from(vec![7u8; 256 << 10]), json: None };
            client.call(&req).await.unwrap();
            client.close();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Wait for the server to see every close.
    for _ in 0..200 {
        if server.stats.counts().open_conns == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(server.stats.counts().open_conns, 0);
    let leased = pool.stats().leased_bytes;
    server.shutdown().await;
    leased
}

#[tokio::test]
async fn legacy_barriers_pin_closed_connections_buffers() {
    let legacy = pinned_after_surge(BarrierMode::Legacy).await;
    let fixed = pinned_after_surge(BarrierMode::Fixed).await;
    assert_eq!(fixed, 0);
    assert!(legacy >= 32 * (256 << 10), "legacy slots keep each connection's large read node: {legacy} bytes");
}
