//! [`Profile`]: a snapshot in Go's heap profile format (profile.proto).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use pprof::protos::{self, Message};

use crate::sampler::scale;
use crate::snapshot::Snapshot;
use crate::symbolize::{self, SymFrame};

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
    /// Wraps a decoded profile.
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

    /// The sum of one value over all samples; 0 if the profile has no such
    /// sample type.
    pub fn total(&self, ty: SampleType) -> i64 {
        let p = &self.proto;
        let column = p
            .sample_type
            .iter()
            .position(|vt| p.string_table.get(vt.ty as usize).map(String::as_str) == Some(ty.name()));
        column.map_or(0, |c| p.sample.iter().filter_map(|s| s.value.get(c)).sum())
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
            (13, p) => {
                n += packed(p) - 1;
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

/// An executable mapping of the process, from `/proc/self/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Map {
    start: u64,
    end: u64,
    offset: u64,
    path: String,
}

fn parse_maps(text: &str) -> Vec<Map> {
    let mut maps = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(range), Some(perms), Some(offset)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        if !perms.contains('x') {
            continue;
        }
        let path = fields.nth(2).unwrap_or("").to_string();
        let Some((start, end)) = range.split_once('-') else { continue };
        let (Ok(start), Ok(end), Ok(offset)) =
            (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16), u64::from_str_radix(offset, 16))
        else {
            continue;
        };
        maps.push(Map { start, end, offset, path });
    }
    maps
}

/// The executable mappings, the main binary's first (tools take the first
/// mapping for the main binary).
fn process_maps() -> Vec<Map> {
    let mut maps = parse_maps(&std::fs::read_to_string("/proc/self/maps").unwrap_or_default());
    let here = build as *const () as usize as u64;
    if let Some(main) = maps.iter().position(|m| m.start <= here && here < m.end) {
        let m = maps.remove(main);
        maps.insert(0, m);
    }
    maps
}

/// Builds profile.proto tables with deduplicated strings, functions and
/// locations.
#[derive(Default)]
struct Builder {
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    functions: Vec<protos::Function>,
    function_ids: HashMap<(i64, i64, i64), u64>,
    locations: Vec<protos::Location>,
    location_ids: HashMap<(usize, usize), u64>,
    named_location_ids: HashMap<String, u64>,
    maps: Vec<Map>,
}

impl Builder {
    fn string(&mut self, s: &str) -> i64 {
        if let Some(&id) = self.string_ids.get(s) {
            return id;
        }
        let id = self.strings.len() as i64;
        self.strings.push(s.to_string());
        self.string_ids.insert(s.to_string(), id);
        id
    }

    fn value_type(&mut self, ty: &str, unit: &str) -> protos::ValueType {
        protos::ValueType { ty: self.string(ty), unit: self.string(unit) }
    }

    fn function(&mut self, f: &SymFrame) -> u64 {
        let key = (self.string(&f.name), self.string(&f.system_name), self.string(&f.file));
        if let Some(&id) = self.function_ids.get(&key) {
            return id;
        }
        let id = self.functions.len() as u64 + 1;
        self.functions.push(protos::Function { id, name: key.0, system_name: key.1, filename: key.2, start_line: 0 });
        self.function_ids.insert(key, id);
        id
    }

    /// The location of return address `ret`, without its first `skip`
    /// inlined frames.
    fn location(&mut self, ret: usize, skip: usize, frames: &[SymFrame]) -> u64 {
        if let Some(&id) = self.location_ids.get(&(ret, skip)) {
            return id;
        }
        let address = ret.saturating_sub(1) as u64;
        let mapping_id =
            self.maps.iter().position(|m| m.start <= address && address < m.end).map_or(0, |i| i as u64 + 1);
        let line = frames[skip.min(frames.len())..]
            .iter()
            .map(|f| protos::Line { function_id: self.function(f), line: i64::from(f.line) })
            .collect();
        let id = self.locations.len() as u64 + 1;
        self.locations.push(protos::Location { id, mapping_id, address, line, is_folded: false });
        self.location_ids.insert((ret, skip), id);
        id
    }
}

