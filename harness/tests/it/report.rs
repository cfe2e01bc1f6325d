//! `leaklab report` on run folders made here (heap and pool profiles in
//! Go's format, metrics, `run.json`), without running a scenario: what the
//! page shows, the pictures beside it, a comparison, a matrix's index, and
//! hostile files, which give an error naming the file and never a panic.

use std::fs;
use std::path::Path;

use profiler::{NamedSample, Profile, SampleType};

use crate::support::leaklab;

const READ_FIELD: [&str; 5] = [
    "alloc::raw_vec::RawVecInner<A>::try_allocate_in",
    "rpc::codec::binary::Reader::read_binary_copy",
    "rpc::codec::echo::Request::read_field_2",
    "rpc::codec::echo::Request::decode",
    "rpc::server::Shared<H>::dispatch",
];

const BOOK: [&str; 3] = ["rpc::pool::RawChunk::alloc", "rpc::pool::Pool::lease", "rpc::linkbuf::InputBuffer::book"];

fn sample(stack: &[&str], bytes: i64, size: i64) -> NamedSample {
    let n = bytes / size;
    NamedSample {
        stack: stack.iter().map(|s| s.to_string()).collect(),
        values: [n, bytes, n, bytes],
        num_labels: vec![("bytes".to_owned(), size)],
        str_labels: Vec::new(),
    }
}

/// A run folder of `n` snapshots 0.5 s apart (warm-up, load, settle) in
/// which `read_field_2` keeps `growth` more bytes per snapshot during the
/// load, and the pool pins chunks held by `Request.msg (field 2, binary)`.
fn run_dir(dir: &Path, scenario: &str, variant: &str, growth: i64) {
    fs::create_dir_all(dir).unwrap();
    let n = 12;
    let mut metrics = String::new();
    for i in 0..n {
        let held = growth * (i.min(9) as i64);
        let heap = [sample(&READ_FIELD, 1 << 20 | held, 16 << 10), sample(&BOOK, 2 << 20, 64 << 10)];
        fs::write(
            dir.join(format!("heap-{i:03}.pb.gz")),
            Profile::from_named(&heap, 65536, SampleType::InuseSpace).encode_gzip(),
        )
        .unwrap();
        let mut pinned = sample(
            &["held by Request.msg (field 2, binary)", "rpc::linkbuf::InputBuffer::book", "rpc::pool::Pool::lease"],
            8192 * (i as i64 + 1),
            8192,
        );
        pinned.str_labels = vec![("pinned".into(), "true".into()), ("class".into(), "pooled".into())];
        let mut cached = sample(&["cached in the free list", "rpc::pool::Pool"], 65536, 8192);
        cached.str_labels = vec![("pinned".into(), "false".into())];
        fs::write(
            dir.join(format!("pool-{i:03}.pb.gz")),
            Profile::from_named(&[pinned, cached], 1, SampleType::InuseSpace).encode_gzip(),
        )
        .unwrap();
        let t = i as f64 * 0.5;
        let phase = if t < 1.0 {
            "warmup"
        } else if t < 4.5 {
            "load"
        } else {
            "settle"
        };
        metrics.push_str(&format!(
            "{{\"t\":{t},\"phase\":\"{phase}\",\"rss_bytes\":{},\"inuse_bytes\":{},\"requests\":{},\"open_conns\":4}}\n",
            (40 << 20) + held,
            (3 << 20) + held,
            i * 200
        ));
    }
    fs::write(dir.join("metrics.jsonl"), metrics).unwrap();
    let run = serde_json::json!({
        "scenario": scenario, "variant": variant, "expected": if variant == "leak" { "request-field-held" } else { "none" },
        "params": [["payload", "16KiB"]],
        "phases": [{"name": "warmup", "start_s": 0.0, "end_s": 1.0}, {"name": "load", "start_s": 1.0, "end_s": 4.5},
                   {"name": "settle", "start_s": 4.5, "end_s": 6.0}],
        "interval_s": 0.5,
    });
    fs::write(dir.join("run.json"), run.to_string()).unwrap();
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn a_report_shows_the_verdict_the_growing_site_the_guide_and_the_commands() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("rfh");
    run_dir(&dir, "request-field-hold", "leak", 2 << 20);
    let (status, stdout, stderr) = leaklab(&["report", dir.to_str().unwrap()]);
    assert!(status.success(), "{stderr}");
    assert_eq!(stdout.trim(), dir.join("report.html").display().to_string());
    let page = read(&dir.join("report.html"));
    let timeline = read(&dir.join("timeline.svg"));
    let flame = read(&dir.join("flame.svg"));
    // The verdict, diagnosed for the report (the folder has no verdict.json).
    assert!(
        page.contains("<span class=\"kind\">request-field-held</span> <span class=\"right\">right</span>"),
        "{page}"
    );
    assert!(page.contains("Request field 2 (the field whose tag is 2 in the IDL)"));
    assert!(page.contains("The verdict was right from snapshot"));
    // The timeline names the site and is in the page; the flame graph is
    // inferno's, counting bytes, and is in the page too.
    assert!(
        timeline.contains("rpc::codec::echo::Request::read_field_2")
            && timeline.contains("time since the run started (s)")
    );
    assert!(page.contains(timeline.as_str()));
    assert!(flame.contains("rpc::codec::echo::Request::read_field_2") && flame.contains(" bytes, "), "{flame}");
    assert!(flame.contains("function search(term)"));
    assert!(page.contains("srcdoc=\"&lt;!DOCTYPE html&gt;"));
    // The pool's view, the guide's words, the commands with this run's files.
    assert!(page.contains("held by Request.msg (field 2, binary)"));
    assert!(page.contains("Holding onto a Field of Request Object Persistently"));
    let first_load = dir.join("heap-002.pb.gz").display().to_string();
    assert!(page.contains(&format!("-diff_base {first_load}")), "the commands name the first load snapshot");
    assert!(page.contains("go tool pprof -peek rpc::codec::echo::Request::read_field_2"));
    // Self-contained: nothing is fetched.
    for outside in ["src=\"http", "href=\"http", "@import", "url(http"] {
        assert!(!page.contains(outside), "the page fetches {outside}");
    }
}

