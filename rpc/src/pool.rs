//! The size-class buffer pool: Netpoll's `mcache`, with reference-counted
//! slices.
//!
//! Requests are rounded up to a power of two; each class keeps cached chunks
//! of exactly that size. Sizes above [`PoolConfig::max_pooled`] (8 MiB by
//! default, as in Netpoll) are plain allocations that are never cached.
//!
//! # Caches
//!
//! Go's `sync.Pool` gives each P a private cache and a shared list, and
//! empties itself over GC cycles: at each GC it moves its contents to a
//! "victim" cache and drops the previous victims, so an object not reused
//! within two cycles is freed. This pool does the same:
//!
//! ```text
//!   thread caches   [slot 0: class -> up to 4 chunks] [slot 1] ... [slot n-1]
//!        | full / empty           ^ each live thread owns one slot
//!        v                        |
//!   class lists     free (given back since the last cycle) | victim (survivors)
//! ```
//!
//! - **Thread caches.** Each thread leases from and gives back to a small
//!   cache of its own: slot `i` of every pool belongs to the live thread
//!   that holds slot number `i` (4 threads per core get one, 16 to 64; the
//!   rest use the class lists). Its owner takes it with two plain stores and
//!   a load, no atomic read-modify-write and no lock shared with other
//!   threads; `gc`, `trim` and `stats` still reach it, paying for a barrier
//!   on their side (`membarrier` on Linux). A chunk given back on another
//!   thread than the one that leased it goes to that thread's cache.
//! - **Class lists.** Behind the thread caches, one list per class under a
//!   mutex, used when a thread cache is empty and filled when it is full.
//! - **GC cycles** ([`Pool::gc`], run every [`PoolConfig::release_after`] by
//!   a background thread): every thread cache is emptied into the class
//!   lists, each list's chunks become victims (still reused first-come), and
//!   the previous victims are freed. [`Pool::trim`] frees every cached chunk,
//!   thread caches included, at once. A thread that exits empties its cache
//!   into the class lists. Dropping the last [`Pool`] handle frees every
//!   cached chunk, and chunks still leased are freed when they come back.
//! - **The cap** ([`PoolConfig::max_cached_per_class`]) bounds what a class
//!   caches in its list and in every thread cache together: a thread cache
//!   reserves its share of the cap when it grows (a rare trip to the class
//!   lock) and gives it back at each GC cycle.
//!
//! [`Pool::stats`] counts the thread caches with the class lists.
//!
//! # Sharing
//!
//! A leased [`Chunk`] is written by its single owner (a link buffer) and read
//! through [`Slice`]s cut from its written prefix:
//!
//! ```text
//!   chunk  [ frozen: read-only, shared as slices | spare: owner writes here ]
//!          0                                  frozen                     cap
//! ```
//!
//! Every slice, however small (`slice.slice(0..1)`), keeps the *whole* chunk
//! out of the pool; the chunk goes back to its class when the last slice
//! and the owner are gone. This is exactly how a one-byte slice of a request
//! field pins a whole pooled buffer in the guide's leaks. Every reference
//! is counted in the chunk's own book-keeping (a slice, what a barrier slot
//! keeps, the owner), so cutting, cloning and dropping them allocates
//! nothing, as Netpoll's `LinkBuffer` nodes count theirs. Only a `Bytes`
//! handle ([`Slice::into_bytes`], for APIs that take `Bytes`) needs an owner
//! box.
//!
//! ```
//! use rpc::{Pool, PoolConfig, Taker};
//! let pool = Pool::new(PoolConfig::default());
//! let mut chunk = pool.lease(1000, Taker::User("doc"));
//! assert_eq!(chunk.capacity(), 1024);
//! chunk.spare_mut()[..5].copy_from_slice(b"hello");
//! chunk.freeze_to(5);
//! let one = chunk.slice(0..1);
//! drop(chunk);
//! assert_eq!(pool.stats().leased_bytes, 1024); // one byte pins 1 KiB
//! drop(one);
//! assert_eq!(pool.stats().leased_bytes, 0);
//! assert_eq!(pool.stats().cached_bytes, 1024);
//! ```
//!
//! # The lease registry
//!
//! [`Pool::leases`] says who took each leased chunk and what references it.
//! Every chunk the pool allocates is registered once, when it is taken from
//! the system; leasing and giving back only store into the chunk's own
//! atomics (leased or not, the taker, the lease time on a coarse clock,
//! fields cut from it, barrier references), so the registry's lock is never
//! on the lease path of a cached chunk.

use std::alloc::{self, Layout};
use std::cell::{Cell, UnsafeCell};
use std::fmt;
use std::mem::{ManuallyDrop, MaybeUninit};
use std::ops::{Deref, DerefMut, Range};
use std::ptr::NonNull;
use std::sync::atomic::{compiler_fence, fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;

/// Number of power-of-two classes: 1 B (class 0) up to 8 MiB (class 23).
pub const NUM_CLASSES: usize = 24;
/// The largest size Netpoll pools: 8 MiB.
pub const MAX_POOLED: usize = 1 << (NUM_CLASSES - 1);

/// Chunks start on a cache line of their own, so that two threads writing
/// their own chunks never share one.
const CHUNK_ALIGN: usize = 64;

/// Cache policy of a [`Pool`].
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// Requests above this size are plain allocations, never cached.
    /// Clamped to [`MAX_POOLED`].
    pub max_pooled: usize,
    /// Bytes each size class may keep cached, in its list and in thread
    /// caches together; a chunk returned beyond this is freed. `usize::MAX`
    /// caches without limit.
    pub max_cached_per_class: usize,
    /// The period of the pool's "GC cycle": a background thread calls
    /// [`Pool::gc`] this often, so a cached chunk not reused within one to
    /// two periods is freed, as Go's `sync.Pool` frees objects not reused
    /// within two GC cycles. `None` keeps cached chunks until [`Pool::trim`].
    pub release_after: Option<Duration>,
}

impl Default for PoolConfig {
    /// Netpoll's behaviour: pool up to 8 MiB; cache up to 64 MiB per class;
    /// a GC cycle every 500 ms (Go collects that often or more under load).
    fn default() -> Self {
        PoolConfig {
            max_pooled: MAX_POOLED,
            max_cached_per_class: 64 << 20,
            release_after: Some(Duration::from_millis(500)),
        }
    }
}

/// Who took a chunk from the pool; the pool profile reports it as the
/// root of the chunk's "stack".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Taker {
    /// A connection's input buffer, reading from the socket (`book`).
    ConnRead,
    /// A read that spanned nodes and was copied into a fresh chunk.
    ReadSpan,
    /// Serialization of an outgoing message (output buffer `malloc`).
    Encode,
    /// Anything else, named by the caller. A name longer than 8 KiB (or
    /// at an unusual address) is interned, as [`FieldId`]s are, when first
    /// leased with; past 4096 such names, a chunk's taker reads as
    /// `User("rpc::pool::Taker::User (too many names)")`.
    User(&'static str),
}

/// Distinct interned [`Taker::User`] names (see there) the pool can tell
/// apart.
const MAX_TAKER_NAMES: usize = 4096;
/// The taker name reported past [`MAX_TAKER_NAMES`] interned names.
const TAKER_NAMES_FULL: &str = "rpc::pool::Taker::User (too many names)";

impl Taker {
    /// A stable, frame-like name for profiles.
    pub fn name(self) -> &'static str {
        match self {
            Taker::ConnRead => "rpc::linkbuf::InputBuffer::book",
            Taker::ReadSpan => "rpc::linkbuf::InputBuffer::next_span",
            Taker::Encode => "rpc::linkbuf::OutputBuffer::malloc",
            Taker::User(s) => s,
        }
    }

    /// The taker in the low 62 bits of a chunk's `state` word (see
    /// [`ChunkMeta::state`]): a `User` name as its own address and length
    /// when they fit (48 and 13 bits, as they do for literals), an interned
    /// id otherwise.
    #[inline]
    fn encode(self) -> u64 {
        match self {
            Taker::ConnRead => 0,
            Taker::ReadSpan => 1,
            Taker::Encode => 2,
            Taker::User(name) => {
                let (addr, len) = (name.as_ptr() as u64, name.len() as u64);
                if addr < 1 << 48 && len < 1 << 13 {
                    INLINE_NAME | len << 48 | addr
                } else {
                    u64::from(TAKER_USER + user_id(name))
                }
            }
        }
    }

    /// The taker [`encode`](Self::encode) made `word` from (its flag bits
    /// ignored); `users` is a copy of the interned names.
    fn decode(word: u64, users: &[&'static str]) -> Taker {
        if word & INLINE_NAME != 0 {
            let (addr, len) = (word & ((1 << 48) - 1), (word >> 48) & ((1 << 13) - 1));
            // SAFETY: only `encode` makes a word with `INLINE_NAME`, from
            // the address and length of a `&'static str`, and the word is
            // stored and loaded whole: these are that string's, which lives
            // for the whole program.
            let name =
                unsafe { std::str::from_utf8_unchecked(std::slice::from_raw_parts(addr as *const u8, len as usize)) };
            return Taker::User(name);
        }
        match word as u32 {
            0 => Taker::ConnRead,
            1 => Taker::ReadSpan,
            2 => Taker::Encode,
            code => Taker::User(users.get((code - TAKER_USER) as usize).copied().unwrap_or(TAKER_NAMES_FULL)),
        }
    }
}

const TAKER_USER: u32 = 3;
/// [`Taker::encode`]: a `User` name stored as its address and length.
const INLINE_NAME: u64 = 1 << 61;

static USER_NAMES: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());

thread_local! {
    /// The last `User` name this thread leased with: (address, length, id).
    /// Callers lease with the same literal again and again.
    static LAST_USER: Cell<(usize, usize, u32)> = const { Cell::new((0, 0, 0)) };
}

/// The interned id of a `User` taker name.
fn user_id(name: &'static str) -> u32 {
    let key = (name.as_ptr() as usize, name.len());
    let last = LAST_USER.with(Cell::get);
    if (last.0, last.1) == key {
        return last.2;
    }
    let id = intern_user(name);
    LAST_USER.with(|l| l.set((key.0, key.1, id)));
    id
}

#[cold]
fn intern_user(name: &'static str) -> u32 {
    let mut names = lock(&USER_NAMES);
    if let Some(i) = names.iter().position(|n| *n == name) {
        return i as u32;
    }
    if names.len() == MAX_TAKER_NAMES {
        return MAX_TAKER_NAMES as u32;
    }
    names.push(name);
    (names.len() - 1) as u32
}

/// A decoded field that was cut from a chunk without a copy (see
/// [`Slice::mark_field`]). Interned once; at most 64 distinct fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FieldId(u8);

static FIELD_NAMES: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());

impl FieldId {
    /// Interns `name` (for example `"Request.msg (field 2)"`). Call once and
    /// keep the id (a `OnceLock` in the decoder).
    ///
    /// # Panics
    /// When more than 64 distinct names are interned.
    pub fn intern(name: &'static str) -> FieldId {
        let mut names = lock(&FIELD_NAMES);
        if let Some(i) = names.iter().position(|n| *n == name) {
            return FieldId(i as u8);
        }
        assert!(names.len() < 64, "at most 64 field names can be interned");
        names.push(name);
        FieldId((names.len() - 1) as u8)
    }

