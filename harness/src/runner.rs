//! One scenario run as a user would by hand (`leaklab run`, `leaklab
//! matrix`).
//!
//! The process under test (`leaklab serve --scenario S`) and its peer run as
//! child processes on loopback ports they choose themselves (each writes its
//! addresses to a ready file). While the phases go by (warm-up, load,
//! drain, settle), the run scrapes the admin endpoint every interval and
//! writes, into DIR:
//!
//! - `heap-NNN.pb.gz`: `/debug/pprof/heap`;
//! - `pool-NNN.pb.gz`: `/debug/pprof/pool`;
//! - `metrics.jsonl`: `/metrics`, one line per snapshot, with time and phase;
//! - `run.json`: scenario, variant, parameters, phases' times, peer report;
//! - `serve.log`, `peer.log`: the children's stderr;
//!
//! and then ([`run_and_diagnose`]) `verdict.json`, `report.html`,
//! `timeline.svg` and `flame.svg`.
//!
//! Children are stopped on every exit path: the run's own end, an error, a
//! Ctrl-C (a flag checked between steps), and the harness's own death
//! (`PR_SET_PDEATHSIG`).

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use scenarios::{Info, Side, Variant};
use serde::{Deserialize, Serialize};

use crate::holdersprof::MIN_INTERVAL;
use crate::loadgen::shape::PeerReport;
use crate::scrape::{self, MetricsLine};
use crate::verdict::VerdictFile;

/// Phases of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Load runs; the baseline is taken here.
    Warmup,
    /// Load runs.
    Load,
    /// Load stopped; connections closing.
    Drain,
    /// Nothing runs; what stays is what leaked.
    Settle,
}

/// One phase's span, in seconds from the start of the warm-up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhaseSpan {
    /// Which.
    pub name: Phase,
    /// Start.
    pub start_s: f64,
    /// End.
    pub end_s: f64,
}

/// Everything `run.json` says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// Scenario name.
    pub scenario: String,
    /// `leak` or `fix`.
    pub variant: String,
    /// `server` or `client`.
    pub side: String,
    /// The kind the diagnosis should give.
    pub expected: String,
    /// Every parameter with its effective value.
    pub params: Vec<(String, String)>,
    /// Phases as they happened (each change seen at the snapshot after it).
    pub phases: Vec<PhaseSpan>,
    /// The planned warm-up: the load begins this long after the start, and
    /// the gates of an `onset` open that long after it (the phases mark the
    /// load's start at the first snapshot in it, up to an interval later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_s: Option<f64>,
    /// The planned load (the phases show how long it lasted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_s: Option<f64>,
    /// The heap profiler's sampling rate.
    #[serde(default)]
    pub profile_rate: usize,
    /// Snapshot interval.
    pub interval_s: f64,
    /// Snapshots written.
    pub snapshots: usize,
    /// When the run started (Unix seconds).
    pub started_unix: u64,
    /// The RPC address: the server under test, or the peer a client
    /// scenario calls.
    pub rpc_addr: String,
    /// Admin address.
    pub admin_addr: String,
    /// What the peer did (server scenarios).
    pub peer: Option<PeerReport>,
    /// The holder scans taken (`holders-NNN.pb.gz`), with their cost.
    #[serde(default)]
    pub holder_scans: Vec<HolderScanRecord>,
    /// The binary started as the process under test, when not this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serve_bin: Option<String>,
    /// Flags the process under test was started with besides the run's
    /// own (a plain server's configuration).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub serve_flags: Vec<String>,
    /// Whether the process under test was a plain `leaklab serve` (no
    /// `--scenario`) under the scenario's load.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub plain_serve: bool,
}

