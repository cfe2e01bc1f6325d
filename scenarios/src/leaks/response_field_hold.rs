//! `response-field-hold`: the caller keeps `resp.msg[..1]` per call.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use rpc::codec::Request;
use rpc::lbcache::Instance;
use rpc::Binary;
use rpc::{Client, Pool};

use crate::caller::{self, CallFuture, Caller, RESPONSE_CACHE, RESPONSE_COPIES};
use crate::error::ScenarioError;
use crate::params::{conns, payload, rps, Check, Param, Params, Vary};
use crate::scenario::{Calls, HeldField, Info, Role, Scenario, Variant};
use crate::side::Side;

pub(crate) const NAME: &str = "response-field-hold";

pub(crate) const INFO: Info = Info {
    name: NAME,
    side: Side::Client,
    control: false,
    expected: "response-field-held",
    holder: "RESPONSE_CACHE",
    guide: "Persistent Holding of a Field in Response\n\
        Typical code: continuously holding a reference to a field in response\n\
        , even if it’s just one byte.\n\
        resp, err := cli.Echo(context.Background(), req)\n\
        if err != nil {\n\
        return\n\
        }\n\
        cache.Store(resp.Id, resp.Msg[:1])",
    reproduces: "The guide's \"Persistent Holding of a Field in Response\": the caller runs \
        `resp, err := cli.Echo(ctx, req); cache.Store(resp.Id, resp.Msg[:1])`, here \
        `cache.insert(resp.id, resp.msg.slice(..1))` into a process-wide map, with one shared client calling a plain \
        Echo server. Even one byte of the response keeps the whole msg field alive, so the caller's memory grows by \
        about `payload` bytes per call and stays after the calls stop.",
    profile_shows: "With decode=copy (the default, as Kitex's) each response msg is copied out of the read buffer \
        by `rpc::codec::echo::Response::read_field_2` (under `Response::decode` <- `decode_echo_result` <- \
        `rpc::Client::call`): inuse_space grows under Response::read_field_2, field tag 2 of `Response` in \
        rpc/idl/echo.thrift (msg). With decode=nocopy the field slices the client connection's pooled input node \
        instead: the heap profile cannot show it, the pool profile shows nodes held by `Response.msg (field 2, binary)`.",
    fix: "Copy what you keep out of a response. The fix variant stores `Bytes::copy_from_slice(&resp.msg[..1])`, \
        so each response is freed when the call returns, into a bounded cache (the last 1024): a map keyed by \
        call ids that never repeat would still grow by one tiny entry per call.",
    params: &[
        Param {
            check: Check::Size {
                min: 1,
                max: usize::MAX,
                why: "the caller keeps msg[..1]: the msg needs at least one byte",
            },
            vary: Vary::Choices(&["4KiB", "8KiB", "16KiB", "32KiB", "64KiB"]),
            ..payload("16KiB")
        },
        rps("400").varying(Vary::Range { lo: 200, hi: 400 }),
        conns("4").varying(Vary::Range { lo: 2, hi: 8 }),
        Param {
            name: "decode",
            default: "copy",
            help: "copy: response fields are copied out of the read buffer (the profile names \
                   Response::read_field_2); nocopy: they slice the pooled read buffer",
            check: Check::DECODE,
            vary: Vary::Choices(&["copy", "nocopy"]),
        },
    ],
    scenario: &ResponseFieldHold,
};

/// One shared client; the caller caches a slice of each response's msg
/// (the fix: a copy).
#[derive(Debug)]
pub(crate) struct ResponseFieldHold;

impl Scenario for ResponseFieldHold {
    fn role(&self) -> Role<'_> {
        Role::Client(self)
    }

    fn held_field(&self) -> Option<HeldField> {
        Some(HeldField { message: "Response", tag: 2, name: "msg" })
    }

    fn trickle(&self, p: &Params) -> Option<f64> {
        crate::scenario::held_field_trickle(p)
    }
}

impl Calls for ResponseFieldHold {
    fn caller(&self, v: Variant, p: &Params, peer: SocketAddr, pool: Pool) -> Result<Caller, ScenarioError> {
        let common = p.common();
        let mut config = caller::client_config(NAME, peer, vec![Instance::new(peer, 10)], pool, common.conns);
        config.decode = p.decode()?;
        let client = Client::new(config).map_err(|source| ScenarioError::Client { scenario: NAME, source })?;
        let msg = Binary::from(vec![b'x'; common.payload]);
        let gate = Arc::new(p.gate(v == Variant::Leak));
        let c = client.clone();
        let call = Arc::new(move |id: i64| -> CallFuture {
            let (client, msg, gate) = (c.clone(), msg.clone(), gate.clone());
            Box::pin(async move {
                let resp = client.call(&Request { id, msg, json: None }).await?;
                if !resp.msg.is_empty() {
                    // One call in `leak_rate` from the onset on keeps a
                    // slice; the others (and the fix) keep a copy.
                    if gate.leaks() {
                        RESPONSE_CACHE.lock().unwrap_or_else(|e| e.into_inner()).insert(resp.id, resp.msg.slice(..1));
                    } else {
                        let copy = Bytes::copy_from_slice(&resp.msg[..1]).into();
                        RESPONSE_COPIES.lock().unwrap_or_else(|e| e.into_inner()).insert(resp.id, copy, 1);
                    }
                }
                Ok(())
            })
        });
        Ok(Caller { call, client: Some(client) })
    }
}
