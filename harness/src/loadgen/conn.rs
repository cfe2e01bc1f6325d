//! One connection to an Echo server with one call in flight, checking
//! every reply.

use std::net::SocketAddr;

use anyhow::bail;
use bytes::BytesMut;
use rpc::codec::{self, DecodeCtx, DecodeMode, Limits, MessageType, Request, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
