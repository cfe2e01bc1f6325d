//! An outside detector run on a run's folder: `sh -c 'CMD "$0"' VIEW`, which
//! prints one JSON object. It is a command a person gave, so it is bounded
//! like a peer: at most [`DETECTOR_TIMEOUT`] (then its whole process group
//! is killed) and [`MAX_DETECTOR_OUTPUT`] bytes of output.
//!
//! It is scored blind: VIEW is a folder of its own beside the run's, named
//! after nothing, with the run's files but the truth and what names it
//! ([`HIDDEN`]), as a monitor of a production process would have them.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Longest a detector may take on one run.
pub const DETECTOR_TIMEOUT: Duration = Duration::from_secs(300);

/// Most bytes of a detector's output read (its JSON answer is a few KiB).
pub const MAX_DETECTOR_OUTPUT: u64 = 16 << 20;

/// Files of a run folder that a detector does not see: the truth (the
/// label, the engine's verdict and its score, the run's record with its
/// scenario and parameters) and what is made from it or names the scenario
/// (the report, the pictures, the processes' logs). Tools' own outputs
/// (`heaptrack.*`, `valgrind.log`) stay, and they record the command line
/// of the process they ran (heaptrack's data, valgrind's preamble), which
/// names the scenario: a detector built on a tool is to read the tool's
/// figures only.
pub const HIDDEN: &[&str] =
    &["run.json", "verdict.json", "label.json", "score.json", "report.html", "serve.log", "peer.log"];

/// Whether a detector does not see the file `name` of a run folder.
fn hidden(name: &str) -> bool {
    HIDDEN.contains(&name) || name.ends_with(".svg")
}

/// Bytes of one file a view copies where it cannot link it.
const MAX_VIEW_COPY: u64 = 1 << 30;

/// A run folder as a detector sees it, removed when dropped.
struct View {
    path: PathBuf,
}

impl View {
    /// Links (or copies) the regular files of `dir` that are not
    /// [`hidden`] into a new folder, alone in `.detector-views` beside
    /// `dir` (on the same file system, so that links work and files still
    /// being written are seen whole), or in the system's temporary folder
    /// where that cannot be made.
    fn of(dir: &Path) -> anyhow::Result<View> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let name = format!("{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let mut made = None;
        for home in [parent.join(".detector-views"), std::env::temp_dir().join("leaklab-detector-views")] {
            let path = home.join(&name);
            if std::fs::create_dir_all(&home).is_ok() && std::fs::create_dir(&path).is_ok() {
                made = Some(path);
                break;
            }
        }
        // Made here, so removed when dropped (a folder already there is not
        // this view's).
        let view =
            View { path: made.with_context(|| format!("making a folder for a detector's view of {}", dir.display()))? };
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
            let name = entry.file_name();
            // Links and folders are left out, as are hidden files.
            if !entry.file_type().is_ok_and(|t| t.is_file()) || name.to_str().is_none_or(hidden) {
                continue;
            }
            let (from, to) = (entry.path(), view.path.join(&name));
            if std::fs::hard_link(&from, &to).is_err() {
                crate::files::copy_regular(&from, &to, MAX_VIEW_COPY)?;
            }
        }
        Ok(view)
    }
}

impl Drop for View {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
        // The views' folder too, once no view is left in it.
        if let Some(home) = self.path.parent() {
            let _ = std::fs::remove_dir(home);
        }
    }
}

/// Runs `cmd` on a blind view of `dir` and returns the JSON object it
/// printed; an error names the command when it takes too long, prints too
/// much, or prints no JSON (with the last line of its stderr).
pub fn run(cmd: &str, dir: &Path) -> anyhow::Result<serde_json::Value> {
    run_within(cmd, dir, DETECTOR_TIMEOUT)
}