/// One holder scan of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HolderScanRecord {
    /// The snapshot it goes with (`holders-NNN.pb.gz` beside `heap-NNN.pb.gz`).
    pub snapshot: usize,
    /// The phase it was taken in.
    pub phase: String,
    /// How long the fork paused the process under test, in microseconds.
    pub pause_us: Option<f64>,
    /// The scan in the forked child, in milliseconds.
    pub scan_ms: Option<f64>,
    /// The whole request, in milliseconds.
    pub total_ms: Option<f64>,
    /// Live blocks in the index.
    pub blocks: Option<u64>,
    /// Why the profile is partial, or why there is none.
    pub partial: String,
}

/// How long each phase lasts.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Warm-up.
    pub warmup: Duration,
    /// Load.
    pub load: Duration,
    /// Longest drain.
    pub drain: Duration,
    /// Settle.
    pub settle: Duration,
    /// Snapshot interval.
    pub interval: Duration,
}

impl Timing {
    /// From a load duration: warm-up a quarter of it (at least 1 s), settle
    /// a third (at least 1.5 s).
    pub fn for_duration(load: Duration, interval: Duration) -> Timing {
        Timing {
            warmup: (load / 4).max(Duration::from_secs(1)),
            load,
            drain: Duration::from_millis(1500),
            settle: (load / 3).max(Duration::from_millis(1500)),
            interval,
        }
    }

    fn total(&self) -> Duration {
        self.warmup + self.load + self.drain + self.settle
    }
}

/// A scenario run to make.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// The scenario.
    pub info: &'static Info,
    /// Leak or fix.
    pub variant: Variant,
    /// `--set` pairs.
    pub set: Vec<(String, String)>,
    /// Output folder.
    pub out: PathBuf,
    /// Phase lengths.
    pub timing: Timing,
    /// Show a progress bar (on a terminal).
    pub progress: bool,
    /// The heap profiler's sampling rate in the process under test.
    pub profile_rate: usize,
    /// Run the process under test in holder mode and take holder scans
    /// (`holders-NNN.pb.gz`) at the first snapshot, the first and last load snapshots and at the
    /// end of the settle phase.
    pub holders: bool,
    /// How the process under test is started.
    pub serve: ServeCommand,
}

/// How the process under test is started: by default this binary's
/// `serve --scenario S --variant V`.
#[derive(Debug, Clone, Default)]
pub struct ServeCommand {
    /// The `leaklab` binary to start as `serve` (another build); `None`:
    /// this one. The peer is always this one, so that two builds get the
    /// same load.
    pub exe: Option<PathBuf>,
    /// A plain `leaklab serve` (no `--scenario`) under the scenario's load
    /// shape, configured by `flags`; only for a server scenario.
    pub plain: bool,
    /// Flags added to `serve`'s own.
    pub flags: Vec<String>,
    /// The heap profiler's sampling seed (`LEAKLAB_PROFILE_SEED`), so that
    /// runs that are compared make the same sampling decisions.
    pub seed: Option<u64>,
}

/// The sampling rate runs use: 64 KiB, eight times finer than Go's default,
/// so that a leak of a few hundred KiB shows within seconds.
pub const RUN_PROFILE_RATE: usize = 64 << 10;

/// Set by SIGINT/SIGTERM while a run is going: stop and clean up.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Routes SIGINT and SIGTERM to the interrupt flag (once per process).
pub fn install_interrupt_handler() -> anyhow::Result<()> {
    static INSTALLED: AtomicBool = AtomicBool::new(false);
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, flag.clone()).context("installing the signal handler")?;
    }
    std::thread::spawn(move || loop {
        if flag.load(Ordering::Relaxed) {
            INTERRUPTED.store(true, Ordering::SeqCst);
        }
        std::thread::sleep(Duration::from_millis(20));
    });
    Ok(())
}

/// True once the user asked to stop.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Sleeps until `t`, waking early on an interrupt.
fn sleep_until(t: Instant) -> anyhow::Result<()> {
    loop {
        if interrupted() {
            bail!("interrupted");
        }
        let now = Instant::now();
        if now >= t {
            return Ok(());
        }
        std::thread::sleep((t - now).min(Duration::from_millis(25)));
    }
}

