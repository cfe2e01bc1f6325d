//! The engine on synthetic runs: each case is a sequence of heap profiles
//! (stacks with in-use bytes) and metrics, and the verdict it must give.
//! Stacks use Go names (Kitex, Netpoll) as well as the Rust workspace's, so
//! that the engine is checked on processes it was not built with.

use std::collections::BTreeMap;

use diagnosis::{diagnose, rss_trend, HeapSnapshot, MetricsLine, Options, RunInput};

use crate::support::heap_profile;

const MIB: i64 = 1 << 20;

/// One snapshot: (stack leaf first, in-use bytes, block size) per sample.
type Snap = Vec<(&'static [&'static str], i64, i64)>;

struct Case {
    name: &'static str,
    snaps: Vec<Snap>,
    /// Metrics per snapshot: (requests, open_conns, opened_conns, clients_created).
    work: Option<Vec<(f64, f64, f64, f64)>>,
    /// Snapshots from this index on are after the load (drain/settle).
    after_from: Option<usize>,
    expect: &'static str,
    site_contains: &'static str,
}

fn input(c: &Case) -> RunInput {
    let heaps: Vec<HeapSnapshot> = c
        .snaps
        .iter()
        .enumerate()
        .map(|(i, s)| HeapSnapshot::decode(&heap_profile(s), format!("{}/heap-{i:03}.pb.gz", c.name)).unwrap())
        .collect();
    let metrics: Vec<MetricsLine> = (0..c.snaps.len())
        .map(|i| {
            let mut values = BTreeMap::new();
            if let Some(w) = &c.work {
                let (r, open, opened, clients) = w[i];
                values.insert("requests".into(), r);
                values.insert("open_conns".into(), open);
                values.insert("opened_conns".into(), opened);
                values.insert("clients_created".into(), clients);
            }
            let phase = match c.after_from {
                Some(a) if i >= a => "settle",
                _ => "load",
            };
            MetricsLine { t: i as f64 * 0.5, phase: Some(phase.into()), values, text: BTreeMap::new() }
        })
        .collect();
    RunInput::from_parts(heaps, Vec::new(), metrics)
}

fn check(c: Case) {
    let v = diagnose(&input(&c), &Options { pprof_only: true, ..Options::default() });
    assert_eq!(v.kind, c.expect, "{}: {}\n{:#?}", c.name, v.summary, v.findings);
    assert_eq!(v.leak, c.expect != "none", "{}", c.name);
    if c.expect != "none" {
        let site = &v.findings[0].site;
        assert!(site.contains(c.site_contains), "{}: site {site}", c.name);
        assert!(!v.findings[0].remedy.is_empty() && !v.findings[0].evidence.is_empty());
    }
}

/// `n` snapshots where `stack` holds `f(i)` bytes in blocks of `size`, over
/// a steady background.
fn series(n: usize, stack: &'static [&'static str], size: i64, f: impl Fn(usize) -> i64) -> Vec<Snap> {
    const BACKGROUND: &[&str] = &["runtime.malg", "runtime.newproc1"];
    (0..n).map(|i| vec![(BACKGROUND, 8 * MIB, 8192), (stack, f(i), size)]).collect()
}

fn steady_work(n: usize) -> Vec<(f64, f64, f64, f64)> {
    (0..n).map(|i| (i as f64 * 200.0, 4.0, 4.0, 0.0)).collect()
}

const GO_FIELD: &[&str] = &[
    "runtime.mallocgc",
    "runtime.makeslice",
    "github.com/cloudwego/kitex/pkg/protocol/bthrift.binaryProtocol.ReadBinary",
    "example/kitex_gen/echo.(*Request).FastReadField2",
    "example/kitex_gen/echo.(*Request).FastRead",
    "github.com/cloudwego/kitex/pkg/remote/codec/thrift.(*thriftCodec).Unmarshal",
];

