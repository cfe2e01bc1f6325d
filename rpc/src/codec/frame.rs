//! Transport sniffing and framing, as Kitex does it.
//!
//! A connection's buffered bytes are a list of chunks ([`Segments`]), as a
//! link buffer holds them. A connection's [`FrameDecoder`] tells which
//! transport they speak and, once the whole first message is buffered,
//! where it ends, resuming after each read where the previous one stopped;
//! [`probe`] is the same answer in one call, from the first byte:
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

use super::binary::{TType, VERSION_1, VERSION_MASK};
use super::{CodecError, Limits, MessageType};

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

/// What a bounded call of [`FrameDecoder::decode_within`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Progress {
    /// The whole message is buffered.
    Complete(Frame),
    /// Every buffered byte was examined: more are needed.
    Incomplete,
    /// The budget ran out with buffered bytes left to examine: call again.
    Paused,
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

impl Segments for super::Binary {
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

/// Finds the first message in `buf`: a one-shot [`FrameDecoder`].
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
/// A connection should keep a [`FrameDecoder`] instead: `probe` starts from
/// the first byte on every call, so calling it after each read costs the
/// square of an unframed message's length.
pub fn probe(
    buf: &(impl Segments + ?Sized),
    known: Option<Transport>,
    limits: &Limits,
) -> Result<Option<Frame>, CodecError> {
    FrameDecoder::with_transport(known, *limits).decode(buf)
}

/// A connection's resumable message finder, in the style of tokio-util's
/// `LengthDelimitedCodec`: it remembers how far it got, so every byte of a
/// message is examined once whatever the read sizes.
///
/// ```
/// use rpc::codec::{FrameDecoder, Limits, Transport};
///
/// let mut call = vec![0x80, 0x01, 0x00, 0x01, 0, 0, 0, 4];
/// call.extend_from_slice(b"echo");
/// call.extend_from_slice(&[0, 0, 0, 9, 0]); // seqid 9, empty struct
/// let mut dec = FrameDecoder::new(Limits::default());
/// let mut buffered = Vec::new();
/// for (i, b) in call.iter().enumerate() {
///     buffered.push(*b);
///     let got = dec.decode(&buffered).unwrap();
///     assert_eq!(got.is_some(), i == call.len() - 1);
/// }
/// assert_eq!(dec.transport(), Some(Transport::Unframed));
/// assert_eq!(dec.examined(), call.len() as u64);
/// ```
///
/// # Contract
///
/// Between two calls the caller may only append bytes to `buf`. After
/// `Ok(Some(frame))` it consumes `frame.total_len()` bytes from the front
/// before the next call; the decoder then starts on the next message and
/// keeps the connection's transport. After `Err` the stream is lost: close
/// the connection (or [`reset`](Self::reset) to start over).
///
/// # States
///
/// ```text
///   Head ──4-byte prefix──► Data(len) ──len bytes buffered──► frame, Head
///   Head ──0x8001 at byte 0──► Scan{ position, pending item, levels } ──stop of the message struct──► frame, Head
/// ```
///
/// An unframed message has no length: its end is found by a skip-only
/// state machine that keeps the byte position reached, the item being read
/// (a field header, a length: at most 4 bytes) or the bytes left to skip
/// (the rest of a string body, fixed-size elements), and a stack of open
/// structs, lists and maps bounded by [`Limits::max_depth`]. It copies
/// nothing, allocates only past 16 levels of nesting, and fails as soon as
/// the message is known to exceed [`Limits::max_frame`].
#[derive(Clone, Debug)]
pub struct FrameDecoder {
    limits: Limits,
    transport: Option<Transport>,
    state: DecodeState,
    examined: u64,
}

#[derive(Clone, Debug)]
enum DecodeState {
    /// At the start of a message (framed: before its length prefix).
    Head,
    /// Framed: the prefix said this many bytes follow it.
    Data(usize),
    /// Unframed: the scan so far.
    Scan(Scan),
}

impl FrameDecoder {
    /// A decoder that sniffs the transport from the first message.
    pub fn new(limits: Limits) -> FrameDecoder {
        FrameDecoder::with_transport(None, limits)
    }

