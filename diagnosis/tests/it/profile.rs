//! Decoding heap profiles: round trips, Go's layout, and every kind of bad
//! input refused with an error that names the file.

use std::path::Path;

use diagnosis::{DiagnosisError, Frame, HeapSnapshot};
use pprof::protos::{self, Message};

use crate::support::{cpu_profile, gunzip, gzip, heap_profile, heap_profile_at, heap_profile_proto, PERIOD};

const PATH: &str = "runs/x/heap-003.pb.gz";

fn decode(bytes: &[u8]) -> Result<HeapSnapshot, DiagnosisError> {
    HeapSnapshot::decode(bytes, PATH)
}

/// The reason of a profile error, after checking that it names `PATH`.
fn reason(result: Result<HeapSnapshot, DiagnosisError>) -> String {
    match result {
        Err(DiagnosisError::Profile { path, reason }) => {
            assert_eq!(path, Path::new(PATH));
            reason
        }
        other => panic!("expected a profile error, got {other:?}"),
    }
}

fn names(frames: &[Frame]) -> Vec<&str> {
    frames.iter().map(|f| f.function.as_str()).collect()
}

#[test]
fn round_trip() {
    let bytes = heap_profile_at(
        &[(&["rpc::codec::Request::read_field_2", "handler", "main"], 4096, 1024), (&["steady"], 100, 100)],
        1_700_000_000_500_000_000,
    );
    let heap = decode(&bytes).unwrap();
    assert_eq!(heap.period, PERIOD);
    assert_eq!(heap.time_s, Some(1_700_000_000.5));
    assert_eq!(heap.samples.len(), 2);
    let s = &heap.samples[0];
    assert_eq!(names(&s.frames), ["rpc::codec::Request::read_field_2", "handler", "main"]);
    assert_eq!(s.frames[1], Frame { function: "handler".into(), file: "src/handler.rs".into(), line: 1 });
    assert_eq!((s.inuse_bytes, s.inuse_objects, s.alloc_bytes, s.alloc_objects), (4096.0, 4.0, 4096.0, 4.0));
    assert_eq!(s.block_size, Some(1024));
    assert!(s.labels.is_empty());
    assert_eq!(heap.total_inuse_bytes(), 4196.0);
    assert_eq!(heap.total_inuse_objects(), 5.0);
}

#[test]
fn raw_profile_proto_without_gzip() {
    let raw = gunzip(&heap_profile(&[(&["a"], 10, 10)]));
    let heap = decode(&raw).unwrap();
    assert_eq!(heap.samples[0].inuse_bytes, 10.0);
    assert_eq!(heap.time_s, None);
}

#[test]
fn read_from_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("heap-000.pb.gz");
    std::fs::write(&path, heap_profile(&[(&["a", "b"], 64, 32)])).unwrap();
    let heap = HeapSnapshot::read(&path).unwrap();
    assert_eq!(names(&heap.samples[0].frames), ["a", "b"]);
    match HeapSnapshot::read(dir.path().join("missing.pb.gz")) {
        Err(DiagnosisError::Io { path, .. }) => assert!(path.ends_with("missing.pb.gz")),
        other => panic!("{other:?}"),
    }
}

/// A profile laid out as Go's runtime/pprof and `go tool pprof` may write
/// it: sparse ids in no order, inlined frames, string and numeric labels,
/// sample types in Go's order, a location without symbols.
fn go_like_profile() -> protos::Profile {
    let table = [
        "",
        "alloc_objects",
        "count",
        "alloc_space",
        "bytes",
        "inuse_objects",
        "inuse_space",
        "space",
        "main.leak",
        "/src/main.go",
        "bytes.(*Buffer).grow",
        "/go/src/bytes/buffer.go",
        "main.main",
        "conn",
        "c42",
    ];
    let s = |name: &str| table.iter().position(|t| *t == name).unwrap() as i64;
    let vt = |ty, unit| protos::ValueType { ty: s(ty), unit: s(unit) };
    let function =
        |id, name, file| protos::Function { id, name: s(name), system_name: s(name), filename: s(file), start_line: 0 };
    let line = |function_id, line| protos::Line { function_id, line };
    protos::Profile {
        sample_type: vec![
            vt("alloc_objects", "count"),
            vt("alloc_space", "bytes"),
            vt("inuse_objects", "count"),
            vt("inuse_space", "bytes"),
        ],
        // Ids sparse and out of order.
        function: vec![
            function(42, "main.main", "/src/main.go"),
            function(7, "bytes.(*Buffer).grow", "/go/src/bytes/buffer.go"),
            function(3, "main.leak", "/src/main.go"),
        ],
        location: vec![
            protos::Location { id: 1000, line: vec![line(42, 12)], ..Default::default() },
            // Inlined: the leaf comes first, the caller it was inlined into last.
            protos::Location { id: 5, line: vec![line(7, 118), line(3, 30)], ..Default::default() },
            protos::Location { id: 77, address: 0x4a2f10, ..Default::default() },
        ],
        sample: vec![
            protos::Sample {
                location_id: vec![5, 1000, 77],
                value: vec![10, 40960, 2, 8192],
                label: vec![
                    protos::Label { key: s("bytes"), str: 0, num: 4096, num_unit: 0 },
                    protos::Label { key: s("conn"), str: s("c42"), num: 0, num_unit: 0 },
                ],
            },
            protos::Sample { location_id: vec![1000], value: vec![1, 16, 0, 0], label: vec![] },
        ],
        string_table: table.iter().map(|t| t.to_string()).collect(),
        period_type: Some(vt("space", "bytes")),
        period: PERIOD,
        time_nanos: 1_000_000_000,
        ..Default::default()
    }
}

