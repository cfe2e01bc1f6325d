//! The business handlers of the server scenarios: an Echo service that,
//! depending on the scenario, caches something per request or answers some
//! calls with a large response of its own.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use faststr::FastStr;
use rpc::codec::{Request, Response};
use rpc::{Binary, Handler, HandlerError, Pool, PoolConfig, ServerConfig};
use sonic_rs::{JsonValueTrait, OwnedLazyValue};

use std::collections::HashMap;

use crate::kept::{Lru, COPIES_KEPT};
use crate::noise::{Gate, Noise};

/// What a server scenario runs: the server settings and the handler.
///
/// `config.pool` is the pool to watch: the `pool` given to
/// [`server`](crate::server), unless that pool caches more than the scenario
/// wants (see [`pool_config`](crate::pool_config)); then a pool of the
/// scenario's own.
#[derive(Debug)]
pub struct ServerScenario {
    /// Settings of the `rpc::Server`.
    pub config: ServerConfig,
    /// The service. Clones share their state (caches), so keep one for
    /// metrics and give one to the server.
    pub handler: ScenarioHandler,
}

impl ServerScenario {
    /// A plain Echo service on `pool`.
    pub(crate) fn echo(pool: Pool) -> ServerScenario {
        ServerScenario {
            config: ServerConfig { pool, ..ServerConfig::default() },
            handler: ScenarioHandler::new(Reply::ECHO, Behaviour::Echo),
        }
    }

    /// The handler's parts, to compose a mixture or add noise: the handler
    /// must not have been cloned yet.
    pub(crate) fn parts(&mut self) -> &mut Inner {
        Arc::get_mut(&mut self.handler.inner).expect("a fresh handler is not shared")
    }
}

/// A pool that caches at most `cap` bytes per size class: `pool` itself if
/// its policy already does, a new pool otherwise.
pub(crate) fn capped_pool(pool: Pool, cap: usize) -> Pool {
    if pool.config().max_cached_per_class <= cap {
        pool
    } else {
        Pool::new(capped(cap))
    }
}

/// Netpoll's policy with at most `cap` bytes cached per size class.
pub(crate) fn capped(cap: usize) -> PoolConfig {
    PoolConfig { max_cached_per_class: cap, ..PoolConfig::default() }
}

/// A scenario's Echo service; implements [`rpc::Handler`].
///
/// ```
/// use rpc::Handler;
/// use scenarios::{find, server, Params, Variant};
///
/// let info = find("request-field-hold").unwrap();
/// let params = Params::defaults(info).unwrap();
/// let pool = rpc::Pool::new(rpc::PoolConfig::default());
/// let s = server(info, Variant::Leak, &params, pool).unwrap();
/// let req = rpc::codec::Request { id: 7, msg: vec![1u8; 100].into(), json: None };
/// let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// let resp = rt.block_on(s.handler.echo(req)).unwrap();
/// assert_eq!((resp.id, resp.msg.len()), (7, 100));
/// assert_eq!(s.handler.cached_entries(), 1);
/// ```
#[derive(Clone)]
pub struct ScenarioHandler {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// How calls are answered.
    pub reply: Reply,
    /// What it does besides answering, in order (two in a mixture).
    pub behaviours: Vec<Behaviour>,
    /// Calls whose msg is at least this long are not cached by a hold
    /// behaviour (a mixture with oversized calls keeps the mechanisms
    /// apart).
    pub hold_below: usize,
    /// Background noise per call.
    pub noise: Option<Noise>,
}

/// How calls are answered: a call whose msg is at least `large_from` bytes
/// gets a fresh msg of `large_size` bytes ([`build_response`]); the others
/// get their msg echoed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reply {
    pub large_from: usize,
    pub large_size: usize,
}

impl Reply {
    /// Every call is echoed.
    pub const ECHO: Reply = Reply { large_from: usize::MAX, large_size: 0 };
}

/// What the handler does besides answering.
pub(crate) enum Behaviour {
    /// Nothing.
    Echo,
    /// `cache.Store(req.Id, req.Msg[:1])` for the calls `gate` lets leak, a
    /// copy of that byte, among the last copies, for the others.
    HoldRequestField { gate: Gate, cache: Mutex<HashMap<i64, Binary>>, copies: Mutex<Lru<Binary>> },
    /// Copies the first `entry` bytes of each msg into a capped LRU.
    BoundedCache { entry: usize, lru: Mutex<Lru<Bytes>> },
    /// Parses field 3 with sonic-rs and caches the `user` value, sharing
    /// the input for the calls `gate` lets leak, copied for the others; a
    /// call without field 3 is an error, unless `optional` (a mixture,
    /// whose other calls may not carry it).
    SonicHold {
        gate: Gate,
        optional: bool,
        cache: Mutex<HashMap<i64, OwnedLazyValue>>,
        copies: Mutex<Lru<OwnedLazyValue>>,
    },
}

