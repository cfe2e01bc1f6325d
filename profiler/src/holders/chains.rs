//! From the child's records to a profile of named chains.
//!
//! Chains are interned as a trie of (parent chain, block name) nodes, in the
//! order the search found the blocks (a parent before its children), so
//! each block costs one lookup whatever its depth. A chain that reaches
//! [`HolderOptions::max_hops`] named blocks ends in `$sub_objects$`, which
//! then takes every block deeper down.

use std::collections::HashMap;
use std::sync::Arc;

use pprof::protos;

use super::roots::{Namer, Root};
use super::scan::{Rec, Trailer, LEAK_ROOT, MAGIC, PARTIAL_MEMORY, PARTIAL_MMAP, PARTIAL_TIME, ROOT_FLAG, UNSCANNED};
use super::{HolderOptions, ScanStats};
use crate::encode::NamedSample;
use crate::profile::{Profile, SampleType};
use crate::sites::{self, BlockName};
use crate::symbolize::{self, SymFrame};
use crate::table::State;

/// Root frame of live blocks that no root reaches.
pub(crate) const UNREACHABLE: &str = "$unreachable$";
/// Root frame of blocks the scan had no time to examine.
pub(crate) const UNSCANNED_FRAME: &str = "$unscanned$";
/// Frame that takes the blocks below a chain's last named block.
pub(crate) const SUB_OBJECTS: &str = "$sub_objects$";

/// The child's output, decoded.
pub(crate) struct Parsed {
    /// Every live block's address: scrubbed when dropped (see
    /// [`Scrubbed`](super::Scrubbed)).
    pub recs: super::Scrubbed<Rec>,
    pub order: Vec<u32>,
    pub trailer: Trailer,
}

/// Splits the child's bytes into records, search order and trailer.
pub(crate) fn parse(bytes: &[u8]) -> Result<Parsed, String> {
    let t = std::mem::size_of::<Trailer>();
    if bytes.len() < t {
        return Err(format!("the scan ended after {} bytes, without its trailer", bytes.len()));
    }
    let (body, tail) = bytes.split_at(bytes.len() - t);
    // SAFETY: `tail` is exactly `size_of::<Trailer>()` bytes and `Trailer`
    // is plain integers, valid for any bytes; read unaligned.
    let trailer: Trailer = unsafe { std::ptr::read_unaligned(tail.as_ptr().cast()) };
    if trailer.magic != MAGIC {
        return Err("the scan's output has no valid trailer".into());
    }
    let r = std::mem::size_of::<Rec>();
    let n = trailer.blocks as usize;
    let recs_len = if trailer.flags & (PARTIAL_MEMORY | PARTIAL_MMAP) != 0 { 0 } else { n };
    let need = recs_len.checked_mul(r).and_then(|b| b.checked_add(trailer.queued as usize * 4));
    if need != Some(body.len()) {
        return Err(format!("the scan wrote {} bytes for {n} blocks", body.len()));
    }
    let (recs_bytes, order_bytes) = body.split_at(recs_len * r);
    let recs = super::Scrubbed(
        recs_bytes
            .chunks_exact(r)
            // SAFETY: each chunk is one `Rec` of plain integers; read unaligned.
            .map(|c| unsafe { std::ptr::read_unaligned(c.as_ptr().cast::<Rec>()) })
            .collect(),
    );
    let order = order_bytes.chunks_exact(4).map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]])).collect();
    Ok(Parsed { recs, order, trailer })
}

/// A node of the chain trie.
#[derive(Clone, Copy)]
struct Node {
    parent: u32,
    name: u32,
    /// Named blocks on the chain below the root.
    hops: u32,
    /// The node is `$sub_objects$`: extending it gives itself.
    sub: bool,
}

struct Trie {
    nodes: Vec<Node>,
    index: HashMap<(u32, u32), u32>,
}

const NO_PARENT: u32 = u32::MAX;

impl Trie {
    fn root(&mut self, name: u32) -> u32 {
        self.intern(NO_PARENT, name, 0, false)
    }

    fn extend(&mut self, parent: u32, name: u32, sub_name: u32, max_hops: usize) -> u32 {
        let p = self.nodes[parent as usize];
        if p.sub {
            return parent;
        }
        if p.hops as usize >= max_hops {
            return self.intern(parent, sub_name, p.hops + 1, true);
        }
        self.intern(parent, name, p.hops + 1, false)
    }

    fn intern(&mut self, parent: u32, name: u32, hops: u32, sub: bool) -> u32 {
        let next = self.nodes.len() as u32;
        *self.index.entry((parent, name)).or_insert_with(|| {
            self.nodes.push(Node { parent, name, hops, sub });
            next
        })
    }