impl Builder {
    /// A location made of one function known only by its name (no address,
    /// no mapping): for stacks that are not call stacks.
    fn named_location(&mut self, name: &str) -> u64 {
        if let Some(&id) = self.named_location_ids.get(name) {
            return id;
        }
        let frame = SymFrame { name: name.to_string(), system_name: name.to_string(), file: String::new(), line: 0 };
        let line = vec![protos::Line { function_id: self.function(&frame), line: 0 }];
        let id = self.locations.len() as u64 + 1;
        self.locations.push(protos::Location { id, mapping_id: 0, address: 0, line, is_folded: false });
        self.named_location_ids.insert(name.to_string(), id);
        id
    }
}

/// One sample of a profile whose "stacks" are chains of names rather than
/// call stacks: for instance a buffer pool's view of who took a chunk and
/// who still holds it. See [`Profile::from_named`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedSample {
    /// The chain, leaf first (as pprof orders a stack).
    pub stack: Vec<String>,
    /// `alloc_objects`, `alloc_space`, `inuse_objects`, `inuse_space`.
    pub values: [i64; 4],
    /// Numeric labels (`bytes` = block size, as heap profiles have).
    pub num_labels: Vec<(String, i64)>,
    /// String labels.
    pub str_labels: Vec<(String, String)>,
}

impl Profile {
    /// A heap-format profile (the same four sample types, period type
    /// `space/bytes`) from named chains instead of call stacks, readable by
    /// `go tool pprof` and by anything that reads heap profiles.
    pub fn from_named(samples: &[NamedSample], period: i64, default: SampleType) -> Profile {
        let mut b = Builder::default();
        b.string("");
        let sample_type: Vec<protos::ValueType> =
            SampleType::ALL.iter().map(|t| b.value_type(t.name(), t.unit())).collect();
        let period_type = b.value_type("space", "bytes");
        let sample = samples
            .iter()
            .map(|s| {
                let location_id = s.stack.iter().map(|name| b.named_location(name)).collect();
                let mut label: Vec<protos::Label> = s
                    .num_labels
                    .iter()
                    .map(|(k, v)| protos::Label { key: b.string(k), str: 0, num: *v, num_unit: 0 })
                    .collect();
                for (k, v) in &s.str_labels {
                    label.push(protos::Label { key: b.string(k), str: b.string(v), num: 0, num_unit: 0 });
                }
                protos::Sample { location_id, value: s.values.to_vec(), label }
            })
            .collect();
        let parts =
            Parts { sample_type, sample, mapping: Vec::new(), period_type, period, default, comment: Vec::new() };
        b.finish(parts, std::time::SystemTime::now())
    }
}

/// Raw sampled counts of one trimmed stack and block size.
#[derive(Default, Clone, Copy)]
struct Counts {
    alloc_objects: u64,
    alloc_bytes: u64,
    free_objects: u64,
    free_bytes: u64,
}

/// Go's `scaleHeapSample`: the sampled (count, bytes) scaled to estimates of
/// the true ones.
fn scale_heap_sample(count: u64, bytes: u64, rate: u64) -> (i64, i64) {
    if count == 0 || bytes == 0 {
        return (0, 0);
    }
    let s = scale(bytes as f64 / count as f64, rate);
    ((count as f64 * s) as i64, (bytes as f64 * s) as i64)
}

