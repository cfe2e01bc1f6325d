//! Helpers shared by the heap tests.
//!
//! Why several test files: the workspace keeps one integration test binary
//! per crate, but a heap test must install its own `#[global_allocator]`,
//! and a binary has exactly one. So, as dhat-rs does, each heap test is its
//! own file (its own binary) with a single `#[test]`, and they share this
//! module.
#![allow(dead_code)]

use profiler::protos;
use profiler::{Profile, SampleType};

/// A small deterministic generator for block sizes.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
}

fn string(p: &protos::Profile, i: i64) -> &str {
    &p.string_table[i as usize]
}

/// The function names of a sample's stack, leaf first (inlined frames
/// included, innermost first).
pub fn stack_names<'p>(p: &'p protos::Profile, sample: &protos::Sample) -> Vec<&'p str> {
    let mut names = Vec::new();
    for id in &sample.location_id {
        let loc = p.location.iter().find(|l| l.id == *id).expect("sample refers to a location that exists");
        for line in &loc.line {
            let f =
                p.function.iter().find(|f| f.id == line.function_id).expect("line refers to a function that exists");
            names.push(string(p, f.name));
        }
    }
    names
}

/// Whether a stack has `function` (a full path, `crate::f`). Release
/// builds with line-tables-only debug info name inlined functions without
/// path, so the bare name counts too.
pub fn has_function(names: &[&str], function: &str) -> bool {
    let bare = function.rsplit("::").next().unwrap_or(function);
    names.iter().any(|&n| n == function || n == bare)
}

/// The values of the samples whose stack contains `function`, summed:
/// `[alloc_objects, alloc_space, inuse_objects, inuse_space]`.
pub fn function_values(profile: &Profile, function: &str) -> [i64; 4] {
    let p = profile.proto();
    let mut total = [0i64; 4];
    for s in &p.sample {
        if has_function(&stack_names(p, s), function) {
            for (t, v) in total.iter_mut().zip(&s.value) {
                *t += v;
            }
        }
    }
    total
}

pub fn value(values: [i64; 4], ty: SampleType) -> i64 {
    values[ty.index()]
}

/// Decodes the gzip'd bytes the way a consumer would: gunzip, then prost.
pub fn decode_gzip(bytes: &[u8]) -> protos::Profile {
    use protos::Message;
    use std::io::Read;
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(bytes).read_to_end(&mut raw).expect("valid gzip");
    protos::Profile::decode(raw.as_slice()).expect("valid profile.proto")
}
