//! `sonic-string-hold`: values parsed zero-copy from a large JSON string
//! field are cached.

use bytes::Bytes;
use rpc::codec::DecodeMode;
use rpc::{Pool, ServerConfig};

use crate::error::ScenarioError;
use crate::handler::{Behaviour, Reply, ScenarioHandler, ServerScenario};
use crate::params::{conns, payload, rps, Check, Param, Params, Vary};
use crate::scenario::{HeldField, Info, Role, Scenario, Serves, Variant};
use crate::shape::LoadShape;
use crate::side::Side;

pub(crate) const NAME: &str = "sonic-string-hold";

pub(crate) const INFO: Info = Info {
    name: NAME,
    side: Side::Server,
    control: false,
    expected: "zero-copy-string-held",
    holder: "ScenarioHandler::remember",
    guide: "Caching Objects by Parsing String Fields in Request/Response Using Sonic\n\
        Typical profile:\n\
        Typical triggering scenarios:\n\
        - There is a large\n\
        string\n\
        object in theRequest/Response\n\
        - Using Sonic to unmarshal this\n\
        string\n\
        object.\n\
        Solution: Enable the CopyString\n\
        option in Sonic.\n\
        Reason for the issue:\n\
        - For performance reasons, Sonic reuses the underlying memory of the input\n\
        string\n\
        for unmarshaledstring\n\
        objects. If the service is used to parse large JSON and cache the parsed objects or if there are \
        multiple goroutines holding onto the parsed objects, it may result in the original inputstring\n\
        object’s memory not being released for a long time. Please refer to Sonic for more details. - \
        Memory allocation in the\n\
        Request\n\
        is done in the netpoll function stack, so it may appear that the objects created by netpoll are \
        leaking memory. In reality, it is unrelated to netpoll.\n\
        However, the root cause is still that there is a place in the business code that persistently holds \
        the object after Sonic unmarshalling. This only amplifies the impact of the leak, and the solution \
        mentioned above only reduces the impact of the leak.\n\
        If there is still a memory leak after applying this solution, it is necessary to carefully review \
        the business code to identify where the objects are being persistently held.",
    reproduces: "The guide's \"Caching Objects by Parsing String Fields in Request/Response Using Sonic\": every \
        call carries a large JSON document in the string field 3 (`json`, `json_size` bytes). The handler parses \
        it with sonic-rs without copying: a `faststr::FastStr` over the field's own memory, then \
        `sonic_rs::get_from_faststr(&doc, [\"user\"])`, whose lazy value for an unescaped string is a slice of the \
        input. It caches that small parsed value per request, and so keeps each whole document alive: memory grows \
        by about `json_size` per request. The root cause is the business cache that holds parsed values; \
        zero-copy parsing only amplifies it.",
    profile_shows: "The heap profile blames the framework's read path, not sonic-rs: inuse_space grows under \
        `rpc::codec::echo::Request::read_field_3` (<- `Request::decode` <- `decode_echo_args`; the top flat row), where the field was copied out of the read buffer (Kitex's copy decoding, the \
        guide's `ReadField3`); map field tag 3 of `Request` in rpc/idl/echo.thrift (json) to the code that parses \
        it. The pool profile stays flat.",
    fix: "Enable Sonic's `CopyString` option: decoded strings get their own memory, and the document is freed \
        after the call. sonic-rs has no such switch; the fix variant parses the cached value again from a borrowed \
        `&str` (`sonic_rs::from_str::<OwnedLazyValue>`), which copies it. Then review the business code that keeps \
        parsed objects, as the guide says: a map keyed by call ids that never repeat would still grow by one small \
        entry per call, so the fix keeps its copies in a bounded cache (the last 1024).",
    params: &[
        payload("256"),
        rps("300").varying(Vary::Range { lo: 150, hi: 300 }),
        conns("4").varying(Vary::Range { lo: 2, hi: 8 }),
        Param {
            name: "json_size",
            default: "32KiB",
            help: "bytes of the JSON document in field 3",
            check: Check::SIZE,
            vary: Vary::Choices(&["16KiB", "32KiB", "64KiB"]),
        },
        Param {
            name: "user_len",
            default: "48",
            help: "bytes of the cached `user` string (at least 30: FastStr copies shorter strings inline)",
            check: Check::Size {
                min: 30,
                max: 4096,
                why: "must be between 30 and 4096: FastStr copies shorter strings inline, which shares nothing",
            },
            vary: Vary::Fixed,
        },
    ],
    scenario: &SonicStringHold,
};

