//! The leak gates and the background noise of the modifiers: leaves of the
//! crate, used by handlers, callers and the peer's load.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The background choices.
pub(crate) const BACKGROUNDS: &[&str] = &["none", "churn", "cache", "burst", "all"];

/// Healthy noise in the process under test (`background=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Background {
    /// None.
    #[default]
    None,
    /// A 4 KiB temporary buffer allocated, filled and freed per call
    /// ([`CHURN_BYTES`]).
    Churn,
    /// A capped cache filled at [`CACHE_PER_SECOND`] entries of
    /// [`CACHE_ENTRY`] bytes a second up to [`CACHE_CAPACITY`] entries (full
    /// after 2 s), then each insert evicts the oldest: memory rises, then is
    /// flat.
    Cache,
    /// Periodic bursts of connections from the peer (server scenarios;
    /// [`BURST_EVERY`], [`BURST_CONNS`], [`BURST_LENGTH`], [`BURST_RPS`]),
    /// or of concurrent calls through a second, well-behaved client that
    /// keeps one idle connection (client scenarios).
    Burst,
    /// Churn, cache and burst.
    All,
}

/// Bytes of the temporary buffer `churn` allocates per call.
pub const CHURN_BYTES: usize = 4 << 10;
/// Bytes of each `cache` entry.
pub const CACHE_ENTRY: usize = 1 << 10;
/// Entries the background cache keeps.
pub const CACHE_CAPACITY: usize = 1000;
/// Entries the background cache gets per second.
pub const CACHE_PER_SECOND: u64 = 500;
/// Time between background bursts (the first starts this long into the
/// warm-up).
pub const BURST_EVERY: Duration = Duration::from_secs(3);
/// How long a background burst lasts.
pub const BURST_LENGTH: Duration = Duration::from_secs(1);
/// Extra connections (server scenarios) or concurrent callers (client
/// scenarios) of a background burst.
pub const BURST_CONNS: usize = 16;
/// Calls per second of a background burst, in all.
pub const BURST_RPS: u64 = 160;

impl Background {
    /// Whether it churns temporary buffers.
    pub fn churn(self) -> bool {
        matches!(self, Background::Churn | Background::All)
    }

    /// Whether it fills a capped cache.
    pub fn cache(self) -> bool {
        matches!(self, Background::Cache | Background::All)
    }

    /// Whether connections burst periodically.
    pub fn burst(self) -> bool {
        matches!(self, Background::Burst | Background::All)
    }
}

impl fmt::Display for Background {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Background::None => "none",
            Background::Churn => "churn",
            Background::Cache => "cache",
            Background::Burst => "burst",
            Background::All => "all",
        })
    }
}

impl FromStr for Background {
    type Err = String;
    fn from_str(s: &str) -> Result<Background, String> {
        Ok(match s {
            "none" => Background::None,
            "churn" => Background::Churn,
            "cache" => Background::Cache,
            "burst" => Background::Burst,
            "all" => Background::All,
            _ => return Err(format!("expected {}", BACKGROUNDS.join(" or "))),
        })
    }
}

/// A clock that starts at its first reading: the first call through the
/// gate or noise that owns it.
#[derive(Debug, Default)]
pub(crate) struct Clock {
    origin: OnceLock<Instant>,
}

impl Clock {
    /// Time since the first reading.
    pub(crate) fn elapsed(&self) -> Duration {
        self.origin.get_or_init(Instant::now).elapsed()
    }
}

/// Whether a call (connection, surge, oversized call) leaks: never in a fix
/// variant or a control; in a leak variant, from `opens` after the first
/// call on (the warm-up plus `onset`), one in `every`, counting from the
/// first one after the gate opens.
#[derive(Debug)]
pub(crate) struct Gate {
    leak: bool,
    opens: Duration,
    every: u64,
    clock: Clock,
    seen: AtomicU64,
}

impl Gate {
    pub(crate) fn new(leak: bool, opens: Duration, every: u64) -> Gate {
        Gate { leak, opens, every: every.max(1), clock: Clock::default(), seen: AtomicU64::new(0) }
    }