    /// The name it was interned with.
    pub fn name(self) -> &'static str {
        lock(&FIELD_NAMES)[self.0 as usize]
    }
}

/// Nanoseconds on a coarse monotonic clock, for lease times.
///
/// On Linux this is `CLOCK_MONOTONIC_COARSE`, read from the vDSO without
/// touching the hardware clock: a few nanoseconds, with the resolution of
/// the kernel tick (1 to 10 ms; 4 ms with `HZ=250`). Elsewhere, `Instant`.
fn coarse_now() -> u64 {
    #[cfg(target_os = "linux")]
    {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid, writable `timespec` for the call; the
        // clock id is a constant the kernel has had since 2.6.32.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
        debug_assert_eq!(rc, 0, "CLOCK_MONOTONIC_COARSE");
        (ts.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(ts.tv_nsec as u64)
    }
    #[cfg(not(target_os = "linux"))]
    {
        static ORIGIN: OnceLock<std::time::Instant> = OnceLock::new();
        ORIGIN.get_or_init(std::time::Instant::now).elapsed().as_nanos() as u64
    }
}

/// [`ChunkMeta::state`]: the chunk is out of the pool.
const LEASED: u64 = 1 << 63;
/// [`ChunkMeta::state`]: the buffer that leased it let go of it.
const RELEASED: u64 = 1 << 62;

/// Book-keeping of one chunk for as long as its memory lives, leased or
/// cached. It never points at the chunk's memory: the registry holds every
/// `ChunkMeta`, and a pointer from there would make the pool look like the
/// holder of every chunk to a conservative heap scan (nor may padding,
/// which holds stale bytes: hence no alignment beyond the fields').
struct ChunkMeta {
    size: usize,
    class: Option<u8>,
    /// The pool it goes back to. Every chunk the pool allocated holds one
    /// reference, taken when it is allocated and dropped when it is freed
    /// (never per lease); the last `Pool` handle frees the cached ones (see
    /// [`Pool`]'s `Drop`), so the pool lives exactly as long as a handle or a
    /// chunk.
    pool: Arc<Shared>,
    /// [`LEASED`] and [`RELEASED`] bits, and the [`Taker::encode`]d taker in
    /// the low 62 bits. One word, so that `leases` reads them together.
    state: AtomicU64,
    /// When it was leased: [`coarse_now`], or a thread cache's clock (see
    /// [`Shard::now`]).
    leased_at: AtomicU64,
    /// Fields that reference the chunk now: up to [`FIELD_SLOTS`] at once,
    /// each slot the field's id plus one in the top byte and the count of
    /// its live [`Slice`]s below (see [`ChunkMeta::field_acquire`]). A
    /// count is back at 0 when the chunk returns (every slice is gone), so
    /// a lease starts with nothing to reset.
    fields: [AtomicU64; FIELD_SLOTS],
    /// References held by barrier slots (see `barrier`).
    slot_refs: AtomicU32,
    /// References that keep the current lease: the [`Chunk`] itself, each
    /// [`ChunkRef`] and each [`Slice`] (a `Bytes` handle holds a slice).
    /// The last to go gives the chunk back ([`release_ref`]).
    refs: AtomicU32,
    /// Index in the registry; written under the registry lock.
    entry: AtomicUsize,
    /// Zeros where `class` alone would leave padding: padding keeps the
    /// stale bytes of the memory's last use, and the high six bytes of a
    /// stale pointer, beside `class`, point into the same 64 KiB of a large
    /// chunk (a scan found the registry's metadata "holding" leaked chunks
    /// so). [`CHUNK_META_BYTES`] checks that no padding is left.
    _zero: [u8; 6],
}

/// The size of [`ChunkMeta`]'s fields, which must be its size: no padding.
const CHUNK_META_BYTES: usize = size_of::<usize>()
    + size_of::<Option<u8>>()
    + size_of::<Arc<Shared>>()
    + 2 * size_of::<AtomicU64>()
    + FIELD_SLOTS * size_of::<AtomicU64>()
    + 2 * size_of::<AtomicU32>()
    + size_of::<AtomicUsize>()
    + 6;
const _: () = assert!(size_of::<ChunkMeta>() == CHUNK_META_BYTES, "ChunkMeta has padding");

impl fmt::Debug for ChunkMeta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkMeta")
            .field("size", &self.size)
            .field("leased", &(self.state.load(Ordering::Relaxed) & LEASED != 0))
            .finish_non_exhaustive()
    }
}

impl ChunkMeta {
    /// Plain stores: the chunk is this thread's alone until it is handed out.
    #[inline]
    fn on_lease(&self, taker: Taker, now: u64) {
        self.slot_refs.store(0, Ordering::Relaxed);
        self.refs.store(1, Ordering::Relaxed);
        self.leased_at.store(now, Ordering::Relaxed);
        // Release: `leases` that sees the chunk leased sees this lease's
        // fields and time.
        self.state.store(LEASED | taker.encode(), Ordering::Release);
    }

    /// One more reference on the lease. Relaxed, as `Arc`'s clone: the
    /// caller's own reference keeps the lease. Aborts before the count
    /// could wrap (as `Arc` does): `mem::forget` of clones in a loop must
    /// not give the chunk back under live slices.
    #[inline]
    fn add_ref(&self) {
        if self.refs.fetch_add(1, Ordering::Relaxed) > u32::MAX / 2 {
            std::process::abort();
        }
    }

    /// Counts one more live slice of `field`: in the slot that has it
    /// (looked for first, so that a field takes one slot), else in a free
    /// one (count 0). The slot's index, or [`NO_FIELD`] when [`FIELD_SLOTS`]
    /// other fields hold the chunk (the slice then pins it unnamed, as an
    /// `unknown holder`).
    fn field_acquire(&self, field: FieldId) -> u8 {
        let tag = (u64::from(field.0) + 1) << FIELD_TAG_SHIFT;
        // A live count never changes its slot's tag (a slot is re-tagged
        // only at count 0), so a slot seen with this tag and a count keeps
        // it while the increment below retries. A count cannot overflow:
        // each one is a live slice, which holds one of `refs` (below
        // 2^31, `add_ref`).
        for take_free in [false, true] {
            for (i, slot) in self.fields.iter().enumerate() {
                let mut v = slot.load(Ordering::Relaxed);
                loop {
                    let next = match (v & !FIELD_COUNT == tag, v & FIELD_COUNT) {
                        (true, count) if count > 0 || take_free => v + 1,
                        (false, 0) if take_free => tag | 1,
                        _ => break,
                    };
                    // Relaxed: the counts are statistics the registry reads;
                    // the lease itself is kept by `refs`.
                    match slot.compare_exchange_weak(v, next, Ordering::Relaxed, Ordering::Relaxed) {
                        Ok(_) => return i as u8,
                        Err(seen) => v = seen,
                    }
                }
            }
        }
        NO_FIELD
    }