impl Behaviour {
    pub(crate) fn hold_request_field(gate: Gate) -> Behaviour {
        Behaviour::HoldRequestField { gate, cache: Mutex::default(), copies: Mutex::new(Lru::new(COPIES_KEPT)) }
    }

    pub(crate) fn bounded_cache(entry: usize, capacity: usize) -> Behaviour {
        Behaviour::BoundedCache { entry, lru: Mutex::new(Lru::new(capacity)) }
    }

    pub(crate) fn sonic_hold(gate: Gate, optional: bool) -> Behaviour {
        Behaviour::SonicHold { gate, optional, cache: Mutex::default(), copies: Mutex::new(Lru::new(COPIES_KEPT)) }
    }

    fn entries(&self) -> usize {
        match self {
            Behaviour::Echo => 0,
            Behaviour::HoldRequestField { cache, copies, .. } => lock(cache).len() + lock(copies).len(),
            Behaviour::BoundedCache { lru, .. } => lock(lru).len(),
            Behaviour::SonicHold { cache, copies, .. } => lock(cache).len() + lock(copies).len(),
        }
    }

    fn value_bytes(&self) -> usize {
        match self {
            Behaviour::Echo => 0,
            Behaviour::HoldRequestField { cache, copies, .. } => {
                lock(cache).values().map(|v| v.len()).sum::<usize>() + lock(copies).value_bytes()
            }
            Behaviour::BoundedCache { lru, .. } => lock(lru).value_bytes(),
            Behaviour::SonicHold { cache, copies, .. } => {
                lock(cache).values().map(user_bytes).sum::<usize>() + lock(copies).value_bytes()
            }
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Behaviour::Echo => "echo",
            Behaviour::HoldRequestField { gate, .. } if gate.can_leak() => "hold request field (slice)",
            Behaviour::HoldRequestField { .. } => "hold request field (copy)",
            Behaviour::BoundedCache { .. } => "bounded cache",
            Behaviour::SonicHold { gate, .. } if gate.can_leak() => "sonic hold (zero copy)",
            Behaviour::SonicHold { .. } => "sonic hold (copy string)",
        }
    }

    fn is_hold(&self) -> bool {
        matches!(self, Behaviour::HoldRequestField { .. } | Behaviour::SonicHold { .. })
    }
}

impl fmt::Debug for ScenarioHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind: Vec<&str> = self.inner.behaviours.iter().map(Behaviour::kind).collect();
        f.debug_struct("ScenarioHandler")
            .field("behaviour", &kind)
            .field("reply", &self.inner.reply)
            .field("cached_entries", &self.cached_entries())
            .finish()
    }
}

impl ScenarioHandler {
    pub(crate) fn new(reply: Reply, behaviour: Behaviour) -> ScenarioHandler {
        ScenarioHandler {
            inner: Arc::new(Inner { reply, behaviours: vec![behaviour], hold_below: usize::MAX, noise: None }),
        }
    }

    /// Entries the handler's caches hold (0 for handlers without one; in a
    /// mixture, the sum of both mechanisms' caches).
    pub fn cached_entries(&self) -> usize {
        self.inner.behaviours.iter().map(Behaviour::entries).sum()
    }

    /// Entries each of the handler's caches holds, in order (the scenario's
    /// own, then a mixed-in one's).
    pub fn cached_entries_each(&self) -> Vec<usize> {
        self.inner.behaviours.iter().filter(|b| !matches!(b, Behaviour::Echo)).map(Behaviour::entries).collect()
    }

    /// Entries in the background cache (`background=cache`).
    pub fn background_cached(&self) -> usize {
        self.inner.noise.as_ref().map_or(0, Noise::cached)
    }

    /// Bytes of the values the cache holds, as the code sees them (one per
    /// `req.msg[..1]`): what the business thinks it keeps. What it really
    /// keeps alive is what the heap and pool profiles show.
    pub fn cached_value_bytes(&self) -> usize {
        self.inner.behaviours.iter().map(Behaviour::value_bytes).sum()
    }

    /// The `user` value cached for call `id`, if any, given to `f`.
    fn with_user<T>(&self, id: i64, f: impl Fn(&OwnedLazyValue) -> Option<T>) -> Option<T> {
        self.inner.behaviours.iter().find_map(|b| match b {
            Behaviour::SonicHold { cache, copies, .. } => match lock(cache).get(&id) {
                Some(v) => f(v),
                None => lock(copies).peek(id).and_then(&f),
            },
            _ => None,
        })
    }