    /// A decoder for a connection whose transport is `known` (`None`
    /// sniffs it).
    pub fn with_transport(known: Option<Transport>, limits: Limits) -> FrameDecoder {
        FrameDecoder { limits, transport: known, state: DecodeState::Head, examined: 0 }
    }

    /// The transport, once known.
    pub fn transport(&self) -> Option<Transport> {
        self.transport
    }

    /// The limits it enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Bytes examined since the decoder was made: each byte of an unframed
    /// message and each framed length prefix counts once, whatever the read
    /// sizes (a measure of the work done, for tests and metrics).
    pub fn examined(&self) -> u64 {
        self.examined
    }

    /// Bytes of the current message already accounted for: the position an
    /// unframed scan reached, or the framed message's whole length once its
    /// prefix is read. Zero between messages.
    pub fn in_progress(&self) -> usize {
        match &self.state {
            DecodeState::Head => 0,
            DecodeState::Data(len) => 4 + len,
            DecodeState::Scan(s) => s.pos,
        }
    }

    /// Forgets the current message (the transport stays known).
    pub fn reset(&mut self) {
        self.state = DecodeState::Head;
    }

    /// Finds the end of the message at the front of `buf`, resuming where
    /// the previous call stopped: `Ok(None)` needs more bytes, `Err` is a
    /// corrupt or refused stream (see [`probe`] for the sniffing rules).
    pub fn decode(&mut self, buf: &(impl Segments + ?Sized)) -> Result<Option<Frame>, CodecError> {
        match self.decode_within(buf, usize::MAX)? {
            Progress::Complete(frame) => Ok(Some(frame)),
            // An unbounded call examines every buffered byte.
            Progress::Incomplete | Progress::Paused => Ok(None),
        }
    }

    /// [`decode`](Self::decode), examining at most about `budget` bytes
    /// (a whole item or skip may pass it): a connection task calls it with a
    /// small budget and gives way to other tasks on [`Progress::Paused`], so
    /// that a long unframed message never holds a thread for its whole scan.
    ///
    /// ```
    /// use rpc::codec::{FrameDecoder, Limits, Progress};
    ///
    /// let mut call = vec![0x80, 0x01, 0x00, 0x01, 0, 0, 0, 4];
    /// call.extend_from_slice(b"echo");
    /// call.extend_from_slice(&[0, 0, 0, 9, 0]);
    /// let mut dec = FrameDecoder::new(Limits::default());
    /// let mut pauses = 0;
    /// let frame = loop {
    ///     match dec.decode_within(&call, 4).unwrap() {
    ///         Progress::Complete(frame) => break frame,
    ///         Progress::Paused => pauses += 1,
    ///         Progress::Incomplete => unreachable!("the whole call is buffered"),
    ///     }
    /// };
    /// assert_eq!((frame.len, pauses), (call.len(), 4));
    /// ```
    pub fn decode_within(&mut self, buf: &(impl Segments + ?Sized), budget: usize) -> Result<Progress, CodecError> {
        let out = self.decode_inner(buf, budget);
        if !matches!(out, Ok(Progress::Incomplete | Progress::Paused)) {
            self.state = DecodeState::Head;
        }
        out
    }

