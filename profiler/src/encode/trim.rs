//! [`Profile::trim_machinery`]: stacks that start at their site, the first
//! frame outside the allocation machinery (`sites.rs`), and [`Stacks`], the
//! choice between those and full stacks.
//!
//! ```text
//!   full stack (?full=1)                          from the site (default)
//!   ┌ location 0x5f3a ──────────────────────┐
//!   │ RawVecInner::try_allocate_in (inline) │ ✗
//!   │ Vec::with_capacity_in (inline)        │ ✗     ┌ new location 0x5f3a ─┐
//!   │ <[T]>::to_vec (inline)                │ ✗     │                      │
//!   │ Bytes::copy_from_slice (inline)       │ ✗     │                      │
//!   │ Request::read_field_2                 │ ──►   │ Request::read_field_2│  flat
//!   └───────────────────────────────────────┘       └──────────────────────┘
//!   ┌ location 0x61b0 ──────────────────────┐       ┌ location 0x61b0 ─────┐
//!   │ Request::decode                       │ ──►   │ (unchanged)          │
//!   └───────────────────────────────────────┘       └──────────────────────┘
//! ```
//!
//! A location cut inside becomes a new location (new id, same address and
//! mapping) with the kept lines only; locations no longer used go, and so
//! do functions no kept line names. Samples that end up with the same
//! stack and labels are merged.

use std::collections::HashMap;

use pprof::protos;

use crate::profile::Profile;
use crate::sites;

/// Which frames the stacks of a heap or allocs profile keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stacks {
    /// From the site: the first frame outside the allocation machinery
    /// (`Vec`'s and `hashbrown`'s growth, `Box::new`, `String` formatting,
    /// `bytes`' buffers, a task's spawn). What `/debug/pprof/heap` serves:
    /// as in Go, the flat row of `go tool pprof -top` is the function that
    /// asked for the memory. A stack that is machinery only is kept whole.
    #[default]
    FromSite,
    /// Every frame from the allocator's caller on, the machinery included
    /// (`/debug/pprof/heap?full=1`). Only the profiler's own frames and the
    /// `__rust_alloc` shims are left out, as always.
    Full,
}

impl Profile {
    /// The same profile with every stack starting at its site: the leading
    /// frames of the allocation machinery dropped, inlined ones included,
    /// as [`Stacks::FromSite`] says. Works on any profile, one read back
    /// from a file too; a profile with no such frames comes back equal.
    pub fn trim_machinery(&self) -> Profile {
        Profile::from_proto(trim(self.proto()))
    }
}

/// A label, comparable.
type LabelKey = (i64, i64, i64, i64);