const RUST_RESPONSE_FIELD: &[&str] = &[
    "alloc::raw_vec::RawVecInner<A>::try_allocate_in",
    "rpc::codec::binary::Reader::read_binary_copy",
    "rpc::codec::echo::Response::read_field_2",
    "rpc::codec::echo::Response::decode",
    "rpc::client::Client::call_addr",
];

/// A Kitex client decoding a reply over Netpoll: no caller frame (the
/// poller's goroutine reads), the held field's struct named as its IDL
/// names it, under the generated result wrapper.
const GO_RESPONSE_FIELD: &[&str] = &[
    "runtime.mallocgc",
    "github.com/cloudwego/kitex/pkg/protocol/bthrift.binaryProtocol.ReadBinary",
    "example/kitex_gen/user.(*GetUserResp).FastReadField2",
    "example/kitex_gen/user.(*GetUserResp).FastRead",
    "example/kitex_gen/user.(*UserServiceGetUserResult).FastReadField0",
    "example/kitex_gen/user.(*UserServiceGetUserResult).FastRead",
    "github.com/cloudwego/kitex/pkg/remote/codec/thrift.(*thriftCodec).Unmarshal",
];

const GO_LBCACHE: &[&str] = &[
    "runtime.mallocgc",
    "fmt.Sprintf",
    "github.com/cloudwego/kitex/pkg/loadbalance/lbcache.(*Balancer).rebalance",
    "github.com/cloudwego/kitex/pkg/loadbalance/lbcache.(*BalancerFactory).refresh",
];

const READ_PATH: &[&str] = &[
    "rpc::pool::RawChunk::alloc",
    "rpc::pool::Pool::grow",
    "rpc::pool::Pool::lease",
    "rpc::linkbuf::InputBuffer::new_node",
    "rpc::linkbuf::InputBuffer::book",
];

const GO_READ_PATH: &[&str] = &[
    "runtime.mallocgc",
    "github.com/bytedance/gopkg/lang/mcache.Malloc",
    "github.com/cloudwego/netpoll.newLinkBufferNode",
    "github.com/cloudwego/netpoll.(*LinkBuffer).book",
    "github.com/cloudwego/netpoll.(*connection).inputs",
];

const CONN_SETUP: &[&str] =
    &["rpc::pool::RawChunk::alloc", "rpc::pool::Pool::lease", "rpc::linkbuf::InputBuffer::new", "rpc::server::accept"];

const GO_CONN_SETUP: &[&str] = &[
    "runtime.mallocgc",
    "github.com/bytedance/gopkg/lang/mcache.Malloc",
    "github.com/cloudwego/netpoll.newLinkBufferNode",
    "github.com/cloudwego/netpoll.NewLinkBuffer",
    "github.com/cloudwego/netpoll.(*connection).init",
    "github.com/cloudwego/netpoll.(*netpoll).handler",
];

const UNKNOWN: &[&str] = &["runtime.mallocgc", "main.(*sessionStore).remember", "main.handle"];

const JSON_PARSE: &[&str] =
    &["runtime.mallocgc", "github.com/bytedance/sonic/decoder.(*Decoder).Decode", "main.handle"];

const GO_FIELD_3: &[&str] = &[
    "runtime.mallocgc",
    "runtime.slicebytetostring",
    "example/kitex_gen/echo.(*Request).FastReadField3",
    "example/kitex_gen/echo.(*Request).FastRead",
];