/// A child process stopped (SIGTERM, then SIGKILL) when dropped.
pub struct ChildGuard {
    child: Option<Child>,
    name: &'static str,
}

impl ChildGuard {
    /// Starts `leaklab ARGS` with stderr to `log`, dying with its parent.
    pub fn spawn(name: &'static str, args: &[String], log: &Path) -> anyhow::Result<ChildGuard> {
        Self::spawn_exe(name, None, &[], args, log)
    }

    /// Starts `EXE ARGS` (`None`: this `leaklab`) with `env` added, stderr
    /// to `log`, dying with its parent.
    pub fn spawn_exe(
        name: &'static str,
        exe: Option<&Path>,
        env: &[(&str, String)],
        args: &[String],
        log: &Path,
    ) -> anyhow::Result<ChildGuard> {
        let exe = match exe {
            Some(exe) => exe.to_path_buf(),
            // The running binary itself, even if a rebuild has replaced the
            // file since it started (then current_exe() names a deleted path).
            None if cfg!(target_os = "linux") && Path::new("/proc/self/exe").exists() => {
                PathBuf::from("/proc/self/exe")
            }
            None => std::env::current_exe().context("finding the leaklab binary")?,
        };
        let log = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new(&exe);
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe and touches no memory of the
            // parent; it only asks the kernel to SIGTERM the child when the
            // thread that forked it dies.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().with_context(|| format!("starting the {name} process ({})", exe.display()))?;
        Ok(ChildGuard { child: Some(child), name })
    }

    /// Its process id, while it has not been stopped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it has exited.
    pub fn exited(&mut self) -> bool {
        self.child.as_mut().is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else { return };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        // SAFETY: kill(2) on our own child's pid, which has not been reaped
        // (try_wait just said it is running), so the pid is still ours.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let until = Instant::now() + grace;
        while Instant::now() < until {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::warn!(child = self.name, "did not stop on SIGTERM; killing it");
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
    }
}

/// Addresses a child bound, from its ready file.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Ready {
    /// RPC address (none for a client scenario).
    pub rpc: Option<SocketAddr>,
    /// Admin address.
    pub admin: SocketAddr,
}

fn wait_ready(path: &Path, child: &mut ChildGuard, log: &Path) -> anyhow::Result<Ready> {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(text) = fs::read_to_string(path) {
            if let Ok(ready) = serde_json::from_str::<Ready>(&text) {
                return Ok(ready);
            }
        }
        if child.exited() {
            bail!("the {} process exited before it was ready:\n{}", child.name, tail(log));
        }
        if Instant::now() > until {
            bail!("the {} process was not ready within 20 s:\n{}", child.name, tail(log));
        }
        sleep_until(Instant::now() + Duration::from_millis(20))?;
    }
}

/// Lines of a log that [`tail`] shows.
const TAIL_LINES: usize = 15;
/// Bytes from the end of a log that [`tail`] reads: a child that logged
/// for hours is not read whole to show its last lines.
const TAIL_BYTES: u64 = 64 << 10;

