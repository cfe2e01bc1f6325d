//! [`Binary`]: the value of a Thrift `binary` or `string` field.
//!
//! Decoded without a copy ([`DecodeMode::NoCopy`](super::DecodeMode)) a
//! field is a [`Slice`] of the pooled chunk the message was read into:
//! cutting, cloning and dropping it count references in the chunk's own
//! book-keeping and allocate nothing, and the chunk records the field by
//! name while the value lives. Built by a caller, or copied out of the
//! message, it is a `Bytes`.
//!
//! ```
//! use rpc::Binary;
//! let hello = Binary::from_static(b"hello");
//! assert_eq!(&hello[1..3], b"el");
//! assert_eq!(hello.slice(1..3), Binary::from(b"el".to_vec()));
//! assert!(!hello.is_pooled());
//! ```

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::{Bound, Deref, RangeBounds};

use bytes::Bytes;

use crate::pool::{FieldId, Slice};

/// The value of a `binary`/`string` field: shared bytes, or a slice of a
/// pooled chunk. Compares, hashes and prints as its bytes.
#[derive(Clone)]
pub struct Binary(Repr);

#[derive(Clone)]
enum Repr {
    Bytes(Bytes),
    Pooled(Slice),
}

impl Binary {
    /// Empty.
    pub const fn new() -> Binary {
        Binary(Repr::Bytes(Bytes::new()))
    }

    /// Static bytes, without a copy.
    pub const fn from_static(b: &'static [u8]) -> Binary {
        Binary(Repr::Bytes(Bytes::from_static(b)))
    }

    /// A copy of `b` on the heap.
    pub fn copy_from_slice(b: &[u8]) -> Binary {
        Binary(Repr::Bytes(Bytes::copy_from_slice(b)))
    }

    /// A sub-range without a copy; a pooled value stays pooled (and counted
    /// as the same field). An empty range is a plain empty value, which
    /// pins nothing (as `Bytes::slice` gives).
    ///
    /// # Panics
    /// If the range reaches past the end, or ends before it starts.
    pub fn slice(&self, range: impl RangeBounds<usize>) -> Binary {
        let s = match &self.0 {
            Repr::Bytes(b) => return Binary(Repr::Bytes(b.slice(range))),
            Repr::Pooled(s) => s,
        };
        let start = match range.start_bound() {
            Bound::Included(&n) => n,
            Bound::Excluded(&n) => n.checked_add(1).expect("range start out of bounds"),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&n) => n.checked_add(1).expect("range end out of bounds"),
            Bound::Excluded(&n) => n,
            Bound::Unbounded => s.len(),
        };
        assert!(start <= end && end <= s.len(), "range {start}..{end} out of bounds of {} bytes", s.len());
        if start == end {
            return Binary::new();
        }
        Binary(Repr::Pooled(s.slice(start..end)))
    }

    /// Whether it lies in a pooled chunk (and so pins that chunk).
    pub fn is_pooled(&self) -> bool {
        self.as_pooled().is_some()
    }

    /// The pooled slice it is, if it is one.
    pub fn as_pooled(&self) -> Option<&Slice> {
        match &self.0 {
            Repr::Pooled(s) => Some(s),
            Repr::Bytes(_) => None,
        }
    }

    /// Records it as `field` on the chunk it pins, until it (and every
    /// clone and sub-slice) drops. Shared bytes pin no chunk: nothing to
    /// record.
    pub fn mark_field(&mut self, field: FieldId) {
        if let Repr::Pooled(s) = &mut self.0 {
            s.mark_field(field);
        }
    }

    /// A `Bytes` handle on the same bytes, for APIs that take `Bytes`. A
    /// pooled value allocates the owner box of `Bytes::from_owner` and
    /// keeps pinning its chunk, as the same field.
    pub fn to_bytes(&self) -> Bytes {
        self.clone().into_bytes()
    }

    /// As [`to_bytes`](Self::to_bytes), consuming the value.
    pub fn into_bytes(self) -> Bytes {
        match self.0 {
            Repr::Bytes(b) => b,
            Repr::Pooled(s) => s.into_bytes(),
        }
    }
}

impl Default for Binary {
    fn default() -> Binary {
        Binary::new()
    }
}

