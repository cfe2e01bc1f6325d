//! `leaklab compare` end to end, as short as it goes: one round of a
//! control (its two variants are the same code, so a and b are alike) with
//! one second of load. The table, `compare.json` and `compare.svg` are
//! written, each run folder is a normal run, and the figures are sane.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{exclusive, wait_no_survivor, LEAKLAB};

#[test]
fn compare_writes_its_table_json_and_figure() {
    let tmp = tempfile::Builder::new().prefix("leaklab-it-").tempdir().expect("temp dir");
    let out = tmp.path().join("cmp");
    let (status, stdout, stderr, pid) = {
        let _lab = exclusive();
        let child = Command::new(LEAKLAB)
            .args(["compare", "steady", "--rounds", "1", "--duration", "1s", "--json", "--out"])
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting leaklab compare");
        let pid = child.id() as i32;
        let done = child.wait_with_output().expect("waiting for leaklab compare");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (done.status, text(&done.stdout), text(&done.stderr), pid)
    };
    assert!(status.success(), "leaklab compare failed: {status}\n{stderr}");
    let (left, _) = wait_no_survivor(&out, pid, Duration::from_secs(2));
    assert!(left.is_empty(), "processes left behind: {left:?}");

    // --json prints what compare.json holds.
    let printed: serde_json::Value = serde_json::from_str(&stdout).expect("--json prints JSON");
    let file = std::fs::read_to_string(out.join("compare.json")).expect("compare.json");
    let c: serde_json::Value = serde_json::from_str(&file).expect("compare.json is JSON");
    assert_eq!(printed, c);
    assert_eq!(c["scenario"], "steady");
    assert_eq!((c["rounds"].as_u64(), c["order"].clone()), (Some(1), serde_json::json!(["a", "b"])));
    assert_eq!((c["a"]["label"].as_str(), c["b"]["label"].as_str()), (Some("leak"), Some("fix")));

    // Each run is a normal run folder, and measured.
    let runs = c["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2);
    for (run, side) in runs.iter().zip(["a", "b"]) {
        assert_eq!(run["side"], side);
        let dir = out.join(format!("{side}-1"));
        for file in ["run.json", "metrics.jsonl", "heap-000.pb.gz", "verdict.json", "report.html"] {
            assert!(dir.join(file).is_file(), "{} missing", dir.join(file).display());
        }
        let f = &run["figures"];
        let num = |key: &str| f[key].as_f64().unwrap_or_else(|| panic!("{side}: no {key} in {f}"));
        // steady: 200 calls/s over 4 connections.
        assert!((100.0..300.0).contains(&num("rps")), "{side}: {f}");
        assert!(num("calls") > 0.0 && num("seconds") > 0.0, "{side}: {f}");
        assert!(num("cpu_us_per_call") > 0.0 && num("cpu_us_per_call") < 100_000.0, "{side}: {f}");
        assert!(num("allocs_per_call") > 0.0, "{side}: {f}");
        assert_eq!(f["allocs_counted"], true, "{side}: counted by the profiler, not estimated: {f}");
        assert!(num("p50_ms") > 0.0 && num("p50_ms") <= num("p99_ms"), "{side}: {f}");
        assert!(num("peak_rss_bytes") > 1e6, "{side}: {f}");
        assert!(num("leaked_bytes_per_s") >= 0.0, "{side}: {f}");
        assert!(f["held_after_drain_bytes"].is_number(), "{side}: {f}");
        assert_eq!(f["verdict"], "none", "{side}: a control");
    }

    // Per metric: both sides and the ratio b/a; one round says no change.
    let metrics = c["metrics"].as_array().expect("metrics");
    let rps = metrics.iter().find(|m| m["key"] == "rps").expect("an rps metric");
    assert!(rps["a"]["median"].as_f64().is_some_and(|v| v > 0.0), "{rps}");
    let ratio = rps["ratio"]["median"].as_f64().expect("a ratio b/a");
    assert!((0.5..2.0).contains(&ratio), "b/a of req/s of the same code: {ratio}");
    assert_eq!(rps["ratio"]["n"], 1);
    assert!(rps["change"].is_null(), "one round cannot tell a change: {rps}");
    let cpu = metrics.iter().find(|m| m["key"] == "cpu_us_per_call").expect("a cpu metric");
    assert!(cpu["ratio"]["median"].as_f64().is_some_and(|v| v > 0.0), "{cpu}");

    let table = std::fs::read_to_string(out.join("compare.txt")).expect("compare.txt");
    for shown in ["leaklab compare: steady", "req/s", "CPU µs/call", "b/a", "verdict", "none ×1"] {
        assert!(table.contains(shown), "{shown:?} missing from the table:\n{table}");
    }
    let svg = std::fs::read_to_string(out.join("compare.svg")).expect("compare.svg");
    assert!(svg.starts_with("<svg") && svg.contains("CPU µs/call") && svg.contains("a: leak"), "{}", &svg[..200]);
}
