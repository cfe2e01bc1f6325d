//! A sampling heap profiler for Rust programs that writes Go-format pprof
//! heap profiles.
//!
//! [`Profiler`] wraps an allocator and is installed as the global allocator.
//! It samples allocations the way Go's runtime does, remembers the call
//! stack of each sampled block and whether it was freed, and writes what it
//! saw as the profile Go's `/debug/pprof/heap` serves, so that
//! `go tool pprof`, Parca, Pyroscope and anything else that reads Go heap
//! profiles can read it.
//!
//! # Installing
//!
//! ```
//! use profiler::Profiler;
//!
//! #[global_allocator]
//! static PROFILER: Profiler = Profiler::new();
//!
//! #[inline(never)]
//! fn cache_requests() -> Vec<Vec<u8>> {
//!     (0..64).map(|_| vec![0u8; 16 * 1024]).collect()
//! }
//!
//! // Optional: every allocation instead of one sample per 512 KiB.
//! PROFILER.set_rate(1);
//! let kept = cache_requests();
//!
//! let profile = PROFILER.heap_profile();
//! let gz: Vec<u8> = profile.encode_gzip(); // serve as /debug/pprof/heap
//! assert!(profile.total(profiler::SampleType::InuseSpace) >= 64 * 16 * 1024);
//! # drop((kept, gz));
//! ```
//!
//! Save `gz` to `heap.pb.gz` and read it with
//! `go tool pprof -top -sample_index=inuse_space heap.pb.gz`, or serve it
//! over HTTP and point `go tool pprof http://HOST/debug/pprof/heap` at it.
//! Frame pointers must be on (`-C force-frame-pointers=yes`, as this
//! workspace's `.cargo/config.toml` sets): stacks are captured by walking
//! them.
//!
//! # The rate
//!
//! The rate is the mean number of bytes allocated between two samples, like
//! Go's `runtime.MemProfileRate`:
//!
//! | rate | meaning |
//! |---|---|
//! | 524288 ([`DEFAULT_RATE`]) | one sample per 512 KiB on average: cheap enough to leave on |
//! | 1 | every allocation is recorded: exact numbers, for tests and short runs |
//! | 0 | nothing is sampled (bytes are still counted for [`Profiler::inuse_bytes`]) |
//!
//! Set it with the environment variable `LEAKLAB_PROFILE_RATE` ([`RATE_ENV`],
//! read at the first allocation), with [`Profiler::with_rate`] in the
//! `static`, or with [`Profiler::set_rate`] early in `main` (which wins).
//! `LEAKLAB_PROFILE_SEED` ([`SEED_ENV`]) or [`Profiler::set_seed`] fixes the
//! sampler's random seed so that runs are reproducible. A new rate applies
//! at once on the thread that sets it and on threads that have not
//! allocated yet; a thread already running picks it up at its next sample
//! (within 256 KiB of its allocations if the rate was 0), as Go's
//! `MemProfileRate` does.
//!
//! Each thread counts down a random, exponentially distributed number of
//! bytes; the allocation that crosses zero is sampled. So a block of `s`
//! bytes is sampled with probability `1 - exp(-s/rate)`: almost surely if
//! it is much larger than the rate, with probability about `s/rate` if
//! much smaller. `realloc` counts as a free of the old block and a new
//! allocation with its own decision.
//!
//! # What the numbers mean
//!
//! Each sample of the profile is one call stack and block size (label
//! `bytes`), with four values:
//!
//! | sample type | meaning |
//! |---|---|
//! | `alloc_objects/count` | blocks allocated from this stack since the start |
//! | `alloc_space/bytes` | their bytes |
//! | `inuse_objects/count` | of those, blocks not freed yet |
//! | `inuse_space/bytes` | their bytes: what a leak makes grow |
//!
//! Values are estimates, already scaled up from the samples with Go's
//! formula: a sampled block of `s` bytes stands for `1/(1 - exp(-s/rate))`
//! blocks. The estimate is unbiased; its relative standard error for a
//! stack holding `B` bytes is about `sqrt(rate/B)` (12% for 32 MiB at the
//! default rate, 1.6% for 2 GiB), so compare growth over time rather than
//! single small numbers. At rate 1 the numbers are exact. The period type is
//! `space/bytes` and the period is the rate. Profiles of Go's `/heap`
//! default to `inuse_space` ([`Profiler::heap_profile`]), those of
//! `/allocs` to `alloc_space` ([`Profiler::allocs_profile`]).
//!
//! # Stacks start at the site
//!
//! Go's runtime hides its own frames (`mallocgc`, `growslice`, …) at the
//! leaf of a heap profile's stacks, so the flat row of `go tool pprof -top`
//! is the function that asked for the memory. These profiles do the same
//! ([`Stacks::FromSite`], the default): each stack starts at its *site*,
//! the first frame outside the allocation machinery, that is `Vec`'s and
//! `hashbrown`'s growth, `Box::new` and `Arc::new`, `String` formatting,
//! `bytes`' buffers, a task's spawn (the list is `MACHINERY` in
//! `src/sites.rs`, the one the holder scan names blocks with). Inlined
//! frames are cut too: a location whose frames are `try_allocate_in`, …,
//! `to_vec`, `my_crate::decode` becomes a new location at the same address
//! with `my_crate::decode` only. A stack that is machinery and nothing else
//! is kept whole, as Go keeps one that is all `runtime.`.
//!
//! [`Stacks::Full`] ([`Profiler::profile`]) keeps the machinery; a full
//! profile read back can be trimmed later with [`Profile::trim_machinery`].
//! Either way the profiler's own frames and `__rust_alloc` & co. are cut.
//! Names are demangled without hash; files and lines come from the
//! binary's debug info, read when a profile is written.
//!
//! # Debug info
//!
//! | `[profile.*] debug =` | what stacks show |
//! |---|---|
//! | `"limited"` (1) or more | every frame with its full path, file and line |
//! | `"line-tables-only"` | files and lines; full paths for real functions (from the symbol table), bare names for inlined ones (`from_elem<u8>`, `read_field`) |
//! | `false` (0) | full paths of real functions only, no files or lines, no inlined frames |
//!
//! Use `"limited"` where profiles must name inlined functions with their
//! path, and where stacks must start at the site: machinery is known by
//! its path, so a bare-named inlined frame of it stays at the leaf. Functions that end in a tail call leave the stack, as in any
//! frame-pointer profiler; `#[inline(never)]` and `std::hint::black_box` on
//! the result keep a function visible when a test needs it.
//!
//! [`Profiler::inuse_bytes`] is different: an exact count of the bytes live
//! through the allocator right now, kept on every allocation, cheap to read
//! for metrics (exact but for allocations the inner allocator refuses: see
//! [`Stats::allocated_bytes`]). So is [`Profiler::allocations`], the blocks
//! ever allocated, for an allocations-per-call figure;
//! [`Profiler::thread_allocated`] tells what one thread allocated between
//! two readings (what answering a scrape cost, say).
//!
//! # Costs and limits
//!
//! Measured with `cargo run --release -p profiler --example overhead` (one
//! thread, 64-byte blocks, on the shared 2-core machine this was written
//! on, busy with other work; each figure the median of three runs of
//! medians over 31 rounds that alternate the columns, ratios to `System`
//! in the same round):
//!
//! | | ns per alloc + free | × `System` |
//! |---|---|---|
//! | `System` alone | 7.9 | 1 |
//! | `System` behind a call (what any global allocator adds) | 8.8 | 1.11 |
//! | the hook's `GlobalAlloc` methods, rate 0 (counting only) | 8.8 | 1.12 |
//! | the same, default rate (512 KiB) | 8.9 | 1.13 |
//! | through `std::alloc`, rate 0 | 9.8 | 1.24 |
//! | through `std::alloc`, default rate | 9.9 | 1.25 |
//! | through `std::alloc`, rate 1 (every block sampled: stack walk and table updates) | 101 | 12.8 |
//!
//! `std::alloc::alloc`, which `Box` and `Vec` call, adds a call of its own
//! to every allocation whatever the global allocator (Rust 1.95), and
//! inlines the global allocator's method; the `System` rows call
//! `System`'s methods directly, as the hook rows call the profiler's.
//!
//! - An allocation that is not sampled costs one compare, one add and one
//!   increment on the thread's own line of counts, with no atomic
//!   read-modify-write: the countdown to the next sample and the count of
//!   bytes are the same number, and the count of blocks is on the same
//!   cache line. The thread finds its line with one thread-local load of
//!   the line's offset. A free costs one load (whether the line is open to
//!   frees: no block recorded since the thread's last free found none) and
//!   an add on that line; else two loads, a multiply and one load more: a
//!   counting filter in front of the set of sampled blocks rejects almost
//!   every block that was not sampled (with 2000 sampled blocks live, a 1
//!   GiB heap at the default rate, a free costs the same; with 100 000,
//!   about 4 ns more). In all about 20 instructions per pair, all of
//!   them on lines the thread already has in its cache (a record closes
//!   the lines open to frees: one store to each, per record that follows
//!   an opening).
//! - The countdown and the counts are kept per thread and per profiler for
//!   up to 255 threads at once (a thread gives its slot back when it
//!   exits); further threads count with shared atomic adds and take the
//!   slow path at every allocation.
//! - A sampled allocation walks up to 64 frames and updates lock-free
//!   tables. The hook never allocates, never blocks (no lock at all: slots
//!   are claimed with compare-and-swap) and never re-enters itself;
//!   allocations that the profiler makes while writing a profile are
//!   counted but not sampled.
//! - Tables have fixed capacities (32768 stacks, 131072 stack/size pairs,
//!   1048576 live sampled blocks); a sample that does not fit is dropped and
//!   counted in [`Stats::dropped_samples`]. They live in about 36 MiB of
//!   address space mapped at the first sample, resident only where touched.
//! - Symbols are looked up only when a profile is written, and cached: the
//!   first profile of a process loads the debug info (about 10 ms for a
//!   small binary), later ones take well under a millisecond for a few
//!   hundred stacks. The symbol cache counts in [`Profiler::inuse_bytes`].
//! - The sampler's random generator is per thread, shared by all
//!   `Profiler` values of a process; only one is normally live, the global
//!   allocator.
//! - Linux on x86_64 and aarch64 (tested on x86_64 with glibc). Elsewhere stacks are
//!   empty. Code running on a stack that is not its thread's own
//!   (coroutines with their own stacks) gets empty stacks too.
//!
//! # Tests that prove it
//!
//! `tests/` holds one file per heap test, each with its own
//! `#[global_allocator]`: sampled and exact accuracy, eight threads with
//! concurrent snapshots, no allocation in the hook (a counting allocator
//! underneath), the profile format, and `go tool pprof` reading a profile.

