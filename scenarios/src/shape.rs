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
}

/// Surges of new connections: surge `i` (from 0), every `every`, opens
/// `first + i * step` new connections at once; each sends one call with
/// `payload` msg bytes, waits for its reply, and closes.
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
}

impl Surge {
    /// Connections opened by surge `i` (from 0).
    pub fn size(&self, i: usize) -> usize {
        self.first.saturating_add(self.step.saturating_mul(i))
    }
}

/// Connections opened at a steady rate and never closed (until the drain).
#[derive(Clone, Debug, PartialEq)]
pub struct Idle {
    /// New connections per second.
    pub per_second: f64,
    /// Whether each sends one call (of `LoadShape::payload` msg bytes)
    /// before going idle.
    pub first_call: bool,
}

/// One call in `every` (counted over all steady calls) carries `size` msg
/// bytes instead of `payload`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Oversized {
    /// Period, in calls.
    pub every: u64,
    /// Msg bytes of the oversized call.
    pub size: usize,
}

/// A spike of extra load: `conns` more connections sending `rps` calls per
/// second in all (of `LoadShape::payload` msg bytes), from `at` after the
/// load begins, for `length`; then they close.
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
}
