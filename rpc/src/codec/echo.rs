//! The Echo service of `rpc/idl/echo.thrift`, as generated code would have
//! it:
//!
//! ```thrift
//! struct Request  { 1: required i64 id, 2: required binary msg, 3: optional string json, }
//! struct Response { 1: required i64 id, 2: required binary msg, 3: optional string json, }
//! service Echo { Response echo(1: Request req), }
//! ```
//!
//! A call carries `echo_args { 1: Request req }`, a reply
//! `echo_result { 0: Response success }`, an exception reply a
//! `TApplicationException { 1: string message, 2: i32 type }`.
//!
//! # Profile names
//!
//! In [`DecodeMode::Copy`] each `binary`/`string` field is copied in the
//! body of a never-inlined function named after its struct and tag, so
//! that once a heap profile's allocation machinery is cut (`Vec`'s growth,
//! `Bytes::copy_from_slice`), its leaf, the flat row of `go tool pprof
//! -top`, is the frame that names the field, as `FastReadField2` is in a
//! Kitex service's profile:
//!
//! ```text
//! rpc::codec::echo::Request::read_field_2        <- field tag 2 of Request
//! rpc::codec::echo::Request::decode
//! rpc::codec::echo::decode_echo_args
//! ```

use std::sync::OnceLock;

use super::binary::{
    write_binary, write_binary_slice, write_field_header, write_i32, write_i64, write_message_header, write_stop,
    Reader, Sink, TType,
};
use super::{Binary, CodecError, DecodeMode, Limits, MessageType, Transport};
use crate::pool::FieldId;

/// The service's only method.
pub const ECHO_METHOD: &str = "echo";

/// How to decode: copy or slice fields, and the limits.
///
/// In [`DecodeMode::NoCopy`] each non-empty field sliced from a pooled
/// chunk is recorded on it as that field ([`Binary::mark_field`]) for as
/// long as the value lives, so that the pool profile can name the field
/// that pins it.
#[derive(Clone, Copy, Debug, Default)]
pub struct DecodeCtx {
    /// Copy each field out of the message, or slice it.
    pub mode: DecodeMode,
    /// Size and nesting limits. `max_depth` counts from the struct being
    /// decoded: the message's args or result struct is one level.
    pub limits: Limits,
}

impl DecodeCtx {
    /// A context with `mode` and default limits.
    pub fn new(mode: DecodeMode) -> DecodeCtx {
        DecodeCtx { mode, ..DecodeCtx::default() }
    }

    /// Takes one nesting level for the struct being decoded; returns the
    /// budget left for its members and a context to decode nested structs
    /// with.
    fn enter(&self) -> Result<(usize, DecodeCtx), CodecError> {
        let depth = self.limits.max_depth.checked_sub(1).ok_or(CodecError::DepthExceeded)?;
        Ok((depth, DecodeCtx { limits: Limits { max_depth: depth, ..self.limits }, ..*self }))
    }
}

fn field_id(cell: &'static OnceLock<FieldId>, name: &'static str) -> FieldId {
    *cell.get_or_init(|| FieldId::intern(name))
}

/// Reads a `binary`/`string` field as `ctx.mode` says, in the body of the
/// `read_field_N` that expands it: a macro, not an inlined function, since
/// an inlined function keeps its own (inline) frame in a profile, and the
/// copy's site must be `read_field_N` itself.
macro_rules! read_field {
    ($r:expr, $ctx:expr) => {
        match $ctx.mode {
            // `Bytes`'s own copy, so that its frames are the machinery a
            // profile cuts and `read_field_N` stays the leaf.
            DecodeMode::Copy => Binary::from(bytes::Bytes::copy_from_slice($r.read_binary_ref()?)),
            DecodeMode::NoCopy => $r.read_binary_nocopy()?,
        }
    };
}

/// Records a field sliced without a copy on the chunk it pins, for as long
/// as it lives. Only a NoCopy field is pooled, and never an empty one
/// (`Binary::slice` of an empty range pins nothing): nothing else to
/// record.
fn mark(v: &mut Binary, id: impl FnOnce() -> FieldId) {
    if v.is_pooled() {
        v.mark_field(id());
    }
}

fn check_len(what: &'static str, len: usize) -> Result<(), CodecError> {
    if len > i32::MAX as usize {
        return Err(CodecError::ValueTooLarge { what, len });
    }
    Ok(())
}

