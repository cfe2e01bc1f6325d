//! [`HeapSnapshot`]: one heap profile (Go's profile.proto, gzip'd or not)
//! decoded into plain samples with resolved call stacks, within a budget.
//!
//! # The budget
//! A profile is untrusted input: 16 KB of gzip can inflate to a 16 MiB
//! function name, and a small message can make a sample repeat one deep
//! location thousands of times. [`DecodeLimits`] bounds every step, each
//! checked *before* the step allocates:
//!
//! ```text
//! file ── ≤ profile_bytes ──► gunzip ── ≤ profile_bytes ──► wire scan
//!   (counts of samples, ids, labels, lines, strings: no allocation)
//!   ── message estimate ≤ profile_memory ──► prost decode
//!   ── names ≤ name_bytes, frames per sample ≤ sample_frames,
//!      names over all frames ≤ stack_text_bytes,
//!      snapshot estimate ≤ profile_memory, run total ≤ run_memory ──► HeapSnapshot
//! ```
//!
//! Function and file names are kept once ([`Name`], shared by every frame
//! that refers to them, and by every profile a [`ProfileDecoder`] reads), so
//! a frame costs `size_of::<Frame>()` however long its names are.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::Read;
use std::mem::size_of;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

use pprof::protos::{self, Message};

use crate::error::DiagnosisError;

/// The largest profile read, compressed (the file) or decompressed (the
/// profile.proto message): 64 MiB. Go's heap profiles of large programs
/// are a few MiB.
pub const MAX_PROFILE_BYTES: u64 = 64 << 20;

/// The most memory one profile may take decoded: 64 MiB, for the
/// profile.proto message and again for the [`HeapSnapshot`] made from it,
/// each estimated from counts before it is allocated.
pub const MAX_PROFILE_MEMORY: u64 = 64 << 20;

/// The most memory the decoded profiles of one run may take together
/// (heap and pool profiles, names counted once): 256 MiB.
pub const MAX_RUN_MEMORY: u64 = 256 << 20;

/// The longest function name, file name, label key or label value: 64 KiB
/// (the longest demangled Rust names are a few KiB).
pub const MAX_NAME_BYTES: usize = 64 << 10;

/// The most frames one sample may have, inlined frames included: 2048,
/// twice the deepest stack Go records (`GODEBUG=profstackdepth`, at most
/// 1024).
pub const MAX_SAMPLE_FRAMES: usize = 2048;

/// The most bytes of function names all frames of a profile may refer to,
/// counted once per frame: 256 MiB. This is what a reader that hashes or
/// prints every stack goes through, so it bounds the work a profile asks
/// for, as the memory budget bounds what it keeps.
pub const MAX_STACK_TEXT_BYTES: u64 = 256 << 20;

/// The most profiles (heap, pool and holder) a run's directory may hold: 65536.
pub const MAX_RUN_PROFILES: usize = 1 << 16;

/// What decoding may take: the `MAX_*` constants by default.
///
/// ```
/// let limits = diagnosis::DecodeLimits { run_memory: 1 << 30, ..Default::default() };
/// assert_eq!(limits.profile_bytes, diagnosis::MAX_PROFILE_BYTES);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// [`MAX_PROFILE_BYTES`]: a file, and the message it decompresses to.
    pub profile_bytes: u64,
    /// [`MAX_PROFILE_MEMORY`]: the decoded message, and the snapshot.
    pub profile_memory: u64,
    /// [`MAX_RUN_MEMORY`]: all snapshots one [`ProfileDecoder`] makes.
    pub run_memory: u64,
    /// [`MAX_NAME_BYTES`]: one name or label string.
    pub name_bytes: usize,
    /// [`MAX_SAMPLE_FRAMES`]: the frames of one sample.
    pub sample_frames: usize,
    /// [`MAX_STACK_TEXT_BYTES`]: function names over all frames.
    pub stack_text_bytes: u64,
    /// [`MAX_RUN_PROFILES`]: profiles in a run's directory.
    pub run_profiles: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            profile_bytes: MAX_PROFILE_BYTES,
            profile_memory: MAX_PROFILE_MEMORY,
            run_memory: MAX_RUN_MEMORY,
            name_bytes: MAX_NAME_BYTES,
            sample_frames: MAX_SAMPLE_FRAMES,
            stack_text_bytes: MAX_STACK_TEXT_BYTES,
            run_profiles: MAX_RUN_PROFILES,
        }
    }
}

