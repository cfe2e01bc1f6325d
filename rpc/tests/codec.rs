//! The Thrift codec against hand-written bytes, hostile input and random
//! mutations: round trips, interop byte-exactness, limits checked before
//! allocation, and no panic on any input.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use rpc::codec::{
    decode_echo_args, decode_echo_result, decode_exception, encode_call, encode_exception, encode_reply, probe,
    read_message_header, write_binary_slice, write_bool, write_byte, write_double, write_field_header, write_i16,
    write_i32, write_i64, write_list_header, write_map_header, write_message_header, write_set_header, write_stop,
    ApplicationExceptionKind, CodecError, DecodeCtx, DecodeMode, Frame, FrameDecoder, Limits, MessageType, Request,
    Response, TType, Transport,
};
use rpc::Binary;

// ---------------------------------------------------------------------------
// A global allocator that remembers, per thread, the largest allocation made
// while a test watches (the proof that limits are checked before anything is
// allocated), and can capture the stack of an allocation of a given size
// (the proof that a heap profile names the field that made a copy).

struct Watching;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    static STACK_OF_SIZE: Cell<usize> = const { Cell::new(usize::MAX) };
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
    static STACK: RefCell<String> = const { RefCell::new(String::new()) };
}

// SAFETY: every call is forwarded unchanged to `System`. The bookkeeping uses
// const-initialised thread-locals; capturing a stack allocates, but with
// `IN_HOOK` set, so those allocations skip the bookkeeping (no recursion).
unsafe impl GlobalAlloc for Watching {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(layout.size())));
        let capture = STACK_OF_SIZE.try_with(Cell::get) == Ok(layout.size())
            && IN_HOOK.try_with(|h| !h.replace(true)) == Ok(true);
        if capture {
            let stack = std::backtrace::Backtrace::force_capture().to_string();
            let _ = STACK.try_with(|s| *s.borrow_mut() = stack);
            let _ = IN_HOOK.try_with(|h| h.set(false));
        }
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which
        // is `System.alloc`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` (through `alloc`) with
        // `layout`, as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Watching = Watching;

/// Runs `f` and returns its result and the largest allocation it made.
fn largest_allocation<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LARGEST.with(|l| l.set(0));
    let r = f();
    (r, LARGEST.with(Cell::get))
}

/// Runs `f` and returns the stack of its (last) allocation of `size` bytes.
fn stack_of_allocation<R>(size: usize, f: impl FnOnce() -> R) -> (R, String) {
    STACK.with(|s| s.borrow_mut().clear());
    STACK_OF_SIZE.with(|s| s.set(size));
    let r = f();
    STACK_OF_SIZE.with(|s| s.set(usize::MAX));
    (r, STACK.with(|s| s.take()))
}

// ---------------------------------------------------------------------------
// Builders and helpers.

const MODES: [DecodeMode; 2] = [DecodeMode::Copy, DecodeMode::NoCopy];
const TRANSPORTS: [Transport; 2] = [Transport::Framed, Transport::Unframed];

fn b(s: &'static [u8]) -> Binary {
    Binary::from_static(s)
}

/// An unframed message `name` of type `mtype` whose struct's fields are
/// written by `fields`.
fn message(mtype: MessageType, fields: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut v = Vec::new();
    write_message_header(&mut v, b"echo", mtype, 1);
    fields(&mut v);
    write_stop(&mut v);
    v
}

/// An unframed call whose `Request` has `id` 7, `msg` "hi", then `extra`.
fn call_with_request_extra(extra: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    message(MessageType::Call, |v| {
        write_field_header(v, TType::Struct, 1);
        write_field_header(v, TType::I64, 1);
        write_i64(v, 7);
        write_field_header(v, TType::String, 2);
        write_binary_slice(v, b"hi");
        extra(v);
        write_stop(v);
    })
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as i32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

fn hi() -> Request {
    Request { id: 7, msg: b(b"hi"), json: None }
}

fn decode_args(body: &Binary, mode: DecodeMode) -> Result<Request, CodecError> {
    let (_, mut r) = read_message_header(body)?;
    decode_echo_args(&mut r, &DecodeCtx::new(mode))
}

/// Decodes an unframed call both ways, checks that the unframed scan agrees
/// on where it ends when it decodes, and returns the result.
fn check_call(body: &[u8]) -> Result<Request, CodecError> {
    let body = Binary::copy_from_slice(body);
    let copy = decode_args(&body, DecodeMode::Copy);
    let nocopy = decode_args(&body, DecodeMode::NoCopy);
    assert_eq!(copy, nocopy, "modes disagree");
    if copy.is_ok() {
        let f = probe(&body, None, &Limits::default()).expect("probe").expect("complete");
        assert_eq!(f, Frame { transport: Transport::Unframed, header_len: 0, len: body.len() });
    }
    copy
}

fn split(buf: &[u8], cuts: &[usize]) -> Vec<Bytes> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (buf.len() + 1)).collect();
    cuts.sort_unstable();
    let mut out = Vec::new();
    let mut at = 0;
    for c in cuts {
        out.push(Bytes::copy_from_slice(&buf[at..c]));
        at = c;
    }
    out.push(Bytes::copy_from_slice(&buf[at..]));
    out
}

fn within(inner: &Binary, outer: &Binary) -> bool {
    let o = outer.as_ptr_range();
    let i = inner.as_ptr_range();
    !inner.is_empty() && o.start <= i.start && i.end <= o.end
}

// ---------------------------------------------------------------------------
// Interop: the bytes Apache Thrift's TBinaryProtocol (strict write) and
// TFramedTransport produce for echo(Request{id: 7, msg: "hi"}), seqid 1.

