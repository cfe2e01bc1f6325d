//! Transport sniffing and framing, as Kitex does it.
//!
//! A connection's buffered bytes are a list of chunks ([`Segments`]), as a
//! link buffer holds them. [`probe`] tells which transport they speak and,
//! once the whole first message is buffered, where it ends:
//!
//! ```text
//!   framed     [ len: i32 BE ][ 80 01 00 tt | name | seqid | struct ]
//!              0              4                                 4+len
//!   unframed   [ 80 01 00 tt | name | seqid | struct ]
//!              0          (no length: found by skipping the struct)
//!   TTHeader   [ len: i32 BE ][ 10 00 ... ]      refused
//! ```
//!
//! ```
//! use rpc::codec::{probe, Limits, Transport};
//!
//! let limits = Limits::default();
//! // A framed message whose 4-byte prefix says 100 bytes, 2 of them here.
//! let head: &[u8] = &[0, 0, 0, 100, 0x80, 0x01];
//! assert_eq!(probe(head, None, &limits).unwrap(), None);
//! // An HTTP request is not Thrift.
//! assert!(probe(&b"GET / HTTP/1.1\r\n"[..], None, &limits).is_err());
//! ```

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::binary::{read_field_header_from, read_message_header_from, skip_from, Source};
use super::{CodecError, Limits};

/// How messages are delimited on a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// A 4-byte big-endian length before each message (`TFramedTransport`).
    Framed,
    /// Messages back to back (`TBufferedTransport`): a message's end is
    /// found by decoding it.
    Unframed,
}

impl Transport {
    /// Bytes before each message: 4 when framed, 0 when not.
    pub fn header_len(self) -> usize {
        match self {
            Transport::Framed => 4,
            Transport::Unframed => 0,
        }
    }
}

/// The first complete message in a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Frame {
    /// The transport it came with.
    pub transport: Transport,
    /// Bytes of frame header before the message: 4 framed, 0 unframed.
    pub header_len: usize,
    /// Bytes of the message after the frame header.
    pub len: usize,
}

impl Frame {
    /// Bytes the message takes in the buffer, frame header included.
    pub fn total_len(&self) -> usize {
        self.header_len + self.len
    }

    /// Where the message (without its frame header) lies in the buffer.
    pub fn body(&self) -> std::ops::Range<usize> {
        self.header_len..self.total_len()
    }
}

/// Buffered bytes as a list of contiguous chunks, in order.
pub trait Segments {
    /// The chunks; empty ones are allowed.
    fn segments(&self) -> impl Iterator<Item = &[u8]>;
}

impl Segments for [u8] {
    fn segments(&self) -> impl Iterator<Item = &[u8]> {
        std::iter::once(self)
    }
}

impl Segments for Vec<u8> {
    fn segments(&self) -> impl Iterator<Item = &[u8]> {
        std::iter::once(&self[..])
    }
}

impl Segments for Bytes {
    fn segments(&self) -> impl Iterator<Item = &[u8]> {
        std::iter::once(&self[..])
    }
}

impl Segments for BytesMut {
    fn segments(&self) -> impl Iterator<Item = &[u8]> {
        std::iter::once(&self[..])
    }
}

impl Segments for [Bytes] {
    fn segments(&self) -> impl Iterator<Item = &[u8]> {
        self.iter().map(|b| &b[..])
    }
}

impl Segments for Vec<Bytes> {
    fn segments(&self) -> impl Iterator<Item = &[u8]> {
        self.iter().map(|b| &b[..])
    }
}

impl Segments for VecDeque<Bytes> {
    fn segments(&self) -> impl Iterator<Item = &[u8]> {
        self.iter().map(|b| &b[..])
    }
}

impl Segments for [&[u8]] {
    fn segments(&self) -> impl Iterator<Item = &[u8]> {
        self.iter().copied()
    }
}