    fn field_release(&self, slot: u8) {
        if let Some(s) = self.fields.get(usize::from(slot)) {
            s.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The fields with a live slice now. Sorted and without repeats: two
    /// threads that count a field's first slices at once may each claim a
    /// free slot for it.
    fn live_fields(&self) -> Vec<FieldId> {
        let mut out: Vec<FieldId> = self
            .fields
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .filter(|v| v & FIELD_COUNT != 0)
            .map(slot_field)
            .collect();
        out.sort_by_key(|f| f.0);
        out.dedup();
        out
    }
}

/// Distinct fields a chunk counts at once ([`ChunkMeta::fields`]): a
/// message's fields that are kept past its call. Four covers a request's
/// and a response's two of the echo service.
const FIELD_SLOTS: usize = 4;
/// A slice counted in no field slot.
const NO_FIELD: u8 = u8::MAX;
const FIELD_TAG_SHIFT: u32 = 56;
const FIELD_COUNT: u64 = (1 << FIELD_TAG_SHIFT) - 1;

/// The field a tagged slot of [`ChunkMeta::fields`] counts.
fn slot_field(v: u64) -> FieldId {
    FieldId(((v >> FIELD_TAG_SHIFT) - 1) as u8)
}

/// Memory of one chunk: a raw allocation of `meta.size` bytes. Freed only by
/// [`RawChunk::free`] (dropping it would leak the memory).
struct RawChunk {
    ptr: NonNull<u8>,
    meta: Arc<ChunkMeta>,
}

// SAFETY: RawChunk uniquely owns its allocation; the pointer is only
// dereferenced by the single owner that holds it.
unsafe impl Send for RawChunk {}

impl RawChunk {
    #[inline(never)]
    fn alloc(size: usize, class: Option<u8>, pool: Arc<Shared>) -> RawChunk {
        let layout = Layout::from_size_align(size.max(1), CHUNK_ALIGN).expect("chunk size overflows");
        // SAFETY: the layout has a non-zero size. Zeroed so that the spare
        // region can be handed out as an initialised `&mut [u8]`.
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(ptr) else { alloc::handle_alloc_error(layout) };
        let meta = Arc::new(ChunkMeta {
            size,
            class,
            pool,
            state: AtomicU64::new(0),
            leased_at: AtomicU64::new(0),
            fields: Default::default(),
            slot_refs: AtomicU32::new(0),
            refs: AtomicU32::new(0),
            entry: AtomicUsize::new(usize::MAX),
            _zero: [0; 6],
        });
        RawChunk { ptr, meta }
    }

    /// Gives the memory back to the system and drops the chunk's reference
    /// on its pool, which may be the last.
    fn free(self) {
        let RawChunk { ptr, meta } = self;
        meta.pool.deregister(&meta);
        let layout = Layout::from_size_align(meta.size.max(1), CHUNK_ALIGN).expect("valid at alloc");
        // SAFETY: `ptr` came from `alloc_zeroed` with this same layout and is
        // freed once: `self` is consumed.
        unsafe { alloc::dealloc(ptr.as_ptr(), layout) };
    }
}

/// Chunks a thread cache keeps per class: at most this many...
const MAGAZINE: usize = 4;
/// ...and at most this many bytes' worth (but always one).
const MAGAZINE_BYTES: usize = 256 << 10;

/// How many chunks of `class` a thread cache keeps: 4 up to 64 KiB, 2 of
/// 128 KiB, 1 from 256 KiB.
fn magazine_slots(class: usize) -> u32 {
    (MAGAZINE_BYTES >> class).clamp(1, MAGAZINE) as u32
}

/// One class in a thread cache: a handful of chunks.
///
/// Every byte is written (no padding, no `Option<RawChunk>` whose `None`
/// leaves half its bytes as they were) and a chunk taken out leaves zeros
/// behind: the pool's memory must not keep a stale address of a leased
/// chunk, which a conservative heap scan would read as the pool holding it.
struct Magazine {
    /// `addrs[..len]` and `metas[..len]` are the cached chunks (the address
    /// as an integer, 0 past `len`).
    addrs: [usize; MAGAZINE],
    metas: [Option<Arc<ChunkMeta>>; MAGAZINE],
    len: u32,
    /// Chunks' worth of the class's cap reserved for this magazine: it may
    /// hold this many without asking the class.
    budget: u32,
}

impl Magazine {
    fn new() -> Magazine {
        Magazine { addrs: [0; MAGAZINE], metas: Default::default(), len: 0, budget: 0 }
    }

    #[inline]
    fn pop(&mut self) -> Option<RawChunk> {
        let i = self.len.checked_sub(1)? as usize;
        self.len = i as u32;
        let addr = std::mem::take(self.addrs.get_mut(i)?);
        let meta = self.metas[i].take()?;
        // The address `push` exposed, of memory this chunk still owns.
        let ptr = NonNull::new(std::ptr::with_exposed_provenance_mut(addr))?;
        Some(RawChunk { ptr, meta })
    }

    /// # Panics
    /// If the magazine is full.
    #[inline]
    fn push(&mut self, raw: RawChunk) {
        let i = self.len as usize;
        self.addrs[i] = raw.ptr.as_ptr().expose_provenance();
        let empty = self.metas[i].replace(raw.meta);
        debug_assert!(empty.is_none(), "slots past len are empty");
        // Nothing to drop: spares the check for an old chunk.
        std::mem::forget(empty);
        self.len += 1;
    }
}

/// A thread cache: one magazine per class.
struct ThreadCache {
    classes: [Magazine; NUM_CLASSES],
}

// No padding (see `Magazine`).
const _: () = assert!(std::mem::size_of::<Magazine>() == MAGAZINE * 16 + 8);
const _: () = assert!(std::mem::size_of::<Shard>() == 16 + NUM_CLASSES * std::mem::size_of::<Magazine>() + 64);

/// A thread cache and the flags of its owner and its stealers.
///
/// Each thread that uses a pool gets a *slot*, a small number unique among
/// the live threads of the process (reused after a thread exits); shard `i`
/// of every pool is the cache of the thread holding slot `i`. Only that
/// owner leases from it and gives back to it; `gc`, `trim`, `stats`, the
/// pool's close and the owner's exit *steal* it.
///
/// The owner must not pay for an atomic read-modify-write on each lease
/// (`sync.Pool` pins the goroutine to its P instead), so owner and stealer
/// exclude each other with two flags and an asymmetric barrier:
///
/// ```text
///   owner:    busy = 1;  light barrier;  if steal { busy = 0; slow path }
///             ... use the cache ...;  busy = 0 (release)
///   stealer:  steal = 1; heavy barrier;  wait while busy;  ... use it ...;
///             steal = 0 (release)
/// ```
///
/// On Linux the heavy barrier is `membarrier(PRIVATE_EXPEDITED)`, which
/// runs a full memory barrier on every CPU running a thread of this
/// process, and the light one only keeps the compiler from reordering: the
/// owner's store of `busy` and load of `steal` are each either before that
/// barrier (the store is then visible to the stealer, which waits) or after
/// it (the load then sees `steal`). Where `membarrier` is missing both are
/// full fences (Dekker's algorithm), and the owner pays one fence per
/// lease. One stealer at a time ([`Shared::stealing`]).
///
/// Laid out by hand, with no padding (see [`Magazine`]); `_gap` keeps the
/// next shard's flags off the cache lines of this one's busy magazines.
#[repr(C)]
struct Shard {
    /// [`coarse_now`] as of the last tick of the pool's GC thread (every
    /// [`CLOCK_TICK`]), a steal, or the owner's last trip past its cache:
    /// what leases from the cache are stamped with, so that the owner does
    /// not read a clock per lease. Zero in a pool without a GC thread: the
    /// owner reads the clock.
    now: AtomicU64,
    /// The owner is using `cache`.
    busy: AtomicBool,
    /// A stealer wants `cache`, or has it.
    steal: AtomicBool,
    /// [`ASYMMETRIC`], read with the flags.
    asymmetric: bool,
    _pad: [u8; 5],
    cache: UnsafeCell<ThreadCache>,
    _gap: [u64; 8],
}

// SAFETY: `cache` is only reached through an `OwnerGuard` (by the one thread
// whose slot this is, while no stealer holds it) or by a stealer (holding
// the pool's steal lock, after the owner has left); see the protocol at
// `Shard`. `RawChunk`s are `Send`.
unsafe impl Sync for Shard {}

impl Shard {
    fn new() -> Shard {
        Shard {
            now: AtomicU64::new(0),
            busy: AtomicBool::new(false),
            steal: AtomicBool::new(false),
            asymmetric: ASYMMETRIC.load(Ordering::Relaxed),
            _pad: [0; 5],
            cache: UnsafeCell::new(ThreadCache { classes: std::array::from_fn(|_| Magazine::new()) }),
            _gap: [0; 8],
        }
    }

    /// The owner's access; `None` while a stealer has the cache. Only the
    /// thread whose slot this shard is may call it (see [`Shared::my_cache`]).
    #[inline]
    fn enter(&self) -> Option<OwnerGuard<'_>> {
        self.busy.store(true, Ordering::Relaxed);
        light_barrier(self.asymmetric);
        // Acquire pairs with the stealer's release of `steal`: what it did
        // to the cache is visible.
        if self.steal.load(Ordering::Acquire) {
            self.busy.store(false, Ordering::Release);
            return None;
        }
        Some(OwnerGuard { shard: self })
    }
}

/// The owner's hold on its cache; leaving releases it.
struct OwnerGuard<'a> {
    shard: &'a Shard,
}

impl Deref for OwnerGuard<'_> {
    type Target = ThreadCache;
    fn deref(&self) -> &ThreadCache {
        // SAFETY: the owner set `busy` and then saw no stealer, so no other
        // reference to the cache exists until the guard drops (see the
        // protocol at `Shard`).
        unsafe { &*self.shard.cache.get() }
    }
}

impl DerefMut for OwnerGuard<'_> {
    fn deref_mut(&mut self) -> &mut ThreadCache {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference.
        unsafe { &mut *self.shard.cache.get() }
    }
}

impl Drop for OwnerGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        // Release: a stealer that sees the owner gone sees its writes.
        self.shard.busy.store(false, Ordering::Release);
    }
}

/// `membarrier` works here: owners use only a compiler fence.
static ASYMMETRIC: AtomicBool = AtomicBool::new(false);

/// Decides, once and before any pool exists, which barriers to use.
fn init_barriers() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| ASYMMETRIC.store(register_membarrier(), Ordering::Relaxed));
}

#[cfg(target_os = "linux")]
const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
#[cfg(target_os = "linux")]
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

#[cfg(target_os = "linux")]
fn register_membarrier() -> bool {
    // SAFETY: `membarrier` takes integers only; registering has no effect
    // on memory and fails cleanly where the call is missing or filtered.
    let rc = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) };
    rc == 0
}

#[cfg(not(target_os = "linux"))]
fn register_membarrier() -> bool {
    false
}

#[inline]
fn light_barrier(asymmetric: bool) {
    if asymmetric {
        compiler_fence(Ordering::SeqCst);
    } else {
        fence(Ordering::SeqCst);
    }
}

fn heavy_barrier() {
    #[cfg(target_os = "linux")]
    if ASYMMETRIC.load(Ordering::Relaxed) {
        // SAFETY: integers only; the process registered at `init_barriers`.
        let rc = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) };
        if rc == 0 {
            return;
        }
        // It cannot fail once registered; if it did, owners would not be
        // fenced and this barrier alone cannot make up for it.
        panic!("membarrier failed after registration: {}", std::io::Error::last_os_error());
    }
    fence(Ordering::SeqCst);
}

thread_local! {
    /// This thread's slot ([`NO_SLOT`] until it first needs one,
    /// [`SLOT_GONE`] once it is exiting).
    static SLOT: Cell<usize> = const { Cell::new(NO_SLOT) };
    /// Gives the slot back, its caches emptied, when the thread exits.
    static SLOT_OWNER: SlotOwner = const { SlotOwner };
}

const NO_SLOT: usize = usize::MAX;
const SLOT_GONE: usize = usize::MAX - 1;

/// Slots of the live threads: the lowest free one goes to a new thread.
static SLOTS: Mutex<Vec<bool>> = Mutex::new(Vec::new());

/// Every open pool, for a thread's exit.
static POOLS: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());

/// Gives this thread a slot if it has none.
#[cold]
fn ensure_slot() {
    if SLOT.with(Cell::get) != NO_SLOT {
        return;
    }
    // The exit hook first: a thread already exiting gets no slot.
    if SLOT_OWNER.try_with(|_| ()).is_err() {
        SLOT.with(|s| s.set(SLOT_GONE));
        return;
    }
    let mut slots = lock(&SLOTS);
    let slot = match slots.iter().position(|taken| !taken) {
        Some(i) => i,
        None => {
            slots.push(false);
            slots.len() - 1
        }
    };
    slots[slot] = true;
    SLOT.with(|s| s.set(slot));
}

struct SlotOwner;

impl Drop for SlotOwner {
    fn drop(&mut self) {
        let Ok(slot) = SLOT.try_with(|s| s.replace(SLOT_GONE)) else { return };
        if slot >= SLOT_GONE {
            return;
        }
        // From here on this thread leases and gives back past its caches;
        // empty them into the class lists, then free the slot.
        let pools: Vec<Arc<Shared>> = lock(&POOLS).iter().filter_map(Weak::upgrade).collect();
        for pool in pools {
            if slot < pool.shards.len() {
                pool.steal(slot..slot + 1, |_, cache| pool.flush(cache));
            }
        }
        lock(&SLOTS)[slot] = false;
    }
}

/// How often the GC thread sets the thread caches' clocks ([`Shard::now`]):
/// the resolution of lease times.
const CLOCK_TICK: Duration = Duration::from_millis(50);

/// Thread caches per pool: the first this many live threads get one (four
/// per core, 16 to 64); the others use the class lists.
fn shard_count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        (cores * 4).clamp(16, 64)
    })
}

/// A class's list, behind the thread caches.
#[derive(Default)]
struct Class {
    /// Returned since the last GC cycle; reused first.
    free: Vec<RawChunk>,
    /// Survivors of the last cycle; freed at the next one.
    victim: Vec<RawChunk>,
    /// Bytes in `free` and `victim`.
    cached_bytes: usize,
    /// Bytes of the cap reserved by thread caches ([`Magazine::budget`]).
    reserved: usize,
}

impl Class {
    fn pop(&mut self) -> Option<RawChunk> {
        let raw = pop_clean(&mut self.free).or_else(|| pop_clean(&mut self.victim))?;
        self.cached_bytes -= raw.meta.size;
        Some(raw)
    }

    fn cached_chunks(&self) -> usize {
        self.free.len() + self.victim.len()
    }
}

/// `v.pop()`, and the slot it leaves zeroed: a leased chunk's address must
/// not linger in the pool's spare capacity (see [`Magazine`]).
fn pop_clean(v: &mut Vec<RawChunk>) -> Option<RawChunk> {
    let raw = v.pop()?;
    if let Some(slot) = v.spare_capacity_mut().first_mut() {
        *slot = MaybeUninit::zeroed();
    }
    Some(raw)
}