#[rustfmt::skip]
const ECHO_CALL_FRAMED: &[u8] = &[
    0x00, 0x00, 0x00, 0x29,                         // frame length: 41
    0x80, 0x01, 0x00, 0x01,                         // strict version 1, CALL
    0x00, 0x00, 0x00, 0x04, b'e', b'c', b'h', b'o', // method name
    0x00, 0x00, 0x00, 0x01,                         // seqid 1
    0x0c, 0x00, 0x01,                               //   echo_args.req: struct, id 1
    0x0a, 0x00, 0x01,                               //     Request.id: i64, id 1
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, //       7
    0x0b, 0x00, 0x02,                               //     Request.msg: binary, id 2
    0x00, 0x00, 0x00, 0x02, b'h', b'i',             //       "hi"
    0x00,                                           //     Request stop
    0x00,                                           //   echo_args stop
];

#[rustfmt::skip]
const ECHO_REPLY_UNFRAMED: &[u8] = &[
    0x80, 0x01, 0x00, 0x02,                         // strict version 1, REPLY
    0x00, 0x00, 0x00, 0x04, b'e', b'c', b'h', b'o',
    0x00, 0x00, 0x00, 0x01,
    0x0c, 0x00, 0x00,                               //   echo_result.success: struct, id 0
    0x0a, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0x07,    //     id 7
    0x0b, 0x00, 0x02, 0, 0, 0, 0x02, b'h', b'i',    //     msg "hi"
    0x0b, 0x00, 0x03, 0, 0, 0, 0x02, b'{', b'}',    //     json "{}"
    0x00,
    0x00,
];

#[rustfmt::skip]
const UNKNOWN_METHOD_EXCEPTION: &[u8] = &[
    0x80, 0x01, 0x00, 0x03,                         // strict version 1, EXCEPTION
    0x00, 0x00, 0x00, 0x03, b'f', b'o', b'o',
    0x00, 0x00, 0x00, 0x09,
    0x0b, 0x00, 0x01, 0, 0, 0, 0x03, b'b', b'a', b'd', // message
    0x08, 0x00, 0x02, 0, 0, 0, 0x01,                 // type UNKNOWN_METHOD
    0x00,
];

#[test]
fn encode_call_matches_apache_thrift_bytes() {
    let mut v = Vec::new();
    encode_call(&mut v, Transport::Framed, 1, &hi()).unwrap();
    assert_eq!(v, ECHO_CALL_FRAMED);
    let mut m = BytesMut::new();
    encode_call(&mut m, Transport::Unframed, 1, &hi()).unwrap();
    assert_eq!(&m[..], &ECHO_CALL_FRAMED[4..]);
}

#[test]
fn encode_reply_and_exception_match_apache_thrift_bytes() {
    let mut v = Vec::new();
    encode_reply(&mut v, Transport::Unframed, 1, &Response { id: 7, msg: b(b"hi"), json: Some(b(b"{}")) }).unwrap();
    assert_eq!(v, ECHO_REPLY_UNFRAMED);
    let mut v = Vec::new();
    encode_exception(&mut v, Transport::Unframed, b"foo", 9, ApplicationExceptionKind::UnknownMethod, "bad").unwrap();
    assert_eq!(v, UNKNOWN_METHOD_EXCEPTION);
}

#[test]
fn apache_thrift_bytes_decode() {
    let wire = Binary::from_static(ECHO_CALL_FRAMED);
    let f = probe(&wire, None, &Limits::default()).unwrap().unwrap();
    assert_eq!(f, Frame { transport: Transport::Framed, header_len: 4, len: 41 });
    assert_eq!(decode_args(&wire.slice(f.body()), DecodeMode::Copy).unwrap(), hi());

    let wire = Binary::from_static(UNKNOWN_METHOD_EXCEPTION);
    let (h, mut r) = read_message_header(&wire).unwrap();
    assert_eq!((&h.name[..], h.mtype, h.seqid), (&b"foo"[..], MessageType::Exception, 9));
    let e = decode_exception(&mut r, &DecodeCtx::default()).unwrap();
    assert_eq!((e.kind, e.message.as_str()), (ApplicationExceptionKind::UnknownMethod, "bad"));
}

// ---------------------------------------------------------------------------
// Round trips.

fn requests() -> Vec<Request> {
    vec![
        hi(),
        Request { id: i64::MIN, msg: Binary::new(), json: Some(Binary::new()) },
        Request { id: -1, msg: Binary::from(vec![0xa5; 70_000]), json: Some(b("{\"k\":\"välue\"}".as_bytes())) },
    ]
}

#[test]
fn calls_and_replies_round_trip_in_every_transport_and_mode() {
    for req in requests() {
        let resp = Response { id: req.id, msg: req.msg.clone(), json: req.json.clone() };
        for transport in TRANSPORTS {
            for mode in MODES {
                let ctx = DecodeCtx::new(mode);
                let mut wire = BytesMut::new();
                encode_call(&mut wire, transport, 3, &req).unwrap();
                encode_reply(&mut wire, transport, 4, &resp).unwrap();
                let wire = Binary::from(wire.freeze());

                let f = probe(&wire, None, &Limits::default()).unwrap().expect("call complete");
                assert_eq!((f.transport, f.header_len), (transport, transport.header_len()));
                let body = wire.slice(f.body());
                let (h, mut r) = read_message_header(&body).unwrap();
                assert_eq!((&h.name[..], h.mtype, h.seqid), (&b"echo"[..], MessageType::Call, 3));
                assert_eq!(decode_echo_args(&mut r, &ctx).unwrap(), req);
                assert_eq!(r.remaining(), 0);

                let rest = wire.slice(f.total_len()..);
                let f = probe(&rest, Some(transport), &Limits::default()).unwrap().expect("reply complete");
                assert_eq!(f.total_len(), rest.len());
                let body = rest.slice(f.body());
                let (h, mut r) = read_message_header(&body).unwrap();
                assert_eq!((h.mtype, h.seqid), (MessageType::Reply, 4));
                assert_eq!(decode_echo_result(&mut r, &ctx).unwrap(), resp);
            }
        }
    }
}