    fn decode_inner(&mut self, buf: &(impl Segments + ?Sized), budget: usize) -> Result<Progress, CodecError> {
        if let DecodeState::Head = self.state {
            let transport = match self.transport {
                Some(t) => t,
                None => match sniff(buf, &self.limits)? {
                    Some(t) => t,
                    None => return Ok(Progress::Incomplete),
                },
            };
            self.transport = Some(transport);
            match transport {
                Transport::Framed => {
                    let (head, have) = peek::<4>(buf);
                    if have < 4 {
                        return Ok(Progress::Incomplete);
                    }
                    self.examined += 4;
                    self.state = DecodeState::Data(frame_len(&head, &self.limits)?);
                }
                Transport::Unframed => {
                    let mut scan = Scan::default();
                    scan.begin_read(Item::Word, &self.limits)?;
                    self.state = DecodeState::Scan(scan);
                }
            }
        }
        match &mut self.state {
            DecodeState::Head => Ok(Progress::Incomplete),
            DecodeState::Data(len) => {
                let len = *len;
                let total: usize = buf.segments().map(<[u8]>::len).sum();
                let done = total.checked_sub(4).is_some_and(|body| body >= len);
                Ok(if done {
                    Progress::Complete(Frame { transport: Transport::Framed, header_len: 4, len })
                } else {
                    Progress::Incomplete
                })
            }
            DecodeState::Scan(scan) => {
                let before = scan.pos;
                let end = scan.run(buf, &self.limits, budget);
                self.examined += (scan.pos - before) as u64;
                Ok(match end? {
                    RunEnd::Done => {
                        Progress::Complete(Frame { transport: Transport::Unframed, header_len: 0, len: scan.pos })
                    }
                    RunEnd::Starved => Progress::Incomplete,
                    RunEnd::Paused => Progress::Paused,
                })
            }
        }
    }
}

/// Tells the transport from the first bytes, or `None` if too few are
/// buffered.
fn sniff(buf: &(impl Segments + ?Sized), limits: &Limits) -> Result<Option<Transport>, CodecError> {
    let (head, have) = peek::<6>(buf);
    if have >= 2 && head[..2] == [0x80, 0x01] {
        Ok(Some(Transport::Unframed))
    } else if have < 4 {
        Ok(None)
    } else if have < 6 {
        // Not yet known whether it is framed, but a prefix no frame can
        // have is garbage already.
        let mut four = [0; 4];
        four.copy_from_slice(&head[..4]);
        match frame_len(&four, limits) {
            Ok(_) => Ok(None),
            Err(_) => Err(CodecError::UnknownTransport(head[..have].to_vec())),
        }
    } else if head[4..6] == [0x80, 0x01] {
        Ok(Some(Transport::Framed))
    } else if head[4..6] == [0x10, 0x00] {
        Err(CodecError::TTHeaderUnsupported)
    } else {
        Err(CodecError::UnknownTransport(head[..have].to_vec()))
    }
}

/// The length in a framed prefix, checked.
fn frame_len(head: &[u8; 4], limits: &Limits) -> Result<usize, CodecError> {
    let len = i32::from_be_bytes(*head);
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

/// A fixed-size item the unframed scan reads whole before acting on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Item {
    /// The strict version word.
    Word,
    /// The method name's length.
    NameLen,
    /// The sequence id (skipped).
    SeqId,
    /// A field's type byte, or the struct's stop.
    FieldType,
    /// A field's id, then its value of this type.
    FieldId(TType),
    /// A string or binary length.
    StrLen,
    /// A list's or set's element type.
    ElemType { set: bool },
    /// A list's or set's element count.
    ElemCount { elem: TType, set: bool },
    /// A map's key type.
    KeyType,
    /// A map's value type.
    ValueType { key: TType },
    /// A map's entry count.
    MapCount { key: TType, value: TType },
}

impl Item {
    fn size(self) -> usize {
        match self {
            Item::FieldType | Item::ElemType { .. } | Item::KeyType | Item::ValueType { .. } => 1,
            Item::FieldId(_) => 2,
            Item::Word
            | Item::NameLen
            | Item::SeqId
            | Item::StrLen
            | Item::ElemCount { .. }
            | Item::MapCount { .. } => 4,
        }
    }
}

/// What the scan does with the next bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Gathers an item (`Scan::part` holds what arrived of it).
    Read(Item),
    /// Steps over this many more bytes (a name, a string body, fixed-size
    /// elements).
    Skip(usize),
    /// The message is complete.
    Done,
}

