//! Strict binary protocol primitives: a [`Reader`] over one contiguous
//! message, and the writer side ([`Sink`] and the `write_*` helpers).
//!
//! Every length is checked against what is left of the message before
//! anything is allocated, and nesting is bounded, so no input makes the
//! reader allocate more than the message's size, recurse without bound or
//! panic.
//!
//! ```
//! use rpc::codec::{write_field_header, write_i64, write_stop, Reader, TType};
//! use rpc::Binary;
//!
//! let mut v = Vec::new();
//! write_field_header(&mut v, TType::I64, 1);
//! write_i64(&mut v, 7);
//! write_stop(&mut v);
//! let msg = Binary::from(v);
//! let mut r = Reader::new(&msg);
//! assert_eq!(r.read_field_header().unwrap(), Some((TType::I64, 1)));
//! assert_eq!(r.read_i64().unwrap(), 7);
//! assert_eq!(r.read_field_header().unwrap(), None);
//! ```

use bytes::{BufMut, Bytes, BytesMut};

use super::{Binary, CodecError, MessageHeader, MessageType};

/// The strict version word's high half: protocol version 1.
pub const VERSION_1: u32 = 0x8001_0000;
/// Mask of the version in the strict version word; the low byte is the
/// message type.
pub const VERSION_MASK: u32 = 0xffff_0000;

/// A Thrift value type, as its wire id.
///
/// `STOP` (0) is not a value type: [`Reader::read_field_header`] returns
/// `None` for it. `VOID` (1) never appears on the wire and is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TType {
    /// 1 byte, 0 or 1.
    Bool = 2,
    /// 1 byte (`i8`).
    Byte = 3,
    /// 8 bytes, IEEE 754 big-endian.
    Double = 4,
    /// 2 bytes big-endian.
    I16 = 6,
    /// 4 bytes big-endian.
    I32 = 8,
    /// 8 bytes big-endian.
    I64 = 10,
    /// `string` and `binary`: an `i32` length, then the bytes.
    String = 11,
    /// Fields, each with a header, then a stop byte.
    Struct = 12,
    /// Key type, value type, `i32` count, then the pairs.
    Map = 13,
    /// Element type, `i32` count, then the elements.
    Set = 14,
    /// Element type, `i32` count, then the elements.
    List = 15,
    /// 16 bytes (Thrift 0.19 and later).
    Uuid = 16,
}

impl TType {
    /// The value type with wire id `id`, if any.
    pub fn from_u8(id: u8) -> Option<TType> {
        Some(match id {
            2 => TType::Bool,
            3 => TType::Byte,
            4 => TType::Double,
            6 => TType::I16,
            8 => TType::I32,
            10 => TType::I64,
            11 => TType::String,
            12 => TType::Struct,
            13 => TType::Map,
            14 => TType::Set,
            15 => TType::List,
            16 => TType::Uuid,
            _ => return None,
        })
    }

    /// The encoded size of a value of this type, if all have the same size.
    pub fn fixed_size(self) -> Option<u64> {
        match self {
            TType::Bool | TType::Byte => Some(1),
            TType::I16 => Some(2),
            TType::I32 => Some(4),
            TType::Double | TType::I64 => Some(8),
            TType::Uuid => Some(16),
            TType::String | TType::Struct | TType::Map | TType::Set | TType::List => None,
        }
    }

    /// The smallest encoded size of a value of this type (an empty string,
    /// struct or container).
    pub fn min_size(self) -> u64 {
        match self {
            TType::String => 4,
            TType::Struct => 1,
            TType::Map => 6,
            TType::Set | TType::List => 5,
            t => t.fixed_size().unwrap_or(1),
        }
    }
}

