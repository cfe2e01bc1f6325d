//! Heap allocations per lease of a cached chunk, counted by dhat: none,
//! barrier references (`Chunk::hold`) and slices marked as fields
//! (`Chunk::slice`, `Slice::mark_field`) included, unless a `Bytes` handle
//! is made (then one owner box per handle).
//!
//! A separate test binary with its own global allocator and a single
//! `#[test]`, as `alloc_per_request.rs` explains.

use rpc::{FieldId, Pool, PoolConfig, Taker};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const LEASES: u64 = 1_000;
const SIZES: [usize; 4] = [64, 4 << 10, 64 << 10, 1 << 20];

#[test]
fn leasing_a_cached_chunk_allocates_nothing_until_a_bytes_handle_is_made() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let pool = Pool::new(PoolConfig { release_after: None, ..PoolConfig::default() });
    let takers = [Taker::ConnRead, Taker::Encode, Taker::User("alloc test")];
    let field = FieldId::intern("Test.alloc (field 1, binary)");
    let round = |bytes: bool| {
        for size in SIZES {
            for taker in takers {
                let mut chunk = pool.lease(size, taker);
                chunk.spare_mut()[0] = 1;
                chunk.freeze_to(1);
                // What a link buffer's read or write does: a barrier slot
                // holds the chunk around the I/O...
                drop(chunk.hold());
                // ...a decoder slices a field out of it, which outlives the
                // buffer's own reference...
                let mut msg = chunk.slice(0..1);
                msg.mark_field(field);
                let kept = msg.slice(0..1);
                if bytes {
                    drop(chunk.bytes(0..1));
                }
                // ...and a slot may still hold it when the buffer lets go,
                // as one does until its next I/O.
                let held = chunk.hold();
                drop((chunk, msg));
                drop(held);
                drop(kept);
            }
        }
    };
    round(true);
    let before = dhat::HeapStats::get();
    for _ in 0..LEASES {
        round(false);
    }
    let after = dhat::HeapStats::get();
    dhat::assert_eq!(
        after.total_blocks - before.total_blocks,
        0,
        "allocations for leases, holds, slices and releases without Bytes handles"
    );

    let per_round = (SIZES.len() * takers.len()) as u64;
    let before = dhat::HeapStats::get();
    for _ in 0..LEASES {
        round(true);
    }
    let after = dhat::HeapStats::get();
    dhat::assert_eq!(after.total_blocks - before.total_blocks, LEASES * per_round, "one owner box per Bytes handle");
    dhat::assert_eq!(pool.stats().allocated_chunks, SIZES.len() as u64, "every lease reused its class's chunk");
}
