//! The allocation machinery, and how a block is named after the code that
//! asked for it.
//!
//! A captured stack starts deep inside the machinery that turns "I need
//! memory" into a call to the allocator: `Vec`'s and `hashbrown`'s growth,
//! `Box::new`, `Arc::new`, `String` formatting, `bytes`' own buffers, and
//! the spawning of an async task. The code a reader cares about is the first
//! frame outside it: the *site*. [`MACHINERY`] is the one list of what counts
//! as machinery; it was chosen from the frames that the profiles of this
//! workspace's processes show between the allocator and the caller.

use crate::symbolize::SymFrame;

/// Path prefixes of the allocation machinery, after a leading `<` is
/// dropped (`<alloc::vec::Vec<T> as …>::from_elem` reads as `alloc::vec…`).
/// A frame of a trait impl for a generic type (`<T as alloc::…>::f`) counts
/// by its trait.
pub(crate) const MACHINERY: &[&str] = &[
    "alloc::",
    "core::",
    "std::",
    "hashbrown::",
    "bytes::",
    "tokio::runtime::task::",
    "tokio::runtime::scheduler::",
    "tokio::task::",
    "tokio::runtime::blocking::",
    "tokio::runtime::context",
    "tokio::runtime::handle::",
];

/// True if `name` is a function of the allocation machinery.
pub(crate) fn is_machinery(name: &str) -> bool {
    let path = name.strip_prefix('<').unwrap_or(name);
    if MACHINERY.iter().any(|p| path.starts_with(p)) {
        return true;
    }
    // `<T as alloc::vec::spec_extend::SpecExtend<…>>::spec_extend`
    match path.split_once(" as ") {
        Some((ty, tr)) if !ty.contains("::") => MACHINERY.iter().any(|p| tr.starts_with(p)),
        _ => false,
    }
}

/// What kind of block a machinery frame makes.
fn kind_of(name: &str) -> &'static str {
    const KINDS: &[(&str, &str)] = &[
        ("hashbrown", "hashbrown table"),
        ("HashMap", "hashbrown table"),
        ("vec_deque", "VecDeque"),
        ("VecDeque", "VecDeque"),
        ("btree", "BTreeMap node"),
        ("tokio::runtime::task", "tokio task"),
        ("tokio::task", "tokio task"),
        ("tokio::", "tokio block"),
        ("alloc::sync", "Arc"),
        ("alloc::rc", "Rc"),
        ("alloc::boxed", "Box"),
        ("alloc::string", "String"),
        ("alloc::str", "String"),
        ("alloc::fmt", "String"),
        ("raw_vec", "Vec"),
        ("alloc::vec", "Vec"),
        ("alloc::slice", "Vec"),
        ("bytes::", "Bytes buffer"),
    ];
    KINDS.iter().find(|(needle, _)| name.contains(needle)).map_or("block", |&(_, kind)| kind)
}

/// A block's name from its allocation stack (innermost first, the
/// profiler's own frames and the allocator plumbing already cut).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlockName {
    /// What the machinery made (`Vec`, `hashbrown table`, `tokio task`,
    /// `block` when the stack starts outside the machinery).
    pub kind: &'static str,
    /// The first frame outside the machinery (`scenarios::…::remember`),
    /// or the outermost frame when every frame is machinery.
    pub site: String,
}

impl BlockName {
    /// `hashbrown table in scenarios::handler::ScenarioHandler::remember`.
    pub(crate) fn describe(&self) -> String {
        match self.kind {
            "tokio task" => format!("tokio task spawned in {}", self.site),
            "block" => format!("block from {}", self.site),
            kind => format!("{kind} in {}", self.site),
        }
    }
}

/// Names a block from its frames, innermost first.
pub(crate) fn block_name<'a>(frames: impl IntoIterator<Item = &'a SymFrame>) -> BlockName {
    let mut kind = None;
    let mut last = None;
    for f in frames {
        if !is_machinery(&f.name) {
            return BlockName { kind: kind.unwrap_or("block"), site: f.name.clone() };
        }
        // The outermost machinery frame is the API the caller used
        // (`Arc::new`, not the `Box::new` inside it).
        kind = Some(kind_of(&f.name));
        last = Some(f);
    }
    BlockName { kind: kind.unwrap_or("block"), site: last.map_or_else(|| "?".to_owned(), |f| f.name.clone()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(names: &[&str]) -> Vec<SymFrame> {
        names
            .iter()
            .map(|n| SymFrame { name: (*n).into(), system_name: String::new(), file: String::new(), line: 0 })
            .collect()
    }

    #[test]
    fn machinery_by_path_and_by_trait() {
        for m in [
            "alloc::raw_vec::RawVecInner<A>::try_allocate_in",
            "<alloc::vec::Vec<T> as alloc::vec::spec_from_elem::SpecFromElem>::from_elem",
            "<T as alloc::vec::spec_extend::SpecExtend<T, I>>::spec_extend",
            "hashbrown::raw::RawTable<T,A>::reserve_rehash",
            "bytes::bytes_mut::BytesMut::reserve_inner",
            "tokio::runtime::task::core::Cell<T,S>::new",
            "std::collections::hash::map::HashMap<K,V,S>::insert",
        ] {
            assert!(is_machinery(m), "{m}");
        }
        for m in [
            "rpc::codec::echo::Request::read_field_2",
            "scenarios::handler::ScenarioHandler::remember",
            "<rpc::pool::Pool as core::clone::Clone>::clone",
            "tokio::net::tcp::stream::TcpStream::connect",
        ] {
            assert!(!is_machinery(m), "{m}");
        }
    }

    #[test]
    fn blocks_are_named_by_kind_and_site() {
        let f = frames(&[
            "hashbrown::raw::alloc::inner::do_alloc",
            "hashbrown::raw::RawTable<T,A>::reserve_rehash",
            "std::collections::hash::map::HashMap<K,V,S>::insert",
            "scenarios::handler::ScenarioHandler::remember",
            "scenarios::handler::ScenarioHandler::echo",
        ]);
        let name = block_name(&f);
        assert_eq!(name.site, "scenarios::handler::ScenarioHandler::remember");
        assert_eq!(name.describe(), "hashbrown table in scenarios::handler::ScenarioHandler::remember");
        let task =
            block_name(&frames(&["tokio::runtime::task::core::Cell<T,S>::new", "rpc::server::Server<H>::serve"]));
        assert_eq!(task.describe(), "tokio task spawned in rpc::server::Server<H>::serve");
        let own = block_name(&frames(&["rpc::pool::Pool::lease"]));
        assert_eq!(own.describe(), "block from rpc::pool::Pool::lease");
        assert_eq!(block_name(&frames(&["alloc::alloc::exchange_malloc"])).site, "alloc::alloc::exchange_malloc");
    }
}