#[test]
fn copy_mode_owns_its_fields_and_nocopy_slices_the_input() {
    let req = Request { id: 1, msg: Binary::from(vec![1; 4096]), json: Some(b(b"{\"a\":[1,2,3]}")) };
    let mut v = Vec::new();
    encode_call(&mut v, Transport::Unframed, 1, &req).unwrap();
    let body = Binary::from(v);

    let copied = decode_args(&body, DecodeMode::Copy).unwrap();
    assert!(!within(&copied.msg, &body) && !within(copied.json.as_ref().unwrap(), &body));

    let sliced = decode_args(&body, DecodeMode::NoCopy).unwrap();
    assert!(within(&sliced.msg, &body) && within(sliced.json.as_ref().unwrap(), &body));
    assert_eq!((copied.clone(), sliced), (req.clone(), req));

    // A copy keeps nothing of the input alive; it is exactly the field.
    drop(body);
    assert_eq!(copied.msg.len(), 4096);
}

#[test]
fn copy_mode_allocates_each_field_at_its_size() {
    let req = Request { id: 1, msg: Binary::from(vec![1; 100_000]), json: None };
    let mut v = Vec::new();
    encode_call(&mut v, Transport::Unframed, 1, &req).unwrap();
    let body = Binary::from(v);
    let (r, largest) = largest_allocation(|| decode_args(&body, DecodeMode::Copy));
    assert_eq!(r.unwrap().msg.len(), 100_000);
    assert_eq!(largest, 100_000);
    let (r, largest) = largest_allocation(|| decode_args(&body, DecodeMode::NoCopy));
    assert_eq!(r.unwrap().msg.len(), 100_000);
    assert!(largest < 1024, "nocopy allocated {largest} bytes");
}

#[test]
fn a_copied_field_is_allocated_under_a_frame_that_names_it() {
    // Sizes nothing else allocates, to find the copies.
    let (msg_size, json_size) = (777_777, 333_333);
    let resp =
        Response { id: 1, msg: Binary::from(vec![b'm'; msg_size]), json: Some(Binary::from(vec![b'j'; json_size])) };
    let mut v = Vec::new();
    encode_reply(&mut v, Transport::Unframed, 1, &resp).unwrap();
    let body = Binary::from(v);
    let decode = || {
        let (_, mut r) = read_message_header(&body).unwrap();
        decode_echo_result(&mut r, &DecodeCtx::default()).unwrap()
    };
    for (size, field) in [(msg_size, "Response::read_field_2"), (json_size, "Response::read_field_3")] {
        let (got, stack) = stack_of_allocation(size, decode);
        assert_eq!(got, resp);
        // Innermost first: the field's reader is the first frame of the
        // crate (the copy is made in its body), then the struct.
        let frames = frame_names(&stack);
        let at = |name: &str| frame_index(&frames, name).unwrap_or_else(|| panic!("no {name} in\n{stack}"));
        let first_rpc = frames.iter().position(|f| f.starts_with("rpc::")).expect("an rpc frame");
        assert_eq!(first_rpc, at(field), "{stack}");
        assert!(at(field) < at("Response::decode"), "{stack}");
        assert!(at("Response::decode") < at("decode_echo_result"), "{stack}");
    }
    // A request's field 2, as in the guide's flame graphs.
    let mut v = Vec::new();
    encode_call(&mut v, Transport::Framed, 1, &Request { id: 1, msg: Binary::from(vec![0; msg_size]), json: None })
        .unwrap();
    let body = Binary::from(v).slice(4..);
    let (_, stack) = stack_of_allocation(msg_size, || decode_args(&body, DecodeMode::Copy).unwrap());
    let frames = frame_names(&stack);
    assert!(frame_index(&frames, "Request::read_field_2").is_some(), "{stack}");
    if frames.iter().any(|f| f.starts_with("rpc::")) {
        assert!(frames.contains(&"rpc::codec::echo::Request::read_field_2"), "{stack}");
    }
}

/// The function names of a captured stack, innermost first.
fn frame_names(stack: &str) -> Vec<&str> {
    stack
        .lines()
        .filter_map(|l| {
            let (n, name) = l.trim_start().split_once(": ")?;
            n.parse::<usize>().ok().map(|_| name.trim())
        })
        .collect()
}

/// Where the frame of `path` (`Type::function`) is. With full debug info a
/// frame is named by its whole path; with line tables only
/// (`debug = "line-tables-only"`), the symbolizer gives the bare function
/// name, and the caller frames tell the type.
fn frame_index(frames: &[&str], path: &str) -> Option<usize> {
    let short = path.rsplit("::").next().unwrap_or(path);
    frames.iter().position(|f| f.ends_with(&format!("::{path}")) || *f == short)
}

// ---------------------------------------------------------------------------
// Framing: partial input, lengths, sniffing.

#[test]
fn every_cut_of_a_message_is_incomplete_never_an_error() {
    let req = Request { id: 9, msg: b(b"some message"), json: Some(b(b"[true]")) };
    for transport in TRANSPORTS {
        let mut wire = Vec::new();
        encode_call(&mut wire, transport, 1, &req).unwrap();
        for cut in 0..wire.len() {
            for known in [None, Some(transport)] {
                assert_eq!(probe(&wire[..cut], known, &Limits::default()), Ok(None), "{transport:?} cut {cut}");
                // The same prefix in one-byte chunks.
                let bytes: Vec<Bytes> = wire[..cut].iter().map(|x| Bytes::copy_from_slice(&[*x])).collect();
                assert_eq!(probe(&bytes, known, &Limits::default()), Ok(None));
            }
            // Any split of the whole message finds the whole message.
            let f = probe(&split(&wire, &[cut]), None, &Limits::default()).unwrap().unwrap();
            assert_eq!(f.total_len(), wire.len());
        }
    }
}

#[test]
fn a_large_binary_in_many_chunks_completes_with_its_last_chunk() {
    let req = Request { id: 1, msg: Binary::from(vec![7; 8 << 20]), json: None };
    let mut wire = Vec::new();
    encode_call(&mut wire, Transport::Unframed, 1, &req).unwrap();
    let chunks: Vec<Bytes> = Bytes::from(wire).chunks(64 << 10).map(Bytes::copy_from_slice).collect();
    let mut buffered = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        buffered.push(c.clone());
        let ((), largest) = largest_allocation(|| {
            let f = probe(&buffered, Some(Transport::Unframed), &Limits::default()).unwrap();
            assert_eq!(f.is_some(), i == chunks.len() - 1, "chunk {i}");
        });
        assert_eq!(largest, 0, "the scan allocates nothing");
    }
}