/// Where bytes come from for the decoding passes shared by [`Reader`] (one
/// contiguous message) and the unframed scan of `frame` (buffered chunks).
pub(crate) trait Source {
    /// A [`CodecError`], or also "need more bytes" for a stream.
    type Error: From<CodecError>;
    /// Reads `N` bytes.
    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], Self::Error>;
    /// Skips `n` bytes.
    fn advance(&mut self, n: u64, what: &'static str) -> Result<(), Self::Error>;
    /// Fails now if `n` more bytes can never be available (past the end of a
    /// message, or beyond the size limit of a stream).
    fn expect(&self, n: u64, what: &'static str) -> Result<(), Self::Error>;
}

fn read_i32_from<S: Source>(src: &mut S, what: &'static str) -> Result<i32, S::Error> {
    Ok(i32::from_be_bytes(src.array(what)?))
}

fn read_len_from<S: Source>(src: &mut S, what: &'static str) -> Result<u64, S::Error> {
    let len = read_i32_from(src, what)?;
    if len < 0 {
        return Err(CodecError::NegativeLength { what, len }.into());
    }
    let len = len as u64;
    src.expect(len, what)?;
    Ok(len)
}

fn read_type_from<S: Source>(src: &mut S, what: &'static str) -> Result<TType, S::Error> {
    let [id] = src.array(what)?;
    TType::from_u8(id).ok_or_else(|| CodecError::BadTypeId { what, id }.into())
}

fn read_count_from<S: Source>(src: &mut S, what: &'static str, min_each: u64) -> Result<u64, S::Error> {
    let count = read_i32_from(src, what)?;
    if count < 0 {
        return Err(CodecError::NegativeLength { what, len: count }.into());
    }
    let count = count as u64;
    // At most 2^31 * 32: no overflow.
    src.expect(count * min_each, what)?;
    Ok(count)
}

pub(crate) fn read_message_header_from<S: Source>(
    src: &mut S,
) -> Result<(MessageType, u64 /* name length */), S::Error> {
    let word = u32::from_be_bytes(src.array("message header")?);
    if word & 0x8000_0000 == 0 {
        return Err(CodecError::NonStrict(word).into());
    }
    if word & VERSION_MASK != VERSION_1 {
        return Err(CodecError::BadVersion(word).into());
    }
    let mtype = MessageType::from_u8(word as u8).ok_or(CodecError::BadMessageType(word as u8))?;
    let name_len = read_len_from(src, "method name")?;
    Ok((mtype, name_len))
}

pub(crate) fn read_field_header_from<S: Source>(src: &mut S) -> Result<Option<(TType, i16)>, S::Error> {
    let [id] = src.array("field header")?;
    if id == 0 {
        return Ok(None);
    }
    let ttype = TType::from_u8(id).ok_or(CodecError::BadTypeId { what: "field header", id })?;
    let fid = i16::from_be_bytes(src.array("field header")?);
    Ok(Some((ttype, fid)))
}

fn read_list_header_from<S: Source>(src: &mut S, what: &'static str) -> Result<(TType, u64), S::Error> {
    let elem = read_type_from(src, what)?;
    let count = read_count_from(src, what, elem.min_size())?;
    Ok((elem, count))
}

fn read_map_header_from<S: Source>(src: &mut S) -> Result<(TType, TType, u64), S::Error> {
    let key = read_type_from(src, "map key type")?;
    let value = read_type_from(src, "map value type")?;
    let count = read_count_from(src, "map", key.min_size() + value.min_size())?;
    Ok((key, value, count))
}

fn enter(depth: usize) -> Result<usize, CodecError> {
    depth.checked_sub(1).ok_or(CodecError::DepthExceeded)
}

/// Skips one value of type `ttype`. `depth` is the nesting budget left: a
/// struct or container needs one and passes one less to its members.
pub(crate) fn skip_from<S: Source>(src: &mut S, ttype: TType, depth: usize) -> Result<(), S::Error> {
    if let Some(size) = ttype.fixed_size() {
        return src.advance(size, "value");
    }
    match ttype {
        TType::String => {
            let len = read_len_from(src, "string/binary")?;
            src.advance(len, "string/binary")
        }
        TType::Struct => {
            let depth = enter(depth)?;
            while let Some((t, _)) = read_field_header_from(src)? {
                skip_from(src, t, depth)?;
            }
            Ok(())
        }
        TType::List | TType::Set => {
            let depth = enter(depth)?;
            let (elem, count) = read_list_header_from(src, if ttype == TType::List { "list" } else { "set" })?;
            match elem.fixed_size() {
                Some(size) => src.advance(count * size, "list/set elements"),
                None => {
                    for _ in 0..count {
                        skip_from(src, elem, depth)?;
                    }
                    Ok(())
                }
            }
        }
        TType::Map => {
            let depth = enter(depth)?;
            let (key, value, count) = read_map_header_from(src)?;
            match (key.fixed_size(), value.fixed_size()) {
                (Some(k), Some(v)) => src.advance(count * (k + v), "map entries"),
                _ => {
                    for _ in 0..count {
                        skip_from(src, key, depth)?;
                        skip_from(src, value, depth)?;
                    }
                    Ok(())
                }
            }
        }
        // Fixed-size types returned above.
        _ => Ok(()),
    }
}

/// A cursor over one whole message in contiguous memory.
///
/// Reads never copy: [`Reader::read_binary_nocopy`] returns a
/// [`Binary::slice`] of the message (of the pooled chunk it lies in, when
/// it does) and [`Reader::read_binary_ref`] a borrowed slice; only
/// [`Reader::read_binary_copy`] allocates.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    buf: &'a Binary,
    pos: usize,
}

