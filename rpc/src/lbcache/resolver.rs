//! Service discovery: instances, the [`Resolver`] trait, the
//! [`StaticResolver`] that tests and scenarios use, and [`LbError`].

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::sync::lock;

/// One service instance as discovery reports it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Instance {
    /// Where the instance listens.
    pub addr: SocketAddr,
    /// Relative share of the traffic; 0 means never picked.
    pub weight: u32,
    /// Discovery tags (`idc`, `cluster`, ...), in the resolver's order.
    pub tags: Vec<(String, String)>,
}

impl Instance {
    /// An instance without tags.
    pub fn new(addr: SocketAddr, weight: u32) -> Self {
        Instance { addr, weight, tags: Vec::new() }
    }

    /// Adds a tag.
    pub fn with_tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.push((key.into(), value.into()));
        self
    }
}

impl fmt::Display for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} weight={} tags={{", self.addr, self.weight)?;
        for (i, (k, v)) in self.tags.iter().enumerate() {
            if i > 0 {
                f.write_char(',')?;
            }
            write!(f, "{k}={v}")?;
        }
        f.write_char('}')
    }
}

/// Why a target could not be resolved.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LbError {
    /// The resolver knows no such target.
    #[error("resolver {resolver}: unknown target {target:?}")]
    UnknownTarget {
        /// The resolver's name.
        resolver: String,
        /// The target asked for.
        target: String,
    },
    /// The resolver failed.
    #[error("resolver {resolver} failed to resolve {target:?}: {reason}")]
    Resolve {
        /// The resolver's name.
        resolver: String,
        /// The target asked for.
        target: String,
        /// What went wrong.
        reason: String,
    },
}

/// Service discovery: turns a target (a service name) into instances.
pub trait Resolver: Send + Sync {
    /// Identifies the resolver; part of the [`FactoryKey`](super::FactoryKey).
    fn name(&self) -> &str;
    /// The current instances of `target`.
    fn resolve(&self, target: &str) -> Result<Vec<Instance>, LbError>;
}

/// A resolver with fixed instance lists per target, which tests and
/// scenarios can change at any time ([`StaticResolver::set`]).
///
/// ```
/// use rpc::lbcache::{Instance, Resolver, StaticResolver};
/// let r = StaticResolver::new("static").with_target("echo", vec![Instance::new("127.0.0.1:1".parse().unwrap(), 1)]);
/// assert_eq!(r.resolve("echo").unwrap().len(), 1);
/// assert!(r.resolve("other").is_err());
/// ```
#[derive(Debug)]
pub struct StaticResolver {
    name: String,
    targets: Mutex<HashMap<String, Vec<Instance>>>,
    resolves: AtomicU64,
}

impl StaticResolver {
    /// A resolver that knows no target yet.
    pub fn new(name: impl Into<String>) -> Self {
        StaticResolver { name: name.into(), targets: Mutex::new(HashMap::new()), resolves: AtomicU64::new(0) }
    }

    /// Adds (or replaces) a target; builder form of [`StaticResolver::set`].
    pub fn with_target(self, target: impl Into<String>, instances: Vec<Instance>) -> Self {
        self.set(target, instances);
        self
    }

    /// Sets the instances of `target`; the next refresh picks them up.
    pub fn set(&self, target: impl Into<String>, instances: Vec<Instance>) {
        lock(&self.targets).insert(target.into(), instances);
    }

    /// Forgets `target`; resolving it fails from now on.
    pub fn remove(&self, target: &str) -> Option<Vec<Instance>> {
        lock(&self.targets).remove(target)
    }

    /// How many times [`Resolver::resolve`] was called.
    pub fn resolves(&self) -> u64 {
        self.resolves.load(Ordering::Relaxed)
    }
}

impl Resolver for StaticResolver {
    fn name(&self) -> &str {
        &self.name
    }

    fn resolve(&self, target: &str) -> Result<Vec<Instance>, LbError> {
        self.resolves.fetch_add(1, Ordering::Relaxed);
        lock(&self.targets)
            .get(target)
            .cloned()
            .ok_or_else(|| LbError::UnknownTarget { resolver: self.name.clone(), target: target.to_owned() })
    }
}