    /// Names from the leaf-most node to the root.
    fn names(&self, mut node: u32) -> Vec<u32> {
        let mut out = Vec::new();
        while node != NO_PARENT {
            let n = self.nodes[node as usize];
            out.push(n.name);
            node = n.parent;
        }
        out
    }
}

/// Interned strings.
#[derive(Default)]
struct Names {
    list: Vec<String>,
    ids: HashMap<String, u32>,
}

impl Names {
    fn id(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = self.list.len() as u32;
        self.list.push(s.to_owned());
        self.ids.insert(s.to_owned(), id);
        id
    }
}

/// Per bucket: the held block's name, and its trimmed allocation stack as
/// one string (the `stack` label).
struct BucketInfo {
    name: BlockName,
    stack: String,
}

/// Makes the profile.
pub(crate) fn build(p: &Parsed, roots: &[Root], state: &State, opts: &HolderOptions, stats: &mut ScanStats) -> Profile {
    let t = &p.trailer;
    stats.blocks = t.blocks;
    stats.words = t.words;
    stats.scan = std::time::Duration::from_nanos(t.scan_ns);
    stats.scratch_bytes = t.scratch_bytes;
    stats.unmapped_root_bytes = t.unmapped_root_bytes;
    if t.flags & PARTIAL_TIME != 0 {
        stats.partial.push(format!("the scan ran out of its time budget ({:?})", opts.time_budget));
    }
    if t.flags & PARTIAL_MEMORY != 0 {
        stats.partial.push(format!(
            "{} live blocks need {} bytes of scratch memory, more than the budget of {}: nothing was scanned",
            t.blocks, t.scratch_bytes, opts.memory_budget
        ));
    }
    if t.flags & PARTIAL_MMAP != 0 {
        stats.partial.push("the scan could not map its scratch memory: nothing was scanned".into());
    }

    let infos = bucket_infos(&p.recs, state);
    let mut names = Names::default();
    let mut trie = Trie { nodes: Vec::new(), index: HashMap::new() };
    let mut namer = Namer::default();
    let sub = names.id(SUB_OBJECTS);
    let mut chain = vec![u32::MAX; p.recs.len()];
    let mut root_names: HashMap<(usize, u64), u32> = HashMap::new();
    let mut hop_names: HashMap<u32, u32> = HashMap::new();
    let mut deep = 0u64;
    for &i in &p.order {
        let Some(r) = p.recs.get(i as usize) else { continue };
        let node = match r.parent {
            LEAK_ROOT => {
                let id = names.id(UNREACHABLE);
                trie.root(id)
            }
            parent if parent & ROOT_FLAG != 0 && parent < UNSCANNED => {
                let ri = (parent & !ROOT_FLAG) as usize;
                let name = *root_names.entry((ri, r.via)).or_insert_with(|| {
                    let n = roots.get(ri).map_or_else(|| "root ?".to_owned(), |root| namer.name(&root.kind, r.via));
                    names.id(&n)
                });
                trie.root(name)
            }
            parent => {
                let Some(&pc) = chain.get(parent as usize) else { continue };
                if pc == u32::MAX {
                    continue;
                }
                let pb = p.recs[parent as usize].bucket;
                let hop = *hop_names.entry(pb).or_insert_with(|| {
                    let n = infos.get(&pb).map_or_else(|| "block ?".to_owned(), |i| i.name.describe());
                    names.id(&n)
                });
                let node = trie.extend(pc, hop, sub, opts.max_hops);
                if trie.nodes[node as usize].sub && !trie.nodes[pc as usize].sub {
                    deep += 1;
                }
                node
            }
        };
        chain[i as usize] = node;
    }
    if deep > 0 {
        stats.partial.push(format!(
            "{deep} chains were deeper than {} blocks: what lies below goes under {SUB_OBJECTS}",
            opts.max_hops
        ));
    }

    // Aggregate per (chain, held bucket's stack).
    let unscanned_root = {
        let id = names.id(UNSCANNED_FRAME);
        trie.root(id)
    };
    let mut agg: HashMap<(u32, u32), (i64, i64)> = HashMap::new();
    for (i, r) in p.recs.iter().enumerate() {
        stats.bytes += r.size;
        let node = match r.parent {
            UNSCANNED => {
                stats.unscanned += 1;
                stats.unscanned_bytes += r.size;
                unscanned_root
            }
            _ if chain[i] == u32::MAX => {
                stats.unscanned += 1;
                stats.unscanned_bytes += r.size;
                unscanned_root
            }
            _ => chain[i],
        };
        let under_unreachable = trie.names(node).last().is_some_and(|&root| names.list[root as usize] == UNREACHABLE);
        if r.parent != UNSCANNED && chain[i] != u32::MAX {
            if under_unreachable {
                stats.unreachable += 1;
                stats.unreachable_bytes += r.size;
            } else {
                stats.reached += 1;
                stats.reached_bytes += r.size;
            }
        }
        let (stack, _) = state.buckets.key(r.bucket);
        let e = agg.entry((node, stack)).or_default();
        e.0 += 1;
        e.1 += r.size as i64;
    }

    let mut stack_infos: HashMap<u32, &BucketInfo> = HashMap::new();
    for r in p.recs.iter() {
        if let Some(info) = infos.get(&r.bucket) {
            stack_infos.entry(state.buckets.key(r.bucket).0).or_insert(info);
        }
    }
    let mut samples: Vec<NamedSample> = agg
        .into_iter()
        .map(|((node, stack), (objects, bytes))| {
            let chain_names = trie.names(node);
            let info = stack_infos.get(&stack);
            let mut frames = Vec::with_capacity(chain_names.len() + 1);
            frames.push(info.map_or_else(|| "?".to_owned(), |i| i.name.site.clone()));
            frames.extend(chain_names.iter().map(|&n| names.list[n as usize].clone()));
            NamedSample {
                stack: frames,
                values: [objects, bytes, objects, bytes],
                num_labels: vec![("hops".to_owned(), chain_names.len() as i64 - 1)],
                str_labels: info.map_or_else(Vec::new, |i| {
                    vec![("kind".to_owned(), i.name.kind.to_owned()), ("stack".to_owned(), i.stack.clone())]
                }),
            }
        })
        .collect();
    samples.sort_by(|a, b| b.values[3].cmp(&a.values[3]).then_with(|| a.stack.cmp(&b.stack)));
    Profile::from_named(&samples, 1, SampleType::InuseSpace)
}

