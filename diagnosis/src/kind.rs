//! The kinds of leak the engine names: the Memory Leak Self-Check Guide's
//! cases, plus `none` and `unknown`, and the guide's remedy for each.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A verdict's or a finding's kind, written as the guide's case in
/// kebab-case (`"request-field-held"`) in `verdict.json` and `--json`.
///
/// ```
/// use diagnosis::Kind;
///
/// let kind: Kind = "request-field-held".parse().unwrap();
/// assert_eq!(kind, Kind::RequestFieldHeld);
/// assert_eq!(kind, "request-field-held");
/// assert!(kind.remedy().contains("copy what you keep"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// No sustained growth.
    None,
    /// A handler holds a field of the request (even a one-byte slice pins
    /// the whole buffer).
    RequestFieldHeld,
    /// A caller holds a field of the response.
    ResponseFieldHeld,
    /// The poller's barrier slots keep buffers of closed connections, after
    /// a surge of connections (the Netpoll bug fixed in v0.2.5).
    ConnectionSurgeBarriers,
    /// Each connection holds its initial buffer, and the upstream keeps
    /// opening connections.
    IdleConnectionBuffers,
    /// Abnormally large requests, whose chunks the pool caches.
    OversizedRequest,
    /// A client created per call, each registering hooks on the shared
    /// balancer cache (lbcache).
    DuplicateClients,
    /// Values parsed zero-copy from a large JSON string field pin it.
    ZeroCopyStringHeld,
    /// Growth of a shape that no documented case explains.
    Unknown,
}

impl Kind {
    /// Every kind, `None` first and `Unknown` last.
    pub const ALL: [Kind; 9] = [
        Kind::None,
        Kind::RequestFieldHeld,
        Kind::ResponseFieldHeld,
        Kind::ConnectionSurgeBarriers,
        Kind::IdleConnectionBuffers,
        Kind::OversizedRequest,
        Kind::DuplicateClients,
        Kind::ZeroCopyStringHeld,
        Kind::Unknown,
    ];

    /// The kind as `verdict.json` writes it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::None => "none",
            Kind::RequestFieldHeld => "request-field-held",
            Kind::ResponseFieldHeld => "response-field-held",
            Kind::ConnectionSurgeBarriers => "connection-surge-barriers",
            Kind::IdleConnectionBuffers => "idle-connection-buffers",
            Kind::OversizedRequest => "oversized-request",
            Kind::DuplicateClients => "duplicate-clients",
            Kind::ZeroCopyStringHeld => "zero-copy-string-held",
            Kind::Unknown => "unknown",
        }
    }

    /// Whether this kind says memory leaks (every kind but `none`).
    pub fn is_leak(self) -> bool {
        self != Kind::None
    }

    /// What to do, in the guide's words.
    pub fn remedy(self) -> &'static str {
        match self {
            Kind::RequestFieldHeld => {
                "A handler keeps a reference to a request field (even a one-byte slice pins the whole buffer). \
                 Find the field by its tag in the IDL, search the code for where it is stored, and copy what you \
                 keep (bytes.Clone / Bytes::copy_from_slice) instead of slicing."
            }
            Kind::ResponseFieldHeld => {
                "A caller keeps a reference to a response field (even a one-byte slice pins the whole buffer). \
                 Find the field by its tag in the IDL, search the code for where it is stored, and copy what you \
                 keep instead of slicing."
            }
            Kind::ConnectionSurgeBarriers => {
                "Buffers of closed connections stay referenced by the poller's barrier slots, which grew with the \
                 peak number of connections: the Netpoll bug fixed in v0.2.5. Upgrade to Netpoll >= v0.2.5 \
                 (Kitex >= v0.3.3), i.e. clear the slots after each readv/writev."
            }
            Kind::IdleConnectionBuffers => {
                "Each open connection holds its input buffer, and the upstream keeps opening connections without \
                 closing them. Make the upstream reuse or close its connections, and set an idle timeout on the \
                 server (and a smaller initial buffer where configurable)."
            }
            Kind::OversizedRequest => {
                "Abnormally large requests grow the connection's buffers and the pool caches the large chunks. \
                 Identify the sender and the field (packet capture, the largest-request metrics) and have the \
                 upstream stop sending such values; cap what the pool caches and refuse requests above a \
                 maximum size."
            }
            Kind::DuplicateClients => {
                "A new client is created again and again (per call) and never closed; each registers rebalance \
                 hooks on the shared balancer cache (lbcache), and every refresh formats the instance list for \
                 every one of them. Create the client once and reuse it (or close every client you create)."
            }
            Kind::ZeroCopyStringHeld => {
                "Strings parsed zero-copy from a large JSON field point into the whole input, so caching any parsed \
                 value pins the entire field. Enable copying of strings in the parser (Sonic's CopyString, or copy \
                 the strings out), and review where parsed objects are kept."
            }
            Kind::Unknown => {
                "Memory grows at this site in a way none of the documented cases explains. Read the growing stacks \
                 (inuse_space between two snapshots) and find who keeps the objects."
            }
            Kind::None => "Nothing to do: no sustained growth.",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is none of [`Kind::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no kind of leak is called {0:?}")]
pub struct UnknownKind(pub String);

impl FromStr for Kind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Kind, UnknownKind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| UnknownKind(s.to_owned()))
    }
}

impl PartialEq<str> for Kind {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Kind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Kind {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl From<Kind> for String {
    fn from(kind: Kind) -> String {
        kind.as_str().to_owned()
    }
}

/// Every kind's name, in the order of [`Kind::ALL`].
pub const KINDS: &[&str] = &{
    let mut names = [""; Kind::ALL.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = Kind::ALL[i].as_str();
        i += 1;
    }
    names
};

/// The guide's remedy for a kind named as `verdict.json` writes it; for a
/// name that is no kind, `none`'s.
pub fn remedy(kind: &str) -> &'static str {
    kind.parse().map_or(Kind::None, |k: Kind| k).remedy()
}

/// What a verdict was made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Heap profiles, metrics and the pool profile.
    Full,
    /// Heap profiles and metrics only.
    PprofOnly,
    /// The RSS-trend baseline: RSS readings only.
    RssTrend,
}

impl Mode {
    /// The mode as `verdict.json` writes it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::PprofOnly => "pprof-only",
            Mode::RssTrend => "rss-trend",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_writes_each_kind_as_its_name() {
        for kind in Kind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{kind}\""));
            assert_eq!(serde_json::from_str::<Kind>(&json).unwrap(), kind);
            assert_eq!(kind.as_str().parse::<Kind>(), Ok(kind));
        }
        for mode in [Mode::Full, Mode::PprofOnly, Mode::RssTrend] {
            assert_eq!(serde_json::to_string(&mode).unwrap(), format!("\"{mode}\""));
        }
        assert_eq!(KINDS, Kind::ALL.map(Kind::as_str));
        assert!("request-field".parse::<Kind>().is_err());
    }

    #[test]
    fn every_kind_but_none_has_its_own_remedy() {
        assert_eq!(remedy("no such kind"), Kind::None.remedy());
        for kind in Kind::ALL.into_iter().filter(|k| k.is_leak()) {
            assert_ne!(kind.remedy(), Kind::None.remedy(), "{kind}");
            assert_eq!(remedy(kind.as_str()), kind.remedy());
        }
    }
}
