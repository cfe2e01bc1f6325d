//! [`HeapSnapshot`]: one heap profile (Go's profile.proto, gzip'd or not)
//! decoded into plain samples with resolved call stacks.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use pprof::protos::{self, Message};

use crate::error::DiagnosisError;

/// The largest profile read, compressed or decompressed: 1 GiB. A longer
/// file or gzip stream is refused before it is read further.
pub const MAX_PROFILE_BYTES: u64 = 1 << 30;

/// The most frames all samples of one profile may hold together, inlined
/// frames included (a real profile holds a few million at most): a small
/// profile whose samples all point at one deep location would otherwise
/// expand without bound.
pub const MAX_PROFILE_FRAMES: usize = 1 << 25;

/// One frame of a call stack.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frame {
    /// The function's name as the profile gives it (`main.leak`,
    /// `rpc::codec::Request::read_field_2`). For a location with no
    /// symbol information, its address (`0x4a2f10`).
    pub function: String,
    /// The source file, or empty if unknown.
    pub file: String,
    /// The source line, or 0 if unknown.
    pub line: i64,
}

/// One sample of a heap profile: a call stack, its four values, its block
/// size and its string labels.
#[derive(Debug, Clone, PartialEq)]
pub struct HeapSample {
    /// The call stack, leaf first. Inlined frames are expanded as pprof
    /// lists them: within one location the inlined callee comes first.
    pub frames: Vec<Frame>,
    /// Blocks allocated since the process started (`alloc_objects`).
    pub alloc_objects: f64,
    /// Bytes allocated since the process started (`alloc_space`).
    pub alloc_bytes: f64,
    /// Blocks allocated and not yet freed (`inuse_objects`).
    pub inuse_objects: f64,
    /// Bytes allocated and not yet freed (`inuse_space`).
    pub inuse_bytes: f64,
    /// The block size: the numeric label `bytes`, if present.
    pub block_size: Option<i64>,
    /// The string labels, as `(key, value)`.
    pub labels: Vec<(String, String)>,
}

/// A heap profile, decoded.
///
/// Value columns are found by sample type name (`alloc_objects`,
/// `alloc_space`, `inuse_objects`, `inuse_space`), so the order of the
/// columns does not matter; only `inuse_space` is required, a missing
/// `alloc_*` or `inuse_objects` column reads as 0.
///
/// ```
/// # fn main() -> Result<(), diagnosis::DiagnosisError> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("heap-000.pb.gz");
/// # std::fs::write(&path, b"").unwrap();
/// match diagnosis::HeapSnapshot::read(&path) {
///     Ok(heap) => println!("{} bytes in use", heap.total_inuse_bytes()),
///     Err(e) => println!("{e}"), // "…/heap-000.pb.gz: empty file"
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HeapSnapshot {
    /// When the profile was taken, in seconds since the Unix epoch
    /// (`time_nanos`), if the profile says.
    pub time_s: Option<f64>,
    /// The sampling period (for a heap profile, the mean bytes between
    /// samples).
    pub period: i64,
    /// The samples, in the profile's order.
    pub samples: Vec<HeapSample>,
}

impl HeapSnapshot {
    /// Reads and decodes the profile at `path`.
    pub fn read(path: impl AsRef<Path>) -> Result<HeapSnapshot, DiagnosisError> {
        let path = path.as_ref();
        let io = |source| DiagnosisError::Io { path: path.to_path_buf(), source };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len > MAX_PROFILE_BYTES {
            return Err(profile_error(path, format!("{len} bytes, more than the limit of {MAX_PROFILE_BYTES}")));
        }
        let mut bytes = Vec::with_capacity(len as usize);
        file.take(MAX_PROFILE_BYTES + 1).read_to_end(&mut bytes).map_err(io)?;
        HeapSnapshot::decode(&bytes, path)
    }