/// A function or file name, kept once and shared by every frame that
/// refers to it: cloning costs a reference count. Reads as a `&str`
/// (`Deref<Target = str>`); compares, orders and hashes as its text.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Name(Arc<str>);

impl Name {
    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::hash::Hash for Name {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As `str` hashes, so that `Borrow<str>` lookups find it.
        self.as_str().hash(state)
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Self {
        Name(Arc::from(s))
    }
}

impl From<String> for Name {
    fn from(s: String) -> Self {
        Name(Arc::from(s))
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

/// One frame of a call stack.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frame {
    /// The function's name as the profile gives it (`main.leak`,
    /// `rpc::codec::Request::read_field_2`). For a location with no
    /// symbol information, its address (`0x4a2f10`).
    pub function: Name,
    /// The source file, or empty if unknown.
    pub file: Name,
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
/// `alloc_*` or `inuse_objects` column reads as 0. Decoding keeps within
/// the default [`DecodeLimits`]; [`ProfileDecoder`] takes others, and
/// shares names and one budget across the profiles of a run.
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

#[cfg(test)]
impl HeapSample {
    /// One live block of `bytes` allocated at `frames` (leaf first), for
    /// tests.
    pub(crate) fn of(frames: &[&str], bytes: f64) -> HeapSample {
        HeapSample {
            frames: frames.iter().map(|f| Frame { function: (*f).into(), file: "".into(), line: 0 }).collect(),
            alloc_objects: 1.0,
            alloc_bytes: bytes,
            inuse_objects: 1.0,
            inuse_bytes: bytes,
            block_size: None,
            labels: Vec::new(),
        }
    }
}

impl HeapSnapshot {
    /// Reads and decodes the profile at `path`, within the default
    /// [`DecodeLimits`].
    pub fn read(path: impl AsRef<Path>) -> Result<HeapSnapshot, DiagnosisError> {
        ProfileDecoder::default().read(path)
    }

    /// Decodes a profile from its bytes (gzip'd or raw profile.proto),
    /// within the default [`DecodeLimits`]. `path` names where the bytes
    /// came from, for errors: a file, or a URL for live input.
    pub fn decode(bytes: &[u8], path: impl AsRef<Path>) -> Result<HeapSnapshot, DiagnosisError> {
        ProfileDecoder::default().decode(bytes, path)
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

/// Decodes the profiles of one run: one budget ([`DecodeLimits::run_memory`])
/// for all of them, and one table of names, so a name that every profile
/// repeats is kept once.
///
/// ```
/// let mut decoder = diagnosis::ProfileDecoder::new(diagnosis::DecodeLimits::default());
/// let err = decoder.decode(b"not a profile", "runs/x/heap-000.pb.gz").unwrap_err();
/// assert!(err.to_string().starts_with("runs/x/heap-000.pb.gz: not a profile.proto message"));
/// assert_eq!(decoder.used_bytes(), 0);
/// ```
#[derive(Debug, Default)]
pub struct ProfileDecoder {
    limits: DecodeLimits,
    names: HashSet<Name>,
    used: u64,
}

/// What one entry of the name table costs besides its text: the `Arc`'s
/// counts and the set's slot, rounded up.
const NAME_OVERHEAD: u64 = 64;

impl ProfileDecoder {
    /// A decoder within `limits`.
    pub fn new(limits: DecodeLimits) -> Self {
        ProfileDecoder { limits, names: HashSet::new(), used: 0 }
    }

    /// Its limits.
    pub fn limits(&self) -> &DecodeLimits {
        &self.limits
    }

    /// The estimated memory of everything decoded so far (snapshots and
    /// the names they share), counted against [`DecodeLimits::run_memory`].
    pub fn used_bytes(&self) -> u64 {
        self.used
    }

    /// Reads and decodes the profile at `path`.
    pub fn read(&mut self, path: impl AsRef<Path>) -> Result<HeapSnapshot, DiagnosisError> {
        let path = path.as_ref();
        let io = |source| DiagnosisError::Io { path: path.to_path_buf(), source };
        let file = crate::files::open_regular(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let limit = self.limits.profile_bytes;
        if len > limit {
            return Err(profile_error(path, format!("{len} bytes, more than the limit of {limit}")));
        }
        let mut bytes = Vec::with_capacity(len as usize);
        file.take(limit.saturating_add(1)).read_to_end(&mut bytes).map_err(io)?;
        self.decode(&bytes, path)
    }

    /// Decodes a profile from its bytes (gzip'd or raw profile.proto).
    /// `path` names where the bytes came from, for errors.
    pub fn decode(&mut self, bytes: &[u8], path: impl AsRef<Path>) -> Result<HeapSnapshot, DiagnosisError> {
        self.decode_profile(bytes).map_err(|reason| profile_error(path.as_ref(), reason))
    }

    /// The shared copy of `s`, made (and listed in `fresh`) if new; `Err`
    /// past the name limit.
    fn intern(&mut self, s: &str, fresh: &mut Vec<Name>, what: impl FnOnce() -> String) -> Result<Name, String> {
        if s.len() > self.limits.name_bytes {
            return Err(format!(
                "{} is {} bytes long, more than the limit of {}",
                what(),
                s.len(),
                self.limits.name_bytes
            ));
        }
        if let Some(name) = self.names.get(s) {
            return Ok(name.clone());
        }
        let name = Name::from(s);
        self.names.insert(name.clone());
        fresh.push(name.clone());
        Ok(name)
    }

    fn decode_profile(&mut self, bytes: &[u8]) -> Result<HeapSnapshot, String> {
        let limits = self.limits;
        if bytes.is_empty() {
            return Err("empty file".into());
        }
        let raw = inflate(bytes, limits.profile_bytes)?;
        if raw.is_empty() {
            return Err("empty profile".into());
        }
        let counts = WireCounts::scan(&raw).map_err(|e| format!("not a profile.proto message: {e}"))?;
        let message = counts.message_bytes();
        if message > limits.profile_memory {
            return Err(format!(
                "the profile would take about {message} bytes decoded ({counts}), more than the limit of {}",
                limits.profile_memory
            ));
        }
        let p = protos::Profile::decode(raw.as_ref()).map_err(|e| format!("not a profile.proto message: {e}"))?;
        drop(raw);
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
            let listed: Vec<String> = types.iter().map(|(ty, unit)| format!("{}/{}", clip(ty), clip(unit))).collect();
            return Err(format!("not a heap profile: sample types are [{}]", listed.join(", ")));
        };
        let (alloc_objects, alloc_space, inuse_objects) =
            (column("alloc_objects"), column("alloc_space"), column("inuse_objects"));

        // Names are charged as they are first seen, and forgotten again if
        // this profile is refused.
        let mut fresh = Vec::new();
        let columns = [alloc_objects, alloc_space, inuse_objects, Some(inuse_space)];
        let result = self.build(&p, &strings, &mut fresh, columns, types.len()).and_then(|(samples, bytes)| {
            let names: u64 = fresh.iter().map(|n| n.len() as u64 + NAME_OVERHEAD).sum();
            let total = self.used.saturating_add(names).saturating_add(bytes);
            if total > limits.run_memory {
                return Err(format!(
                    "{} about {total} bytes decoded, more than the limit of {}",
                    crate::error::PAST_RUN_BUDGET,
                    limits.run_memory
                ));
            }
            Ok((samples, total))
        });
        match result {
            Ok((samples, total)) => {
                self.used = total;
                let time_s = (p.time_nanos != 0).then(|| p.time_nanos as f64 / 1e9);
                Ok(HeapSnapshot { time_s, period: p.period, samples })
            }
            Err(e) => {
                for name in &fresh {
                    self.names.remove(name.as_str());
                }
                Err(e)
            }
        }
    }

    /// The samples and the estimated bytes they take (names aside, which
    /// are listed in `fresh` when new).
    fn build(
        &mut self,
        p: &protos::Profile,
        strings: &Strings<'_>,
        fresh: &mut Vec<Name>,
        columns: [Option<usize>; 4],
        n_types: usize,
    ) -> Result<(Vec<HeapSample>, u64), String> {
        let limits = self.limits;
        // Functions and locations by id: ids need not be dense nor ordered.
        let mut functions: HashMap<u64, (Name, Name)> = HashMap::with_capacity(p.function.len());
        for f in &p.function {
            let name = strings.get(f.name, || format!("function {}'s name", f.id))?;
            let file = strings.get(f.filename, || format!("function {}'s file name", f.id))?;
            let name = self.intern(name, fresh, || format!("function {}'s name", f.id))?;
            let file = self.intern(file, fresh, || format!("function {}'s file name", f.id))?;
            if functions.insert(f.id, (name, file)).is_some() {
                return Err(format!("function id {} appears twice", f.id));
            }
        }
        let empty = self.intern("", fresh, String::new)?;
        // Each location's frames, and the bytes of function names they hold.
        let mut locations: HashMap<u64, (Vec<Frame>, u64)> = HashMap::with_capacity(p.location.len());
        for loc in &p.location {
            let frames = if loc.line.is_empty() {
                let address = self.intern(&format!("{:#x}", loc.address), fresh, String::new)?;
                vec![Frame { function: address, file: empty.clone(), line: 0 }]
            } else {
                let mut frames = Vec::with_capacity(loc.line.len());
                for line in &loc.line {
                    let (name, file) = functions.get(&line.function_id).ok_or_else(|| {
                        format!(
                            "location {} refers to function {}, which is not in the profile",
                            loc.id, line.function_id
                        )
                    })?;
                    frames.push(Frame { function: name.clone(), file: file.clone(), line: line.line });
                }
                frames
            };
            let text = frames.iter().map(|f| f.function.len() as u64).sum();
            if locations.insert(loc.id, (frames, text)).is_some() {
                return Err(format!("location id {} appears twice", loc.id));
            }
        }

        // Count frames, stack text and labels before making any sample.
        let mut total_frames = 0u64;
        let mut text = 0u64;
        let mut label_bytes = 0u64;
        for (i, s) in p.sample.iter().enumerate() {
            let mut frames = 0usize;
            for id in &s.location_id {
                let (location, location_text) = locations
                    .get(id)
                    .ok_or_else(|| format!("sample {i} refers to location {id}, which is not in the profile"))?;
                frames = frames.saturating_add(location.len());
                text = text.saturating_add(*location_text);
                if frames > limits.sample_frames {
                    return Err(format!(
                        "sample {i} has more than {} frames, the limit (location {id} is one of {} in it)",
                        limits.sample_frames,
                        s.location_id.len()
                    ));
                }
            }
            total_frames += frames as u64;
            for label in &s.label {
                let key = strings.get(label.key, || format!("a label of sample {i}"))?;
                if label.str != 0 {
                    let value = strings.get(label.str, || format!("label {:?} of sample {i}", clip(key)))?;
                    for s in [key, value] {
                        if s.len() > limits.name_bytes {
                            return Err(format!(
                                "a label of sample {i} is {} bytes long, more than the limit of {}",
                                s.len(),
                                limits.name_bytes
                            ));
                        }
                    }
                    label_bytes += (size_of::<(String, String)>() + key.len() + value.len()) as u64;
                }
            }
        }
        if text > limits.stack_text_bytes {
            return Err(format!(
                "the stacks name {text} bytes of functions in all, more than the limit of {}",
                limits.stack_text_bytes
            ));
        }
        let tables = (p.location.len() + p.function.len()) as u64 * 64
            + p.location.iter().map(|l| l.line.len().max(1) as u64).sum::<u64>() * size_of::<Frame>() as u64;
        let snapshot =
            (p.sample.len() * size_of::<HeapSample>()) as u64 + total_frames * size_of::<Frame>() as u64 + label_bytes;
        let names: u64 = fresh.iter().map(|n| n.len() as u64 + NAME_OVERHEAD).sum();
        let needed = snapshot.saturating_add(tables).saturating_add(names);
        if needed > limits.profile_memory {
            return Err(format!(
                "the snapshot would take about {needed} bytes ({} samples, {total_frames} frames), more than the limit of {}",
                p.sample.len(),
                limits.profile_memory
            ));
        }

        let mut samples = Vec::with_capacity(p.sample.len());
        for (i, s) in p.sample.iter().enumerate() {
            if s.value.len() != n_types {
                return Err(format!("sample {i} has {} values for {n_types} sample types", s.value.len()));
            }
            let value = |c: Option<usize>| c.map_or(0.0, |c| s.value[c] as f64);
            let n: usize = s.location_id.iter().map(|id| locations.get(id).map_or(0, |l| l.0.len())).sum();
            let mut frames = Vec::with_capacity(n);
            for id in &s.location_id {
                frames.extend(locations.get(id).into_iter().flat_map(|l| l.0.iter()).cloned());
            }
            let mut block_size = None;
            let mut labels = Vec::new();
            for label in &s.label {
                let key = strings.get(label.key, || format!("a label of sample {i}"))?;
                if label.str != 0 {
                    let value = strings.get(label.str, || format!("label {:?} of sample {i}", clip(key)))?;
                    labels.push((key.to_owned(), value.to_owned()));
                } else if key == "bytes" {
                    block_size = Some(label.num);
                }
            }
            let [alloc_objects, alloc_space, inuse_objects, inuse_space] = columns;
            samples.push(HeapSample {
                frames,
                alloc_objects: value(alloc_objects),
                alloc_bytes: value(alloc_space),
                inuse_objects: value(inuse_objects),
                inuse_bytes: value(inuse_space),
                block_size,
                labels,
            });
        }
        Ok((samples, snapshot))
    }
}

fn profile_error(path: &Path, reason: String) -> DiagnosisError {
    DiagnosisError::Profile { path: path.to_path_buf(), reason }
}

/// At most 64 characters of `s`, for error messages about strings that may
/// be megabytes long.
fn clip(s: &str) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(64) {
        Some((end, _)) => format!("{}…", &s[..end]).into(),
        None => s.into(),
    }
}

/// Gunzips if the bytes start with the gzip magic, refusing more than
/// `limit` bytes in or out. The output grows by halves, never past
/// `limit + 1` bytes, so a bomb costs at most the limit.
fn inflate(bytes: &[u8], limit: u64) -> Result<std::borrow::Cow<'_, [u8]>, String> {
    if bytes.len() as u64 > limit {
        return Err(format!("{} bytes, more than the limit of {limit}", bytes.len()));
    }
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(std::borrow::Cow::Borrowed(bytes));
    }
    let cap = usize::try_from(limit.saturating_add(1)).unwrap_or(usize::MAX);
    let mut gz = flate2::read::GzDecoder::new(bytes);
    let mut raw: Vec<u8> = Vec::new();
    loop {
        if raw.len() == raw.capacity() {
            if raw.len() >= cap {
                return Err(format!("decompresses to more than the limit of {limit} bytes"));
            }
            let grow = (raw.len() / 2).max(64 << 10).min(cap - raw.len());
            raw.reserve_exact(grow);
        }
        let len = raw.len();
        raw.resize(raw.capacity(), 0);
        match gz.read(&mut raw[len..]) {
            Ok(0) => {
                raw.truncate(len);
                break;
            }
            Ok(n) => raw.truncate(len + n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => raw.truncate(len),
            Err(e) => return Err(format!("corrupt gzip stream: {e}")),
        }
    }
    if raw.len() as u64 > limit {
        return Err(format!("decompresses to more than the limit of {limit} bytes"));
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

/// What decoding a profile.proto message would allocate, counted from its
/// wire form without allocating: repeated fields of the message and of its
/// samples and locations.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct WireCounts {
    sample_types: u64,
    samples: u64,
    location_ids: u64,
    values: u64,
    labels: u64,
    mappings: u64,
    locations: u64,
    lines: u64,
    functions: u64,
    strings: u64,
    string_bytes: u64,
    comments: u64,
}

impl fmt::Display for WireCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} samples, {} location ids, {} values, {} labels, {} locations, {} lines, {} functions, {} strings",
            self.samples,
            self.location_ids,
            self.values,
            self.labels,
            self.locations,
            self.lines,
            self.functions,
            self.strings
        )
    }
}