struct Registry {
    entries: Vec<Option<Arc<ChunkMeta>>>,
    vacant: Vec<usize>,
}

struct Shared {
    config: PoolConfig,
    /// Set once, when the last `Pool` handle goes: chunks coming back are
    /// freed. Read under the lock (or the owner guard) of the cache a chunk
    /// would go to.
    closed: AtomicBool,
    /// The thread caches, by slot.
    shards: Box<[Shard]>,
    /// A GC thread keeps the caches' clocks ([`Shard::now`]); without one,
    /// each lease reads the clock.
    ticking: AtomicBool,
    /// One stealer at a time.
    stealing: Mutex<()>,
    classes: [Mutex<Class>; NUM_CLASSES],
    /// Bytes of each class allocated and not freed, leased or cached.
    live: [AtomicUsize; NUM_CLASSES],
    unpooled_leased: AtomicUsize,
    /// Every chunk allocated and not yet freed: taken on allocation and free
    /// only.
    registry: Mutex<Registry>,
    allocated_bytes: AtomicU64,
    allocated_chunks: AtomicU64,
    /// `Pool` handles.
    handles: AtomicUsize,
}

/// A size-class pool. Cheap to clone (an `Arc`).
///
/// When the last handle goes, the pool closes: every cached chunk is freed,
/// thread caches included, and chunks still leased are freed when they come
/// back; the pool's own state goes with the last chunk.
pub struct Pool {
    shared: Arc<Shared>,
}

impl Clone for Pool {
    fn clone(&self) -> Pool {
        self.shared.handles.fetch_add(1, Ordering::Relaxed);
        Pool { shared: self.shared.clone() }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // AcqRel: the last handle sees every other handle's work done.
        if self.shared.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.close();
        }
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool").field("config", &self.shared.config).finish_non_exhaustive()
    }
}

/// The size class of `size`: `ceil(log2(size))`.
pub fn class_of(size: usize) -> usize {
    size.max(1).next_power_of_two().trailing_zeros() as usize
}

impl Pool {
    /// A new, empty pool; with [`PoolConfig::release_after`] set, a
    /// background thread runs its GC cycles until the pool is dropped.
    pub fn new(mut config: PoolConfig) -> Pool {
        init_barriers();
        config.max_pooled = config.max_pooled.min(MAX_POOLED);
        let period = config.release_after;
        let shared = Arc::new(Shared {
            config,
            closed: AtomicBool::new(false),
            shards: (0..shard_count()).map(|_| Shard::new()).collect(),
            ticking: AtomicBool::new(false),
            stealing: Mutex::new(()),
            classes: std::array::from_fn(|_| Mutex::new(Class::default())),
            live: std::array::from_fn(|_| AtomicUsize::new(0)),
            unpooled_leased: AtomicUsize::new(0),
            registry: Mutex::new(Registry { entries: Vec::new(), vacant: Vec::new() }),
            allocated_bytes: AtomicU64::new(0),
            allocated_chunks: AtomicU64::new(0),
            handles: AtomicUsize::new(1),
        });
        {
            let mut pools = lock(&POOLS);
            pools.retain(|p| p.strong_count() > 0);
            pools.push(Arc::downgrade(&shared));
        }
        let pool = Pool { shared };
        if let Some(period) = period {
            // The GC thread holds no handle: it takes one for each cycle,
            // while another handle lives.
            let weak = Arc::downgrade(&pool.shared);
            let tick = period.min(CLOCK_TICK);
            let spawned = std::thread::Builder::new().name("pool-gc".into()).spawn(move || {
                let mut next_gc = std::time::Instant::now() + period;
                loop {
                    std::thread::sleep(tick);
                    let Some(shared) = weak.upgrade() else { return };
                    let Some(pool) = Pool::upgrade(shared) else { return };
                    pool.shared.tick();
                    if std::time::Instant::now() >= next_gc {
                        pool.gc();
                        next_gc = std::time::Instant::now() + period;
                    }
                }
            });
            match spawned {
                Ok(_) => {
                    pool.shared.ticking.store(true, Ordering::Relaxed);
                    pool.shared.tick();
                }
                Err(e) => tracing::warn!(error = %e, "no pool GC thread: cached chunks stay until trimmed"),
            }
        }
        pool
    }

    /// A handle on `shared` if another still exists.
    fn upgrade(shared: Arc<Shared>) -> Option<Pool> {
        let mut n = shared.handles.load(Ordering::Relaxed);
        loop {
            if n == 0 {
                return None;
            }
            match shared.handles.compare_exchange_weak(n, n + 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return Some(Pool { shared }),
                Err(now) => n = now,
            }
        }
    }

    /// The process-wide pool with the default policy, for code that is not
    /// handed one.
    pub fn global() -> &'static Pool {
        static GLOBAL: OnceLock<Pool> = OnceLock::new();
        GLOBAL.get_or_init(|| Pool::new(PoolConfig::default()))
    }

    /// The policy it was built with.
    pub fn config(&self) -> &PoolConfig {
        &self.shared.config
    }

    /// Leases a chunk of at least `size` bytes: the class size when `size`
    /// is pooled, exactly `size` otherwise.
    #[inline(never)]
    pub fn lease(&self, size: usize, taker: Taker) -> Chunk {
        let shared = &*self.shared;
        let (raw, now) = if size <= shared.config.max_pooled {
            let class = class_of(size);
            match shared.take_cached(class) {
                Some(hit) => hit,
                None => {
                    let now = shared.clock_slow();
                    match shared.take_listed(class) {
                        Some(raw) => (raw, now),
                        None => (self.grow(1 << class, Some(class as u8)), now),
                    }
                }
            }
        } else {
            shared.unpooled_leased.fetch_add(size, Ordering::Relaxed);
            (self.grow(size, None), coarse_now())
        };
        raw.meta.on_lease(taker, now);
        Chunk {
            ptr: raw.ptr,
            size: raw.meta.size,
            frozen: 0,
            meta: ManuallyDrop::new(raw.meta),
            shared: AtomicBool::new(false),
        }
    }

    /// Takes fresh memory from the system for a chunk the pool did not have.
    #[inline(never)]
    fn grow(&self, size: usize, class: Option<u8>) -> RawChunk {
        let shared = &self.shared;
        shared.allocated_bytes.fetch_add(size as u64, Ordering::Relaxed);
        shared.allocated_chunks.fetch_add(1, Ordering::Relaxed);
        if let Some(class) = class {
            shared.live[usize::from(class)].fetch_add(size, Ordering::Relaxed);
        }
        let raw = RawChunk::alloc(size, class, shared.clone());
        shared.register(&raw.meta);
        raw
    }

    /// One GC cycle: empties every thread cache into the class lists, frees
    /// the chunks that survived the previous cycle without being reused, and
    /// makes the rest survivors. Returns the bytes freed.
    pub fn gc(&self) -> usize {
        self.shared.gc()
    }

    /// Frees every cached chunk, in every thread's cache too; returns the
    /// bytes given back to the system. What it cannot free: chunks still
    /// leased (or pinned by a handle), and chunks given back while it runs,
    /// which are cached as usual.
    pub fn trim(&self) -> usize {
        self.shared.trim()
    }

    /// Totals and per-class figures; cached figures include every thread's
    /// cache, read exactly (each cache is held for a moment, as `gc` does).
    pub fn stats(&self) -> PoolStats {
        self.shared.stats()
    }

    /// Every chunk currently leased, with who took it and who still
    /// references it: the raw material of the pool profile.
    ///
    /// Reads each registered chunk's atomics under the registry lock, which
    /// the lease path never takes (only allocating or freeing a chunk does),
    /// so building a pool profile never stalls leasing. A chunk leased or
    /// given back while it runs may be seen in either state. For `age`'s
    /// resolution see [`Lease::age`].
    pub fn leases(&self) -> Vec<Lease> {
        struct Seen {
            size: usize,
            pooled: bool,
            state: u64,
            leased_at: u64,
            slot_refs: u32,
            fields: Vec<FieldId>,
        }
        let seen: Vec<Seen> = {
            let reg = lock(&self.shared.registry);
            reg.entries
                .iter()
                .flatten()
                .filter_map(|m| {
                    // Acquire pairs with `on_lease`: the rest is this lease's.
                    let state = m.state.load(Ordering::Acquire);
                    (state & LEASED != 0).then(|| Seen {
                        size: m.size,
                        pooled: m.class.is_some(),
                        state,
                        leased_at: m.leased_at.load(Ordering::Relaxed),
                        slot_refs: m.slot_refs.load(Ordering::Relaxed),
                        fields: m.live_fields(),
                    })
                })
                .collect()
        };
        let users = lock(&USER_NAMES).clone();
        let now = coarse_now();
        seen.into_iter()
            .map(|s| Lease {
                size: s.size,
                pooled: s.pooled,
                taker: Taker::decode(s.state, &users),
                age: Duration::from_nanos(now.saturating_sub(s.leased_at)),
                released: s.state & RELEASED != 0,
                slot_refs: s.slot_refs,
                fields: s.fields,
            })
            .collect()
    }
}