/// Field header (3) + length (4) + bytes.
fn binary_field_len(len: usize) -> usize {
    3 + 4 + len
}

/// Version word (4) + name (4 + n) + seqid (4).
fn message_header_len(name: &[u8]) -> usize {
    4 + 4 + name.len() + 4
}

/// Bytes of a message: its header and its struct, a wrapper with one
/// struct field (header, `inner` bytes) and a stop.
fn wrapped_len(name: &[u8], inner: usize) -> usize {
    message_header_len(name) + 3 + inner + 1
}

/// Checks the total and writes the frame header if any.
fn begin<S: Sink + ?Sized>(sink: &mut S, transport: Transport, message_len: usize) -> Result<(), CodecError> {
    check_len("message", message_len)?;
    if transport == Transport::Framed {
        write_i32(sink, message_len as i32);
    }
    Ok(())
}

// Request and Response have the same fields; one definition keeps their
// decoders identical. Each gets its own `read_field_2`/`read_field_3`, so
// that profiles name the struct.
macro_rules! echo_struct {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
        pub struct $name {
            /// Field 1, required `i64`.
            pub id: i64,
            /// Field 2, required `binary`.
            pub msg: Binary,
            /// Field 3, optional `string` (checked to be UTF-8 when decoded).
            pub json: Option<Binary>,
        }

        impl $name {
            /// Decodes the struct (after its field header, if nested).
            /// Unknown fields, and known fields with a wrong wire type, are
            /// skipped; a missing `id` or `msg` is an error.
            #[inline(never)]
            pub fn decode(r: &mut Reader<'_>, ctx: &DecodeCtx) -> Result<$name, CodecError> {
                let (depth, _) = ctx.enter()?;
                let (mut id, mut msg, mut json) = (None, None, None);
                while let Some((ttype, fid)) = r.read_field_header()? {
                    match (fid, ttype) {
                        (1, TType::I64) => id = Some(r.read_i64()?),
                        (2, TType::String) => msg = Some(Self::read_field_2(r, ctx)?),
                        (3, TType::String) => json = Some(Self::read_field_3(r, ctx)?),
                        _ => r.skip(ttype, depth)?,
                    }
                }
                Ok($name {
                    id: id.ok_or(CodecError::MissingRequired { field: concat!(stringify!($name), ".id (field 1)") })?,
                    msg: msg.ok_or(CodecError::MissingRequired { field: concat!(stringify!($name), ".msg (field 2)") })?,
                    json,
                })
            }

            /// Field 2, `msg`. Never inlined: in copy mode this frame, under
            /// the copy, tells a heap profile which field holds the memory.
            #[inline(never)]
            fn read_field_2(r: &mut Reader<'_>, ctx: &DecodeCtx) -> Result<Binary, CodecError> {
                static ID: OnceLock<FieldId> = OnceLock::new();
                let mut v = read_field!(r, ctx);
                mark(&mut v, || field_id(&ID, concat!(stringify!($name), ".msg (field 2, binary)")));
                // Work after the copy keeps this frame on the stack: as a
                // tail call it would vanish from the profile.
                Ok(std::hint::black_box(v))
            }

            /// Field 3, `json`: as field 2, then checked to be UTF-8.
            #[inline(never)]
            fn read_field_3(r: &mut Reader<'_>, ctx: &DecodeCtx) -> Result<Binary, CodecError> {
                static ID: OnceLock<FieldId> = OnceLock::new();
                let mut v = read_field!(r, ctx);
                if std::str::from_utf8(&v).is_err() {
                    return Err(CodecError::InvalidUtf8 { field: concat!(stringify!($name), ".json (field 3)") });
                }
                mark(&mut v, || field_id(&ID, concat!(stringify!($name), ".json (field 3, string)")));
                Ok(v)
            }

            /// Bytes [`Self::write`] writes.
            pub fn encoded_len(&self) -> usize {
                3 + 8 + binary_field_len(self.msg.len()) + self.json.as_ref().map_or(0, |j| binary_field_len(j.len())) + 1
            }

            fn check(&self) -> Result<(), CodecError> {
                check_len(concat!(stringify!($name), ".msg (field 2)"), self.msg.len())?;
                check_len(concat!(stringify!($name), ".json (field 3)"), self.json.as_ref().map_or(0, |j| j.len()))
            }

            /// Writes the struct. `msg` and `json` go through
            /// [`Sink::put_binary`], which may link them without a copy.
            ///
            /// # Panics
            /// If `msg` or `json` is longer than `i32::MAX` bytes (the
            /// `encode_*` functions return an error instead).
            #[inline(never)]
            pub fn write<S: Sink + ?Sized>(&self, sink: &mut S) {
                write_field_header(sink, TType::I64, 1);
                write_i64(sink, self.id);
                write_field_header(sink, TType::String, 2);
                write_binary(sink, &self.msg);
                if let Some(json) = &self.json {
                    write_field_header(sink, TType::String, 3);
                    write_binary(sink, json);
                }
                write_stop(sink);
            }
        }
    };
}

