//! The rules: one per case of the Memory Leak Self-Check Guide, each
//! reading a growing site's [`Shape`] and its stacks' [`StackFacts`] the
//! way the guide's paragraph describes the case, and answering with its
//! evidence.
//!
//! [`classify`] asks them in order; the first that answers decides. A rule
//! answers [`Answer::Leak`] (this case, and it leaks), [`Answer::NoLeak`]
//! (this case's mechanism, bounded: no later rule may name the site) or
//! [`Answer::Next`] (not this case).
//!
//! Scores say how directly the profile shows the case: the frames the guide
//! names (the balancer cache, a field's decoder) score above a shape that
//! only fits (growth that follows connections), and growth of no documented
//! shape scores lowest.

use crate::frames::StackFacts;
use crate::kind::Kind;
use crate::shape::Shape;
use crate::units::mib;

/// Mann–Kendall's significance level: a site trends when its in-use bytes
/// under load rise with p below this.
pub(crate) const TREND_SIGNIFICANCE: f64 = 0.05;

/// A held object outlives the load: at least this share of the growth is
/// still there once the run settled. The two mechanisms it separates sit
/// at the ends: what a held field, a lingering slot or a cache keeps stays
/// whole after the drain, while buffers of calls in flight and of the
/// connections the drain closes all go back. Half is the middle, so that
/// noise on either side (a sampled profile's few blocks, a pool that frees
/// its cache late) does not cross it.
const KEPT_SHARE: f64 = 0.5;

/// More than half: "most of" the growth, where two explanations share it
/// and the larger one is taken.
const MOST: f64 = 0.5;

/// The guide's abnormally sized requests: most of a site's growth
/// ([`MOST`]) is in large blocks. The pool caches the chunks of the large
/// requests themselves ("these abnormally sized requests themselves
/// require a large amount of memory"), so where they are the cause they
/// are the bulk of what grew; where small blocks are the bulk, another
/// mechanism grew the site and the large blocks came along.
const LARGE_SHARE: f64 = MOST;

/// A block is abnormal when it is this many times larger than what the
/// process allocates per request on average: five doublings of the pool's
/// size classes (Netpoll's and `rpc`'s classes double). A load's usual
/// spread of payload sizes spans a class or two around the typical one;
/// the guide's abnormal requests are megabytes where requests are
/// kilobytes, hundreds of times the typical cost.
pub(crate) const ABNORMAL_FACTOR: f64 = 32.0;

/// Abnormally sized requests arrive on connections that were already open:
/// less than half of the growth ([`MOST`]) came in intervals where
/// connections were opened (most, and it is a connection surge), unless
/// every interval opened connections (then the share says nothing of
/// surges).
const ALREADY_OPEN_SHARE: f64 = MOST;

/// "lbcache is only created once for each client": more clients than this
/// created while the balancer cache grew are duplicates.
const ONE_CLIENT: f64 = 1.0;

/// Growth that follows the number of clients created this closely (Pearson
/// r) is made by the clients, balancer frames or not. Each duplicate
/// client makes its own balancer cache when it is created, so the bytes
/// are a linear function of the clients created, r close to 1. The bar is
/// that high because the count of clients only rises, as does every
/// growing site: any steady growth correlates with any rising counter
/// well above 0.8, and only a near-exact line says the clients made it.
const CLIENTS_CORRELATION: f64 = 0.95;

/// Buffers that follow the connections open now this closely (Pearson r)
/// belong to the connections. Each connection takes its buffers when it
/// opens and gives them back when it closes, so the two move together,
/// but not on one line: connections open and close between snapshots, a
/// buffer grows with its largest message, and the pool keeps what closed
/// connections gave back for a while. The number of connections open
/// goes up and down, unlike a counter, so a strong r here is rarely
/// chance.
const OPEN_CORRELATION: f64 = 0.8;

/// A connection surge: at least this share of the growth came in intervals
/// where connections were opened. The slots' table expands when a surge
/// opens more connections than ever before, and the references they leave
/// are made by those connections' calls, so the growth lands in the
/// intervals of the surges. It is above half ([`MOST`]), with a margin: a
/// surge's last calls can end in the interval after it.
const SURGE_SHARE: f64 = 0.6;

/// While the load goes on, a surge is judged once at least this share of
/// the connections opened since the baseline have closed again: buffers
/// that connections still open hold are theirs (idle connections, or a
/// surge still in flight), not lingering references.
const SURGE_CLOSED_SHARE: f64 = 0.5;

/// Without connection metrics, this many steps (change points) make the
/// surge shape: memory that jumps with each surge and stays.
const SURGE_STEPS: usize = 2;

