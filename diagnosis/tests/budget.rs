//! Hostile profiles are refused within the decoding budget: each error
//! names its file, and the memory the decoder took at its peak stays under
//! a stated bound (counted by this binary's own global allocator, so the
//! whole file is one test).

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use diagnosis::{DiagnosisError, HeapSnapshot, RunInput, MAX_PROFILE_BYTES, MAX_PROFILE_MEMORY};
use pprof::protos::{self, Message};

#[path = "it/support.rs"]
mod support;

/// Counts the bytes allocated and not yet freed, and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let live = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

// SAFETY: forwards every call to `System` unchanged; counting touches only
// two atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: the caller upholds `alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller upholds `dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Old and new block are both live while the bytes are copied.
        grew(new_size);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The most a refused profile may make the decoder hold at once: the file,
/// the decompressed message (each at most `MAX_PROFILE_BYTES`) and the
/// decoded message (`MAX_PROFILE_MEMORY`), with room for the growth of the
/// last buffer.
const PEAK_BOUND: usize = (2 * MAX_PROFILE_BYTES + MAX_PROFILE_MEMORY + (MAX_PROFILE_BYTES / 2)) as usize;

/// Reads `bytes` as `dir/name` and returns the error's reason and the peak
/// of bytes the read added.
fn refuse(dir: &Path, name: &str, bytes: &[u8]) -> (String, usize) {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let result = HeapSnapshot::read(&path);
    let peak = PEAK.load(Ordering::Relaxed) - base;
    let err = result.expect_err(name);
    assert_eq!(err.path(), path, "{err}");
    assert!(err.to_string().starts_with(&path.display().to_string()), "{err}");
    let DiagnosisError::Profile { reason, .. } = err else { panic!("{name}: {err:?}") };
    assert!(peak < PEAK_BOUND, "{name}: {peak} bytes at the peak, more than {PEAK_BOUND}: {reason}");
    (reason, peak)
}

/// A heap profile's message with one function `name` and one location of
/// `lines` inlined frames of it; `samples` samples, each `repeat` times
/// that location.
fn one_function(name: String, lines: usize, samples: usize, repeat: usize) -> Vec<u8> {
    let mut p = support::heap_profile_proto(&[], 0);
    let name_id = p.string_table.len() as i64;
    p.string_table.push(name);
    p.function.push(protos::Function { id: 1, name: name_id, system_name: name_id, filename: 0, start_line: 0 });
    let line = vec![protos::Line { function_id: 1, line: 1 }; lines];
    p.location.push(protos::Location { id: 1, line, ..Default::default() });
    let sample = protos::Sample { location_id: vec![1; repeat], value: vec![1, 1, 1, 1], label: vec![] };
    p.sample = vec![sample; samples];
    support::gzip(&p.encode_to_vec())
}

/// `n` bytes of zeros, gzip'd as a stream (about 1000 times smaller).
fn zeros_gzip(n: usize) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..n / chunk.len() {
        gz.write_all(&chunk).unwrap();
    }
    gz.finish().unwrap()
}

/// A profile.proto message of `n` empty strings.
fn string_table(n: usize) -> Vec<u8> {
    support::gzip(&[0x32, 0x00].repeat(n))
}

/// A heap profile's message with `n` samples.
fn samples(n: usize) -> Vec<u8> {
    let mut raw = support::heap_profile_proto(&[], 0).encode_to_vec();
    // Sample: field 2 { value: packed [1, 1, 1, 1] }.
    let sample = [0x12, 0x06, 0x12, 0x04, 1, 1, 1, 1];
    raw.extend(sample.repeat(n));
    support::gzip(&raw)
}

#[test]
fn hostile_profiles_are_refused_within_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("bomb.pb.gz", zeros_gzip(80 << 20), "decompresses to more than the limit of 67108864 bytes"),
        (
            "long-name.pb.gz",
            one_function("a".repeat(16 << 20), 1, 1000, 8),
            "function 1's name is 16777216 bytes long, more than the limit of 65536",
        ),
        ("deep.pb.gz", one_function("main.leak".into(), 1, 1, 4096), "sample 0 has more than 2048 frames, the limit"),
        (
            "deep-inlined.pb.gz",
            one_function("main.leak".into(), 4096, 1000, 4096),
            "sample 0 has more than 2048 frames, the limit",
        ),
        ("strings.pb.gz", string_table(30_000_000), "the profile would take about"),
        ("samples.pb.gz", samples(1_000_000), "the profile would take about"),
        ("text.pb.gz", b"heap profile: 1: 2 [3: 4] @ heap/1048576\n".to_vec(), "not a profile.proto message"),
        ("cpu.pb.gz", support::cpu_profile(), "not a heap profile: sample types are [samples/count, cpu/nanoseconds]"),
        ("empty.pb.gz", Vec::new(), "empty file"),
    ];
    let mut peaks = Vec::new();
    for (name, bytes, want) in &cases {
        let (reason, peak) = refuse(dir, name, bytes);
        assert!(reason.starts_with(want), "{name}: want {want:?}, got {reason:?}");
        peaks.push((name, peak));
    }
    // Whatever the files, `RunInput` stops at the first with its name.
    std::fs::write(dir.join("heap-000.pb.gz"), &cases[1].1).unwrap();
    let err = RunInput::from_dir(dir).unwrap_err();
    assert!(err.path().ends_with("heap-000.pb.gz"), "{err}");
    eprintln!("peak bytes per hostile profile: {peaks:?}");
}