impl Shared {
    /// This thread's cache, unless it has no slot (yet, or beyond the
    /// pool's shards) or a stealer holds it.
    #[inline]
    fn my_cache(&self) -> Option<OwnerGuard<'_>> {
        // Only this thread holds this slot: it is the shard's one owner.
        self.shards.get(SLOT.with(Cell::get))?.enter()
    }

    /// A chunk of `class` from this thread's cache, and the time to stamp
    /// its lease with.
    #[inline]
    fn take_cached(&self, class: usize) -> Option<(RawChunk, u64)> {
        let mut cache = self.my_cache()?;
        let raw = cache.classes.get_mut(class)?.pop()?;
        let now = cache.shard.now.load(Ordering::Relaxed);
        drop(cache);
        Some((raw, if now == 0 { coarse_now() } else { now }))
    }

    /// The time, read from the clock, for a lease that missed this thread's
    /// cache; the cache's clock is set on the way.
    #[cold]
    #[inline(never)]
    fn clock_slow(&self) -> u64 {
        let now = coarse_now();
        if let Some(shard) = self.shards.get(SLOT.with(Cell::get)) {
            if self.ticking.load(Ordering::Relaxed) {
                shard.now.store(now, Ordering::Relaxed);
            }
        }
        now
    }

    /// Sets every thread cache's clock (the GC thread, every [`CLOCK_TICK`]).
    fn tick(&self) {
        let now = coarse_now();
        for shard in self.shards.iter() {
            shard.now.store(now, Ordering::Relaxed);
        }
    }

    /// A chunk of `class` from its list, past this thread's cache.
    #[cold]
    #[inline(never)]
    fn take_listed(&self, class: usize) -> Option<RawChunk> {
        ensure_slot();
        lock(&self.classes[class]).pop()
    }

    fn register(&self, meta: &Arc<ChunkMeta>) {
        let mut reg = lock(&self.registry);
        let entry = match reg.vacant.pop() {
            Some(i) => {
                reg.entries[i] = Some(meta.clone());
                i
            }
            None => {
                reg.entries.push(Some(meta.clone()));
                reg.entries.len() - 1
            }
        };
        meta.entry.store(entry, Ordering::Relaxed);
    }

    fn deregister(&self, meta: &ChunkMeta) {
        if let Some(class) = meta.class {
            self.live[usize::from(class)].fetch_sub(meta.size, Ordering::Relaxed);
        }
        let mut reg = lock(&self.registry);
        let entry = meta.entry.swap(usize::MAX, Ordering::Relaxed);
        if entry != usize::MAX {
            reg.entries[entry] = None;
            reg.vacant.push(entry);
        }
    }

    /// Reserves room for one more chunk of `class` in `magazine`, within
    /// its slots and the class's cap.
    #[cold]
    #[inline(never)]
    fn reserve(&self, magazine: &mut Magazine, class: usize) -> bool {
        if magazine.budget >= magazine_slots(class) {
            return false;
        }
        let size = 1usize << class;
        let mut c = lock(&self.classes[class]);
        let after = c.cached_bytes.saturating_add(c.reserved).saturating_add(size);
        if after > self.config.max_cached_per_class || self.closed.load(Ordering::Relaxed) {
            return false;
        }
        c.reserved += size;
        magazine.budget += 1;
        true
    }

    /// Puts `raw` in its class list if the cap allows, frees it otherwise.
    #[cold]
    #[inline(never)]
    fn cache_in_class(&self, class: usize, raw: RawChunk) {
        ensure_slot();
        let size = raw.meta.size;
        let mut c = lock(&self.classes[class]);
        let after = c.cached_bytes.saturating_add(c.reserved).saturating_add(size);
        if !self.closed.load(Ordering::Relaxed) && after <= self.config.max_cached_per_class {
            c.cached_bytes += size;
            c.free.push(raw);
        } else {
            drop(c);
            raw.free();
        }
    }

    /// Runs `f` on the thread caches of `slots`, each held from its owner
    /// (see the protocol at [`Shard`]).
    fn steal(&self, slots: Range<usize>, f: impl FnMut(usize, &mut ThreadCache)) {
        let one = lock(&self.stealing);
        self.steal_as(&one, slots, f);
    }

    /// [`Shared::steal`] for a caller that holds `stealing` (`_one`): no
    /// chunk moves from a thread cache to a class list until it lets go.
    fn steal_as(&self, _one: &MutexGuard<'_, ()>, slots: Range<usize>, mut f: impl FnMut(usize, &mut ThreadCache)) {
        let shards = &self.shards[slots.clone()];
        for shard in shards {
            shard.steal.store(true, Ordering::Relaxed);
        }
        heavy_barrier();
        let now = if self.ticking.load(Ordering::Relaxed) { coarse_now() } else { 0 };
        for (i, shard) in shards.iter().enumerate() {
            shard.now.store(now, Ordering::Relaxed);
            let mut spins = 0u32;
            // Acquire pairs with the owner's release of `busy`.
            while shard.busy.load(Ordering::Acquire) {
                spins += 1;
                if spins < 64 {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
            // SAFETY: `steal` is set and seen by the owner (the barrier),
            // which has left (`busy` clear): nothing else references the
            // cache until `steal` is cleared, and `stealing` keeps other
            // stealers out.
            f(slots.start + i, unsafe { &mut *shard.cache.get() });
        }
        for shard in shards {
            // Release: the owner sees what was done to its cache.
            shard.steal.store(false, Ordering::Release);
        }
    }

    /// Moves what `cache` holds to the class lists and gives its
    /// reservations back.
    fn flush(&self, cache: &mut ThreadCache) {
        for (class, magazine) in cache.classes.iter_mut().enumerate() {
            if magazine.len == 0 && magazine.budget == 0 {
                continue;
            }
            let mut c = lock(&self.classes[class]);
            c.reserved -= (magazine.budget as usize) << class;
            magazine.budget = 0;
            while let Some(raw) = magazine.pop() {
                c.cached_bytes += raw.meta.size;
                c.free.push(raw);
            }
        }
    }

    fn flush_all(&self) {
        self.steal(0..self.shards.len(), |_, cache| self.flush(cache));
    }

    fn gc(&self) -> usize {
        self.flush_all();
        let mut freed = 0;
        for class in &self.classes {
            let victims = {
                let mut c = lock(class);
                let survivors = std::mem::take(&mut c.free);
                let victims = std::mem::replace(&mut c.victim, survivors);
                c.cached_bytes -= victims.iter().map(|r| r.meta.size).sum::<usize>();
                victims
            };
            for raw in victims {
                freed += raw.meta.size;
                raw.free();
            }
        }
        freed
    }

    fn trim(&self) -> usize {
        self.flush_all();
        let mut freed = 0;
        for class in &self.classes {
            let chunks = {
                let mut c = lock(class);
                c.cached_bytes = 0;
                let mut all = std::mem::take(&mut c.free);
                all.append(&mut c.victim);
                all
            };
            for raw in chunks {
                freed += raw.meta.size;
                raw.free();
            }
        }
        freed
    }

    /// The last handle went: nothing is cached from now on.
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        lock(&POOLS).retain(|p| p.strong_count() > 0 && !std::ptr::eq(p.as_ptr(), self));
        self.trim();
    }

    fn stats(&self) -> PoolStats {
        let mut cached = [0usize; NUM_CLASSES];
        // Held until the class lists are read too: chunks move from thread
        // caches to class lists only under it (`gc`, a thread's exit), so
        // none is counted in both.
        let one = lock(&self.stealing);
        self.steal_as(&one, 0..self.shards.len(), |_, cache| {
            for (n, m) in cached.iter_mut().zip(&cache.classes) {
                *n += m.len as usize;
            }
        });
        let mut stats = PoolStats::default();
        for (i, class) in self.classes.iter().enumerate() {
            let (cached_chunks, cached_bytes) = {
                let c = lock(class);
                (cached[i] + c.cached_chunks(), (cached[i] << i) + c.cached_bytes)
            };
            // Every chunk allocated and not freed is either cached or leased.
            let leased_bytes = self.live[i].load(Ordering::Relaxed).saturating_sub(cached_bytes);
            stats.cached_bytes += cached_bytes;
            stats.leased_bytes += leased_bytes;
            if cached_bytes > 0 || leased_bytes > 0 {
                stats.classes.push(ClassStats {
                    size: 1 << i,
                    leased_chunks: leased_bytes >> i,
                    leased_bytes,
                    cached_chunks,
                    cached_bytes,
                });
            }
        }
        stats.unpooled_leased_bytes = self.unpooled_leased.load(Ordering::Relaxed);
        stats.leased_bytes += stats.unpooled_leased_bytes;
        stats.allocated_bytes = self.allocated_bytes.load(Ordering::Relaxed);
        stats.allocated_chunks = self.allocated_chunks.load(Ordering::Relaxed);
        stats
    }
}

/// Returns a chunk whose last owner is gone: to this thread's cache, else
/// its class list, else the system.
#[inline]
fn give_back(raw: RawChunk) {
    // SAFETY: `raw.meta.pool` keeps the pool alive while `raw` is ours. Once
    // `raw` is stored in one of the pool's caches (by its owner, or under a
    // class lock, having seen the pool open), only a stealer or a lock
    // holder can free it, and each waits for this thread to leave that
    // cache first: the pool stays valid until then, which is the last use
    // of `shared` on that path. On the paths that free `raw`, freeing is
    // the last use.
    let shared: &Shared = unsafe { &*Arc::as_ptr(&raw.meta.pool) };
    raw.meta.state.store(0, Ordering::Release);
    if let (Some(class), Some(mut cache)) = (raw.meta.class, shared.my_cache()) {
        if let Some(magazine) = cache.classes.get_mut(usize::from(class)) {
            // A closed pool has taken every budget back (`close` flushes
            // each cache) and grants none (`reserve`): no check needed.
            if magazine.len < magazine.budget {
                magazine.push(raw);
                return;
            }
        }
    }
    give_back_slow(shared, raw);
}

/// [`give_back`] past a full or missing thread cache.
#[cold]
#[inline(never)]
fn give_back_slow(shared: &Shared, raw: RawChunk) {
    let Some(class) = raw.meta.class.map(usize::from) else {
        shared.unpooled_leased.fetch_sub(raw.meta.size, Ordering::Relaxed);
        raw.free();
        return;
    };
    if let Some(mut cache) = shared.my_cache() {
        if let Some(magazine) = cache.classes.get_mut(class) {
            let open = !shared.closed.load(Ordering::Relaxed);
            if open && (magazine.len < magazine.budget || shared.reserve(magazine, class)) {
                magazine.push(raw);
                return;
            }
        }
    }
    shared.cache_in_class(class, raw);
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Drops one of the lease's `ChunkMeta::refs`; the last gives the chunk
/// back.
#[inline]
fn release_ref(ptr: NonNull<u8>, meta: Arc<ChunkMeta>) {
    // Release: what this holder did with the chunk happens before whoever
    // gives it back (and leases it next); as `Arc`'s drop.
    if meta.refs.fetch_sub(1, Ordering::Release) == 1 {
        fence(Ordering::Acquire);
        give_back(RawChunk { ptr, meta });
    }
}

/// A leased chunk: written by its one owner, read through [`Slice`]s of its
/// frozen prefix. Dropping the `Chunk` releases the owner's reference; the
/// memory returns to the pool once no slice and no [`ChunkRef`] remains.
///
/// # Memory layout
///
/// ```text
///   Chunk { ptr, size, frozen, meta }
///            |                  '-- ChunkMeta: atomics the registry reads,
///            |                      with the lease's reference count and
///            |                      the fields that hold it
///            '-- the chunk's memory: [ frozen | spare ]
///   Slice { ptr, start, len, meta, field slot }   (`slice`: no allocation)
///   ChunkRef { ptr, meta }                        (`hold`: no allocation)
/// ```
pub struct Chunk {
    ptr: NonNull<u8>,
    size: usize,
    frozen: usize,
    /// Taken by `drop` (so that the drop glue has nothing left to do).
    meta: ManuallyDrop<Arc<ChunkMeta>>,
    /// A [`ChunkRef`] or a [`Slice`] was made: the lease may have other
    /// references than this `Chunk` (see `ChunkMeta::refs`).
    shared: AtomicBool,
}

// SAFETY: the raw pointer is only written through `&mut Chunk` (exclusive)
// and only in the spare region no slice reads.
unsafe impl Send for Chunk {}
// SAFETY: `&Chunk` allows no writes to the memory.
unsafe impl Sync for Chunk {}

impl fmt::Debug for Chunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chunk").field("size", &self.size).field("frozen", &self.frozen).finish()
    }
}

impl Chunk {
    fn meta(&self) -> &Arc<ChunkMeta> {
        &self.meta
    }

    /// Takes one more of the lease's references for a handle.
    fn share(&self) -> Arc<ChunkMeta> {
        let meta = self.meta();
        meta.add_ref();
        self.shared.store(true, Ordering::Relaxed);
        meta.clone()
    }

    /// Bytes in the chunk.
    pub fn capacity(&self) -> usize {
        self.size
    }

    /// End of the read-only prefix.
    pub fn frozen(&self) -> usize {
        self.frozen
    }