pub(crate) fn build(snapshot: &Snapshot, default: SampleType) -> Profile {
    let rate = snapshot.rate() as u64;
    let mut b = Builder { maps: process_maps(), ..Builder::default() };
    b.string("");
    let sample_type: Vec<protos::ValueType> =
        SampleType::ALL.iter().map(|t| b.value_type(t.name(), t.unit())).collect();
    let period_type = b.value_type("space", "bytes");

    let symbols = symbolize::resolve_all(snapshot.records().iter().flat_map(|r| r.frames.iter().copied()));
    let empty: Arc<[SymFrame]> = Arc::from(Vec::new());
    let mut merged: BTreeMap<(Vec<u64>, usize), Counts> = BTreeMap::new();
    for r in snapshot.records() {
        let frames: Vec<&[SymFrame]> = r.frames.iter().map(|f| symbols.get(f).unwrap_or(&empty).as_ref()).collect();
        let (first, skip) = symbolize::trim_point(&frames);
        let locations: Vec<u64> = (first..r.frames.len())
            .map(|i| b.location(r.frames[i], if i == first { skip } else { 0 }, frames[i]))
            .collect();
        let c = merged.entry((locations, r.size)).or_default();
        c.alloc_objects += r.alloc_objects;
        c.alloc_bytes += r.alloc_bytes;
        c.free_objects += r.free_objects;
        c.free_bytes += r.free_bytes;
    }

    let bytes_key = b.string("bytes");
    let sample = merged
        .into_iter()
        .map(|((location_id, size), c)| {
            let (alloc_objects, alloc_space) = scale_heap_sample(c.alloc_objects, c.alloc_bytes, rate);
            let (inuse_objects, inuse_space) = scale_heap_sample(
                c.alloc_objects.saturating_sub(c.free_objects),
                c.alloc_bytes.saturating_sub(c.free_bytes),
                rate,
            );
            protos::Sample {
                location_id,
                value: vec![alloc_objects, alloc_space, inuse_objects, inuse_space],
                label: vec![protos::Label { key: bytes_key, str: 0, num: size as i64, num_unit: 0 }],
            }
        })
        .collect();

    let maps = std::mem::take(&mut b.maps);
    let mapping = maps
        .iter()
        .enumerate()
        .map(|(i, m)| protos::Mapping {
            id: i as u64 + 1,
            memory_start: m.start,
            memory_limit: m.end,
            file_offset: m.offset,
            filename: b.string(&m.path),
            build_id: 0,
            has_functions: true,
            has_filenames: true,
            has_line_numbers: true,
            has_inline_frames: true,
        })
        .collect();
    // A profile that lost samples says so, as `go tool pprof -comments`
    // shows.
    let comment =
        snapshot.dropped().iter().map(|(cause, n)| b.string(&format!("dropped {n} samples: {cause}"))).collect();
    let parts = Parts { sample_type, sample, mapping, period_type, period: rate as i64, default, comment };
    b.finish(parts, snapshot.time())
}

/// What differs between the profiles a [`Builder`] finishes.
struct Parts {
    sample_type: Vec<protos::ValueType>,
    sample: Vec<protos::Sample>,
    mapping: Vec<protos::Mapping>,
    period_type: protos::ValueType,
    period: i64,
    default: SampleType,
    comment: Vec<i64>,
}