// Collecting: the allocator hook, the byte counts and the tables it
// writes. Only `Profiler`'s profile methods call into encoding; the hook
// never does.
mod counts;
mod profiler;
mod sampler;
mod stack;
mod table;

// What collecting hands over: plain data.
mod snapshot;

// Encoding: snapshots and named chains to Go-format profiles; what counts
// as allocation machinery, which stacks start after (and the holder scan
// names blocks after).
mod encode;
mod maps;
mod sites;
mod symbolize;

// The profile type, and reading it back.
mod decode;
mod profile;

// Who holds the memory: a scan of the live blocks the profiler indexed.
mod holders;
mod threads;

pub use crate::decode::{DecodeError, MAX_DECODE_BYTES, MAX_DECODE_ELEMENTS};
pub use crate::encode::{NamedSample, Stacks};
pub use crate::holders::{HolderError, HolderOptions, HolderScan, ScanStats};
pub use crate::profile::{Profile, SampleType};
pub use crate::profiler::{Allocated, Profiler, Stats, DEFAULT_RATE, RATE_ENV, SEED_ENV};
pub use crate::snapshot::{HeapRecord, Snapshot};

/// Runs `f` with its allocations on this thread made on the profiler's
/// behalf: counted, never sampled, and in holder mode never a holder (a
/// holder scan does not read them). For what a program does only to serve
/// a profile, such as the task that runs a holder scan: its memory can keep
/// a stale address of a program block, which the scan would otherwise
/// report as a holder.
pub fn as_own<R>(f: impl FnOnce() -> R) -> R {
    let _own = crate::sampler::InProfiler::enter();
    f()
}

/// The profile.proto messages (`protos::Profile`, …) and the prost
/// `Message` trait to encode and decode them.
pub use pprof::protos;