#[test]
fn the_engine_names_each_case() {
    let n = 14;
    let cases = vec![
        Case {
            name: "a Go request field held",
            snaps: series(n, GO_FIELD, 16384, |i| i as i64 * 3 * MIB),
            work: Some(steady_work(n)),
            after_from: None,
            expect: "request-field-held",
            site_contains: "FastReadField2",
        },
        Case {
            name: "a Rust response field held, kept after the load",
            snaps: series(n, RUST_RESPONSE_FIELD, 16384, |i| i.min(10) as i64 * 3 * MIB),
            work: Some((0..n).map(|i| (i.min(10) as f64 * 200.0, 0.0, 4.0, 1.0)).collect()),
            after_from: Some(11),
            expect: "response-field-held",
            site_contains: "Response::read_field_2",
        },
        Case {
            name: "a Go response field held, its struct named GetUserResp",
            snaps: series(n, GO_RESPONSE_FIELD, 16384, |i| i.min(10) as i64 * 3 * MIB),
            work: Some((0..n).map(|i| (i.min(10) as f64 * 200.0, 0.0, 4.0, 1.0)).collect()),
            after_from: Some(11),
            expect: "response-field-held",
            site_contains: "(*GetUserResp).FastReadField2",
        },
        Case {
            name: "duplicate clients in Go",
            snaps: series(n, GO_LBCACHE, 512, |i| i as i64 * 2 * MIB),
            work: Some((0..n).map(|i| (i as f64 * 50.0, 0.0, 0.0, i as f64 * 50.0)).collect()),
            after_from: None,
            expect: "duplicate-clients",
            site_contains: "rebalance",
        },
        Case {
            name: "a surge-shaped read path, kept after the connections closed",
            snaps: series(n, READ_PATH, 262144, |i| (i.min(10) / 3) as i64 * 8 * MIB),
            work: Some(
                (0..n)
                    .map(|i| {
                        let surges = (i.min(10) / 3) as f64;
                        (i.min(10) as f64 * 50.0, 2.0, 2.0 + surges * (surges + 1.0) * 8.0, 0.0)
                    })
                    .collect(),
            ),
            after_from: Some(11),
            expect: "connection-surge-barriers",
            site_contains: "InputBuffer::new_node",
        },
        Case {
            name: "idle connections in Go",
            snaps: series(n, GO_CONN_SETUP, 8192, |i| i as i64 * 150 * 8192),
            work: Some(
                (0..n).map(|i| (i as f64 * 25.0, 2.0 + i as f64 * 150.0, 2.0 + i as f64 * 150.0, 0.0)).collect(),
            ),
            after_from: None,
            expect: "idle-connection-buffers",
            site_contains: "(*connection).init",
        },
        Case {
            name: "idle connections in Rust",
            snaps: series(n, CONN_SETUP, 8192, |i| i as i64 * 150 * 8192),
            work: Some(
                (0..n).map(|i| (i as f64 * 25.0, 2.0 + i as f64 * 150.0, 2.0 + i as f64 * 150.0, 0.0)).collect(),
            ),
            after_from: None,
            expect: "idle-connection-buffers",
            site_contains: "InputBuffer::new",
        },
        Case {
            name: "rare 8 MiB requests on open connections (Netpoll names)",
            snaps: series(n, GO_READ_PATH, 8 * MIB, |i| (i.min(8) / 2) as i64 * 8 * MIB),
            work: Some(steady_work(n)),
            after_from: None,
            expect: "oversized-request",
            site_contains: "LinkBuffer).book",
        },
        Case {
            name: "a string field held while the process parses JSON",
            snaps: (0..n)
                .map(|i| vec![(GO_FIELD_3, i as i64 * 3 * MIB, 32768), (JSON_PARSE, 2 * MIB + i as i64 * 1024, 4096)])
                .collect(),
            work: Some(steady_work(n)),
            after_from: None,
            expect: "zero-copy-string-held",
            site_contains: "FastReadField3",
        },
        Case {
            name: "steady growth nobody documents",
            snaps: series(n, UNKNOWN, 4096, |i| i as i64 * 2 * MIB),
            work: Some(steady_work(n)),
            after_from: None,
            expect: "unknown",
            site_contains: "sessionStore",
        },
        Case {
            name: "no metrics at all: a Go field still found",
            snaps: series(n, GO_FIELD, 16384, |i| i as i64 * 3 * MIB),
            work: None,
            after_from: None,
            expect: "request-field-held",
            site_contains: "FastReadField2",
        },
        Case {
            name: "flat",
            snaps: series(n, GO_FIELD, 16384, |i| 4 * MIB + (i % 2) as i64 * 65536),
            work: Some(steady_work(n)),
            after_from: None,
            expect: "none",
            site_contains: "",
        },
        Case {
            name: "a capped cache of fields levels off",
            snaps: series(n, GO_FIELD, 16384, |i| i.min(4) as i64 * 6 * MIB),
            work: Some(steady_work(n)),
            after_from: None,
            expect: "none",
            site_contains: "",
        },
        Case {
            name: "a field kept by bookkeeping only: 60 bytes a request",
            snaps: series(n, GO_FIELD, 64, |i| i as i64 * 60 * 20_000),
            work: Some((0..n).map(|i| (i as f64 * 20_000.0, 4.0, 4.0, 0.0)).collect()),
            after_from: None,
            expect: "none",
            site_contains: "",
        },
        Case {
            name: "idle connections bounded by a timeout: the number open levels off",
            snaps: series(n, CONN_SETUP, 8192, |i| i.min(3) as i64 * 50 * 8192 + (i % 2) as i64 * 65536),
            work: Some(
                (0..n).map(|i| (i as f64 * 25.0, 2.0 + i.min(3) as f64 * 50.0, 2.0 + i as f64 * 50.0, 0.0)).collect(),
            ),
            after_from: None,
            expect: "none",
            site_contains: "",
        },
        Case {
            name: "a warm-up that the load gives back",
            snaps: series(n, READ_PATH, 262144, |i| if (3..8).contains(&i) { 20 * MIB } else { 0 }),
            work: Some(
                (0..n)
                    .map(|i| (i as f64 * 100.0, if (3..8).contains(&i) { 40.0 } else { 4.0 }, 4.0 + i as f64, 0.0))
                    .collect(),
            ),
            after_from: Some(10),
            expect: "none",
            site_contains: "",
        },
    ];
    for c in cases {
        check(c);
    }
}

