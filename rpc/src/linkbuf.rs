//! Per-connection linked buffers: Netpoll's `LinkBuffer`, for input and
//! output.
//!
//! # Input
//!
//! A list of pooled chunks ("nodes"). Every connection starts with one node
//! of [`DEFAULT_INPUT_NODE`] bytes. A socket read reserves ("books") up to
//! `book_size` bytes at the tail, or appends a node of `max_size` bytes when
//! the tail is full. A read that fills its reservation doubles `book_size`;
//! `max_size` follows the most data buffered at once. Both are capped at
//! [`MALLOC_MAX`] and never shrink, so a connection that once saw a large
//! request keeps large nodes.
//!
//! ```text
//!  nodes:  [ consumed | read ]-->[ read ........ | booked | spare ]
//!            released on          ^ next(n) aliases here     ^ tail
//!            release()              (no copy); spanning reads copy
//! ```
//!
//! # Output
//!
//! Writes `malloc` space in a tail node of at least 4 KiB and `flush`
//! commits it. With NoCopy writing on, a binary value over
//! [`NOCOPY_THRESHOLD`] is linked into the list as the caller's own
//! [`Binary`] instead of being copied; the part of the tail node written before it is
//! cut off in front of it and the rest of the node goes on behind it, so
//! the next small write needs no new node. The buffer holds nothing until
//! the first write, then keeps its tail node.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSlice};

use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::barrier::{Held, SlotGuard, SLOT_REFS};
use crate::codec::{Binary, Segments, Sink};
use crate::pool::{Chunk, Pool, Taker};

/// The first input node of every connection (Netpoll: 8 KiB).
pub const DEFAULT_INPUT_NODE: usize = 8 << 10;
/// Cap of `book_size` and `max_size` (Netpoll's `mallocMax`): 8 MiB.
pub const MALLOC_MAX: usize = 8 << 20;
/// Binary values longer than this are linked, not copied, by NoCopy writes.
pub const NOCOPY_THRESHOLD: usize = 4 << 10;
/// What a message may take beyond the last one's size (its frame header,
/// a longer id) and still lie whole in what a tail node has left.
const MESSAGE_SLACK: usize = 64;
/// Values longer than this may be split between the tail node's room and a
/// new node ([`OutputBuffer::write_slice`]).
const MIN_SPLIT: usize = 256;
/// Smallest output node.
pub const MIN_OUTPUT_NODE: usize = 4 << 10;

struct InNode {
    chunk: Chunk,
    /// Read cursor; the write cursor is `chunk.frozen()`.
    read: usize,
}

impl InNode {
    fn readable(&self) -> usize {
        self.chunk.frozen() - self.read
    }
}

/// A connection's input buffer.
pub struct InputBuffer {
    pool: Pool,
    nodes: VecDeque<InNode>,
    len: usize,
    book_size: usize,
    max_size: usize,
    /// Bytes of the last message consumed ([`next`](Self::next)).
    last_message: usize,
    /// A read found the socket empty and waited ([`take_waited`](Self::take_waited)).
    waited: bool,
}

impl fmt::Debug for InputBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InputBuffer")
            .field("len", &self.len)
            .field("nodes", &self.nodes.len())
            .field("book_size", &self.book_size)
            .field("max_size", &self.max_size)
            .finish()
    }
}

impl InputBuffer {
    /// A buffer whose first node (`initial` bytes, rounded up to its size
    /// class) is taken from `pool` right away, as Netpoll does on accept.
    pub fn new(pool: Pool, initial: usize) -> InputBuffer {
        let initial = initial.clamp(1, MALLOC_MAX);
        let first = InNode { chunk: pool.lease(initial, Taker::ConnRead), read: 0 };
        InputBuffer {
            pool,
            nodes: VecDeque::from([first]),
            len: 0,
            book_size: initial,
            max_size: initial,
            last_message: 0,
            waited: false,
        }
    }

    /// Readable bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Nothing readable.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The growth state: (`book_size`, `max_size`).
    pub fn high_water(&self) -> (usize, usize) {
        (self.book_size, self.max_size)
    }

    /// Bytes of pooled memory the buffer holds (node capacities).
    pub fn reserved(&self) -> usize {
        self.nodes.iter().map(|n| n.chunk.capacity()).sum()
    }