/// One field of a protobuf message: its number and its payload.
enum Field<'a> {
    Varint,
    Bytes(&'a [u8]),
    Fixed,
}

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

/// Calls `f` with each field of the message in `buf`.
fn fields<'a>(buf: &'a [u8], mut f: impl FnMut(u64, Field<'a>)) -> Result<(), String> {
    let mut pos = 0;
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let (number, wire) = (key >> 3, key & 7);
        if number == 0 {
            return Err(format!("field number 0 at byte {pos}"));
        }
        let field = match wire {
            0 => {
                varint(buf, &mut pos)?;
                Field::Varint
            }
            1 | 5 => {
                let width = if wire == 1 { 8 } else { 4 };
                if buf.len() - pos < width {
                    return Err(format!("truncated fixed-width field at byte {pos}"));
                }
                pos += width;
                Field::Fixed
            }
            2 => {
                let len = varint(buf, &mut pos)?;
                let end = usize::try_from(len).ok().and_then(|l| pos.checked_add(l)).filter(|&e| e <= buf.len());
                let Some(end) = end else { return Err(format!("length {len} past the end at byte {pos}")) };
                let bytes = &buf[pos..end];
                pos = end;
                Field::Bytes(bytes)
            }
            other => return Err(format!("wire type {other} at byte {pos}")),
        };
        f(number, field);
    }
    Ok(())
}