/// An open container of the unframed scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    /// A struct: fields until a stop byte.
    Struct,
    /// A list or set of values of variable size, `left` still to come.
    List { elem: TType, left: u32 },
    /// A map with a key or value type of variable size; `value_next` when
    /// the key of the current entry was read.
    Map { key: TType, value: TType, left: u32, value_next: bool },
}

/// Levels kept inline before the stack spills to the heap.
const INLINE_LEVELS: usize = 16;

/// The open containers: the first [`INLINE_LEVELS`] inline, the rest (up to
/// [`Limits::max_depth`]) on the heap.
#[derive(Clone, Debug)]
struct Levels {
    inline: [Level; INLINE_LEVELS],
    spill: Vec<Level>,
    len: usize,
}

impl Default for Levels {
    fn default() -> Self {
        Levels { inline: [Level::Struct; INLINE_LEVELS], spill: Vec::new(), len: 0 }
    }
}

impl Levels {
    fn push(&mut self, level: Level) {
        if self.len < INLINE_LEVELS {
            self.inline[self.len] = level;
        } else {
            self.spill.push(level);
        }
        self.len += 1;
    }

    fn pop(&mut self) {
        if self.len > INLINE_LEVELS {
            self.spill.pop();
        }
        self.len = self.len.saturating_sub(1);
    }

    fn top(&mut self) -> Option<&mut Level> {
        match self.len {
            0 => None,
            n if n <= INLINE_LEVELS => self.inline.get_mut(n - 1),
            _ => self.spill.last_mut(),
        }
    }
}

/// Where [`Scan::run`] stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RunEnd {
    /// The message is complete.
    Done,
    /// Every buffered byte was consumed.
    Starved,
    /// The budget ran out first.
    Paused,
}

/// The state of an unframed scan.
#[derive(Clone, Debug)]
struct Scan {
    /// Bytes of the message consumed so far.
    pos: usize,
    step: Step,
    /// The bytes of the item being read that have arrived.
    part: [u8; 4],
    have: usize,
    /// The message's struct was entered (the header is behind).
    in_body: bool,
    levels: Levels,
}

impl Default for Scan {
    fn default() -> Self {
        Scan { pos: 0, step: Step::Skip(0), part: [0; 4], have: 0, in_body: false, levels: Levels::default() }
    }
}

impl Scan {
    /// Consumes the buffered bytes past `pos`, stopping once about `budget`
    /// were consumed.
    fn run(&mut self, buf: &(impl Segments + ?Sized), limits: &Limits, budget: usize) -> Result<RunEnd, CodecError> {
        let start = self.pos;
        let mut before = self.pos;
        for seg in buf.segments() {
            if self.step == Step::Done {
                break;
            }
            if before >= seg.len() {
                before -= seg.len();
                continue;
            }
            let mut s = &seg[before..];
            before = 0;
            while !s.is_empty() {
                if self.pos - start >= budget && self.step != Step::Done {
                    return Ok(RunEnd::Paused);
                }
                match self.step {
                    Step::Done => break,
                    Step::Skip(left) => {
                        let n = left.min(s.len());
                        s = &s[n..];
                        self.pos += n;
                        if n == left {
                            self.next(limits)?;
                        } else {
                            self.step = Step::Skip(left - n);
                        }
                    }
                    Step::Read(item) => {
                        let n = (item.size() - self.have).min(s.len());
                        // At most 4 bytes: a loop, not a call to memcpy.
                        for (d, b) in self.part[self.have..self.have + n].iter_mut().zip(s) {
                            *d = *b;
                        }
                        self.have += n;
                        self.pos += n;
                        s = &s[n..];
                        if self.have == item.size() {
                            self.have = 0;
                            self.on_item(item, limits)?;
                        }
                    }
                }
            }
        }
        Ok(if self.step == Step::Done { RunEnd::Done } else { RunEnd::Starved })
    }

