//! Builders for test input: heap profiles in Go's format, other profiles,
//! run directories.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use pprof::protos::{self, Message};

/// The period of the profiles built here (Go's default sampling rate).
pub const PERIOD: i64 = 512 * 1024;

/// A gzip'd heap profile with Go's four sample types. Each sample is
/// `(stack, inuse_bytes, block_size)`: the stack leaf first, one location
/// and one function per distinct name (file `src/<name>.rs`, line 1);
/// `inuse_objects = inuse_bytes / block_size`, the alloc columns equal to
/// the inuse ones, and a numeric label `bytes` with the block size.
pub fn heap_profile(samples: &[(&[&str], i64, i64)]) -> Vec<u8> {
    gzip(&heap_profile_proto(samples, 0).encode_to_vec())
}

/// As [`heap_profile`], taken at `time_nanos` since the Unix epoch.
pub fn heap_profile_at(samples: &[(&[&str], i64, i64)], time_nanos: i64) -> Vec<u8> {
    gzip(&heap_profile_proto(samples, time_nanos).encode_to_vec())
}

/// The message behind [`heap_profile`], to alter before encoding.
pub fn heap_profile_proto(samples: &[(&[&str], i64, i64)], time_nanos: i64) -> protos::Profile {
    let mut b = Builder::default();
    let sample_type =
        [("alloc_objects", "count"), ("alloc_space", "bytes"), ("inuse_objects", "count"), ("inuse_space", "bytes")]
            .iter()
            .map(|(ty, unit)| protos::ValueType { ty: b.string(ty), unit: b.string(unit) })
            .collect();
    let period_type = Some(protos::ValueType { ty: b.string("space"), unit: b.string("bytes") });
    let sample = samples
        .iter()
        .map(|&(stack, inuse_bytes, size)| {
            let objects = if size > 0 { inuse_bytes / size } else { 0 };
            protos::Sample {
                location_id: stack.iter().map(|name| b.location(name)).collect(),
                value: vec![objects, inuse_bytes, objects, inuse_bytes],
                label: vec![protos::Label { key: b.string("bytes"), str: 0, num: size, num_unit: 0 }],
            }
        })
        .collect();
    protos::Profile {
        sample_type,
        sample,
        location: b.locations,
        function: b.functions,
        string_table: b.strings,
        time_nanos,
        period_type,
        period: PERIOD,
        ..Default::default()
    }
}

/// A gzip'd CPU profile (sample types `samples/count`, `cpu/nanoseconds`).
pub fn cpu_profile() -> Vec<u8> {
    let mut b = Builder::default();
    let sample_type = vec![
        protos::ValueType { ty: b.string("samples"), unit: b.string("count") },
        protos::ValueType { ty: b.string("cpu"), unit: b.string("nanoseconds") },
    ];
    let period_type = Some(protos::ValueType { ty: b.string("cpu"), unit: b.string("nanoseconds") });
    let sample =
        vec![protos::Sample { location_id: vec![b.location("main.spin")], value: vec![3, 30_000_000], label: vec![] }];
    let p = protos::Profile {
        sample_type,
        sample,
        location: b.locations,
        function: b.functions,
        period_type,
        string_table: b.strings,
        period: 10_000_000,
        ..Default::default()
    };
    gzip(&p.encode_to_vec())
}

/// Gzip-compresses `raw`.
pub fn gzip(raw: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(raw).unwrap();
    gz.finish().unwrap()
}

/// Gunzips `bytes`.
pub fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(bytes), &mut raw).unwrap();
    raw
}

/// Writes `files` (name, bytes) into `dir`.
pub fn write_files(dir: &Path, files: &[(&str, &[u8])]) {
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// String table, functions and locations of a profile being built, one
/// function and one location per name, ids from 1.
#[derive(Default)]
struct Builder {
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    functions: Vec<protos::Function>,
    locations: Vec<protos::Location>,
    location_ids: HashMap<String, u64>,
}

impl Builder {
    fn string(&mut self, s: &str) -> i64 {
        if self.strings.is_empty() {
            self.strings.push(String::new());
            self.string_ids.insert(String::new(), 0);
        }
        if let Some(&id) = self.string_ids.get(s) {
            return id;
        }
        let id = self.strings.len() as i64;
        self.strings.push(s.to_owned());
        self.string_ids.insert(s.to_owned(), id);
        id
    }

    fn location(&mut self, name: &str) -> u64 {
        if let Some(&id) = self.location_ids.get(name) {
            return id;
        }
        let id = self.locations.len() as u64 + 1;
        let (fname, file) = (self.string(name), self.string(&format!("src/{name}.rs")));
        self.functions.push(protos::Function { id, name: fname, system_name: fname, filename: file, start_line: 0 });
        let line = vec![protos::Line { function_id: id, line: 1 }];
        self.locations.push(protos::Location { id, line, ..Default::default() });
        self.location_ids.insert(name.to_owned(), id);
        id
    }
}