impl<'a> Source for Reader<'a> {
    type Error = CodecError;

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], CodecError> {
        let s = self.take(N, what)?;
        let mut a = [0; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn advance(&mut self, n: u64, what: &'static str) -> Result<(), CodecError> {
        self.expect(n, what)?;
        self.pos += n as usize;
        Ok(())
    }

    fn expect(&self, n: u64, what: &'static str) -> Result<(), CodecError> {
        if n > self.remaining() as u64 {
            return Err(CodecError::Truncated { what, offset: self.pos, needed: n, remaining: self.remaining() });
        }
        Ok(())
    }
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a Binary) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    /// Offset of the next byte to read.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The whole message.
    pub fn buffer(&self) -> &'a Binary {
        self.buf
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], CodecError> {
        let buf: &'a [u8] = self.buf;
        let rest = &buf[self.pos..];
        if n > rest.len() {
            return Err(CodecError::Truncated { what, offset: self.pos, needed: n as u64, remaining: rest.len() });
        }
        self.pos += n;
        Ok(&rest[..n])
    }

    /// Reads a Thrift `byte`.
    pub fn read_byte(&mut self) -> Result<i8, CodecError> {
        Ok(i8::from_be_bytes(self.array("byte")?))
    }

    /// Reads a `bool`: any non-zero byte is true.
    pub fn read_bool(&mut self) -> Result<bool, CodecError> {
        let [b] = self.array("bool")?;
        Ok(b != 0)
    }

    /// Reads an `i16`.
    pub fn read_i16(&mut self) -> Result<i16, CodecError> {
        Ok(i16::from_be_bytes(self.array("i16")?))
    }

    /// Reads an `i32`.
    pub fn read_i32(&mut self) -> Result<i32, CodecError> {
        Ok(i32::from_be_bytes(self.array("i32")?))
    }

    /// Reads an `i64`.
    pub fn read_i64(&mut self) -> Result<i64, CodecError> {
        Ok(i64::from_be_bytes(self.array("i64")?))
    }

    /// Reads a `double`.
    pub fn read_double(&mut self) -> Result<f64, CodecError> {
        Ok(f64::from_be_bytes(self.array("double")?))
    }

    /// Reads the `i32` length of a `string`/`binary`, refusing a negative
    /// length or one beyond the rest of the message.
    pub fn read_len(&mut self) -> Result<usize, CodecError> {
        read_len_from(self, "string/binary").map(|n| n as usize)
    }

    /// Reads a `string`/`binary` as a slice borrowed from the message.
    pub fn read_binary_ref(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.read_len()?;
        self.take(n, "string/binary")
    }

    /// Reads a `string`/`binary` as a slice of the message: no copy and no
    /// allocation, and the value keeps the whole message buffer alive.
    pub fn read_binary_nocopy(&mut self) -> Result<Binary, CodecError> {
        let n = self.read_len()?;
        let start = self.pos;
        self.pos += n;
        Ok(self.buf.slice(start..start + n))
    }

    /// Reads a `string`/`binary` into a fresh allocation of exactly its size.
    ///
    /// Never inlined: it is the `readBinary` frame under each struct's
    /// `read_field_N` in a heap profile.
    #[inline(never)]
    pub fn read_binary_copy(&mut self) -> Result<Binary, CodecError> {
        let s = self.read_binary_ref()?;
        Ok(Binary::from(s.to_vec()))
    }

    /// Reads a strict message header. Old-style (non-strict) headers are
    /// refused with [`CodecError::NonStrict`].
    ///
    /// The name is never a slice of the message, so that a header kept
    /// while a handler runs pins no buffer: `"echo"` is a static, any other
    /// name a copy.
    pub fn read_message_header(&mut self) -> Result<MessageHeader, CodecError> {
        let (mtype, name_len) = read_message_header_from(self)?;
        let name = self.take(name_len as usize, "method name")?;
        let name = match name {
            b"echo" => Bytes::from_static(b"echo"),
            other => Bytes::copy_from_slice(other),
        };
        let seqid = self.read_i32()?;
        Ok(MessageHeader { name, mtype, seqid })
    }

    /// Reads a field header: `None` at the struct's stop byte, else the
    /// field's type and id.
    pub fn read_field_header(&mut self) -> Result<Option<(TType, i16)>, CodecError> {
        read_field_header_from(self)
    }

    /// Reads a list header: element type and count. The count is checked
    /// against the rest of the message (each element takes at least its
    /// type's minimum size).
    pub fn read_list_header(&mut self) -> Result<(TType, usize), CodecError> {
        read_list_header_from(self, "list").map(|(t, n)| (t, n as usize))
    }

    /// Reads a set header, as [`Reader::read_list_header`].
    pub fn read_set_header(&mut self) -> Result<(TType, usize), CodecError> {
        read_list_header_from(self, "set").map(|(t, n)| (t, n as usize))
    }

    /// Reads a map header: key type, value type and count.
    pub fn read_map_header(&mut self) -> Result<(TType, TType, usize), CodecError> {
        read_map_header_from(self).map(|(k, v, n)| (k, v, n as usize))
    }

    /// Skips a value of type `ttype` without allocating. `depth` is the
    /// nesting budget left: a struct or container nested deeper than it
    /// fails with [`CodecError::DepthExceeded`]. Pass
    /// [`Limits::max_depth`](super::Limits::max_depth) minus the depth of
    /// the struct the value is in.
    pub fn skip(&mut self, ttype: TType, depth: usize) -> Result<(), CodecError> {
        skip_from(self, ttype, depth)
    }
}