/// Finds the first message in `buf`.
///
/// - `Ok(Some(frame))`: the whole message is buffered; it occupies
///   `frame.total_len()` bytes, the message itself `frame.body()`.
/// - `Ok(None)`: more bytes are needed.
/// - `Err`: the stream is not one this codec reads, or is corrupt; close the
///   connection.
///
/// `known` is the transport sniffed from an earlier message of the same
/// connection; `None` sniffs it: `0x8001` at byte 0 is unframed strict
/// binary, `0x8001` at byte 4 framed, `0x1000` at byte 4 TTHeader (refused).
///
/// A framed length that is not positive or exceeds [`Limits::max_frame`] is
/// an error as soon as its 4 bytes are buffered. An unframed message has no
/// length: its end is found by a skip-only pass over the buffered chunks,
/// which allocates and copies nothing, is bounded by
/// [`Limits::max_depth`], and fails as soon as the message is known to
/// exceed `max_frame`. Each call rescans from the start; a large `binary`
/// field costs one step per chunk it spans, not per byte.
pub fn probe(
    buf: &(impl Segments + ?Sized),
    known: Option<Transport>,
    limits: &Limits,
) -> Result<Option<Frame>, CodecError> {
    let (head, have) = peek::<6>(buf);
    let transport = match known {
        Some(t) => t,
        None => {
            if have >= 2 && head[..2] == [0x80, 0x01] {
                Transport::Unframed
            } else if have < 4 {
                return Ok(None);
            } else if have < 6 {
                // Not yet known whether it is framed, but a prefix no frame
                // can have is garbage already.
                if frame_len(&head, limits).is_err() {
                    return Err(CodecError::UnknownTransport(head[..have].to_vec()));
                }
                return Ok(None);
            } else if head[4..6] == [0x80, 0x01] {
                Transport::Framed
            } else if head[4..6] == [0x10, 0x00] {
                return Err(CodecError::TTHeaderUnsupported);
            } else {
                return Err(CodecError::UnknownTransport(head[..have].to_vec()));
            }
        }
    };
    match transport {
        Transport::Framed => {
            if have < 4 {
                return Ok(None);
            }
            let len = frame_len(&head, limits)?;
            let total: usize = buf.segments().map(<[u8]>::len).sum();
            Ok((total - 4 >= len).then_some(Frame { transport, header_len: 4, len }))
        }
        Transport::Unframed => {
            let mut cur = Cursor::new(buf.segments(), limits.max_frame);
            match scan_message(&mut cur, limits.max_depth) {
                Ok(()) => Ok(Some(Frame { transport, header_len: 0, len: cur.pos })),
                Err(Stop::Incomplete) => Ok(None),
                Err(Stop::Corrupt(e)) => Err(e),
            }
        }
    }
}

/// The length in a framed prefix, checked.
fn frame_len(head: &[u8; 6], limits: &Limits) -> Result<usize, CodecError> {
    let len = i32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    if len <= 0 {
        return Err(CodecError::InvalidFrameLength(len));
    }
    if len as usize > limits.max_frame {
        return Err(CodecError::FrameTooLarge { len: len as u64, max: limits.max_frame });
    }
    Ok(len as usize)
}

/// The first (up to) `N` bytes across the chunks, and how many there are.
fn peek<const N: usize>(buf: &(impl Segments + ?Sized)) -> ([u8; N], usize) {
    let mut a = [0; N];
    let mut have = 0;
    for seg in buf.segments() {
        let n = seg.len().min(N - have);
        a[have..have + n].copy_from_slice(&seg[..n]);
        have += n;
        if have == N {
            break;
        }
    }
    (a, have)
}

/// Skips one whole message: strict header, then the struct.
fn scan_message<S: Source>(src: &mut S, max_depth: usize) -> Result<(), S::Error> {
    let (_, name_len) = read_message_header_from(src)?;
    src.advance(name_len, "method name")?;
    src.advance(4, "sequence id")?;
    // The message's struct takes one level of the budget, as in decoding.
    let depth = max_depth.checked_sub(1).ok_or(CodecError::DepthExceeded)?;
    while let Some((t, _)) = read_field_header_from(src)? {
        skip_from(src, t, depth)?;
    }
    Ok(())
}

/// Why a scan stopped early.
#[derive(Debug)]
enum Stop {
    /// The message goes on past the buffered bytes.
    Incomplete,
    /// The message is corrupt or too large.
    Corrupt(CodecError),
}

impl From<CodecError> for Stop {
    fn from(e: CodecError) -> Stop {
        Stop::Corrupt(e)
    }
}

/// A read position in a list of chunks that never copies more than a few
/// bytes at a time.
struct Cursor<'a, I> {
    rest: I,
    cur: &'a [u8],
    /// Bytes consumed.
    pos: usize,
    max: usize,
}

impl<'a, I: Iterator<Item = &'a [u8]>> Cursor<'a, I> {
    fn new(rest: I, max: usize) -> Self {
        Cursor { rest, cur: &[], pos: 0, max }
    }

    /// Makes `cur` non-empty, if any bytes are left.
    fn fill(&mut self) -> Result<(), Stop> {
        while self.cur.is_empty() {
            self.cur = self.rest.next().ok_or(Stop::Incomplete)?;
        }
        Ok(())
    }
}

