//! The allocator every `leaklab` process runs on: the sampling heap
//! profiler, over the system allocator (or DHAT's, with `--features dhat`).

#[cfg(not(feature = "dhat"))]
type InnerAlloc = std::alloc::System;
#[cfg(feature = "dhat")]
type InnerAlloc = dhat::Alloc;

/// The allocator every `leaklab` process runs on.
pub type GlobalProfiler = profiler::Profiler<InnerAlloc>;

/// The heap profiler, sampling every allocation of the process (rate from
/// `--profile-rate` or `LEAKLAB_PROFILE_RATE`, default 512 KiB).
#[global_allocator]
pub static PROFILER: GlobalProfiler = profiler::Profiler::with_allocator(InnerAlloc {});
