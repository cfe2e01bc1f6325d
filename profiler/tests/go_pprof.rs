//! `go tool pprof` reads a written profile: `-raw` accepts it and
//! `-top -sample_index=inuse_space` names the allocating function. Skipped,
//! with a note, where `go` is not installed (CI installs golang-go).
//! (Its own binary for its own `#[global_allocator]`: see `common/mod.rs`.)

use std::hint::black_box;
use std::path::PathBuf;
use std::process::Command;

use profiler::Profiler;

#[global_allocator]
static PROFILER: Profiler = Profiler::new();

#[inline(never)]
fn go_visible_leak() -> Vec<Vec<u8>> {
    black_box((0..64).map(|i| black_box(vec![i as u8; 64 * 1024])).collect())
}

fn go_available() -> bool {
    Command::new("go").arg("version").output().is_ok_and(|o| o.status.success())
}

/// Runs `go tool pprof ARGS FILE` and returns its standard output.
fn pprof(args: &[&str], file: &PathBuf, home: &PathBuf) -> String {
    let out = Command::new("go")
        .arg("tool")
        .arg("pprof")
        .args(args)
        .arg(file)
        // pprof wants a writable home and must not look for symbols online.
        .env("HOME", home)
        .env("PPROF_TMPDIR", home)
        .env("PPROF_BINARY_PATH", home)
        .output()
        .expect("run go tool pprof");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "go tool pprof {args:?} failed:\n{stdout}\n{stderr}");
    stdout
}

#[test]
fn go_tool_pprof_reads_the_profile() {
    if !go_available() {
        println!("note: `go` is not installed; skipping the go tool pprof check (apt-get install golang-go)");
        return;
    }
    PROFILER.set_rate(1);
    let kept = go_visible_leak();

    let dir = std::env::temp_dir().join(format!("profiler-go-pprof-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("heap.pb.gz");
    std::fs::write(&file, PROFILER.heap_profile().encode_gzip()).unwrap();

    let raw = pprof(&["-raw"], &file, &dir);
    assert!(raw.contains("PeriodType: space bytes"), "{raw}");
    assert!(raw.contains("alloc_objects/count alloc_space/bytes inuse_objects/count inuse_space/bytes"), "{raw}");
    assert!(raw.contains("go_pprof::go_visible_leak"), "{raw}");

    let top = pprof(&["-top", "-sample_index=inuse_space", "-cum", "-unit=B"], &file, &dir);
    println!("{top}");
    let line = top.lines().find(|l| l.contains("go_pprof::go_visible_leak")).unwrap_or_else(|| panic!("{top}"));
    // 64 blocks of 64 KiB, and the Vec of 64 `Vec<u8>` that holds them.
    let expected = 64 * 64 * 1024 + 64 * std::mem::size_of::<Vec<u8>>();
    assert!(line.contains(&format!(" {expected}B ")), "{line}");

    std::fs::remove_dir_all(&dir).unwrap();
    drop(kept);
}
