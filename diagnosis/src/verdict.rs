//! The verdict: leak or not, which kind, where, and what to do.

use serde::{Deserialize, Serialize};

use crate::kind::{Kind, Mode};
use crate::units::{mib, MIB};

/// One explained growth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// The guide's case it is.
    pub kind: Kind,
    /// Confidence, 0 to 1.
    pub score: f64,
    /// The frame a person should open (or the pool holder).
    pub site: String,
    /// In-use growth at the site while it grew.
    pub growth_bytes_per_s: f64,
    /// In-use bytes the site gained over the baseline at its peak.
    pub growth_bytes: f64,
    /// What was seen, in plain words.
    pub evidence: Vec<String>,
    /// What to do, in the guide's words.
    pub remedy: String,
    /// Who holds the memory, from holder profiles when there are some.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<Holder>,
    /// Other holders of the same blocks, each explaining at least
    /// [`ALSO_HELD`] of the held growth, largest first (at most three):
    /// where one leak has several holders (a pool's cache, the connection
    /// that keeps a node, a request in flight), each is a place to look.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also_held_by: Vec<Holder>,
}

/// The share of a finding's held growth another holder must explain to be
/// listed in [`Finding::also_held_by`]. Mechanism: a leak's held growth is
/// made of blocks; a holder with less than a tenth of it holds less than
/// one block in ten (a block in flight at the scan, or a stale pointer the
/// conservative scan met), which the larger holders already explain. It is
/// a reading aid: the verdict and the matrix's holder check use the first
/// holder only.
pub const ALSO_HELD: f64 = 0.1;

/// The chain that retains most of a finding's growth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Holder {
    /// From the root to the block that holds the memory
    /// (`["thread main stack", "Arc in …::new", "hashbrown table in …::remember"]`).
    pub chain: Vec<String>,
    /// The share of the finding's held growth that this chain explains.
    pub share: f64,
    /// Bytes this chain gained.
    pub growth_bytes: f64,
}

impl Holder {
    /// The block that holds the memory (the chain's last link), or the root.
    pub fn holder(&self) -> &str {
        self.chain.last().map_or("", String::as_str)
    }

    /// `hashbrown table in …::remember (from thread main stack)`.
    pub fn describe(&self) -> String {
        match (self.chain.first(), self.chain.len()) {
            (Some(root), n) if n > 1 => format!("{} (from {root})", self.holder()),
            (Some(root), _) => root.clone(),
            _ => String::new(),
        }
    }
}

/// The engine's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Whether memory leaks (or is held in a way the guide documents).
    pub leak: bool,
    /// The top finding's kind, or `none`.
    pub kind: Kind,
    /// Every finding, strongest first.
    pub findings: Vec<Finding>,
    /// `full` (heap and pool profiles), `pprof-only`, or the RSS
    /// baseline's `rss-trend`.
    pub mode: Mode,
    /// Snapshots read.
    pub snapshots: usize,
    /// A sentence for people.
    pub summary: String,
}

impl Verdict {
    /// The short human summary: the verdict, then each finding with its
    /// evidence and remedy.
    pub fn human(&self) -> String {
        let mut out = String::new();
        out.push_str(&self.summary);
        out.push('\n');
        for (i, f) in self.findings.iter().enumerate() {
            out.push_str(&format!(
                "\n{}. {} (score {:.2}) at {}\n   growth {}, {:.2} MiB/s\n",
                i + 1,
                f.kind,
                f.score,
                f.site,
                mib(f.growth_bytes),
                f.growth_bytes_per_s / MIB
            ));
            if let Some(h) = &f.holder {
                out.push_str(&format!("   held by {} ({:.0}%)\n", h.describe(), h.share * 100.0));
            }
            for e in &f.evidence {
                out.push_str(&format!("   - {e}\n"));
            }
            out.push_str(&format!("   what to do: {}\n", f.remedy));
        }
        out
    }
}