#[test]
fn framed_lengths_are_refused_on_their_prefix() {
    let max = Limits::default().max_frame;
    let cases: &[(i64, Option<CodecError>)] = &[
        (0, Some(CodecError::InvalidFrameLength(0))),
        (-1, Some(CodecError::InvalidFrameLength(-1))),
        (i32::MIN as i64, Some(CodecError::InvalidFrameLength(i32::MIN))),
        (max as i64 + 1, Some(CodecError::FrameTooLarge { len: max as u64 + 1, max })),
        (i32::MAX as i64, Some(CodecError::FrameTooLarge { len: i32::MAX as u64, max })),
        (max as i64, None),
        (3, None),
    ];
    for (len, want) in cases {
        let mut v = (*len as i32).to_be_bytes().to_vec();
        let got = largest_allocation(|| probe(&v[..], Some(Transport::Framed), &Limits::default()));
        assert_eq!(got, (want.clone().map_or(Ok(None), Err), 0), "length {len}");
        // Sniffed: the same once the magic arrives.
        v.extend_from_slice(&[0x80, 0x01]);
        assert_eq!(probe(&v[..], None, &Limits::default()), want.clone().map_or(Ok(None), Err), "length {len}");
    }
    let small = Limits { max_frame: 16, ..Limits::default() };
    let wire = framed(&call_with_request_extra(|_| ()));
    assert!(matches!(probe(&wire[..], None, &small), Err(CodecError::FrameTooLarge { max: 16, .. })));
    assert!(matches!(probe(&wire[4..], None, &small), Err(CodecError::FrameTooLarge { max: 16, .. })));
}

#[test]
fn sniffing_refuses_other_protocols() {
    let cases: &[(&[u8], &str)] = &[
        (&[0, 0, 0, 30, 0x10, 0x00, 0, 0], "tth"),
        (b"GET / HTTP/1.1\r\n\r\n", "unknown"),
        (b"PRI * HTTP/2.0\r\n", "unknown"),
        (&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01], "unknown"), // a TLS client hello
        (&[0, 0, 0, 12, 0x82, 0x21, 0x01], "unknown"),      // framed compact protocol
        (&[0x82, 0x21, 0x01, 0x04], "unknown"),             // compact protocol
        (&[0xff, 0xff, 0xff, 0xff], "unknown"),
    ];
    for (bytes, want) in cases {
        let got = probe(*bytes, None, &Limits::default());
        match *want {
            "tth" => assert_eq!(got, Err(CodecError::TTHeaderUnsupported)),
            _ => assert!(matches!(got, Err(CodecError::UnknownTransport(_))), "{bytes:02x?}: {got:?}"),
        }
    }
    // Old-style (non-strict) messages: unknown when sniffed, refused when
    // the transport is known.
    let mut old = Vec::new();
    write_binary_slice(&mut old, b"echo");
    old.push(1);
    write_i32(&mut old, 1);
    old.push(0);
    assert!(matches!(probe(&old[..], None, &Limits::default()), Err(CodecError::UnknownTransport(_))));
    assert_eq!(probe(&old[..], Some(Transport::Unframed), &Limits::default()), Err(CodecError::NonStrict(4)));
    let body = Binary::from(old);
    assert_eq!(read_message_header(&body).map(|(h, _)| h), Err(CodecError::NonStrict(4)));
}

// ---------------------------------------------------------------------------
// Fields: unknown, wrong types, lengths, type ids, depth.

type Writer = fn(&mut Vec<u8>);

/// One value of every type, as an unknown field with id 100 + n.
fn unknown_fields() -> Vec<(&'static str, Writer)> {
    vec![
        ("bool", |v| {
            write_field_header(v, TType::Bool, 100);
            write_bool(v, true);
        }),
        ("byte", |v| {
            write_field_header(v, TType::Byte, 101);
            write_byte(v, -1);
        }),
        ("double", |v| {
            write_field_header(v, TType::Double, 102);
            write_double(v, f64::NAN);
        }),
        ("i16", |v| {
            write_field_header(v, TType::I16, 103);
            write_i16(v, -2);
        }),
        ("i32", |v| {
            write_field_header(v, TType::I32, 104);
            write_i32(v, -3);
        }),
        ("i64", |v| {
            write_field_header(v, TType::I64, -105);
            write_i64(v, -4);
        }),
        ("string", |v| {
            write_field_header(v, TType::String, 106);
            write_binary_slice(v, b"\xff not utf-8 is fine when skipped");
        }),
        ("uuid", |v| {
            write_field_header(v, TType::Uuid, 107);
            v.extend_from_slice(&[0x42; 16]);
        }),
        ("struct", |v| {
            write_field_header(v, TType::Struct, 108);
            write_field_header(v, TType::I64, 1);
            write_i64(v, 1);
            write_field_header(v, TType::String, 2);
            write_binary_slice(v, b"nested");
            write_field_header(v, TType::Struct, 3);
            write_stop(v);
            write_stop(v);
        }),
        ("map<string, list<i32>>", |v| {
            write_field_header(v, TType::Map, 109);
            write_map_header(v, TType::String, TType::List, 2);
            for k in [&b"a"[..], b"bc"] {
                write_binary_slice(v, k);
                write_list_header(v, TType::I32, 2);
                write_i32(v, 1);
                write_i32(v, 2);
            }
        }),
        ("map<i16, double> (fixed-size entries)", |v| {
            write_field_header(v, TType::Map, 110);
            write_map_header(v, TType::I16, TType::Double, 2);
            v.extend_from_slice(&[0; 20]);
        }),
        ("set<i64>", |v| {
            write_field_header(v, TType::Set, 111);
            write_set_header(v, TType::I64, 3);
            v.extend_from_slice(&[1; 24]);
        }),
        ("list<struct>", |v| {
            write_field_header(v, TType::List, 112);
            write_list_header(v, TType::Struct, 2);
            write_stop(v);
            write_field_header(v, TType::Bool, 1);
            write_bool(v, false);
            write_stop(v);
        }),
        ("list<bool>", |v| {
            write_field_header(v, TType::List, 113);
            write_list_header(v, TType::Bool, 3);
            v.extend_from_slice(&[1, 0, 1]);
        }),
        ("empty containers", |v| {
            write_field_header(v, TType::List, 114);
            write_list_header(v, TType::String, 0);
            write_field_header(v, TType::Set, 115);
            write_set_header(v, TType::Map, 0);
            write_field_header(v, TType::Map, 116);
            write_map_header(v, TType::Uuid, TType::Struct, 0);
        }),
    ]
}

