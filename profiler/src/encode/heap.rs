//! [`Snapshot::to_profile`]: a snapshot in Go's heap profile format.
//!
//! Each record's addresses are symbolized, the profiler's own frames and the
//! allocator plumbing cut, records that end up with the same stack and
//! block size merged, and their counts scaled up with Go's
//! `scaleHeapSample`. Samples the snapshot says were dropped become
//! comments. Unless full stacks are asked for, each stack then starts at
//! its site (`trim.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;

use pprof::protos;

use super::proto::{Builder, Parts};
use super::Stacks;
use crate::maps::process_maps;
use crate::profile::{Profile, SampleType};
use crate::sampler::{scale, InProfiler};
use crate::snapshot::Snapshot;
use crate::symbolize::{self, SymFrame};

impl Snapshot {
    /// The profile in Go's heap format, with `default` as the sample type
    /// tools show first, and stacks as `stacks` says (from the site, or
    /// full). Looks up symbols (cached across calls).
    pub fn to_profile(&self, default: SampleType, stacks: Stacks) -> Profile {
        let _guard = InProfiler::enter();
        let full = build(self, default);
        match stacks {
            Stacks::FromSite => full.trim_machinery(),
            Stacks::Full => full,
        }
    }

    /// Go's `/debug/pprof/heap`: default sample type `inuse_space`, stacks
    /// from the site.
    pub fn heap_profile(&self) -> Profile {
        self.to_profile(SampleType::InuseSpace, Stacks::FromSite)
    }

    /// Go's `/debug/pprof/allocs`: default sample type `alloc_space`,
    /// stacks from the site.
    pub fn allocs_profile(&self) -> Profile {
        self.to_profile(SampleType::AllocSpace, Stacks::FromSite)
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

/// The profile of `snapshot`: symbolized, trimmed, merged by trimmed stack
/// and block size, scaled.
fn build(snapshot: &Snapshot, default: SampleType) -> Profile {
    let rate = snapshot.rate() as u64;
    let mut b = Builder::new(process_maps());

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

    let mapping = b.mappings();
    // A profile that lost samples says so, as `go tool pprof -comments`
    // shows.
    let comment =
        snapshot.dropped().iter().map(|(cause, n)| b.string(&format!("dropped {n} samples: {cause}"))).collect();
    let parts = Parts { sample, mapping, period: rate as i64, default, comment };
    b.finish(parts, snapshot.time())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::DecodeError;
    use crate::snapshot::HeapRecord;

    #[test]
    fn go_scaling() {
        // Values from Go's scaleHeapSample.
        assert_eq!(scale_heap_sample(1, 1024, 524_288), (512, 524_800));
        assert_eq!(scale_heap_sample(3, 3 << 20, 524_288), (3, 3_638_089));
        assert_eq!(scale_heap_sample(5, 500, 1), (5, 500));
        assert_eq!(scale_heap_sample(0, 0, 524_288), (0, 0));
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
}