    /// The readable bytes as contiguous pieces, in order.
    pub fn segments(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.nodes.iter().filter(|n| n.readable() > 0).map(|n| n.chunk.frozen_slice(n.read..n.chunk.frozen()))
    }

    /// Reserves space for a socket read: up to `book_size` bytes in the tail
    /// node, or a new node of `max_size` when the tail is full.
    #[inline(never)]
    pub fn book(&mut self) -> &mut Chunk {
        let full = self.nodes.back().is_none_or(|n| n.chunk.frozen() == n.chunk.capacity());
        if full {
            self.new_node();
        }
        &mut self.nodes.back_mut().expect("tail node exists").chunk
    }

    #[inline(never)]
    fn new_node(&mut self) {
        let chunk = self.pool.lease(self.max_size, Taker::ConnRead);
        self.nodes.push_back(InNode { chunk, read: 0 });
    }

    /// The length of the current reservation (see [`book`](Self::book)).
    pub fn book_len(&self) -> usize {
        self.nodes.back().map_or(0, |n| (n.chunk.capacity() - n.chunk.frozen()).min(self.book_size))
    }

    /// Commits `n` bytes read into the reservation and adapts the sizes.
    pub fn book_ack(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        let tail = self.nodes.back_mut().expect("book before book_ack");
        let end = tail.chunk.frozen() + n;
        tail.chunk.freeze_to(end);
        if n == self.book_size && self.book_size < MALLOC_MAX {
            self.book_size <<= 1;
        }
        self.len += n;
        self.max_size = self.max_size.max(self.len).min(MALLOC_MAX);
    }

    /// Whether a read since the last call found the socket empty and
    /// waited for it (the task slept, and the runtime ran others
    /// meanwhile); clears it.
    pub fn take_waited(&mut self) -> bool {
        std::mem::take(&mut self.waited)
    }

    /// Reads once from `stream` into a reservation, through the
    /// connection's barrier slot. `Ok(0)` is the end of the stream.
    pub async fn fill(&mut self, stream: &TcpStream, slot: &SlotGuard) -> io::Result<usize> {
        self.fill_at_most(stream, slot, usize::MAX).await
    }

