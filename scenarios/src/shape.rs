//! What load the peer of a server scenario sends: the harness's load
//! generator executes a [`LoadShape`].
//!
//! # What the peer should expect back
//!
//! Every reply carries the call's `id` and never a `json` field. A steady or
//! burst call (a msg of `payload` bytes) gets its msg echoed. A surge call
//! gets [`Surge::response`] msg bytes, an oversized call
//! [`OVERSIZED_REPLY`] bytes (or, in the fix of `oversized-request`, a
//! closed connection).

use std::time::Duration;

use bytes::Bytes;

/// Msg bytes of the reply to an oversized call.
pub const OVERSIZED_REPLY: usize = 16;

/// The load a server scenario needs from its peer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadShape {
    /// Steady connections, each with one call in flight.
    pub conns: usize,
    /// Total steady rate over them (0: each sends as soon as answered).
    pub rps: u64,
    /// Msg bytes of steady calls.
    pub payload: usize,
    /// A JSON document sent as field 3 with every steady call
    /// (`sonic-string-hold`), `None` otherwise.
    pub json: Option<Bytes>,
    /// Connection surges.
    pub surge: Option<Surge>,
    /// Connections opened and left idle.
    pub idle: Option<Idle>,
    /// Rare abnormally large calls among the steady ones.
    pub oversized: Option<Oversized>,
    /// An extra load spike.
    pub burst: Option<Burst>,
    /// Periodic bursts of connections: healthy background noise
    /// (`background=burst`).
    pub noise_burst: Option<Burst>,
}

/// Surges of new connections: surge `i` (from 0), every `every` from
/// `from` on, opens `first + (i / grow_every) * step` new connections at
/// once; each sends one call with `payload` msg bytes, waits for its reply,
/// and closes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Surge {
    /// Time between surges.
    pub every: Duration,
    /// Connections of the first surge.
    pub first: usize,
    /// Connections each surge adds over the previous one.
    pub step: usize,
    /// Msg bytes of each surge call.
    pub payload: usize,
    /// Msg bytes the scenario's handler answers a surge call with
    /// (informational: the handler decides from the parameters).
    pub response: usize,
    /// The first surge comes `every` after this (counted from the start of
    /// the load, warm-up included).
    pub from: Duration,
    /// Surges grow one in this many (at least 1).
    pub grow_every: u64,
}

impl Surge {
    /// Connections opened by surge `i` (from 0).
    pub fn size(&self, i: usize) -> usize {
        let grown = i / self.grow_every.max(1) as usize;
        self.first.saturating_add(self.step.saturating_mul(grown))
    }
}

/// Connections opened at a steady rate and never closed (until the drain).
///
/// With `onset` and `leak_rate` (leak variant), the upstream leaves open
/// only the connections it opens from `leave_from` on (counted from the
/// start of the load, warm-up included), one in `leave_every`; it closes
/// the others after `close_after`, as the fix's server would.
#[derive(Clone, Debug, PartialEq)]
pub struct Idle {
    /// New connections per second.
    pub per_second: f64,
    /// Whether each sends one call (of `LoadShape::payload` msg bytes)
    /// before going idle.
    pub first_call: bool,
    /// Connections opened before this are closed after `close_after`.
    pub leave_from: Duration,
    /// One connection in this many (from `leave_from` on) is left open.
    pub leave_every: u64,
    /// When the upstream closes a connection it does not leave open.
    pub close_after: Duration,
}

/// One call in `every` (counted over all steady calls) carries `size` msg
/// bytes instead of `payload`, from `from` on (counted from the start of
/// the load, warm-up included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Oversized {
    /// Period, in calls.
    pub every: u64,
    /// Msg bytes of the oversized call.
    pub size: usize,
    /// No oversized call before this.
    pub from: Duration,
}

/// A spike of extra load: `conns` more connections sending `rps` calls per
/// second in all (of `LoadShape::payload` msg bytes), from `at` after the
/// load begins, for `length`; then they close. With `every`, again every
/// `every` after that.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Burst {
    /// Start, from the beginning of the load.
    pub at: Duration,
    /// How long it lasts.
    pub length: Duration,
    /// Extra connections.
    pub conns: usize,
    /// Their total rate.
    pub rps: u64,
    /// The period, for a spike that repeats.
    pub every: Option<Duration>,
}
