//! [`Profile::decode`]: reading a profile.proto back, gzip-compressed or
//! not, within limits checked before anything is decoded ([`MAX_DECODE_BYTES`],
//! [`MAX_DECODE_ELEMENTS`]); [`DecodeError`] says why it could not be read.

use std::fmt;
use std::io::Read;

use pprof::protos::{self, Message};

use crate::profile::Profile;

impl Profile {
    /// Reads a profile.proto, gzip-compressed or not: at most
    /// [`MAX_DECODE_BYTES`] in and decompressed, and at most
    /// [`MAX_DECODE_ELEMENTS`] repeated elements (samples, location ids,
    /// values, labels, locations, lines, functions, mappings, strings),
    /// counted on the wire before anything is decoded.
    pub fn decode(bytes: &[u8]) -> Result<Profile, DecodeError> {
        let limit = MAX_DECODE_BYTES;
        if bytes.len() as u64 > limit {
            return Err(DecodeError::TooLarge { what: "input bytes", limit });
        }
        let raw = if bytes.starts_with(&[0x1f, 0x8b]) {
            let mut raw = Vec::new();
            flate2::read::GzDecoder::new(bytes).take(limit + 1).read_to_end(&mut raw).map_err(DecodeError::Gzip)?;
            if raw.len() as u64 > limit {
                return Err(DecodeError::TooLarge { what: "decompressed bytes", limit });
            }
            std::borrow::Cow::Owned(raw)
        } else {
            std::borrow::Cow::Borrowed(bytes)
        };
        let elements = count_elements(&raw).map_err(DecodeError::Protobuf)?;
        if elements > MAX_DECODE_ELEMENTS {
            return Err(DecodeError::TooLarge { what: "repeated elements", limit: MAX_DECODE_ELEMENTS });
        }
        let proto = protos::Profile::decode(raw.as_ref());
        proto.map(Profile::from_proto).map_err(|e| DecodeError::Protobuf(e.to_string()))
    }
}

/// The most bytes [`Profile::decode`] reads, compressed or decompressed:
/// 64 MiB.
pub const MAX_DECODE_BYTES: u64 = 64 << 20;

/// The most repeated elements [`Profile::decode`] lets a message hold, all
/// kinds together: 4 Mi. Each becomes a value of 8 to 96 bytes once
/// decoded, so this bounds the decoded message to a few hundred MiB
/// however small its elements are on the wire (two bytes for an empty
/// sample).
pub const MAX_DECODE_ELEMENTS: u64 = 4 << 20;

/// A profile could not be read.
#[derive(Debug)]
#[non_exhaustive]
pub enum DecodeError {
    /// The gzip stream is corrupt.
    Gzip(std::io::Error),
    /// The bytes are not a profile.proto message.
    Protobuf(String),
    /// A limit was exceeded: `what` counts past `limit`.
    TooLarge {
        /// What was counted (`decompressed bytes`, `repeated elements`).
        what: &'static str,
        /// The limit.
        limit: u64,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Gzip(e) => write!(f, "corrupt gzip stream: {e}"),
            DecodeError::Protobuf(e) => write!(f, "not a profile.proto message: {e}"),
            DecodeError::TooLarge { what, limit } => write!(f, "more {what} than the limit of {limit}"),
        }
    }
}

impl std::error::Error for DecodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DecodeError::Gzip(e) => Some(e),
            DecodeError::Protobuf(_) | DecodeError::TooLarge { .. } => None,
        }
    }
}

/// Reads a varint at `pos`, moving past it.
fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let Some(&b) = buf.get(*pos) else { return Err(format!("truncated varint at byte {pos}")) };
        *pos += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(value);
        }
    }
    Err(format!("varint longer than 10 bytes at byte {pos}"))
}