/// Elements of a repeated scalar field: one if unpacked, as many as the
/// varints of its payload if packed.
fn scalars(field: &Field<'_>) -> u64 {
    match field {
        Field::Bytes(b) => b.iter().filter(|&&x| x < 0x80).count() as u64,
        _ => 1,
    }
}

impl WireCounts {
    fn scan(raw: &[u8]) -> Result<WireCounts, String> {
        let mut c = WireCounts::default();
        let mut inner = Ok(());
        fields(raw, |number, field| match (number, &field) {
            (1, _) => c.sample_types += 1,
            (2, Field::Bytes(sample)) => {
                c.samples += 1;
                let r = fields(sample, |n, f| match n {
                    1 => c.location_ids += scalars(&f),
                    2 => c.values += scalars(&f),
                    3 => c.labels += 1,
                    _ => {}
                });
                inner = inner.clone().and(r);
            }
            (3, _) => c.mappings += 1,
            (4, Field::Bytes(location)) => {
                c.locations += 1;
                let r = fields(location, |n, _| c.lines += u64::from(n == 4));
                inner = inner.clone().and(r);
            }
            (5, _) => c.functions += 1,
            (6, f) => {
                c.strings += 1;
                if let Field::Bytes(b) = f {
                    c.string_bytes += b.len() as u64;
                }
            }
            (13, f) => c.comments += scalars(f),
            _ => {}
        })?;
        inner?;
        Ok(c)
    }