#[test]
fn a_comparison_puts_both_runs_on_the_same_scales() {
    let tmp = tempfile::tempdir().unwrap();
    let (leak, fix) = (tmp.path().join("leak"), tmp.path().join("fix"));
    run_dir(&leak, "request-field-hold", "leak", 2 << 20);
    run_dir(&fix, "request-field-hold", "fix", 0);
    let (status, _, stderr) = leaklab(&["report", leak.to_str().unwrap(), "--compare", fix.to_str().unwrap()]);
    assert!(status.success(), "{stderr}");
    let page = read(&leak.join("report.html"));
    assert!(page.contains("request-field-hold (leak) compared with request-field-hold (fix)"));
    assert_eq!(page.matches("<iframe class=\"flame\"").count(), 2);
    // The fix's growth is nothing: its graph says so.
    assert!(page.contains("No stack gained in-use bytes"));
    // Two timelines with the same top of the y axis, and one guide card.
    let tops: Vec<&str> = page.split("in-use bytes, RSS (MiB)").skip(1).collect();
    assert_eq!(tops.len(), 2);
    assert_eq!(page.matches("<p class=\"heading\">Holding onto a Field").count(), 1);
    // The run's own timeline.svg stays the run's alone.
    assert!(!read(&leak.join("timeline.svg")).contains("(fix)"));
}

#[test]
fn a_corrupt_heap_profile_is_named_and_nothing_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    run_dir(&dir, "request-field-hold", "leak", 1 << 20);
    fs::write(dir.join("heap-003.pb.gz"), b"\x1f\x8b\x08\x00garbage that is no gzip stream").unwrap();
    let (status, _, stderr) = leaklab(&["report", dir.to_str().unwrap()]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("heap-003.pb.gz"), "the error does not name the file: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!dir.join("report.html").exists());

    // A verdict.json that is not one, and run.json of the wrong shape.
    run_dir(&dir, "request-field-hold", "leak", 1 << 20);
    fs::write(dir.join("verdict.json"), b"{\"leak\": \"maybe\"}").unwrap();
    let (status, _, stderr) = leaklab(&["report", dir.to_str().unwrap()]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("verdict.json"), "{stderr}");
    fs::remove_file(dir.join("verdict.json")).unwrap();
    fs::write(dir.join("run.json"), b"[1, 2, 3]").unwrap();
    let (status, _, stderr) = leaklab(&["report", dir.to_str().unwrap()]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("run.json"), "{stderr}");
}

