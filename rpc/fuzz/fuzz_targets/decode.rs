//! Feeds arbitrary bytes to the codec as a connection would: probe (sniffed,
//! and with each transport known), then the message header and every
//! struct the message could carry, in both decode modes.
//!
//! Run with `cargo +nightly fuzz run decode` from `rpc/`.
//!
//! The first input byte chooses the chunking and the limits, the rest is the
//! stream. Checked: no panic; a complete frame lies inside the buffer;
//! decoding never reads past the frame; chunking never changes what probe
//! says; a `FrameDecoder` fed the stream a chunk at a time answers on each
//! prefix what probe answers on it, examining each byte once; an unframed
//! message that decodes ends where probe said it ends.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rpc::codec::{
    decode_echo_args, decode_echo_result, decode_exception, probe, FrameDecoder, read_message_header, DecodeCtx, DecodeMode, Limits,
    Transport,
};
use rpc::{Binary, Pool, Taker};

fuzz_target!(|data: &[u8]| {
    let Some((&control, wire)) = data.split_first() else { return };
    let limits = if control & 1 == 0 { Limits::default() } else { Limits { max_frame: 256, max_depth: 4 } };
    let chunk = usize::from(control >> 1).max(1);
    // The message lies in a pooled chunk, as a server reads it: NoCopy
    // fields are slices of it.
    let mut pooled = Pool::global().lease(wire.len().max(1), Taker::User("fuzz"));
    pooled.spare_mut()[..wire.len()].copy_from_slice(wire);
    pooled.freeze_to(wire.len());
    let all = Binary::from(pooled.slice(0..wire.len()));
    drop(pooled);
    let chunks: Vec<Bytes> = wire.chunks(chunk).map(Bytes::copy_from_slice).collect();

    for known in [None, Some(Transport::Framed), Some(Transport::Unframed)] {
        let got = probe(&chunks, known, &limits);
        assert_eq!(got, probe(wire, known, &limits), "chunking changed the answer");
        let mut dec = FrameDecoder::with_transport(known, limits);
        let mut end = 0;
        loop {
            end = (end + chunk).min(wire.len());
            let step = dec.decode(&chunks[..end.div_ceil(chunk)]);
            assert_eq!(step, probe(&wire[..end], known, &limits), "resuming changed the answer");
            assert!(dec.examined() <= end as u64 + 4, "a byte examined twice");
            if step != Ok(None) || end == wire.len() {
                break;
            }
        }
        let Ok(Some(frame)) = got else { continue };
        assert!(frame.total_len() <= wire.len(), "frame past the buffer");
        assert_eq!(frame.header_len, frame.transport.header_len());
        if let Some(end) = decode_all(&all.slice(frame.body()), &limits) {
            assert!(end <= frame.len, "decode read past the frame");
        }
        if frame.transport == Transport::Unframed {
            if let Some(end) = decode_all(&all, &limits) {
                assert_eq!(end, frame.len, "probe and decode disagree on the end");
            }
        }
    }
});

/// Decodes `body` as a call, a reply and an exception in both modes;
/// returns where the successful decodes ended.
fn decode_all(body: &Binary, limits: &Limits) -> Option<usize> {
    let (_, r) = read_message_header(body).ok()?;
    let mut end = None;
    for mode in [DecodeMode::Copy, DecodeMode::NoCopy] {
        let ctx = DecodeCtx { mode, limits: *limits };
        let mut a = r.clone();
        let ok_a = decode_echo_args(&mut a, &ctx).is_ok();
        let mut b = r.clone();
        let ok_b = decode_echo_result(&mut b, &ctx).is_ok();
        let mut c = r.clone();
        let ok_c = decode_exception(&mut c, &ctx).is_ok();
        for (ok, pos) in [(ok_a, a.position()), (ok_b, b.position()), (ok_c, c.position())] {
            assert!(pos <= body.len(), "reader past the end");
            if ok {
                assert_eq!(*end.get_or_insert(pos), pos, "decoders disagree on the end");
            }
        }
    }
    end
}
