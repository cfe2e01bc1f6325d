//! The size-class buffer pool: Netpoll's `mcache`, with `Bytes` handles.
//!
//! Requests are rounded up to a power of two; each class keeps a free list of
//! chunks of exactly that size. Sizes above [`PoolConfig::max_pooled`]
//! (8 MiB by default, as in Netpoll) are plain allocations that are never
//! cached. Go's `sync.Pool` empties itself over GC cycles: an object not
//! reused within two cycles is freed (the pool moves its contents to a
//! "victim" cache at each GC and drops the previous victims). This pool does
//! the same on a timer ([`PoolConfig::release_after`], one "cycle" per
//! period, driven by [`Pool::gc`]), caps what each class caches
//! ([`PoolConfig::max_cached_per_class`]) and can be [trimmed](Pool::trim).
//!
//! # Sharing
//!
//! A leased [`Chunk`] is written by its single owner (a link buffer) and read
//! through `Bytes` handles cut from its written prefix:
//!
//! ```text
//!   chunk  [ frozen: read-only, shared as Bytes | spare: owner writes here ]
//!          0                                 frozen                     cap
//! ```
//!
//! Every handle, however small (`bytes.slice(..1)`), keeps the *whole* chunk
//! out of the pool; the chunk goes back to its class when the last handle
//! and the owner are gone. This is exactly how a one-byte slice of a request
//! field pins a whole pooled buffer in the guide's leaks.
//!
//! ```
//! use rpc::{Pool, PoolConfig, Taker};
//! let pool = Pool::new(PoolConfig::default());
//! let mut chunk = pool.lease(1000, Taker::User("doc"));
//! assert_eq!(chunk.capacity(), 1024);
//! chunk.spare_mut()[..5].copy_from_slice(b"hello");
//! chunk.freeze_to(5);
//! let one = chunk.bytes(0..1);
//! drop(chunk);
//! assert_eq!(pool.stats().leased_bytes, 1024); // one byte pins 1 KiB
//! drop(one);
//! assert_eq!(pool.stats().leased_bytes, 0);
//! assert_eq!(pool.stats().cached_bytes, 1024);
//! ```

use std::alloc::{self, Layout};
use std::fmt;
use std::ops::Range;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use bytes::Bytes;

/// Number of power-of-two classes: 1 B (class 0) up to 8 MiB (class 23).
pub const NUM_CLASSES: usize = 24;
/// The largest size Netpoll pools: 8 MiB.
pub const MAX_POOLED: usize = 1 << (NUM_CLASSES - 1);

const CHUNK_ALIGN: usize = 16;

/// Cache policy of a [`Pool`].
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// Requests above this size are plain allocations, never cached.
    /// Clamped to [`MAX_POOLED`].
    pub max_pooled: usize,
    /// Bytes each size class may keep cached; a chunk returned beyond this is
    /// freed. `usize::MAX` caches without limit.
    pub max_cached_per_class: usize,
    /// The period of the pool's "GC cycle": a background thread calls
    /// [`Pool::gc`] this often, so a cached chunk not reused within one to
    /// two periods is freed, as Go's `sync.Pool` frees objects not reused
    /// within two GC cycles. `None` keeps cached chunks until [`Pool::trim`].
    pub release_after: Option<std::time::Duration>,
}

impl Default for PoolConfig {
    /// Netpoll's behaviour: pool up to 8 MiB; cache up to 64 MiB per class;
    /// a GC cycle every 500 ms (Go collects that often or more under load).
    fn default() -> Self {
        PoolConfig {
            max_pooled: MAX_POOLED,
            max_cached_per_class: 64 << 20,
            release_after: Some(std::time::Duration::from_millis(500)),
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
    /// Anything else, named by the caller.
    User(&'static str),
}

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
}

/// A decoded field that was cut from a chunk without a copy (see
/// [`Chunk::mark_field`]). Interned once; at most 64 distinct fields.
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
        let mut names = FIELD_NAMES.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = names.iter().position(|n| *n == name) {
            return FieldId(i as u8);
        }
        assert!(names.len() < 64, "at most 64 field names can be interned");
        names.push(name);
        FieldId((names.len() - 1) as u8)
    }

    /// The name it was interned with.
    pub fn name(self) -> &'static str {
        FIELD_NAMES.lock().unwrap_or_else(|e| e.into_inner())[self.0 as usize]
    }
}

