//! Return addresses to function names, files and lines; trimming of the
//! profiler's own frames. Runs only while a profile is written.

use std::collections::HashMap;
use std::ffi::{c_int, c_void, CStr};
use std::sync::{Arc, Mutex};

/// One function at an address; an address has several when calls were
/// inlined, innermost first.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SymFrame {
    /// Demangled, without the hash suffix (`my_crate::f`).
    pub name: String,
    /// The symbol as the binary spells it (mangled), or the debug info's
    /// name when it has no other.
    pub system_name: String,
    pub file: String,
    pub line: u32,
}

/// A loaded object (the executable or a shared library) of the process.
struct Object {
    path: String,
    /// Load bias: runtime address = address in the file + bias.
    bias: u64,
    /// Runtime address ranges of its loadable segments.
    ranges: Vec<(u64, u64)>,
    /// Debug info and symbol table, opened at first use; `None` if the file
    /// cannot be read.
    loader: Option<Option<addr2line::Loader>>,
}

impl Object {
    fn contains(&self, avma: u64) -> bool {
        self.ranges.iter().any(|&(lo, hi)| lo <= avma && avma < hi)
    }

    fn loader(&mut self) -> Option<&addr2line::Loader> {
        let path = &self.path;
        self.loader.get_or_insert_with(|| addr2line::Loader::new(path).ok()).as_ref()
    }
}

#[derive(Default)]
struct Symbolizer {
    objects: Vec<Object>,
    cache: HashMap<usize, Arc<[SymFrame]>>,
}

/// Objects and resolved addresses. Addresses are process-wide, so this is
/// too; the cache only grows (by the number of distinct sampled frames).
/// Never locked by the allocator hook.
static SYMBOLIZER: Mutex<Option<Symbolizer>> = Mutex::new(None);

/// Looks up every return address in `addrs`.
pub(crate) fn resolve_all(addrs: impl IntoIterator<Item = usize>) -> HashMap<usize, Arc<[SymFrame]>> {
    let mut guard = SYMBOLIZER.lock().unwrap_or_else(|e| e.into_inner());
    let sym = guard.get_or_insert_with(Symbolizer::default);
    let mut out = HashMap::new();
    for addr in addrs {
        if out.contains_key(&addr) {
            continue;
        }
        let frames = match sym.cache.get(&addr) {
            Some(f) => f.clone(),
            None => {
                let f = sym.resolve(addr);
                sym.cache.insert(addr, f.clone());
                f
            }
        };
        out.insert(addr, frames);
    }
    out
}

impl Symbolizer {
    fn resolve(&mut self, ret: usize) -> Arc<[SymFrame]> {
        // A return address points after the call; look up the call itself.
        let avma = (ret as u64).saturating_sub(1);
        if !self.objects.iter().any(|o| o.contains(avma)) {
            // First use, or a library loaded since: list objects again,
            // keeping the loaders already opened.
            let mut fresh = loaded_objects();
            for o in &mut fresh {
                if let Some(old) = self.objects.iter_mut().find(|old| old.path == o.path && old.bias == o.bias) {
                    o.loader = old.loader.take();
                }
            }
            self.objects = fresh;
        }
        let Some(object) = self.objects.iter_mut().find(|o| o.contains(avma)) else {
            return Arc::from(Vec::new());
        };
        let probe = avma.wrapping_sub(object.bias);
        let Some(loader) = object.loader() else {
            return Arc::from(Vec::new());
        };
        let mut frames = Vec::new();
        if let Ok(mut iter) = loader.find_frames(probe) {
            while let Ok(Some(frame)) = iter.next() {
                let raw = frame.function.as_ref().and_then(|f| f.raw_name().ok()).map(|n| n.into_owned());
                let location = frame.location.as_ref();
                frames.push(SymFrame {
                    name: raw.as_deref().map(demangle).unwrap_or_default(),
                    system_name: raw.unwrap_or_default(),
                    file: location.and_then(|l| l.file).unwrap_or_default().to_string(),
                    line: location.and_then(|l| l.line).unwrap_or(0),
                });
            }
        }
        // Debug info limited to line tables (`debug = "line-tables-only"`)
        // names functions without their path (`alloc_from_a`); the symbol
        // table has the full one for the function the address is in, the
        // outermost frame.
        if let Some(symbol) = loader.find_symbol(probe) {
            let full = demangle(symbol);
            match frames.last_mut() {
                Some(outer) if !is_qualified(&outer.name) => {
                    outer.name = full;
                    outer.system_name = symbol.to_string();
                }
                Some(_) => {}
                None => {
                    frames.push(SymFrame { name: full, system_name: symbol.to_string(), file: String::new(), line: 0 })
                }
            }
        }
        frames.retain(|f| !f.name.is_empty());
        frames.into()
    }
}