echo_struct!(
    /// The argument of `echo`.
    ///
    /// ```
    /// use rpc::codec::{DecodeCtx, Reader, Request};
    /// use rpc::Binary;
    ///
    /// let req = Request { id: 1, msg: Binary::from_static(b"ping"), json: Some(Binary::from_static(b"{}")) };
    /// let mut v = Vec::new();
    /// req.write(&mut v);
    /// assert_eq!(v.len(), req.encoded_len());
    /// let v = Binary::from(v);
    /// assert_eq!(Request::decode(&mut Reader::new(&v), &DecodeCtx::default()).unwrap(), req);
    /// ```
    Request
);

echo_struct!(
    /// The result of `echo`.
    Response
);

/// Decodes `echo_args { 1: Request req }`, the struct of a call. Other
/// fields are skipped.
#[inline(never)]
pub fn decode_echo_args(r: &mut Reader<'_>, ctx: &DecodeCtx) -> Result<Request, CodecError> {
    let (depth, inner) = ctx.enter()?;
    let mut req = None;
    while let Some((ttype, fid)) = r.read_field_header()? {
        match (fid, ttype) {
            (1, TType::Struct) => req = Some(Request::decode(r, &inner)?),
            _ => r.skip(ttype, depth)?,
        }
    }
    req.ok_or(CodecError::MissingRequired { field: "echo_args.req (field 1)" })
}

/// Decodes `echo_result { 0: Response success }`, the struct of a reply.
/// Other fields are skipped; a result without `success` is an error (what
/// Apache Thrift clients report as `MISSING_RESULT`).
#[inline(never)]
pub fn decode_echo_result(r: &mut Reader<'_>, ctx: &DecodeCtx) -> Result<Response, CodecError> {
    let (depth, inner) = ctx.enter()?;
    let mut resp = None;
    while let Some((ttype, fid)) = r.read_field_header()? {
        match (fid, ttype) {
            (0, TType::Struct) => resp = Some(Response::decode(r, &inner)?),
            _ => r.skip(ttype, depth)?,
        }
    }
    resp.ok_or(CodecError::MissingRequired { field: "echo_result.success (field 0)" })
}

/// Bytes [`encode_call`] writes, frame header included.
pub fn encoded_len_call(transport: Transport, req: &Request) -> usize {
    transport.header_len() + wrapped_len(ECHO_METHOD.as_bytes(), req.encoded_len())
}

/// Bytes [`encode_reply`] writes, frame header included.
pub fn encoded_len_reply(transport: Transport, resp: &Response) -> usize {
    transport.header_len() + wrapped_len(ECHO_METHOD.as_bytes(), resp.encoded_len())
}

/// Writes a call of `echo(req)`.
#[inline(never)]
pub fn encode_call<S: Sink + ?Sized>(
    sink: &mut S,
    transport: Transport,
    seqid: i32,
    req: &Request,
) -> Result<(), CodecError> {
    req.check()?;
    begin(sink, transport, encoded_len_call(Transport::Unframed, req))?;
    write_message_header(sink, ECHO_METHOD.as_bytes(), MessageType::Call, seqid);
    write_field_header(sink, TType::Struct, 1);
    req.write(sink);
    write_stop(sink);
    Ok(())
}

/// Writes the reply of `echo` carrying `resp`.
#[inline(never)]
pub fn encode_reply<S: Sink + ?Sized>(
    sink: &mut S,
    transport: Transport,
    seqid: i32,
    resp: &Response,
) -> Result<(), CodecError> {
    resp.check()?;
    begin(sink, transport, encoded_len_reply(Transport::Unframed, resp))?;
    write_message_header(sink, ECHO_METHOD.as_bytes(), MessageType::Reply, seqid);
    write_field_header(sink, TType::Struct, 0);
    resp.write(sink);
    write_stop(sink);
    Ok(())
}

