//! The pool profile: the buffer pool's view of memory, in Go's heap format,
//! so that the same tools read it.
//!
//! A heap profile blames whoever first allocated a pooled chunk, long ago;
//! the guide warns that pprof cannot see who *holds* pooled memory. This
//! profile shows exactly that. Each sample is one group of chunks; its
//! "stack" (leaf first) is:
//!
//! ```text
//!   held by Request.msg (field 2, binary)  <- who still references it
//!   rpc::linkbuf::InputBuffer::book        <- who took it from the pool
//!   rpc::pool::Pool::lease
//! ```
//!
//! Holders: each decoded field cut from the chunk without a copy that still
//! references it, named with its Thrift type (several are joined by
//! ` + `); a barrier slot; the connection buffer that took it (not pinned:
//! in use); or `unknown holder` (a slice kept after its buffer let go). Cached chunks
//! appear as `cached in the free list`. Values: `inuse_space` = chunk
//! bytes, `inuse_objects` = chunks (alloc values equal them). Labels:
//! `bytes` (chunk size), `pinned` (`true` when the buffer that took it has
//! let go), `class` (`pooled` or `unpooled`).
//!
//! Its stacks go through the heap profile's trimming ([`Stacks::FromSite`]:
//! leading frames of the allocation machinery cut). A chain's leaf is a
//! holder (`held by …`, `cached in the free list`), never machinery, so
//! every chain comes out whole, and full stacks (`?full=1`) are the same.

use std::collections::BTreeMap;

use profiler::{NamedSample, Profile, SampleType, Stacks};
use rpc::{Lease, Pool};

/// Root frame of every pooled chunk.
pub const LEASE_FRAME: &str = "rpc::pool::Pool::lease";

fn holder(lease: &Lease) -> String {
    if !lease.released {
        return "held by its connection buffer".to_owned();
    }
    let mut holders: Vec<String> = lease.fields.iter().map(|f| format!("held by {}", f.name())).collect();
    if lease.slot_refs > 0 {
        holders.push("held by a barrier slot".to_owned());
    }
    if holders.is_empty() {
        holders.push("unknown holder".to_owned());
    }
    holders.join(" + ")
}

/// Builds the pool profile of `pool` now, its stacks as `stacks` says.
pub fn pool_profile(pool: &Pool, stacks: Stacks) -> Profile {
    // (holder, taker, size, pinned, pooled) -> chunks
    let mut groups: BTreeMap<(String, &'static str, usize, bool, bool), i64> = BTreeMap::new();
    for lease in pool.leases() {
        *groups.entry((holder(&lease), lease.taker.name(), lease.size, lease.pinned(), lease.pooled)).or_default() += 1;
    }
    let mut samples: Vec<NamedSample> = groups
        .into_iter()
        .map(|((holder, taker, size, pinned, pooled), n)| NamedSample {
            stack: vec![holder, taker.to_owned(), LEASE_FRAME.to_owned()],
            values: [n, n * size as i64, n, n * size as i64],
            num_labels: vec![("bytes".to_owned(), size as i64)],
            str_labels: vec![
                ("pinned".to_owned(), pinned.to_string()),
                ("class".to_owned(), if pooled { "pooled" } else { "unpooled" }.to_owned()),
            ],
        })
        .collect();
    for class in pool.stats().classes.iter().filter(|c| c.cached_chunks > 0) {
        let n = class.cached_chunks as i64;
        samples.push(NamedSample {
            stack: vec!["cached in the free list".to_owned(), "rpc::pool::Pool".to_owned()],
            values: [n, class.cached_bytes as i64, n, class.cached_bytes as i64],
            num_labels: vec![("bytes".to_owned(), class.size as i64)],
            str_labels: vec![("pinned".to_owned(), "false".to_owned()), ("class".to_owned(), "pooled".to_owned())],
        });
    }
    let full = Profile::from_named(&samples, 1, SampleType::InuseSpace);
    match stacks {
        Stacks::FromSite => full.trim_machinery(),
        Stacks::Full => full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpc::{PoolConfig, Taker};

    #[test]
    fn pinned_chunks_are_attributed_to_their_holders() {
        let pool = Pool::new(PoolConfig::default());
        let field = rpc::FieldId::intern("Request.msg (field 2, binary)");
        let mut chunk = pool.lease(8192, Taker::ConnRead);
        chunk.freeze_to(10);
        let mut slice = chunk.slice(0..1);
        slice.mark_field(field);
        let unnamed = chunk.slice(1..2);
        drop(chunk);
        let in_use = pool.lease(4096, Taker::Encode);
        drop(pool.lease(1024, Taker::Encode));
        let p = pool_profile(&pool, Stacks::FromSite);
        let (trimmed, full) = (p.proto(), pool_profile(&pool, Stacks::Full).into_proto());
        assert_eq!(
            (&trimmed.sample, &trimmed.location, &trimmed.function),
            (&full.sample, &full.location, &full.function),
            "no chain starts in the machinery"
        );
        assert_eq!(p.total(SampleType::InuseSpace), 8192 + 4096 + 1024);
        let proto = p.proto();
        let names: Vec<String> = proto
            .sample
            .iter()
            .map(|s| {
                let loc = &proto.location[s.location_id[0] as usize - 1];
                let f = &proto.function[loc.line[0].function_id as usize - 1];
                proto.string_table[f.name as usize].clone()
            })
            .collect();
        assert!(names.contains(&"held by Request.msg (field 2, binary)".to_owned()), "{names:?}");
        assert!(names.contains(&"held by its connection buffer".to_owned()), "{names:?}");
        assert!(names.contains(&"cached in the free list".to_owned()), "{names:?}");
        drop(slice);
        let names: Vec<String> = pool.leases().iter().filter(|l| l.pinned()).map(holder).collect();
        assert_eq!(names, ["unknown holder"], "a field that let go names the chunk no more");
        drop((unnamed, in_use));
    }
}