/// What the surge shape must keep per connection open at the peak: a
/// barrier slot that pins buffers keeps at least one pooled node, and the
/// smallest node is 4 KiB ([`NODE_BYTES`](crate::shape::NODE_BYTES):
/// Netpoll's page and `rpc`'s output nodes; `rpc`'s input nodes are 8 KiB);
/// the slots' own bookkeeping, which a correct server also keeps, is
/// 1.3 KiB a slot (`rpc::barrier`: an array of 32 buffer references of
/// 40 bytes and its 48-byte lock; Netpoll's barrier holds 32 `[]byte` and
/// 32 iovecs, 1.3 KiB too), and up to twice that per connection at the
/// peak when the table has just doubled (measured 1.3–2.3 KiB). Three
/// quarters of a node sits between the two: growth at the surges below it
/// is the slot table, not what it pins.
const SURGE_MIN_PER_CONNECTION: f64 = 3.0 * 1024.0;

/// What the surge shape is made of: many blocks ([`MIN_BLOCKS`]) that
/// hold at least a buffer node ([`NODE_BYTES`](crate::shape::NODE_BYTES))
/// each on average. What lingers in the slots is buffers; what a surge
/// leaves in a correct process is each connection's own small blocks (the
/// slot table, which grows with the peak: 1.3 KiB slots; a task's future,
/// 1.8 KiB; entries a handler cached). Read from block sizes, it holds
/// where the connections open at the peak are not known: surge connections
/// live for one call, and a snapshot rarely catches them open.
const SURGE_MIN_BLOCK: f64 = crate::shape::NODE_BYTES;

/// Fewer blocks than this gained are a table that doubled, not many held
/// things: a Rust `Vec` or `HashMap` keeps its entries in one table, so a
/// map's growth is one block (or two while the old one is freed), whatever
/// its size. A surge opens many connections and the slots pin a buffer of
/// each; held fields are a block per holding call.
const MIN_BLOCKS: f64 = 4.0;

/// A field held request after request grows while connections stay: less
/// than this share of its growth came when connections were opened (unless
/// every interval opened connections). Calls, not connections, make such
/// growth, so it comes in every interval in proportion to the calls done:
/// on a steady load it is the share of intervals that opened connections,
/// small. Well below [`SURGE_SHARE`], so that no site is both.
const STEADY_SHARE: f64 = 0.3;

/// Growth of no documented kind must reach this many times the growth floor
/// to be called a leak: a cache still filling up grows too, and without a
/// kind there is no mechanism to check it against, only its size. Eight
/// floors is 16 MiB at Go's default sampling rate (the floor is then four
/// sampling periods, 2 MiB): a judgement of what a cache warming up may
/// take, not a measurement; a kind's rule decides with less.
pub(crate) const UNKNOWN_FLOOR_FACTOR: f64 = 8.0;

/// An abnormally sized request scores from this...
const SCORE_OVERSIZED_BASE: f64 = 0.7;
/// ...plus this times the share of the growth in large blocks (0.85 to 1:
/// the block sizes themselves show the case).
const SCORE_OVERSIZED_SPAN: f64 = 0.3;

/// The balancer cache's own frames, which the guide names: nothing but
/// duplicate clients makes them grow, so above a named field (whose growth
/// may yet be a zero-copy string's).
const SCORE_LBCACHE: f64 = 0.95;

/// Growth that follows the clients created without the balancer's frames:
/// a correlation, below every named frame.
const SCORE_CLIENTS_FOLLOWED: f64 = 0.7;

/// A field named by its decoder's frame (`Request.Field2`), as the guide
/// reads the profile.
const SCORE_FIELD_NAMED: f64 = 0.9;

/// A named string field in a process that parses JSON: below a named field,
/// since that the held values were parsed from it is inferred.
const SCORE_ZERO_COPY: f64 = 0.85;

/// A case read from the shape alone (growth that follows connections)
/// scores from this...
const SCORE_SHAPE_BASE: f64 = 0.6;
/// ...plus this times how closely it follows them (up to 1).
const SCORE_SHAPE_SPAN: f64 = 0.4;

/// The guide points at the buffer each connection starts with ("Netpoll
/// creates an initial-sized buffer for each connection"): that site leads
/// the idle-connection findings.
const SCORE_CONNECTION_SETUP: f64 = 1.0;

/// A field held, read from buffers pinned request after request with no
/// decoder frame naming it: the shape's floor.
const SCORE_FIELD_UNNAMED: f64 = SCORE_SHAPE_BASE;

/// Growth of no documented shape: below every case.
const SCORE_UNKNOWN: f64 = 0.4;

/// What a run says of the whole process, which the rules read beside each
/// site's shape.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context<'a> {
    /// Growth smaller than this is never a finding (bytes).
    pub(crate) min_growth: f64,
    /// Less than this kept per request is bookkeeping, not a held payload.
    pub(crate) min_bytes_per_request: f64,
    /// Blocks of this size or more are large (bytes).
    pub(crate) large_block_bytes: f64,
    /// Whether the process parses JSON.
    pub(crate) parses_json: bool,
    /// What the process allocates per request on average (bytes).
    pub(crate) typical_request: Option<f64>,
    /// Where abnormally large requests came from, in plain words.
    pub(crate) oversized_origin: &'a [String],
}