    /// Fails if `n` more bytes would take the message past `max_frame`.
    fn expect(&self, n: u64, limits: &Limits) -> Result<(), CodecError> {
        let end = self.pos as u64 + n;
        if end > limits.max_frame as u64 {
            return Err(CodecError::FrameTooLarge { len: end, max: limits.max_frame });
        }
        Ok(())
    }

    fn begin_read(&mut self, item: Item, limits: &Limits) -> Result<(), CodecError> {
        self.expect(item.size() as u64, limits)?;
        self.step = Step::Read(item);
        Ok(())
    }

    fn begin_skip(&mut self, n: u64, limits: &Limits) -> Result<(), CodecError> {
        self.expect(n, limits)?;
        if n == 0 {
            return self.next(limits);
        }
        // `expect` bounds n by `max_frame`, a usize.
        self.step = Step::Skip(n as usize);
        Ok(())
    }

    /// Opens a struct or container, within the depth budget.
    fn enter(&self, limits: &Limits) -> Result<(), CodecError> {
        if self.levels.len >= limits.max_depth {
            return Err(CodecError::DepthExceeded);
        }
        Ok(())
    }

    fn be_i32(&self) -> i32 {
        i32::from_be_bytes(self.part)
    }

    /// A length or count, checked as the one-shot reader checks it.
    fn count(&self, what: &'static str, min_each: u64, limits: &Limits) -> Result<u64, CodecError> {
        let n = self.be_i32();
        if n < 0 {
            return Err(CodecError::NegativeLength { what, len: n });
        }
        // At most 2^31 * 32: no overflow.
        self.expect(n as u64 * min_each, limits)?;
        Ok(n as u64)
    }

    fn ttype(&self, what: &'static str) -> Result<TType, CodecError> {
        let id = self.part[0];
        TType::from_u8(id).ok_or(CodecError::BadTypeId { what, id })
    }

    /// Acts on a whole item.
    fn on_item(&mut self, item: Item, limits: &Limits) -> Result<(), CodecError> {
        match item {
            Item::Word => {
                let word = u32::from_be_bytes(self.part);
                if word & 0x8000_0000 == 0 {
                    return Err(CodecError::NonStrict(word));
                }
                if word & VERSION_MASK != VERSION_1 {
                    return Err(CodecError::BadVersion(word));
                }
                MessageType::from_u8(word as u8).ok_or(CodecError::BadMessageType(word as u8))?;
                self.begin_read(Item::NameLen, limits)
            }
            Item::NameLen => {
                let len = self.count("method name", 1, limits)?;
                self.begin_skip(len, limits)
            }
            Item::SeqId => {
                // The message's struct takes one level of the budget.
                self.enter(limits)?;
                self.in_body = true;
                self.levels.push(Level::Struct);
                self.next(limits)
            }
            Item::FieldType => {
                if self.part[0] == 0 {
                    self.levels.pop();
                    return self.next(limits);
                }
                let t = self.ttype("field header")?;
                self.begin_read(Item::FieldId(t), limits)
            }
            Item::FieldId(t) => self.begin_value(t, limits),
            Item::StrLen => {
                let len = self.count("string/binary", 1, limits)?;
                self.begin_skip(len, limits)
            }
            Item::ElemType { set } => {
                let what = if set { "set" } else { "list" };
                let elem = self.ttype(what)?;
                self.begin_read(Item::ElemCount { elem, set }, limits)
            }
            Item::ElemCount { elem, set } => {
                let what = if set { "set" } else { "list" };
                let count = self.count(what, elem.min_size(), limits)?;
                match elem.fixed_size() {
                    Some(size) => self.begin_skip(count * size, limits),
                    None => {
                        // A count is at most i32::MAX.
                        self.levels.push(Level::List { elem, left: count as u32 });
                        self.next(limits)
                    }
                }
            }
            Item::KeyType => {
                let key = self.ttype("map key type")?;
                self.begin_read(Item::ValueType { key }, limits)
            }
            Item::ValueType { key } => {
                let value = self.ttype("map value type")?;
                self.begin_read(Item::MapCount { key, value }, limits)
            }
            Item::MapCount { key, value } => {
                let count = self.count("map", key.min_size() + value.min_size(), limits)?;
                match (key.fixed_size(), value.fixed_size()) {
                    (Some(k), Some(v)) => self.begin_skip(count * (k + v), limits),
                    _ => {
                        self.levels.push(Level::Map { key, value, left: count as u32, value_next: false });
                        self.next(limits)
                    }
                }
            }
        }
    }