    /// [`fill`](Self::fill), reading at most `max` bytes, so that one read
    /// (a copy out of the socket, and the page faults of a fresh node) is
    /// short whatever the reservation. A read that fills `max` counts as
    /// filling the reservation: `book_size` grows as if it had.
    pub async fn fill_at_most(&mut self, stream: &TcpStream, slot: &SlotGuard, max: usize) -> io::Result<usize> {
        let max = max.max(1);
        loop {
            // `readable()` without its future: the connection's one reader
            // polls the stream's own read waker, and sees whether it slept.
            std::future::poll_fn(|cx| {
                let ready = stream.poll_read_ready(cx);
                self.waited |= ready.is_pending();
                ready
            })
            .await?;
            let booked = {
                self.book();
                self.book_len()
            };
            let want = booked.min(max);
            let chunk = self.book();
            // Legacy slots keep a reference to the node (fixed ones take none).
            let held = (!slot.clears()).then(|| chunk.hold());
            let spare = &mut chunk.spare_mut()[..want];
            let mut short = 0;
            // A read that returns fewer bytes than asked for has drained the
            // socket: the readiness is cleared (by answering `WouldBlock`
            // to `try_io`), as tokio's own `poll_read` does, so that the
            // next wait sleeps instead of making a read that fails. Legacy
            // slots keep the failing read, as Netpoll's poller made it: it
            // is what leaves the input node in the slot after a reply.
            let clear_short = slot.clears();
            let read = slot.io(
                || held.map(Held::Chunk),
                || {
                    stream.try_io(Interest::READABLE, || match stream.try_read(spare) {
                        Ok(n) if clear_short && n > 0 && n < want => {
                            short = n;
                            Err(io::ErrorKind::WouldBlock.into())
                        }
                        r => r,
                    })
                },
            );
            let read = match read {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && short > 0 => Ok(short),
                r => r,
            };
            match read {
                Ok(n) => {
                    let grows = want < booked && n == want && booked == self.book_size;
                    self.book_ack(n);
                    if grows && self.book_size < MALLOC_MAX {
                        self.book_size <<= 1;
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Copies `dst.len()` bytes starting `offset` bytes into the readable
    /// data, without consuming them. `false` if not that many are buffered.
    pub fn peek(&self, offset: usize, dst: &mut [u8]) -> bool {
        if offset.checked_add(dst.len()).is_none_or(|end| end > self.len) {
            return false;
        }
        let mut skip = offset;
        let mut filled = 0;
        for seg in self.segments() {
            if skip >= seg.len() {
                skip -= seg.len();
                continue;
            }
            let take = (seg.len() - skip).min(dst.len() - filled);
            dst[filled..filled + take].copy_from_slice(&seg[skip..skip + take]);
            filled += take;
            skip = 0;
            if filled == dst.len() {
                break;
            }
        }
        true
    }

    /// Discards `n` readable bytes.
    ///
    /// # Panics
    /// If fewer than `n` bytes are buffered.
    pub fn skip(&mut self, mut n: usize) {
        assert!(n <= self.len, "skip({n}) beyond {} buffered bytes", self.len);
        self.len -= n;
        for node in self.nodes.iter_mut() {
            let take = node.readable().min(n);
            node.read += take;
            n -= take;
            if n == 0 {
                break;
            }
        }
    }

    /// Consumes `n` bytes. Within one node the result is a slice of the
    /// pooled node (no copy, no allocation); across nodes it is copied into
    /// a fresh chunk. Either way the fields decoded from it without a copy
    /// are slices of a pooled chunk.
    ///
    /// # Panics
    /// If fewer than `n` bytes are buffered.
    pub fn next(&mut self, n: usize) -> Binary {
        assert!(n <= self.len, "next({n}) beyond {} buffered bytes", self.len);
        let first = self.nodes.iter().position(|node| node.readable() > 0);
        match first {
            Some(i) if self.nodes[i].readable() >= n => {
                let node = &mut self.nodes[i];
                let out = node.chunk.slice(node.read..node.read + n);
                node.read += n;
                self.len -= n;
                self.last_message = n;
                Binary::from(out)
            }
            _ => self.next_span(n),
        }
    }

    #[inline(never)]
    fn next_span(&mut self, n: usize) -> Binary {
        let mut span = self.begin_span(n);
        span.copy_from(self, usize::MAX);
        self.finish_span(span)
    }

    /// Whether [`next(n)`](Self::next) would copy: the first `n` readable
    /// bytes lie in more than one node.
    pub fn spans(&self, n: usize) -> bool {
        self.nodes.iter().find(|node| node.readable() > 0).is_none_or(|node| node.readable() < n)
    }

    /// Starts the copy that [`next(n)`](Self::next) makes of bytes spanning
    /// nodes, to be done a piece at a time ([`SpanCopy::copy_from`]) and
    /// ended by [`finish_span`](Self::finish_span); nothing is consumed
    /// until then.
    ///
    /// ```
    /// use rpc::{InputBuffer, Pool};
    ///
    /// let mut input = InputBuffer::new(Pool::global().clone(), 8);
    /// for piece in [&b"12345678"[..], b"9abc"] {
    ///     let spare = input.book();
    ///     spare.spare_mut()[..piece.len()].copy_from_slice(piece);
    ///     input.book_ack(piece.len());
    /// }
    /// assert!(input.spans(10));
    /// let mut span = input.begin_span(10);
    /// let mut steps = 1;
    /// while !span.copy_from(&input, 4) {
    ///     steps += 1;
    /// }
    /// let msg = input.finish_span(span);
    /// assert_eq!((&msg[..], steps, input.len()), (&b"123456789a"[..], 3, 2));
    /// ```
    ///
    /// # Panics
    /// If fewer than `n` bytes are buffered.
    pub fn begin_span(&self, n: usize) -> SpanCopy {
        assert!(n <= self.len, "begin_span({n}) beyond {} buffered bytes", self.len);
        SpanCopy { chunk: self.pool.lease(n, Taker::ReadSpan), len: n, copied: 0 }
    }

    /// Consumes the bytes `span` copied and returns the copy, as
    /// [`next`](Self::next) does.
    ///
    /// # Panics
    /// If the copy is not complete.
    pub fn finish_span(&mut self, span: SpanCopy) -> Binary {
        let SpanCopy { mut chunk, len, copied } = span;
        assert_eq!(copied, len, "finish_span before the copy is complete");
        chunk.freeze_to(len);
        self.skip(len);
        self.last_message = len;
        Binary::from(chunk.slice(0..len))
    }

    /// Gives consumed nodes back (to the pool, once nothing else references
    /// them). The tail node stays while it has room for a message as large
    /// as the last one: with less, the next message would straddle it and a
    /// new node, and [`next`](Self::next) would copy all of it; once
    /// everything read is consumed, such a tail goes back too, and the next
    /// read takes a fresh node of `max_size` (at least the size of every
    /// message buffered so far), where the message lies whole.
    pub fn release(&mut self) {
        while let Some(front) = self.nodes.front() {
            let consumed = front.readable() == 0;
            let is_tail = self.nodes.len() == 1;
            let room = front.chunk.capacity() - front.chunk.frozen();
            let tail_spent = room == 0 || (self.len == 0 && room < self.last_message.saturating_add(MESSAGE_SLACK));
            if consumed && (!is_tail || tail_spent) {
                self.nodes.pop_front();
            } else {
                break;
            }
        }
    }
}

/// A message being copied out of an [`InputBuffer`]'s nodes into one
/// contiguous chunk, a piece at a time (see [`InputBuffer::begin_span`]).
pub struct SpanCopy {
    chunk: Chunk,
    len: usize,
    copied: usize,
}

impl fmt::Debug for SpanCopy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpanCopy").field("len", &self.len).field("copied", &self.copied).finish()
    }
}

impl SpanCopy {
    /// Copies up to `max` more bytes from `input` (the buffer the span was
    /// begun on, unchanged since); `true` once all are copied.
    pub fn copy_from(&mut self, input: &InputBuffer, max: usize) -> bool {
        let n = (self.len - self.copied).min(max);
        let dst = &mut self.chunk.spare_mut()[self.copied..self.copied + n];
        let ok = input.peek(self.copied, dst);
        debug_assert!(ok, "the input lost bytes during a span copy");
        self.copied += n;
        self.copied == self.len
    }

    /// Bytes copied so far.
    pub fn copied(&self) -> usize {
        self.copied
    }
}

enum OutNode {
    /// A pooled node written through `malloc`: bytes `[sent, commit)` are
    /// committed and unsent, `[commit, write)` written but not yet flushed.
    /// Only the tail node is written to.
    Chunk { chunk: Chunk, sent: usize, commit: usize, write: usize },
    /// Bytes linked in whole: a NoCopy value, or the written part of a node
    /// cut off in front of one (the node itself moves behind the value).
    /// `[sent, commit)` is committed and unsent.
    Linked { bytes: Binary, sent: usize, commit: usize },
}

impl OutNode {
    fn unsent(&self) -> usize {
        match self {
            OutNode::Chunk { sent, commit, .. } | OutNode::Linked { sent, commit, .. } => commit - sent,
        }
    }

    fn unsent_slice(&self) -> &[u8] {
        match self {
            OutNode::Chunk { chunk, sent, commit, .. } => chunk.frozen_slice(*sent..*commit),
            OutNode::Linked { bytes, sent, commit } => &bytes[*sent..*commit],
        }
    }
}

/// A connection's output buffer.
///
/// ```text
///  nodes:  [ sent | committed | written ]-->[ NoCopy value ]-->[ rest of the node ...
///           a node cut in front of a linked value     the same node, written on after it
/// ```
pub struct OutputBuffer {
    pool: Pool,
    nodes: VecDeque<OutNode>,
    nocopy: bool,
    committed: usize,
    pending: usize,
}

impl fmt::Debug for OutputBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutputBuffer")
            .field("nodes", &self.nodes.len())
            .field("committed", &self.committed)
            .field("pending", &self.pending)
            .field("nocopy", &self.nocopy)
            .finish()
    }
}

impl OutputBuffer {
    /// An empty buffer; `nocopy` links large binary values instead of
    /// copying them.
    pub fn new(pool: Pool, nocopy: bool) -> OutputBuffer {
        OutputBuffer { pool, nodes: VecDeque::new(), nocopy, committed: 0, pending: 0 }
    }