/// Whether a function name has its path (`a::f`, `<T as a::Tr>::f`),
/// rather than the bare name that line-tables-only debug info gives
/// (`f`, `f<a::T>`).
fn is_qualified(name: &str) -> bool {
    name.starts_with('<') || name.split('<').next().is_some_and(|path| path.contains("::"))
}

/// A Rust symbol demangled without its hash; other names as they are.
fn demangle(raw: &str) -> String {
    match rustc_demangle::try_demangle(raw) {
        Ok(d) => format!("{d:#}"),
        Err(_) => raw.to_string(),
    }
}

/// The objects loaded in the process, from `dl_iterate_phdr`.
fn loaded_objects() -> Vec<Object> {
    struct Found {
        /// Path of the main program, which `dl_iterate_phdr` leaves unnamed.
        exe: String,
        objects: Vec<Object>,
    }

    /// # Safety
    /// Called by `dl_iterate_phdr` only, with `data` the `Found` below.
    unsafe extern "C" fn each(info: *mut libc::dl_phdr_info, _size: usize, data: *mut c_void) -> c_int {
        // SAFETY: `data` is the `&mut Found` passed below, and `info`
        // points to a valid `dl_phdr_info` for the duration of the callback.
        let (found, info) = unsafe { (&mut *data.cast::<Found>(), &*info) };
        let name = if info.dlpi_name.is_null() {
            String::new()
        } else {
            // SAFETY: a non-null `dlpi_name` is a NUL-terminated string.
            unsafe { CStr::from_ptr(info.dlpi_name) }.to_string_lossy().into_owned()
        };
        let path = if name.is_empty() { found.exe.clone() } else { name };
        let headers: &[libc::Elf64_Phdr] = if info.dlpi_phdr.is_null() {
            &[]
        } else {
            // SAFETY: `dlpi_phdr` points to `dlpi_phnum` program headers.
            unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) }
        };
        let bias = info.dlpi_addr;
        let ranges = headers
            .iter()
            .filter(|h| h.p_type == libc::PT_LOAD)
            .map(|h| (bias.wrapping_add(h.p_vaddr), bias.wrapping_add(h.p_vaddr).wrapping_add(h.p_memsz)))
            .collect();
        if !path.is_empty() {
            found.objects.push(Object { path, bias, ranges, loader: None });
        }
        0
    }

    // The running program through /proc: still readable after a rebuild
    // replaced (and so deleted) the file it was started from.
    let exe = if std::path::Path::new("/proc/self/exe").exists() {
        "/proc/self/exe".to_owned()
    } else {
        std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default()
    };
    let mut found = Found { exe, objects: Vec::new() };
    // SAFETY: `each` matches the callback type and only uses `data` as the
    // `Found` it is given, which outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(each), (&mut found as *mut Found).cast()) };
    found.objects
}

/// True for the profiler's own functions: by path (`profiler::…`), or by
/// source file when the debug info names them without path.
fn is_profiler_frame(f: &SymFrame) -> bool {
    const CRATE: &str = env!("CARGO_CRATE_NAME");
    const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/");
    let name = f.name.as_str();
    name.strip_prefix('<').unwrap_or(name).strip_prefix(CRATE).is_some_and(|rest| rest.starts_with("::"))
        || f.file.starts_with(SRC)
}

/// True for the allocator plumbing between a caller and the hook:
/// `__rust_alloc` and the other shims, `alloc::alloc::alloc` and friends
/// (recognized by their source file when named without path).
fn is_allocator_plumbing(f: &SymFrame) -> bool {
    const FILES: [&str; 4] =
        ["/alloc/src/alloc.rs", "/std/src/alloc.rs", "/core/src/alloc/global.rs", "/core/src/alloc/mod.rs"];
    let name = f.name.as_str();
    if FILES.iter().any(|suffix| f.file.ends_with(suffix)) {
        return true;
    }
    let last = name.rsplit("::").next().unwrap_or(name);
    let path = name.strip_prefix('<').unwrap_or(name);
    last.starts_with("__rust_")
        || last.starts_with("__rg_")
        || last.starts_with("__rdl_")
        || path.starts_with("alloc::alloc::")
        || path.starts_with("std::alloc::")
        || name.starts_with("core::alloc::global::GlobalAlloc::")
}