/// The `type` of a `TApplicationException`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum ApplicationExceptionKind {
    /// Unspecified (also any value this codec does not know).
    Unknown = 0,
    /// The method is not one the service has.
    UnknownMethod = 1,
    /// The message type is not a call or oneway.
    InvalidMessageType = 2,
    /// The reply names another method.
    WrongMethodName = 3,
    /// The reply's sequence id matches no call.
    BadSequenceId = 4,
    /// The reply carries no result.
    MissingResult = 5,
    /// The handler failed.
    InternalError = 6,
    /// The message could not be decoded.
    ProtocolError = 7,
    /// A transform failed.
    InvalidTransform = 8,
    /// The protocol is not supported.
    InvalidProtocol = 9,
    /// The client type is not supported.
    UnsupportedClientType = 10,
}

impl ApplicationExceptionKind {
    /// The kind with wire value `v`; unknown values are [`Self::Unknown`].
    pub fn from_i32(v: i32) -> ApplicationExceptionKind {
        use ApplicationExceptionKind::*;
        match v {
            1 => UnknownMethod,
            2 => InvalidMessageType,
            3 => WrongMethodName,
            4 => BadSequenceId,
            5 => MissingResult,
            6 => InternalError,
            7 => ProtocolError,
            8 => InvalidTransform,
            9 => InvalidProtocol,
            10 => UnsupportedClientType,
            _ => Unknown,
        }
    }
}

/// A decoded `TApplicationException`: the server's report that a call
/// failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplicationException {
    /// What went wrong.
    pub kind: ApplicationExceptionKind,
    /// The server's explanation.
    pub message: String,
}

impl std::fmt::Display for ApplicationException {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "application exception {:?}: {}", self.kind, self.message)
    }
}

impl std::error::Error for ApplicationException {}

/// Bytes [`encode_exception`] writes, frame header included.
pub fn encoded_len_exception(transport: Transport, name: &[u8], message: &str) -> usize {
    // Fields: message (3 + 4 + n), type (3 + 4), stop; no wrapper struct.
    transport.header_len() + message_header_len(name) + binary_field_len(message.len()) + 3 + 4 + 1
}

/// Writes an exception reply to a call of `name`.
pub fn encode_exception<S: Sink + ?Sized>(
    sink: &mut S,
    transport: Transport,
    name: &[u8],
    seqid: i32,
    kind: ApplicationExceptionKind,
    message: &str,
) -> Result<(), CodecError> {
    check_len("method name", name.len())?;
    check_len("exception message", message.len())?;
    begin(sink, transport, encoded_len_exception(Transport::Unframed, name, message))?;
    write_message_header(sink, name, MessageType::Exception, seqid);
    write_field_header(sink, TType::String, 1);
    write_binary_slice(sink, message.as_bytes());
    write_field_header(sink, TType::I32, 2);
    write_i32(sink, kind as i32);
    write_stop(sink);
    Ok(())
}

