//! A small in-test peer: a framed Thrift connection, and loads shaped like
//! a `LoadShape` (steady calls, surges, idle connections), bounded in count
//! rather than time so that the tests measure the same thing on any machine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rpc::codec::{self, DecodeCtx, Limits, MessageType, Request, Response, Transport};
use rpc::{Handler, Server, ServerConfig, ServerStats};
use scenarios::{LoadShape, Surge};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

/// One framed connection.
pub struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    seq: i32,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let _ = stream.set_nodelay(true);
        Conn { stream, buf: BytesMut::with_capacity(16 << 10), seq: 0 }
    }

    /// One call; `Err` when the server answered with an exception or closed.
    pub async fn call(&mut self, req: &Request) -> Result<Response, String> {
        self.seq += 1;
        let mut out = Vec::new();
        codec::encode_call(&mut out, Transport::Framed, self.seq, req).map_err(|e| e.to_string())?;
        self.stream.write_all(&out).await.map_err(|e| e.to_string())?;
        let limits = Limits::default();
        let frame = loop {
            if let Some(f) = codec::probe(&self.buf[..], Some(Transport::Framed), &limits).map_err(|e| e.to_string())? {
                break f;
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) => return Err("server closed the connection".into()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        };
        let body =
            rpc::Binary::from(self.buf.split_to(frame.header_len + frame.len).freeze().slice(frame.header_len..));
        let (header, mut r) = codec::read_message_header(&body).map_err(|e| e.to_string())?;
        match header.mtype {
            MessageType::Reply => codec::decode_echo_result(&mut r, &DecodeCtx::default()).map_err(|e| e.to_string()),
            _ => Err(format!("{:?}", codec::decode_exception(&mut r, &DecodeCtx::default()))),
        }
    }
}

pub fn request(id: i64, size: usize, json: Option<Bytes>) -> Request {
    Request { id, msg: rpc::Binary::from(vec![b'x'; size]), json: json.map(Into::into) }
}

/// A running server.
pub struct Running {
    pub addr: SocketAddr,
    pub stats: Arc<ServerStats>,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    pub async fn start<H: Handler>(mut config: ServerConfig, handler: H) -> Running {
        config.grace = Duration::from_millis(300);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Server::new(config, handler);
        let stats = server.stats();
        let (tx, rx) = oneshot::channel();
        let done = tokio::spawn(server.serve(listener, async move {
            let _ = rx.await;
        }));
        Running { addr, stats, stop: Some(tx), done }
    }

    pub async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.done).await.expect("server stops").unwrap().unwrap();
    }

    /// Waits until the server has no connection open (at most 5 s).
    pub async fn wait_closed(&self) {
        for _ in 0..500 {
            if self.stats.counts().open_conns == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("connections still open: {:?}", self.stats.counts());
    }
}

/// `calls` steady calls spread over `shape.conns` connections, back to
/// back, each carrying `shape.json`; every `oversized.every`-th call (if
/// any) carries `oversized.size` bytes and may fail. Returns the calls
/// answered.
pub async fn steady(addr: SocketAddr, shape: &LoadShape, calls: usize) -> usize {
    steady_from(addr, shape, calls, 0).await
}

/// [`steady`] with call ids offset by `batch << 48`, so that batches on the
/// same server do not overwrite each other's cache entries.
pub async fn steady_from(addr: SocketAddr, shape: &LoadShape, calls: usize, batch: i64) -> usize {
    let conns = shape.conns.max(1);
    let mut tasks = JoinSet::new();
    for c in 0..conns {
        let shape = shape.clone();
        let n = calls / conns + usize::from(c < calls % conns);
        tasks.spawn(async move {
            let mut conn = Conn::connect(addr).await;
            let mut ok = 0;
            for i in 0..n {
                let k = (i * conns + c + 1) as u64;
                let size = match &shape.oversized {
                    Some(o) if k.is_multiple_of(o.every) => o.size,
                    _ => shape.payload,
                };
                let id = batch << 48 | (c as i64) << 32 | i as i64;
                match conn.call(&request(id, size, shape.json.clone())).await {
                    Ok(resp) => {
                        assert_eq!(resp.id, id);
                        ok += 1;
                    }
                    // The server refused it and closed: reconnect.
                    Err(_) => conn = Conn::connect(addr).await,
                }
            }
            ok
        });
    }
    let mut ok = 0;
    while let Some(r) = tasks.join_next().await {
        ok += r.unwrap();
    }
    ok
}

/// `rounds` surges: surge `i` opens `surge.size(i)` connections at once,
/// each sends one call of `surge.payload` bytes and gets `surge.response`
/// bytes back; then they all close. Returns the peak of connections.
pub async fn surges(addr: SocketAddr, surge: &Surge, rounds: usize) -> usize {
    let mut peak = 0;
    for i in 0..rounds {
        let n = surge.size(i);
        peak = peak.max(n);
        let mut conns = Vec::new();
        for _ in 0..n {
            conns.push(Conn::connect(addr).await);
        }
        let mut tasks = JoinSet::new();
        for (k, mut conn) in conns.into_iter().enumerate() {
            let (size, response) = (surge.payload, surge.response);
            tasks.spawn(async move {
                let id = (i as i64) << 20 | k as i64;
                let resp = conn.call(&request(id, size, None)).await.expect("surge call");
                assert_eq!((resp.id, resp.msg.len()), (id, response));
                conn
            });
        }
        let mut done = Vec::new();
        while let Some(r) = tasks.join_next().await {
            done.push(r.unwrap());
        }
        drop(done);
    }
    peak
}