/// A site named as a case.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Named {
    pub(crate) kind: Kind,
    pub(crate) score: f64,
    pub(crate) evidence: Vec<String>,
}

/// A rule's answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Answer {
    /// The site is this case, and it leaks.
    Leak(Named),
    /// The site is this case's mechanism, bounded: no leak.
    NoLeak,
    /// Not this case: the next rule is asked.
    Next,
}

fn leak(kind: Kind, score: f64, evidence: Vec<String>) -> Answer {
    Answer::Leak(Named { kind, score, evidence })
}

type Rule = fn(&StackFacts, &Shape, &Context<'_>) -> Answer;

/// The rules in the order they are asked. Oversized blocks go first (a
/// large field is no held field); the client rules come before the gate on
/// a rise, since the balancer cache may leak as memory that stays without a
/// trend; the zero-copy string goes before the field rules, which answer
/// for every other decoded field; the read path's unnamed field and growth
/// of no known shape come last.
const RULES: [Rule; 11] = [
    oversized_request,
    duplicate_clients_in_lbcache,
    duplicate_clients_followed,
    neither_trend_nor_step,
    zero_copy_string_held,
    response_field_held,
    request_field_held,
    idle_connection_buffers,
    connection_surge_barriers,
    request_field_pinned_on_read_path,
    unknown_growth,
];

/// Names the case of one growing site, or `None` if it is not a leak. The
/// evidence opens with what stayed after the load and what each request
/// kept.
pub(crate) fn classify(f: &StackFacts, s: &Shape, cx: &Context<'_>) -> Option<Named> {
    for rule in RULES {
        match rule(f, s, cx) {
            Answer::Leak(named) => {
                let mut evidence = Vec::new();
                if let Some(r) = s.retained {
                    evidence.push(format!(
                        "{:.0}% of the growth stayed after the load stopped",
                        (r * 100.0).clamp(0.0, 999.0)
                    ));
                }
                if let Some(b) = s.per_request {
                    evidence.push(format!("{:.0} bytes kept per request", b));
                }
                evidence.extend(named.evidence);
                return Some(Named { evidence, ..named });
            }
            Answer::NoLeak => return None,
            Answer::Next => {}
        }
    }
    None
}

/// Rises with a significant Mann–Kendall trend.
fn trending(s: &Shape) -> bool {
    s.trend_p < TREND_SIGNIFICANCE && s.slope > 0.0
}

/// Stays after the load; or, while the load goes on (no after-load
/// snapshots yet, or a live process), is held now: a finding's worth of
/// growth (the growth floor) is still in use at each of the last two
/// snapshots (what is held outlives an interval; what calls in flight
/// hold does not). Both
/// are read net of what the buffer pool gained in its cache, and within
/// the process's exact gain ([`Shape::held_now`]): a pool keeps the chunks
/// given back to it for reuse and frees those not reused within two GC
/// cycles (as `sync.Pool` does), so after a surge of connections closes,
/// growth that the cache explains is bounded, not held.
fn kept(s: &Shape, cx: &Context<'_>) -> bool {
    match s.retained {
        Some(r) => r >= KEPT_SHARE,
        None => s.held_now >= cx.min_growth,
    }
}

/// Keeps more than bookkeeping would: per request done, or (when only one
/// call in many holds something) per block it gained. A held field keeps a
/// block of the field's size (or pins the buffer it was read into) for
/// each call that holds it, and many calls hold; bookkeeping keeps a small
/// entry per call (its bytes over its blocks are the entry's size), or
/// grows one table that doubles (one block: [`MIN_BLOCKS`]). (Or the run
/// counts no requests.)
fn more_than_bookkeeping(s: &Shape, cx: &Context<'_>) -> bool {
    s.per_request.is_none_or(|b| b >= cx.min_bytes_per_request)
        || many_blocks_of(s, cx.min_bytes_per_request) == Some(true)
}

/// Allocated under the frameworks' buffers: the pool, the read path,
/// connection setup or serialization.
fn in_connection_buffers(f: &StackFacts) -> bool {
    f.pooled || f.conn_setup || f.read_path || f.encode
}

/// *Large Request with Abnormal Size*: "Netpoll will cache (sync.Pool) some
/// memory for these abnormally sized requests, resulting in increased
/// memory usage." Most of the growth is large blocks, far larger than what
/// a request usually costs, on the read path or a decoded field, and it
/// came on connections that were already open (not a surge).
fn oversized_request(f: &StackFacts, s: &Shape, cx: &Context<'_>) -> Answer {
    let abnormal = cx.typical_request.is_some_and(|t| s.largest_block as f64 >= ABNORMAL_FACTOR * t);
    let oversized = s.large_blocks >= LARGE_SHARE
        && abnormal
        && (s.at_openings.is_none_or(|o| o < ALREADY_OPEN_SHARE) || openings_tell_nothing(s))
        && (f.read_path || f.pooled || f.field.is_some());
    if !oversized {
        return Answer::Next;
    }
    let mut evidence = vec![format!(
        "{:.0}% of the growth is blocks of {} or more (largest {}), {}",
        s.large_blocks * 100.0,
        mib(cx.large_block_bytes),
        mib(s.largest_block as f64),
        if openings_tell_nothing(s) {
            "while connections were opened in every interval (when it came does not tell a surge)"
        } else {
            "on connections that were already open"
        }
    )];
    if let Some(t) = cx.typical_request {
        evidence.push(format!(
            "a typical request costs {:.1} KiB: the largest block is {:.0} times that",
            t / 1024.0,
            s.largest_block as f64 / t
        ));
    }
    evidence.extend(cx.oversized_origin.iter().cloned());
    leak(Kind::OversizedRequest, SCORE_OVERSIZED_BASE + SCORE_OVERSIZED_SPAN * s.large_blocks, evidence)
}

fn follows_clients(r: f64) -> String {
    format!("follows the number of clients created (r = {r:.2})")
}

/// *High Memory Usage of lbcache*: "lbcache is only created once for each
/// client. If there is a large amount of lbcache leakage, it indicates that
/// there is likely a behavior of creating a large number of duplicate
/// clients." One client's event queue fills up to its bound and stops: only
/// more and more clients (or, without metrics, growth that keeps going and
/// stays) make the balancer cache leak.
fn duplicate_clients_in_lbcache(f: &StackFacts, s: &Shape, cx: &Context<'_>) -> Answer {
    if !f.balancer {
        return Answer::Next;
    }
    let leaking = match s.clients.map(|c| c > ONE_CLIENT) {
        Some(more) => more && (trending(s) || kept(s, cx)),
        None => trending(s) && kept(s, cx) && !s.plateaued,
    };
    if !leaking {
        return Answer::NoLeak;
    }
    let mut evidence =
        vec!["allocated by the balancer cache's refresh (rebalance hooks formatting instance lists)".to_owned()];
    if let Some(c) = s.clients {
        evidence.push(format!("{c:.0} clients were created while it grew"));
    }
    if let Some(c) = s.with_clients {
        evidence.push(follows_clients(c));
    }
    leak(Kind::DuplicateClients, SCORE_LBCACHE, evidence)
}

/// Duplicate clients without the balancer's frames: growth off the read
/// path and no decoded field, rising in step with the clients created.
fn duplicate_clients_followed(f: &StackFacts, s: &Shape, _: &Context<'_>) -> Answer {
    match s.with_clients.filter(|c| *c > CLIENTS_CORRELATION) {
        Some(c) if !f.read_path && f.field.is_none() && trending(s) => {
            leak(Kind::DuplicateClients, SCORE_CLIENTS_FOLLOWED, vec![follows_clients(c)])
        }
        _ => Answer::Next,
    }
}

/// Memory with neither a trend nor a step only moves around a level: no
/// leak. Every later rule reads a site that rose.
fn neither_trend_nor_step(_: &StackFacts, s: &Shape, _: &Context<'_>) -> Answer {
    if trending(s) || s.steps > 0 {
        Answer::Next
    } else {
        Answer::NoLeak
    }
}

/// A decoded field is held when its growth stays, is more than bookkeeping,
/// and never levels off (a capped cache levels off).
fn field_kept(s: &Shape, cx: &Context<'_>) -> bool {
    kept(s, cx) && more_than_bookkeeping(s, cx) && !s.plateaued
}

/// The evidence line of a field named by its decoder.
fn decoded(owner: &str, tag: u32) -> String {
    format!("allocated by the decoding of {owner} field {tag} (copied out of the read buffer)")
}

/// *Caching Objects by Parsing String Fields in Request/Response Using
/// Sonic*: "Sonic reuses the underlying memory of the input string for
/// unmarshaled string objects", so caching parsed values keeps "the
/// original input string object's memory" held. A decoded field keeps
/// growing in a process that parses JSON.
fn zero_copy_string_held(f: &StackFacts, s: &Shape, cx: &Context<'_>) -> Answer {
    let (Some((owner, tag)), true) = (&f.field, cx.parses_json) else { return Answer::Next };
    if !field_kept(s, cx) {
        return Answer::NoLeak;
    }
    let evidence = vec![
        decoded(owner, *tag),
        "the process parses JSON: values parsed zero-copy from that string field pin all of it".to_owned(),
    ];
    leak(Kind::ZeroCopyStringHeld, SCORE_ZERO_COPY, evidence)
}

/// *Persistent Holding of a Field in Response*: "continuously holding a
/// reference to a field in response, even if it's just one byte". A field
/// decoded into a response keeps growing: a response or result struct is
/// on the stack, or the client's call reads it ([`StackFacts::response`]).
fn response_field_held(f: &StackFacts, s: &Shape, cx: &Context<'_>) -> Answer {
    match &f.field {
        Some((owner, tag)) if f.response => held_field(Kind::ResponseFieldHeld, owner, *tag, s, cx),
        _ => Answer::Next,
    }
}

/// *Holding onto a Field of Request Object Persistently*: "you can see that
/// there is a memory leak in Request.Field2. Then you can check which field
/// has the tag number 2 in the IDL file". Any other decoded field that
/// keeps growing.
fn request_field_held(f: &StackFacts, s: &Shape, cx: &Context<'_>) -> Answer {
    match &f.field {
        Some((owner, tag)) => held_field(Kind::RequestFieldHeld, owner, *tag, s, cx),
        None => Answer::Next,
    }
}

fn held_field(kind: Kind, owner: &str, tag: u32, s: &Shape, cx: &Context<'_>) -> Answer {
    if field_kept(s, cx) {
        leak(kind, SCORE_FIELD_NAMED, vec![decoded(owner, tag)])
    } else {
        Answer::NoLeak
    }
}

/// *Excessive Creation of Idle Connections*: "Netpoll creates an
/// initial-sized buffer for each connection. If the upstream continuously
/// creates connections, it may appear as if Netpoll is occupying all the
/// downstream memory." Connection buffers follow the connections open now:
/// a leak while their number keeps rising, bounded (an idle timeout at
/// work) once it levels off.
fn idle_connection_buffers(f: &StackFacts, s: &Shape, _: &Context<'_>) -> Answer {
    let Some(r) = s.with_open.filter(|_| in_connection_buffers(f)) else { return Answer::Next };
    if r > OPEN_CORRELATION {
        if s.open_rising.unwrap_or(trending(s) && !s.plateaued) && trending(s) {
            let score =
                if f.conn_setup { SCORE_CONNECTION_SETUP } else { SCORE_SHAPE_BASE + SCORE_SHAPE_SPAN * r.min(1.0) };
            let evidence = vec![format!("follows the connections open now (r = {r:.2}): buffers of idle connections")];
            return leak(Kind::IdleConnectionBuffers, score, evidence);
        }
        return Answer::NoLeak;
    }
    Answer::Next
}

/// *Increased Connection Count + Large Payload Scenarios*: the poller's
/// barriers "temporarily stored some buffers across connections. If the
/// number of connections increased, it would lead to its capacity
/// expansion, and then there would be lingering buffer references from
/// historical connections". Growth of pooled, read, written or handler
/// buffers that came when connections were opened, and stays after they
/// closed.
fn connection_surge_barriers(f: &StackFacts, s: &Shape, cx: &Context<'_>) -> Answer {
    if !(in_connection_buffers(f) || f.handler) {
        return Answer::Next;
    }
    let at_openings = s.at_openings.unwrap_or(0.0);
    if !(kept(s, cx) && (at_openings >= SURGE_SHARE || s.at_openings.is_none() && s.steps >= SURGE_STEPS)) {
        return Answer::Next;
    }
    // The slots' references grow with the peak of connections ("it would
    // lead to its capacity expansion"): each surge larger than the last
    // expands the table and leaves more behind, so the growth goes on in
    // the second half of the load. Growth that was all made early (a
    // capped cache that filled while connections were being opened, then
    // stayed flat) is bounded, whatever frames it has.
    if s.late_growth < cx.min_growth {
        return Answer::Next;
    }
    // "Lingering buffer references from historical connections": while the
    // load goes on, memory can only be said to stay after the connections
    // closed once most of those that were opened have closed; before, it
    // is theirs.
    // Nor while the connections open now, at what each held at the
    // baseline, account for most of the growth.
    if s.retained.is_none() && (s.closed_share.is_some_and(|c| c < SURGE_CLOSED_SHARE) || connections_hold_it(s)) {
        return Answer::Next;
    }
    let per_connection = s.peak_open.filter(|&p| p > 0.0).map(|p| s.growth / p);
    if per_connection.is_some_and(|b| b < SURGE_MIN_PER_CONNECTION) || many_blocks_of(s, SURGE_MIN_BLOCK) == Some(false)
    {
        return Answer::Next;
    }
    let mut evidence = vec![format!(
        "{:.0}% of the growth came when connections were opened, and it stays after they closed",
        at_openings * 100.0
    )];
    if let Some(b) = per_connection {
        evidence.push(format!(
            "{:.1} KiB kept per connection open at the peak: more than a slot, a pinned buffer",
            b / 1024.0
        ));
    }
    if let Some(opened) = s.opened {
        evidence.push(format!(
            "memory follows the peak of connections, not requests: {opened:.0} connections opened, {:.0} KiB kept per connection opened",
            s.growth / opened.max(1.0) / 1024.0
        ));
    }
    // The guide's typical symptoms: where each of the three leaks shows.
    let path = if f.read_path {
        "the poller's read path into the pool (a request leak)"
    } else if f.encode {
        "serialization into pooled output nodes (a response leak without NoCopy)"
    } else if f.handler {
        "the business handler (response fields linked in without a copy)"
    } else {
        "connection buffers"
    };
    evidence.push(format!("attributed to {path}"));
    leak(Kind::ConnectionSurgeBarriers, SCORE_SHAPE_BASE + SCORE_SHAPE_SPAN * at_openings, evidence)
}

/// A request field held, seen from the pool's side: "Memory allocation in
/// the Request is done in the netpoll function stack, so it may appear that
/// the objects created by netpoll are leaking memory." Read buffers pinned
/// request after request, while connections stay. Under the client's
/// call, the buffers read are responses: *Persistent Holding of a Field in
/// Response*, seen the same way.
fn request_field_pinned_on_read_path(f: &StackFacts, s: &Shape, cx: &Context<'_>) -> Answer {
    let at_openings = s.at_openings.unwrap_or(0.0);
    if f.read_path
        && kept(s, cx)
        && more_than_bookkeeping(s, cx)
        && trending(s)
        && !s.plateaued
        && (at_openings < STEADY_SHARE || openings_tell_nothing(s) && !connections_hold_it(s))
    {
        // A client reads responses into its buffers, a server requests.
        let (kind, evidence) = if f.calling {
            (
                Kind::ResponseFieldHeld,
                "read buffers of the client's calls pinned call after call: a response field sliced without a copy",
            )
        } else {
            (Kind::RequestFieldHeld, "read buffers pinned request after request: a field sliced without a copy")
        };
        return leak(kind, SCORE_FIELD_UNNAMED, vec![evidence.to_owned()]);
    }
    Answer::Next
}

/// Whether the site gained many blocks ([`MIN_BLOCKS`]) of at least `least`
/// bytes each on average; none without block sizes.
fn many_blocks_of(s: &Shape, least: f64) -> Option<bool> {
    s.per_block.map(|b| b >= least && s.blocks_gained >= MIN_BLOCKS)
}

/// Every interval under load opened connections: then all growth came "at
/// openings", and when it came tells nothing of surges.
fn openings_tell_nothing(s: &Shape) -> bool {
    s.quiet_intervals == Some(false)
}

/// The connections open now, at the site's bytes per open connection,
/// account for most of the growth ([`MOST`]): their own buffers.
fn connections_hold_it(s: &Shape) -> bool {
    s.open_share.is_some_and(|o| o > MOST)
}

/// Growth no documented case explains, named only when it is large enough
/// not to be a cache still filling up.
fn unknown_growth(_: &StackFacts, s: &Shape, cx: &Context<'_>) -> Answer {
    if trending(s)
        && kept(s, cx)
        && more_than_bookkeeping(s, cx)
        && !s.plateaued
        && s.growth >= UNKNOWN_FLOOR_FACTOR * cx.min_growth
    {
        return leak(Kind::Unknown, SCORE_UNKNOWN, Vec::new());
    }
    Answer::Next
}

#[cfg(test)]
mod tests {
    use super::*;

    const CX: Context<'static> = Context {
        min_growth: 1e6,
        min_bytes_per_request: 256.0,
        large_block_bytes: 1048576.0,
        parses_json: false,
        typical_request: None,
        oversized_origin: &[],
    };

    /// Rising 1 MB/s with p = 0.001, 100 MB, kept, nothing else known.
    fn rising() -> Shape {
        Shape { growth: 1e8, held_now: 1e8, late_growth: 5e7, slope: 1e6, trend_p: 0.001, ..Shape::default() }
    }

    #[test]
    fn growth_of_no_documented_shape_is_unknown() {
        let named = classify(&StackFacts::default(), &rising(), &CX).expect("a leak");
        assert_eq!((named.kind, named.score), (Kind::Unknown, SCORE_UNKNOWN));
    }

    #[test]
    fn a_bounded_case_stops_the_later_rules() {
        // One client's balancer cache that fills up: no later rule (not
        // even the unknown one) names it.
        let f = StackFacts { balancer: true, ..StackFacts::default() };
        let one_client = Shape { clients: Some(1.0), ..rising() };
        assert_eq!(duplicate_clients_in_lbcache(&f, &one_client, &CX), Answer::NoLeak);
        assert_eq!(classify(&f, &one_client, &CX), None);
        // A capped cache of a field levels off.
        let f = StackFacts { field: Some(("Request".into(), 2)), ..StackFacts::default() };
        assert_eq!(classify(&f, &Shape { plateaued: true, ..rising() }, &CX), None);
        let named = classify(&f, &rising(), &CX).expect("a held field");
        assert_eq!((named.kind, named.score), (Kind::RequestFieldHeld, SCORE_FIELD_NAMED));
    }

    #[test]
    fn while_the_load_goes_on_only_what_is_held_now_is_kept() {
        // 100 MB at the peak, of which less than the growth floor is still
        // held at both of the last snapshots net of the pool's cache: a
        // surge's buffers back in the cache.
        let f = StackFacts { pooled: true, read_path: true, ..StackFacts::default() };
        let surge = Shape { at_openings: Some(1.0), closed_share: Some(1.0), ..rising() };
        assert!(matches!(connection_surge_barriers(&f, &surge, &CX), Answer::Leak(_)));
        let cached = Shape { held_now: 0.9 * CX.min_growth, ..surge.clone() };
        assert_eq!(connection_surge_barriers(&f, &cached, &CX), Answer::Next);
        // Once the load is over, what stays decides.
        let after = Shape { retained: Some(0.9), ..cached.clone() };
        assert!(matches!(connection_surge_barriers(&f, &after, &CX), Answer::Leak(_)));
        // Connections still open (most of those opened, or enough to hold
        // the growth at their baseline bytes each) hold their own buffers.
        let open = Shape { closed_share: Some(0.2), ..surge.clone() };
        assert_eq!(connection_surge_barriers(&f, &open, &CX), Answer::Next);
        let open = Shape { open_share: Some(0.8), ..surge.clone() };
        assert_eq!(connection_surge_barriers(&f, &open, &CX), Answer::Next);
    }

    #[test]
    fn growth_made_early_at_the_surges_is_no_surge_leak() {
        // A capped cache under the handler that filled in the first seconds,
        // while surges were opening connections, then stayed flat: it kept
        // what it gained, but gained less than the growth floor in the
        // second half of the load.
        let f = StackFacts { handler: true, ..StackFacts::default() };
        let surge = Shape { at_openings: Some(0.72), retained: Some(0.73), ..rising() };
        assert!(matches!(connection_surge_barriers(&f, &surge, &CX), Answer::Leak(_)));
        let filled_early = Shape { late_growth: 0.5 * CX.min_growth, ..surge };
        assert_eq!(connection_surge_barriers(&f, &filled_early, &CX), Answer::Next);
    }

    #[test]
    fn a_slot_table_that_follows_the_peak_of_connections_is_not_a_surge_leak() {
        // 0.3 MB gained at the surges, kept, with 224 connections open at
        // the peak: 1.3 KiB a connection, the slots' own bookkeeping.
        let f = StackFacts { handler: true, ..StackFacts::default() };
        let surge = Shape {
            growth: 3e5,
            retained: Some(1.0),
            at_openings: Some(1.0),
            opened: Some(1456.0),
            peak_open: Some(224.0),
            ..rising()
        };
        assert_eq!(connection_surge_barriers(&f, &surge, &CX), Answer::Next);
        // The same surges pinning a 256 KiB buffer a slot.
        let pinned = Shape { growth: 224.0 * 262144.0, ..surge.clone() };
        let Answer::Leak(named) = connection_surge_barriers(&f, &pinned, &CX) else { panic!("a surge leak") };
        assert_eq!(named.kind, Kind::ConnectionSurgeBarriers);
        // Without connection metrics (a foreign process) the check is not made.
        let foreign = Shape { peak_open: None, ..surge };
        assert!(matches!(connection_surge_barriers(&f, &foreign, &CX), Answer::Leak(_)));
    }

    #[test]
    fn small_blocks_gained_at_the_surges_are_no_surge_leak() {
        // Growth kept at the surges made of a connection's own small blocks
        // (a task's 1.8 KiB future, 1 KiB cache entries): connections opened
        // in every interval, so every growth came "at openings", and the
        // peak of open connections missed by the snapshots.
        let f = StackFacts { handler: true, ..StackFacts::default() };
        let surge = Shape {
            at_openings: Some(1.0),
            retained: Some(1.0),
            per_block: Some(262144.0),
            blocks_gained: 400.0,
            ..rising()
        };
        assert!(matches!(connection_surge_barriers(&f, &surge, &CX), Answer::Leak(_)));
        for small in [1792.0, 1024.0, 35.0] {
            let own = Shape { per_block: Some(small), ..surge.clone() };
            assert_eq!(connection_surge_barriers(&f, &own, &CX), Answer::Next, "{small}");
        }
        // Buffer nodes of 4 KiB are what lingering slots pin.
        let nodes = Shape { per_block: Some(4096.0), ..surge.clone() };
        assert!(matches!(connection_surge_barriers(&f, &nodes, &CX), Answer::Leak(_)));
        // One large block is a map's table that doubled.
        let table = Shape { per_block: Some(802832.0), blocks_gained: 1.0, ..surge };
        assert_eq!(connection_surge_barriers(&f, &table, &CX), Answer::Next);
    }

    #[test]
    fn a_field_held_by_one_call_in_many_is_more_than_bookkeeping() {
        // One call in 64 keeps its 8 KiB response field: 130 bytes per call
        // done, 8 KiB per block kept.
        let f = StackFacts { field: Some(("Response".into(), 2)), response: true, ..StackFacts::default() };
        let diluted = Shape { per_request: Some(130.0), per_block: Some(8192.0), blocks_gained: 600.0, ..rising() };
        let named = classify(&f, &diluted, &CX).expect("a held field");
        assert_eq!(named.kind, Kind::ResponseFieldHeld);
        // A map of small entries, one a call: bookkeeping by both measures.
        let map = Shape { per_request: Some(64.0), per_block: Some(40.0), blocks_gained: 30_000.0, ..rising() };
        assert_eq!(classify(&f, &map, &CX), None);
        // A map's table alone (its entries allocated elsewhere): one block.
        let table = Shape { per_request: Some(64.0), per_block: Some(1048576.0), blocks_gained: 1.0, ..rising() };
        assert_eq!(classify(&f, &table, &CX), None);
    }

    #[test]
    fn growth_at_openings_says_nothing_when_every_interval_opened_connections() {
        // 8 MiB requests on a server that also takes idle connections in
        // every interval: all growth came "at openings".
        let cx = Context { typical_request: Some(4096.0), ..CX };
        let f = StackFacts { read_path: true, pooled: true, ..StackFacts::default() };
        let big = Shape { large_blocks: 1.0, largest_block: 8 << 20, at_openings: Some(1.0), ..rising() };
        assert_eq!(oversized_request(&f, &Shape { quiet_intervals: Some(true), ..big.clone() }, &cx), Answer::Next);
        let busy = Shape { quiet_intervals: Some(false), ..big };
        let Answer::Leak(named) = oversized_request(&f, &busy, &cx) else { panic!("oversized") };
        assert_eq!(named.kind, Kind::OversizedRequest);
        // The read path's pinned fields, the same way.
        let pinned = Shape { at_openings: Some(1.0), per_request: Some(4096.0), ..rising() };
        assert_eq!(
            request_field_pinned_on_read_path(&f, &Shape { quiet_intervals: Some(true), ..pinned.clone() }, &CX),
            Answer::Next
        );
        let busy = Shape { quiet_intervals: Some(false), ..pinned };
        assert!(matches!(request_field_pinned_on_read_path(&f, &busy, &CX), Answer::Leak(_)));
        // Unless the connections open now hold it, at their bytes each.
        let theirs = Shape { open_share: Some(0.76), ..busy };
        assert_eq!(request_field_pinned_on_read_path(&f, &theirs, &CX), Answer::Next);
    }

    #[test]
    fn a_read_path_pinned_under_the_clients_call_holds_responses() {
        let pinned = Shape { per_request: Some(4096.0), ..rising() };
        let server = StackFacts { read_path: true, pooled: true, ..StackFacts::default() };
        let Answer::Leak(named) = request_field_pinned_on_read_path(&server, &pinned, &CX) else { panic!("a leak") };
        assert_eq!(named.kind, Kind::RequestFieldHeld);
        let client = StackFacts { calling: true, ..server };
        let Answer::Leak(named) = request_field_pinned_on_read_path(&client, &pinned, &CX) else { panic!("a leak") };
        assert_eq!(named.kind, Kind::ResponseFieldHeld);
        assert!(named.evidence[0].contains("client's calls"), "{:?}", named.evidence);
    }

    #[test]
    fn neither_a_trend_nor_a_step_is_no_leak() {
        let flat = Shape { trend_p: 0.5, ..rising() };
        assert_eq!(neither_trend_nor_step(&StackFacts::default(), &flat, &CX), Answer::NoLeak);
        assert_eq!(neither_trend_nor_step(&StackFacts::default(), &Shape { steps: 1, ..flat }, &CX), Answer::Next);
    }

    #[test]
    fn the_connection_setup_buffer_leads_idle_connections() {
        let open = Shape { with_open: Some(0.9), open_rising: Some(true), ..rising() };
        let setup = StackFacts { conn_setup: true, ..StackFacts::default() };
        let read = StackFacts { read_path: true, ..StackFacts::default() };
        let score = |f: &StackFacts| classify(f, &open, &CX).map(|n| (n.kind, n.score));
        assert_eq!(score(&setup), Some((Kind::IdleConnectionBuffers, SCORE_CONNECTION_SETUP)));
        assert_eq!(score(&read), Some((Kind::IdleConnectionBuffers, SCORE_SHAPE_BASE + SCORE_SHAPE_SPAN * 0.9)));
    }
}
