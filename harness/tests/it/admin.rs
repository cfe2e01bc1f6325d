//! `leaklab serve`'s admin listener and budget flags, on the real binary.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{exclusive, LEAKLAB};

/// A `leaklab serve` on ephemeral loopback ports, killed when dropped.
struct Serve {
    child: Child,
    rpc: SocketAddr,
    admin: SocketAddr,
    _tmp: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(flags: &[&str]) -> Serve {
    let tmp = tempfile::Builder::new().prefix("leaklab-admin-").tempdir().expect("temp dir");
    let ready = tmp.path().join("ready.json");
    let child = Command::new(LEAKLAB)
        .args(["serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--ready-file"])
        .arg(&ready)
        .args(flags)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting leaklab serve");
    let mut serve = Serve {
        child,
        rpc: "127.0.0.1:1".parse().expect("address"),
        admin: "127.0.0.1:1".parse().expect("address"),
        _tmp: tmp,
    };
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(&ready) {
            let v: serde_json::Value = serde_json::from_str(&text).expect("ready file is JSON");
            serve.rpc = v["rpc"].as_str().expect("rpc address").parse().expect("rpc address");
            serve.admin = v["admin"].as_str().expect("admin address").parse().expect("admin address");
            return serve;
        }
        assert!(serve.child.try_wait().expect("child status").is_none(), "leaklab serve exited before listening");
        assert!(Instant::now() < until, "leaklab serve never wrote its ready file");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// GET `path` over a fresh connection; status and body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let (status, body) = get_bytes(addr, path);
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// GET `path` over a fresh connection; status and body bytes.
fn get_bytes(addr: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").expect("request");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("response");
    let status = String::from_utf8_lossy(out.get(9..12).unwrap_or_default()).parse().unwrap_or(0);
    let body = out.windows(4).position(|w| w == b"\r\n\r\n").map_or(Vec::new(), |at| out[at + 4..].to_vec());
    (status, body)
}

/// A framed Echo call of `len` bytes.
fn echo_call(len: usize) -> Vec<u8> {
    let req = rpc::codec::Request { id: 1, msg: rpc::Binary::from(vec![b'x'; len]), json: None };
    let mut call = Vec::new();
    rpc::codec::encode_call(&mut call, rpc::codec::Transport::Framed, 1, &req).expect("encode");
    call
}

#[test]
fn serve_survives_peers_that_reset_while_it_writes() {
    let _lab = exclusive();
    let mut s = serve(&[]);
    // SIGPIPE is ignored in the process under test: a vectored write to a
    // peer that reset raises it.
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.child.id())).expect("status");
    let ignored = status.lines().find_map(|l| l.strip_prefix("SigIgn:")).expect("SigIgn");
    let mask = u64::from_str_radix(ignored.trim(), 16).expect("a mask");
    assert_ne!(mask & (1 << (libc::SIGPIPE - 1)), 0, "SigIgn: {ignored}");
    // Peers that ask for a 4 MiB reply, read its first bytes (the server
    // is writing it) and reset the connection (linger 0). The server stops
    // at the first failed write, which reports the reset without SIGPIPE,
    // so this survives either disposition today; the mask above is what
    // guards against a second write to a reset peer.
    let call = echo_call(4 << 20);
    for _ in 0..16 {
        let mut c = TcpStream::connect(s.rpc).expect("connect");
        c.write_all(&call).expect("call");
        let mut first = [0u8; 64];
        c.read_exact(&mut first).expect("the reply begins");
        let linger = libc::linger { l_onoff: 1, l_linger: 0 };
        // SAFETY: setsockopt on the open socket with a valid `linger` of its size.
        let r = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&c),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0);
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(s.child.try_wait().expect("status").is_none(), "leaklab serve died");
    assert_eq!(get(s.admin, "/metrics").0, 200);
}

#[test]
fn serve_accepts_every_budget_flag_and_exports_its_refusals() {
    let _lab = exclusive();
    let s = serve(&[
        "--max-conns=100",
        "--max-input-bytes=128MiB",
        "--max-output-bytes=16MiB",
        "--write-timeout=10s",
        "--frame-timeout=off",
    ]);
    let (status, body) = get(s.admin, "/metrics");
    assert_eq!(status, 200);
    let values = diagnosis::parse_prometheus(&body);
    let names = [
        "leaklab_refused_connections_total",
        "leaklab_budget_closes_total",
        "leaklab_write_timeouts_total",
        "leaklab_output_overflows_total",
        "leaklab_frame_timeouts_total",
        "leaklab_profiler_dropped_samples_total",
        "leaklab_admin_refused_connections_total",
        "leaklab_admin_header_timeouts_total",
        "leaklab_admin_shed_requests_total",
        "leaklab_admin_slow_closes_total",
        // The names the scraper has always read are still there.
        "leaklab_requests_total",
        "leaklab_open_connections",
        "process_resident_memory_bytes",
    ];
    let missing: Vec<_> = names.iter().filter(|n| !values.contains_key(**n)).collect();
    assert!(missing.is_empty(), "missing {missing:?} in\n{body}");
    assert_eq!(get(s.admin, "/debug/pprof/pool").0, 200);
    assert!(TcpStream::connect(s.rpc).is_ok());
}

#[test]
fn serve_help_lists_the_budgets_with_their_defaults() {
    let (status, out, _) = crate::support::leaklab(&["serve", "--help"]);
    assert!(status.success());
    let shown = ["--max-conns", "--max-input-bytes", "--max-output-bytes", "--write-timeout", "--frame-timeout"]
        .iter()
        .filter(|flag| out.lines().any(|l| l.trim_start().starts_with(**flag)))
        .count();
    assert_eq!(shown, 5, "{out}");
    for default in ["[default: 10000]", "[default: 256MiB]", "[default: 64MiB]", "[default: 30s]", "[default: 60s]"] {
        assert!(out.contains(default), "{default} not in\n{out}");
    }
}

