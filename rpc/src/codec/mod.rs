//! Thrift strict binary protocol, framed and unframed, and the Echo IDL.
//!
//! The codec has three layers, each usable on its own:
//!
//! - [`frame`]: which transport a connection speaks (sniffed as Kitex
//!   does) and where each message ends, resumably ([`FrameDecoder`]) or in
//!   one call ([`probe`]), over the connection's buffered
//!   bytes as a list of chunks ([`Segments`]). `Ok(None)` means "need more
//!   bytes"; `Err` means the stream is corrupt.
//! - [`binary`]: the strict binary primitives over one contiguous message
//!   ([`Reader`]) and the writer side ([`Sink`] and the `write_*` helpers).
//! - the Echo service of `rpc/idl/echo.thrift`: [`Request`], [`Response`],
//!   [`decode_echo_args`], [`decode_echo_result`], [`encode_call`],
//!   [`encode_reply`], [`encode_exception`], [`decode_exception`].
//!
//! ```
//! use rpc::codec::{self, DecodeCtx, Limits, MessageType, Request, Transport};
//! use rpc::Binary;
//!
//! let req = Request { id: 7, msg: Binary::from_static(b"hi"), json: None };
//! let mut wire = Vec::new();
//! codec::encode_call(&mut wire, Transport::Framed, 1, &req).unwrap();
//!
//! let frame = codec::probe(&wire[..], None, &Limits::default()).unwrap().expect("complete");
//! assert_eq!(frame.transport, Transport::Framed);
//! let body = Binary::from(wire).slice(frame.header_len..frame.header_len + frame.len);
//! let (header, mut r) = codec::read_message_header(&body).unwrap();
//! assert_eq!((&header.name[..], header.mtype, header.seqid), (&b"echo"[..], MessageType::Call, 1));
//! let decoded = codec::decode_echo_args(&mut r, &DecodeCtx::default()).unwrap();
//! assert_eq!(decoded, req);
//! ```
//!
//! # Copy and NoCopy decoding
//!
//! With [`DecodeMode::Copy`] (the default, as in Kitex) every `binary` and
//! `string` field is copied out of the message into its own allocation, by
//! a function named after the struct and the field tag
//! (`rpc::codec::echo::Request::read_field_2`): holding a slice of the field
//! pins that copy, and a heap profile names the field. With
//! [`DecodeMode::NoCopy`] a field is a [`Binary`] slice of the message:
//! holding it pins the whole (pooled) buffer the message was read into,
//! which a heap profile cannot show; the field is recorded by name on that
//! buffer ([`Binary::mark_field`]) for as long as it lives, for the pool's
//! own profile instead.
//!
//! # Wrong wire types
//!
//! A known field that arrives with another wire type than the IDL's is
//! skipped like an unknown field, as Apache Thrift's and Kitex's generated
//! code do; if the field is required, decoding then fails with
//! [`CodecError::MissingRequired`].

pub mod binary;
mod echo;
pub mod frame;
mod value;

use bytes::Bytes;

pub use binary::{
    write_binary, write_binary_slice, write_bool, write_byte, write_double, write_field_header, write_i16, write_i32,
    write_i64, write_list_header, write_map_header, write_message_header, write_set_header, write_stop, Reader, Sink,
    TType, VERSION_1, VERSION_MASK,
};
pub use echo::{
    decode_echo_args, decode_echo_result, decode_exception, encode_call, encode_exception, encode_reply,
    encoded_len_call, encoded_len_exception, encoded_len_reply, ApplicationException, ApplicationExceptionKind,
    DecodeCtx, Request, Response, ECHO_METHOD,
};
pub use frame::{probe, Frame, FrameDecoder, Progress, Segments, Transport};
pub use value::Binary;

/// Size limits a decoder enforces before it allocates or recurses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest message, without its frame header. Framed lengths above it
    /// are refused as soon as the 4-byte prefix arrives; unframed messages as
    /// soon as the scan passes it.
    pub max_frame: usize,
    /// How deeply structs and containers may nest. It also bounds the
    /// recursion of [`Reader::skip`] and of the unframed scan, so keep it
    /// small (a few hundred at most).
    pub max_depth: usize,
}

impl Limits {
    /// 64 MiB: the largest message accepted by default.
    pub const DEFAULT_MAX_FRAME: usize = 64 << 20;
    /// 64: the deepest nesting accepted by default.
    pub const DEFAULT_MAX_DEPTH: usize = 64;
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_frame: Self::DEFAULT_MAX_FRAME, max_depth: Self::DEFAULT_MAX_DEPTH }
    }
}

/// How `binary` and `string` fields are taken out of a message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DecodeMode {
    /// Copy each field into a fresh allocation (Kitex's default). The message
    /// buffer can be released as soon as decoding ends.
    #[default]
    Copy,
    /// Slice each field out of the message without copying: the field keeps
    /// the whole buffer alive.
    NoCopy,
}

/// The type of a message, in the low byte of the strict version word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    /// A request that expects a reply.
    Call = 1,
    /// A reply carrying the result struct.
    Reply = 2,
    /// A reply carrying a `TApplicationException`.
    Exception = 3,
    /// A request without a reply.
    Oneway = 4,
}

impl MessageType {
    /// The type with wire value `v`, if any.
    pub fn from_u8(v: u8) -> Option<MessageType> {
        match v {
            1 => Some(MessageType::Call),
            2 => Some(MessageType::Reply),
            3 => Some(MessageType::Exception),
            4 => Some(MessageType::Oneway),
            _ => None,
        }
    }
}