#[test]
fn unknown_fields_of_every_type_are_skipped_at_every_level() {
    for (name, field) in unknown_fields() {
        // In the Request, after the known fields.
        let body = call_with_request_extra(field);
        assert_eq!(check_call(&body), Ok(hi()), "{name} in Request");
        // In the args struct, before and after the Request.
        let body = message(MessageType::Call, |v| {
            field(v);
            write_field_header(v, TType::Struct, 1);
            hi().write(v);
            field(v);
        });
        assert_eq!(check_call(&body), Ok(hi()), "{name} in echo_args");
        // In the result struct.
        let body = Binary::from(message(MessageType::Reply, |v| {
            field(v);
            write_field_header(v, TType::Struct, 0);
            Response { id: 7, msg: b(b"hi"), json: None }.write(v);
        }));
        let (_, mut r) = read_message_header(&body).unwrap();
        assert_eq!(decode_echo_result(&mut r, &DecodeCtx::default()).unwrap().msg, b(b"hi"), "{name} in echo_result");
        // In an exception.
        let body = Binary::from(message(MessageType::Exception, |v| {
            field(v);
            write_field_header(v, TType::I32, 2);
            write_i32(v, 6);
        }));
        let (_, mut r) = read_message_header(&body).unwrap();
        assert_eq!(
            decode_exception(&mut r, &DecodeCtx::default()).unwrap().kind,
            ApplicationExceptionKind::InternalError
        );
    }
}

#[test]
fn known_fields_with_a_wrong_wire_type_are_skipped() {
    let missing = |field| Err(CodecError::MissingRequired { field });
    let cases: Vec<(&str, Writer, Result<Request, CodecError>)> = vec![
        (
            "id as i32",
            |v| {
                write_field_header(v, TType::I32, 1);
                write_i32(v, 7);
                write_field_header(v, TType::String, 2);
                write_binary_slice(v, b"hi");
            },
            missing("Request.id (field 1)"),
        ),
        (
            "msg as list<byte>",
            |v| {
                write_field_header(v, TType::I64, 1);
                write_i64(v, 7);
                write_field_header(v, TType::List, 2);
                write_list_header(v, TType::Byte, 2);
                v.extend_from_slice(b"hi");
            },
            missing("Request.msg (field 2)"),
        ),
        (
            "msg as struct",
            |v| {
                write_field_header(v, TType::I64, 1);
                write_i64(v, 7);
                write_field_header(v, TType::Struct, 2);
                write_stop(v);
            },
            missing("Request.msg (field 2)"),
        ),
        (
            "json as i64: optional, left out",
            |v| {
                write_field_header(v, TType::I64, 1);
                write_i64(v, 7);
                write_field_header(v, TType::String, 2);
                write_binary_slice(v, b"hi");
                write_field_header(v, TType::I64, 3);
                write_i64(v, 3);
            },
            Ok(hi()),
        ),
        (
            "repeated fields: the last wins",
            |v| {
                write_field_header(v, TType::I64, 1);
                write_i64(v, 1);
                write_field_header(v, TType::String, 2);
                write_binary_slice(v, b"first");
                write_field_header(v, TType::String, 2);
                write_binary_slice(v, b"hi");
                write_field_header(v, TType::I64, 1);
                write_i64(v, 7);
            },
            Ok(hi()),
        ),
    ];
    for (name, fields, want) in cases {
        let body = message(MessageType::Call, |v| {
            write_field_header(v, TType::Struct, 1);
            fields(v);
            write_stop(v);
        });
        assert_eq!(check_call(&body), want, "{name}");
    }
    // The args' field 1 as a string: the Request is missing.
    let body = message(MessageType::Call, |v| {
        write_field_header(v, TType::String, 1);
        write_binary_slice(v, b"not a struct");
    });
    assert_eq!(check_call(&body), missing("echo_args.req (field 1)"));
}

#[test]
fn json_must_be_utf8() {
    let body = call_with_request_extra(|v| {
        write_field_header(v, TType::String, 3);
        write_binary_slice(v, b"{\"\xc3\x28\"}");
    });
    assert_eq!(check_call(&body), Err(CodecError::InvalidUtf8 { field: "Request.json (field 3)" }));
}