/// Names every bucket that a record uses.
fn bucket_infos(recs: &[Rec], state: &State) -> HashMap<u32, BucketInfo> {
    let mut stacks: HashMap<u32, Vec<usize>> = HashMap::new();
    let mut bucket_stack: HashMap<u32, u32> = HashMap::new();
    for r in recs {
        bucket_stack.entry(r.bucket).or_insert_with(|| {
            let (stack, _) = state.buckets.key(r.bucket);
            stacks.entry(stack).or_insert_with(|| {
                let mut frames = Vec::new();
                state.stacks.frames_of(stack, &mut frames);
                frames
            });
            stack
        });
    }
    let symbols = symbolize::resolve_all(stacks.values().flatten().copied());
    let mut named: HashMap<u32, (BlockName, String)> = HashMap::new();
    for (&stack, addrs) in &stacks {
        let frames: Vec<&[SymFrame]> =
            addrs.iter().map(|a| symbols.get(a).map_or(&[][..], |f: &Arc<[SymFrame]>| &f[..])).collect();
        let (first, skip) = symbolize::trim_point(&frames);
        let flat: Vec<&SymFrame> = frames
            .iter()
            .skip(first)
            .enumerate()
            .flat_map(|(k, fs)| fs.iter().skip(if k == 0 { skip } else { 0 }))
            .collect();
        let name = sites::block_name(flat.iter().copied());
        let text = flat.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join("\n");
        named.insert(stack, (name, text));
    }
    bucket_stack
        .into_iter()
        .filter_map(|(b, s)| named.get(&s).map(|(n, t)| (b, BucketInfo { name: n.clone(), stack: t.clone() })))
        .collect()
}

/// Adds the scan's figures and any partial reason as profile comments
/// (`go tool pprof -comments`).
pub(crate) fn with_comments(profile: Profile, stats: &ScanStats) -> Profile {
    let mut proto: protos::Profile = profile.into_proto();
    let mut lines = vec![format!(
        "holders: {} live blocks ({} bytes); {} reached from {} roots ({} bytes); {} unreachable ({} bytes); \
         {} of {} other threads stopped for {:?} (fork {:?}); scan {:?}, scratch {} bytes",
        stats.blocks,
        stats.bytes,
        stats.reached,
        stats.roots,
        stats.reached_bytes,
        stats.unreachable,
        stats.unreachable_bytes,
        stats.threads_stopped,
        stats.threads.saturating_sub(1),
        stats.pause,
        stats.fork,
        stats.scan,
        stats.scratch_bytes
    )];
    if stats.unmapped_root_bytes > 0 {
        lines.push(format!(
            "holders: {} bytes of roots were unmapped between their listing and the fork (a thread exited or a \
             library was unloaded): not read",
            stats.unmapped_root_bytes
        ));
    }
    lines.extend(stats.partial.iter().map(|p| format!("partial: {p}")));
    for line in lines {
        proto.string_table.push(line);
        proto.comment.push(proto.string_table.len() as i64 - 1);
    }
    Profile::from_proto(proto)
}