/// Decodes the struct of an exception reply. Missing fields take Apache
/// Thrift's defaults (empty message, [`ApplicationExceptionKind::Unknown`]);
/// other fields are skipped.
pub fn decode_exception(r: &mut Reader<'_>, ctx: &DecodeCtx) -> Result<ApplicationException, CodecError> {
    let (depth, _) = ctx.enter()?;
    let mut e = ApplicationException { kind: ApplicationExceptionKind::Unknown, message: String::new() };
    while let Some((ttype, fid)) = r.read_field_header()? {
        match (fid, ttype) {
            (1, TType::String) => {
                let s = std::str::from_utf8(r.read_binary_ref()?)
                    .map_err(|_| CodecError::InvalidUtf8 { field: "TApplicationException.message (field 1)" })?;
                e.message = s.to_owned();
            }
            (2, TType::I32) => e.kind = ApplicationExceptionKind::from_i32(r.read_i32()?),
            _ => r.skip(ttype, depth)?,
        }
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(b: &'static [u8]) -> Binary {
        Binary::from_static(b)
    }

    #[test]
    fn encoded_lengths_match_what_is_written() {
        for json in [None, Some(msg(b"{\"a\":1}"))] {
            let req = Request { id: -1, msg: msg(b"abc"), json: json.clone() };
            let resp = Response { id: 2, msg: msg(b""), json };
            for t in [Transport::Framed, Transport::Unframed] {
                let mut v = Vec::new();
                encode_call(&mut v, t, 1, &req).unwrap();
                assert_eq!(v.len(), encoded_len_call(t, &req));
                let mut v = Vec::new();
                encode_reply(&mut v, t, 1, &resp).unwrap();
                assert_eq!(v.len(), encoded_len_reply(t, &resp));
                let mut v = Vec::new();
                encode_exception(&mut v, t, b"nope", 1, ApplicationExceptionKind::UnknownMethod, "no").unwrap();
                assert_eq!(v.len(), encoded_len_exception(t, b"nope", "no"));
                if t == Transport::Framed {
                    assert_eq!(i32::from_be_bytes(v[..4].try_into().unwrap()) as usize, v.len() - 4);
                }
            }
        }
    }

    #[test]
    fn missing_required_fields_are_named() {
        let mut v = Vec::new();
        write_field_header(&mut v, TType::String, 2);
        write_binary_slice(&mut v, b"x");
        write_stop(&mut v);
        let b = Binary::from(v);
        let e = Request::decode(&mut Reader::new(&b), &DecodeCtx::default()).unwrap_err();
        assert_eq!(e, CodecError::MissingRequired { field: "Request.id (field 1)" });
        let b = Binary::from_static(&[0]);
        let e = decode_echo_result(&mut Reader::new(&b), &DecodeCtx::default()).unwrap_err();
        assert_eq!(e, CodecError::MissingRequired { field: "echo_result.success (field 0)" });
    }

    #[test]
    fn json_must_be_utf8_in_both_modes() {
        let r = Response { id: 1, msg: msg(b"m"), json: Some(msg(b"\xff")) };
        let mut v = Vec::new();
        r.write(&mut v);
        let b = Binary::from(v);
        for mode in [DecodeMode::Copy, DecodeMode::NoCopy] {
            let e = Response::decode(&mut Reader::new(&b), &DecodeCtx::new(mode)).unwrap_err();
            assert_eq!(e, CodecError::InvalidUtf8 { field: "Response.json (field 3)" });
        }
    }

    #[test]
    fn nocopy_marks_the_fields_it_slices_while_they_live() {
        let pool = crate::Pool::new(crate::PoolConfig::default());
        let req = Request { id: 1, msg: msg(b"hello"), json: Some(msg(b"")) };
        let mut v = Vec::new();
        encode_call(&mut v, Transport::Unframed, 1, &req).unwrap();
        let mut chunk = pool.lease(v.len(), crate::Taker::User("test"));
        chunk.spare_mut()[..v.len()].copy_from_slice(&v);
        chunk.freeze_to(v.len());
        let body = Binary::from(chunk.slice(0..v.len()));
        drop(chunk);
        let ctx = DecodeCtx { mode: DecodeMode::NoCopy, limits: Limits::default() };
        let (_, mut r) = crate::codec::read_message_header(&body).unwrap();
        let got = decode_echo_args(&mut r, &ctx).unwrap();
        assert_eq!(got, req);
        assert!(got.msg.is_pooled());
        assert!(!got.json.as_ref().unwrap().is_pooled(), "an empty field pins nothing");
        let fields = || -> Vec<&str> { pool.leases()[0].fields.iter().map(|f| f.name()).collect() };
        // The empty json slice pins nothing and is not recorded.
        assert_eq!(fields(), ["Request.msg (field 2, binary)"]);
        drop(body);
        let kept = got.msg.slice(..1);
        drop(got);
        assert_eq!(fields(), ["Request.msg (field 2, binary)"], "a byte of the field still holds it");
        drop(kept);
        assert!(pool.leases().is_empty());
    }

    #[test]
    fn exceptions_round_trip() {
        let mut v = Vec::new();
        encode_exception(&mut v, Transport::Unframed, b"echo", 5, ApplicationExceptionKind::InternalError, "boom")
            .unwrap();
        let b = Binary::from(v);
        let (h, mut r) = crate::codec::read_message_header(&b).unwrap();
        assert_eq!((h.mtype, h.seqid), (MessageType::Exception, 5));
        let e = decode_exception(&mut r, &DecodeCtx::default()).unwrap();
        assert_eq!(e, ApplicationException { kind: ApplicationExceptionKind::InternalError, message: "boom".into() });
        assert_eq!(ApplicationExceptionKind::from_i32(99), ApplicationExceptionKind::Unknown);
    }
}