impl Deref for Binary {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        match &self.0 {
            Repr::Bytes(b) => b,
            Repr::Pooled(s) => s,
        }
    }
}

impl AsRef<[u8]> for Binary {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Borrow<[u8]> for Binary {
    fn borrow(&self) -> &[u8] {
        self
    }
}

impl From<Bytes> for Binary {
    fn from(b: Bytes) -> Binary {
        Binary(Repr::Bytes(b))
    }
}

impl From<Vec<u8>> for Binary {
    fn from(v: Vec<u8>) -> Binary {
        Binary(Repr::Bytes(Bytes::from(v)))
    }
}

impl From<String> for Binary {
    fn from(s: String) -> Binary {
        Binary(Repr::Bytes(Bytes::from(s)))
    }
}

impl From<&'static [u8]> for Binary {
    fn from(b: &'static [u8]) -> Binary {
        Binary::from_static(b)
    }
}

impl From<&'static str> for Binary {
    fn from(s: &'static str) -> Binary {
        Binary::from_static(s.as_bytes())
    }
}

impl From<Slice> for Binary {
    fn from(s: Slice) -> Binary {
        Binary(Repr::Pooled(s))
    }
}

impl PartialEq for Binary {
    fn eq(&self, other: &Binary) -> bool {
        self[..] == other[..]
    }
}

impl Eq for Binary {}

impl PartialEq<[u8]> for Binary {
    fn eq(&self, other: &[u8]) -> bool {
        &self[..] == other
    }
}

impl PartialEq<Bytes> for Binary {
    fn eq(&self, other: &Bytes) -> bool {
        self[..] == other[..]
    }
}

impl PartialEq<Binary> for Bytes {
    fn eq(&self, other: &Binary) -> bool {
        self[..] == other[..]
    }
}

impl Hash for Binary {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self[..].hash(state);
    }
}

impl PartialOrd for Binary {
    fn partial_cmp(&self, other: &Binary) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Binary {
    fn cmp(&self, other: &Binary) -> std::cmp::Ordering {
        self[..].cmp(&other[..])
    }
}

impl fmt::Debug for Binary {
    /// As `Bytes` prints: `b"..."` with escapes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b\"")?;
        for &b in self.iter() {
            match b {
                b'\0' => write!(f, "\\0")?,
                b'\n' => write!(f, "\\n")?,
                b'\r' => write!(f, "\\r")?,
                b'\t' => write!(f, "\\t")?,
                b'\\' | b'"' => write!(f, "\\{}", b as char)?,
                0x20..=0x7e => write!(f, "{}", b as char)?,
                _ => write!(f, "\\x{b:02x}")?,
            }
        }
        write!(f, "\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::{Pool, PoolConfig, Taker};

    #[test]
    fn a_pooled_value_slices_compares_and_converts_without_losing_its_field() {
        let pool = Pool::new(PoolConfig::default());
        let mut c = pool.lease(64, Taker::ConnRead);
        c.spare_mut()[..5].copy_from_slice(b"hello");
        c.freeze_to(5);
        let mut v = Binary::from(c.slice(0..5));
        drop(c);
        let f = FieldId::intern("Test.value (field 1)");
        v.mark_field(f);
        let one = v.slice(1..=1);
        assert_eq!((one.is_pooled(), &one[..]), (true, &b"e"[..]));
        assert_eq!(v, Binary::from_static(b"hello"));
        assert_eq!(v, Bytes::from_static(b"hello"));
        for text in [&b"a\"\x01\0\n\\\x7f"[..], b"", b"plain"] {
            assert_eq!(format!("{:?}", Binary::from_static(text)), format!("{:?}", Bytes::from_static(text)));
        }
        let empty = v.slice(2..2);
        assert!(empty.is_empty() && !empty.is_pooled(), "an empty slice pins nothing");
        let bytes = v.to_bytes();
        drop((v, one));
        assert_eq!(pool.leases()[0].fields, vec![f], "the Bytes handle still holds the field");
        drop(bytes);
        assert!(pool.leases().is_empty());
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn a_range_past_usize_max_panics_as_bytes_does() {
        let pool = Pool::new(PoolConfig::default());
        let mut c = pool.lease(64, Taker::ConnRead);
        c.freeze_to(4);
        let _ = Binary::from(c.slice(0..4)).slice(..=usize::MAX);
    }
}