/// The last lines of a log, for error messages.
pub fn tail(path: &Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = fs::File::open(path) else { return String::new() };
    let len = file.metadata().map_or(0, |m| m.len());
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES))).is_err()
        || file.take(TAIL_BYTES).read_to_end(&mut bytes).is_err()
    {
        return String::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

fn common_args(plan: &RunPlan) -> Vec<String> {
    let mut args = vec!["--scenario".into(), plan.info.name.into(), "--variant".into(), plan.variant.to_string()];
    for (k, v) in &plan.set {
        args.push("--set".into());
        args.push(format!("{k}={v}"));
    }
    args
}

/// Makes the run; returns its record. DIR is created (files in it are
/// overwritten).
pub fn run_scenario(plan: &RunPlan) -> anyhow::Result<RunRecord> {
    install_interrupt_handler()?;
    let info = plan.info;
    let params = scenarios::Params::parse(info, &plan.set)?;
    if plan.serve.plain && info.side != Side::Server {
        bail!("{} is a client scenario: a plain `leaklab serve` cannot be its process under test", info.name);
    }
    fs::create_dir_all(&plan.out).with_context(|| format!("creating {}", plan.out.display()))?;
    for entry in fs::read_dir(&plan.out)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = ["metrics.jsonl", "run.json", "verdict.json", "report.html", "timeline.svg", "flame.svg"];
        if name.ends_with(".pb.gz") || ours.contains(&name.as_str()) {
            fs::remove_file(entry.path())?;
        }
    }
    let t = plan.timing;
    let dir = &plan.out;
    let started_unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let drive_for = t.warmup + t.load;

    // The peer server of a client scenario (or of a server scenario mixed
    // with a client leak) starts first.
    let mut peer_server = None;
    let mut peer_rpc = None;
    if scenarios::calls_a_peer(info, &params) {
        let ready = dir.join(".peer-ready.json");
        let _ = fs::remove_file(&ready);
        let log = dir.join("peer.log");
        let args: Vec<String> = [
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--profile-rate",
            "0",
            "--ready-file",
            &ready.to_string_lossy(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut child = ChildGuard::spawn("peer", &args, &log)?;
        peer_rpc = wait_ready(&ready, &mut child, &log)?.rpc;
        let _ = fs::remove_file(&ready);
        peer_server = Some(child);
    }

    // The process under test.
    let ready_path = dir.join(".serve-ready.json");
    let _ = fs::remove_file(&ready_path);
    let serve_log = dir.join("serve.log");
    let mut args: Vec<String> = ["serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--ready-file"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(ready_path.to_string_lossy().into_owned());
    args.extend(["--profile-rate".into(), plan.profile_rate.to_string()]);
    if !plan.serve.plain && !params.modifiers().onset.is_zero() {
        // Onset counts from the end of the warm-up (only passed when set,
        // so that builds without the flag still run as before).
        args.extend(["--warmup".into(), format!("{}ms", t.warmup.as_millis())]);
    }
    if plan.holders {
        args.push("--holders".into());
    }
    if !plan.serve.plain {
        args.extend(common_args(plan));
    }
    args.extend(plan.serve.flags.iter().cloned());
    if let Some(peer) = peer_rpc {
        args.extend(["--peer".into(), peer.to_string(), "--drive-for".into(), format!("{}ms", drive_for.as_millis())]);
    }
    let env: Vec<(&str, String)> =
        plan.serve.seed.map(|seed| (profiler::SEED_ENV, seed.to_string())).into_iter().collect();
    let mut serve = ChildGuard::spawn_exe("serve", plan.serve.exe.as_deref(), &env, &args, &serve_log)?;
    let serve_pid = serve.pid();
    let ready = wait_ready(&ready_path, &mut serve, &serve_log)?;
    let _ = fs::remove_file(&ready_path);

    // The load of a server scenario.
    let peer_log = dir.join("peer.log");
    let peer_report_path = dir.join(".peer-report.json");
    let _ = fs::remove_file(&peer_report_path);
    let start = Instant::now();
    let mut peer = None;
    if let (Side::Server, Some(rpc)) = (info.side, ready.rpc) {
        let mut args: Vec<String> = vec![
            "peer".into(),
            "--target".into(),
            rpc.to_string(),
            "--duration".into(),
            format!("{}ms", drive_for.as_millis()),
            "--report".into(),
            peer_report_path.to_string_lossy().into_owned(),
            "--latency-from".into(),
            format!("{}ms", t.warmup.as_millis()),
        ];
        args.extend(common_args(plan));
        peer = Some(ChildGuard::spawn("peer", &args, &peer_log)?);
    }

    let agent = scrape::agent();
    let bar = progress_bar(plan, t);
    let mut metrics = fs::File::create(dir.join("metrics.jsonl"))?;
    let mut phases: Vec<PhaseSpan> = Vec::new();
    let mut phase = Phase::Warmup;
    let mut phase_start = 0.0;
    let mut snapshots = 0usize;
    let load_end = t.warmup + t.load;
    let mut drain_end: Option<Duration> = None;
    let mut holder_scans = Vec::new();
    // A holder scan due but not taken yet, and when the last one ended.
    let mut scan_owed = false;
    let mut last_scan: Option<Instant> = None;
    let mut next = start;
    loop {
        sleep_until(next)?;
        let now = start.elapsed();
        // Phase transitions.
        let want = if now < t.warmup {
            Phase::Warmup
        } else if now < load_end {
            Phase::Load
        } else if drain_end.is_none_or(|d| now < d) {
            Phase::Drain
        } else {
            Phase::Settle
        };
        if want != phase {
            phases.push(PhaseSpan { name: phase, start_s: phase_start, end_s: now.as_secs_f64() });
            phase = want;
            phase_start = now.as_secs_f64();
        }
        if serve.exited() {
            bail!("the process under test exited during the run:\n{}", tail(&serve_log));
        }
        let cpu_before = serve_pid.and_then(process_cpu_seconds);
        let mut line = snapshot(&agent, ready.admin, dir, snapshots, now.as_secs_f64(), phase)
            .with_context(|| format!("snapshot {snapshots} from {}", ready.admin))?;
        snapshots += 1;
        if let Some(bar) = &bar {
            bar.set_position(now.as_millis() as u64);
            bar.set_message(format!("{:?}, {} snapshots", phase, snapshots));
        }
        // The drain ends once the load has stopped and connections closed.
        if phase == Phase::Drain && drain_end.is_none() {
            let peer_done = peer.as_mut().is_none_or(|p| p.exited());
            let quiet = line.figures.open_conns == 0 || info.side == Side::Client;
            if (peer_done && quiet) || now >= load_end + t.drain {
                drain_end = Some(now);
            }
        }
        let settled = phase == Phase::Settle && now >= drain_end.unwrap_or(now) + t.settle;
        if plan.holders {
            // A baseline before the load, the load's first and last
            // snapshots, and the end.
            let first = snapshots == 1;
            // A load scan that failed is tried again at the next snapshot.
            let first_load = phase == Phase::Load
                && !holder_scans.iter().any(|h: &HolderScanRecord| h.phase == "load" && h.blocks.is_some());
            let last_load = phase == Phase::Load && now + t.interval >= load_end;
            scan_owed |= first || first_load || last_load || settled;
            // The endpoint starts one scan per `MIN_INTERVAL` at most: a
            // scan due sooner is taken at a later snapshot, and the last
            // one (the end) waits out the rest.
            let wait = last_scan.map_or(Duration::ZERO, |t| MIN_INTERVAL.saturating_sub(t.elapsed()));
            if scan_owed && settled {
                std::thread::sleep(wait);
            }
            if scan_owed && (settled || wait.is_zero()) {
                holder_scans.push(holder_scan(&agent, ready.admin, dir, snapshots - 1, phase));
                // After the answer: the endpoint counts from the request.
                last_scan = Some(Instant::now());
                scan_owed = false;
            }
        }
        // What being watched cost the process: the scrapes, and any holder
        // scan, so that a reader can take it out of its CPU time.
        line.cpu_s = cpu_before;
        line.scrape_cpu_s = cpu_before.zip(serve_pid.and_then(process_cpu_seconds)).map(|(b, a)| (a - b).max(0.0));
        writeln!(metrics, "{}", serde_json::to_string(&line)?)?;
        if settled {
            break;
        }
        next += t.interval;
    }
    phases.push(PhaseSpan { name: phase, start_s: phase_start, end_s: start.elapsed().as_secs_f64() });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if let Some(mut p) = peer.take() {
        p.stop(Duration::from_secs(5));
    }
    serve.stop(Duration::from_secs(5));
    if let Some(mut p) = peer_server.take() {
        p.stop(Duration::from_secs(5));
    }
    let peer_report =
        fs::read_to_string(&peer_report_path).ok().and_then(|s| serde_json::from_str::<PeerReport>(&s).ok());
    let _ = fs::remove_file(&peer_report_path);
    let record = RunRecord {
        scenario: info.name.to_owned(),
        variant: plan.variant.to_string(),
        side: info.side.to_string(),
        expected: info.expected_kind(plan.variant).to_owned(),
        params: params.effective(),
        phases,
        warmup_s: Some(t.warmup.as_secs_f64()),
        load_s: Some(t.load.as_secs_f64()),
        profile_rate: plan.profile_rate,
        interval_s: t.interval.as_secs_f64(),
        snapshots,
        started_unix,
        rpc_addr: ready.rpc.or(peer_rpc).map(|a| a.to_string()).unwrap_or_default(),
        admin_addr: ready.admin.to_string(),
        peer: peer_report,
        holder_scans,
        serve_bin: plan.serve.exe.as_ref().map(|p| p.display().to_string()),
        serve_flags: plan.serve.flags.clone(),
        plain_serve: plan.serve.plain,
    };
    fs::write(dir.join("run.json"), serde_json::to_string_pretty(&record)?)?;
    Ok(record)
}

/// Makes the run, then writes what every run leaves for its readers:
/// `verdict.json` (the engine's verdict, what was expected, when it was
/// first right) and, for people, `report.html` with `timeline.svg` and
/// `flame.svg`. A report that cannot be written is a warning, not a
/// failed run.
pub fn run_and_diagnose(plan: &RunPlan) -> anyhow::Result<(RunRecord, VerdictFile)> {
    let record = run_scenario(plan)?;
    let verdict = crate::verdict::write_verdict(&plan.out, &record.expected)?;
    crate::report::write_or_warn(&plan.out);
    Ok((record, verdict))
}

/// One snapshot: heap and pool profiles saved, metrics returned.
fn snapshot(
    agent: &ureq::Agent,
    admin: SocketAddr,
    dir: &Path,
    n: usize,
    t: f64,
    phase: Phase,
) -> anyhow::Result<MetricsLine> {
    let heap = scrape::get_bytes(agent, admin, "/debug/pprof/heap")?;
    fs::write(dir.join(format!("heap-{n:03}.pb.gz")), heap)?;
    let pool = scrape::get_bytes(agent, admin, "/debug/pprof/pool")?;
    fs::write(dir.join(format!("pool-{n:03}.pb.gz")), pool)?;
    let text = scrape::get_text(agent, admin, "/metrics")?;
    Ok(MetricsLine {
        t,
        phase: format!("{phase:?}").to_lowercase(),
        cpu_s: None,
        scrape_cpu_s: None,
        figures: scrape::figures(&text),
    })
}

/// CPU time (user and system, every thread, those gone included) that
/// process `pid` has used, in seconds: from its CPU-time clock
/// (nanoseconds), else from `/proc/PID/stat` (utime + stime, in clock
/// ticks of 10 ms: coarser than one scrape). `None` if it is gone.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: clock_getcpuclockid writes one clockid_t through a valid
    // pointer to a local; it only looks the pid up.
    if unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) } == 0 {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes one timespec through a valid pointer
        // to a local.
        if unsafe { libc::clock_gettime(clock, &mut ts) } == 0 {
            return Some(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9);
        }
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    proc_stat_cpu_ticks(&stat).map(|ticks| {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        ticks as f64 / hz.max(1) as f64
    })
}

/// utime + stime of a `/proc/PID/stat` line, in clock ticks.
fn proc_stat_cpu_ticks(stat: &str) -> Option<u64> {
    // `pid (comm) state ppid ...`: comm may hold spaces and parentheses;
    // utime and stime are fields 14 and 15, the 12th and 13th after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Takes `holders-NNN.pb.gz`; a failure is recorded, not fatal.
fn holder_scan(agent: &ureq::Agent, admin: SocketAddr, dir: &Path, n: usize, phase: Phase) -> HolderScanRecord {
    let mut rec = HolderScanRecord {
        snapshot: n,
        phase: format!("{phase:?}").to_lowercase(),
        pause_us: None,
        scan_ms: None,
        total_ms: None,
        blocks: None,
        partial: String::new(),
    };
    let url = format!("http://{admin}/debug/pprof/holders");
    let result = agent.get(&url).call().map_err(anyhow::Error::from).and_then(|mut resp| {
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (pause, scan, total, blocks, partial) = (
            header("x-holders-pause-us"),
            header("x-holders-scan-ms"),
            header("x-holders-total-ms"),
            header("x-holders-blocks"),
            header("x-holders-partial"),
        );
        let body = resp.body_mut().with_config().limit(1 << 30).read_to_vec()?;
        Ok((body, pause, scan, total, blocks, partial))
    });
    match result {
        Ok((body, pause, scan, total, blocks, partial)) => {
            rec.pause_us = pause.and_then(|v| v.parse().ok());
            rec.scan_ms = scan.and_then(|v| v.parse().ok());
            rec.total_ms = total.and_then(|v| v.parse().ok());
            rec.blocks = blocks.and_then(|v| v.parse().ok());
            rec.partial = partial.unwrap_or_default();
            if let Err(e) = fs::write(dir.join(format!("holders-{n:03}.pb.gz")), body) {
                rec.partial = format!("cannot write the profile: {e}");
            }
        }
        Err(e) => {
            // The endpoint starts one scan a second at most (429). The
            // runner waits for it; a process under test with a longer
            // interval can still refuse.
            if matches!(e.downcast_ref::<ureq::Error>(), Some(ureq::Error::StatusCode(429))) {
                tracing::debug!(error = %e, "holder scan refused (one a second at most)");
            } else {
                tracing::warn!(error = %e, "holder scan failed");
            }
            rec.partial = format!("no profile: {e}");
        }
    }
    rec
}

fn progress_bar(plan: &RunPlan, t: Timing) -> Option<indicatif::ProgressBar> {
    if !plan.progress {
        return None;
    }
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(t.total().as_millis() as u64),
        indicatif::ProgressDrawTarget::stderr(),
    );
    let style = indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {elapsed_precise} {msg}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(format!("{} ({})", plan.info.name, plan.variant));
    Some(bar)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_come_after_the_command_name() {
        let stat = "4242 (leak lab) (x)) S 1 4242 4242 0 -1 4194304 983 0 0 0 130 27 0 0 20 0 9 0 77 0 0";
        assert_eq!(proc_stat_cpu_ticks(stat), Some(157));
        assert_eq!(proc_stat_cpu_ticks("4242 (x) S 1"), None);
        assert_eq!(proc_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn a_process_cpu_time_grows_with_its_work() {
        let pid = std::process::id();
        let before = process_cpu_seconds(pid).expect("our own CPU time");
        let mut x = 0u64;
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let after = process_cpu_seconds(pid).expect("our own CPU time");
        assert!(after > before, "{before} -> {after}");
    }

    #[test]
    fn the_tail_of_a_long_log_is_its_last_lines() {
        let dir = std::env::temp_dir().join(format!("leaklab-tail-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let log = dir.join("serve.log");
        let mut text: String = (0..200_000).map(|i| format!("line {i}\n")).collect();
        text.push_str("last, with a broken byte: \u{fffd}");
        let mut bytes = text.into_bytes();
        bytes.extend_from_slice(&[0xff, b'\n']);
        fs::write(&log, &bytes).unwrap();
        let t = tail(&log);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), TAIL_LINES);
        assert_eq!(lines[0], "line 199986");
        assert!(lines[TAIL_LINES - 1].starts_with("last, with a broken byte"), "{t}");
        fs::write(&log, "one line\n").unwrap();
        assert_eq!(tail(&log), "one line");
        assert_eq!(tail(&dir.join("absent.log")), "");
        fs::remove_dir_all(&dir).unwrap();
    }
}
