//! The roots of the scan, and their names.
//!
//! - **Statics:** every writable loadable segment (`PT_LOAD` with `PF_W`:
//!   `.data`, `.bss`, and the relocated read-only data before them) of the
//!   executable and of each shared library but the C library and the
//!   loader (whose data is malloc's arenas and the loader's tables, not
//!   the program's), from `dl_iterate_phdr`. A root
//!   word is named by the ELF symbol that covers it
//!   (`static scenarios::…::CACHE`), read from the object's symbol table with
//!   the `object` crate, or `static libfoo.so+0x1f0` without one.
//! - **Thread stacks:** every registered live thread's stack mapping (see
//!   `threads.rs`), from its low end (the scanning thread: from its stack
//!   pointer) to its top, and the static thread-local storage below its
//!   thread pointer when that lies outside the stack (the main thread).
//!   Named `thread NAME stack` from `/proc/self/task/TID/comm`.
//!
//! Every span is cut to the readable mappings of `/proc/self/maps`, so that
//! guard pages and unmapped holes are never read.

use std::collections::HashMap;
use std::ffi::{c_int, c_void, CStr};

use object::{Object, ObjectSymbol, SymbolKind};

use super::scan::Span;
use crate::threads::{self, ThreadStack};

/// Scanned below a thread pointer that lies outside its thread's stack,
/// besides the static TLS blocks of the loaded objects: glibc's surplus for
/// libraries loaded later (`TLS_STATIC_SURPLUS`, under 2 KiB) and alignment.
const TLS_SURPLUS: usize = 4096;
/// Scanned above it (the thread control block, with its DTV pointer).
const TLS_ABOVE: usize = 2048;

/// What a root span is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RootKind {
    /// A writable segment of a loaded object.
    Static { path: String, bias: u64 },
    /// A thread's stack or thread-local storage.
    Thread { tid: u32 },
}

/// One root span with what it is.
#[derive(Debug, Clone)]
pub(crate) struct Root {
    pub span: Span,
    pub kind: RootKind,
    /// For a thread's stack span: the thread's index in the list given to
    /// [`collect`] (its low end moves up to the stack pointer once known).
    pub stack_of: Option<usize>,
}

/// The roots of the process now, statics first, then the stacks and
/// thread-local storage of `threads`. `sp` is the scanning thread's stack
/// pointer (the live part of its own stack starts there); other threads'
/// stacks are whole until their stack pointers are known.
pub(crate) fn collect(sp: usize, threads: &[ThreadStack]) -> Vec<Root> {
    let readable = readable_ranges();
    let (segments, tls_blocks) = loaded_segments();
    let mut roots = Vec::new();
    for seg in segments.iter().filter(|s| !is_allocator_library(&s.path)) {
        for span in clip(Span { lo: seg.lo, hi: seg.hi }, &readable) {
            roots.push(Root {
                span,
                kind: RootKind::Static { path: seg.path.clone(), bias: seg.bias },
                stack_of: None,
            });
        }
    }
    let tls_below = tls_blocks + TLS_SURPLUS;
    let me = threads::current_tid();
    for (i, t) in threads.iter().enumerate() {
        let ThreadStack { tid, lo, hi, tp, .. } = *t;
        let own = tid == me;
        let lo = if own { sp.max(lo) } else { lo };
        for span in clip(Span { lo, hi }, &readable) {
            roots.push(Root { span, kind: RootKind::Thread { tid }, stack_of: (!own).then_some(i) });
        }
        if tp != 0 && !(lo..hi).contains(&tp) {
            // The main thread's static TLS and control block, which glibc
            // places outside its stack (at the start of the brk heap): only
            // as many bytes as the loaded objects' TLS segments take, since
            // the heap's other words are not roots.
            let tls = Span { lo: tp.saturating_sub(tls_below), hi: tp.saturating_add(TLS_ABOVE) };
            for span in clip(tls, &readable) {
                roots.push(Root { span, kind: RootKind::Thread { tid }, stack_of: None });
            }
        }
    }
    roots
}