    /// The `user` value cached for call `id` (`sonic-string-hold`).
    pub fn cached_user(&self, id: i64) -> Option<String> {
        self.with_user(id, |v| v.as_str().map(str::to_owned))
    }

    /// Where the cached `user` value of call `id` lies in memory, to check
    /// whether it shares the request's buffer (`sonic-string-hold`).
    pub fn cached_user_range(&self, id: i64) -> Option<std::ops::Range<usize>> {
        self.with_user(id, |v| {
            let s = v.as_str()?;
            let start = s.as_ptr() as usize;
            Some(start..start + s.len())
        })
    }

    fn remember(&self, req: &Request) -> Result<(), HandlerError> {
        if let Some(noise) = &self.inner.noise {
            noise.on_call();
        }
        for behaviour in &self.inner.behaviours {
            if behaviour.is_hold() && req.msg.len() >= self.inner.hold_below {
                continue;
            }
            Self::remember_one(behaviour, req)?;
        }
        Ok(())
    }

    /// One behaviour's work on a call (its frame names the handler, as the
    /// holder chains of the leaked caches do).
    fn remember_one(behaviour: &Behaviour, req: &Request) -> Result<(), HandlerError> {
        match behaviour {
            Behaviour::Echo => {}
            Behaviour::HoldRequestField { gate, cache, copies } => {
                if req.msg.is_empty() {
                    return Ok(());
                }
                if gate.leaks() {
                    // The leak: `req.Msg[:1]` keeps the whole field alive.
                    lock(cache).insert(req.id, req.msg.slice(..1));
                } else {
                    // The fix: one byte of our own; the field is freed, and
                    // the cache of copies is bounded.
                    lock(copies).insert(req.id, Binary::from(Bytes::copy_from_slice(&req.msg[..1])), 1);
                }
            }
            Behaviour::BoundedCache { entry, lru } => {
                let n = req.msg.len().min(*entry);
                lock(lru).insert(req.id, Bytes::copy_from_slice(&req.msg[..n]), n);
            }
            Behaviour::SonicHold { gate, optional, cache, copies } => {
                let Some(json) = &req.json else {
                    if *optional {
                        return Ok(());
                    }
                    return Err(HandlerError("field 3 (json) is missing: this service parses it".into()));
                };
                if gate.leaks() {
                    lock(cache).insert(req.id, parse_user(json, false)?);
                } else {
                    let user = parse_user(json, true)?;
                    let bytes = user_bytes(&user);
                    lock(copies).insert(req.id, user, bytes);
                }
            }
        }
        Ok(())
    }
}

impl Handler for ScenarioHandler {
    async fn echo(&self, req: Request) -> Result<Response, HandlerError> {
        self.remember(&req)?;
        let reply = self.inner.reply;
        let msg = if req.msg.len() >= reply.large_from { build_response(reply.large_size).into() } else { req.msg };
        Ok(Response { id: req.id, msg, json: None })
    }
}

/// The business handler's own response body: a fresh allocation made here,
/// so that a heap profile attributes memory the response still holds to
/// this frame (the guide: "the memory will appear to be created within the
/// business handler").
#[inline(never)]
pub(crate) fn build_response(size: usize) -> Bytes {
    let mut body = Vec::with_capacity(size);
    body.resize(size, b'r');
    std::hint::black_box(Bytes::from(body))
}

/// Parses the `user` member of the JSON document in field 3.
///
/// Zero copy (the leak): the document is a `FastStr` over the field's own
/// allocation, and sonic-rs's lazy value for an unescaped string is a slice
/// of it, so the cached value keeps the whole document alive. Copy (the
/// fix, Sonic's `CopyString`): the value is parsed again from a borrowed
/// `&str`, which makes sonic-rs copy it into a string of its own.
///
/// Before that, like most services, it unmarshals the whole document to
/// check it (a sonic-rs DOM, dropped at once): parsing shows in the
/// allocation profile under sonic-rs's frames, in both variants.
#[inline(never)]
pub(crate) fn parse_user(json: &Binary, copy: bool) -> Result<OwnedLazyValue, HandlerError> {
    let doc = FastStr::from_bytes(json.to_bytes()).map_err(|e| HandlerError(format!("json is not UTF-8: {e}")))?;
    inspect_document(&doc)?;
    let user = sonic_rs::get_from_faststr(&doc, ["user"]).map_err(|e| HandlerError(format!("json.user: {e}")))?;
    if copy {
        sonic_rs::from_str::<OwnedLazyValue>(user.as_raw_str()).map_err(|e| HandlerError(format!("json.user: {e}")))
    } else {
        Ok(OwnedLazyValue::from(user))
    }
}

