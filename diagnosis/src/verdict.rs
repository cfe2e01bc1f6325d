//! The verdict: leak or not, which kind, where, and what to do.

use serde::{Deserialize, Serialize};

/// The kinds of leak the engine names (the Memory Leak Self-Check Guide's
/// cases), plus `none` and `unknown` (growth of a shape no case explains).
pub const KINDS: &[&str] = &[
    "none",
    "request-field-held",
    "response-field-held",
    "connection-surge-barriers",
    "idle-connection-buffers",
    "oversized-request",
    "duplicate-clients",
    "zero-copy-string-held",
    "unknown",
];

/// One explained growth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// One of [`KINDS`].
    pub kind: String,
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
}

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
    pub kind: String,
    /// Every finding, strongest first.
    pub findings: Vec<Finding>,
    /// `full` (heap and pool profiles) or `pprof-only`.
    pub mode: String,
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
                "\n{}. {} (score {:.2}) at {}\n   growth {:.1} MiB, {:.2} MiB/s\n",
                i + 1,
                f.kind,
                f.score,
                f.site,
                f.growth_bytes / 1048576.0,
                f.growth_bytes_per_s / 1048576.0
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

/// The guide's remedy for a kind.
pub fn remedy(kind: &str) -> &'static str {
    match kind {
        "request-field-held" => {
            "A handler keeps a reference to a request field (even a one-byte slice pins the whole buffer). \
             Find the field by its tag in the IDL, search the code for where it is stored, and copy what you \
             keep (bytes.Clone / Bytes::copy_from_slice) instead of slicing."
        }
        "response-field-held" => {
            "A caller keeps a reference to a response field (even a one-byte slice pins the whole buffer). \
             Find the field by its tag in the IDL, search the code for where it is stored, and copy what you \
             keep instead of slicing."
        }
        "connection-surge-barriers" => {
            "Buffers of closed connections stay referenced by the poller's barrier slots, which grew with the \
             peak number of connections: the Netpoll bug fixed in v0.2.5. Upgrade to Netpoll >= v0.2.5 \
             (Kitex >= v0.3.3), i.e. clear the slots after each readv/writev."
        }
        "idle-connection-buffers" => {
            "Each open connection holds its input buffer, and the upstream keeps opening connections without \
             closing them. Make the upstream reuse or close its connections, and set an idle timeout on the \
             server (and a smaller initial buffer where configurable)."
        }
        "oversized-request" => {
            "Abnormally large requests grow the connection's buffers and the pool caches the large chunks. \
             Identify the sender and the field (packet capture, the largest-request metrics) and have the \
             upstream stop sending such values; cap what the pool caches and refuse requests above a \
             maximum size."
        }
        "duplicate-clients" => {
            "A new client is created again and again (per call) and never closed; each registers rebalance \
             hooks on the shared balancer cache (lbcache), and every refresh formats the instance list for \
             every one of them. Create the client once and reuse it (or close every client you create)."
        }
        "zero-copy-string-held" => {
            "Strings parsed zero-copy from a large JSON field point into the whole input, so caching any parsed \
             value pins the entire field. Enable copying of strings in the parser (Sonic's CopyString, or copy \
             the strings out), and review where parsed objects are kept."
        }
        "unknown" => {
            "Memory grows at this site in a way none of the documented cases explains. Read the growing stacks \
             (inuse_space between two snapshots) and find who keeps the objects."
        }
        _ => "Nothing to do: no sustained growth.",
    }
}
