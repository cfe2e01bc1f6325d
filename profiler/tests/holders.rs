//! The holder scan on heaps built here: who holds each block, read back from
//! the profile the way `go tool pprof` would.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use profiler::{HolderOptions, Profiler, SampleType};

#[global_allocator]
static PROFILER: Profiler = Profiler::new();

/// Boxes on the chain, and the bytes each holds.
const HOLDERS: i64 = 8;
const HELD: usize = 100_000;

/// static → Vec → Box → block.
#[allow(clippy::vec_box)] // the Box is the point: one more block on the chain
static CHAIN: Mutex<Vec<Box<Holder>>> = Mutex::new(Vec::new());
/// An interior pointer (as a one-byte slice keeps its whole buffer).
static INTERIOR: AtomicUsize = AtomicUsize::new(0);
/// A box made on the profiler's behalf ([`profiler::as_own`]).
static OWN_HOLDER: Mutex<Option<Box<Holder>>> = Mutex::new(None);
/// Two blocks that point at each other, reached from here.
static CYCLE: Mutex<Option<Arc<Mutex<SyncLink>>>> = Mutex::new(None);

#[allow(dead_code)] // the fields exist to be held
struct Holder {
    held: Box<[u8]>,
}

#[allow(dead_code)] // the fields exist to be held
struct Link {
    payload: Box<[u8]>,
    next: Option<Rc<RefCell<Link>>>,
}

#[allow(dead_code)] // the fields exist to be held
struct SyncLink {
    payload: Box<[u8]>,
    next: Option<Arc<Mutex<SyncLink>>>,
}

#[inline(never)]
fn held_block(n: usize) -> Box<[u8]> {
    std::hint::black_box(vec![1u8; n].into_boxed_slice())
}

#[inline(never)]
fn build_chain() {
    let mut v = CHAIN.lock().unwrap();
    for _ in 0..HOLDERS {
        v.push(Box::new(Holder { held: held_block(HELD) }));
    }
}

#[inline(never)]
fn interior_block() -> Box<[u8]> {
    std::hint::black_box(vec![2u8; 50_000].into_boxed_slice())
}

#[inline(never)]
fn cycle_payload(n: usize) -> Box<[u8]> {
    std::hint::black_box(vec![3u8; n].into_boxed_slice())
}

#[inline(never)]
fn link(payload: Box<[u8]>) -> Rc<RefCell<Link>> {
    Rc::new(RefCell::new(Link { payload, next: None }))
}

#[inline(never)]
fn sync_link(payload: Box<[u8]>) -> Arc<Mutex<SyncLink>> {
    Arc::new(Mutex::new(SyncLink { payload, next: None }))
}

#[inline(never)]
fn stack_only_block() -> Box<[u8]> {
    std::hint::black_box(vec![4u8; 70_000].into_boxed_slice())
}

#[inline(never)]
fn lost_block() -> Box<[u8]> {
    std::hint::black_box(vec![5u8; 30_000].into_boxed_slice())
}

#[inline(never)]
fn orphan_cycle_payload() -> Box<[u8]> {
    std::hint::black_box(vec![6u8; 40_000].into_boxed_slice())
}

#[inline(never)]
fn owned_path_block() -> Box<[u8]> {
    std::hint::black_box(vec![8u8; 60_000].into_boxed_slice())
}

/// A box made on the profiler's behalf that holds a program's block.
#[inline(never)]
fn own_holder(held: Box<[u8]>) -> Box<Holder> {
    profiler::as_own(|| std::hint::black_box(Box::new(Holder { held })))
}

#[inline(never)]
fn freed_block() -> Box<[u8]> {
    std::hint::black_box(vec![7u8; 90_000].into_boxed_slice())
}

/// (stack names leaf first, inuse bytes) of every sample.
fn samples(p: &profiler::Profile) -> Vec<(Vec<String>, i64)> {
    let proto = p.proto();
    let col = SampleType::InuseSpace.index();
    let name = |loc_id: u64| {
        let loc = proto.location.iter().find(|l| l.id == loc_id).unwrap();
        let f = proto.function.iter().find(|f| f.id == loc.line[0].function_id).unwrap();
        proto.string_table[f.name as usize].clone()
    };
    proto.sample.iter().map(|s| (s.location_id.iter().map(|&l| name(l)).collect(), s.value[col])).collect()
}