#[test]
fn go_like_profile_with_sparse_ids_and_inlined_frames() {
    let heap = decode(&gzip(&go_like_profile().encode_to_vec())).unwrap();
    assert_eq!(heap.time_s, Some(1.0));
    let s = &heap.samples[0];
    assert_eq!(names(&s.frames), ["bytes.(*Buffer).grow", "main.leak", "main.main", "0x4a2f10"]);
    assert_eq!(
        s.frames[0],
        Frame { function: "bytes.(*Buffer).grow".into(), file: "/go/src/bytes/buffer.go".into(), line: 118 }
    );
    assert_eq!(s.frames[1].line, 30);
    assert_eq!((s.alloc_objects, s.alloc_bytes, s.inuse_objects, s.inuse_bytes), (10.0, 40960.0, 2.0, 8192.0));
    assert_eq!(s.block_size, Some(4096));
    assert_eq!(s.labels, [("conn".to_string(), "c42".to_string())]);
    assert_eq!(heap.samples[1].block_size, None);
    assert_eq!(heap.total_alloc_bytes(), 40976.0);
}

#[test]
fn cpu_profile_is_not_a_heap_profile() {
    let err = HeapSnapshot::decode(&cpu_profile(), PATH).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{PATH}: not a heap profile: sample types are [samples/count, cpu/nanoseconds]")
    );
}

#[test]
fn truncated_gzip() {
    let stack: &[&str] = &["a", "b", "c"];
    let bytes = heap_profile(&[(stack, 1 << 20, 4096); 20]);
    for cut in [2, 10, bytes.len() / 2, bytes.len() - 1] {
        let why = reason(decode(&bytes[..cut]));
        assert!(why.starts_with("corrupt gzip stream: "), "cut at {cut}: {why}");
    }
}

#[test]
fn empty_and_random_bytes() {
    assert_eq!(reason(decode(&[])), "empty file");
    assert_eq!(reason(decode(&gzip(&[]))), "empty profile");
    let random: Vec<u8> = (0u32..4096).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    reason(decode(&random));
    reason(decode(&gzip(&random)));
    reason(decode(b"heap profile: 1: 2 [3: 4] @ heap/1048576\n"));
}

#[test]
fn bad_indexes_are_refused() {
    type Alter = fn(&mut protos::Profile);
    let cases: [(Alter, &str); 7] = [
        (|p| p.sample[0].location_id[1] = 999, "sample 0 refers to location 999"),
        (|p| p.location[1].line[0].function_id = 8, "location 5 refers to function 8"),
        (|p| p.function[0].name = 1000, "function 42's name refers to string 1000"),
        (|p| p.function[1].filename = -3, "function 7's file name refers to string -3"),
        (|p| p.sample[0].label[1].str = 15, "label \"conn\" of sample 0 refers to string 15"),
        (|p| p.sample[0].label[0].key = 99, "a label of sample 0 refers to string 99"),
        (|p| p.sample_type[3].unit = 1 << 40, "sample type 3's unit refers to string"),
    ];
    for (alter, want) in cases {
        let mut p = go_like_profile();
        alter(&mut p);
        let why = reason(decode(&gzip(&p.encode_to_vec())));
        assert!(why.contains(want), "want {want:?}, got {why:?}");
    }
}

#[test]
fn profile_without_inuse_space_lists_its_sample_types() {
    let mut p = heap_profile_proto(&[(&["a"], 1, 1)], 0);
    p.sample_type.truncate(2);
    for s in &mut p.sample {
        s.value.truncate(2);
    }
    let why = reason(decode(&p.encode_to_vec()));
    assert_eq!(why, "not a heap profile: sample types are [alloc_objects/count, alloc_space/bytes]");
}