impl Builder {
    /// The profile, with the builder's tables.
    fn finish(mut self, p: Parts, time: std::time::SystemTime) -> Profile {
        let default_sample_type = self.string(p.default.name());
        let time_nanos = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64);
        Profile {
            proto: protos::Profile {
                sample_type: p.sample_type,
                sample: p.sample,
                mapping: p.mapping,
                location: self.locations,
                function: self.functions,
                string_table: self.strings,
                drop_frames: 0,
                keep_frames: 0,
                time_nanos,
                duration_nanos: 0,
                period_type: Some(p.period_type),
                period: p.period,
                comment: p.comment,
                default_sample_type,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::HeapRecord;

    #[test]
    fn named_profiles_share_locations_and_keep_labels() {
        let sample = |stack: &[&str], bytes: i64| NamedSample {
            stack: stack.iter().map(|s| s.to_string()).collect(),
            values: [1, bytes, 1, bytes],
            num_labels: vec![("bytes".into(), bytes)],
            str_labels: vec![("holder".into(), "field".into())],
        };
        let p = Profile::from_named(
            &[
                sample(&["held by Request.msg", "take", "lease"], 8192),
                sample(&["held by slot", "take", "lease"], 4096),
            ],
            1,
            SampleType::InuseSpace,
        );
        let back = Profile::decode(&p.encode_gzip()).unwrap();
        assert_eq!(back.total(SampleType::InuseSpace), 8192 + 4096);
        let proto = back.proto();
        assert_eq!(proto.location.len(), 4, "shared frames are one location each");
        assert_eq!(proto.sample[0].label.len(), 2);
        let name = |id: u64| {
            let loc = &proto.location[id as usize - 1];
            let f = &proto.function[loc.line[0].function_id as usize - 1];
            proto.string_table[f.name as usize].clone()
        };
        assert_eq!(name(proto.sample[1].location_id[0]), "held by slot");
    }

    #[test]
    fn go_scaling() {
        // Values from Go's scaleHeapSample.
        assert_eq!(scale_heap_sample(1, 1024, 524_288), (512, 524_800));
        assert_eq!(scale_heap_sample(3, 3 << 20, 524_288), (3, 3_638_089));
        assert_eq!(scale_heap_sample(5, 500, 1), (5, 500));
        assert_eq!(scale_heap_sample(0, 0, 524_288), (0, 0));
    }

    #[test]
    fn parses_proc_maps() {
        let text = "\
55d0c0a00000-55d0c0a20000 r--p 00000000 08:01 1234 /usr/bin/app
55d0c0a20000-55d0c0b00000 r-xp 00020000 08:01 1234 /usr/bin/app
7f0000000000-7f0000001000 rw-p 00000000 00:00 0
7ffd1c1f0000-7ffd1c1f2000 r-xp 00000000 00:00 0                          [vdso]
garbage line
";
        assert_eq!(
            parse_maps(text),
            vec![
                Map { start: 0x55d0c0a20000, end: 0x55d0c0b00000, offset: 0x20000, path: "/usr/bin/app".into() },
                Map { start: 0x7ffd1c1f0000, end: 0x7ffd1c1f2000, offset: 0, path: "[vdso]".into() },
            ]
        );
    }

    #[test]
    fn encodes_go_heap_format() {
        let snap = Snapshot::new(
            524_288,
            vec![
                HeapRecord {
                    frames: vec![],
                    size: 1024,
                    alloc_objects: 2,
                    alloc_bytes: 2048,
                    free_objects: 1,
                    free_bytes: 1024,
                },
                HeapRecord {
                    frames: vec![],
                    size: 64,
                    alloc_objects: 0,
                    alloc_bytes: 0,
                    free_objects: 0,
                    free_bytes: 0,
                },
            ],
        );
        let p = snap.heap_profile();
        let bytes = p.encode_gzip();
        let back = Profile::decode(&bytes).unwrap();
        assert_eq!(back, p);
        let proto = back.proto();
        let s = |i: i64| proto.string_table[i as usize].as_str();
        let types: Vec<(&str, &str)> = proto.sample_type.iter().map(|t| (s(t.ty), s(t.unit))).collect();
        assert_eq!(
            types,
            [
                ("alloc_objects", "count"),
                ("alloc_space", "bytes"),
                ("inuse_objects", "count"),
                ("inuse_space", "bytes")
            ]
        );
        let pt = proto.period_type.as_ref().unwrap();
        assert_eq!((s(pt.ty), s(pt.unit), proto.period), ("space", "bytes", 524_288));
        assert_eq!(s(proto.default_sample_type), "inuse_space");
        assert_eq!(s(snap.allocs_profile().proto().default_sample_type), "alloc_space");
        assert_eq!(proto.string_table[0], "");
        assert_eq!(proto.sample.len(), 2);
        let sample = proto.sample.iter().find(|x| x.label[0].num == 1024).unwrap();
        assert_eq!(sample.value, [1025, 1_049_600, 512, 524_800]);
        assert_eq!(s(sample.label[0].key), "bytes");
        assert!(proto.mapping.iter().all(|m| m.has_functions && m.has_line_numbers));
        assert!(matches!(Profile::decode(b"\x1f\x8bnot gzip"), Err(DecodeError::Gzip(_))));
    }

    #[test]
    fn dropped_samples_are_said_in_comments() {
        let comments = |p: &Profile| -> Vec<String> {
            let p = p.proto();
            p.comment.iter().map(|&i| p.string_table[i as usize].clone()).collect()
        };
        let snapshot = Snapshot::new(1, Vec::new());
        assert!(comments(&snapshot.heap_profile()).is_empty());
        let snapshot = snapshot.with_dropped(vec![("stack table full", 12), ("bucket table full", 1)]);
        for p in [snapshot.heap_profile(), snapshot.allocs_profile()] {
            let back = Profile::decode(&p.encode_gzip()).unwrap();
            assert_eq!(
                comments(&back),
                ["dropped 12 samples: stack table full", "dropped 1 samples: bucket table full"]
            );
        }
    }

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
    }
}