fn bytes_where(all: &[(Vec<String>, i64)], leaf: &str, pred: impl Fn(&[String]) -> bool) -> i64 {
    all.iter().filter(|(st, _)| st[0].ends_with(leaf) && pred(st)).map(|(_, b)| *b).sum()
}

#[test]
fn who_holds_each_block() {
    PROFILER.set_holder_mode(true);

    build_chain();

    let interior = interior_block();
    INTERIOR.store(interior.as_ptr() as usize + 1234, Ordering::SeqCst);
    // A static that is only written may be optimised away: let it escape.
    std::hint::black_box(&INTERIOR);
    std::mem::forget(interior);

    let a = sync_link(cycle_payload(20_000));
    let b = sync_link(cycle_payload(20_000));
    a.lock().unwrap().next = Some(b.clone());
    b.lock().unwrap().next = Some(a.clone());
    *CYCLE.lock().unwrap() = Some(a);
    drop(b);

    // A block only a parked thread's stack holds.
    let (ready_tx, ready_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let parked = std::thread::Builder::new()
        .name("parked".into())
        .spawn(move || {
            let mine = stack_only_block();
            std::hint::black_box(&mine);
            ready_tx.send(()).unwrap();
            let _ = done_rx.recv();
            drop(mine);
        })
        .unwrap();
    ready_rx.recv().unwrap();

    // Unreachable: a forgotten box and an Rc cycle whose handles died with
    // the thread that made them.
    let gone = std::thread::spawn(|| {
        std::mem::forget(lost_block());
        let x = link(orphan_cycle_payload());
        let y = link(orphan_cycle_payload());
        x.borrow_mut().next = Some(y.clone());
        y.borrow_mut().next = Some(x);
        drop(y);
        // SAFETY: gettid takes no argument and cannot fail.
        unsafe { libc::syscall(libc::SYS_gettid) }
    })
    .join()
    .unwrap();
    // The kernel removes an exited thread's /proc entry just after a join
    // can return; until then the scan would count it among the live ones.
    let entry = format!("/proc/self/task/{gone}");
    for _ in 0..2000 {
        if !std::path::Path::new(&entry).exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert!(!std::path::Path::new(&entry).exists(), "thread {gone} still listed");

    *OWN_HOLDER.lock().unwrap() = Some(own_holder(owned_path_block()));

    drop(freed_block());

    let scan = PROFILER.holders_profile(&HolderOptions::default()).expect("scan");
    done_tx.send(()).unwrap();
    parked.join().unwrap();

    let s = &scan.stats;
    assert!(s.partial.is_empty(), "{:?}", s.partial);
    let all = samples(&scan.profile);
    assert!(s.blocks > 10 && s.reached > 0 && s.unreachable >= 3, "{s:?} {all:#?}");
    let has = |st: &[String], needle: &str| st.iter().any(|f| f.contains(needle));

    // static → Vec → Box → held block, named by sites.
    let chained = bytes_where(&all, "held_block", |st| {
        has(st, "static holders::CHAIN")
            && has(st, "Vec in holders::build_chain")
            && has(st, "Box in holders::build_chain")
    });
    held_along(&all, chained);

    // An interior pointer holds its whole block.
    assert_eq!(bytes_where(&all, "interior_block", |st| has(st, "static holders::INTERIOR")), 50_000, "{all:#?}");

    // A cycle reached from a static: both payloads reached, at least the
    // first under the static (the second may be credited to a stale copy
    // of its handle on this thread's stack, a shorter chain).
    assert!(bytes_where(&all, "cycle_payload", |st| has(st, "static holders::CYCLE")) >= 20_000, "{all:#?}");
    assert_eq!(bytes_where(&all, "cycle_payload", |st| !has(st, "$unreachable$")), 40_000, "{all:#?}");

    // A parked thread's stack.
    assert_eq!(bytes_where(&all, "stack_only_block", |st| has(st, "thread parked")), 70_000, "{all:#?}");

    // Unreachable ones sit under their own root, not lost.
    let unreachable = |leaf: &str| bytes_where(&all, leaf, |st| st.last().is_some_and(|r| r == "$unreachable$"));
    assert_eq!(unreachable("lost_block"), 30_000, "{all:#?}");
    assert_eq!(unreachable("orphan_cycle_payload"), 80_000, "{all:#?}");

    // A box made on the profiler's behalf is no holder and no held block:
    // the program's block it holds is in the profile, under some other root
    // (a stale copy on this thread's stack, or none), never through it.
    assert_eq!(bytes_where(&all, "owned_path_block", |_| true), 60_000, "{all:#?}");
    assert_eq!(bytes_where(&all, "owned_path_block", |st| has(st, "own_holder")), 0, "{all:#?}");
    assert_eq!(bytes_where(&all, "own_holder", |_| true), 0, "{all:#?}");

    // A freed block is not reported at all.
    assert_eq!(bytes_where(&all, "freed_block", |_| true), 0);

    // The comments say what the scan did.
    let proto = scan.profile.proto();
    let comments: Vec<&str> = proto.comment.iter().map(|&i| proto.string_table[i as usize].as_str()).collect();
    assert!(comments.iter().any(|c| c.starts_with("holders: ")), "{comments:?}");

    // Readable by pprof tools: it round-trips through the encoder.
    let back = profiler::Profile::decode(&scan.profile.encode_gzip()).unwrap();
    assert_eq!(back.total(SampleType::InuseSpace), scan.profile.total(SampleType::InuseSpace));

    budgets_give_partial_profiles_that_say_so();
}

fn comments(p: &profiler::Profile) -> Vec<String> {
    let proto = p.proto();
    proto.comment.iter().map(|&i| proto.string_table[i as usize].clone()).collect()
}

/// Out of time, out of scratch memory, or deeper than the hop limit: still a
/// profile, which says what it is missing.
fn budgets_give_partial_profiles_that_say_so() {
    let hurried = PROFILER
        .holders_profile(&HolderOptions { time_budget: std::time::Duration::ZERO, ..HolderOptions::default() })
        .expect("a partial scan");
    assert!(hurried.stats.partial.iter().any(|p| p.contains("time budget")), "{:?}", hurried.stats);
    assert!(hurried.stats.unscanned > 0, "{:?}", hurried.stats);
    let all = samples(&hurried.profile);
    assert!(all.iter().any(|(st, _)| st.last().is_some_and(|r| r == "$unscanned$")), "{all:#?}");
    assert!(comments(&hurried.profile).iter().any(|c| c.starts_with("partial: ") && c.contains("time budget")));

    let tight = PROFILER
        .holders_profile(&HolderOptions { memory_budget: 0, ..HolderOptions::default() })
        .expect("a partial scan");
    assert!(tight.stats.partial.iter().any(|p| p.contains("scratch memory")), "{:?}", tight.stats);
    assert!(comments(&tight.profile).iter().any(|c| c.contains("nothing was scanned")));

    let shallow = PROFILER.holders_profile(&HolderOptions { max_hops: 1, ..HolderOptions::default() }).expect("a scan");
    assert!(shallow.stats.partial.iter().any(|p| p.contains("$sub_objects$")), "{:?}", shallow.stats);
    let all = samples(&shallow.profile);
    // static CHAIN -> Vec -> Box -> held: the Box is past one hop.
    let cut = bytes_where(&all, "held_block", |st| {
        st.iter().any(|f| f == "$sub_objects$") && st.len() == 4 && st.iter().any(|f| f == "static holders::CHAIN")
    });
    held_along(&all, cut);
}

/// The held blocks: `along` bytes of them on the structure's chain, every
/// one of them reached, and the others, if any, credited to a stale word on
/// a thread's stack.
///
/// A conservative scan takes every word that falls in a block for an edge,
/// and the breadth-first search credits a block to its shortest chain. A
/// dead slot in a live frame, or the spare capacity of a block allocated on
/// a stack, can point at a block the allocator gave out again: under load,
/// one box in about two runs was credited to a slot of the main thread's
/// stack (the harness's), once a held block to a buffer on the test's own.
/// That is what the scan is (`holders` module, "False references"), so the
/// test allows it for a quarter of the blocks and names where it must come
/// from; every other block must be named along the full chain.
fn held_along(all: &[(Vec<String>, i64)], along: i64) {
    let every = HOLDERS * HELD as i64;
    assert!(along >= every * 3 / 4, "{along} of {every} bytes along the chain: {all:#?}");
    let stale = bytes_where(all, "held_block", |st| {
        st.last().is_some_and(|r| r.starts_with("thread ") && r.ends_with(" stack"))
            && !st.iter().any(|f| f.contains("holders::CHAIN"))
    });
    assert_eq!(along + stale, every, "{all:#?}");
}