/// Where a captured stack starts once the profiler's frames are cut: the
/// index of the first address kept, and how many of its (inlined) frames to
/// skip. Cuts everything up to the outermost profiler frame, then the
/// allocator plumbing right after it, so that the leaf is the allocator's
/// caller (`alloc::raw_vec::…`, `Box::new`'s caller, …): where full stacks
/// start. Stacks from the site then leave out the allocation machinery too
/// (`sites.rs`, `encode/trim.rs`).
pub(crate) fn trim_point(stack: &[&[SymFrame]]) -> (usize, usize) {
    let flat: Vec<(usize, usize, &SymFrame)> = stack
        .iter()
        .enumerate()
        .flat_map(|(a, frames)| frames.iter().enumerate().map(move |(l, f)| (a, l, f)))
        .collect();
    let mut k = flat.iter().rposition(|&(_, _, f)| is_profiler_frame(f)).map_or(0, |p| p + 1);
    while k < flat.len() && is_allocator_plumbing(flat[k].2) {
        k += 1;
    }
    match flat.get(k) {
        Some(&(a, l, _)) => (a, l),
        None => (flat.last().map_or(0, |&(a, _, _)| a + 1), 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `name` or `name@file`.
    fn frame(spec: &str) -> SymFrame {
        let (name, file) = spec.split_once('@').unwrap_or((spec, ""));
        SymFrame { name: name.into(), system_name: String::new(), file: file.into(), line: 0 }
    }

    fn check(stack: &[&[&str]], expected: (usize, usize)) {
        let frames: Vec<Vec<SymFrame>> = stack.iter().map(|a| a.iter().map(|n| frame(n)).collect()).collect();
        let refs: Vec<&[SymFrame]> = frames.iter().map(|v| v.as_slice()).collect();
        assert_eq!(trim_point(&refs), expected, "{stack:?}");
    }

    #[test]
    fn trims_profiler_and_plumbing() {
        check(
            &[
                &["profiler::profiler::Profiler<A>::record_sample"],
                &["profiler::profiler::Profiler<A>::on_alloc::{{closure}}"],
                &["std::thread::local::LocalKey<T>::with"],
                &["<profiler::Profiler<A> as core::alloc::global::GlobalAlloc>::alloc", "__rustc::__rg_alloc"],
                &[
                    "alloc::alloc::alloc",
                    "<alloc::alloc::Global>::alloc_impl",
                    "alloc::raw_vec::RawVecInner<A>::try_allocate_in",
                ],
                &["app::main"],
            ],
            (4, 2),
        );
        // Debug builds: no inlining, one frame per address.
        check(
            &[
                &["<profiler::profiler::Profiler<A> as core::alloc::global::GlobalAlloc>::alloc"],
                &["__rustc::__rust_alloc"],
                &["alloc::alloc::exchange_malloc"],
                &["app::make"],
            ],
            (3, 0),
        );
        // Unresolved addresses right after the hook are cut with it; a stack
        // with no symbols at all is kept whole.
        check(&[&["profiler::x"], &[], &["app::f"]], (2, 0));
        check(&[&[], &[]], (0, 0));
        // Only profiler frames: nothing left.
        check(&[&["profiler::x"], &["__rust_alloc"]], (2, 0));
        // A function of another crate that merely contains the name.
        check(&[&["my_profiler::x"], &["app::f"]], (0, 0));
        // Release builds with line tables only: short names, known by file.
        let src = concat!(env!("CARGO_MANIFEST_DIR"), "/src/profiler.rs");
        let hook = format!("on_alloc<std::alloc::System>@{src}");
        let gl = format!("alloc<std::alloc::System>@{src}");
        check(
            &[
                &["profiler::profiler::Profiler<A>::record_sample"],
                &[
                    "{closure#0}<std::alloc::System>",
                    "try_with<T>@/rustc/x/library/std/src/thread/local.rs",
                    hook.as_str(),
                    gl.as_str(),
                    "__rustc::__rust_alloc",
                ],
                &[
                    "alloc@/rustc/x/library/alloc/src/alloc.rs",
                    "alloc_impl@/rustc/x/library/alloc/src/alloc.rs",
                    "try_allocate_in<alloc::alloc::Global>@/rustc/x/library/alloc/src/raw_vec/mod.rs",
                    "app::f",
                ],
            ],
            (2, 2),
        );
    }

    #[test]
    fn qualified_names() {
        assert!(is_qualified("app::f"));
        assert!(is_qualified("<app::T as core::ops::Drop>::drop"));
        assert!(is_qualified("alloc::vec::Vec<T,A>::push"));
        assert!(!is_qualified("f"));
        assert!(!is_qualified("call_once<app::f::{closure_env#0}, ()>"));
        assert!(!is_qualified(""));
    }

    #[test]
    fn names_have_no_hash() {
        #[inline(never)]
        fn here() -> usize {
            let mut out = [0usize; crate::table::MAX_DEPTH];
            let top = std::cell::Cell::new((0, 0));
            let n = crate::stack::capture(&mut out, &top);
            assert!(n > 0);
            out[0]
        }
        let frames = resolve_all([here()]).into_values().next().unwrap();
        let names: Vec<&str> = frames.iter().map(|f| f.name.as_str()).collect();
        assert!(names.iter().any(|n| n.ends_with("symbolize::tests::names_have_no_hash::here")), "{names:?}");
        assert!(names
            .iter()
            .all(|n| !n.contains("::h") || !n.rsplit("::h").next().unwrap().chars().all(|c| c.is_ascii_hexdigit())));
        assert!(frames.iter().all(|f| f.line > 0 && f.file.ends_with(".rs")), "{frames:?}");
    }
}