/// Book-keeping of one leased chunk, shared by the chunk's owner object and
/// the pool's lease registry. Reused with its buffer while cached.
#[derive(Debug)]
struct ChunkMeta {
    size: usize,
    class: Option<u8>,
    taker: Mutex<Taker>,
    leased_at: Mutex<Instant>,
    /// Bit i set: field `FieldId(i)` was cut from this chunk without a copy.
    fields: AtomicU64,
    /// The buffer that leased it let go of it.
    released: AtomicBool,
    /// References held by barrier slots (see `barrier`).
    slot_refs: AtomicU32,
    /// Index in the lease registry.
    slot: AtomicUsize,
}

impl ChunkMeta {
    fn reset(&self, taker: Taker) {
        *self.taker.lock().unwrap_or_else(|e| e.into_inner()) = taker;
        *self.leased_at.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.fields.store(0, Ordering::Relaxed);
        self.released.store(false, Ordering::Relaxed);
        self.slot_refs.store(0, Ordering::Relaxed);
    }
}

/// Memory of one chunk: a raw allocation of `meta.size` bytes.
struct RawChunk {
    ptr: NonNull<u8>,
    meta: Arc<ChunkMeta>,
}

// SAFETY: RawChunk uniquely owns its allocation; the pointer is only
// dereferenced by the single owner that holds it.
unsafe impl Send for RawChunk {}

impl RawChunk {
    #[inline(never)]
    fn alloc(size: usize, class: Option<u8>) -> RawChunk {
        let layout = Layout::from_size_align(size.max(1), CHUNK_ALIGN).expect("chunk size overflows");
        // SAFETY: the layout has a non-zero size. Zeroed so that the spare
        // region can be handed out as an initialised `&mut [u8]`.
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(ptr) else { alloc::handle_alloc_error(layout) };
        let meta = Arc::new(ChunkMeta {
            size,
            class,
            taker: Mutex::new(Taker::User("")),
            leased_at: Mutex::new(Instant::now()),
            fields: AtomicU64::new(0),
            released: AtomicBool::new(false),
            slot_refs: AtomicU32::new(0),
            slot: AtomicUsize::new(usize::MAX),
        });
        RawChunk { ptr, meta }
    }

    fn free(self) {
        let layout = Layout::from_size_align(self.meta.size.max(1), CHUNK_ALIGN).expect("valid at alloc");
        // SAFETY: `ptr` came from `alloc_zeroed` with this same layout and is
        // freed once: `self` is consumed.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) };
    }
}

#[derive(Default)]
struct Class {
    /// Returned since the last GC cycle; reused first.
    free: Vec<RawChunk>,
    /// Survivors of the last cycle; freed at the next one.
    victim: Vec<RawChunk>,
    cached_bytes: usize,
}

impl Class {
    fn pop(&mut self) -> Option<RawChunk> {
        let raw = self.free.pop().or_else(|| self.victim.pop())?;
        self.cached_bytes -= raw.meta.size;
        Some(raw)
    }

    fn cached_chunks(&self) -> usize {
        self.free.len() + self.victim.len()
    }
}

struct Registry {
    entries: Vec<Option<Arc<ChunkMeta>>>,
    vacant: Vec<usize>,
}

struct Shared {
    config: PoolConfig,
    classes: [Mutex<Class>; NUM_CLASSES],
    registry: Mutex<Registry>,
    leased: [AtomicUsize; NUM_CLASSES + 1],
    allocated_bytes: AtomicU64,
    allocated_chunks: AtomicU64,
}