    /// The writable region `[frozen, capacity)`.
    pub fn spare_mut(&mut self) -> &mut [u8] {
        // SAFETY: `[frozen, size)` lies inside the allocation, and no slice
        // covers it: `slice()` only cuts ranges below `frozen`, which never
        // decreases. `&mut self` makes this the only writer.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(self.frozen), self.size - self.frozen) }
    }

    /// Makes `[0, end)` read-only so that it can be shared.
    ///
    /// # Panics
    /// If `end` is below the current frozen point or beyond the capacity.
    pub fn freeze_to(&mut self, end: usize) {
        assert!(end >= self.frozen && end <= self.size, "freeze_to({end}) outside {}..={}", self.frozen, self.size);
        self.frozen = end;
    }

    /// A read-only handle on a frozen range, without an allocation. Keeps
    /// the whole chunk leased.
    ///
    /// # Panics
    /// If the range reaches past the frozen point.
    pub fn slice(&self, range: Range<usize>) -> Slice {
        assert!(
            range.start <= range.end && range.end <= self.frozen,
            "{range:?} is not frozen (frozen {})",
            self.frozen
        );
        Slice {
            ptr: self.ptr,
            start: range.start,
            len: range.len(),
            meta: ManuallyDrop::new(self.share()),
            slot: NO_FIELD,
        }
    }

    /// A `Bytes` handle on a frozen range: a [`Slice`] behind
    /// `Bytes::from_owner`, which allocates its small owner box.
    ///
    /// # Panics
    /// If the range reaches past the frozen point.
    pub fn bytes(&self, range: Range<usize>) -> Bytes {
        self.slice(range).into_bytes()
    }

    /// A borrowed view of a frozen range.
    ///
    /// # Panics
    /// If the range reaches past the frozen point.
    pub fn frozen_slice(&self, range: Range<usize>) -> &[u8] {
        assert!(
            range.start <= range.end && range.end <= self.frozen,
            "{range:?} is not frozen (frozen {})",
            self.frozen
        );
        // SAFETY: the range is inside `[0, frozen)`, initialised and never
        // written again while the chunk lives; `&self` ties the borrow to it.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(range.start), range.len()) }
    }

    /// An opaque reference that keeps the chunk out of the pool (what a
    /// barrier slot holds). Allocates nothing: it counts in the chunk's own
    /// `ChunkMeta::refs`.
    pub fn hold(&self) -> ChunkRef {
        ChunkRef::for_slot(self.ptr, self.share())
    }
}

impl Drop for Chunk {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: `drop` runs once, and `meta` is not used after it.
        let meta = unsafe { ManuallyDrop::take(&mut self.meta) };
        // No other reference was ever made (that takes `&Chunk`, which
        // `&mut self` says is over): this was the only one, and the chunk
        // goes back without touching the count.
        if !*self.shared.get_mut() {
            debug_assert_eq!(meta.refs.load(Ordering::Relaxed), 1);
            give_back(RawChunk { ptr: self.ptr, meta });
        } else {
            release_shared(self.ptr, meta);
        }
    }
}

/// [`Chunk`]'s drop when slices or barrier references remain: the last of
/// them gives the chunk back.
#[cold]
#[inline(never)]
fn release_shared(ptr: NonNull<u8>, meta: Arc<ChunkMeta>) {
    // Only the `Chunk` writes `state` while the chunk is leased (the last
    // reference, which clears it, comes after this one): no
    // read-modify-write needed.
    let state = meta.state.load(Ordering::Relaxed);
    meta.state.store(state | RELEASED, Ordering::Relaxed);
    release_ref(ptr, meta);
}

/// A read-only range of a leased chunk ([`Chunk::slice`]): one of the
/// lease's `ChunkMeta::refs`, so making, cloning and dropping one
/// allocates nothing (a `Bytes` handle needs an owner box).
///
/// A slice marked as a decoded field ([`mark_field`](Slice::mark_field))
/// is counted under that field on its chunk for as long as it (or a clone
/// or sub-slice of it) lives: the pool profile names the fields that hold
/// a chunk *now*, not every field ever cut from it.
pub struct Slice {
    /// The chunk's memory (so that a heap scan finds what holds a slice
    /// pointing at the chunk).
    ptr: NonNull<u8>,
    start: usize,
    len: usize,
    /// Taken by `drop`.
    meta: ManuallyDrop<Arc<ChunkMeta>>,
    /// The field slot it is counted in ([`ChunkMeta::fields`]), or
    /// [`NO_FIELD`].
    slot: u8,
}

// SAFETY: a slice only reads `[start, start + len)`, which lies in the
// chunk's frozen prefix, never written again while the lease lives; the
// counts it touches are atomics.
unsafe impl Send for Slice {}
// SAFETY: as above: `&Slice` reads immutable bytes.
unsafe impl Sync for Slice {}

impl Slice {
    /// A sub-range, relative to this slice; counted under the same field.
    ///
    /// # Panics
    /// If the range reaches past the slice's end.
    pub fn slice(&self, range: Range<usize>) -> Slice {
        assert!(range.start <= range.end && range.end <= self.len, "{range:?} outside a slice of {}", self.len);
        let mut out = self.clone();
        out.start += range.start;
        out.len = range.len();
        out
    }

    /// Counts this slice (and its clones) as `field` of the chunk until it
    /// drops, for the pool profile's holders.
    pub fn mark_field(&mut self, field: FieldId) {
        self.meta.field_release(self.slot);
        self.slot = self.meta.field_acquire(field);
    }

    /// The field it is counted as, if a slot was free for it.
    pub fn field(&self) -> Option<FieldId> {
        Some(slot_field(self.meta.fields.get(usize::from(self.slot))?.load(Ordering::Relaxed)))
    }

    /// A reference on the whole chunk for a barrier slot (as
    /// [`Chunk::hold`]).
    pub fn hold(&self) -> ChunkRef {
        self.meta.add_ref();
        ChunkRef::for_slot(self.ptr, Arc::clone(&self.meta))
    }

    /// A `Bytes` handle over the same range, for APIs that take `Bytes`
    /// (`faststr`, `sonic-rs`). Allocates the owner box of
    /// `Bytes::from_owner`; the slice inside it keeps its field count.
    pub fn into_bytes(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl Deref for Slice {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        // SAFETY: `[start, start + len)` was frozen when the slice was cut
        // (`Chunk::slice` checks), so it is initialised and never written
        // again while a reference, this one among them, keeps the lease.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(self.start), self.len) }
    }
}

impl AsRef<[u8]> for Slice {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Clone for Slice {
    fn clone(&self) -> Slice {
        self.meta.add_ref();
        if let Some(slot) = self.meta.fields.get(usize::from(self.slot)) {
            // Held by this slice: the slot keeps its tag.
            slot.fetch_add(1, Ordering::Relaxed);
        }
        Slice { ptr: self.ptr, start: self.start, len: self.len, meta: self.meta.clone(), slot: self.slot }
    }
}

impl Drop for Slice {
    #[inline]
    fn drop(&mut self) {
        self.meta.field_release(self.slot);
        // SAFETY: `drop` runs once, and `meta` is not used after it.
        let meta = unsafe { ManuallyDrop::take(&mut self.meta) };
        release_ref(self.ptr, meta);
    }
}

impl fmt::Debug for Slice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slice").field("len", &self.len).field("chunk", &self.meta.size).finish()
    }
}

/// A reference on a whole chunk that cannot be read, only held: one of the
/// lease's `ChunkMeta::refs`.
///
/// It keeps the chunk's address (as a [`Slice`] does), so
/// that a heap scan finds what holds it pointing into the chunk.
pub struct ChunkRef {
    ptr: NonNull<u8>,
    /// Taken by `drop`.
    meta: ManuallyDrop<Arc<ChunkMeta>>,
}

// SAFETY: `ptr` is never dereferenced through a `ChunkRef`; it only goes
// back to the pool with the last reference, as a slice's would.
unsafe impl Send for ChunkRef {}
// SAFETY: `&ChunkRef` gives access to nothing but the chunk's size.
unsafe impl Sync for ChunkRef {}

impl ChunkRef {
    /// The barrier slot's reference, from one of the lease's references
    /// already taken (`meta`, with its count raised).
    fn for_slot(ptr: NonNull<u8>, meta: Arc<ChunkMeta>) -> ChunkRef {
        meta.slot_refs.fetch_add(1, Ordering::Relaxed);
        ChunkRef { ptr, meta: ManuallyDrop::new(meta) }
    }

    /// Size of the chunk it holds.
    pub fn size(&self) -> usize {
        self.meta.size
    }
}

impl Drop for ChunkRef {
    #[inline]
    fn drop(&mut self) {
        self.meta.slot_refs.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: `drop` runs once, and `meta` is not used after it.
        let meta = unsafe { ManuallyDrop::take(&mut self.meta) };
        release_ref(self.ptr, meta);
    }
}

impl fmt::Debug for ChunkRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkRef").field("size", &self.meta.size).finish()
    }
}

/// Pool totals.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Bytes in chunks currently leased (pooled and not).
    pub leased_bytes: usize,
    /// Of which in chunks too large to pool.
    pub unpooled_leased_bytes: usize,
    /// Bytes cached in the class lists and the thread caches.
    pub cached_bytes: usize,
    /// Bytes ever taken from the system.
    pub allocated_bytes: u64,
    /// Chunks ever taken from the system.
    pub allocated_chunks: u64,
    /// Classes with something leased or cached.
    pub classes: Vec<ClassStats>,
}

/// One size class.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// Chunk size of the class.
    pub size: usize,
    /// Chunks leased.
    pub leased_chunks: usize,
    /// Bytes leased.
    pub leased_bytes: usize,
    /// Chunks cached.
    pub cached_chunks: usize,
    /// Bytes cached.
    pub cached_bytes: usize,
}

/// One leased chunk, as [`Pool::leases`] reports it.
#[derive(Clone, Debug)]
pub struct Lease {
    /// Chunk size.
    pub size: usize,
    /// Whether it goes back to a free list.
    pub pooled: bool,
    /// Who took it.
    pub taker: Taker,
    /// How long ago, on a coarse clock: a lease from a thread's cache is
    /// stamped with that cache's clock, which the pool's GC thread sets
    /// every 50 ms; other leases (and every lease in a pool without a GC
    /// thread) read the kernel's coarse clock (`CLOCK_MONOTONIC_COARSE`,
    /// the kernel tick: 1 to 10 ms). Resolution: 50 ms.
    pub age: std::time::Duration,
    /// The buffer that took it has let go: whatever holds it now is a field
    /// or a barrier slot.
    pub released: bool,
    /// References held by barrier slots.
    pub slot_refs: u32,
    /// Fields decoded from it without a copy that still reference it (a
    /// [`Slice`] marked with [`Slice::mark_field`] and not yet dropped).
    pub fields: Vec<FieldId>,
}

