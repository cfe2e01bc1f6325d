//! The gzip'd profile decodes back with prost and is a well-formed Go heap
//! profile: the four sample types in Go's order, `space/bytes` period, the
//! default sample type of `/heap` and `/allocs`, a `bytes` label on each
//! sample, and every id it refers to defined.
//! (Its own binary for its own `#[global_allocator]`: see `common/mod.rs`.)

mod common;

use std::collections::HashSet;
use std::hint::black_box;

use common::{decode_gzip, function_values, stack_names};
use profiler::{protos, Profile, Profiler, SampleType};

#[global_allocator]
static PROFILER: Profiler = Profiler::new();

#[inline(never)]
fn keep_blocks() -> Vec<Box<[u8; 4096]>> {
    // `black_box` keeps `collect` from being a tail call, which would take
    // this function's frame off the stack in release builds.
    black_box((0..100).map(|_| black_box(Box::new([3u8; 4096]))).collect())
}

fn s(p: &protos::Profile, i: i64) -> &str {
    &p.string_table[i as usize]
}

fn check_well_formed(p: &protos::Profile, default: &str) {
    assert_eq!(p.string_table[0], "");
    let types: Vec<(&str, &str)> = p.sample_type.iter().map(|t| (s(p, t.ty), s(p, t.unit))).collect();
    assert_eq!(
        types,
        [("alloc_objects", "count"), ("alloc_space", "bytes"), ("inuse_objects", "count"), ("inuse_space", "bytes")]
    );
    let period = p.period_type.as_ref().expect("period type");
    assert_eq!((s(p, period.ty), s(p, period.unit)), ("space", "bytes"));
    assert_eq!(p.period, 1);
    assert_eq!(s(p, p.default_sample_type), default);
    assert!(p.time_nanos > 0);

    let mappings: HashSet<u64> = p.mapping.iter().map(|m| m.id).collect();
    let functions: HashSet<u64> = p.function.iter().map(|f| f.id).collect();
    let locations: HashSet<u64> = p.location.iter().map(|l| l.id).collect();
    assert!(!mappings.contains(&0) && !functions.contains(&0) && !locations.contains(&0));
    assert_eq!(mappings.len(), p.mapping.len(), "unique mapping ids");
    assert_eq!(functions.len(), p.function.len(), "unique function ids");
    assert_eq!(locations.len(), p.location.len(), "unique location ids");

    // The main binary is the first mapping, as tools expect.
    let exe = std::env::current_exe().unwrap();
    assert_eq!(s(p, p.mapping[0].filename), exe.to_str().unwrap());
    for m in &p.mapping {
        assert!(m.memory_start < m.memory_limit);
        assert!(m.has_functions && m.has_filenames && m.has_line_numbers && m.has_inline_frames);
    }
    for l in &p.location {
        assert!(mappings.contains(&l.mapping_id), "location {} has mapping {}", l.id, l.mapping_id);
        let m = &p.mapping[l.mapping_id as usize - 1];
        assert!((m.memory_start..m.memory_limit).contains(&l.address));
        for line in &l.line {
            assert!(functions.contains(&line.function_id));
        }
    }
    for f in &p.function {
        let name = s(p, f.name);
        assert!(!name.is_empty());
        // Demangled without the hash suffix (`::h0123456789abcdef`).
        let last = name.rsplit("::").next().unwrap();
        assert!(
            !(last.len() == 17 && last.starts_with('h') && last[1..].chars().all(|c| c.is_ascii_hexdigit())),
            "{name}"
        );
        let _ = s(p, f.system_name);
        let _ = s(p, f.filename);
    }
    for sample in &p.sample {
        assert_eq!(sample.value.len(), 4);
        assert!(sample.location_id.iter().all(|id| locations.contains(id)));
        assert!(sample.value.iter().all(|&v| v >= 0));
        assert!(sample.value[2] <= sample.value[0] && sample.value[3] <= sample.value[1]);
        let bytes: Vec<&protos::Label> = sample.label.iter().filter(|l| s(p, l.key) == "bytes").collect();
        assert_eq!(bytes.len(), 1);
        assert!(bytes[0].num > 0);
        // Go writes the label as a number, without unit.
        assert_eq!((bytes[0].str, bytes[0].num_unit), (0, 0));
    }
}

#[test]
fn profile_decodes_as_a_go_heap_profile() {
    PROFILER.set_rate(1);
    let kept = keep_blocks();

    let heap = PROFILER.heap_profile();
    let decoded = decode_gzip(&heap.encode_gzip());
    assert_eq!(&decoded, heap.proto());
    check_well_formed(&decoded, "inuse_space");
    check_well_formed(&decode_gzip(&PROFILER.allocs_profile().encode_gzip()), "alloc_space");

    // The blocks are there (and the Vec that holds them), with their size
    // as label and file/line info.
    let values = function_values(&heap, "pprof_format::keep_blocks");
    assert_eq!(values[2..], [101, 100 * 4096 + 100 * 8]);
    let sample = decoded
        .sample
        .iter()
        .find(|x| x.value[2] == 100 && stack_names(&decoded, x).contains(&"pprof_format::keep_blocks"))
        .expect("a sample of keep_blocks");
    assert_eq!(sample.label[0].num, 4096);
    let f = decoded.function.iter().find(|f| s(&decoded, f.name) == "pprof_format::keep_blocks").unwrap();
    assert!(s(&decoded, f.filename).ends_with("tests/pprof_format.rs"));
    assert!(decoded.location.iter().any(|l| l.line.iter().any(|line| line.function_id == f.id && line.line > 0)));

    // Our own decoder agrees, on gzip'd and plain bytes.
    assert_eq!(Profile::decode(&heap.encode_gzip()).unwrap(), heap);
    assert_eq!(Profile::decode(&heap.encode()).unwrap(), heap);
    assert_eq!(heap.total(SampleType::InuseSpace), decoded.sample.iter().map(|x| x.value[3]).sum::<i64>());
    drop(kept);
}