    /// An upper estimate of what the decoded message takes: every element,
    /// twice over for the spare capacity of growing vectors, plus the
    /// smallest capacity of each sample's and location's own vectors, plus
    /// the strings' text.
    fn message_bytes(&self) -> u64 {
        let sized = |n: u64, size: usize| n.saturating_mul(size as u64);
        let elements = [
            sized(self.sample_types, size_of::<protos::ValueType>()),
            sized(self.samples, size_of::<protos::Sample>() + 4 * (8 + 8 + size_of::<protos::Label>())),
            sized(self.location_ids + self.values + self.comments, 8),
            sized(self.labels, size_of::<protos::Label>()),
            sized(self.mappings, size_of::<protos::Mapping>()),
            sized(self.locations, size_of::<protos::Location>() + 4 * size_of::<protos::Line>()),
            sized(self.lines, size_of::<protos::Line>()),
            sized(self.functions, size_of::<protos::Function>()),
            sized(self.strings, size_of::<String>()),
        ];
        elements.iter().fold(0u64, |a, &b| a.saturating_add(b)).saturating_mul(2).saturating_add(self.string_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_profile(bytes: &[u8]) -> Result<HeapSnapshot, String> {
        ProfileDecoder::default().decode_profile(bytes)
    }

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
    fn frames_per_sample_are_limited() {
        let mut p = heap(TABLE);
        p.string_table.push("f".into());
        p.function.push(protos::Function { id: 1, name: 7, ..Default::default() });
        let line = vec![protos::Line { function_id: 1, line: 0 }; 1 << 12];
        p.location.push(protos::Location { id: 1, line, ..Default::default() });
        let sample = protos::Sample { location_id: vec![1; 1 << 10], value: vec![1, 1, 1, 1], label: vec![] };
        p.sample = vec![sample; (1 << 3) + 1];
        let err = decode_profile(&p.encode_to_vec()).unwrap_err();
        assert_eq!(err, "sample 0 has more than 2048 frames, the limit (location 1 is one of 1024 in it)");
    }

    #[test]
    fn names_are_shared_by_frames_and_profiles() {
        let mut p = heap(TABLE);
        p.string_table.push("f".into());
        p.function.push(protos::Function { id: 1, name: 7, ..Default::default() });
        p.location.push(protos::Location {
            id: 1,
            line: vec![protos::Line { function_id: 1, line: 3 }],
            ..Default::default()
        });
        p.sample.push(protos::Sample { location_id: vec![1, 1], value: vec![1, 1, 1, 1], label: vec![] });
        let bytes = p.encode_to_vec();
        let mut decoder = ProfileDecoder::default();
        let a = decoder.decode_profile(&bytes).unwrap();
        let used = decoder.used_bytes();
        let b = decoder.decode_profile(&bytes).unwrap();
        let [x, y] = &a.samples[0].frames[..] else { panic!("{a:?}") };
        assert!(Arc::ptr_eq(&x.function.0, &y.function.0));
        assert!(Arc::ptr_eq(&x.function.0, &b.samples[0].frames[0].function.0));
        // The second profile's names cost nothing more: only its samples.
        assert!(decoder.used_bytes() - used < used, "{used} then {}", decoder.used_bytes());
    }

    #[test]
    fn wire_counts_match_the_message() {
        let mut p = heap(TABLE);
        p.function.push(protos::Function { id: 1, name: 1, ..Default::default() });
        p.location.push(protos::Location {
            id: 1,
            line: vec![protos::Line { function_id: 1, line: 3 }; 3],
            ..Default::default()
        });
        let label = protos::Label { key: 1, str: 2, num: 0, num_unit: 0 };
        p.sample.push(protos::Sample {
            location_id: vec![1, 1, 1, 1, 1],
            value: vec![1, 2, 3, 4],
            label: vec![label; 2],
        });
        p.comment = vec![1, 2];
        let c = WireCounts::scan(&p.encode_to_vec()).unwrap();
        let want = WireCounts {
            sample_types: 4,
            samples: 1,
            location_ids: 5,
            values: 4,
            labels: 2,
            mappings: 0,
            locations: 1,
            lines: 3,
            functions: 1,
            strings: 7,
            string_bytes: TABLE.iter().map(|s| s.len() as u64).sum(),
            comments: 2,
        };
        assert_eq!(c, want);
        assert!(WireCounts::scan(&[0x0a, 0x05, 0x01]).is_err());
        assert!(WireCounts::scan(&[0x0b]).is_err());
    }

    #[test]
    fn refused_profile_gives_its_names_back() {
        let mut p = heap(TABLE);
        p.string_table.push("g".into());
        p.function.push(protos::Function { id: 1, name: 7, ..Default::default() });
        p.sample.push(protos::Sample { location_id: vec![5], value: vec![1, 1, 1, 1], label: vec![] });
        let mut decoder = ProfileDecoder::default();
        assert!(decoder.decode_profile(&p.encode_to_vec()).is_err());
        assert!(decoder.names.is_empty() && decoder.used_bytes() == 0);
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
        let err = inflate(&[0x1f, 0x8b, 0, 0], MAX_PROFILE_BYTES).unwrap_err();
        assert!(err.starts_with("corrupt gzip stream"), "{err}");
    }
}