impl Lease {
    /// Still leased although its buffer let go: pinned by someone else.
    pub fn pinned(&self) -> bool {
        self.released
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Instant;

    fn no_gc() -> PoolConfig {
        PoolConfig { release_after: None, ..PoolConfig::default() }
    }

    /// Runs `f` on a new thread that stays alive (with whatever it cached)
    /// until the returned sender is dropped or sent to.
    fn on_live_thread(f: impl FnOnce() + Send + 'static) -> (mpsc::Sender<()>, std::thread::JoinHandle<()>) {
        let (done_tx, done_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            f();
            done_tx.send(()).unwrap();
            let _ = stop_rx.recv();
        });
        done_rx.recv().unwrap();
        (stop_tx, thread)
    }

    #[test]
    fn classes_round_up_to_powers_of_two() {
        assert_eq!(class_of(0), 0);
        assert_eq!(class_of(1), 0);
        assert_eq!(class_of(2), 1);
        assert_eq!(class_of(1000), 10);
        assert_eq!(class_of(1024), 10);
        assert_eq!(class_of(1025), 11);
        assert_eq!(class_of(MAX_POOLED), NUM_CLASSES - 1);
    }

    #[test]
    fn one_byte_slice_pins_the_whole_chunk() {
        let pool = Pool::new(PoolConfig::default());
        let mut c = pool.lease(8 << 10, Taker::ConnRead);
        c.spare_mut()[..3].copy_from_slice(b"abc");
        c.freeze_to(3);
        let b = c.slice(1..2);
        let as_bytes = c.bytes(2..3);
        assert_eq!((&b[..], &as_bytes[..]), (&b"b"[..], &b"c"[..]));
        drop(c);
        drop(as_bytes);
        assert_eq!(pool.stats().leased_bytes, 8 << 10);
        let leases = pool.leases();
        assert_eq!(leases.len(), 1);
        assert!(leases[0].pinned());
        drop(b);
        let s = pool.stats();
        assert_eq!(s.leased_bytes, 0);
        assert_eq!(s.cached_bytes, 8 << 10);
        assert!(pool.leases().is_empty());
    }

    #[test]
    fn a_slice_dropped_on_another_thread_after_its_chunk_returns_it_there() {
        let pool = Pool::new(no_gc());
        let mut c = pool.lease(4096, Taker::ConnRead);
        c.freeze_to(10);
        let slice = c.slice(0..1);
        let held = c.hold();
        drop(c);
        let (stop, thread) = on_live_thread(move || drop(slice));
        assert_eq!(pool.stats().leased_bytes, 4096, "the barrier reference still pins it");
        assert!(pool.leases()[0].pinned());
        drop(held);
        let s = pool.stats();
        assert_eq!((s.leased_bytes, s.cached_bytes), (0, 4096));
        drop(stop);
        thread.join().unwrap();
        drop(pool.lease(4096, Taker::ConnRead));
        assert_eq!(pool.stats().allocated_chunks, 1, "reused");
    }

    #[test]
    fn a_barrier_reference_alone_keeps_the_chunk_leased() {
        let pool = Pool::new(no_gc());
        let mut c = pool.lease(4096, Taker::Encode);
        c.freeze_to(10);
        drop(c.hold());
        let held = c.hold();
        assert_eq!(pool.leases()[0].slot_refs, 1);
        drop(c);
        assert_eq!(pool.stats().leased_bytes, 4096, "the barrier reference still pins it");
        let lease = &pool.leases()[0];
        assert!(lease.pinned());
        assert_eq!((lease.slot_refs, lease.taker), (1, Taker::Encode));
        // Given back on another thread: to that thread's cache.
        let (stop, thread) = on_live_thread(move || drop(held));
        let s = pool.stats();
        assert_eq!((s.leased_bytes, s.cached_bytes), (0, 4096));
        assert!(pool.leases().is_empty());
        drop(stop);
        thread.join().unwrap();
        // Reused, and its next lease starts with no reference left over.
        let c = pool.lease(4096, Taker::ConnRead);
        let lease = &pool.leases()[0];
        assert_eq!((lease.slot_refs, lease.released, lease.taker), (0, false, Taker::ConnRead));
        drop(c);
        assert!(pool.leases().is_empty());
        assert_eq!(pool.stats().allocated_chunks, 1);
    }