    /// Decodes a profile from its bytes (gzip'd or raw profile.proto).
    /// `path` names where the bytes came from, for errors: a file, or a URL
    /// for live input.
    pub fn decode(bytes: &[u8], path: impl AsRef<Path>) -> Result<HeapSnapshot, DiagnosisError> {
        decode_profile(bytes).map_err(|reason| profile_error(path.as_ref(), reason))
    }

    /// The sum of `inuse_bytes` over all samples.
    pub fn total_inuse_bytes(&self) -> f64 {
        self.samples.iter().map(|s| s.inuse_bytes).sum()
    }

    /// The sum of `inuse_objects` over all samples.
    pub fn total_inuse_objects(&self) -> f64 {
        self.samples.iter().map(|s| s.inuse_objects).sum()
    }

    /// The sum of `alloc_bytes` over all samples.
    pub fn total_alloc_bytes(&self) -> f64 {
        self.samples.iter().map(|s| s.alloc_bytes).sum()
    }
}

fn profile_error(path: &Path, reason: String) -> DiagnosisError {
    DiagnosisError::Profile { path: path.to_path_buf(), reason }
}

/// Gunzips if the bytes start with the gzip magic, refusing more than
/// [`MAX_PROFILE_BYTES`] of output.
fn inflate(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, String> {
    if bytes.len() as u64 > MAX_PROFILE_BYTES {
        return Err(format!("{} bytes, more than the limit of {MAX_PROFILE_BYTES}", bytes.len()));
    }
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(std::borrow::Cow::Borrowed(bytes));
    }
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(MAX_PROFILE_BYTES + 1)
        .read_to_end(&mut raw)
        .map_err(|e| format!("corrupt gzip stream: {e}"))?;
    if raw.len() as u64 > MAX_PROFILE_BYTES {
        return Err(format!("decompresses to more than the limit of {MAX_PROFILE_BYTES} bytes"));
    }
    Ok(std::borrow::Cow::Owned(raw))
}

/// The profile's string table, with every lookup checked.
struct Strings<'a>(&'a [String]);

impl<'a> Strings<'a> {
    fn get(&self, index: i64, what: impl FnOnce() -> String) -> Result<&'a str, String> {
        usize::try_from(index).ok().and_then(|i| self.0.get(i)).map(String::as_str).ok_or_else(|| {
            format!("{} refers to string {index}, but the string table has {} entries", what(), self.0.len())
        })
    }
}

