//! A factory's settings ([`Options`]) and what identifies a shared factory
//! in the registry ([`FactoryKey`]).

use std::fmt;
use std::time::Duration;

/// Refresh interval when [`Options`] leaves it at zero (Kitex's default).
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(5);
/// Expire interval when [`Options`] leaves it at zero (Kitex's default).
pub const DEFAULT_EXPIRE_INTERVAL: Duration = Duration::from_secs(15);

/// Factory settings (Kitex's `lbcache.Options`); part of the [`FactoryKey`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Options {
    /// How often cached targets are re-resolved (0 means the default, 5 s).
    pub refresh_interval: Duration,
    /// How long an unused target stays cached, at least (0 means the
    /// default, 15 s); see the [module doc](super) for the mark-and-sweep.
    pub expire_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options { refresh_interval: DEFAULT_REFRESH_INTERVAL, expire_interval: DEFAULT_EXPIRE_INTERVAL }
    }
}

impl Options {
    /// Zero intervals replaced by the defaults (Kitex's `Options.check`).
    pub fn normalized(self) -> Self {
        Options {
            refresh_interval: if self.refresh_interval.is_zero() {
                DEFAULT_REFRESH_INTERVAL
            } else {
                self.refresh_interval
            },
            expire_interval: if self.expire_interval.is_zero() {
                DEFAULT_EXPIRE_INTERVAL
            } else {
                self.expire_interval
            },
        }
    }
}

/// What identifies a shared factory in the registry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FactoryKey {
    /// [`Resolver::name`](super::Resolver::name).
    pub resolver: String,
    /// [`Loadbalancer::name`](super::Loadbalancer::name).
    pub balancer: String,
    /// [`Options::refresh_interval`].
    pub refresh_interval: Duration,
    /// [`Options::expire_interval`].
    pub expire_interval: Duration,
}

impl fmt::Display for FactoryKey {
    /// Kitex's cache key: `resolver|balancer|{5s 15s}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}|{}|{{{:?} {:?}}}", self.resolver, self.balancer, self.refresh_interval, self.expire_interval)
    }
}
