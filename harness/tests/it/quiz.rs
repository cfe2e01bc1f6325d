//! `leaklab quiz`: a seed draws the same exercise every time; nothing the
//! learner is shown or told to read before answering names the scenario;
//! the reveal does, scores the answer, and gives the folder back as a run.

use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{exclusive, kill_all, leaklab, wait_no_survivor, LEAKLAB};

/// A seed whose easy exercise is a cheap server scenario.
const SEED: &str = "3";

/// The exercise `--plan` prints: scenario, expected kind, field tag.
fn plan(seed: &str, level: &str) -> (String, String, Option<String>, String) {
    let (status, stdout, stderr) = leaklab(&["quiz", "--seed", seed, "--level", level, "--plan"]);
    assert!(status.success(), "quiz --plan: {status}\n{stderr}");
    let first = stdout.lines().next().unwrap_or_default();
    let after = |s: &str, mark: &str| s.split_once(mark).map(|x| x.1.to_owned()).unwrap_or_default();
    let name = after(first, ": ").split(" (").next().unwrap_or_default().to_owned();
    let expected = after(first, "expected ").split(',').next().unwrap_or_default().to_owned();
    let tag = first.split_once(" field ").map(|(_, t)| t.split(' ').next().unwrap_or_default().to_owned());
    (name, expected, tag, stdout)
}

#[test]
fn a_seed_is_one_exercise() {
    for level in ["easy", "hard"] {
        let (name, expected, _, text) = plan("2024", level);
        assert_eq!(plan("2024", level).3, text, "two plans of seed 2024 ({level}) differ");
        assert!(scenarios::find(&name).is_ok(), "the plan names no scenario: {text}");
        assert!(diagnosis::KINDS.contains(&expected.as_str()), "{text}");
        assert!(text.contains(&format!("leaklab run {name} --variant")), "{text}");
    }
    let (status, _, stderr) = leaklab(&["quiz", "--answer", "leaky", "--plan"]);
    assert!(!status.success() && stderr.contains("no kind"), "{stderr}");
}

/// Every file of the folder the learner reads (not `answer/`), decompressed.
fn visible_text(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).expect("the quiz folder").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() {
            continue;
        }
        let bytes = fs::read(entry.path()).expect("a quiz file");
        let text = if name.ends_with(".gz") {
            let mut raw = Vec::new();
            flate2::read::GzDecoder::new(&bytes[..]).read_to_end(&mut raw).expect("gzip");
            String::from_utf8_lossy(&raw).into_owned()
        } else {
            String::from_utf8_lossy(&bytes).into_owned()
        };
        out.push((name, text));
    }
    out
}

#[test]
fn a_quiz_hides_the_scenario_until_the_answer() {
    let _lab = exclusive();
    let (name, expected, tag, _) = plan(SEED, "easy");
    let module = name.replace('-', "_");
    let tmp = tempfile::Builder::new().prefix("leaklab-quiz-").tempdir().expect("temp dir");
    let out = tmp.path().join("quiz");
    let mut child = Command::new(LEAKLAB)
        .args(["quiz", "--seed", SEED, "--duration", "2s", "--out"])
        .arg(&out)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting leaklab quiz");
    let printed = Arc::new(Mutex::new(String::new()));
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = {
        let printed = printed.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                printed.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let until = Instant::now() + Duration::from_secs(60);
    while !printed.lock().unwrap().contains("Your answer") {
        if Instant::now() > until || matches!(child.try_wait(), Ok(Some(_))) {
            let _ = child.kill();
            let mut err = String::new();
            let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
            panic!("no question within 60 s:\n{}\n{err}", printed.lock().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    // Before the answer: nothing printed or left to read names it.
    let before = printed.lock().unwrap().clone();
    eprintln!("QUIZ before the answer:\n{before}");
    for needle in [name.as_str(), module.as_str()] {
        assert!(!before.contains(needle), "the text before the answer names {needle}:\n{before}");
    }
    assert!(before.contains("-diff_base") && before.contains("heap-001.pb.gz"), "{before}");
    assert!(before.contains("holders-") && before.contains("pool-"), "{before}");
    assert!(before.contains("`ps`"), "{before}");
    let visible = visible_text(&out);
    assert!(
        visible.iter().any(|(n, _)| n == "metrics.jsonl"),
        "{:?}",
        visible.iter().map(|v| &v.0).collect::<Vec<_>>()
    );
    for (file, text) in &visible {
        assert!(
            file.starts_with("heap-")
                || file.starts_with("pool-")
                || file.starts_with("holders-")
                || file == "metrics.jsonl",
            "{file} is left to read before the answer"
        );
        for needle in [name.as_str(), module.as_str(), "scenarios::leaks", "scenarios/src/leaks"] {
            assert!(!text.contains(needle), "{file} names {needle} before the answer");
        }
    }
    let sealed = out.join("answer");
    for file in ["run.json", "verdict.json", "serve.log", "peer.log"] {
        assert!(sealed.join(file).exists(), "{file} is not sealed");
    }
    // The originals of masked profiles are kept: the masking did mask.
    assert!(
        visible_text(&sealed).iter().any(|(f, text)| f.ends_with(".pb.gz") && text.contains(&module)),
        "no sealed profile names {module}: nothing was masked"
    );

    // The answer, then the reveal.
    let tag_line = tag.as_deref().map(|t| format!("{t}\n")).unwrap_or_default();
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(format!("{expected}\n{tag_line}").as_bytes()).expect("answering");
    drop(stdin);
    let until = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the quiz") {
            break status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            panic!("the quiz did not end after the answer:\n{}", printed.lock().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    reader.join().expect("the reader");
    let all = printed.lock().unwrap().clone();
    assert!(status.success(), "leaklab quiz: {status}\n{all}");
    let reveal = &all[before.len()..];
    eprintln!("QUIZ reveal:{reveal}");
    assert!(
        reveal.contains("== The answer ==") && reveal.contains(&format!("scenario:   {name} (leak variant")),
        "{reveal}"
    );
    let right = if tag.is_some() { "right, and the right field" } else { "right" };
    assert!(reveal.contains(&format!("you said:   {expected}")) && reveal.contains(right), "{reveal}");
    assert!(reveal.contains("== The engine's verdict"), "{reveal}");

    // The folder is a run again.
    assert!(!sealed.exists(), "answer/ is left after the reveal");
    let record: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("run.json")).expect("run.json back")).expect("JSON");
    assert_eq!(record["scenario"], name.as_str());
    assert!(out.join("verdict.json").exists());
    let (left, _) = wait_no_survivor(&out, child.id() as i32, Duration::from_secs(5));
    if !left.is_empty() {
        kill_all(&left);
        panic!("processes of the quiz survived it: {left:?}");
    }
}
