//! No child process of `leaklab run` survives it: not after a normal run,
//! not after a failed one, not after an interrupted one.
//!
//! A run's children are found in `/proc` two ways: their parent is the run,
//! or their command line names the run's own `--out` folder (every child
//! gets a ready file or a report file in it).

use std::time::{Duration, Instant};

use crate::support::{exclusive, spawn_run, spawn_run_for, wait_no_survivor, Proc};

/// How long a failed or interrupted run's children may take to go.
const GRACE: Duration = Duration::from_secs(5);

#[test]
fn normal_run_stops_its_children() {
    let _lab = exclusive();
    let mut running = spawn_run_for("steady", "leak", &[], "1s");
    let pid = running.pid();
    let out = running.out.clone();
    // Both children are there, found by parent and by folder.
    running.wait_for("a serve and a peer child", Duration::from_secs(20), |r| {
        let now = r.observe();
        ["serve", "peer"].iter().all(|sub| now.iter().any(|p| p.subcommand() == *sub))
    });
    let by_folder: Vec<Proc> = crate::support::run_processes(&out, pid).into_iter().filter(|p| p.pid != pid).collect();
    for sub in ["serve", "peer"] {
        assert!(
            by_folder.iter().any(|p| p.subcommand() == sub && p.ppid == pid),
            "the /proc scan finds the {sub} child by its folder: {by_folder:?}"
        );
    }
    let done = running.finish();
    eprintln!(
        "CHILDREN normal run: {} s, children seen {:?}",
        done.wall.as_secs_f64(),
        subcommands(&done.children_seen)
    );
    done.assert_clean();
    done.assert_run_record();
}

#[test]
fn bad_parameter_fails_before_starting_children() {
    let _lab = exclusive();
    let done = spawn_run("request-field-hold", "leak", &["payload=notasize"]).finish();
    eprintln!("CHILDREN bad parameter: {}, stderr: {}", done.status, done.stderr.trim());
    assert!(!done.status.success(), "a run with payload=notasize succeeded:\n{}", done.stdout);
    assert!(done.stderr.contains("payload") && done.stderr.contains("notasize"), "unclear message: {}", done.stderr);
    assert!(done.children_seen.is_empty(), "children were started: {:?}", done.children_seen);
    assert!(!done.out.join("serve.log").exists(), "a serve log was written");
    done.assert_no_survivor();
}

#[test]
fn serve_dying_mid_run_fails_the_run_and_stops_the_peer() {
    let _lab = exclusive();
    let mut running = spawn_run("steady", "leak", &[]);
    let out = running.out.clone();
    let pid = running.pid();
    // Into the load phase, with both children up.
    running.wait_for("the load phase", Duration::from_secs(20), |r| {
        r.metrics_so_far().iter().any(|m| m.phase.as_deref() == Some("load"))
    });
    let children = running.observe();
    let serve = children.iter().find(|p| p.subcommand() == "serve").cloned().expect("a serve child");
    assert!(children.iter().any(|p| p.subcommand() == "peer"), "a peer child: {children:?}");
    // Just after a snapshot, so that the run notices at its next check
    // rather than in the middle of a scrape.
    let lines = running.metrics_so_far().len();
    running.wait_for("the next snapshot", Duration::from_secs(5), |r| r.metrics_so_far().len() > lines);
    // SAFETY: kill(2) on the serve process this test's run started (its
    // parent is the run, checked above).
    let killed = unsafe { libc::kill(serve.pid, libc::SIGKILL) };
    assert_eq!(killed, 0, "kill {}", serve.pid);
    let killed_at = Instant::now();
    let done = running.finish();
    let exit_after = killed_at.elapsed();
    let (left, took) = wait_no_survivor(&out, pid, GRACE);
    eprintln!(
        "CHILDREN serve killed: run exited {} after {:.2} s, children gone after {:.2} s more, stderr first line: {}",
        done.status,
        exit_after.as_secs_f64(),
        took.as_secs_f64(),
        done.stderr.lines().next().unwrap_or("")
    );
    assert!(!done.status.success(), "the run succeeded although its serve died:\n{}", done.stdout);
    assert!(done.stderr.contains("process under test exited during the run"), "unclear message: {}", done.stderr);
    assert!(left.is_empty(), "processes of the run survived it: {left:?}");
}

#[test]
fn sigint_during_load_stops_the_run_and_its_children() {
    let _lab = exclusive();
    let mut running = spawn_run("steady", "leak", &[]);
    let out = running.out.clone();
    let pid = running.pid();
    running.wait_for("the load phase", Duration::from_secs(20), |r| {
        r.metrics_so_far().iter().any(|m| m.phase.as_deref() == Some("load"))
    });
    let children = running.observe();
    assert!(children.iter().any(|p| p.subcommand() == "serve"), "a serve child: {children:?}");
    // SAFETY: kill(2) on this test's own child, not reaped yet.
    let sent = unsafe { libc::kill(pid, libc::SIGINT) };
    assert_eq!(sent, 0, "kill -INT {pid}");
    let sent_at = Instant::now();
    let done = running.finish();
    let exit_after = sent_at.elapsed();
    let (left, took) = wait_no_survivor(&out, pid, GRACE);
    eprintln!(
        "CHILDREN SIGINT: run exited {} after {:.2} s, children gone after {:.2} s more, stderr: {}",
        done.status,
        exit_after.as_secs_f64(),
        took.as_secs_f64(),
        done.stderr.trim()
    );
    assert!(!done.status.success(), "an interrupted run reported success:\n{}", done.stdout);
    // A liveness bound, not a timing: the run stops its children within its
    // own stop timeouts (a few seconds each), however loaded the machine.
    assert!(exit_after < Duration::from_secs(60), "the run took {exit_after:?} to stop after SIGINT");
    assert!(done.stderr.contains("interrupted"), "unclear message: {}", done.stderr);
    assert!(left.is_empty(), "processes of the run survived it: {left:?}");
}

fn subcommands(procs: &[Proc]) -> Vec<String> {
    procs.iter().map(|p| format!("{} {}", p.pid, p.subcommand())).collect()
}
