//! `request-field-hold`: the handler keeps `req.msg[..1]` per request.

use rpc::{Pool, ServerConfig};

use crate::error::ScenarioError;
use crate::handler::{Behaviour, Reply, ScenarioHandler, ServerScenario};
use crate::params::{conns, payload, rps, Check, Param, Params, Vary};
use crate::scenario::{HeldField, Info, Role, Scenario, Serves, Variant};
use crate::shape::LoadShape;
use crate::side::Side;

pub(crate) const NAME: &str = "request-field-hold";

pub(crate) const INFO: Info = Info {
    name: NAME,
    side: Side::Server,
    control: false,
    expected: "request-field-held",
    holder: "ScenarioHandler::remember",
    guide: "Holding onto a Field of Request Object Persistently\n\
        Typical code:\n\
        Note that for\n\
        []byte\n\
        orstring\n\
        types, even holding a partial slice of an object will still keep the entire underlying memory \
        referenced.\n\
        func (s *EchoServerImpl) Echo(ctx context.Context, req *echo.Request) (*echo.Response, error) {\n\
        // memory leak\n\
        cache.Store(req.Id, req.Msg[:1])\n\
        resp := &echo.Response{}\n\
        return resp, nil\n\
        }\n\
        By following the stack trace above, you can see that there is a memory leak in Request.Field2\n\
        . Then you can check which field has the tag number 2 in the IDL file and search for the leak point \
        in the code.",
    reproduces: "The guide's \"Holding onto a Field of Request Object Persistently\": the Echo handler runs \
        `cache.Store(req.Id, req.Msg[:1])`, here `cache.insert(req.id, req.msg.slice(..1))` into a map that lives as \
        long as the service. For []byte and string fields, even a partial slice keeps the entire underlying memory \
        referenced: each one-byte entry keeps the whole msg field of its request alive, so memory grows by about \
        `payload` bytes per request, for ever. The framework allocated that memory, so the heap profile seems to \
        blame it; the holder is the business cache.",
    profile_shows: "With decode=copy (Kitex's default) every msg is copied out of the read buffer by \
        `rpc::codec::echo::Request::read_field_2` (under `Request::decode` <- `decode_echo_args`; the copy is made in its \
        body, so it is the top flat row): inuse_space grows under read_field_2, the frame that names field tag 2 of \
        `Request` in rpc/idl/echo.thrift (msg) - the guide's `ReadField2` - while the pool profile stays flat. \
        With decode=nocopy the field is a slice of the pooled input node, which the heap profile cannot show (the \
        node was allocated long ago); the pool profile shows the pinned nodes instead, taken by \
        `InputBuffer::book`/`next_span` and held by `Request.msg (field 2, binary)`.",
    fix: "Do not keep a slice of a request field beyond the call: copy what you keep. The fix variant stores \
        `Bytes::copy_from_slice(&req.msg[..1])`, one byte of its own, so each request's field is freed when the \
        call ends. Bound what you keep, too: a map keyed by call ids that never repeat still grows by one tiny \
        entry per call (about 100 bytes, 40 KiB/s at 400 calls/s, as fast as a slow leak), so the fix keeps its \
        copies in a bounded cache (the last 1024).",
    params: &[
        Param {
            check: Check::Size {
                min: 1,
                max: usize::MAX,
                why: "the handler keeps msg[..1]: the msg needs at least one byte",
            },
            vary: Vary::Choices(&["4KiB", "8KiB", "16KiB", "32KiB", "64KiB"]),
            ..payload("16KiB")
        },
        rps("400").varying(Vary::Range { lo: 200, hi: 400 }),
        conns("4").varying(Vary::Range { lo: 2, hi: 8 }),
        Param {
            name: "decode",
            default: "copy",
            help: "copy: fields are copied out of the read buffer (Kitex's default; the profile names \
                   read_field_2); nocopy: fields slice the pooled read buffer (the pool profile shows it)",
            check: Check::DECODE,
            vary: Vary::Choices(&["copy", "nocopy"]),
        },
    ],
    scenario: &RequestFieldHold,
};

/// The handler caches a slice of each request's msg (the fix: a copy).
#[derive(Debug)]
pub(crate) struct RequestFieldHold;

impl Scenario for RequestFieldHold {
    fn role(&self) -> Role<'_> {
        Role::Server(self)
    }

    fn held_field(&self) -> Option<HeldField> {
        Some(HeldField { message: "Request", tag: 2, name: "msg" })
    }

    fn trickle(&self, p: &Params) -> Option<f64> {
        crate::scenario::held_field_trickle(p)
    }
}

impl Serves for RequestFieldHold {
    fn server(&self, v: Variant, p: &Params, pool: Pool) -> Result<ServerScenario, ScenarioError> {
        let config = ServerConfig { pool, decode: p.decode()?, ..ServerConfig::default() };
        let handler = ScenarioHandler::new(Reply::ECHO, Behaviour::hold_request_field(p.gate(v == Variant::Leak)));
        Ok(ServerScenario { config, handler })
    }

    fn load(&self, _v: Variant, p: &Params) -> Result<LoadShape, ScenarioError> {
        Ok(p.common().steady())
    }

    fn mixable(&self) -> bool {
        true
    }

    /// The handler also keeps `req.msg[..1]` (a slice for the calls the
    /// gate lets leak, a copy for the others).
    fn mix_server(&self, v: Variant, p: &Params, s: &mut ServerScenario) -> Result<(), ScenarioError> {
        s.parts().behaviours.push(Behaviour::hold_request_field(p.gate(v == Variant::Leak)));
        Ok(())
    }
}