/// Calls `f` with the number of each field of the message in `buf` and its
/// payload if length-delimited.
fn fields<'a>(buf: &'a [u8], mut f: impl FnMut(u64, Option<&'a [u8]>)) -> Result<(), String> {
    let mut pos = 0;
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let payload = match key & 7 {
            0 => varint(buf, &mut pos).map(|_| None)?,
            wire @ (1 | 5) => {
                let width = if wire == 1 { 8 } else { 4 };
                if buf.len() - pos < width {
                    return Err(format!("truncated fixed-width field at byte {pos}"));
                }
                pos += width;
                None
            }
            2 => {
                let len = varint(buf, &mut pos)?;
                let end = usize::try_from(len).ok().and_then(|l| pos.checked_add(l)).filter(|&e| e <= buf.len());
                let Some(end) = end else { return Err(format!("length {len} past the end at byte {pos}")) };
                let bytes = &buf[pos..end];
                pos = end;
                Some(bytes)
            }
            wire => return Err(format!("wire type {wire} at byte {pos}")),
        };
        f(key >> 3, payload);
    }
    Ok(())
}

/// The elements of a profile.proto message, on the wire: each of its
/// fields, its samples' ids, values and labels, its locations' lines. A
/// packed field counts one element per varint.
fn count_elements(raw: &[u8]) -> Result<u64, String> {
    let packed = |p: Option<&[u8]>| p.map_or(1, |b| b.iter().filter(|&&x| x < 0x80).count() as u64);
    let mut n = 0u64;
    let mut inner = Ok(());
    fields(raw, |number, payload| {
        n += 1;
        let r = match (number, payload) {
            (2, Some(sample)) => fields(sample, |k, p| n += if k == 3 { 1 } else { packed(p) }),
            (4, Some(location)) => fields(location, |k, _| n += u64::from(k == 4)),
            // A packed field counts its varints instead of the one above
            // (`n` is at least that one: no underflow when there are none).
            (13, p) => {
                n = n - 1 + packed(p);
                Ok(())
            }
            _ => Ok(()),
        };
        if inner.is_ok() {
            inner = r;
        }
    })?;
    inner.map(|()| n)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::profile::SampleType;

    #[test]
    fn decode_refuses_a_gzip_bomb() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..(MAX_DECODE_BYTES >> 20) + 1 {
            gz.write_all(&chunk).unwrap();
        }
        let bomb = gz.finish().unwrap();
        let err = Profile::decode(&bomb).unwrap_err();
        assert!(matches!(err, DecodeError::TooLarge { what: "decompressed bytes", .. }), "{err}");
        assert_eq!(err.to_string(), "more decompressed bytes than the limit of 67108864");
    }

    #[test]
    fn decode_refuses_too_many_elements() {
        // Empty strings (two bytes each) and empty samples, past the count.
        let strings = [0x32u8, 0x00].repeat(MAX_DECODE_ELEMENTS as usize + 1);
        let err = Profile::decode(&strings).unwrap_err();
        assert_eq!(err.to_string(), "more repeated elements than the limit of 4194304");
        // A sample of packed location ids counts each id.
        let mut sample = vec![0x12, 0x84, 0x80, 0x02, 0x0a, 0x80, 0x80, 0x02];
        sample.extend(std::iter::repeat_n(1u8, 1 << 15));
        let raw = sample.repeat(130);
        assert!(matches!(Profile::decode(&raw), Err(DecodeError::TooLarge { .. })));
        // Counting stops at broken wire data with an error, not a panic.
        for bad in [&[0x0a, 0x05, 0x01][..], &[0x0b], &[0x12, 0x02, 0x0a, 0x09], &[0x80]] {
            assert!(matches!(Profile::decode(bad), Err(DecodeError::Protobuf(_))), "{bad:?}");
        }
        // 4 sample types, 8 strings, and 4 other fields, each counted once.
        assert_eq!(count_elements(&Profile::from_named(&[], 1, SampleType::InuseSpace).encode()), Ok(16));
        assert!(matches!(Profile::decode(b"\xff\xff\xff"), Err(DecodeError::Protobuf(_))));
        // An empty packed field of comments is no element (it underflowed
        // the count in a build with overflow checks).
        assert_eq!(count_elements(&[0x6a, 0x00]), Ok(0));
        assert_eq!(count_elements(&[0x6a, 0x00, 0x6a, 0x02, 0x01, 0x02]), Ok(2));
    }
}
