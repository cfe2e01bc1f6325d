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
//!
//! Two readers use it:
//! - heap and allocs profiles start each stack at its site ([`site_line`],
//!   applied by `encode/trim.rs`), as Go's runtime hides its own `runtime.`
//!   frames (`mallocgc`, `growslice`, `newobject`), so that the flat row of
//!   `go tool pprof -top` is the function that asked for the memory;
//! - the holder scan names a block after its site ([`block_name`]).
//!
//! The allocator plumbing under the machinery (`__rust_alloc` and the other
//! shims, `alloc::alloc::alloc`, the profiler's own `GlobalAlloc` hook) is
//! cut before either looks, by `symbolize::trim_point`: those frames are
//! never shown, not even in full stacks.

use crate::symbolize::SymFrame;

/// Path prefixes of the allocation machinery, after a leading `<` is
/// dropped (`<alloc::vec::Vec<T> as …>::from_elem` reads as `alloc::vec…`).
/// A frame of a trait impl for a generic type (`<T as alloc::…>::f`) counts
/// by its trait; one for a named type (`<rpc::pool::Pool as
/// core::clone::Clone>::clone`) is that type's own code, except for the
/// formatting traits (see [`is_machinery`]).
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
///
/// The `fmt` of a formatting trait (`Display`, `Debug`, `LowerHex`, … but
/// not `core::fmt::Write`) counts whatever its type: it writes into the
/// `String` that the caller of `format!` or `write!` is growing, so that
/// caller is the site (`<rpc::lbcache::resolver::Instance as
/// core::fmt::Display>::fmt` is machinery under
/// `rpc::lbcache::hooks::format_instances`).
///
/// Names are matched by path, so with `debug = "line-tables-only"` the
/// inlined frames that the debug info names without path
/// (`try_allocate_in<…>`) do not count: a stack then starts at the first
/// of them.
pub(crate) fn is_machinery(name: &str) -> bool {
    let path = name.strip_prefix('<').unwrap_or(name);
    if MACHINERY.iter().any(|p| path.starts_with(p)) {
        return true;
    }
    // `<T as alloc::vec::spec_extend::SpecExtend<…>>::spec_extend`
    match path.split_once(" as ") {
        Some((ty, tr)) if !ty.contains("::") => MACHINERY.iter().any(|p| tr.starts_with(p)),
        Some((_, tr)) => is_formatting(tr),
        None => false,
    }
}

/// `core::fmt::Display>::fmt` and the other formatting traits' `fmt`, the
/// part of a trait impl's name after ` as `.
fn is_formatting(tr: &str) -> bool {
    tr.strip_prefix("core::fmt::")
        .and_then(|t| t.strip_suffix(">::fmt"))
        .is_some_and(|t| !t.is_empty() && t != "Write" && t.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// Where the site is among the frames of one location (a return address
/// and the calls inlined at it, innermost first, as a pprof `Location`'s
/// lines are): the index of its first named frame outside the machinery,
/// or `None` if it has none (every frame is machinery, or the address has
/// no symbols).
///
/// A stack starts at the first location that has a site, at that frame;
/// the frames before it are dropped, inlined ones too (a location whose
/// lines are `try_allocate_in`, …, `copy_from_slice`, `read_field_2` keeps
/// `read_field_2` only). An address without symbols is never a site,
/// so a stack whose every named frame is machinery (a runtime's own
/// allocation, from a thread's start in `libc` up) has none, and is kept
/// whole, as Go keeps a stack whose frames are all `runtime.`.
pub(crate) fn site_line<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<usize> {
    names.into_iter().position(|n| !n.is_empty() && !is_machinery(n))
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
            "<&mut W as core::fmt::Write::write_fmt::SpecWriteFmt>::spec_write_fmt",
            "<rpc::lbcache::resolver::Instance as core::fmt::Display>::fmt",
            "<scenarios::Sonic<T> as core::fmt::Debug>::fmt",
        ] {
            assert!(is_machinery(m), "{m}");
        }
        for m in [
            "rpc::codec::echo::Request::read_field_2",
            "rpc::codec::binary::Reader::read_binary_copy",
            "scenarios::handler::ScenarioHandler::remember",
            "<rpc::pool::Pool as core::clone::Clone>::clone",
            "<app::Buf as core::fmt::Write>::write_str",
            "<app::Buf as core::fmt::Display>::to_string",
            "<app::W<<T as core::fmt::Display>::fmt> as app::Tr>::f",
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
        // A `Display` impl writing into the `String` that `write!` grows.
        let formatted = block_name(&frames(&[
            "alloc::raw_vec::RawVecInner<A>::finish_grow",
            "<alloc::string::String as core::fmt::Write>::write_str",
            "<rpc::lbcache::resolver::Instance as core::fmt::Display>::fmt",
            "core::fmt::write",
            "rpc::lbcache::hooks::format_instances",
        ]));
        assert_eq!(formatted.site, "rpc::lbcache::hooks::format_instances");
    }

    #[test]
    fn the_site_line_is_the_first_named_frame_outside_the_machinery() {
        assert_eq!(site_line(["alloc::raw_vec::RawVecInner<A>::try_allocate_in", "", "app::f", "app::g"]), Some(2));
        assert_eq!(site_line(["app::f"]), Some(0));
        assert_eq!(site_line(["alloc::alloc::exchange_malloc", "core::ops::function::FnOnce::call_once"]), None);
        assert_eq!(site_line([""]), None);
        assert_eq!(site_line(Vec::<&str>::new()), None);
    }
}
