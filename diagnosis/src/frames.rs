//! What a stack frame tells about who allocated, in the vocabulary of
//! pooled-buffer RPC frameworks: Kitex and Netpoll in Go, and their Rust
//! counterparts (`rpc::linkbuf`, `rpc::codec`, `rpc::lbcache`). The engine
//! reads names like a person reading `go tool pprof -top` would: it knows
//! frameworks, never scenarios.

/// The role of one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Role {
    /// The allocator, the language runtime, containers and executors:
    /// never the site a person should look at.
    Infrastructure,
    /// A buffer pool's internals (`mcache.Malloc`, `rpc::pool::Pool::lease`).
    Pool,
    /// A connection's read path into the pool (`LinkBuffer.book`,
    /// `InputBuffer::book`, spanning reads).
    ReadPath,
    /// A connection's setup (its first input node), and the poller's
    /// record for each connection open at once (a barrier slot: Netpoll's
    /// `barriers`, sized by the batch of connections it serves).
    ConnSetup,
    /// Serialization into the output buffer.
    Encode,
    /// Decoding of field `tag` of struct `name` (`Request::read_field_2`,
    /// `(*Request).FastReadField2`).
    Field { name: String, tag: u32 },
    /// The balancer cache's refresh path (`lbcache`, rebalance hooks).
    Balancer,
    /// A JSON parser (Sonic, sonic-rs, serde_json).
    Json,
    /// The server's dispatch to a handler.
    Dispatch,
    /// The framework's client making a call (`rpc::client::`, Kitex's
    /// `client.(*kClient)` and `remotecli`): a read path below it reads
    /// responses.
    Caller,
    /// Anything else: business code, by default.
    Other,
}

const INFRA_PREFIXES: &[&str] = &[
    "alloc::",
    "core::",
    "std::",
    "hashbrown::",
    "bytes::",
    "faststr::",
    "tokio::",
    "profiler::",
    "tracing",
    "__rust",
    "__rdl",
    "__libc",
    "T as alloc::",
    "T as core::",
    "runtime.",
    "sync.",
    "reflect.",
    "strings.",
    "bytes.",
    "fmt.",
    "strconv.",
    "encoding/",
    "internal/",
    "malloc",
    "calloc",
    "realloc",
    "[",
    "0x",
];

/// Strips `<` and `&` so that `<alloc::vec::Vec<T> as ...>` reads as `alloc::...`.
fn bare(name: &str) -> &str {
    name.trim_start_matches(['<', '&', '*', '('])
}

/// `Request::read_field_2` / `(*Request).FastReadField2` / `ReadField2`.
pub(crate) fn field_of(name: &str) -> Option<(String, u32)> {
    for marker in ["::read_field_", ".FastReadField", ".ReadField", "::ReadField"] {
        if let Some(at) = name.rfind(marker) {
            let digits: String = name[at + marker.len()..].chars().take_while(char::is_ascii_digit).collect();
            let tag = digits.parse().ok()?;
            let before = &name[..at];
            let owner = before.rsplit([':', '.', '*', '(', ')']).find(|s| !s.is_empty()).unwrap_or("");
            return Some((owner.trim_end_matches(')').to_owned(), tag));
        }
    }
    None
}

/// The role of a function name.
pub(crate) fn role(name: &str) -> Role {
    if let Some((owner, tag)) = field_of(name) {
        return Role::Field { name: owner, tag };
    }
    let b = bare(name);
    let lower = name.to_ascii_lowercase();
    if lower.contains("lbcache") || lower.contains("rebalance") || lower.contains("format_instances") {
        return Role::Balancer;
    }
    if lower.contains("sonic") || lower.contains("json") {
        return Role::Json;
    }
    if name.contains("InputBuffer::new") && !name.contains("InputBuffer::new_node")
        || name.contains("(*connection).init")
        || b.starts_with("rpc::barrier::")
        || name.contains("netpoll.(*defaultPoll).Reset")
        || name.contains("newLinkBuffer") && !name.contains("newLinkBufferNode") && !name.contains("(*LinkBuffer)")
    {
        return Role::ConnSetup;
    }
    if name.contains("InputBuffer::") || name.contains("(*LinkBuffer).book") || name.contains("(*connection).inputs") {
        return Role::ReadPath;
    }
    if name.contains("OutputBuffer::")
        || name.contains("(*LinkBuffer).Malloc")
        || name.contains("encode_reply")
        || name.contains("encode_call")
        || name.contains("FastWrite")
        || name.contains("WriteBinary")
    {
        return Role::Encode;
    }
    if b.starts_with("rpc::pool::") || name.contains("mcache.") || name.contains("newLinkBufferNode") {
        return Role::Pool;
    }
    if name.contains("::dispatch") || name.contains("(*server).") && name.contains("Handler") {
        return Role::Dispatch;
    }
    if INFRA_PREFIXES.iter().any(|p| b.starts_with(p))
        || b.starts_with("rpc::codec::binary::")
        || b.starts_with("rpc::codec::echo::read_field")
    {
        return Role::Infrastructure;
    }
    if b.starts_with("rpc::client::") || name.contains("kitex/client.") || name.contains("/remotecli.") {
        return Role::Caller;
    }
    Role::Other
}

