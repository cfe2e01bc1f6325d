//! Shared by the tests: starting `leaklab run`, watching its children in
//! `/proc`, and reading the run folder it writes.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use diagnosis::{HeapSample, HeapSnapshot, MetricsLine};

/// The binary under test.
pub const LEAKLAB: &str = env!("CARGO_BIN_EXE_leaklab");

/// Load duration of every run: warm-up 1 s, load 3 s, drain up to 1.5 s,
/// settle 1.5 s.
pub const DURATION: &str = "3s";

/// A mebibyte.
pub const MIB: f64 = 1048576.0;

/// The longest a run may take before the test gives up on it.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Held while a run goes: runs are made one at a time, so that parallel
/// test threads do not disturb each other's memory or CPU.
static LAB: Mutex<()> = Mutex::new(());

/// Takes the lab for one run (a test that failed while holding it does not
/// stop the others).
pub fn exclusive() -> MutexGuard<'static, ()> {
    LAB.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `leaklab ARGS`, waited for, output captured (for commands that start no
/// children: list, explain).
pub fn leaklab(args: &[&str]) -> (ExitStatus, String, String) {
    let out = Command::new(LEAKLAB).args(args).stdin(Stdio::null()).output().expect("running leaklab");
    (out.status, String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// One process as `/proc` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    /// Its id.
    pub pid: i32,
    /// Its parent's id.
    pub ppid: i32,
    /// State letter (`R`, `S`, `Z`, ...).
    pub state: char,
    /// Its command line.
    pub args: Vec<String>,
}

impl Proc {
    /// The `leaklab` subcommand (`serve`, `peer`), if it is one.
    pub fn subcommand(&self) -> &str {
        self.args.get(1).map_or("", String::as_str)
    }

    fn mentions(&self, needle: &str) -> bool {
        self.args.iter().any(|a| a.contains(needle))
    }
}

/// Every process now (those that vanish while being read are skipped).
pub fn processes() -> Vec<Proc> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else { return out };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        let Some(close) = stat.rfind(')') else { continue };
        let mut fields = stat[close + 1..].split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let Some(ppid) = fields.next().and_then(|s| s.parse().ok()) else { continue };
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args = cmdline
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        out.push(Proc { pid, ppid, state, args });
    }
    out
}

/// Live processes (not zombies) that belong to a run: their command line
/// names the run's folder, or their parent is the run.
pub fn run_processes(out_dir: &Path, run_pid: i32) -> Vec<Proc> {
    let needle = out_dir.to_string_lossy().into_owned();
    processes()
        .into_iter()
        .filter(|p| p.state != 'Z' && p.pid != std::process::id() as i32)
        .filter(|p| p.mentions(&needle) || p.ppid == run_pid)
        .collect()
}

