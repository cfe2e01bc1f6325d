//! [`Profile::from_named`]: heap-format profiles whose "stacks" are chains
//! of names ([`NamedSample`]) rather than call stacks.

use std::time::SystemTime;

use pprof::protos;

use super::proto::{Builder, Parts};
use crate::profile::{Profile, SampleType};

/// One sample of a profile whose "stacks" are chains of names rather than
/// call stacks: for instance a buffer pool's view of who took a chunk and
/// who still holds it. See [`Profile::from_named`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedSample {
    /// The chain, leaf first (as pprof orders a stack).
    pub stack: Vec<String>,
    /// `alloc_objects`, `alloc_space`, `inuse_objects`, `inuse_space`.
    pub values: [i64; 4],
    /// Numeric labels (`bytes` = block size, as heap profiles have).
    pub num_labels: Vec<(String, i64)>,
    /// String labels.
    pub str_labels: Vec<(String, String)>,
}

impl Profile {
    /// A heap-format profile (the same four sample types, period type
    /// `space/bytes`) from named chains instead of call stacks, readable by
    /// `go tool pprof` and by anything that reads heap profiles.
    pub fn from_named(samples: &[NamedSample], period: i64, default: SampleType) -> Profile {
        let mut b = Builder::new(Vec::new());
        let sample = samples
            .iter()
            .map(|s| {
                let location_id = s.stack.iter().map(|name| b.named_location(name)).collect();
                let mut label: Vec<protos::Label> = s
                    .num_labels
                    .iter()
                    .map(|(k, v)| protos::Label { key: b.string(k), str: 0, num: *v, num_unit: 0 })
                    .collect();
                for (k, v) in &s.str_labels {
                    label.push(protos::Label { key: b.string(k), str: b.string(v), num: 0, num_unit: 0 });
                }
                protos::Sample { location_id, value: s.values.to_vec(), label }
            })
            .collect();
        let parts = Parts { sample, mapping: Vec::new(), period, default, comment: Vec::new() };
        b.finish(parts, SystemTime::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_profiles_share_locations_and_keep_labels() {
        let sample = |stack: &[&str], bytes: i64| NamedSample {
            stack: stack.iter().map(|s| s.to_string()).collect(),
            values: [1, bytes, 1, bytes],
            num_labels: vec![("bytes".into(), bytes)],
            str_labels: vec![("holder".into(), "field".into())],
        };
        let p = Profile::from_named(
            &[
                sample(&["held by Request.msg", "take", "lease"], 8192),
                sample(&["held by slot", "take", "lease"], 4096),
            ],
            1,
            SampleType::InuseSpace,
        );
        let back = Profile::decode(&p.encode_gzip()).unwrap();
        assert_eq!(back.total(SampleType::InuseSpace), 8192 + 4096);
        let proto = back.proto();
        assert_eq!(proto.location.len(), 4, "shared frames are one location each");
        assert_eq!(proto.sample[0].label.len(), 2);
        let name = |id: u64| {
            let loc = &proto.location[id as usize - 1];
            let f = &proto.function[loc.line[0].function_id as usize - 1];
            proto.string_table[f.name as usize].clone()
        };
        assert_eq!(name(proto.sample[1].location_id[0]), "held by slot");
    }
}