    /// Committed bytes not yet sent.
    pub fn len(&self) -> usize {
        self.committed
    }

    /// Nothing committed to send.
    pub fn is_empty(&self) -> bool {
        self.committed == 0
    }

    /// Bytes of pooled memory the buffer holds.
    pub fn reserved(&self) -> usize {
        self.nodes.iter().map(|n| if let OutNode::Chunk { chunk, .. } = n { chunk.capacity() } else { 0 }).sum()
    }

    /// Reserves `n` contiguous bytes to write into, in the tail node or in a
    /// new node of at least 4 KiB.
    #[inline(never)]
    pub fn malloc(&mut self, n: usize) -> &mut [u8] {
        if self.tail_room() < n {
            self.grow(n);
        }
        self.reserve_tail(n)
    }

    /// Bytes the tail node has left to write into: 0 when the tail is a
    /// linked value, or there is none.
    #[inline]
    fn tail_room(&self) -> usize {
        match self.nodes.back() {
            Some(OutNode::Chunk { chunk, write, .. }) => chunk.capacity() - write,
            _ => 0,
        }
    }

    /// The next `n` bytes of the tail node, written (not yet committed).
    ///
    /// # Panics
    /// If the tail node has less room ([`tail_room`](Self::tail_room)).
    #[inline]
    fn reserve_tail(&mut self, n: usize) -> &mut [u8] {
        let Some(OutNode::Chunk { chunk, write, .. }) = self.nodes.back_mut() else { unreachable!("tail is a chunk") };
        let start = *write - chunk.frozen();
        *write += n;
        self.pending += n;
        &mut chunk.spare_mut()[start..start + n]
    }