    /// Starts a value of type `t`.
    fn begin_value(&mut self, t: TType, limits: &Limits) -> Result<(), CodecError> {
        if let Some(size) = t.fixed_size() {
            return self.begin_skip(size, limits);
        }
        match t {
            TType::String => self.begin_read(Item::StrLen, limits),
            TType::Struct => {
                self.enter(limits)?;
                self.levels.push(Level::Struct);
                self.next(limits)
            }
            TType::List | TType::Set => {
                self.enter(limits)?;
                self.begin_read(Item::ElemType { set: t == TType::Set }, limits)
            }
            TType::Map => {
                self.enter(limits)?;
                self.begin_read(Item::KeyType, limits)
            }
            // Fixed-size types returned above.
            _ => self.begin_skip(0, limits),
        }
    }

    /// Decides what comes after a value: the next field, element or entry,
    /// or the end of the message. Consumes no bytes and recurses at most
    /// once per closed container.
    fn next(&mut self, limits: &Limits) -> Result<(), CodecError> {
        loop {
            let Some(top) = self.levels.top() else {
                if !self.in_body {
                    // The method name was skipped.
                    return self.begin_read(Item::SeqId, limits);
                }
                self.step = Step::Done;
                return Ok(());
            };
            match top {
                Level::Struct => return self.begin_read(Item::FieldType, limits),
                Level::List { elem, left } => {
                    if *left == 0 {
                        self.levels.pop();
                        continue;
                    }
                    *left -= 1;
                    let elem = *elem;
                    return self.begin_value(elem, limits);
                }
                Level::Map { key, value, left, value_next } => {
                    let t = if *value_next {
                        *value_next = false;
                        *value
                    } else {
                        if *left == 0 {
                            self.levels.pop();
                            continue;
                        }
                        *left -= 1;
                        *value_next = true;
                        *key
                    };
                    return self.begin_value(t, limits);
                }
            }
        }
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

    /// An unframed call whose struct holds nested containers of every
    /// shape: a list<struct>, a map<string, list<i32>>, a set<binary>.
    fn nested_call() -> Vec<u8> {
        use crate::codec::binary::{
            write_binary_slice, write_field_header, write_i32, write_list_header, write_map_header,
            write_message_header, write_set_header, write_stop,
        };
        let mut v = Vec::new();
        write_message_header(&mut v, b"echo", MessageType::Call, 3);
        write_field_header(&mut v, TType::List, 1);
        write_list_header(&mut v, TType::Struct, 3);
        for i in 0..3 {
            write_field_header(&mut v, TType::I32, 1);
            write_i32(&mut v, i);
            write_stop(&mut v);
        }
        write_field_header(&mut v, TType::Map, 2);
        write_map_header(&mut v, TType::String, TType::List, 2);
        for k in [&b"a"[..], b""] {
            write_binary_slice(&mut v, k);
            write_list_header(&mut v, TType::I32, 2);
            write_i32(&mut v, 1);
            write_i32(&mut v, 2);
        }
        write_field_header(&mut v, TType::Set, 3);
        write_set_header(&mut v, TType::String, 2);
        write_binary_slice(&mut v, b"xyz");
        write_binary_slice(&mut v, b"");
        write_stop(&mut v);
        v
    }

    /// Feeds `m` in pieces of `step` bytes to one decoder over a growing
    /// buffer; returns the frame and the decoder.
    fn feed(m: &[u8], step: usize, limits: Limits) -> (Option<Frame>, FrameDecoder) {
        let mut dec = FrameDecoder::new(limits);
        let mut buffered = Vec::new();
        for piece in m.chunks(step) {
            buffered.extend_from_slice(piece);
            if let Some(f) = dec.decode(&buffered).unwrap() {
                assert_eq!(buffered.len(), m.len(), "complete only with its last byte");
                return (Some(f), dec);
            }
        }
        (None, dec)
    }

    #[test]
    fn resumes_at_every_cut_and_every_chunk_size() {
        for m in [empty_call(), nested_call()] {
            let want = probe(&m[..], None, &limits()).unwrap().unwrap();
            assert_eq!(want.len, m.len());
            for step in 1..=m.len() {
                let (f, dec) = feed(&m, step, limits());
                assert_eq!(f, Some(want), "step {step}");
                assert_eq!(dec.examined(), m.len() as u64, "each byte examined once, step {step}");
            }
            for cut in 0..m.len() {
                let mut dec = FrameDecoder::new(limits());
                let first = [Bytes::copy_from_slice(&m[..cut])];
                assert_eq!(dec.decode(&first[..]), Ok(None), "cut {cut}");
                let both = [Bytes::copy_from_slice(&m[..cut]), Bytes::copy_from_slice(&m[cut..])];
                assert_eq!(dec.decode(&both[..]), Ok(Some(want)), "cut {cut}");
            }
        }
    }

    #[test]
    fn resumes_a_framed_message_and_starts_over_after_it() {
        let m = empty_call();
        let mut framed = (m.len() as i32).to_be_bytes().to_vec();
        framed.extend_from_slice(&m);
        let mut dec = FrameDecoder::new(limits());
        for cut in 0..framed.len() {
            assert_eq!(dec.decode(&framed[..cut]), Ok(None), "cut {cut}");
        }
        let f = dec.decode(&framed[..]).unwrap().unwrap();
        assert_eq!((f.transport, f.len), (Transport::Framed, m.len()));
        assert_eq!(dec.in_progress(), 0);
        // The next message starts over with the transport kept.
        assert_eq!(dec.transport(), Some(Transport::Framed));
        assert_eq!(dec.decode(&[0u8, 0, 0][..]), Ok(None));
    }

    #[test]
    fn an_8m_list_of_structs_in_1k_reads_is_examined_once() {
        // list<struct> of 8 Mi empty structs (a stop byte each) in an unknown
        // field: the message that made the rescanning probe quadratic.
        let n = 8 << 20;
        let mut m = empty_call();
        m.pop();
        m.extend_from_slice(&[15, 0, 9, 12]);
        m.extend_from_slice(&(n as i32).to_be_bytes());
        m.resize(m.len() + n, 0);
        m.push(0);
        let (f, dec) = feed(&m, 1 << 10, limits());
        assert_eq!(f.map(|f| f.len), Some(m.len()));
        // Linear: each byte once (a rescan would examine about len^2 / 2 KiB
        // = 3.4e10 bytes).
        assert_eq!(dec.examined(), m.len() as u64);
    }

    #[test]
    fn a_budgeted_scan_pauses_every_quantum_and_finds_the_same_end() {
        // list<struct> of 1 Mi structs, each `1: i32` then stop (8 bytes).
        let n: usize = 1 << 20;
        let mut m = empty_call();
        m.pop();
        m.extend_from_slice(&[15, 0, 9, 12]);
        m.extend_from_slice(&(n as i32).to_be_bytes());
        for _ in 0..n {
            m.extend_from_slice(&[8, 0, 1, 0, 0, 0, 7, 0]);
        }
        m.push(0);
        let quantum = 64 << 10;
        let segs: Vec<Bytes> = m.chunks(1 << 20).map(Bytes::copy_from_slice).collect();
        let mut dec = FrameDecoder::new(limits());
        let (mut pauses, mut last) = (0, 0);
        let frame = loop {
            let got = dec.decode_within(&segs, quantum).unwrap();
            // Each call examines one quantum, plus at most one item.
            let step = dec.examined() - last;
            assert!(step <= quantum as u64 + 4, "examined {step} in one call");
            last = dec.examined();
            match got {
                Progress::Complete(f) => break f,
                Progress::Paused => pauses += 1,
                Progress::Incomplete => panic!("the whole message is buffered"),
            }
        };
        assert_eq!(frame.len, m.len());
        assert_eq!(dec.examined(), m.len() as u64);
        assert!((m.len() / (quantum + 4)..=m.len() / quantum).contains(&pauses), "{pauses} pauses");
        // Partly buffered: paused while bytes are left, then incomplete.
        let mut dec = FrameDecoder::new(limits());
        let half = &m[..m.len() / 2];
        let mut calls = 0;
        while dec.decode_within(half, quantum).unwrap() == Progress::Paused {
            calls += 1;
        }
        assert_eq!(dec.examined(), half.len() as u64);
        assert!((half.len() / (quantum + 4)..=half.len() / quantum).contains(&calls), "{calls} pauses");
    }

    /// Feeds `m` a byte at a time; returns how many bytes were buffered
    /// when the decoder refused it for its size.
    fn refused_at(m: &[u8], limits: Limits) -> Option<usize> {
        let mut dec = FrameDecoder::new(limits);
        for end in 1..=m.len() {
            match dec.decode(&m[..end]) {
                Ok(None) => {}
                Err(CodecError::FrameTooLarge { .. }) => {
                    assert!(dec.examined() <= limits.max_frame as u64);
                    return Some(end);
                }
                other => panic!("{other:?} at {end}"),
            }
        }
        None
    }

    #[test]
    fn unframed_messages_are_refused_once_past_max_frame() {
        let small = Limits { max_frame: 600, ..limits() };
        // A list of 1000 structs cannot fit: refused on its header.
        let mut m = empty_call();
        m.pop();
        m.extend_from_slice(&[15, 0, 9, 12]);
        m.extend_from_slice(&1000i32.to_be_bytes());
        m.resize(m.len() + 1000, 0);
        m.push(0);
        assert_eq!(refused_at(&m, small), Some(24));
        // 500 structs of 8 bytes each might fit by their count: refused when
        // the 601st byte would be needed, long before the end.
        let mut m = empty_call();
        m.pop();
        m.extend_from_slice(&[15, 0, 9, 12]);
        m.extend_from_slice(&500i32.to_be_bytes());
        for _ in 0..500 {
            m.extend_from_slice(&[8, 0, 1, 0, 0, 0, 7, 0]);
        }
        m.push(0);
        let at = refused_at(&m, small).expect("refused");
        assert!((590..=600).contains(&at), "refused at {at}");
    }

    #[test]
    fn nesting_beyond_max_depth_is_refused() {
        let m = nested_call();
        // Message struct, list, struct: 3 levels.
        for (depth, ok) in [(1, false), (2, false), (3, true)] {
            let got = probe(&m[..], None, &Limits { max_depth: depth, ..limits() });
            assert_eq!(got.is_ok(), ok, "depth {depth}: {got:?}");
            if !ok {
                assert_eq!(got, Err(CodecError::DepthExceeded));
            }
        }
        // Deeper than the inline levels: the stack spills and still unwinds.
        let mut deep = empty_call();
        deep.pop();
        for _ in 0..40 {
            deep.extend_from_slice(&[12, 0, 1]);
        }
        deep.resize(deep.len() + 41, 0);
        let f = probe(&deep[..], None, &limits()).unwrap().unwrap();
        assert_eq!(f.len, deep.len());
        assert_eq!(probe(&deep[..], None, &Limits { max_depth: 40, ..limits() }), Err(CodecError::DepthExceeded));
    }
}