/// The C library and the dynamic loader: their writable data is the C
/// allocator's own book-keeping (arena bins and top chunks), whose pointers
/// to free chunks land in the last bytes of the live blocks before them,
/// and the loader's tables. Not roots of the program's memory.
fn is_allocator_library(path: &str) -> bool {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.starts_with("libc.so") || file.starts_with("ld-linux") || file.starts_with("libc-")
}

/// Parts of `s` that lie in readable mappings.
fn clip(s: Span, readable: &[(usize, usize)]) -> Vec<Span> {
    readable
        .iter()
        .filter_map(|&(lo, hi)| {
            let (a, b) = (lo.max(s.lo), hi.min(s.hi));
            (a < b).then_some(Span { lo: a, hi: b })
        })
        .collect()
}

/// Readable ranges of `/proc/self/maps`, merged, excluding `[vvar]`-like
/// kernel pages that cannot be read.
fn readable_ranges() -> Vec<(usize, usize)> {
    let text = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    parse_readable(&text)
}

fn parse_readable(text: &str) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else { continue };
        let name = fields.nth(3).unwrap_or("");
        if !perms.starts_with('r') || name.starts_with("[vvar") || name == "[vsyscall]" {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else { continue };
        let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) else { continue };
        match out.last_mut() {
            Some(last) if last.1 == a => last.1 = b,
            _ => out.push((a, b)),
        }
    }
    out
}

/// A writable loadable segment of an object.
struct Segment {
    path: String,
    bias: u64,
    lo: usize,
    hi: usize,
}

/// The writable segments of every loaded object, and the bytes their
/// static TLS blocks take (each `PT_TLS` rounded up to its alignment).
fn loaded_segments() -> (Vec<Segment>, usize) {
    struct Found {
        exe: String,
        segments: Vec<Segment>,
        tls: usize,
    }
    /// # Safety
    /// Called by `dl_iterate_phdr` only, with `data` the `Found` below.
    unsafe extern "C" fn each(info: *mut libc::dl_phdr_info, _size: usize, data: *mut c_void) -> c_int {
        // SAFETY: `data` is the `&mut Found` passed below, and `info` points
        // to a valid `dl_phdr_info` for the duration of the callback.
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
        for h in headers {
            if h.p_type == libc::PT_TLS {
                let align = (h.p_align as usize).max(1);
                found.tls += (h.p_memsz as usize).div_ceil(align) * align;
            }
            if h.p_type == libc::PT_LOAD && h.p_flags & libc::PF_W != 0 {
                let lo = info.dlpi_addr.wrapping_add(h.p_vaddr) as usize;
                found.segments.push(Segment {
                    path: path.clone(),
                    bias: info.dlpi_addr,
                    lo,
                    hi: lo.saturating_add(h.p_memsz as usize),
                });
            }
        }
        0
    }
    let mut found = Found { exe: "/proc/self/exe".to_owned(), segments: Vec::new(), tls: 0 };
    // SAFETY: `each` matches the callback type and only uses `data` as the
    // `Found` it is given, which outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(each), (&mut found as *mut Found).cast()) };
    (found.segments, found.tls)
}

/// Names root words: statics by symbol, threads by name.
#[derive(Default)]
pub(crate) struct Namer {
    /// Per object path: data symbols sorted by address (file addresses).
    symbols: HashMap<String, Vec<(u64, u64, String)>>,
    threads: HashMap<u32, String>,
}