/// Messages with a length or count that is negative or beyond the message,
/// and what decoding and the unframed scan say about them.
fn bad_length_cases() -> Vec<(&'static str, Vec<u8>, CodecError)> {
    let neg = |what, len| CodecError::NegativeLength { what, len };
    let mut cases = Vec::new();
    let mut header = vec![0x80, 0x01, 0x00, 0x01];
    header.extend_from_slice(&(-7i32).to_be_bytes());
    cases.push(("negative name", header, neg("method name", -7)));
    let mut header = vec![0x80, 0x01, 0x00, 0x01];
    header.extend_from_slice(&i32::MAX.to_be_bytes());
    header.extend_from_slice(b"echo");
    cases.push((
        "huge name",
        header,
        CodecError::Truncated { what: "method name", offset: 8, needed: i32::MAX as u64, remaining: 4 },
    ));
    let fields: Vec<(&str, Writer, CodecError)> = vec![
        (
            "negative msg",
            |v| {
                write_field_header(v, TType::String, 2);
                write_i32(v, -1);
            },
            neg("string/binary", -1),
        ),
        (
            "huge msg",
            |v| {
                write_field_header(v, TType::String, 2);
                write_i32(v, i32::MAX);
            },
            CodecError::Truncated { what: "string/binary", offset: 0, needed: i32::MAX as u64, remaining: 0 },
        ),
        (
            "huge unknown string",
            |v| {
                write_field_header(v, TType::String, 9);
                write_i32(v, 1 << 30);
            },
            CodecError::Truncated { what: "string/binary", offset: 0, needed: 1 << 30, remaining: 0 },
        ),
        (
            "negative list",
            |v| {
                write_field_header(v, TType::List, 9);
                write_list_header(v, TType::I64, 0);
                let n = v.len();
                v[n - 4..].copy_from_slice(&i32::MIN.to_be_bytes());
            },
            neg("list", i32::MIN),
        ),
        (
            "huge list<i64>",
            |v| {
                write_field_header(v, TType::List, 9);
                write_list_header(v, TType::I64, i32::MAX as usize);
            },
            CodecError::Truncated { what: "list", offset: 0, needed: i32::MAX as u64 * 8, remaining: 0 },
        ),
        (
            "huge list<struct>",
            |v| {
                write_field_header(v, TType::List, 9);
                write_list_header(v, TType::Struct, 1 << 30);
            },
            CodecError::Truncated { what: "list", offset: 0, needed: 1 << 30, remaining: 0 },
        ),
        (
            "negative set",
            |v| {
                write_field_header(v, TType::Set, 9);
                write_set_header(v, TType::String, 0);
                let n = v.len();
                v[n - 4..].copy_from_slice(&(-2i32).to_be_bytes());
            },
            neg("set", -2),
        ),
        (
            "negative map",
            |v| {
                write_field_header(v, TType::Map, 9);
                write_map_header(v, TType::I32, TType::I32, 0);
                let n = v.len();
                v[n - 4..].copy_from_slice(&(-1i32).to_be_bytes());
            },
            neg("map", -1),
        ),
        (
            "huge map<string, string>",
            |v| {
                write_field_header(v, TType::Map, 9);
                write_map_header(v, TType::String, TType::String, i32::MAX as usize);
            },
            CodecError::Truncated { what: "map", offset: 0, needed: i32::MAX as u64 * 8, remaining: 0 },
        ),
    ];
    for (name, field, err) in fields {
        // The field is the last thing in the message: nothing follows.
        let mut v = Vec::new();
        write_message_header(&mut v, b"echo", MessageType::Call, 1);
        write_field_header(&mut v, TType::Struct, 1);
        field(&mut v);
        let err = match err {
            CodecError::Truncated { what, needed, remaining, .. } => {
                CodecError::Truncated { what, offset: v.len() - remaining, needed, remaining }
            }
            e => e,
        };
        cases.push((name, v, err));
    }
    cases
}

#[test]
fn negative_and_huge_lengths_fail_before_allocating() {
    for (name, body, want) in bad_length_cases() {
        let body = Binary::from(body);
        for mode in MODES {
            let (got, largest) = largest_allocation(|| decode_args(&body, mode));
            assert_eq!(got, Err(want.clone()), "{name} {mode:?}");
            assert!(largest < 1024, "{name} {mode:?}: allocated {largest} bytes");
        }
        // The unframed scan: a negative length is corrupt; a huge one is
        // larger than the frame limit (it would be waited for otherwise).
        let (got, largest) = largest_allocation(|| probe(&body, None, &Limits::default()));
        assert_eq!(largest, 0, "{name}");
        if let CodecError::NegativeLength { .. } = want {
            assert_eq!(got, Err(want), "{name}");
        } else {
            assert!(matches!(got, Err(CodecError::FrameTooLarge { .. })), "{name}: {got:?}");
            let unlimited = Limits { max_frame: usize::MAX, ..Limits::default() };
            assert_eq!(probe(&body, None, &unlimited), Ok(None), "{name}");
        }
    }
}

#[test]
fn bad_type_ids_are_errors() {
    let cases: Vec<(&str, Writer, CodecError)> = vec![
        ("field type 1 (void)", |v| write_field_header_raw(v, 1), bad("field header", 1)),
        ("field type 5", |v| write_field_header_raw(v, 5), bad("field header", 5)),
        ("field type 7", |v| write_field_header_raw(v, 7), bad("field header", 7)),
        ("field type 9", |v| write_field_header_raw(v, 9), bad("field header", 9)),
        ("field type 17", |v| write_field_header_raw(v, 17), bad("field header", 17)),
        ("field type 255", |v| write_field_header_raw(v, 255), bad("field header", 255)),
        ("list of stop", |v| container(v, TType::List, &[0]), bad("list", 0)),
        ("set of 20", |v| container(v, TType::Set, &[20]), bad("set", 20)),
        ("map key stop", |v| container(v, TType::Map, &[0, 8]), bad("map key type", 0)),
        ("map key void", |v| container(v, TType::Map, &[1, 8]), bad("map key type", 1)),
        ("map key 17", |v| container(v, TType::Map, &[17, 8]), bad("map key type", 17)),
        ("map value 255", |v| container(v, TType::Map, &[8, 255]), bad("map value type", 255)),
        ("map value 5", |v| container(v, TType::Map, &[11, 5]), bad("map value type", 5)),
    ];
    for (name, field, want) in cases {
        let body = call_with_request_extra(field);
        assert_eq!(check_call(&body), Err(want.clone()), "{name}");
        assert_eq!(probe(&body[..], None, &Limits::default()), Err(want), "{name}");
    }

    fn bad(what: &'static str, id: u8) -> CodecError {
        CodecError::BadTypeId { what, id }
    }
    fn write_field_header_raw(v: &mut Vec<u8>, ttype: u8) {
        v.extend_from_slice(&[ttype, 0, 9, 0, 0, 0, 0]);
    }
    fn container(v: &mut Vec<u8>, ttype: TType, types: &[u8]) {
        write_field_header(v, ttype, 9);
        v.extend_from_slice(types);
        v.extend_from_slice(&1i32.to_be_bytes());
        v.extend_from_slice(&[0; 16]);
    }
}