impl<'a, I: Iterator<Item = &'a [u8]>> Source for Cursor<'a, I> {
    type Error = Stop;

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], Stop> {
        self.expect(N as u64, what)?;
        let mut a = [0; N];
        let mut have = 0;
        while have < N {
            self.fill()?;
            let n = self.cur.len().min(N - have);
            a[have..have + n].copy_from_slice(&self.cur[..n]);
            self.cur = &self.cur[n..];
            have += n;
        }
        self.pos += N;
        Ok(a)
    }

    fn advance(&mut self, n: u64, what: &'static str) -> Result<(), Stop> {
        self.expect(n, what)?;
        // `expect` bounds n by `max`, a usize.
        let mut left = n as usize;
        while left > 0 {
            self.fill()?;
            let step = self.cur.len().min(left);
            self.cur = &self.cur[step..];
            left -= step;
        }
        self.pos += n as usize;
        Ok(())
    }

    fn expect(&self, n: u64, _what: &'static str) -> Result<(), Stop> {
        let end = self.pos as u64 + n;
        if end > self.max as u64 {
            return Err(Stop::Corrupt(CodecError::FrameTooLarge { len: end, max: self.max }));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    /// A minimal unframed call with an empty struct: 17 bytes.
    fn empty_call() -> Vec<u8> {
        let mut v = vec![0x80, 0x01, 0x00, 0x01];
        v.extend_from_slice(&4i32.to_be_bytes());
        v.extend_from_slice(b"echo");
        v.extend_from_slice(&9i32.to_be_bytes());
        v.push(0);
        v
    }

    #[test]
    fn sniffs_unframed_and_framed() {
        let m = empty_call();
        let f = probe(&m[..], None, &limits()).unwrap().unwrap();
        assert_eq!(f, Frame { transport: Transport::Unframed, header_len: 0, len: 17 });
        let mut framed = 17i32.to_be_bytes().to_vec();
        framed.extend_from_slice(&m);
        let f = probe(&framed[..], None, &limits()).unwrap().unwrap();
        assert_eq!(f, Frame { transport: Transport::Framed, header_len: 4, len: 17 });
        assert_eq!(f.body(), 4..21);
    }

    #[test]
    fn refuses_tthheader_and_garbage() {
        assert_eq!(probe(&[0, 0, 0, 20, 0x10, 0x00][..], None, &limits()), Err(CodecError::TTHeaderUnsupported));
        assert!(matches!(probe(&[0, 0, 0, 20, 0x12, 0x34][..], None, &limits()), Err(CodecError::UnknownTransport(_))));
        // A prefix no frame can have fails before the magic arrives.
        assert!(matches!(probe(&b"GET "[..], None, &limits()), Err(CodecError::UnknownTransport(_))));
        assert_eq!(probe(&b"GE"[..], None, &limits()), Ok(None));
    }

    #[test]
    fn framed_lengths_are_checked_on_the_prefix() {
        let t = Some(Transport::Framed);
        assert_eq!(probe(&[0, 0, 0][..], t, &limits()), Ok(None));
        assert_eq!(probe(&[0, 0, 0, 0][..], t, &limits()), Err(CodecError::InvalidFrameLength(0)));
        assert_eq!(probe(&[0xff, 0xff, 0xff, 0xff][..], t, &limits()), Err(CodecError::InvalidFrameLength(-1)));
        let big = ((64 << 20) + 1i32).to_be_bytes();
        assert_eq!(
            probe(&big[..], t, &limits()),
            Err(CodecError::FrameTooLarge { len: (64 << 20) + 1, max: 64 << 20 })
        );
        let mut sniffed = big.to_vec();
        sniffed.extend_from_slice(&[0x80, 0x01]);
        assert!(matches!(probe(&sniffed[..], None, &limits()), Err(CodecError::FrameTooLarge { .. })));
    }

    #[test]
    fn unframed_scan_spans_chunks_at_every_split() {
        let m = empty_call();
        for cut in 0..=m.len() {
            let segs = vec![Bytes::copy_from_slice(&m[..cut]), Bytes::new(), Bytes::copy_from_slice(&m[cut..])];
            let f = probe(&segs, None, &limits()).unwrap().unwrap();
            assert_eq!(f.len, 17);
            let partial = [Bytes::copy_from_slice(&m[..cut])];
            if cut < m.len() {
                assert_eq!(probe(&partial[..], None, &limits()), Ok(None), "cut {cut}");
            }
        }
    }

    #[test]
    fn unframed_scan_fails_once_past_max_frame() {
        let mut m = empty_call();
        m.pop();
        // field 2: binary of 1000 bytes, none of them buffered yet.
        m.extend_from_slice(&[11, 0, 2]);
        m.extend_from_slice(&1000i32.to_be_bytes());
        let small = Limits { max_frame: 500, ..limits() };
        assert!(matches!(probe(&m[..], None, &small), Err(CodecError::FrameTooLarge { len: 1023, max: 500 })));
        assert_eq!(probe(&m[..], None, &limits()), Ok(None));
    }
}