/// A figure of `/metrics`, polled until `want` holds (or 30 s pass).
fn metric_until(admin: SocketAddr, name: &str, want: impl Fn(f64) -> bool) -> f64 {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let v = diagnosis::parse_prometheus(&get(admin, "/metrics").1).get(name).copied().unwrap_or(-1.0);
        if want(v) || Instant::now() > until {
            return v;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn connections_past_max_conns_are_refused_and_counted() {
    let _lab = exclusive();
    let s = serve(&["--max-conns=2"]);
    let held: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(s.rpc).expect("connect")).collect();
    assert_eq!(metric_until(s.admin, "leaklab_open_connections", |v| v == 2.0), 2.0);
    let mut third = TcpStream::connect(s.rpc).expect("connect");
    third.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let closed = match third.read(&mut [0u8; 1]) {
        Ok(n) => n == 0,
        Err(e) => matches!(e.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted),
    };
    assert!(closed, "the third connection was kept");
    assert_eq!(metric_until(s.admin, "leaklab_refused_connections_total", |v| v == 1.0), 1.0);
    assert_eq!(metric_until(s.admin, "leaklab_open_connections", |v| v == 2.0), 2.0);
    drop(held);
}

/// Frames of the allocation machinery that no stack from the site starts
/// with, unless it has nothing else (a few of `profiler`'s `MACHINERY`).
fn machinery(function: &str) -> bool {
    ["alloc::", "<alloc::", "hashbrown::", "<hashbrown::"].iter().any(|p| function.starts_with(p))
}

/// A frame of this workspace's code: never machinery (but for its
/// formatting impls, which write into their caller's `String`).
fn own(function: &str) -> bool {
    ["rpc::", "<rpc::", "scenarios::", "<scenarios::", "leaklab::", "<leaklab::"]
        .iter()
        .any(|p| function.starts_with(p))
        && !function.contains(" as core::fmt::")
}

/// Samples whose stack starts in the machinery although it has a site
/// further up (the workspace's own code): their short stacks.
fn starting_in_the_machinery(gz: &[u8], what: &str) -> Vec<String> {
    let p = diagnosis::HeapSnapshot::decode(gz, what).expect("a heap profile");
    assert!(p.total_inuse_bytes() > 0.0, "{what}: empty");
    p.samples
        .iter()
        .filter(|s| s.frames.first().is_some_and(|f| machinery(&f.function)))
        .filter(|s| s.frames.iter().any(|f| own(&f.function)))
        .map(|s| s.frames.iter().take(8).map(|f| f.function.to_string()).collect::<Vec<_>>().join(" <- "))
        .collect()
}

#[test]
fn profiles_start_at_the_site_and_full_stacks_are_a_query_away() {
    let _lab = exclusive();
    // Every allocation recorded: the server's own Vecs and tables are there.
    let s = serve(&["--profile-rate", "1"]);
    for route in ["heap", "allocs"] {
        let (status, trimmed) = get_bytes(s.admin, &format!("/debug/pprof/{route}"));
        assert_eq!(status, 200, "{route}");
        let wrong = starting_in_the_machinery(&trimmed, route);
        assert!(wrong.is_empty(), "{route}: stacks start in the machinery:\n{}", wrong.join("\n"));
        let (status, full) = get_bytes(s.admin, &format!("/debug/pprof/{route}?full=1"));
        assert_eq!(status, 200, "{route}?full=1");
        assert!(!starting_in_the_machinery(&full, route).is_empty(), "{route}?full=1: no stack has its machinery");
        assert_eq!(get_bytes(s.admin, &format!("/debug/pprof/{route}?full=0")).0, 200);
    }
    let (status, pool) = get_bytes(s.admin, "/debug/pprof/pool?full=1");
    assert_eq!(status, 200);
    assert!(pool.starts_with(&[0x1f, 0x8b]), "not gzip");
    let (status, body) = get(s.admin, "/debug/pprof/heap?full=yes");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("full=1"), "{body}");
}

/// The figures of `/metrics` now.
fn figures(admin: SocketAddr) -> std::collections::BTreeMap<String, f64> {
    diagnosis::parse_prometheus(&get(admin, "/metrics").1)
}

#[test]
fn the_allocation_counter_grows_with_the_calls() {
    let _lab = exclusive();
    // Copy decoding allocates the message of every call.
    let s = serve(&["--decode", "copy"]);
    let before = figures(s.admin);
    let out = Command::new(LEAKLAB)
        .args(["load", "--target", &s.rpc.to_string(), "--conns", "2", "--rps", "0", "--duration", "300ms"])
        .args(["--payload", "1024", "--json"])
        .stderr(Stdio::null())
        .output()
        .expect("leaklab load");
    assert!(out.status.success(), "leaklab load failed");
    let after = figures(s.admin);
    let grown = |name: &str| after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0);
    let calls = grown("leaklab_requests_total");
    assert!(calls >= 100.0, "{calls} calls");
    let scrapes = grown("leaklab_admin_allocations_total");
    let allocations = grown("leaklab_heap_allocations_total");
    assert!(scrapes > 0.0, "the first scrape is the listener's");
    assert!(allocations - scrapes >= calls, "{allocations} allocations, {scrapes} of them the scrapes', {calls} calls");
    assert!(
        grown("leaklab_heap_allocated_bytes_total") - grown("leaklab_admin_allocated_bytes_total") >= calls * 1024.0
    );
}