fn run_within(cmd: &str, dir: &Path, timeout: Duration) -> anyhow::Result<serde_json::Value> {
    let view = View::of(dir)?;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("{cmd} \"$0\""))
        .arg(&view.path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a timeout kills what it started too.
        .process_group(0)
        .spawn()
        .with_context(|| format!("running the detector {cmd:?}"))?;
    let group = child.id() as i32;
    let stdout = drain(child.stdout.take(), group);
    let stderr = drain(child.stderr.take(), group);
    let deadline = Instant::now() + timeout;
    let timed_out = loop {
        if child.try_wait().with_context(|| format!("waiting for the detector {cmd:?}"))?.is_some() {
            break false;
        }
        if Instant::now() >= deadline {
            kill_group(group);
            let _ = child.wait();
            break true;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (out, err) = (stdout.join().unwrap_or_default(), stderr.join().unwrap_or_default());
    if timed_out {
        bail!("the detector {cmd:?} took more than {timeout:?} on {}", dir.display());
    }
    if out.len() as u64 > MAX_DETECTOR_OUTPUT {
        bail!("the detector {cmd:?} printed more than {MAX_DETECTOR_OUTPUT} bytes for {}", dir.display());
    }
    serde_json::from_slice(&out).with_context(|| {
        format!(
            "the detector {cmd:?} printed no JSON object for {} (stderr: {})",
            dir.display(),
            String::from_utf8_lossy(&err).lines().last().unwrap_or("")
        )
    })
}

/// Reads `pipe` on a thread, up to the limit; past it the detector's group
/// is killed, so that it does not wait forever on a pipe nobody reads.
fn drain(pipe: Option<impl Read + Send + 'static>, group: i32) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(pipe) = pipe {
            let _ = pipe.take(MAX_DETECTOR_OUTPUT + 1).read_to_end(&mut bytes);
        }
        if bytes.len() as u64 > MAX_DETECTOR_OUTPUT {
            kill_group(group);
        }
        bytes
    })
}

/// SIGKILL to the process group `group` (the detector's pid, as
/// `process_group(0)` made it).
fn kill_group(group: i32) {
    // SAFETY: kill(2) touches no memory; a group already gone is ESRCH.
    unsafe { libc::kill(-group, libc::SIGKILL) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detector_is_bounded_in_time_and_output() {
        let dir = tempfile::tempdir().unwrap();
        let v = run("printf '{\"leak\": true, \"dir\": \"%s\"}'", dir.path()).unwrap();
        assert_eq!(v["leak"], true);
        // A detector that never ends, and what it started, are killed.
        let start = Instant::now();
        let err = run_within("sleep 60 & sleep 60; true", dir.path(), Duration::from_millis(300)).unwrap_err();
        assert!(err.to_string().contains("took more than"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
        let err = run("cat /dev/zero; true", dir.path()).unwrap_err();
        assert!(err.to_string().contains("printed more than"), "{err}");
        let err = run("echo nothing useful >&2; echo no", dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains("stderr: nothing useful"), "{err:#}");
    }

    #[test]
    fn a_detector_sees_the_measurements_and_not_the_truth() {
        let root = tempfile::tempdir().unwrap();
        let run_dir = root.path().join("0003-request-field-hold-leak");
        std::fs::create_dir(&run_dir).unwrap();
        for f in ["heap-000.pb.gz", "pool-000.pb.gz", "holders-000.pb.gz", "metrics.jsonl", "heaptrack.log"] {
            std::fs::write(run_dir.join(f), f).unwrap();
        }
        for f in HIDDEN.iter().copied().chain(["timeline.svg"]) {
            std::fs::write(run_dir.join(f), "request-field-held").unwrap();
        }
        std::os::unix::fs::symlink(run_dir.join("label.json"), run_dir.join("truth")).unwrap();
        let probe = root.path().join("probe.sh");
        std::fs::write(
            &probe,
            "printf '{\"dir\": \"%s\", \"files\": \"%s\", \"heap\": \"%s\", \"beside\": \"%s\"}' \"$1\" \
             \"$(ls \"$1\" | tr '\\n' ' ')\" \"$(cat \"$1/heap-000.pb.gz\")\" \"$(ls -A \"$1/..\" | tr '\\n' ' ')\"\n",
        )
        .unwrap();
        let v = run(&format!("sh {}", probe.display()), &run_dir).unwrap();
        assert_eq!(v["files"], "heap-000.pb.gz heaptrack.log holders-000.pb.gz metrics.jsonl pool-000.pb.gz ");
        assert_eq!(v["heap"], "heap-000.pb.gz");
        let seen = v["dir"].as_str().unwrap();
        assert!(!seen.contains("request-field-hold"), "the folder's name gives the scenario away: {seen}");
        let name = Path::new(seen).file_name().unwrap().to_str().unwrap();
        assert_eq!(v["beside"], format!("{name} "), "the view is alone in its folder: no other run's name");
        assert!(!Path::new(seen).exists(), "the view is removed after the detector ran");
        assert!(!root.path().join(".detector-views").exists(), "and its folder, once empty");
        assert!(
            run_dir.join("label.json").exists() && run_dir.join("heap-000.pb.gz").exists(),
            "the run is left whole"
        );
    }
}