    #[test]
    fn handles_and_barrier_references_dropped_in_any_order_return_the_chunk_once() {
        let pool = Pool::new(no_gc());
        for order in 0..6 {
            let mut c = pool.lease(1024, Taker::ConnRead);
            c.freeze_to(4);
            let (b, h) = (c.bytes(0..2), c.hold());
            match order {
                0 => drop((c, b, h)),
                1 => drop((c, h, b)),
                2 => drop((b, c, h)),
                3 => drop((b, h, c)),
                4 => drop((h, c, b)),
                _ => drop((h, b, c)),
            }
            let s = pool.stats();
            assert_eq!((s.leased_bytes, s.cached_bytes), (0, 1024), "order {order}");
        }
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..500 {
                        let mut c = pool.lease(1024, Taker::ConnRead);
                        c.freeze_to(4);
                        let (b, h) = (c.slice(0..2), c.hold());
                        let t = std::thread::spawn(move || drop((b, h)));
                        drop(c);
                        t.join().unwrap();
                    }
                });
            }
        });
        let s = pool.stats();
        assert_eq!(s.leased_bytes, 0, "{s:?}");
        assert_eq!(s.cached_bytes as u64, s.allocated_bytes, "{s:?}");
    }

    #[test]
    fn cached_chunks_are_reused_not_reallocated() {
        let pool = Pool::new(PoolConfig::default());
        for _ in 0..10 {
            drop(pool.lease(4000, Taker::Encode));
        }
        let s = pool.stats();
        assert_eq!(s.allocated_chunks, 1);
        assert_eq!(s.cached_bytes, 4096);
    }

    #[test]
    fn large_requests_are_never_cached() {
        let pool = Pool::new(PoolConfig::default());
        let c = pool.lease(MAX_POOLED + 1, Taker::ConnRead);
        assert_eq!(c.capacity(), MAX_POOLED + 1);
        assert_eq!(pool.stats().unpooled_leased_bytes, MAX_POOLED + 1);
        assert!(!pool.leases()[0].pooled);
        drop(c);
        let s = pool.stats();
        assert_eq!(s.cached_bytes, 0);
        assert_eq!(s.leased_bytes, 0);
        assert!(pool.leases().is_empty());
    }

    #[test]
    fn gc_frees_chunks_not_reused_within_two_cycles() {
        let pool = Pool::new(no_gc());
        drop(pool.lease(1024, Taker::ConnRead));
        assert_eq!(pool.gc(), 0, "first cycle: the chunk becomes a victim");
        assert_eq!(pool.stats().cached_bytes, 1024);
        let reused = pool.lease(1000, Taker::ConnRead);
        assert_eq!(pool.stats().allocated_chunks, 1, "victims are reused");
        drop(reused);
        pool.gc();
        assert_eq!(pool.gc(), 1024, "two cycles without reuse free it");
        assert_eq!(pool.stats().cached_bytes, 0);
    }

    #[test]
    fn the_gc_thread_runs_until_the_pool_is_dropped() {
        let period = Duration::from_millis(5);
        let pool = Pool::new(PoolConfig { release_after: Some(period), ..PoolConfig::default() });
        drop(pool.lease(4096, Taker::ConnRead));
        let deadline = Instant::now() + Duration::from_secs(10);
        while pool.stats().cached_bytes > 0 && Instant::now() < deadline {
            std::thread::sleep(period);
        }
        assert_eq!(pool.stats().cached_bytes, 0);
    }

    #[test]
    fn cache_cap_frees_beyond_the_limit_and_trim_frees_all() {
        let pool = Pool::new(PoolConfig { max_cached_per_class: 2048, ..PoolConfig::default() });
        let chunks: Vec<_> = (0..4).map(|_| pool.lease(1024, Taker::ConnRead)).collect();
        drop(chunks);
        assert_eq!(pool.stats().cached_bytes, 2048);
        assert_eq!(pool.trim(), 2048);
        assert_eq!(pool.stats().cached_bytes, 0);
    }

    #[test]
    fn the_cap_bounds_thread_caches_and_class_lists_together() {
        let cap = 3 << 10;
        let pool = Pool::new(PoolConfig { max_cached_per_class: cap, ..no_gc() });
        let mut threads = Vec::new();
        for _ in 0..4 {
            let p = pool.clone();
            threads.push(on_live_thread(move || {
                let chunks: Vec<_> = (0..4).map(|_| p.lease(1024, Taker::ConnRead)).collect();
                drop(chunks);
            }));
        }
        let s = pool.stats();
        // 16 when every thread had a cache; fewer when a test beside this
        // one held the caches, and a thread took the chunks the one before
        // it left in the class list.
        assert!((4..=16).contains(&s.allocated_chunks), "{s:?}");
        assert_eq!(s.cached_bytes, cap, "{s:?}");
        assert_eq!(s.leased_bytes, 0);
        assert_eq!(pool.trim(), cap);
        for (stop, thread) in threads {
            drop(stop);
            thread.join().unwrap();
        }
    }

    #[test]
    fn thread_caches_count_in_stats() {
        let pool = Pool::new(no_gc());
        let p = pool.clone();
        let (stop, thread) = on_live_thread(move || {
            let chunks: Vec<_> = (0..3).map(|_| p.lease(512, Taker::Encode)).collect();
            drop(chunks);
            std::mem::forget(p.lease(100, Taker::Encode));
        });
        let s = pool.stats();
        let class = |size| s.classes.iter().find(|c| c.size == size).cloned().unwrap_or_default();
        assert_eq!((class(512).cached_chunks, class(512).cached_bytes), (3, 1536));
        assert_eq!((class(128).leased_chunks, class(128).leased_bytes), (1, 128));
        assert_eq!((s.cached_bytes, s.leased_bytes), (1536, 128));
        drop(stop);
        thread.join().unwrap();
    }

    #[test]
    fn leased_on_one_thread_given_back_on_another() {
        let pool = Pool::new(no_gc());
        let chunks: Vec<_> = (0..3).map(|_| pool.lease(2048, Taker::ConnRead)).collect();
        assert_eq!(pool.stats().leased_bytes, 3 * 2048);
        let (stop, thread) = on_live_thread(move || drop(chunks));
        let s = pool.stats();
        assert_eq!((s.leased_bytes, s.cached_bytes), (0, 3 * 2048));
        assert!(s.classes.iter().all(|c| c.leased_chunks == 0));
        drop(stop);
        thread.join().unwrap();
    }

    #[test]
    fn gc_and_trim_reach_the_caches_of_live_threads() {
        let pool = Pool::new(no_gc());
        let p = pool.clone();
        let (stop, thread) = on_live_thread(move || drop(p.lease(4096, Taker::Encode)));
        assert_eq!(pool.stats().cached_bytes, 4096);
        assert_eq!(pool.gc(), 0, "first cycle: a victim");
        assert_eq!(pool.gc(), 4096, "second cycle: freed, though its thread never came back");
        let p = pool.clone();
        let (stop2, thread2) = on_live_thread(move || drop(p.lease(8192, Taker::Encode)));
        assert_eq!(pool.trim(), 8192);
        assert_eq!(pool.stats().cached_bytes, 0);
        for (stop, thread) in [(stop, thread), (stop2, thread2)] {
            drop(stop);
            thread.join().unwrap();
        }
    }

    #[test]
    fn a_thread_that_exits_leaves_its_cache_to_the_others() {
        let pool = Pool::new(no_gc());
        let p = pool.clone();
        std::thread::spawn(move || {
            let chunks: Vec<_> = (0..2).map(|_| p.lease(16 << 10, Taker::ConnRead)).collect();
            drop(chunks);
        })
        .join()
        .unwrap();
        let s = pool.stats();
        assert_eq!((s.cached_bytes, s.allocated_chunks), (32 << 10, 2));
        let class = &pool.shared.classes[class_of(16 << 10)];
        assert_eq!(lock(class).free.len(), 2, "emptied into the class list when its thread exited");
        let again: Vec<_> = (0..2).map(|_| pool.lease(16 << 10, Taker::ConnRead)).collect();
        assert_eq!(pool.stats().allocated_chunks, 2, "reused by this thread");
        drop(again);
    }

    #[test]
    fn dropping_the_pool_frees_every_chunk_when_the_last_comes_back() {
        let pool = Pool::new(PoolConfig::default());
        let shared = Arc::downgrade(&pool.shared);
        let p = pool.clone();
        let (stop, thread) = on_live_thread(move || {
            drop(p.lease(1024, Taker::Encode));
            drop(p);
        });
        let mut kept = pool.lease(4096, Taker::ConnRead);
        kept.freeze_to(1);
        let slice = kept.slice(0..1);
        drop(kept);
        drop(pool.lease(64, Taker::Encode));
        drop(pool);
        assert!(shared.upgrade().is_some(), "a leased chunk keeps its pool");
        assert_eq!(shared.upgrade().unwrap().stats().cached_bytes, 0, "cached chunks were freed, thread caches too");
        drop(slice);
        // The GC thread, or another test's exiting thread walking `POOLS`,
        // may hold the pool for a moment through its weak reference.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while shared.strong_count() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(shared.upgrade().is_none(), "every chunk was freed, and the pool with the last");
        drop(stop);
        thread.join().unwrap();
    }

    #[test]
    fn stealers_and_owners_race_without_losing_a_chunk() {
        let pool = Pool::new(no_gc());
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..3)
                .map(|t| {
                    let (pool, stop) = (&pool, &stop);
                    s.spawn(move || {
                        let mut held = Vec::new();
                        let mut n = 0usize;
                        while !stop.load(Ordering::Relaxed) {
                            n += 1;
                            let size = [64, 1000, 4096, 70_000][(n + t) % 4];
                            held.push(pool.lease(size, Taker::Encode));
                            if held.len() > 3 {
                                held.swap_remove(n % held.len());
                            }
                        }
                    })
                })
                .collect();
            let deadline = Instant::now() + Duration::from_millis(300);
            let mut rounds = 0;
            while Instant::now() < deadline {
                match rounds % 3 {
                    0 => drop(pool.stats()),
                    1 => drop(pool.gc()),
                    _ => drop(pool.trim()),
                }
                rounds += 1;
            }
            stop.store(true, Ordering::Relaxed);
            workers.into_iter().for_each(|w| w.join().unwrap());
            assert!(rounds > 10, "{rounds} rounds");
        });
        let s = pool.stats();
        assert_eq!(s.leased_bytes, 0, "{s:?}");
        assert_eq!(pool.trim(), s.cached_bytes);
        assert!(pool.shared.live.iter().all(|l| l.load(Ordering::Relaxed) == 0), "every chunk was freed");
        assert!(lock(&pool.shared.registry).entries.iter().all(Option::is_none));
    }

    #[test]
    fn fields_and_slot_refs_are_reported() {
        let pool = Pool::new(PoolConfig::default());
        let f = FieldId::intern("Test.pool (field 9)");
        let mut c = pool.lease(100, Taker::ConnRead);
        c.freeze_to(10);
        let mut field = c.slice(2..6);
        field.mark_field(f);
        assert_eq!(field.field(), Some(f));
        let held = c.hold();
        let lease = &pool.leases()[0];
        assert_eq!(lease.fields, vec![f]);
        assert_eq!(lease.slot_refs, 1);
        assert!(!lease.released);
        assert_eq!(lease.taker, Taker::ConnRead);
        assert!(lease.age < Duration::from_secs(5), "{:?}", lease.age);
        drop(c);
        assert!(pool.leases()[0].released);
        drop(field);
        assert_eq!(pool.leases()[0].fields, vec![], "a field that let go no longer holds the chunk");
        drop(held);
        assert!(pool.leases().is_empty());
    }

    #[test]
    fn a_field_holds_its_chunk_while_any_clone_or_sub_slice_lives() {
        let pool = Pool::new(PoolConfig::default());
        let names =
            ["Test.a (field 1)", "Test.b (field 2)", "Test.c (field 3)", "Test.d (field 4)", "Test.e (field 5)"];
        let ids: Vec<FieldId> = names.iter().map(|n| FieldId::intern(n)).collect();
        let mut c = pool.lease(100, Taker::ConnRead);
        c.freeze_to(50);
        let mut slices: Vec<Slice> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let mut s = c.slice(i * 10..i * 10 + 10);
                s.mark_field(*id);
                s
            })
            .collect();
        drop(c);
        // Four slots: the fifth field is counted nowhere, and says so.
        assert_eq!(pool.leases()[0].fields, ids[..4]);
        assert_eq!(slices[4].field(), None);
        let a = slices.remove(0);
        let (kept, copy) = (a.slice(3..4), a.clone());
        drop(a);
        drop(copy);
        assert_eq!(kept.field(), Some(ids[0]), "a sub-slice is the same field");
        assert_eq!(pool.leases()[0].fields, ids[..4], "a one-byte sub-slice still holds field a");
        drop(kept);
        assert_eq!(pool.leases()[0].fields, ids[1..4]);
        // Slot a is free again: a re-marked slice takes it.
        let mut e = slices.pop().unwrap();
        e.mark_field(ids[4]);
        assert_eq!(pool.leases()[0].fields, ids[1..5]);
        drop(slices);
        assert_eq!(pool.leases()[0].fields, ids[4..5]);
        drop(e);
        assert!(pool.leases().is_empty());
        // The next lease of the same memory starts with no field.
        let mut again = pool.lease(100, Taker::ConnRead);
        again.freeze_to(1);
        let s = again.slice(0..1);
        assert_eq!((pool.leases()[0].fields.len(), pool.stats().allocated_chunks), (0, 1));
        drop((s, again));
    }

    #[test]
    fn user_takers_are_reported_by_name() {
        let pool = Pool::new(PoolConfig::default());
        let names = ["test one", "test two", "test one"];
        let chunks: Vec<_> = names.iter().map(|n| pool.lease(10, Taker::User(n))).collect();
        let mut seen: Vec<_> = pool.leases().iter().map(|l| l.taker).collect();
        seen.sort_by_key(|t| t.name());
        assert_eq!(seen, [Taker::User("test one"), Taker::User("test one"), Taker::User("test two")]);
        let other = String::from("test two");
        let leaked: &'static str = Box::leak(other.into_boxed_str());
        let c = pool.lease(10, Taker::User(leaked));
        assert!(pool.leases().iter().filter(|l| l.taker == Taker::User("test two")).count() == 2);
        // Too long to store inline: interned.
        let long: &'static str = Box::leak("x".repeat(10_000).into_boxed_str());
        let d = pool.lease(10, Taker::User(long));
        assert_eq!(pool.leases().iter().filter(|l| l.taker == Taker::User(long)).count(), 1);
        drop((chunks, c, d));
        assert!(pool.leases().is_empty());
    }

    #[test]
    fn more_threads_than_thread_caches_share_the_class_lists() {
        let pool = Pool::new(no_gc());
        let threads = shard_count() + 8;
        let start = std::sync::Barrier::new(threads);
        std::thread::scope(|s| {
            let spawned: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        for _ in 0..100 {
                            let a = pool.lease(1024, Taker::Encode);
                            drop(pool.lease(2048, Taker::Encode));
                            drop(a);
                        }
                        let cached = SLOT.with(Cell::get) < pool.shared.shards.len();
                        start.wait();
                        let s = pool.stats();
                        assert_eq!(s.leased_bytes, 0, "{s:?}");
                        cached
                    })
                })
                .collect();
            // A real join waits for the thread's exit hooks too.
            let uncached = spawned.into_iter().map(|t| t.join().unwrap()).filter(|cached| !cached).count();
            assert!(uncached >= 8, "{uncached} threads went without a cache: all were alive at once");
        });
        let s = pool.stats();
        assert_eq!(s.leased_bytes, 0);
        assert_eq!(s.cached_bytes as u64, s.allocated_bytes, "every chunk made is cached: {s:?}");
        pool.shared.steal(0..pool.shared.shards.len(), |_, cache| {
            assert!(cache.classes.iter().all(|m| m.len == 0 && m.budget == 0), "exits emptied every cache");
        });
        assert_eq!(pool.trim() as u64, s.allocated_bytes);
    }

    #[test]
    fn leasing_cached_chunks_never_takes_the_registry_lock() {
        let pool = Pool::new(no_gc());
        let (warm_tx, warm_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel();
        let p = pool.clone();
        let thread = std::thread::spawn(move || {
            drop(p.lease(4096, Taker::Encode));
            warm_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            for _ in 0..1000 {
                drop(p.lease(4096, Taker::Encode));
            }
            done_tx.send(()).unwrap();
        });
        warm_rx.recv().unwrap();
        // As if `leases` were reading a very large registry.
        let registry = lock(&pool.shared.registry);
        go_tx.send(()).unwrap();
        let done = done_rx.recv_timeout(Duration::from_secs(20));
        drop(registry);
        assert!(done.is_ok(), "leasing waited for the registry");
        thread.join().unwrap();
        assert_eq!(pool.stats().leased_bytes, 0);
    }

    #[test]
    fn the_pool_keeps_no_address_of_a_leased_chunk() {
        let pool = Pool::new(no_gc());
        let chunks: Vec<_> = (0..3).map(|_| pool.lease(4096, Taker::Encode)).collect();
        drop(chunks);
        // Two of the three come out of this thread's cache.
        let chunks: Vec<_> = (0..2).map(|_| pool.lease(4096, Taker::Encode)).collect();
        assert_eq!(pool.stats().allocated_chunks, 3);
        let mut leased: Vec<usize> = chunks.iter().map(|c| c.ptr.as_ptr() as usize).collect();
        leased.sort();
        pool.shared.steal(0..pool.shared.shards.len(), |_, cache| {
            for m in &cache.classes {
                assert!(m.addrs[m.len as usize..].iter().all(|&a| a == 0));
                assert!(m.metas[m.len as usize..].iter().all(Option::is_none));
                assert!(m.addrs.iter().all(|a| leased.binary_search(a).is_err()));
            }
        });
        drop(chunks);
    }

    #[test]
    #[should_panic(expected = "not frozen")]
    fn slicing_the_spare_region_panics() {
        let pool = Pool::new(PoolConfig::default());
        let c = pool.lease(100, Taker::ConnRead);
        let _ = c.slice(0..1);
    }
}