/// Where encoded bytes go.
///
/// `put_binary` receives the large values (`binary` and `string` fields)
/// as [`Binary`], so that an output buffer can link them instead of copying
/// them (Netpoll's NoCopy writes).
pub trait Sink {
    /// Appends a copy of `s`.
    fn put_slice(&mut self, s: &[u8]);

    /// Appends a `binary` or `string` value. The default copies it.
    fn put_binary(&mut self, b: &Binary) {
        self.put_slice(b)
    }
}

impl Sink for Vec<u8> {
    fn put_slice(&mut self, s: &[u8]) {
        self.extend_from_slice(s);
    }
}

impl Sink for BytesMut {
    fn put_slice(&mut self, s: &[u8]) {
        BufMut::put_slice(self, s);
    }
}

impl<S: Sink + ?Sized> Sink for &mut S {
    #[inline]
    fn put_slice(&mut self, s: &[u8]) {
        (**self).put_slice(s);
    }

    #[inline]
    fn put_binary(&mut self, b: &Binary) {
        (**self).put_binary(b);
    }
}

/// The `i32` wire form of a length.
///
/// # Panics
/// If `len` exceeds `i32::MAX`: encoders check lengths first.
fn wire_len(len: usize) -> [u8; 4] {
    i32::try_from(len).expect("Thrift lengths are at most i32::MAX").to_be_bytes()
}