    #[inline(never)]
    fn grow(&mut self, n: usize) {
        let chunk = self.pool.lease(n.max(MIN_OUTPUT_NODE), Taker::Encode);
        self.nodes.push_back(OutNode::Chunk { chunk, sent: 0, commit: 0, write: 0 });
    }

    /// Copies `data` in. A value larger than the tail node's room first
    /// fills that room, and only the rest goes into a new node: a reply
    /// whose value just fits a size class would otherwise leave the node
    /// full and take another one for its last bytes.
    #[inline]
    pub fn write_slice(&mut self, data: &[u8]) {
        // The common case, inlined into the encoders (whose small writes
        // then copy a few bytes with no call): it fits the tail node.
        if self.tail_room() >= data.len() {
            self.reserve_tail(data.len()).copy_from_slice(data);
        } else {
            self.write_slice_new_node(data);
        }
    }

    /// [`write_slice`](Self::write_slice) of what does not fit the tail
    /// node.
    #[inline(never)]
    fn write_slice_new_node(&mut self, mut data: &[u8]) {
        let room = self.tail_room();
        if data.len() > MIN_SPLIT && room > 0 {
            self.reserve_tail(room).copy_from_slice(&data[..room]);
            data = &data[room..];
        }
        self.malloc(data.len()).copy_from_slice(data);
    }

    /// Writes a binary value: linked without a copy when NoCopy writing is
    /// on and it is longer than [`NOCOPY_THRESHOLD`], copied otherwise.
    ///
    /// As Netpoll does, the written part of the tail node is cut off in
    /// front of the linked value and the rest of the node goes on behind it,
    /// so that what is written next fills that rest instead of leasing a
    /// new node.
    pub fn write_binary(&mut self, data: &Binary) {
        if !(self.nocopy && data.len() > NOCOPY_THRESHOLD) {
            self.write_slice(data);
            return;
        }
        let len = data.len();
        let value = OutNode::Linked { bytes: data.clone(), sent: 0, commit: 0 };
        if self.tail_room() > 0 {
            let Some(OutNode::Chunk { mut chunk, sent, commit, write }) = self.nodes.pop_back() else {
                unreachable!("the tail is a chunk with room")
            };
            // Everything written so far becomes read-only (it is sent as
            // written); whether it is committed stays in `commit`.
            chunk.freeze_to(write);
            if write > sent {
                let bytes = Binary::from(chunk.slice(sent..write));
                self.nodes.push_back(OutNode::Linked { bytes, sent: 0, commit: commit - sent });
            }
            self.nodes.push_back(value);
            self.nodes.push_back(OutNode::Chunk { chunk, sent: write, commit: write, write });
        } else {
            self.nodes.push_back(value);
        }
        self.pending += len;
    }