/// A call whose Request has an unknown field nested `depth` levels deep
/// (structs and lists alternating); the Request's level is not counted.
fn nested_call(depth: usize) -> Vec<u8> {
    call_with_request_extra(|v| {
        write_field_header(v, TType::Struct, 9);
        for level in 1..depth {
            if level % 2 == 1 {
                write_field_header(v, TType::List, 1);
            } else {
                write_list_header(v, TType::Struct, 1);
            }
        }
        // Innermost: an empty struct (depth odd) or an empty list.
        if depth & 1 == 0 {
            write_list_header(v, TType::I32, 0);
        }
        // Lists end with their count; structs (odd levels) with a stop.
        for level in (1..=depth).rev() {
            if level % 2 == 1 {
                write_stop(v);
            }
        }
    })
}

#[test]
fn nesting_is_limited_without_overflowing_the_stack() {
    let limits = Limits::default();
    // echo_args and Request take two levels of 64.
    for (depth, ok) in [(1, true), (61, true), (62, true), (63, false), (10_000, false)] {
        let body = Binary::from(nested_call(depth));
        for mode in MODES {
            let got = decode_args(&body, mode);
            assert_eq!(got.is_ok(), ok, "depth {depth}: {got:?}");
            if !ok {
                assert_eq!(got, Err(CodecError::DepthExceeded));
            }
        }
        let f = probe(&body, None, &limits);
        assert_eq!(
            f,
            if ok {
                Ok(Some(Frame { transport: Transport::Unframed, header_len: 0, len: body.len() }))
            } else {
                Err(CodecError::DepthExceeded)
            },
            "depth {depth}"
        );
    }
    // 10 000 nested lists, no struct in between, and a deeper limit.
    let mut v = Vec::new();
    write_message_header(&mut v, b"echo", MessageType::Call, 1);
    write_field_header(&mut v, TType::List, 5);
    for _ in 0..10_000 {
        write_list_header(&mut v, TType::List, 1);
    }
    let body = Binary::from(v);
    let deeper = Limits { max_depth: 200, ..limits };
    let ctx = DecodeCtx { limits: deeper, ..DecodeCtx::default() };
    let (_, mut r) = read_message_header(&body).unwrap();
    assert_eq!(decode_echo_args(&mut r, &ctx), Err(CodecError::DepthExceeded));
    assert_eq!(probe(&body, None, &deeper), Err(CodecError::DepthExceeded));
    assert_eq!(probe(&body, None, &Limits { max_depth: 0, ..limits }), Err(CodecError::DepthExceeded));
}

#[test]
fn message_header_errors() {
    let cases: &[(&[u8], CodecError)] = &[
        (&[0x80, 0x02, 0x00, 0x01], CodecError::BadVersion(0x8002_0001)),
        (&[0xff, 0xff, 0x00, 0x01], CodecError::BadVersion(0xffff_0001)),
        (&[0x80, 0x01, 0x00, 0x00], CodecError::BadMessageType(0)),
        (&[0x80, 0x01, 0x00, 0x05], CodecError::BadMessageType(5)),
        (&[0x00, 0x00, 0x00, 0x04], CodecError::NonStrict(4)),
        (&[0x80, 0x01], CodecError::Truncated { what: "message header", offset: 0, needed: 4, remaining: 2 }),
    ];
    for (bytes, want) in cases {
        let body = Binary::from_static(bytes);
        assert_eq!(read_message_header(&body).map(|(h, _)| h), Err(want.clone()), "{bytes:02x?}");
        if !matches!(want, CodecError::Truncated { .. }) {
            assert_eq!(probe(*bytes, Some(Transport::Unframed), &Limits::default()), Err(want.clone()));
        }
    }
}

#[test]
fn errors_say_what_to_do() {
    let msgs = [
        CodecError::FrameTooLarge { len: 100 << 20, max: 64 << 20 }.to_string(),
        CodecError::NonStrict(4).to_string(),
        CodecError::TTHeaderUnsupported.to_string(),
        CodecError::MissingRequired { field: "Request.id (field 1)" }.to_string(),
    ];
    assert!(msgs[0].contains("Limits::max_frame"), "{}", msgs[0]);
    assert!(msgs[1].contains("strict"), "{}", msgs[1]);
    assert!(msgs[2].contains("framed"), "{}", msgs[2]);
    assert!(msgs[3].contains("Request.id (field 1)"), "{}", msgs[3]);
}

// ---------------------------------------------------------------------------
// Properties: no panic on any input; probe and decode agree.

/// Runs every decoder over `wire` split at `cuts`, checking the contracts.
fn exercise(wire: &[u8], cuts: &[usize], limits: &Limits) {
    let segs = split(wire, cuts);
    let all = Binary::copy_from_slice(wire);
    for known in [None, Some(Transport::Framed), Some(Transport::Unframed)] {
        let got = probe(&segs, known, limits);
        // Chunking never changes the answer.
        assert_eq!(got, probe(wire, known, limits), "{known:?}");
        // Nor does resuming after every cut.
        incremental(wire, cuts, known, limits);
        if got_transport(known, wire) == Some(Transport::Unframed) {
            if let Some(end) = oracle_end(wire, limits).filter(|&e| e <= limits.max_frame) {
                assert_eq!(got, Ok(Some(Frame { transport: Transport::Unframed, header_len: 0, len: end })));
            }
        }
        let frame = match got {
            Ok(Some(f)) => f,
            Ok(None) => {
                if got_transport(known, wire) == Some(Transport::Unframed) {
                    // Incomplete: the decoder must run out of bytes too.
                    assert_eq!(decode_any(&all, limits), None, "probe waits but decode finished");
                }
                continue;
            }
            Err(_) => continue,
        };
        assert!(frame.total_len() <= wire.len(), "frame past the buffer");
        assert_eq!(frame.header_len, frame.transport.header_len());
        let body = all.slice(frame.body());
        if let Some(end) = decode_any(&body, limits) {
            assert!(end <= frame.len, "decode read past the frame");
        }
        if frame.transport == Transport::Unframed {
            // Over the whole buffer, a successful decode ends where probe said.
            if let Some(end) = decode_any(&all, limits) {
                assert_eq!(end, frame.len, "probe and decode disagree on the end");
            }
        }
    }
}