/// Writes a strict message header.
///
/// # Panics
/// If `name` is longer than `i32::MAX` bytes.
pub fn write_message_header<S: Sink + ?Sized>(sink: &mut S, name: &[u8], mtype: MessageType, seqid: i32) {
    sink.put_slice(&(VERSION_1 | mtype as u32).to_be_bytes());
    write_binary_slice(sink, name);
    write_i32(sink, seqid);
}

/// Writes a field header.
pub fn write_field_header<S: Sink + ?Sized>(sink: &mut S, ttype: TType, id: i16) {
    let id = id.to_be_bytes();
    sink.put_slice(&[ttype as u8, id[0], id[1]]);
}

/// Writes the stop byte that ends a struct.
pub fn write_stop<S: Sink + ?Sized>(sink: &mut S) {
    sink.put_slice(&[0]);
}

/// Writes a `bool`.
pub fn write_bool<S: Sink + ?Sized>(sink: &mut S, v: bool) {
    sink.put_slice(&[v as u8]);
}

/// Writes a `byte`.
pub fn write_byte<S: Sink + ?Sized>(sink: &mut S, v: i8) {
    sink.put_slice(&v.to_be_bytes());
}

/// Writes an `i16`.
pub fn write_i16<S: Sink + ?Sized>(sink: &mut S, v: i16) {
    sink.put_slice(&v.to_be_bytes());
}

/// Writes an `i32`.
pub fn write_i32<S: Sink + ?Sized>(sink: &mut S, v: i32) {
    sink.put_slice(&v.to_be_bytes());
}

/// Writes an `i64`.
pub fn write_i64<S: Sink + ?Sized>(sink: &mut S, v: i64) {
    sink.put_slice(&v.to_be_bytes());
}

/// Writes a `double`.
pub fn write_double<S: Sink + ?Sized>(sink: &mut S, v: f64) {
    sink.put_slice(&v.to_be_bytes());
}

/// Writes a `binary`/`string` value through [`Sink::put_binary`], so that
/// the sink may link it without a copy.
///
/// # Panics
/// If `b` is longer than `i32::MAX` bytes.
pub fn write_binary<S: Sink + ?Sized>(sink: &mut S, b: &Binary) {
    sink.put_slice(&wire_len(b.len()));
    sink.put_binary(b);
}

/// Writes a small `binary`/`string` value (a name, a message) by copying.
///
/// # Panics
/// If `b` is longer than `i32::MAX` bytes.
pub fn write_binary_slice<S: Sink + ?Sized>(sink: &mut S, b: &[u8]) {
    sink.put_slice(&wire_len(b.len()));
    sink.put_slice(b);
}

/// Writes a list header.
///
/// # Panics
/// If `count` exceeds `i32::MAX`.
pub fn write_list_header<S: Sink + ?Sized>(sink: &mut S, elem: TType, count: usize) {
    sink.put_slice(&[elem as u8]);
    sink.put_slice(&wire_len(count));
}

/// Writes a set header.
///
/// # Panics
/// If `count` exceeds `i32::MAX`.
pub fn write_set_header<S: Sink + ?Sized>(sink: &mut S, elem: TType, count: usize) {
    write_list_header(sink, elem, count);
}