/// A size-class pool. Cheap to clone (an `Arc`).
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
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
        config.max_pooled = config.max_pooled.min(MAX_POOLED);
        let period = config.release_after;
        let pool = Pool {
            shared: Arc::new(Shared {
                config,
                classes: std::array::from_fn(|_| Mutex::new(Class::default())),
                registry: Mutex::new(Registry { entries: Vec::new(), vacant: Vec::new() }),
                leased: std::array::from_fn(|_| AtomicUsize::new(0)),
                allocated_bytes: AtomicU64::new(0),
                allocated_chunks: AtomicU64::new(0),
            }),
        };
        if let Some(period) = period {
            let weak = Arc::downgrade(&pool.shared);
            let spawned = std::thread::Builder::new().name("pool-gc".into()).spawn(move || loop {
                std::thread::sleep(period);
                match weak.upgrade() {
                    Some(shared) => {
                        Pool { shared }.gc();
                    }
                    None => return,
                }
            });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "no pool GC thread: cached chunks stay until trimmed");
            }
        }
        pool
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
        let raw = if size <= self.shared.config.max_pooled {
            let class = class_of(size);
            let cached = lock(&self.shared.classes[class]).pop();
            cached.unwrap_or_else(|| self.grow(1 << class, Some(class as u8)))
        } else {
            self.grow(size, None)
        };
        raw.meta.reset(taker);
        let size = raw.meta.size;
        self.shared.leased[leased_index(raw.meta.class)].fetch_add(size, Ordering::Relaxed);
        self.register(&raw.meta);
        let owner = ChunkOwner { raw: Some(raw), pool: self.shared.clone() };
        let ptr = owner.ptr();
        let meta = owner.meta().clone();
        Chunk { whole: Bytes::from_owner(owner), ptr, size, frozen: 0, meta }
    }

    /// Takes fresh memory from the system for a chunk the pool did not have.
    #[inline(never)]
    fn grow(&self, size: usize, class: Option<u8>) -> RawChunk {
        self.shared.allocated_bytes.fetch_add(size as u64, Ordering::Relaxed);
        self.shared.allocated_chunks.fetch_add(1, Ordering::Relaxed);
        RawChunk::alloc(size, class)
    }

    fn register(&self, meta: &Arc<ChunkMeta>) {
        let mut reg = lock(&self.shared.registry);
        let slot = match reg.vacant.pop() {
            Some(i) => {
                reg.entries[i] = Some(meta.clone());
                i
            }
            None => {
                reg.entries.push(Some(meta.clone()));
                reg.entries.len() - 1
            }
        };
        meta.slot.store(slot, Ordering::Relaxed);
    }

    /// One GC cycle: frees the chunks that survived the previous cycle
    /// without being reused, and makes the rest survivors. Returns the bytes
    /// freed.
    pub fn gc(&self) -> usize {
        let mut freed = 0;
        for class in &self.shared.classes {
            let victims = {
                let mut c = lock(class);
                let victims = std::mem::take(&mut c.victim);
                let survivors = std::mem::take(&mut c.free);
                c.victim = survivors;
                let bytes: usize = victims.iter().map(|r| r.meta.size).sum();
                c.cached_bytes -= bytes;
                victims
            };
            for raw in victims {
                freed += raw.meta.size;
                raw.free();
            }
        }
        freed
    }

    /// Frees every cached chunk; returns the bytes given back to the system.
    pub fn trim(&self) -> usize {
        let mut freed = 0;
        for class in &self.shared.classes {
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

    /// Totals and per-class figures.
    pub fn stats(&self) -> PoolStats {
        let mut stats = PoolStats::default();
        for (i, class) in self.shared.classes.iter().enumerate() {
            let (cached_chunks, cached_bytes) = {
                let c = lock(class);
                (c.cached_chunks(), c.cached_bytes)
            };
            let leased_bytes = self.shared.leased[i].load(Ordering::Relaxed);
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
        stats.unpooled_leased_bytes = self.shared.leased[NUM_CLASSES].load(Ordering::Relaxed);
        stats.leased_bytes += stats.unpooled_leased_bytes;
        stats.allocated_bytes = self.shared.allocated_bytes.load(Ordering::Relaxed);
        stats.allocated_chunks = self.shared.allocated_chunks.load(Ordering::Relaxed);
        stats
    }

    /// Every chunk currently leased, with who took it and who still
    /// references it: the raw material of the pool profile.
    ///
    /// The registry lock, which every lease and give-back on the RPC path
    /// takes, is held only to copy the list of `Arc`s (one allocation, one
    /// reference count per chunk); each chunk's own metadata is read after
    /// it is released, so building a pool profile never stalls the RPC path
    /// for longer than that copy.
    pub fn leases(&self) -> Vec<Lease> {
        let metas: Vec<Arc<ChunkMeta>> = {
            let reg = lock(&self.shared.registry);
            let mut metas = Vec::with_capacity(reg.entries.len().saturating_sub(reg.vacant.len()));
            metas.extend(reg.entries.iter().flatten().cloned());
            metas
        };
        let now = Instant::now();
        metas
            .iter()
            .map(|m| {
                let bits = m.fields.load(Ordering::Relaxed);
                Lease {
                    size: m.size,
                    pooled: m.class.is_some(),
                    taker: *lock(&m.taker),
                    age: now.saturating_duration_since(*lock(&m.leased_at)),
                    released: m.released.load(Ordering::Relaxed),
                    slot_refs: m.slot_refs.load(Ordering::Relaxed),
                    fields: (0..64).filter(|i| bits & (1 << i) != 0).map(|i| FieldId(i as u8)).collect(),
                }
            })
            .collect()
    }

    fn give_back(&self, raw: RawChunk) {
        let meta = &raw.meta;
        self.shared.leased[leased_index(meta.class)].fetch_sub(meta.size, Ordering::Relaxed);
        {
            let mut reg = lock(&self.shared.registry);
            let slot = meta.slot.swap(usize::MAX, Ordering::Relaxed);
            if slot != usize::MAX {
                reg.entries[slot] = None;
                reg.vacant.push(slot);
            }
        }
        let Some(class) = meta.class else {
            raw.free();
            return;
        };
        let mut c = lock(&self.shared.classes[class as usize]);
        if c.cached_bytes.saturating_add(meta.size) <= self.shared.config.max_cached_per_class {
            c.cached_bytes += meta.size;
            c.free.push(raw);
        } else {
            drop(c);
            raw.free();
        }
    }
}

fn leased_index(class: Option<u8>) -> usize {
    class.map_or(NUM_CLASSES, usize::from)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The owner behind every `Bytes` cut from a chunk; returns the memory to the
/// pool when the last handle drops.
struct ChunkOwner {
    raw: Option<RawChunk>,
    pool: Arc<Shared>,
}

impl ChunkOwner {
    fn raw(&self) -> &RawChunk {
        self.raw.as_ref().expect("present until drop")
    }
    fn ptr(&self) -> NonNull<u8> {
        self.raw().ptr
    }
    fn meta(&self) -> &Arc<ChunkMeta> {
        &self.raw().meta
    }
}

impl AsRef<[u8]> for ChunkOwner {
    fn as_ref(&self) -> &[u8] {
        let raw = self.raw();
        // SAFETY: `ptr` points to `size` initialised (zeroed at allocation)
        // bytes owned by this owner. `Bytes::from_owner` calls this once to
        // learn the pointer and length; every handle then only dereferences
        // its own sub-range, which `Chunk` guarantees lies in the frozen
        // prefix that is never written again.
        unsafe { std::slice::from_raw_parts(raw.ptr.as_ptr(), raw.meta.size) }
    }
}

impl Drop for ChunkOwner {
    fn drop(&mut self) {
        if let Some(raw) = self.raw.take() {
            Pool { shared: self.pool.clone() }.give_back(raw);
        }
    }
}

/// A leased chunk: written by its one owner, read through `Bytes` handles of
/// its frozen prefix. Dropping the `Chunk` releases the owner's reference;
/// the memory returns to the pool once no handle remains.
pub struct Chunk {
    /// A handle on the whole chunk. Never dereferenced: it covers the spare
    /// region the owner writes to. Cloned into [`ChunkRef`]s and sliced into
    /// frozen ranges.
    whole: Bytes,
    ptr: NonNull<u8>,
    size: usize,
    frozen: usize,
    meta: Arc<ChunkMeta>,
}

// SAFETY: the raw pointer is only written through `&mut Chunk` (exclusive)
// and only in the spare region no `Bytes` handle reads.
unsafe impl Send for Chunk {}
// SAFETY: `&Chunk` allows no writes.
unsafe impl Sync for Chunk {}

impl fmt::Debug for Chunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chunk").field("size", &self.size).field("frozen", &self.frozen).finish()
    }
}

impl Chunk {
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
        // SAFETY: `[frozen, size)` lies inside the allocation, and no `Bytes`
        // handle covers it: `bytes()` only cuts ranges below `frozen`, which
        // never decreases, and `whole` is never dereferenced. `&mut self`
        // makes this the only writer.
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

    /// A handle on a frozen range. Keeps the whole chunk leased.
    ///
    /// # Panics
    /// If the range reaches past the frozen point.
    pub fn bytes(&self, range: Range<usize>) -> Bytes {
        assert!(
            range.start <= range.end && range.end <= self.frozen,
            "{range:?} is not frozen (frozen {})",
            self.frozen
        );
        self.whole.slice(range)
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

    /// Records that `field` was decoded as a slice of this chunk; the pool
    /// profile then names it as a holder once the buffer lets go.
    pub fn mark_field(&self, field: FieldId) {
        self.meta.fields.fetch_or(1 << field.0, Ordering::Relaxed);
    }

    /// An opaque reference that keeps the chunk out of the pool (what a
    /// barrier slot holds).
    pub fn hold(&self) -> ChunkRef {
        ChunkRef::new(self.whole.clone(), self.meta.clone())
    }

    /// A [`Marker`] to record decoded fields on this chunk later.
    pub fn marker(&self) -> Marker {
        Marker { meta: self.meta.clone() }
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        self.meta.released.store(true, Ordering::Relaxed);
    }
}

/// Records decoded fields on a chunk without holding it.
#[derive(Clone, Debug)]
pub struct Marker {
    meta: Arc<ChunkMeta>,
}

impl Marker {
    /// See [`Chunk::mark_field`].
    pub fn mark_field(&self, field: FieldId) {
        self.meta.fields.fetch_or(1 << field.0, Ordering::Relaxed);
    }
}

/// A reference on a whole chunk that cannot be read, only held.
pub struct ChunkRef {
    _whole: Bytes,
    meta: Arc<ChunkMeta>,
}

impl ChunkRef {
    fn new(whole: Bytes, meta: Arc<ChunkMeta>) -> ChunkRef {
        meta.slot_refs.fetch_add(1, Ordering::Relaxed);
        ChunkRef { _whole: whole, meta }
    }

    /// Size of the chunk it holds.
    pub fn size(&self) -> usize {
        self.meta.size
    }
}

impl Drop for ChunkRef {
    fn drop(&mut self) {
        self.meta.slot_refs.fetch_sub(1, Ordering::Relaxed);
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
    /// Bytes cached in free lists.
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
    /// How long ago.
    pub age: std::time::Duration,
    /// The buffer that took it has let go: whatever holds it now is a field
    /// or a barrier slot.
    pub released: bool,
    /// References held by barrier slots.
    pub slot_refs: u32,
    /// Fields decoded from it without a copy.
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
        let b = c.bytes(1..2);
        assert_eq!(&b[..], b"b");
        drop(c);
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
        drop(c);
        let s = pool.stats();
        assert_eq!(s.cached_bytes, 0);
        assert_eq!(s.leased_bytes, 0);
    }

    #[test]
    fn gc_frees_chunks_not_reused_within_two_cycles() {
        let pool = Pool::new(PoolConfig { release_after: None, ..PoolConfig::default() });
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
        let period = std::time::Duration::from_millis(5);
        let pool = Pool::new(PoolConfig { release_after: Some(period), ..PoolConfig::default() });
        drop(pool.lease(4096, Taker::ConnRead));
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
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
    fn fields_and_slot_refs_are_reported() {
        let pool = Pool::new(PoolConfig::default());
        let f = FieldId::intern("Test.pool (field 9)");
        let mut c = pool.lease(100, Taker::ConnRead);
        c.freeze_to(10);
        c.mark_field(f);
        let held = c.hold();
        let lease = &pool.leases()[0];
        assert_eq!(lease.fields, vec![f]);
        assert_eq!(lease.slot_refs, 1);
        assert!(!lease.released);
        drop(c);
        assert!(pool.leases()[0].released);
        drop(held);
        assert!(pool.leases().is_empty());
    }

    #[test]
    fn leases_release_the_registry_before_reading_each_chunk() {
        let pool = Pool::new(PoolConfig::default());
        let c = pool.lease(100, Taker::ConnRead);
        let before = Arc::strong_count(&c.meta);
        // Holding one chunk's metadata lock stalls `leases` on that chunk.
        let taker = lock(&c.meta.taker);
        let reader = {
            let pool = pool.clone();
            std::thread::spawn(move || pool.leases())
        };
        // The reader has copied the registry once it holds a reference.
        let mut spins = 0u64;
        while Arc::strong_count(&c.meta) == before {
            assert!(!reader.is_finished(), "leases returned while a chunk's metadata was locked");
            spins += 1;
            assert!(spins < 50_000_000, "leases never copied the registry");
            std::thread::yield_now();
        }
        // It is now stalled on the chunk, and the registry is free: the RPC
        // path leases and gives back.
        assert!(lock_is_free(&pool.shared.registry));
        let leased = pool.stats().leased_bytes;
        for _ in 0..100 {
            drop(pool.lease(4096, Taker::Encode));
        }
        assert_eq!(pool.stats().leased_bytes, leased);
        assert!(!reader.is_finished());
        drop(taker);
        let leases = reader.join().expect("leases panicked");
        assert_eq!(leases.len(), 1);
        assert_eq!(leases[0].taker, Taker::ConnRead);
        drop(c);
    }

    fn lock_is_free<T>(m: &Mutex<T>) -> bool {
        m.try_lock().is_ok()
    }

    #[test]
    #[should_panic(expected = "not frozen")]
    fn slicing_the_spare_region_panics() {
        let pool = Pool::new(PoolConfig::default());
        let c = pool.lease(100, Taker::ConnRead);
        let _ = c.bytes(0..1);
    }
}