    /// Commits everything written so far.
    pub fn flush(&mut self) {
        if self.pending == 0 {
            return;
        }
        // Only nodes at the back hold uncommitted bytes.
        let mut left = self.pending;
        for node in self.nodes.iter_mut().rev() {
            let (commit, end) = match node {
                OutNode::Chunk { chunk, commit, write, .. } => {
                    if *write > chunk.frozen() {
                        chunk.freeze_to(*write);
                    }
                    (commit, *write)
                }
                OutNode::Linked { bytes, commit, .. } => (commit, bytes.len()),
            };
            left -= end - *commit;
            *commit = end;
            if left == 0 {
                break;
            }
        }
        self.committed += self.pending;
        self.pending = 0;
    }

    /// Sends all committed bytes, up to 32 nodes per `writev`, through the
    /// connection's barrier slot.
    pub async fn send(&mut self, stream: &TcpStream, slot: &SlotGuard) -> io::Result<()> {
        while self.committed > 0 {
            stream.writable().await?;
            self.try_send(stream, slot)?;
        }
        self.release();
        Ok(())
    }

    /// Sends what the socket takes now, without waiting: all committed
    /// bytes unless the socket is full (then [`len`](Self::len) is not 0).
    pub fn try_send(&mut self, stream: &TcpStream, slot: &SlotGuard) -> io::Result<()> {
        while self.committed > 0 {
            match self.write_once(stream, slot) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        self.release();
        Ok(())
    }

    /// The nodes with unsent bytes that one `writev` takes, in order.
    fn unsent_nodes(&self) -> impl Iterator<Item = &OutNode> + '_ {
        self.nodes.iter().filter(|n| n.unsent() > 0).take(SLOT_REFS)
    }

    /// One `writev` of up to 32 unsent pieces (a plain `send` for one).
    fn write_once(&self, stream: &TcpStream, slot: &SlotGuard) -> io::Result<usize> {
        let mut iov = [IoSlice::new(&[]); SLOT_REFS];
        let mut n_iov = 0;
        for node in self.unsent_nodes() {
            iov[n_iov] = IoSlice::new(node.unsent_slice());
            n_iov += 1;
        }
        let held = || {
            self.unsent_nodes().map(|node| match node {
                OutNode::Chunk { chunk, .. } => Held::Chunk(chunk.hold()),
                OutNode::Linked { bytes, .. } => match bytes.as_pooled() {
                    Some(slice) => Held::Chunk(slice.hold()),
                    None => Held::Bytes(bytes.to_bytes()),
                },
            })
        };
        slot.io(held, || if n_iov == 1 { stream.try_write(&iov[0]) } else { stream.try_write_vectored(&iov[..n_iov]) })
    }

    fn advance(&mut self, mut n: usize) {
        self.committed -= n;
        for node in self.nodes.iter_mut() {
            let take = node.unsent().min(n);
            match node {
                OutNode::Chunk { sent, .. } | OutNode::Linked { sent, .. } => *sent += take,
            }
            n -= take;
            if n == 0 {
                break;
            }
        }
        self.release();
    }

    /// Drops sent nodes, keeping a tail chunk that still has room.
    fn release(&mut self) {
        while let Some(front) = self.nodes.front() {
            let done = match front {
                OutNode::Chunk { chunk, sent, write, .. } => {
                    *sent == *write && (self.nodes.len() > 1 || *write == chunk.capacity())
                }
                OutNode::Linked { bytes, sent, .. } => *sent == bytes.len(),
            };
            if done {
                self.nodes.pop_front();
            } else {
                break;
            }
        }
    }

    /// The committed, unsent bytes as contiguous pieces (for tests and for
    /// writers that are not sockets).
    pub fn segments(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.nodes.iter().filter(|n| n.unsent() > 0).map(OutNode::unsent_slice)
    }

