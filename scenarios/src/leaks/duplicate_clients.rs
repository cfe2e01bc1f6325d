//! `duplicate-clients`: a new client per call, never closed.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rpc::codec::Request;
use rpc::lbcache::{Instance, Options};
use rpc::{Binary, Client, Pool};

use crate::caller::{self, CallFuture, Caller};
use crate::error::ScenarioError;
use crate::params::{conns, payload, rps, Check, Param, Params, Vary};
use crate::scenario::{Calls, Info, Role, Scenario, Variant};
use crate::side::Side;

pub(crate) const NAME: &str = "duplicate-clients";

pub(crate) const INFO: Info = Info {
    name: NAME,
    side: Side::Client,
    control: false,
    expected: "duplicate-clients",
    holder: "rpc::lbcache::",
    guide: "High Memory Usage of lbcache\n\
        lbcache is only created once for each client. If there is a large amount of lbcache leakage, it \
        indicates that there is likely a behavior of creating a large number of duplicate clients.",
    reproduces: "The guide's \"High Memory Usage of lbcache\": a client is meant to be created once, but this \
        caller creates a new `rpc::Client` for every call and drops it without `close()`. Balancer factories are \
        process-global and shared by every client with the same resolver, balancer and refresh settings; each new \
        client registers rebalance and delete hooks on the shared factory, which only `close()` removes. On every \
        refresh (`refresh`; Kitex's is 5 s) each registered hook formats a copy of the instance list (`instances` \
        entries, a few KiB) into its client's event queue (up to 200 events): N leaked clients, N copies per \
        refresh, and memory grows faster and faster while the call rate stays flat.",
    profile_shows: "The heap profile grows under the balancer's ticker, not under the calls: \
        `rpc::lbcache::run_ticker` -> `BalancerFactory::refresh` -> `BalancerFactory::rebalance` -> \
        `EventQueue::on_rebalance` -> `rpc::lbcache::format_instances` (the guide's ticker -> refresh -> \
        rebalance -> event handler -> format instance list). `rpc::lbcache::registry_stats()` shows hooks and \
        queued bytes climbing with clients created; `rpc::client_counts()` shows created far above closed.",
    fix: "Create the client once and share it; close clients you no longer need. The fix variant makes one \
        `rpc::Client` for all calls and closes it when the run stops, so one hook is registered, and none after.",
    params: &[
        payload("1KiB").varying(Vary::Choices(&["512", "1KiB", "2KiB"])),
        rps("50").varying(Vary::Range { lo: 30, hi: 80 }),
        conns("2"),
        Param {
            name: "refresh",
            default: "200ms",
            help: "refresh interval of the shared balancer factory",
            check: Check::Duration { min: Duration::from_millis(10), why: "must be at least 10ms" },
            vary: Vary::Fixed,
        },
        Param {
            name: "instances",
            default: "64",
            help: "instances the resolver reports: the peer, then weight-0 standbys that are never called (they \
                   make each formatted copy a few KiB)",
            check: Check::Size { min: 1, max: 60_000, why: "must be between 1 and 60000" },
            vary: Vary::Choices(&["32", "64", "128"]),
        },
    ],
    scenario: &DuplicateClients,
};

/// A new client per call, never closed (the fix: one shared client).
#[derive(Debug)]
pub(crate) struct DuplicateClients;

impl Scenario for DuplicateClients {
    fn role(&self) -> Role<'_> {
        Role::Client(self)
    }
}

/// The peer with weight 10, then standbys with weight 0: smooth weighted
/// round robin never picks them, so every call goes to the peer.
fn instances(peer: SocketAddr, n: usize) -> Vec<Instance> {
    let mut list = vec![Instance::new(peer, 10).with_tag("idc", "local").with_tag("role", "primary")];
    for i in 1..n {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 20_000 + (i % 40_000) as u16));
        list.push(
            Instance::new(addr, 0)
                .with_tag("idc", "standby-region")
                .with_tag("cluster", format!("standby-{i:05}"))
                .with_tag("role", "standby"),
        );
    }
    list
}

impl Calls for DuplicateClients {
    fn caller(&self, v: Variant, p: &Params, peer: SocketAddr, pool: Pool) -> Result<Caller, ScenarioError> {
        let common = p.common();
        let mut config = caller::client_config(NAME, peer, instances(peer, p.usize("instances")?), pool, common.conns);
        config.lb_options = Options { refresh_interval: p.duration("refresh")?, expire_interval: Duration::ZERO };
        let msg = Binary::from(vec![b'x'; common.payload]);
        let gate = p.gate(v == Variant::Leak);
        Ok(match v {
            Variant::Leak if gate.opens_at_once() => {
                let call = Arc::new(move |id: i64| -> CallFuture {
                    let (config, msg) = (config.clone(), msg.clone());
                    Box::pin(async move {
                        // A new client per call: it registers its hooks on the
                        // shared factory, and is dropped without close().
                        let client = Client::new(config)?;
                        client.call(&Request { id, msg, json: None }).await?;
                        Ok(())
                    })
                });
                Caller { call, client: None }
            }
            Variant::Leak => {
                // With onset or leak_rate: the shared client for the calls
                // the gate keeps healthy, a new client (never closed) for
                // one call in `leak_rate` from the onset on.
                let shared =
                    Client::new(config.clone()).map_err(|source| ScenarioError::Client { scenario: NAME, source })?;
                let (c, gate) = (shared.clone(), Arc::new(gate));
                let call = Arc::new(move |id: i64| -> CallFuture {
                    let (shared, config, msg) = (c.clone(), config.clone(), msg.clone());
                    let leaks = gate.leaks();
                    Box::pin(async move {
                        if leaks {
                            let client = Client::new(config)?;
                            client.call(&Request { id, msg, json: None }).await?;
                        } else {
                            shared.call(&Request { id, msg, json: None }).await?;
                        }
                        Ok(())
                    })
                });
                Caller { call, client: Some(shared) }
            }
            Variant::Fix => {
                let client = Client::new(config).map_err(|source| ScenarioError::Client { scenario: NAME, source })?;
                let c = client.clone();
                let call = Arc::new(move |id: i64| -> CallFuture {
                    let (client, msg) = (c.clone(), msg.clone());
                    Box::pin(async move {
                        client.call(&Request { id, msg, json: None }).await?;
                        Ok(())
                    })
                });
                Caller { call, client: Some(client) }
            }
        })
    }
}
