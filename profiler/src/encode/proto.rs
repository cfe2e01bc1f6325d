//! [`Builder`]: the tables of a heap-format profile.proto (strings,
//! functions, locations, mappings), each entry made once and referred to by
//! id, and the finished [`Profile`].

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use pprof::protos;

use crate::maps::Map;
use crate::profile::{Profile, SampleType};
use crate::symbolize::SymFrame;

/// Builds profile.proto tables with deduplicated strings, functions and
/// locations, for a profile with the four heap sample types and period type
/// `space/bytes`.
#[derive(Default)]
pub(crate) struct Builder {
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    functions: Vec<protos::Function>,
    function_ids: HashMap<(i64, i64, i64), u64>,
    locations: Vec<protos::Location>,
    location_ids: HashMap<(usize, usize), u64>,
    named_location_ids: HashMap<String, u64>,
    maps: Vec<Map>,
    sample_type: Vec<protos::ValueType>,
    period_type: protos::ValueType,
}

/// What differs between the profiles a [`Builder`] finishes.
pub(crate) struct Parts {
    /// The samples, their location ids from the builder.
    pub sample: Vec<protos::Sample>,
    /// The mappings ([`Builder::mappings`], or none).
    pub mapping: Vec<protos::Mapping>,
    /// The sampling rate.
    pub period: i64,
    /// The sample type tools show first.
    pub default: SampleType,
    /// Comments, as string ids.
    pub comment: Vec<i64>,
}

impl Builder {
    /// A builder whose addresses fall in `maps` (none for profiles of named
    /// chains), with the empty string first and the heap sample types.
    pub(crate) fn new(maps: Vec<Map>) -> Self {
        let mut b = Builder { maps, ..Builder::default() };
        b.string("");
        b.sample_type = SampleType::ALL.iter().map(|t| b.value_type(t.name(), t.unit())).collect();
        b.period_type = b.value_type("space", "bytes");
        b
    }

    /// The id of `s` in the string table.
    pub(crate) fn string(&mut self, s: &str) -> i64 {
        if let Some(&id) = self.string_ids.get(s) {
            return id;
        }
        let id = self.strings.len() as i64;
        self.strings.push(s.to_string());
        self.string_ids.insert(s.to_string(), id);
        id
    }

    fn value_type(&mut self, ty: &str, unit: &str) -> protos::ValueType {
        protos::ValueType { ty: self.string(ty), unit: self.string(unit) }
    }

    fn function(&mut self, f: &SymFrame) -> u64 {
        let key = (self.string(&f.name), self.string(&f.system_name), self.string(&f.file));
        if let Some(&id) = self.function_ids.get(&key) {
            return id;
        }
        let id = self.functions.len() as u64 + 1;
        self.functions.push(protos::Function { id, name: key.0, system_name: key.1, filename: key.2, start_line: 0 });
        self.function_ids.insert(key, id);
        id
    }

    /// The location of return address `ret`, without its first `skip`
    /// inlined frames.
    pub(crate) fn location(&mut self, ret: usize, skip: usize, frames: &[SymFrame]) -> u64 {
        if let Some(&id) = self.location_ids.get(&(ret, skip)) {
            return id;
        }
        let address = ret.saturating_sub(1) as u64;
        let mapping_id =
            self.maps.iter().position(|m| m.start <= address && address < m.end).map_or(0, |i| i as u64 + 1);
        let line = frames[skip.min(frames.len())..]
            .iter()
            .map(|f| protos::Line { function_id: self.function(f), line: i64::from(f.line) })
            .collect();
        let id = self.locations.len() as u64 + 1;
        self.locations.push(protos::Location { id, mapping_id, address, line, is_folded: false });
        self.location_ids.insert((ret, skip), id);
        id
    }

    /// A location made of one function known only by its name (no address,
    /// no mapping): for stacks that are not call stacks.
    pub(crate) fn named_location(&mut self, name: &str) -> u64 {
        if let Some(&id) = self.named_location_ids.get(name) {
            return id;
        }
        let frame = SymFrame { name: name.to_string(), system_name: name.to_string(), file: String::new(), line: 0 };
        let line = vec![protos::Line { function_id: self.function(&frame), line: 0 }];
        let id = self.locations.len() as u64 + 1;
        self.locations.push(protos::Location { id, mapping_id: 0, address: 0, line, is_folded: false });
        self.named_location_ids.insert(name.to_string(), id);
        id
    }

    /// The mapping table: one entry per map the builder was made with, in
    /// order (location `mapping_id`s count from 1 in the same order). Comes
    /// after the last [`Builder::location`], which no longer finds a mapping.
    pub(crate) fn mappings(&mut self) -> Vec<protos::Mapping> {
        let maps = std::mem::take(&mut self.maps);
        maps.iter()
            .enumerate()
            .map(|(i, m)| protos::Mapping {
                id: i as u64 + 1,
                memory_start: m.start,
                memory_limit: m.end,
                file_offset: m.offset,
                filename: self.string(&m.path),
                build_id: 0,
                has_functions: true,
                has_filenames: true,
                has_line_numbers: true,
                has_inline_frames: true,
            })
            .collect()
    }

    /// The profile, with the builder's tables.
    pub(crate) fn finish(mut self, p: Parts, time: SystemTime) -> Profile {
        let default_sample_type = self.string(p.default.name());
        let time_nanos = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64);
        Profile::from_proto(protos::Profile {
            sample_type: self.sample_type,
            sample: p.sample,
            mapping: p.mapping,
            location: self.locations,
            function: self.functions,
            string_table: self.strings,
            drop_frames: 0,
            keep_frames: 0,
            time_nanos,
            duration_nanos: 0,
            period_type: Some(self.period_type),
            period: p.period,
            comment: p.comment,
            default_sample_type,
        })
    }
}