/// Feeds `wire` to one [`FrameDecoder`] a prefix at a time (cut at `cuts`,
/// each prefix in chunks): each answer is the one-shot answer on that
/// prefix, until the first frame or error.
fn incremental(wire: &[u8], cuts: &[usize], known: Option<Transport>, limits: &Limits) {
    let mut ends: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    ends.push(wire.len());
    ends.sort_unstable();
    let mut dec = FrameDecoder::with_transport(known, *limits);
    for end in ends {
        let got = dec.decode(&split(&wire[..end], cuts));
        assert_eq!(got, probe(&wire[..end], known, limits), "{known:?} prefix {end}");
        assert!(dec.examined() <= end as u64 + 4, "examined {} of {end} bytes", dec.examined());
        if got != Ok(None) {
            break;
        }
    }
}

/// Where an unframed message ends by the recursive skip of [`rpc::codec::Reader`]:
/// an oracle independent of the frame decoder.
fn oracle_end(wire: &[u8], limits: &Limits) -> Option<usize> {
    let all = Binary::copy_from_slice(wire);
    let (_, mut r) = read_message_header(&all).ok()?;
    r.skip(rpc::codec::TType::Struct, limits.max_depth).ok()?;
    Some(r.position())
}

fn got_transport(known: Option<Transport>, wire: &[u8]) -> Option<Transport> {
    known.or((wire.len() >= 2 && wire[..2] == [0x80, 0x01]).then_some(Transport::Unframed))
}

/// Decodes one message as every struct it could be, in both modes; returns
/// where the successful decodes ended (they all end at the same place).
fn decode_any(body: &Binary, limits: &Limits) -> Option<usize> {
    let (_, r) = read_message_header(body).ok()?;
    let mut end = None;
    for mode in MODES {
        let ctx = DecodeCtx { mode, limits: *limits };
        let mut a = r.clone();
        let args = decode_echo_args(&mut a, &ctx);
        let mut b = r.clone();
        let result = decode_echo_result(&mut b, &ctx);
        let mut c = r.clone();
        let exception = decode_exception(&mut c, &ctx);
        // The three share a grammar: where one ends, all end.
        for (ok, pos) in
            [(args.is_ok(), a.position()), (result.is_ok(), b.position()), (exception.is_ok(), c.position())]
        {
            assert!(pos <= body.len());
            if ok {
                assert_eq!(*end.get_or_insert(pos), pos, "decoders disagree on the end");
            }
        }
        if let Ok(req) = args {
            if mode == DecodeMode::NoCopy && !req.msg.is_empty() {
                assert!(within(&req.msg, body));
            }
        }
    }
    end
}

fn valid_message() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<i64>(),
        proptest::collection::vec(any::<u8>(), 0..300),
        proptest::option::of("[ -~]{0,40}"),
        any::<bool>(),
        0..3u8,
        any::<i32>(),
    )
        .prop_map(|(id, msg, json, framed, kind, seqid)| {
            let transport = if framed { Transport::Framed } else { Transport::Unframed };
            let (msg, json) = (Binary::from(msg), json.map(Binary::from));
            let mut v = Vec::new();
            match kind {
                0 => encode_call(&mut v, transport, seqid, &Request { id, msg, json }).unwrap(),
                1 => encode_reply(&mut v, transport, seqid, &Response { id, msg, json }).unwrap(),
                _ => encode_exception(&mut v, transport, b"echo", seqid, ApplicationExceptionKind::ProtocolError, "x")
                    .unwrap(),
            }
            v
        })
}

#[derive(Clone, Debug)]
enum Mutation {
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let interesting = prop_oneof![any::<u8>(), Just(0u8), Just(0x80), Just(0xff), Just(0x7f), 0..17u8];
    prop_oneof![
        (any::<usize>(), interesting).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 1..8usize).prop_map(|(i, n)| Mutation::Remove(i, n)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(mut v: Vec<u8>, ms: &[Mutation]) -> Vec<u8> {
    for m in ms {
        let len = v.len();
        match m {
            Mutation::Set(i, b) if len > 0 => v[i % len] = *b,
            Mutation::Insert(i, b) => {
                let at = i % (len + 1);
                v.splice(at..at, b.iter().copied());
            }
            Mutation::Remove(i, n) if len > 0 => {
                let at = i % len;
                v.drain(at..(at + n).min(len));
            }
            Mutation::Truncate(i) => v.truncate(i % (len + 1)),
            _ => {}
        }
    }
    v
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(
        wire in proptest::collection::vec(any::<u8>(), 0..200),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        exercise(&wire, &cuts, &Limits::default());
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_header_never_panic(
        framed in any::<bool>(),
        mtype in 1..5u8,
        rest in proptest::collection::vec(any::<u8>(), 0..200),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let mut body = vec![0x80, 0x01, 0x00, mtype, 0, 0, 0, 0, 0, 0, 0, 1];
        body.extend_from_slice(&rest);
        let wire = if framed { self::framed(&body) } else { body };
        exercise(&wire, &cuts, &Limits { max_depth: 8, ..Limits::default() });
    }

    #[test]
    fn valid_messages_survive_any_chunking(
        wire in valid_message(),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let segs = split(&wire, &cuts);
        let f = probe(&segs, None, &Limits::default()).unwrap().unwrap();
        prop_assert_eq!(f.total_len(), wire.len());
        let all = Binary::from(wire);
        prop_assert_eq!(decode_any(&all.slice(f.body()), &Limits::default()), Some(f.len));
    }

    #[test]
    fn mutated_messages_never_panic(
        wire in valid_message(),
        ms in proptest::collection::vec(mutation(), 1..4),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
        small in any::<bool>(),
    ) {
        let wire = mutate(wire, &ms);
        let limits = if small { Limits { max_frame: 64, max_depth: 3 } } else { Limits::default() };
        exercise(&wire, &cuts, &limits);
    }
}