/// The handler caches a value parsed zero-copy from field 3 (the fix: a
/// copy).
#[derive(Debug)]
pub(crate) struct SonicStringHold;

impl Scenario for SonicStringHold {
    fn check(&self, p: &Params) -> Result<(), ScenarioError> {
        let user_len = p.usize("user_len")?;
        if p.usize("json_size")? < user_len + 128 {
            return Err(p.bad("json_size", format!("must be at least user_len + 128 ({})", user_len + 128)));
        }
        Ok(())
    }

    fn role(&self) -> Role<'_> {
        Role::Server(self)
    }

    fn held_field(&self) -> Option<HeldField> {
        Some(HeldField { message: "Request", tag: 3, name: "json" })
    }

    /// A held JSON string keeps the whole document it was parsed from
    /// (`json_size`), one per call.
    fn trickle(&self, p: &Params) -> Option<f64> {
        Some(p.f64("rps").ok()? * p.usize("json_size").ok()? as f64)
    }
}

impl Serves for SonicStringHold {
    fn server(&self, v: Variant, p: &Params, pool: Pool) -> Result<ServerScenario, ScenarioError> {
        // Kitex copies string fields out of the read buffer: field 3 is a
        // fresh allocation made in Request::read_field_3.
        let config = ServerConfig { pool, decode: DecodeMode::Copy, ..ServerConfig::default() };
        let handler = ScenarioHandler::new(Reply::ECHO, Behaviour::sonic_hold(p.gate(v == Variant::Leak), false));
        Ok(ServerScenario { config, handler })
    }

    fn load(&self, _v: Variant, p: &Params) -> Result<LoadShape, ScenarioError> {
        let json = document(p.usize("json_size")?, p.usize("user_len")?);
        Ok(LoadShape { json: Some(json), ..p.common().steady() })
    }

    fn mixable(&self) -> bool {
        true
    }

    /// The handler also parses field 3 and caches the `user` value
    /// (zero-copy for the calls the gate lets leak); calls without field 3
    /// (an idle connection's first call) are let through.
    fn mix_server(&self, v: Variant, p: &Params, s: &mut ServerScenario) -> Result<(), ScenarioError> {
        s.parts().behaviours.push(Behaviour::sonic_hold(p.gate(v == Variant::Leak), true));
        Ok(())
    }

    /// Every steady call carries the document in field 3.
    fn mix_load(&self, _v: Variant, p: &Params, shape: &mut LoadShape) -> Result<(), ScenarioError> {
        shape.json = Some(document(p.usize("json_size")?, p.usize("user_len")?));
        Ok(())
    }
}

/// The JSON document of field 3: a few small members, the `user` string the
/// handler caches (`user_len` bytes), and one large unescaped string that
/// brings it to `size` bytes.
pub(crate) fn document(size: usize, user_len: usize) -> Bytes {
    let mut user = String::from("user-000042-");
    while user.len() < user_len {
        user.push((b'a' + (user.len() % 26) as u8) as char);
    }
    user.truncate(user_len);
    let head = format!(
        "{{\"id\":42,\"user\":\"{user}\",\"level\":3,\"tags\":[\"alpha\",\"beta\"],\"active\":true,\"profile\":\""
    );
    let tail = "\"}";
    let filler = size.saturating_sub(head.len() + tail.len());
    let mut doc = Vec::with_capacity(head.len() + filler + tail.len());
    doc.extend_from_slice(head.as_bytes());
    doc.extend((0..filler).map(|i| b"abcdefghijklmnopqrstuvwxyz0123456789 "[i % 37]));
    doc.extend_from_slice(tail.as_bytes());
    Bytes::from(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_has_the_asked_size_and_parses() {
        let doc = document(32 << 10, 48);
        assert_eq!(doc.len(), 32 << 10);
        let user = sonic_rs::get(&doc, ["user"]).unwrap();
        assert_eq!(user.as_raw_str().len(), 50);
        let level = sonic_rs::get(&doc, ["level"]).unwrap();
        assert_eq!(level.as_raw_str(), "3");
    }
}
