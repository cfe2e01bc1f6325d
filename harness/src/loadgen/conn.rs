//! One connection to an Echo server with one call in flight, checking
//! every reply.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::bail;
use bytes::BytesMut;
use rpc::codec::{self, DecodeCtx, DecodeMode, FrameDecoder, Limits, MessageType, Request, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest a connect may take: a server that accepts nothing fails the
/// open, and the load goes on with the next due call.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest a call may wait for its whole reply (the server's own
/// `write_timeout` is as long): a server that accepts and never answers
/// fails the call instead of holding the load past its end for good.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// One connection of the load generator, one call in flight.
pub struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    transport: Transport,
    /// Where the reply's end is: resumed after each read, so an unframed
    /// reply is examined once whatever the read sizes.
    frames: FrameDecoder,
    seq: i32,
}

impl Conn {
    /// Connects to `target`, within [`CONNECT_TIMEOUT`].
    pub async fn connect(target: SocketAddr, transport: Transport) -> std::io::Result<Conn> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
        let _ = stream.set_nodelay(true);
        let frames = FrameDecoder::with_transport(Some(transport), Limits::default());
        Ok(Conn { stream, buf: BytesMut::with_capacity(16 << 10), transport, frames, seq: 0 })
    }

    /// One call of `echo(req)`; checks the reply. `Ok(true)` when the peer
    /// echoed the call back verbatim (a raw echo server). Fails when the
    /// whole exchange takes longer than [`CALL_TIMEOUT`]; the connection is
    /// then unusable (the caller opens another).
    pub async fn call(&mut self, req: &Request) -> anyhow::Result<bool> {
        match tokio::time::timeout(CALL_TIMEOUT, self.exchange(req)).await {
            Ok(r) => r,
            Err(_) => bail!("no reply within {CALL_TIMEOUT:?}"),
        }
    }

    async fn exchange(&mut self, req: &Request) -> anyhow::Result<bool> {
        self.seq = self.seq.wrapping_add(1);
        let (seq, id, msg) = (self.seq, req.id, &req.msg);
        let mut out = Vec::with_capacity(msg.len() + req.json.as_ref().map_or(0, |j| j.len()) + 64);
        codec::encode_call(&mut out, self.transport, seq, req)?;
        self.stream.write_all(&out).await?;
        let limits = *self.frames.limits();
        let frame = loop {
            // On an error the decoder starts afresh by itself.
            if let Some(frame) = self.frames.decode(&self.buf[..])? {
                break frame;
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                bail!("server closed the connection");
            }
        };
        let mut body = self.buf.split_to(frame.header_len + frame.len).freeze();
        let body = rpc::Binary::from(body.split_off(frame.header_len));
        let (header, mut reader) = codec::read_message_header(&body)?;
        if header.seqid != seq {
            bail!("reply seqid {} for call {seq}", header.seqid);
        }
        match header.mtype {
            MessageType::Reply => {
                let ctx = DecodeCtx { mode: DecodeMode::NoCopy, limits };
                let resp = codec::decode_echo_result(&mut reader, &ctx)?;
                // Echo returns the id; scenarios decide the reply's size.
                if resp.id != id {
                    bail!("reply id {} for call id {id}", resp.id);
                }
                Ok(false)
            }
            MessageType::Call if body.len() + frame.header_len == out.len() => Ok(true),
            MessageType::Exception => {
                let ctx = DecodeCtx { mode: DecodeMode::Copy, limits };
                bail!("server exception: {:?}", codec::decode_exception(&mut reader, &ctx)?)
            }
            other => bail!("unexpected {other:?} message"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_server_that_never_answers_fails_the_call_after_the_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        // Accepts, reads the call, and never answers.
        let silent = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink).await;
        });
        let mut conn = Conn::connect(target, Transport::Framed).await.unwrap();
        let start = tokio::time::Instant::now();
        let req = Request { id: 1, msg: rpc::Binary::from_static(b"hello"), json: None };
        let err = conn.call(&req).await.unwrap_err();
        assert!(err.to_string().contains("no reply within 30s"), "{err}");
        assert!(start.elapsed() >= CALL_TIMEOUT, "{:?}", start.elapsed());
        drop(conn);
        silent.await.unwrap();
    }

    #[tokio::test]
    async fn an_unframed_reply_in_small_pieces_is_examined_once() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let msg = rpc::Binary::from(vec![7u8; 64 << 10]);
        let resp = codec::Response { id: 5, msg: msg.clone(), json: None };
        let mut reply = Vec::new();
        codec::encode_reply(&mut reply, Transport::Unframed, 1, &resp).unwrap();
        let len = reply.len();
        // Reads the call, then sends the reply 512 bytes at a time.
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.set_nodelay(true).unwrap();
            let mut call = vec![0u8; 1 << 20];
            let _ = s.read(&mut call).await.unwrap();
            for piece in reply.chunks(512) {
                s.write_all(piece).await.unwrap();
                s.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            s
        });
        let mut conn = Conn::connect(target, Transport::Unframed).await.unwrap();
        let req = Request { id: 5, msg, json: None };
        assert!(!conn.call(&req).await.unwrap(), "an Echo reply, not the call echoed");
        assert_eq!(conn.frames.examined(), len as u64, "each byte of the reply once");
        drop(server.await.unwrap());
    }
}