/// The header that opens every message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageHeader {
    /// The method name: never a slice of the message (see
    /// [`Reader::read_message_header`]).
    pub name: Bytes,
    /// Call, reply, exception or oneway.
    pub mtype: MessageType,
    /// The sequence id that pairs a reply with its call.
    pub seqid: i32,
}

/// Why a stream or a message cannot be decoded (or a value not encoded).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// A message (declared or scanned) is larger than [`Limits::max_frame`].
    #[error(
        "message of {len} bytes exceeds the limit of {max} bytes; raise Limits::max_frame if the peer is \
         legitimate"
    )]
    FrameTooLarge {
        /// The declared or scanned size (a lower bound when scanning).
        len: u64,
        /// The limit.
        max: usize,
    },
    /// A framed transport's 4-byte length prefix is zero or negative.
    #[error("invalid frame length {0}: a framed message's 4-byte big-endian length must be positive")]
    InvalidFrameLength(i32),
    /// A string, binary or container length is negative.
    #[error("negative length {len} for {what}: the message is corrupt")]
    NegativeLength {
        /// What the length was for.
        what: &'static str,
        /// The value read.
        len: i32,
    },
    /// A message ends before a value it declares.
    #[error("truncated message: {what} needs {needed} bytes at offset {offset}, but only {remaining} remain")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Offset in the message.
        offset: usize,
        /// Bytes the value needs (a lower bound for containers).
        needed: u64,
        /// Bytes left in the message.
        remaining: usize,
    },
    /// The message header is not strict binary: the peer writes old-style
    /// headers (a name length first).
    #[error(
        "non-strict message header (first word {0:#010x}): only strict binary is supported; configure the \
         peer's TBinaryProtocol with strict writes"
    )]
    NonStrict(u32),
    /// The header's version is not `0x8001`.
    #[error("bad protocol version in message header {0:#010x}: expected 0x8001 (Thrift binary protocol, version 1)")]
    BadVersion(u32),
    /// The header's type byte is not call, reply, exception or oneway.
    #[error("bad message type {0}: expected 1 (call), 2 (reply), 3 (exception) or 4 (oneway)")]
    BadMessageType(u8),
    /// A type id that is not a Thrift type, or not allowed where it is.
    #[error("bad type id {id} in {what}: not a Thrift value type")]
    BadTypeId {
        /// Where: field header, list element, map key...
        what: &'static str,
        /// The byte read.
        id: u8,
    },
    /// Structs and containers nest deeper than [`Limits::max_depth`].
    #[error("structs and containers nest deeper than Limits::max_depth allows")]
    DepthExceeded,
    /// The peer speaks TTHeader (magic `0x1000` after the length).
    #[error("TTHeader transport is not supported: use a framed or buffered (unframed) transport")]
    TTHeaderUnsupported,
    /// The first bytes are neither strict binary, framed strict binary nor
    /// TTHeader.
    #[error(
        "unknown transport: the first bytes {0:02x?} are not Thrift strict binary (0x8001 at byte 0 or, framed, \
         at byte 4)"
    )]
    UnknownTransport(Vec<u8>),
    /// A Thrift `string` field is not valid UTF-8.
    #[error("field {field} is a Thrift string but not valid UTF-8")]
    InvalidUtf8 {
        /// Which field.
        field: &'static str,
    },
    /// A required field is absent (or arrived with a wrong wire type and was
    /// skipped).
    #[error("required field {field} is missing")]
    MissingRequired {
        /// Which field.
        field: &'static str,
    },
    /// A value is too large to encode: Thrift lengths are `i32`.
    #[error("cannot encode {what} of {len} bytes: Thrift lengths are at most 2^31-1 bytes")]
    ValueTooLarge {
        /// What was being encoded.
        what: &'static str,
        /// Its size.
        len: usize,
    },
}

/// Reads the strict header of a message (without its frame header) and
/// returns a reader positioned on the message's struct.
pub fn read_message_header(body: &Binary) -> Result<(MessageHeader, Reader<'_>), CodecError> {
    let mut r = Reader::new(body);
    let header = r.read_message_header()?;
    Ok((header, r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_to_64_mib_and_depth_64() {
        assert_eq!(Limits::default(), Limits { max_frame: 64 << 20, max_depth: 64 });
        assert_eq!(DecodeMode::default(), DecodeMode::Copy);
    }

    #[test]
    fn message_types_round_trip_their_wire_values() {
        for t in [MessageType::Call, MessageType::Reply, MessageType::Exception, MessageType::Oneway] {
            assert_eq!(MessageType::from_u8(t as u8), Some(t));
        }
        assert_eq!(MessageType::from_u8(0), None);
        assert_eq!(MessageType::from_u8(5), None);
    }

    #[test]
    fn read_message_header_leaves_the_reader_on_the_struct() {
        let mut v = Vec::new();
        write_message_header(&mut v, b"echo", MessageType::Oneway, -3);
        v.push(0);
        let body = Binary::from(v);
        let (h, r) = read_message_header(&body).unwrap();
        assert_eq!(h, MessageHeader { name: Bytes::from_static(b"echo"), mtype: MessageType::Oneway, seqid: -3 });
        assert_eq!(r.position(), 16);
        assert_eq!(r.remaining(), 1);
    }
}
