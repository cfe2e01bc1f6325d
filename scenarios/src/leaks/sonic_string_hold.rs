//! `sonic-string-hold`: values parsed zero-copy from a large JSON string
//! field are cached.

use bytes::Bytes;
use rpc::codec::DecodeMode;
use rpc::{Pool, ServerConfig};

use crate::catalogue::{conns, payload, rps, Info, Param, Side, Variant};
use crate::error::ScenarioError;
use crate::handler::{Behaviour, Reply, ScenarioHandler, ServerScenario};
use crate::params::Params;
use crate::registry::ServerSpec;
use crate::shape::{self, LoadShape};

pub(crate) const NAME: &str = "sonic-string-hold";

pub(crate) const INFO: Info = Info {
    name: NAME,
    side: Side::Server,
    control: false,
    expected: "zero-copy-string-held",
    holder: "ScenarioHandler::remember",
    reproduces: "The guide's \"Caching Objects by Parsing String Fields in Request/Response Using Sonic\": every \
        call carries a large JSON document in the string field 3 (`json`, `json_size` bytes). The handler parses \
        it with sonic-rs without copying: a `faststr::FastStr` over the field's own memory, then \
        `sonic_rs::get_from_faststr(&doc, [\"user\"])`, whose lazy value for an unescaped string is a slice of the \
        input. It caches that small parsed value per request, and so keeps each whole document alive: memory grows \
        by about `json_size` per request. The root cause is the business cache that holds parsed values; \
        zero-copy parsing only amplifies it.",
    profile_shows: "The heap profile blames the framework's read path, not sonic-rs: inuse_space grows under \
        `rpc::codec::echo::Request::read_field_3` (<- `Request::decode` <- `decode_echo_args`, above \
        `Reader::read_binary_copy`), where the field was copied out of the read buffer (Kitex's copy decoding, the \
        guide's `ReadField3`); map field tag 3 of `Request` in rpc/idl/echo.thrift (json) to the code that parses \
        it. The pool profile stays flat.",
    fix: "Enable Sonic's `CopyString` option: decoded strings get their own memory, and the document is freed \
        after the call. sonic-rs has no such switch; the fix variant parses the cached value again from a borrowed \
        `&str` (`sonic_rs::from_str::<OwnedLazyValue>`), which copies it. Then review the business code that keeps \
        parsed objects: the cache still grows by one small entry per request.",
    params: &[
        payload("256"),
        rps("300"),
        conns("4"),
        Param { name: "json_size", default: "32KiB", help: "bytes of the JSON document in field 3" },
        Param {
            name: "user_len",
            default: "48",
            help: "bytes of the cached `user` string (at least 30: FastStr copies shorter strings inline)",
        },
    ],
};

pub(crate) struct Settings {
    payload: usize,
    rps: u64,
    conns: usize,
    json_size: usize,
    user_len: usize,
}

pub(crate) fn settings(p: &Params) -> Result<Settings, ScenarioError> {
    let s = Settings {
        payload: p.usize("payload")?,
        rps: p.u64("rps")?,
        conns: p.usize("conns")?,
        json_size: p.usize("json_size")?,
        user_len: p.usize("user_len")?,
    };
    if s.user_len < 30 || s.user_len > 4096 {
        return Err(p.bad(
            "user_len",
            "must be between 30 and 4096: FastStr copies shorter strings inline, which shares nothing",
        ));
    }
    if s.json_size < s.user_len + 128 {
        return Err(p.bad("json_size", format!("must be at least user_len + 128 ({})", s.user_len + 128)));
    }
    Ok(s)
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

pub(crate) struct Spec;

impl ServerSpec for Spec {
    fn check(&self, p: &Params) -> Result<(), ScenarioError> {
        settings(p).map(drop)
    }

    fn server(&self, v: Variant, p: &Params, pool: Pool) -> Result<ServerScenario, ScenarioError> {
        settings(p)?;
        // Kitex copies string fields out of the read buffer: field 3 is a
        // fresh allocation made in Request::read_field_3.
        let config = ServerConfig { pool, decode: DecodeMode::Copy, ..ServerConfig::default() };
        let handler = ScenarioHandler::new(Reply::ECHO, Behaviour::sonic_hold(v == Variant::Fix));
        Ok(ServerScenario { config, handler })
    }

    fn load(&self, _v: Variant, p: &Params) -> Result<LoadShape, ScenarioError> {
        let s = settings(p)?;
        Ok(LoadShape { json: Some(document(s.json_size, s.user_len)), ..shape::steady(s.conns, s.rps, s.payload) })
    }
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