    /// Marks `n` committed bytes as sent without a socket (see
    /// [`segments`](Self::segments)).
    pub fn consume(&mut self, n: usize) {
        assert!(n <= self.committed, "consume({n}) beyond {} committed bytes", self.committed);
        self.advance(n);
    }
}

impl Segments for InputBuffer {
    fn segments(&self) -> impl Iterator<Item = &[u8]> {
        InputBuffer::segments(self)
    }
}

impl Sink for OutputBuffer {
    #[inline]
    fn put_slice(&mut self, s: &[u8]) {
        self.write_slice(s);
    }

    fn put_binary(&mut self, b: &Binary) {
        self.write_binary(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::PoolConfig;

    fn fill_with(buf: &mut InputBuffer, data: &[u8]) {
        let mut rest = data;
        while !rest.is_empty() {
            buf.book();
            let want = buf.book_len().min(rest.len());
            let chunk = buf.book();
            chunk.spare_mut()[..want].copy_from_slice(&rest[..want]);
            buf.book_ack(want);
            rest = &rest[want..];
        }
    }

    #[test]
    fn starts_with_one_8k_node() {
        let pool = Pool::new(PoolConfig::default());
        let buf = InputBuffer::new(pool.clone(), DEFAULT_INPUT_NODE);
        assert_eq!(buf.reserved(), 8 << 10);
        assert_eq!(pool.stats().leased_bytes, 8 << 10);
        assert_eq!(buf.high_water(), (8 << 10, 8 << 10));
    }

    #[test]
    fn reads_within_a_node_alias_and_spanning_reads_copy() {
        let pool = Pool::new(PoolConfig::default());
        let mut buf = InputBuffer::new(pool.clone(), 16);
        let data: Vec<u8> = (0..40u8).collect();
        fill_with(&mut buf, &data);
        assert_eq!(buf.len(), 40);
        let a = buf.next(10);
        assert_eq!(&a[..], &data[..10]);
        let span_before = pool.stats().allocated_chunks;
        let b = buf.next(20);
        assert_eq!(&b[..], &data[10..30]);
        assert!(pool.stats().allocated_chunks > span_before, "the spanning read copied into a new chunk");
        let mut rest = [0u8; 10];
        assert!(buf.peek(0, &mut rest));
        assert_eq!(&rest[..], &data[30..]);
    }

    #[test]
    fn growth_follows_netpoll_and_never_shrinks() {
        let pool = Pool::new(PoolConfig::default());
        let mut buf = InputBuffer::new(pool, DEFAULT_INPUT_NODE);
        let big = vec![7u8; 1 << 20];
        fill_with(&mut buf, &big);
        let (book, max) = buf.high_water();
        assert!(book > DEFAULT_INPUT_NODE, "book_size doubled: {book}");
        assert_eq!(max, 1 << 20, "max_size follows the buffered length");
        let whole = buf.next(1 << 20);
        assert_eq!(whole.len(), 1 << 20);
        drop(whole);
        buf.release();
        assert_eq!(buf.high_water(), (book, max));
    }

    #[test]
    fn release_keeps_the_tail_and_a_held_slice_pins_its_node() {
        let pool = Pool::new(PoolConfig::default());
        let mut buf = InputBuffer::new(pool.clone(), 1024);
        fill_with(&mut buf, &[1u8; 1024]);
        fill_with(&mut buf, &[2u8; 100]);
        let first = buf.next(1024);
        let one = first.slice(..1);
        drop(first);
        buf.skip(100);
        buf.release();
        // The consumed tail (924 bytes of room, less than the last message)
        // went back too.
        assert_eq!(buf.nodes.len(), 0);
        let leases = pool.leases();
        assert_eq!(leases.iter().filter(|l| l.pinned()).count(), 1, "the 1-byte slice pins the first node");
        drop(one);
        assert!(pool.leases().iter().all(|l| !l.pinned()));
    }

    #[test]
    fn a_consumed_tail_too_small_for_the_last_message_goes_back() {
        let pool = Pool::new(PoolConfig::default());
        let mut buf = InputBuffer::new(pool.clone(), 8 << 10);
        let msg = vec![5u8; 3000];
        // Two messages fit in the 8 KiB node; a third would straddle it.
        for left in [1, 0] {
            fill_with(&mut buf, &msg);
            let m = buf.next(msg.len());
            assert_eq!(m.len(), msg.len());
            buf.release();
            assert_eq!(buf.nodes.len(), left);
        }
        // With 2192 bytes of room left the tail went back: the next message
        // lies whole in a fresh node instead of being copied.
        fill_with(&mut buf, &msg);
        assert!(!buf.spans(msg.len()));
        let chunks = pool.stats().allocated_chunks;
        let m = buf.next(msg.len());
        assert_eq!((&m[..], pool.stats().allocated_chunks), (&msg[..], chunks));
    }

    #[test]
    fn output_reuses_the_rest_of_a_node_after_a_linked_value() {
        let pool = Pool::new(PoolConfig::default());
        let big = Binary::from(vec![9u8; 10_000]);
        let mut out = OutputBuffer::new(pool.clone(), true);
        out.write_slice(b"head");
        out.write_binary(&big);
        out.write_slice(b"tail");
        assert_eq!((out.len(), out.segments().count()), (0, 0), "nothing committed before flush");
        out.flush();
        assert_eq!(pool.stats().allocated_chunks, 1, "one node, its rest written after the linked value");
        let segs: Vec<&[u8]> = out.segments().collect();
        assert_eq!(segs.len(), 3);
        assert_eq!((segs[0], segs[1].as_ptr(), segs[2]), (&b"head"[..], big.as_ptr(), &b"tail"[..]));
        // A second reply goes on in the same node, uncommitted until flushed.
        out.write_binary(&big);
        out.write_slice(b"more");
        assert_eq!(out.len(), 10_008);
        out.flush();
        assert_eq!(out.len(), 20_012);
        let mut all = Vec::new();
        for s in out.segments() {
            all.extend_from_slice(s);
        }
        assert_eq!(&all[10_004..10_008], b"tail");
        assert_eq!(&all[20_008..], b"more");
        out.consume(10_010);
        out.consume(10_002);
        assert!(out.is_empty());
        assert_eq!(out.nodes.len(), 1, "keeps the tail node");
        assert_eq!(pool.stats().allocated_chunks, 1);
    }

    #[test]
    fn a_copied_value_fills_the_tail_before_a_new_node() {
        let pool = Pool::new(PoolConfig::default());
        let mut out = OutputBuffer::new(pool.clone(), false);
        let value = vec![3u8; 16 << 10];
        for _ in 0..4 {
            out.write_slice(b"header");
            out.write_slice(&value);
            out.write_slice(b"\0");
            out.flush();
            let n = out.len();
            out.consume(n);
        }
        // 4 x 16 KiB in 4 KiB + 16 KiB nodes: one node per value and one
        // to start with, not a second node for each value's last bytes.
        assert!(pool.stats().allocated_chunks <= 5, "{} nodes", pool.stats().allocated_chunks);
    }

    #[test]
    fn output_links_large_binaries_only_with_nocopy() {
        let pool = Pool::new(PoolConfig::default());
        let big = Binary::from(vec![9u8; 10_000]);
        for nocopy in [false, true] {
            let mut out = OutputBuffer::new(pool.clone(), nocopy);
            out.write_slice(b"head");
            out.write_binary(&big);
            out.write_slice(b"tail");
            out.flush();
            let mut all = Vec::new();
            for s in out.segments() {
                all.extend_from_slice(s);
            }
            assert_eq!(all.len(), 10_008);
            assert_eq!(&all[..4], b"head");
            assert_eq!(&all[10_004..], b"tail");
            let linked = out.segments().any(|s| s.as_ptr() == big.as_ptr());
            assert_eq!(linked, nocopy);
            out.consume(all.len());
            assert!(out.is_empty());
            assert!(out.reserved() <= 16 << 10, "keeps at most a tail node");
        }
    }

    #[test]
    fn uncommitted_writes_are_not_sendable() {
        let pool = Pool::new(PoolConfig::default());
        let mut out = OutputBuffer::new(pool, false);
        out.write_slice(b"abc");
        assert_eq!(out.len(), 0);
        assert_eq!(out.segments().count(), 0);
        out.flush();
        assert_eq!(out.len(), 3);
    }
}