/// Unmarshals the whole document into a sonic-rs DOM and checks it is an
/// object; the DOM is dropped on return.
#[inline(never)]
fn inspect_document(doc: &FastStr) -> Result<(), HandlerError> {
    let dom: sonic_rs::Value =
        sonic_rs::from_str(doc.as_str()).map_err(|e| HandlerError(format!("json is not a document: {e}")))?;
    if !dom.is_object() {
        return Err(HandlerError("json is not an object".into()));
    }
    std::hint::black_box(&dom);
    Ok(())
}

/// Bytes of a cached `user` value, as the code counts them.
fn user_bytes(v: &OwnedLazyValue) -> usize {
    v.as_str().map_or(0, str::len)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    #[test]
    fn held_slice_shares_the_field_and_the_copy_does_not() {
        for copy in [false, true] {
            let gate = if copy { Gate::never() } else { Gate::new(true, std::time::Duration::ZERO, 1) };
            let h = ScenarioHandler::new(Reply::ECHO, Behaviour::hold_request_field(gate));
            let msg = Bytes::from(vec![5u8; 4096]);
            let ptr = msg.as_ptr();
            block_on(h.echo(Request { id: 1, msg: msg.into(), json: None })).unwrap();
            let Behaviour::HoldRequestField { cache, copies, .. } = &h.inner.behaviours[0] else { unreachable!() };
            let held = if copy { lock(copies).peek(1).cloned() } else { lock(cache).get(&1).cloned() }.unwrap();
            assert_eq!(held.len(), 1);
            assert_eq!(held.as_ptr() == ptr, !copy);
        }
    }

    #[test]
    fn copies_stay_bounded_and_held_slices_do_not() {
        let calls = 3 * COPIES_KEPT as i64;
        for leak in [false, true] {
            let gate = if leak { Gate::new(true, std::time::Duration::ZERO, 1) } else { Gate::never() };
            let h = ScenarioHandler::new(Reply::ECHO, Behaviour::hold_request_field(gate));
            for id in 0..calls {
                block_on(h.echo(Request { id, msg: vec![1u8; 64].into(), json: None })).unwrap();
            }
            let kept = if leak { calls as usize } else { COPIES_KEPT };
            assert_eq!((h.cached_entries(), h.cached_value_bytes()), (kept, kept), "leak: {leak}");
        }
    }

    #[test]
    fn large_calls_get_the_handlers_own_response() {
        let h = ScenarioHandler::new(Reply { large_from: 100, large_size: 5000 }, Behaviour::Echo);
        let small = block_on(h.echo(Request { id: 1, msg: vec![1; 99].into(), json: None })).unwrap();
        assert_eq!(small.msg.len(), 99);
        let large = block_on(h.echo(Request { id: 2, msg: vec![1; 100].into(), json: None })).unwrap();
        assert_eq!((large.id, large.msg.len(), large.json), (2, 5000, None));
    }

    #[test]
    fn zero_copy_user_shares_the_document_and_copy_string_does_not() {
        let doc = Binary::from(crate::leaks::sonic_string_hold::document(32 << 10, 48));
        let range = doc.as_ptr() as usize..doc.as_ptr() as usize + doc.len();
        let shared = parse_user(&doc, false).unwrap();
        let copied = parse_user(&doc, true).unwrap();
        let (s, c) = (shared.as_str().unwrap(), copied.as_str().unwrap());
        assert_eq!(s, c);
        assert_eq!(s.len(), 48);
        assert!(range.contains(&(s.as_ptr() as usize)), "the zero-copy value points into the document");
        assert!(!range.contains(&(c.as_ptr() as usize)), "the copied value has its own memory");
    }

    #[test]
    fn sonic_handler_needs_field_3() {
        let h = ScenarioHandler::new(
            Reply::ECHO,
            Behaviour::sonic_hold(Gate::new(true, std::time::Duration::ZERO, 1), false),
        );
        let e = block_on(h.echo(Request { id: 1, msg: vec![1; 9].into(), json: None })).unwrap_err();
        assert!(e.0.contains("field 3"), "{e}");
        let bad = Some(Binary::from_static(b"{\"name\": 1}"));
        assert!(block_on(h.echo(Request { id: 2, msg: vec![1; 9].into(), json: bad })).is_err());
    }
}