/// What one stack (leaf first) says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct StackFacts {
    /// The frame a person should look at.
    pub site: String,
    /// A decoded field on the stack.
    pub field: Option<(String, u32)>,
    /// The memory came from a pool.
    pub pooled: bool,
    pub read_path: bool,
    pub conn_setup: bool,
    pub encode: bool,
    pub balancer: bool,
    pub json: bool,
    /// Allocated below the server's dispatch, outside the framework:
    /// business code.
    pub handler: bool,
    /// Allocated under the framework's client call: its read path reads
    /// responses. (Netpoll reads in its poller's goroutines, under no
    /// caller: a Go stack says this only with Kitex's blocking transports.)
    pub calling: bool,
    /// A response is being decoded: read under a client call, or a field
    /// frame anywhere on the stack reads a response's or a result's struct
    /// ([`is_response_struct`]): Kitex decodes a call's reply as
    /// `…Result.FastReadField0`, whose field is the response struct that
    /// holds the leaked field, named as its IDL names it (`GetUserResp`).
    pub response: bool,
}

/// Whether a struct that a field frame reads is a response: Thrift's
/// generated result wrapper (`EchoServiceEchoResult`, Kitex's `…Result`),
/// or a struct named as one (`Response`, `GetUserResp`, `EchoResponse`).
pub(crate) fn is_response_struct(owner: &str) -> bool {
    owner.ends_with("Result") || owner.ends_with("Resp") || owner.contains("Response")
}

/// The site of a call stack (leaf first) as the engine names it: the frame
/// a person should open. A decoded field's reader comes first, then the
/// framework's read, encode or connection-setup path, the balancer cache or
/// a JSON parser, else the first frame of business code; the allocator,
/// runtime and containers never. The engine sums in-use bytes per site.
///
/// ```
/// let site = diagnosis::site_of(&[
///     "alloc::raw_vec::RawVecInner<A>::try_allocate_in",
///     "rpc::codec::binary::Reader::read_binary_copy",
///     "rpc::codec::echo::Request::read_field_2",
///     "rpc::codec::echo::Request::decode",
/// ]);
/// assert_eq!(site, "rpc::codec::echo::Request::read_field_2");
/// ```
pub fn site_of(stack: &[&str]) -> String {
    facts(stack).site
}

