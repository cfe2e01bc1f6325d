//! An outside detector run on a run's folder: `sh -c 'CMD "$0"' DIR`, which
//! prints one JSON object. It is a command a person gave, so it is bounded
//! like a peer: at most [`DETECTOR_TIMEOUT`] (then its whole process group
//! is killed) and [`MAX_DETECTOR_OUTPUT`] bytes of output.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Longest a detector may take on one run.
pub const DETECTOR_TIMEOUT: Duration = Duration::from_secs(300);

/// Most bytes of a detector's output read (its JSON answer is a few KiB).
pub const MAX_DETECTOR_OUTPUT: u64 = 16 << 20;

/// Runs `cmd` on `dir` and returns the JSON object it printed; an error
/// names the command when it takes too long, prints too much, or prints no
/// JSON (with the last line of its stderr).
pub fn run(cmd: &str, dir: &Path) -> anyhow::Result<serde_json::Value> {
    run_within(cmd, dir, DETECTOR_TIMEOUT)
}

fn run_within(cmd: &str, dir: &Path, timeout: Duration) -> anyhow::Result<serde_json::Value> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("{cmd} \"$0\""))
        .arg(dir)
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
        assert_eq!(v["dir"], dir.path().display().to_string());
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
}