#[test]
fn extreme_values_give_a_report_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    run_dir(&dir, "not-a-scenario", "", 1 << 20);
    // Times far apart, huge and zero figures, a phase that ends before it
    // starts, a frame name with separators and markup.
    let lines: String = (0..12)
        .map(|i| {
            format!(
                "{{\"t\":{},\"rss_bytes\":{},\"open_conns\":0,\"requests\":1e300}}\n",
                i as f64 * 1e12,
                if i % 2 == 0 { 0.0 } else { 9e18 }
            )
        })
        .collect();
    fs::write(dir.join("metrics.jsonl"), lines).unwrap();
    fs::write(dir.join("run.json"), r#"{"phases":[{"name":"<load>","start_s":5e12,"end_s":1.0}]}"#).unwrap();
    let odd = ["f; g\n<script>alert(1)</script> 7", "main"];
    let heap = Profile::from_named(&[sample(&odd, 9 << 20, 1 << 20)], 1, SampleType::InuseSpace).encode_gzip();
    fs::write(dir.join("heap-011.pb.gz"), heap).unwrap();
    let (status, _, stderr) = leaklab(&["report", dir.to_str().unwrap()]);
    assert!(status.success(), "{stderr}");
    let page = read(&dir.join("report.html"));
    assert!(!page.contains("<script>alert"), "markup from a profile reached the page");
    assert!(page.contains("not a scenario of the catalogue"));
}

#[test]
fn a_matrix_folder_gets_its_index_and_figure() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    run_dir(&dir.join("request-field-hold-leak"), "request-field-hold", "leak", 1 << 20);
    let (status, _, stderr) = leaklab(&["report", dir.join("request-field-hold-leak").to_str().unwrap()]);
    assert!(status.success(), "{stderr}");
    let row = |variant: &str, expected: &str, verdict: &str, rate: f64| {
        serde_json::json!({"scenario": "request-field-hold", "variant": variant, "expected": expected,
            "verdict": verdict, "correct": expected == verdict, "leaked_bytes_per_s": rate})
    };
    let matrix = serde_json::json!({
        "rows": [row("leak", "request-field-held", "request-field-held", 6.5e6), row("fix", "none", "none", 2e4),
                 {"scenario": "steady", "variant": "leak", "expected": "none", "verdict": "none", "correct": true},
                 {"scenario": "javascript:alert(1)//", "variant": "x", "expected": "none", "verdict": "none",
                  "correct": true}],
        "scores": [{"detector": "engine", "precision": 1.0, "recall": 1.0, "kind_accuracy": 1.0, "false_alarms": 0}],
    });
    fs::write(dir.join("matrix.json"), matrix.to_string()).unwrap();
    // A folder whose name would make the link a script.
    let hostile = dir.join("javascript:alert(1)").join("-x");
    fs::create_dir_all(&hostile).unwrap();
    fs::write(hostile.join("report.html"), "<p>").unwrap();
    let (status, stdout, stderr) = leaklab(&["report", dir.to_str().unwrap()]);
    assert!(status.success(), "{stderr}");
    assert!(stdout.trim().ends_with("index.html"), "{stdout}");
    let figure = read(&dir.join("leak-vs-fix.svg"));
    for text in ["request-field-hold", "steady (control)", "6.20", "0.02", "precision", "engine"] {
        assert!(figure.contains(text), "the figure lacks {text}");
    }
    let index = read(&dir.join("index.html"));
    assert!(index.contains("<a href=\"./request-field-hold-leak/report.html\">request-field-hold</a>"));
    assert!(!index.contains("request-field-hold-fix/report.html"), "a run without a report is not linked");
    assert!(!index.contains("href=\"javascript") && !index.contains("alert(1)//-x/report.html"), "a script link");
}