    /// A gate that never opens (a fix).
    #[cfg(test)]
    pub(crate) fn never() -> Gate {
        Gate::new(false, Duration::ZERO, 1)
    }

    /// Whether any call may leak (a leak variant).
    pub(crate) fn can_leak(&self) -> bool {
        self.leak
    }

    /// Whether every call leaks (a leak variant without onset or rate):
    /// today's behaviour.
    pub(crate) fn opens_at_once(&self) -> bool {
        self.leak && self.opens.is_zero() && self.every == 1
    }

    /// Whether this call leaks.
    pub(crate) fn leaks(&self) -> bool {
        if !self.leak {
            return false;
        }
        if !self.opens.is_zero() && self.clock.elapsed() < self.opens {
            return false;
        }
        self.seen.fetch_add(1, Ordering::Relaxed).is_multiple_of(self.every)
    }
}

/// The background noise of the process under test: per call, a churned
/// buffer and the capped cache brought up to date.
#[derive(Debug, Default)]
pub(crate) struct Noise {
    churn: bool,
    cache: Option<Mutex<NoiseCache>>,
    clock: Clock,
}

#[derive(Debug, Default)]
struct NoiseCache {
    inserted: u64,
    order: VecDeque<u64>,
    entries: HashMap<u64, Vec<u8>>,
}

impl Noise {
    /// The noise of `background`, `None` when there is none in process.
    pub(crate) fn of(background: Background) -> Option<Noise> {
        (background.churn() || background.cache()).then(|| Noise {
            churn: background.churn(),
            cache: background.cache().then(|| Mutex::new(NoiseCache::default())),
            clock: Clock::default(),
        })
    }

    /// What one call does besides its work.
    pub(crate) fn on_call(&self) {
        if self.churn {
            background_churn();
        }
        if let Some(cache) = &self.cache {
            let due = (self.clock.elapsed().as_secs_f64() * CACHE_PER_SECOND as f64) as u64;
            let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
            while c.inserted <= due {
                let key = c.inserted;
                c.inserted += 1;
                background_cache_insert(&mut c, key);
            }
        }
    }

    /// Entries in the background cache.
    pub(crate) fn cached(&self) -> usize {
        self.cache.as_ref().map_or(0, |c| c.lock().unwrap_or_else(|e| e.into_inner()).entries.len())
    }
}

/// A request-scoped temporary buffer, filled and dropped.
#[inline(never)]
fn background_churn() {
    let mut scratch = vec![0u8; CHURN_BYTES];
    for (i, b) in scratch.iter_mut().enumerate().step_by(64) {
        *b = i as u8;
    }
    std::hint::black_box(&scratch);
}

/// One entry into the capped cache, evicting the oldest past the capacity.
#[inline(never)]
fn background_cache_insert(c: &mut NoiseCache, key: u64) {
    c.entries.insert(key, vec![(key % 251) as u8; CACHE_ENTRY]);
    c.order.push_back(key);
    while c.order.len() > CACHE_CAPACITY {
        if let Some(old) = c.order.pop_front() {
            c.entries.remove(&old);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gate_opens_after_its_onset_and_passes_one_in_n() {
        let gate = Gate::new(true, Duration::from_millis(60), 4);
        assert!((0..50).all(|_| !gate.leaks()));
        std::thread::sleep(Duration::from_millis(70));
        let leaked = (0..400).filter(|_| gate.leaks()).count();
        assert_eq!(leaked, 100);
        assert!((0..10).all(|_| !Gate::never().leaks()));
    }

    #[test]
    fn the_background_cache_fills_then_stays_at_its_capacity() {
        let noise = Noise::of(Background::Cache).unwrap();
        noise.on_call();
        assert!(noise.cached() <= 2);
        {
            let mut c = noise.cache.as_ref().unwrap().lock().unwrap();
            for k in 0..5000 {
                background_cache_insert(&mut c, 10_000 + k);
            }
        }
        assert_eq!(noise.cached(), CACHE_CAPACITY);
        assert!(Noise::of(Background::Burst).is_none());
    }
}