fn decode_profile(bytes: &[u8]) -> Result<HeapSnapshot, String> {
    if bytes.is_empty() {
        return Err("empty file".into());
    }
    let raw = inflate(bytes)?;
    if raw.is_empty() {
        return Err("empty profile".into());
    }
    let p = protos::Profile::decode(raw.as_ref()).map_err(|e| format!("not a profile.proto message: {e}"))?;
    let strings = Strings(&p.string_table);

    // Value columns by sample type name.
    let mut types = Vec::with_capacity(p.sample_type.len());
    for (i, vt) in p.sample_type.iter().enumerate() {
        let ty = strings.get(vt.ty, || format!("sample type {i}"))?;
        let unit = strings.get(vt.unit, || format!("sample type {i}'s unit"))?;
        types.push((ty, unit));
    }
    let column = |name: &str| types.iter().position(|(ty, _)| *ty == name);
    let Some(inuse_space) = column("inuse_space") else {
        let listed: Vec<String> = types.iter().map(|(ty, unit)| format!("{ty}/{unit}")).collect();
        return Err(format!("not a heap profile: sample types are [{}]", listed.join(", ")));
    };
    let (alloc_objects, alloc_space, inuse_objects) =
        (column("alloc_objects"), column("alloc_space"), column("inuse_objects"));

    // Functions and locations by id: ids need not be dense nor ordered.
    let mut functions: HashMap<u64, (&str, &str)> = HashMap::with_capacity(p.function.len());
    for f in &p.function {
        let name = strings.get(f.name, || format!("function {}'s name", f.id))?;
        let file = strings.get(f.filename, || format!("function {}'s file name", f.id))?;
        if functions.insert(f.id, (name, file)).is_some() {
            return Err(format!("function id {} appears twice", f.id));
        }
    }
    let mut locations: HashMap<u64, Vec<Frame>> = HashMap::with_capacity(p.location.len());
    for loc in &p.location {
        let frames = if loc.line.is_empty() {
            vec![Frame { function: format!("{:#x}", loc.address), file: String::new(), line: 0 }]
        } else {
            let mut frames = Vec::with_capacity(loc.line.len());
            for line in &loc.line {
                let (name, file) = functions.get(&line.function_id).ok_or_else(|| {
                    format!("location {} refers to function {}, which is not in the profile", loc.id, line.function_id)
                })?;
                frames.push(Frame { function: (*name).to_owned(), file: (*file).to_owned(), line: line.line });
            }
            frames
        };
        if locations.insert(loc.id, frames).is_some() {
            return Err(format!("location id {} appears twice", loc.id));
        }
    }

    // Count the frames before making any.
    let mut total_frames = 0usize;
    for (i, s) in p.sample.iter().enumerate() {
        for id in &s.location_id {
            let location = locations
                .get(id)
                .ok_or_else(|| format!("sample {i} refers to location {id}, which is not in the profile"))?;
            total_frames = total_frames.saturating_add(location.len());
        }
    }
    if total_frames > MAX_PROFILE_FRAMES {
        return Err(format!("{total_frames} frames in all samples, more than the limit of {MAX_PROFILE_FRAMES}"));
    }

    let mut samples = Vec::with_capacity(p.sample.len());
    for (i, s) in p.sample.iter().enumerate() {
        if s.value.len() != types.len() {
            return Err(format!("sample {i} has {} values for {} sample types", s.value.len(), types.len()));
        }
        let value = |c: Option<usize>| c.map_or(0.0, |c| s.value[c] as f64);
        let mut frames = Vec::with_capacity(s.location_id.len());
        for id in &s.location_id {
            frames.extend(locations.get(id).into_iter().flatten().cloned());
        }
        let mut block_size = None;
        let mut labels = Vec::new();
        for label in &s.label {
            let key = strings.get(label.key, || format!("a label of sample {i}"))?;
            if label.str != 0 {
                let value = strings.get(label.str, || format!("label {key:?} of sample {i}"))?;
                labels.push((key.to_owned(), value.to_owned()));
            } else if key == "bytes" {
                block_size = Some(label.num);
            }
        }
        samples.push(HeapSample {
            frames,
            alloc_objects: value(alloc_objects),
            alloc_bytes: value(alloc_space),
            inuse_objects: value(inuse_objects),
            inuse_bytes: value(Some(inuse_space)),
            block_size,
            labels,
        });
    }

    let time_s = (p.time_nanos != 0).then(|| p.time_nanos as f64 / 1e9);
    Ok(HeapSnapshot { time_s, period: p.period, samples })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(table: &[&str]) -> Vec<String> {
        table.iter().map(|s| s.to_string()).collect()
    }

    fn heap(table: &[&str]) -> protos::Profile {
        protos::Profile {
            string_table: strings(table),
            sample_type: vec![
                protos::ValueType { ty: 1, unit: 2 },
                protos::ValueType { ty: 3, unit: 4 },
                protos::ValueType { ty: 5, unit: 2 },
                protos::ValueType { ty: 6, unit: 4 },
            ],
            ..Default::default()
        }
    }

    const TABLE: &[&str] = &["", "alloc_objects", "count", "alloc_space", "bytes", "inuse_objects", "inuse_space"];

    #[test]
    fn empty_heap_profile_has_no_samples() {
        let p = heap(TABLE);
        let snap = decode_profile(&p.encode_to_vec()).unwrap();
        assert!(snap.samples.is_empty());
        assert_eq!(snap.time_s, None);
    }

    #[test]
    fn columns_found_by_name_in_any_order() {
        let mut p = heap(TABLE);
        p.sample_type.reverse();
        p.sample.push(protos::Sample { location_id: vec![], value: vec![40, 4, 400, 10], label: vec![] });
        let snap = decode_profile(&p.encode_to_vec()).unwrap();
        let s = &snap.samples[0];
        assert_eq!((s.inuse_bytes, s.inuse_objects, s.alloc_bytes, s.alloc_objects), (40.0, 4.0, 400.0, 10.0));
    }

    #[test]
    fn only_inuse_space_is_required() {
        let p = protos::Profile {
            string_table: strings(&["", "inuse_space", "bytes"]),
            sample_type: vec![protos::ValueType { ty: 1, unit: 2 }],
            sample: vec![protos::Sample { location_id: vec![], value: vec![7], label: vec![] }],
            ..Default::default()
        };
        let snap = decode_profile(&p.encode_to_vec()).unwrap();
        assert_eq!(snap.samples[0].inuse_bytes, 7.0);
        assert_eq!(snap.samples[0].alloc_bytes, 0.0);
    }

    #[test]
    fn sample_with_too_few_values_is_refused() {
        let mut p = heap(TABLE);
        p.sample.push(protos::Sample { location_id: vec![], value: vec![1, 2], label: vec![] });
        let err = decode_profile(&p.encode_to_vec()).unwrap_err();
        assert!(err.contains("sample 0 has 2 values for 4 sample types"), "{err}");
    }

    #[test]
    fn string_index_out_of_range_is_refused() {
        let mut p = heap(TABLE);
        p.function.push(protos::Function { id: 1, name: 99, ..Default::default() });
        let err = decode_profile(&p.encode_to_vec()).unwrap_err();
        assert!(err.contains("function 1's name refers to string 99"), "{err}");
        let mut p = heap(TABLE);
        p.sample_type[0].ty = -1;
        assert!(decode_profile(&p.encode_to_vec()).unwrap_err().contains("refers to string -1"));
    }

    #[test]
    fn location_without_lines_reads_as_its_address() {
        let mut p = heap(TABLE);
        p.location.push(protos::Location { id: 9, address: 0x4a2f10, ..Default::default() });
        p.sample.push(protos::Sample { location_id: vec![9], value: vec![1, 2, 3, 4], label: vec![] });
        let snap = decode_profile(&p.encode_to_vec()).unwrap();
        assert_eq!(snap.samples[0].frames[0].function, "0x4a2f10");
    }

    #[test]
    fn frames_are_limited() {
        let mut p = heap(TABLE);
        p.string_table.push("f".into());
        p.function.push(protos::Function { id: 1, name: 7, ..Default::default() });
        let line = vec![protos::Line { function_id: 1, line: 0 }; 1 << 12];
        p.location.push(protos::Location { id: 1, line, ..Default::default() });
        let sample = protos::Sample { location_id: vec![1; 1 << 10], value: vec![1, 1, 1, 1], label: vec![] };
        p.sample = vec![sample; (1 << 3) + 1];
        let err = decode_profile(&p.encode_to_vec()).unwrap_err();
        assert_eq!(err, "37748736 frames in all samples, more than the limit of 33554432");
    }

    #[test]
    fn duplicate_location_ids_are_refused() {
        let mut p = heap(TABLE);
        p.location.push(protos::Location { id: 3, ..Default::default() });
        p.location.push(protos::Location { id: 3, ..Default::default() });
        assert!(decode_profile(&p.encode_to_vec()).unwrap_err().contains("location id 3 appears twice"));
    }

    #[test]
    fn gzip_header_alone_is_corrupt() {
        let err = inflate(&[0x1f, 0x8b, 0, 0]).unwrap_err();
        assert!(err.starts_with("corrupt gzip stream"), "{err}");
    }
}