impl Namer {
    /// The name of the root word at `addr` in `kind`.
    pub(crate) fn name(&mut self, kind: &RootKind, addr: u64) -> String {
        match kind {
            RootKind::Static { path, bias } => {
                let file_addr = addr.wrapping_sub(*bias);
                let table = self.symbols.entry(path.clone()).or_insert_with(|| data_symbols(path));
                let i = table.partition_point(|s| s.0 <= file_addr);
                match i.checked_sub(1).and_then(|i| table.get(i)) {
                    Some((start, size, name)) if file_addr < start + (*size).max(1) => format!("static {name}"),
                    _ => {
                        let file = path.rsplit('/').next().unwrap_or(path);
                        let file = if file == "exe" { "executable" } else { file };
                        format!("static {file}+{file_addr:#x}")
                    }
                }
            }
            RootKind::Thread { tid } => self
                .threads
                .entry(*tid)
                .or_insert_with(|| {
                    let comm = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).unwrap_or_default();
                    let comm = comm.trim();
                    // SAFETY: getpid cannot fail.
                    let main = *tid as i32 == unsafe { libc::getpid() };
                    // By name, not id: threads of one pool read as one root,
                    // and names stay the same from one run to the next.
                    match (comm.is_empty(), main) {
                        (_, true) => "thread main stack".to_owned(),
                        (true, false) => "thread ? stack".to_owned(),
                        (false, false) => format!("thread {comm} stack"),
                    }
                })
                .clone(),
        }
    }
}

/// The data symbols of the object at `path` (file addresses), sorted.
fn data_symbols(path: &str) -> Vec<(u64, u64, String)> {
    let Ok(bytes) = std::fs::read(path) else { return Vec::new() };
    let Ok(file) = object::File::parse(&*bytes) else { return Vec::new() };
    let mut out: Vec<(u64, u64, String)> = file
        .symbols()
        .chain(file.dynamic_symbols())
        .filter(|s| matches!(s.kind(), SymbolKind::Data | SymbolKind::Tls | SymbolKind::Unknown) && s.address() != 0)
        .filter_map(|s| Some((s.address(), s.size(), demangle(s.name().ok()?))))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    out.dedup_by_key(|s| s.0);
    out
}

fn demangle(raw: &str) -> String {
    match rustc_demangle::try_demangle(raw) {
        Ok(d) => format!("{d:#}"),
        Err(_) => raw.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static NAMED_ROOT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(7);

    #[test]
    fn maps_are_merged_and_unreadable_ones_skipped() {
        let text = "1000-2000 r--p 00000000 00:00 0 /bin/x\n\
                    2000-3000 rw-p 00000000 00:00 0\n\
                    3000-4000 ---p 00000000 00:00 0\n\
                    5000-6000 r--p 00000000 00:00 0 [vvar]\n\
                    7000-8000 rw-p 00000000 00:00 0 [stack]\n";
        assert_eq!(parse_readable(text), vec![(0x1000, 0x3000), (0x7000, 0x8000)]);
        let spans = clip(Span { lo: 0x1800, hi: 0x7800 }, &parse_readable(text));
        assert_eq!(spans, vec![Span { lo: 0x1800, hi: 0x3000 }, Span { lo: 0x7000, hi: 0x7800 }]);
    }

    #[test]
    fn a_static_is_named_by_its_symbol() {
        std::hint::black_box(&NAMED_ROOT);
        let here = &NAMED_ROOT as *const _ as u64;
        let roots = collect(0, &[]);
        let root = roots
            .iter()
            .find(|r| (r.span.lo as u64..r.span.hi as u64).contains(&here))
            .expect("a writable segment holds the static");
        let name = Namer::default().name(&root.kind, here);
        assert!(name.ends_with("holders::roots::tests::NAMED_ROOT"), "{name}");
    }

    #[test]
    fn this_threads_stack_is_a_root() {
        crate::threads::register_current();
        let local = 5u64;
        let here = &local as *const u64 as usize;
        let roots = collect(here, &crate::threads::live_threads());
        let root = roots.iter().find(|r| r.span.lo <= here && here < r.span.hi).expect("the stack is a root");
        let name = Namer::default().name(&root.kind, here as u64);
        assert!(name.starts_with("thread ") && name.ends_with(" stack"), "{name}");
        std::hint::black_box(local);
    }
}