/// Writes a map header.
///
/// # Panics
/// If `count` exceeds `i32::MAX`.
pub fn write_map_header<S: Sink + ?Sized>(sink: &mut S, key: TType, value: TType, count: usize) {
    sink.put_slice(&[key as u8, value as u8]);
    sink.put_slice(&wire_len(count));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader_err(bytes: &[u8], f: impl FnOnce(&mut Reader<'_>) -> Result<(), CodecError>) -> CodecError {
        let b = Binary::copy_from_slice(bytes);
        let mut r = Reader::new(&b);
        f(&mut r).expect_err("should fail")
    }

    #[test]
    fn primitives_round_trip() {
        let mut v = Vec::new();
        write_bool(&mut v, true);
        write_byte(&mut v, -2);
        write_i16(&mut v, -300);
        write_i32(&mut v, 70_000);
        write_i64(&mut v, -5_000_000_000);
        write_double(&mut v, 1.5);
        write_binary(&mut v, &Binary::from_static(b"abc"));
        write_binary_slice(&mut v, b"");
        let b = Binary::from(v);
        let mut r = Reader::new(&b);
        assert!(r.read_bool().unwrap());
        assert_eq!(r.read_byte().unwrap(), -2);
        assert_eq!(r.read_i16().unwrap(), -300);
        assert_eq!(r.read_i32().unwrap(), 70_000);
        assert_eq!(r.read_i64().unwrap(), -5_000_000_000);
        assert_eq!(r.read_double().unwrap(), 1.5);
        assert_eq!(&r.read_binary_nocopy().unwrap()[..], b"abc");
        assert_eq!(r.read_binary_copy().unwrap().len(), 0);
        assert_eq!(r.remaining(), 0);
        assert!(matches!(r.read_bool(), Err(CodecError::Truncated { what: "bool", .. })));
    }

    #[test]
    fn read_len_refuses_negative_and_overlong_lengths() {
        let e = reader_err(&(-1i32).to_be_bytes(), |r| r.read_len().map(drop));
        assert_eq!(e, CodecError::NegativeLength { what: "string/binary", len: -1 });
        let mut v = i32::MAX.to_be_bytes().to_vec();
        v.extend_from_slice(b"abc");
        let e = reader_err(&v, |r| r.read_binary_copy().map(drop));
        assert_eq!(
            e,
            CodecError::Truncated { what: "string/binary", offset: 4, needed: i32::MAX as u64, remaining: 3 }
        );
    }

    #[test]
    fn nocopy_shares_the_buffer_and_copy_does_not() {
        let mut v = Vec::new();
        write_binary_slice(&mut v, b"hello");
        write_binary_slice(&mut v, b"world");
        let b = Binary::from(v);
        let range = b.as_ptr_range();
        let mut r = Reader::new(&b);
        let shared = r.read_binary_nocopy().unwrap();
        let copied = r.read_binary_copy().unwrap();
        assert!(range.contains(&shared.as_ptr()));
        assert!(!range.contains(&copied.as_ptr()));
        assert_eq!((&shared[..], &copied[..]), (&b"hello"[..], &b"world"[..]));
    }

    #[test]
    fn message_headers_must_be_strict() {
        // Old style: name length first, then the type byte.
        let mut v = Vec::new();
        write_binary_slice(&mut v, b"echo");
        v.push(1);
        write_i32(&mut v, 1);
        assert_eq!(reader_err(&v, |r| r.read_message_header().map(drop)), CodecError::NonStrict(4));
        let e = reader_err(&0x8002_0001u32.to_be_bytes(), |r| r.read_message_header().map(drop));
        assert_eq!(e, CodecError::BadVersion(0x8002_0001));
        let e = reader_err(&0x8001_0009u32.to_be_bytes(), |r| r.read_message_header().map(drop));
        assert_eq!(e, CodecError::BadMessageType(9));
    }

    #[test]
    fn message_header_names_do_not_pin_the_message() {
        for name in [&b"echo"[..], b"other"] {
            let mut v = Vec::new();
            write_message_header(&mut v, name, MessageType::Call, 1);
            let b = Binary::from(v);
            let h = Reader::new(&b).read_message_header().unwrap();
            assert_eq!(&h.name[..], name);
            assert!(!b.as_ptr_range().contains(&h.name.as_ptr()));
        }
    }

    #[test]
    fn container_headers_validate_types_and_counts() {
        let e = reader_err(&[7, 0, 0, 0, 0], |r| r.read_list_header().map(drop));
        assert_eq!(e, CodecError::BadTypeId { what: "list", id: 7 });
        let e = reader_err(&[0, 8, 0, 0, 0, 0], |r| r.read_map_header().map(drop));
        assert_eq!(e, CodecError::BadTypeId { what: "map key type", id: 0 });
        let e = reader_err(&[8, 1, 0, 0, 0, 0], |r| r.read_map_header().map(drop));
        assert_eq!(e, CodecError::BadTypeId { what: "map value type", id: 1 });
        let e = reader_err(&[8, 0xff, 0xff, 0xff, 0xfe], |r| r.read_set_header().map(drop));
        assert_eq!(e, CodecError::NegativeLength { what: "set", len: -2 });
        // 1000 i64 need 8000 bytes; 8 are there.
        let mut v = vec![10];
        v.extend_from_slice(&1000i32.to_be_bytes());
        v.extend_from_slice(&[0; 8]);
        let e = reader_err(&v, |r| r.read_list_header().map(drop));
        assert!(matches!(e, CodecError::Truncated { what: "list", needed: 8000, remaining: 8, .. }), "{e:?}");
    }

    #[test]
    fn skip_handles_every_type() {
        let mut v = Vec::new();
        write_bool(&mut v, false);
        write_byte(&mut v, 1);
        write_double(&mut v, 2.0);
        write_i16(&mut v, 3);
        write_i32(&mut v, 4);
        write_i64(&mut v, 5);
        write_binary_slice(&mut v, b"six");
        // struct { 1: list<string> ["a"], 2: map<i32, set<i16>> {1: {2}} }
        write_field_header(&mut v, TType::List, 1);
        write_list_header(&mut v, TType::String, 1);
        write_binary_slice(&mut v, b"a");
        write_field_header(&mut v, TType::Map, 2);
        write_map_header(&mut v, TType::I32, TType::Set, 1);
        write_i32(&mut v, 1);
        write_set_header(&mut v, TType::I16, 1);
        write_i16(&mut v, 2);
        write_stop(&mut v);
        v.extend_from_slice(&[0xab; 16]);
        write_map_header(&mut v, TType::I64, TType::Double, 2);
        v.extend_from_slice(&[0; 32]);
        let b = Binary::from(v);
        let mut r = Reader::new(&b);
        for t in [
            TType::Bool,
            TType::Byte,
            TType::Double,
            TType::I16,
            TType::I32,
            TType::I64,
            TType::String,
            TType::Struct,
            TType::Uuid,
            TType::Map,
        ] {
            r.skip(t, 64).unwrap_or_else(|e| panic!("{t:?}: {e}"));
        }
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn skip_stops_at_the_depth_budget() {
        // list<list<list<i32>>>: three levels.
        let mut v = Vec::new();
        write_list_header(&mut v, TType::List, 1);
        write_list_header(&mut v, TType::List, 1);
        write_list_header(&mut v, TType::I32, 0);
        let b = Binary::from(v);
        assert_eq!(Reader::new(&b).skip(TType::List, 2), Err(CodecError::DepthExceeded));
        let mut r = Reader::new(&b);
        r.skip(TType::List, 3).unwrap();
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn sinks_link_binaries_through_put_binary() {
        #[derive(Default)]
        struct Linking(Vec<Binary>);
        impl Sink for Linking {
            fn put_slice(&mut self, s: &[u8]) {
                self.0.push(Binary::copy_from_slice(s));
            }
            fn put_binary(&mut self, b: &Binary) {
                self.0.push(b.clone());
            }
        }
        let big = Binary::from(vec![1u8; 100]);
        let mut s = Linking::default();
        write_binary(&mut &mut s, &big);
        assert_eq!(s.0.len(), 2);
        assert_eq!(s.0[1].as_ptr(), big.as_ptr());
        let mut m = BytesMut::new();
        write_binary(&mut m, &big);
        assert_eq!(m.len(), 104);
    }
}