#[test]
fn too_few_snapshots_are_no_verdict_of_leak() {
    let c = Case {
        name: "two snapshots",
        snaps: series(2, GO_FIELD, 16384, |i| i as i64 * 100 * MIB),
        work: None,
        after_from: None,
        expect: "none",
        site_contains: "",
    };
    let v = diagnose(&input(&c), &Options::default());
    assert!(!v.leak);
    assert!(v.summary.contains("at least 3"), "{}", v.summary);
    // Four flat snapshots: read, but too few for a trend test, and the
    // summary says so; with five it does not.
    for (n, short) in [(4, true), (5, false)] {
        let c = Case {
            name: "flat",
            snaps: series(n, GO_FIELD, 16384, |_| 10 * MIB),
            work: None,
            after_from: None,
            expect: "none",
            site_contains: "",
        };
        let v = diagnose(&input(&c), &Options::default());
        assert!(!v.leak, "{n}: {}", v.summary);
        assert_eq!(v.summary.contains("too few for a trend test"), short, "{n}: {}", v.summary);
    }
}

#[test]
fn the_rss_baseline_sees_growth_but_names_no_kind() {
    let n = 12;
    let metrics = |grow: f64| -> Vec<MetricsLine> {
        (0..n)
            .map(|i| {
                let mut values = BTreeMap::new();
                values.insert("rss_bytes".into(), 100e6 + grow * i as f64 + ((i * 7) % 3) as f64 * 1e4);
                MetricsLine { t: i as f64 * 0.5, phase: Some("load".into()), values, text: BTreeMap::new() }
            })
            .collect()
    };
    let growing = RunInput::from_parts(Vec::new(), Vec::new(), metrics(2e6));
    let v = rss_trend(&growing, 1e6);
    assert!(v.leak);
    assert_eq!(v.kind, "unknown");
    let flat = RunInput::from_parts(Vec::new(), Vec::new(), metrics(0.0));
    assert!(!rss_trend(&flat, 1e6).leak);
    // Five readings rising steadily are too few for p < 0.01: the verdict
    // says why instead of "no trend".
    let mut short = metrics(2e6);
    short.truncate(5);
    let v = rss_trend(&RunInput::from_parts(Vec::new(), Vec::new(), short), 1e6);
    assert!(!v.leak);
    assert!(v.summary.contains("needs at least 6"), "{}", v.summary);
}
