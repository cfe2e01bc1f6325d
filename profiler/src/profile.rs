//! [`Profile`]: a heap profile in Go's format (profile.proto), and the
//! [`SampleType`]s of its values.
//!
//! The type only: profiles are built from snapshots in `encode/`, and read
//! back from bytes in `decode.rs`.

use std::io::Write;

use pprof::protos::{self, Message};

/// The four values of each sample of a heap profile, in Go's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SampleType {
    /// `alloc_objects/count`: blocks allocated since the start.
    AllocObjects,
    /// `alloc_space/bytes`: bytes allocated since the start.
    AllocSpace,
    /// `inuse_objects/count`: blocks allocated and not freed.
    InuseObjects,
    /// `inuse_space/bytes`: bytes allocated and not freed.
    InuseSpace,
}

impl SampleType {
    /// All four, in the order of the values of a sample.
    pub const ALL: [SampleType; 4] =
        [SampleType::AllocObjects, SampleType::AllocSpace, SampleType::InuseObjects, SampleType::InuseSpace];

    /// The type's name in the profile (`inuse_space`).
    pub fn name(self) -> &'static str {
        match self {
            SampleType::AllocObjects => "alloc_objects",
            SampleType::AllocSpace => "alloc_space",
            SampleType::InuseObjects => "inuse_objects",
            SampleType::InuseSpace => "inuse_space",
        }
    }

    /// Its unit (`count` or `bytes`).
    pub fn unit(self) -> &'static str {
        match self {
            SampleType::AllocObjects | SampleType::InuseObjects => "count",
            SampleType::AllocSpace | SampleType::InuseSpace => "bytes",
        }
    }

    /// Its position in each sample's values.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A heap profile in Go's format, ready to be served or saved.
///
/// Sample types `alloc_objects/count`, `alloc_space/bytes`,
/// `inuse_objects/count`, `inuse_space/bytes`; period type `space/bytes`
/// with the sampling rate as period; values already scaled up from the
/// samples; a `bytes` label with the block size on each sample; functions,
/// files and lines filled in, so `go tool pprof` needs no binary.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    proto: protos::Profile,
}

impl Profile {
    /// Wraps a profile.proto message, decoded or built.
    pub fn from_proto(proto: protos::Profile) -> Self {
        Profile { proto }
    }

    /// The profile.proto message.
    pub fn proto(&self) -> &protos::Profile {
        &self.proto
    }

    /// The profile.proto message, by value.
    pub fn into_proto(self) -> protos::Profile {
        self.proto
    }

    /// The uncompressed profile.proto bytes.
    pub fn encode(&self) -> Vec<u8> {
        self.proto.encode_to_vec()
    }

    /// The gzip-compressed profile.proto bytes, as `/debug/pprof/heap`
    /// serves them and `go tool pprof` reads them.
    pub fn encode_gzip(&self) -> Vec<u8> {
        let raw = self.encode();
        let mut gz = flate2::write::GzEncoder::new(Vec::with_capacity(raw.len() / 4), flate2::Compression::default());
        gz.write_all(&raw).expect("writing to a Vec cannot fail");
        gz.finish().expect("writing to a Vec cannot fail")
    }

    /// The sum of one value over all samples (saturating: a profile read
    /// back from a file may hold any values); 0 if the profile has no such
    /// sample type.
    pub fn total(&self, ty: SampleType) -> i64 {
        let p = &self.proto;
        let column = p
            .sample_type
            .iter()
            .position(|vt| p.string_table.get(vt.ty as usize).map(String::as_str) == Some(ty.name()));
        column.map_or(0, |c| p.sample.iter().filter_map(|s| s.value.get(c)).fold(0i64, |a, v| a.saturating_add(*v)))
    }
}