/// Polls until no process of the run is left, for up to `grace`; returns
/// what is still there and how long it took.
pub fn wait_no_survivor(out_dir: &Path, run_pid: i32, grace: Duration) -> (Vec<Proc>, Duration) {
    let start = Instant::now();
    loop {
        let left = run_processes(out_dir, run_pid);
        if left.is_empty() || start.elapsed() >= grace {
            return (left, start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills processes that a run left behind (they are this test's own
/// grandchildren), so that they do not disturb the tests after it.
pub fn kill_all(procs: &[Proc]) {
    for p in procs {
        // SAFETY: kill(2) on a pid just read from /proc, of a process
        // whose command line names this test's own run folder.
        unsafe {
            libc::kill(p.pid, libc::SIGKILL);
        }
    }
}

/// A `leaklab run` going on.
#[derive(Debug)]
pub struct Running {
    /// The scenario.
    pub scenario: String,
    /// Holds the run folder and the run's stdout/stderr.
    pub tmp: tempfile::TempDir,
    /// The run folder (`--out`).
    pub out: PathBuf,
    /// The `leaklab run` process.
    pub child: Child,
    /// When it started.
    pub started: Instant,
    /// Every child of the run seen so far (by parent pid).
    pub children_seen: Vec<Proc>,
}

/// Starts `leaklab run SCENARIO --variant V --duration 3s --out TMP/run
/// --set ...`, stdout and stderr to files.
pub fn spawn_run(scenario: &str, variant: &str, set: &[&str]) -> Running {
    spawn_run_for(scenario, variant, set, DURATION)
}

/// [`spawn_run`] with another load duration.
pub fn spawn_run_for(scenario: &str, variant: &str, set: &[&str], duration: &str) -> Running {
    let tmp = tempfile::Builder::new().prefix("leaklab-it-").tempdir().expect("temp dir");
    let out = tmp.path().join("run");
    let mut cmd = Command::new(LEAKLAB);
    cmd.args(["run", scenario, "--variant", variant, "--duration", duration, "--out"]).arg(&out);
    for kv in set {
        cmd.args(["--set", kv]);
    }
    cmd.stdin(Stdio::null())
        .stdout(fs::File::create(tmp.path().join("stdout.txt")).expect("stdout file"))
        .stderr(fs::File::create(tmp.path().join("stderr.txt")).expect("stderr file"));
    let child = cmd.spawn().expect("starting leaklab run");
    Running { scenario: scenario.to_owned(), tmp, out, child, started: Instant::now(), children_seen: Vec::new() }
}

/// How a run ended.
#[derive(Debug)]
pub struct Finished {
    /// The scenario.
    pub scenario: String,
    /// Holds the run folder (removed when the test is done with it).
    pub _tmp: tempfile::TempDir,
    /// The run folder.
    pub out: PathBuf,
    /// Its exit status.
    pub status: ExitStatus,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
    /// How long it ran.
    pub wall: Duration,
    /// Every child of the run seen while it ran.
    pub children_seen: Vec<Proc>,
    /// Processes of the run left right after it exited.
    pub survivors: Vec<Proc>,
}

impl Running {
    /// The run's pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Records the run's children now; returns them.
    pub fn observe(&mut self) -> Vec<Proc> {
        let pid = self.pid();
        let now: Vec<Proc> = processes().into_iter().filter(|p| p.ppid == pid && p.state != 'Z').collect();
        for p in &now {
            // A child seen between its fork and its exec has no arguments
            // yet, or its parent's (`run`): a later look that has its own
            // replaces it.
            match self.children_seen.iter_mut().find(|q| q.pid == p.pid) {
                Some(q) if q.args.is_empty() || q.subcommand() == "run" => *q = p.clone(),
                Some(_) => {}
                None => self.children_seen.push(p.clone()),
            }
        }
        now
    }

    /// The lines of `metrics.jsonl` written so far.
    pub fn metrics_so_far(&self) -> Vec<MetricsLine> {
        let path = self.out.join("metrics.jsonl");
        let bytes = fs::read(&path).unwrap_or_default();
        // The last line may be half written: keep whole lines only.
        let whole = match bytes.iter().rposition(|&b| b == b'\n') {
            Some(i) => &bytes[..=i],
            None => &[][..],
        };
        diagnosis::parse_metrics(whole, &path).unwrap_or_default()
    }

    /// Waits (watching the children) until `cond` holds; panics after
    /// `timeout` or if the run exits first.
    pub fn wait_for(&mut self, what: &str, timeout: Duration, mut cond: impl FnMut(&mut Running) -> bool) {
        let until = Instant::now() + timeout;
        loop {
            self.observe();
            if cond(self) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("leaklab run {} exited ({status}) before {what}:\n{}", self.scenario, self.stderr());
            }
            if Instant::now() > until {
                self.abort();
                panic!("leaklab run {}: no {what} within {timeout:?}", self.scenario);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kills the run and whatever it started (after a test gave up on it).
    fn abort(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        kill_all(&run_processes(&self.out, self.pid()));
    }

    fn stderr(&self) -> String {
        fs::read_to_string(self.tmp.path().join("stderr.txt")).unwrap_or_default()
    }

    /// Waits for the run to exit (watching its children), then lists the
    /// processes of the run still there (at once, no grace).
    pub fn finish(mut self) -> Finished {
        let pid = self.pid();
        let until = Instant::now() + RUN_TIMEOUT;
        let status = loop {
            self.observe();
            if let Some(status) = self.child.try_wait().expect("waiting for leaklab run") {
                break status;
            }
            if Instant::now() > until {
                self.abort();
                panic!("leaklab run {} did not end within {RUN_TIMEOUT:?}:\n{}", self.scenario, self.stderr());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let wall = self.started.elapsed();
        let survivors = run_processes(&self.out, pid);
        let stdout = fs::read_to_string(self.tmp.path().join("stdout.txt")).unwrap_or_default();
        let stderr = self.stderr();
        Finished {
            scenario: self.scenario,
            _tmp: self.tmp,
            out: self.out,
            status,
            stdout,
            stderr,
            wall,
            children_seen: self.children_seen,
            survivors,
        }
    }
}

impl Finished {
    /// Asserts that the run succeeded, that its children were seen while it
    /// ran (so the `/proc` watch works), and that none is left now.
    pub fn assert_clean(&self) {
        assert!(self.status.success(), "leaklab run {} failed ({}):\n{}", self.scenario, self.status, self.stderr);
        assert!(
            self.children_seen.iter().any(|p| p.subcommand() == "serve"),
            "{}: no `leaklab serve` child was seen while the run went: {:?}",
            self.scenario,
            self.children_seen
        );
        self.assert_no_survivor();
    }

    /// Asserts that no process of the run is left (killing any that is).
    pub fn assert_no_survivor(&self) {
        if !self.survivors.is_empty() {
            kill_all(&self.survivors);
            panic!(
                "{}: processes of the run survived it: {:?}\nstderr:\n{}",
                self.scenario, self.survivors, self.stderr
            );
        }
    }

    /// The run folder's metrics lines.
    pub fn metrics(&self) -> Vec<MetricsLine> {
        let path = self.out.join("metrics.jsonl");
        let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let lines = diagnosis::parse_metrics(&bytes, &path).expect("metrics.jsonl parses");
        assert!(lines.len() >= 8, "{}: only {} metrics lines", self.scenario, lines.len());
        lines
    }

    /// Snapshot `n` of `kind` (`heap` or `pool`).
    pub fn profile(&self, kind: &str, n: usize) -> HeapSnapshot {
        let path = self.out.join(format!("{kind}-{n:03}.pb.gz"));
        HeapSnapshot::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Index of the last snapshot taken in `phase`.
    pub fn last_in(&self, metrics: &[MetricsLine], phase: &str) -> usize {
        metrics
            .iter()
            .rposition(|m| m.phase.as_deref() == Some(phase))
            .unwrap_or_else(|| panic!("{}: no snapshot in phase {phase}", self.scenario))
    }

    /// Reads `run.json` and checks its phases.
    pub fn assert_run_record(&self) {
        let text = fs::read_to_string(self.out.join("run.json")).expect("run.json written");
        let record: serde_json::Value = serde_json::from_str(&text).expect("run.json is JSON");
        assert_eq!(record["scenario"], self.scenario.as_str());
        let phases: Vec<&str> = record["phases"]
            .as_array()
            .expect("run.json has phases")
            .iter()
            .map(|p| p["name"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(phases, ["warmup", "load", "drain", "settle"], "{}", self.scenario);
        let verdict = fs::read_to_string(self.out.join("verdict.json")).expect("verdict.json written");
        let verdict: serde_json::Value = serde_json::from_str(&verdict).expect("verdict.json is JSON");
        // Whether the engine is right is the matrix's question; here, the
        // file says what it must: the verdict, what was expected, and
        // `correct` agreeing with the two.
        assert_eq!(verdict["expected"], record["expected"], "{}", self.scenario);
        let kind = verdict["kind"].as_str().expect("verdict.json has a kind");
        assert!(diagnosis::KINDS.contains(&kind), "{}: kind {kind}", self.scenario);
        assert_eq!(verdict["correct"].as_bool(), Some(Some(kind) == verdict["expected"].as_str()), "{}", self.scenario);
        assert_eq!(verdict["leak"].as_bool(), Some(kind != "none"), "{}", self.scenario);
    }
}

/// `leaklab run`, waited for; children watched.
pub fn run(scenario: &str, variant: &str, set: &[&str]) -> Finished {
    spawn_run(scenario, variant, set).finish()
}

/// Which samples a test is about.
pub type Pick<'a> = &'a dyn Fn(&HeapSample) -> bool;

/// Whether a frame whose function contains `fragment` is on the stack.
pub fn has_frame(s: &HeapSample, fragment: &str) -> bool {
    s.frames.iter().any(|f| f.function.contains(fragment))
}

/// Whether the stack has a frame containing `callee`, called (further from
/// the leaf) by a frame containing one of `callers`.
pub fn called_from(s: &HeapSample, callee: &str, callers: &[&str]) -> bool {
    let Some(i) = s.frames.iter().position(|f| f.function.contains(callee)) else { return false };
    s.frames[i + 1..].iter().any(|f| callers.iter().any(|c| f.function.contains(c)))
}

/// The in-use bytes of the samples `pick` chooses.
pub fn inuse_of(snapshot: &HeapSnapshot, pick: Pick<'_>) -> f64 {
    snapshot.samples.iter().filter(|s| pick(s)).map(|s| s.inuse_bytes).sum()
}

/// A stack, short: the workspace's frames only, leaf first.
pub fn short_stack(s: &HeapSample) -> String {
    let own: Vec<&str> = s
        .frames
        .iter()
        .map(|f| f.function.as_str())
        .filter(|f| {
            ["rpc::", "scenarios::", "leaklab::", "<rpc::", "<scenarios::", "held by", "cached in", "unknown holder"]
                .iter()
                .any(|p| f.starts_with(p))
        })
        .take(6)
        .collect();
    if own.is_empty() {
        s.frames.first().map_or_else(|| "(no frames)".to_owned(), |f| f.function.to_string())
    } else {
        own.join(" <- ")
    }
}

/// The stacks that grew most from `before` to `after`: (growth, stack).
pub fn top_growth(before: &HeapSnapshot, after: &HeapSnapshot, n: usize) -> Vec<(f64, String)> {
    let mut by_stack: std::collections::HashMap<String, f64> = std::collections::HashMap::new();
    for s in &after.samples {
        *by_stack.entry(short_stack(s)).or_default() += s.inuse_bytes;
    }
    for s in &before.samples {
        *by_stack.entry(short_stack(s)).or_default() -= s.inuse_bytes;
    }
    let mut v: Vec<(f64, String)> = by_stack.into_iter().map(|(k, g)| (g, k)).collect();
    v.sort_by(|a, b| b.0.total_cmp(&a.0));
    v.truncate(n);
    v
}

/// Formats bytes as MiB.
pub fn mib(b: f64) -> String {
    format!("{:.2} MiB", b / MIB)
}

impl Finished {
    /// The run's holder profiles (`holders-NNN.pb.gz`) with their snapshot
    /// numbers, in order.
    pub fn holders(&self) -> Vec<(usize, HeapSnapshot)> {
        let mut out: Vec<(usize, HeapSnapshot)> = fs::read_dir(&self.out)
            .expect("run folder")
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let n = name.strip_prefix("holders-")?.strip_suffix(".pb.gz")?.parse().ok()?;
                Some((n, HeapSnapshot::read(e.path()).unwrap_or_else(|err| panic!("{name}: {err}"))))
            })
            .collect();
        out.sort_by_key(|(n, _)| *n);
        out
    }
}

/// Whether a held block of a holder profile was allocated under a frame
/// containing `fragment` (its allocation stack is the label `stack`).
pub fn held_under(s: &HeapSample, fragment: &str) -> bool {
    s.labels.iter().any(|(k, v)| k == "stack" && v.contains(fragment))
}

/// The chains (root first, without the held block) of the blocks `pick`
/// chooses, by growth from `before` to `after`, largest first. Chains that
/// differ only in the thread's stack they were reached from (`thread NAME
/// stack`, then more links) count as one, shown with that root replaced by
/// `thread * stack`: a tokio task is reached from whichever worker's stack
/// pointed into the runtime at the scan, so that root says nothing of who
/// holds it (the engine groups them the same way).
pub fn chain_growth(before: &HeapSnapshot, after: &HeapSnapshot, pick: Pick<'_>) -> Vec<(f64, Vec<String>)> {
    let mut by_chain: std::collections::HashMap<Vec<String>, f64> = std::collections::HashMap::new();
    for (sign, snap) in [(1.0, after), (-1.0, before)] {
        for s in snap.samples.iter().filter(|s| pick(s)) {
            let mut chain: Vec<String> = s.frames[1..].iter().rev().map(|f| f.function.to_string()).collect();
            if chain.len() > 1 && chain[0].starts_with("thread ") && chain[0].ends_with(" stack") {
                chain[0] = "thread * stack".to_owned();
            }
            *by_chain.entry(chain).or_default() += sign * s.inuse_bytes;
        }
    }
    let mut v: Vec<(f64, Vec<String>)> = by_chain.into_iter().map(|(k, g)| (g, k)).collect();
    v.sort_by(|a, b| b.0.total_cmp(&a.0));
    v
}