/// Reads a stack, leaf first.
pub(crate) fn facts(functions: &[&str]) -> StackFacts {
    let mut f = StackFacts::default();
    let mut first_other: Option<&str> = None;
    let mut first_meaningful: Option<&str> = None;
    let mut field_frame: Option<&str> = None;
    for name in functions {
        match role(name) {
            Role::Infrastructure => {}
            Role::Pool => f.pooled = true,
            Role::ReadPath => {
                f.read_path = true;
                first_meaningful.get_or_insert(name);
            }
            Role::ConnSetup => {
                f.conn_setup = true;
                first_meaningful.get_or_insert(name);
            }
            Role::Encode => {
                f.encode = true;
                first_meaningful.get_or_insert(name);
            }
            Role::Field { name: owner, tag } => {
                f.response |= is_response_struct(&owner);
                if f.field.is_none() {
                    f.field = Some((owner, tag));
                    field_frame = Some(name);
                }
            }
            Role::Balancer => {
                f.balancer = true;
                first_meaningful.get_or_insert(name);
            }
            Role::Json => {
                f.json = true;
                first_meaningful.get_or_insert(name);
            }
            Role::Dispatch => {
                // Business code allocated it if a non-framework frame sits
                // below the dispatch and nothing of the framework does.
                if first_other.is_some() && !f.read_path && !f.encode && f.field.is_none() && !f.pooled {
                    f.handler = true;
                }
            }
            Role::Caller => {
                // Named as before (as business code would be): the flag
                // only says whose read it is.
                f.calling = true;
                f.response = true;
                first_other.get_or_insert(name);
            }
            Role::Other => {
                first_other.get_or_insert(name);
            }
        }
    }
    // A trait adapter (`<T as Display>::fmt`) is less telling than the
    // function that called it.
    let plain_meaningful = functions.iter().copied().filter(|n| !n.starts_with('<')).find(|n| {
        !matches!(
            role(n),
            Role::Infrastructure | Role::Pool | Role::Other | Role::Caller | Role::Dispatch | Role::Field { .. }
        )
    });
    f.site = field_frame
        .or(plain_meaningful)
        .or(first_meaningful)
        .or(first_other)
        .or(functions.first().copied())
        .unwrap_or("")
        .to_owned();
    // A frame of the framework's own plumbing (server loops) is not the
    // business code that allocated.
    if f.handler {
        if let Some(other) = first_other {
            f.site = other.to_owned();
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_in_rust_and_go_names() {
        assert_eq!(field_of("rpc::codec::echo::Request::read_field_2"), Some(("Request".into(), 2)));
        assert_eq!(field_of("rpc::codec::echo::Response::read_field_3"), Some(("Response".into(), 3)));
        assert_eq!(field_of("echo.(*Request).FastReadField2"), Some(("Request".into(), 2)));
        assert_eq!(field_of("github.com/x/kitex_gen/echo.(*Response).ReadField3"), Some(("Response".into(), 3)));
        assert_eq!(field_of("main.handler"), None);
    }

    fn check(stack: &[&str], expect: impl Fn(&StackFacts) -> bool) {
        let f = facts(stack);
        assert!(expect(&f), "{stack:?} -> {f:?}");
    }

    #[test]
    fn reads_the_kinds_of_stack() {
        check(
            &[
                "alloc::raw_vec::RawVecInner<A>::try_allocate_in",
                "rpc::codec::binary::Reader::read_binary_copy",
                "rpc::codec::echo::Request::read_field_2",
                "rpc::codec::echo::Request::decode",
                "rpc::server::Shared<H>::dispatch",
            ],
            |f| f.field == Some(("Request".into(), 2)) && f.site.ends_with("Request::read_field_2") && !f.handler,
        );
        check(
            &[
                "rpc::pool::RawChunk::alloc",
                "rpc::pool::Pool::grow",
                "rpc::pool::Pool::lease",
                "rpc::linkbuf::InputBuffer::new_node",
                "rpc::linkbuf::InputBuffer::book",
            ],
            |f| f.pooled && f.read_path && f.site == "rpc::linkbuf::InputBuffer::new_node",
        );
        check(&["rpc::pool::RawChunk::alloc", "rpc::pool::Pool::lease", "rpc::linkbuf::InputBuffer::new"], |f| {
            f.conn_setup && !f.read_path
        });
        // The poller's slot for each connection open at once.
        check(&["alloc::sync::Arc<T>::new", "rpc::barrier::new_slot", "rpc::barrier::Barriers::acquire"], |f| {
            f.conn_setup && f.site == "rpc::barrier::new_slot"
        });
        check(
            &["alloc::fmt::format", "rpc::lbcache::format_instances", "rpc::lbcache::EventQueue::on_rebalance"],
            |f| f.balancer && f.site == "rpc::lbcache::format_instances",
        );
        check(
            &[
                "alloc::vec::from_elem",
                "scenarios::handler::build_response",
                "scenarios::handler::ScenarioHandler::echo",
                "rpc::server::Shared<H>::dispatch",
            ],
            |f| f.handler && f.site == "scenarios::handler::build_response",
        );
        check(&["runtime.mallocgc", "github.com/cloudwego/netpoll.(*LinkBuffer).book"], |f| f.read_path);
        // A client's call reading its response: the flag, and the same site.
        check(
            &[
                "rpc::pool::Pool::lease",
                "rpc::linkbuf::InputBuffer::new_node",
                "rpc::linkbuf::InputBuffer::book",
                "rpc::client::Client::call_addr::{{closure}}",
                "rpc::client::Client::call::{{closure}}",
                "scenarios::caller::drive::{{closure}}",
            ],
            |f| f.calling && f.read_path && f.site == "rpc::linkbuf::InputBuffer::new_node",
        );
        check(&["runtime.mallocgc", "github.com/cloudwego/kitex/client.(*kClient).Call"], |f| f.calling);
        check(&["rpc::server::Shared<H>::dispatch", "rpc::linkbuf::InputBuffer::book"], |f| !f.calling);
        // A reply's struct is a response by its wrapper or its own name;
        // a request's, under the server's `…Args` wrapper, is not.
        check(&["user.(*GetUserResp).FastReadField2", "user.(*UserServiceGetUserResult).FastReadField0"], |f| {
            f.response && f.field == Some(("GetUserResp".into(), 2))
        });
        check(&["user.(*Profile).FastReadField1", "user.(*UserServiceGetUserResult).FastReadField0"], |f| {
            f.response && f.field == Some(("Profile".into(), 1))
        });
        check(&["user.(*GetUserReq).FastReadField2", "user.(*UserServiceGetUserArgs).FastReadField1"], |f| !f.response);
        check(&["rpc::codec::echo::Request::read_field_2", "rpc::codec::echo::Request::decode"], |f| !f.response);
    }
}