fn trim(p: &protos::Profile) -> protos::Profile {
    let string = |i: i64| p.string_table.get(usize::try_from(i).unwrap_or(usize::MAX)).map_or("", String::as_str);
    let names: HashMap<u64, &str> = p.function.iter().map(|f| (f.id, string(f.name))).collect();
    let locations: HashMap<u64, &protos::Location> = p.location.iter().map(|l| (l.id, l)).collect();
    let mut site: HashMap<u64, Option<usize>> = HashMap::new();
    let mut site_of = |id: u64| -> Option<usize> {
        *site.entry(id).or_insert_with(|| {
            let loc = locations.get(&id)?;
            sites::site_line(loc.line.iter().map(|l| names.get(&l.function_id).copied().unwrap_or("")))
        })
    };

    // Locations cut inside get ids after the largest one.
    let mut next_id = p.location.iter().map(|l| l.id).max().unwrap_or(0);
    let mut cut: HashMap<(u64, usize), u64> = HashMap::new();
    let mut new_locations: Vec<protos::Location> = Vec::new();
    let mut sample: Vec<protos::Sample> = Vec::with_capacity(p.sample.len());
    let mut merged: HashMap<(Vec<u64>, Vec<LabelKey>), usize> = HashMap::new();
    for s in &p.sample {
        // No site: machinery only (or nothing known), kept whole.
        let (first, skip) =
            s.location_id.iter().enumerate().find_map(|(i, &id)| site_of(id).map(|l| (i, l))).unwrap_or((0, 0));
        let mut location_id = s.location_id[first..].to_vec();
        if skip > 0 {
            let id = location_id[0];
            // A profile read back whose ids reach `u64::MAX` has no id left
            // for a cut location: that one stays whole.
            let new = match cut.get(&(id, skip)) {
                Some(&new) => Some(new),
                None => next_id.checked_add(1).inspect(|&new| {
                    next_id = new;
                    let loc = locations[&id];
                    new_locations.push(protos::Location { id: new, line: loc.line[skip..].to_vec(), ..loc.clone() });
                    cut.insert((id, skip), new);
                }),
            };
            if let Some(new) = new {
                location_id[0] = new;
            }
        }
        let labels = s.label.iter().map(|l| (l.key, l.str, l.num, l.num_unit)).collect();
        match merged.entry((location_id, labels)) {
            std::collections::hash_map::Entry::Occupied(e) => {
                let into = &mut sample[*e.get()].value;
                for (i, v) in s.value.iter().enumerate() {
                    match into.get_mut(i) {
                        Some(x) => *x = x.saturating_add(*v),
                        None => into.push(*v),
                    }
                }
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                let location_id = e.key().0.clone();
                e.insert(sample.len());
                sample.push(protos::Sample { location_id, ..s.clone() });
            }
        }
    }

    let used: std::collections::HashSet<u64> = sample.iter().flat_map(|s| s.location_id.iter().copied()).collect();
    let location: Vec<protos::Location> =
        p.location.iter().filter(|l| used.contains(&l.id)).cloned().chain(new_locations).collect();
    let named: std::collections::HashSet<u64> =
        location.iter().flat_map(|l| l.line.iter().map(|line| line.function_id)).collect();
    let function = p.function.iter().filter(|f| named.contains(&f.id)).cloned().collect();
    protos::Profile { sample, location, function, ..p.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::SampleType;

    /// A profile from stacks of locations, leaf first; each location is
    /// its lines' function names, innermost first (`""`: no symbols).
    fn profile(samples: &[(&[&[&str]], i64)]) -> Profile {
        let mut strings = vec![String::new()];
        let mut sample_type = Vec::new();
        for t in SampleType::ALL {
            strings.extend([t.name().to_owned(), t.unit().to_owned()]);
            let ty = strings.len() as i64;
            sample_type.push(protos::ValueType { ty: ty - 2, unit: ty - 1 });
        }
        let mut function: Vec<protos::Function> = Vec::new();
        let mut location: Vec<protos::Location> = Vec::new();
        let mut sample = Vec::new();
        for (stack, bytes) in samples {
            let mut ids = Vec::new();
            for lines in *stack {
                let line = lines
                    .iter()
                    .filter(|n| !n.is_empty())
                    .map(|n| {
                        let id = match function.iter().find(|f| strings[f.name as usize] == *n) {
                            Some(f) => f.id,
                            None => {
                                strings.push(n.to_string());
                                let id = function.len() as u64 + 1;
                                let name = strings.len() as i64 - 1;
                                function.push(protos::Function { id, name, system_name: name, ..Default::default() });
                                id
                            }
                        };
                        protos::Line { function_id: id, line: 7 }
                    })
                    .collect();
                // The same lines are the same location.
                let id = match location.iter().find(|l| l.line == line) {
                    Some(l) => l.id,
                    None => {
                        let id = location.len() as u64 + 1;
                        location.push(protos::Location {
                            id,
                            mapping_id: 1,
                            address: 0x1000 * id,
                            line,
                            is_folded: false,
                        });
                        id
                    }
                };
                ids.push(id);
            }
            let label = vec![protos::Label { key: 0, str: 0, num: 64, num_unit: 0 }];
            sample.push(protos::Sample { location_id: ids, value: vec![1, *bytes, 1, *bytes], label });
        }
        let mapping = vec![protos::Mapping { id: 1, memory_limit: 1 << 40, ..Default::default() }];
        Profile::from_proto(protos::Profile {
            sample_type,
            sample,
            location,
            function,
            mapping,
            string_table: strings,
            ..Default::default()
        })
    }

    /// Each sample's stack as it reads: locations' lines joined by `+`
    /// (inlined, innermost first), locations by ` <- `.
    fn stacks(p: &Profile) -> Vec<String> {
        let p = p.proto();
        let name = |id: u64| {
            let f = p.function.iter().find(|f| f.id == id).expect("a line names a function that exists");
            p.string_table[f.name as usize].clone()
        };
        p.sample
            .iter()
            .map(|s| {
                s.location_id
                    .iter()
                    .map(|id| {
                        let loc = p.location.iter().find(|l| l.id == *id).expect("a sample's location exists");
                        let lines: Vec<String> = loc.line.iter().map(|l| name(l.function_id)).collect();
                        if lines.is_empty() {
                            format!("{:#x}", loc.address)
                        } else {
                            lines.join("+")
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" <- ")
            })
            .collect()
    }

    const TRY_ALLOCATE_IN: &str = "alloc::raw_vec::RawVecInner<A>::try_allocate_in";
    const TO_VEC: &str = "<T as alloc::slice::<impl [T]>::to_vec_in::ConvertVec>::to_vec";

    #[test]
    fn inlined_machinery_in_the_leaf_location_is_cut_into_a_new_location() {
        let full = profile(&[(
            &[
                &[TRY_ALLOCATE_IN, "alloc::vec::Vec<T,A>::with_capacity_in", TO_VEC, "rpc::codec::echo::read_field_2"],
                &["rpc::codec::echo::Request::decode"],
            ],
            4096,
        )]);
        let trimmed = full.trim_machinery();
        assert_eq!(stacks(&trimmed), ["rpc::codec::echo::read_field_2 <- rpc::codec::echo::Request::decode"]);
        let (before, after) = (full.proto(), trimmed.proto());
        let leaf = after.location.iter().find(|l| l.id == after.sample[0].location_id[0]).unwrap();
        let old = &before.location[0];
        assert!(before.location.iter().all(|l| l.id != leaf.id), "a new id");
        assert_eq!((leaf.address, leaf.mapping_id), (old.address, old.mapping_id));
        assert_eq!(leaf.line[..], old.line[3..], "the kept lines, with their line numbers");
        // The cut location and its machinery functions are gone; the
        // untouched location keeps its id.
        assert_eq!(after.location.len(), 2);
        assert_eq!(after.sample[0].location_id[1], before.sample[0].location_id[1]);
        assert_eq!(after.function.len(), 2);
        assert_eq!(trimmed.total(SampleType::InuseSpace), 4096);
        assert_eq!(trimmed, Profile::decode(&trimmed.encode_gzip()).unwrap());
    }

    #[test]
    fn whole_machinery_locations_go_and_the_stack_starts_at_the_caller() {
        let full = profile(&[(
            &[
                &["hashbrown::raw::alloc::inner::do_alloc", "hashbrown::raw::RawTableInner::new_uninitialized"],
                &["hashbrown::raw::RawTable<T,A>::reserve_rehash"],
                &["std::collections::hash::map::HashMap<K,V,S>::insert"],
                &["scenarios::handler::ScenarioHandler::remember", "scenarios::handler::ScenarioHandler::echo"],
            ],
            512,
        )]);
        assert_eq!(
            stacks(&full.trim_machinery()),
            ["scenarios::handler::ScenarioHandler::remember+scenarios::handler::ScenarioHandler::echo"]
        );
    }

    #[test]
    fn a_stack_of_machinery_only_is_kept_whole() {
        // A runtime's own allocation, from a thread's start (no symbols for
        // libc) up: no site, nothing cut.
        let full = profile(&[
            (&[&[TRY_ALLOCATE_IN, "tokio::runtime::scheduler::multi_thread::worker::run"], &[""]], 100),
            (&[&["alloc::alloc::exchange_malloc"]], 10),
            (&[], 1),
        ]);
        let trimmed = full.trim_machinery();
        assert_eq!(stacks(&trimmed), stacks(&full));
        assert_eq!(trimmed.total(SampleType::InuseSpace), 111);
    }

    #[test]
    fn an_address_without_symbols_is_not_a_site() {
        let full =
            profile(&[(&[&[TRY_ALLOCATE_IN], &[""], &["core::ops::function::FnOnce::call_once"], &["app::f"]], 8)]);
        assert_eq!(stacks(&full.trim_machinery()), ["app::f"]);
    }

    #[test]
    fn stacks_that_meet_at_their_site_are_merged() {
        let push_in_keep: &[&str] = &["alloc::vec::Vec<T,A>::push", "app::keep"];
        let full = profile(&[
            (&[&["alloc::raw_vec::RawVecInner<A>::finish_grow"], push_in_keep, &["app::main"]], 100),
            (&[&[TRY_ALLOCATE_IN], push_in_keep, &["app::main"]], 20),
            (&[&[TRY_ALLOCATE_IN, "app::keep"], &["app::main"]], 3),
        ]);
        let trimmed = full.trim_machinery();
        // The first two meet in the same new location; the third's site is
        // another address.
        assert_eq!(stacks(&trimmed), ["app::keep <- app::main", "app::keep <- app::main"]);
        let values: Vec<i64> = trimmed.proto().sample.iter().map(|s| s.value[3]).collect();
        assert_eq!(values, [120, 3]);
        assert_eq!(trimmed.proto().sample[0].value, [2, 120, 2, 120]);
    }

    #[test]
    fn a_location_with_the_last_id_stays_whole() {
        let full = profile(&[(&[&[TRY_ALLOCATE_IN, "app::keep"], &["app::main"]], 64)]);
        let mut proto = full.proto().clone();
        let leaf = proto.sample[0].location_id[0];
        for id in proto.location.iter_mut().map(|l| &mut l.id).chain(proto.sample[0].location_id.iter_mut()) {
            if *id == leaf {
                *id = u64::MAX;
            }
        }
        let read_back = Profile::from_proto(proto);
        // No id is left for the cut location: the leaf keeps its
        // machinery frame rather than overflow the id.
        let trimmed = read_back.trim_machinery();
        assert_eq!(stacks(&trimmed), [format!("{TRY_ALLOCATE_IN}+app::keep <- app::main")]);
        assert_eq!(trimmed.total(SampleType::InuseSpace), 64);
    }

    #[test]
    fn a_profile_without_machinery_comes_back_equal() {
        let named = profile(&[
            (
                &[
                    &["held by Request.msg (field 2)"],
                    &["rpc::linkbuf::InputBuffer::book"],
                    &["rpc::pool::Pool::lease"],
                ],
                8192,
            ),
            (&[&["cached in the free list"], &["rpc::pool::Pool"]], 4096),
        ]);
        assert_eq!(named.trim_machinery(), named);
    }
}
