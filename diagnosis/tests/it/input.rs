//! Reading a run's directory: profiles in numeric order, optional pool
//! profiles, metrics and phases, and the errors that name the file.

use std::path::Path;

use diagnosis::{DecodeLimits, DiagnosisError, HeapSnapshot, MetricsLine, PhaseSpan, RunInput, SnapshotTime};

use crate::support::{heap_profile, heap_profile_at, write_files};

/// A heap profile whose single sample holds `bytes`.
fn heap(bytes: i64) -> Vec<u8> {
    heap_profile(&[(&["leak", "main"], bytes, 64)])
}

const RUN_JSON: &str = r#"{
  "scenario": "request-field-hold", "variant": "leak", "side": "server",
  "params": [["payload", "1024"]],
  "phases": [
    {"name": "warmup", "start_s": 0.0, "end_s": 1.0},
    {"name": "load", "start_s": 1.0, "end_s": 5.0},
    {"name": "drain", "start_s": 5.0, "end_s": 6.0},
    {"name": "settle", "start_s": 6.0, "end_s": 8.0}
  ],
  "interval_s": 1.0, "snapshots": 12
}"#;

#[test]
fn reads_a_run_directory() {
    let dir = tempfile::tempdir().unwrap();
    // 12 snapshots: heap-2 and heap-10 sort by number, not by name.
    for n in 0..12 {
        write_files(dir.path(), &[(&format!("heap-{n:03}.pb.gz"), &heap(1000 * (n + 1)))]);
    }
    std::fs::rename(dir.path().join("heap-002.pb.gz"), dir.path().join("heap-2.pb.gz")).unwrap();
    write_files(
        dir.path(),
        &[
            ("pool-000.pb.gz", &heap(7)),
            ("pool-001.pb.gz", &heap(8)),
            ("heap-xyz.pb.gz", b"ignored"),
            ("notes.txt", b"ignored"),
            ("verdict.json", b"{}"),
            ("run.json", RUN_JSON.as_bytes()),
        ],
    );
    let metrics: String = (0..12)
        .map(|i| {
            let phase = if i < 10 { r#","phase":"load""# } else { "" };
            format!(
                "{{\"t\":{}{phase},\"rss_bytes\":{},\"open_conns\":3,\"label\":\"x\"}}\n",
                i as f64 * 0.5,
                1e6 + i as f64
            )
        })
        .collect();
    write_files(dir.path(), &[("metrics.jsonl", metrics.as_bytes())]);

    let run = RunInput::from_dir(dir.path()).unwrap();
    assert_eq!(run.dir.as_deref(), Some(dir.path()));
    let inuse: Vec<f64> = run.heaps.iter().map(HeapSnapshot::total_inuse_bytes).collect();
    assert_eq!(inuse, (1..=12).map(|n| 1000.0 * n as f64).collect::<Vec<_>>());
    assert_eq!(run.pools.iter().map(HeapSnapshot::total_inuse_bytes).collect::<Vec<_>>(), [7.0, 8.0]);
    assert_eq!(run.metrics.len(), 12);
    assert_eq!(run.metrics[3].get("rss_bytes"), Some(1e6 + 3.0));
    assert_eq!(run.metrics[3].values.keys().collect::<Vec<_>>(), ["open_conns", "rss_bytes"]);
    assert_eq!(run.phases.len(), 4);
    assert_eq!(run.phases[1], PhaseSpan { name: "load".into(), start_s: 1.0, end_s: 5.0 });

    let timeline = run.timeline();
    assert_eq!(timeline[4], SnapshotTime { t: 2.0, phase: Some("load".into()) });
    // Lines 10 and 11 have no phase: the spans tell (t = 5.0 drain, 5.5 drain).
    assert_eq!(timeline[10], SnapshotTime { t: 5.0, phase: Some("drain".into()) });
    assert_eq!(run.metric("open_conns").len(), 12);
}

#[test]
fn profile_times_when_there_are_no_metrics() {
    let dir = tempfile::tempdir().unwrap();
    for (n, secs) in [(0, 100.0), (1, 101.5), (2, 103.0)] {
        let bytes = heap_profile_at(&[(&["a"], 1, 1)], (secs * 1e9) as i64);
        write_files(dir.path(), &[(&format!("heap-{n:03}.pb.gz"), &bytes)]);
    }
    let run = RunInput::from_dir(dir.path()).unwrap();
    assert!(run.pools.is_empty() && run.metrics.is_empty() && run.phases.is_empty());
    let t: Vec<f64> = run.timeline().iter().map(|s| s.t).collect();
    assert_eq!(t, [0.0, 1.5, 3.0]);
}

#[test]
fn holder_profiles_are_read_within_the_run_s_limits() {
    let dir = tempfile::tempdir().unwrap();
    write_files(
        dir.path(),
        &[
            ("heap-000.pb.gz", &heap(1)),
            ("pool-000.pb.gz", &heap(2)),
            ("holders-001.pb.gz", &heap(4)),
            ("holders-000.pb.gz", &heap(3)),
        ],
    );
    let run = RunInput::from_dir(dir.path()).unwrap();
    assert_eq!(run.holders.iter().map(HeapSnapshot::total_inuse_bytes).collect::<Vec<_>>(), [3.0, 4.0]);
    assert!(run.prefix(1).holders.is_empty());
    // Holder profiles count toward the run's number of profiles and its
    // memory, and a bad one is named.
    let few = DecodeLimits { run_profiles: 3, ..DecodeLimits::default() };
    let err = RunInput::from_dir_with(dir.path(), few).unwrap_err();
    assert!(err.to_string().contains("more than 3 profiles"), "{err}");
    let small = DecodeLimits { run_memory: 1, ..DecodeLimits::default() };
    assert!(RunInput::from_dir_with(dir.path(), small).is_err());
    write_files(dir.path(), &[("holders-001.pb.gz", b"not a profile")]);
    let err = RunInput::from_dir(dir.path()).unwrap_err();
    assert!(err.path().ends_with("holders-001.pb.gz"), "{err}");
}

#[test]
fn no_profiles() {
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &[("metrics.jsonl", b"{\"t\":0}\n"), ("pool-000.pb.gz", &heap(1))]);
    match RunInput::from_dir(dir.path()) {
        Err(DiagnosisError::NoProfiles { dir: d }) => assert_eq!(d, dir.path()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn missing_directory() {
    let err = RunInput::from_dir("/nonexistent/leaklab-run").unwrap_err();
    assert!(matches!(err, DiagnosisError::Io { .. }), "{err:?}");
    assert_eq!(err.path(), Path::new("/nonexistent/leaklab-run"));
}

#[test]
fn metrics_with_a_bad_line() {
    let dir = tempfile::tempdir().unwrap();
    write_files(
        dir.path(),
        &[
            ("heap-000.pb.gz", &heap(1)),
            ("metrics.jsonl", b"{\"t\":0,\"rss_bytes\":1}\n\n{\"t\":1,\"rss_bytes\":oops}\n"),
        ],
    );
    match RunInput::from_dir(dir.path()).unwrap_err() {
        DiagnosisError::Metrics { path, line, reason } => {
            assert_eq!(path, dir.path().join("metrics.jsonl"));
            assert_eq!(line, 3);
            assert!(reason.starts_with("not JSON"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_bad_profile_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let good = heap(1);
    write_files(dir.path(), &[("heap-000.pb.gz", &good), ("heap-001.pb.gz", &good[..good.len() / 2])]);
    let err = RunInput::from_dir(dir.path()).unwrap_err();
    assert!(matches!(err, DiagnosisError::Profile { .. }), "{err:?}");
    assert_eq!(err.path(), dir.path().join("heap-001.pb.gz"));
    assert!(err.to_string().contains("heap-001.pb.gz: "), "{err}");
}

#[test]
fn a_bad_pool_profile_is_named() {
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &[("heap-000.pb.gz", &heap(1)), ("pool-000.pb.gz", b"")]);
    let err = RunInput::from_dir(dir.path()).unwrap_err();
    assert_eq!(err.to_string(), format!("{}: empty file", dir.path().join("pool-000.pb.gz").display()));
}

#[test]
fn bad_phases_in_run_json() {
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &[("heap-000.pb.gz", &heap(1)), ("run.json", br#"{"phases": [{"name": 3}]}"#)]);
    let err = RunInput::from_dir(dir.path()).unwrap_err();
    assert!(matches!(err, DiagnosisError::Phases { .. }), "{err:?}");
    assert_eq!(err.path(), dir.path().join("run.json"));
}

#[test]
fn run_json_without_phases() {
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &[("heap-000.pb.gz", &heap(1)), ("run.json", br#"{"scenario": "anything"}"#)]);
    assert!(RunInput::from_dir(dir.path()).unwrap().phases.is_empty());
}

#[test]
fn live_parts_with_prometheus_figures() {
    let text = "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes 1.5e7\n\
                go_memstats_heap_inuse_bytes 9e6\nhttp_requests_total{code=\"200\"} 42\n";
    let line = MetricsLine { t: 0.0, phase: None, values: diagnosis::parse_prometheus(text), text: Default::default() };
    let snapshot = HeapSnapshot::decode(&heap(5), "http://127.0.0.1:6060/debug/pprof/heap").unwrap();
    let run = RunInput::from_parts(vec![snapshot], Vec::new(), vec![line]);
    assert_eq!(run.dir, None);
    assert_eq!(run.metric("http_requests_total"), [(0.0, 42.0)]);
    assert_eq!(run.metric("go_memstats_heap_inuse_bytes"), [(0.0, 9e6)]);
    assert_eq!(run.timeline(), [SnapshotTime { t: 0.0, phase: None }]);
}
