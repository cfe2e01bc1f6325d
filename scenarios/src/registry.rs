//! From a catalogue entry to the code that runs it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use rpc::{Pool, PoolConfig};

use crate::catalogue::{Info, Side, Variant};
use crate::controls::{bounded_cache, burst, steady, warmup};
use crate::error::ScenarioError;
use crate::handler::ServerScenario;
use crate::leaks::{
    conn_surge_request, conn_surge_response_copy, conn_surge_response_nocopy, duplicate_clients, idle_connections,
    oversized_request, request_field_hold, response_field_hold, sonic_string_hold,
};
use crate::params::Params;
use crate::shape::LoadShape;

/// A server scenario's code.
pub(crate) trait ServerSpec: Sync {
    /// Reads and checks every parameter.
    fn check(&self, p: &Params) -> Result<(), ScenarioError>;
    /// The server settings and handler.
    fn server(&self, v: Variant, p: &Params, pool: Pool) -> Result<ServerScenario, ScenarioError>;
    /// The peer's load.
    fn load(&self, v: Variant, p: &Params) -> Result<LoadShape, ScenarioError>;
    /// The pool policy the scenario needs.
    fn pool_config(&self, _v: Variant, _p: &Params) -> Result<PoolConfig, ScenarioError> {
        Ok(PoolConfig::default())
    }
}

enum Kind {
    Server(&'static dyn ServerSpec),
    ResponseFieldHold,
    DuplicateClients,
}

fn kind(info: &Info) -> Result<Kind, ScenarioError> {
    Ok(match info.name {
        request_field_hold::NAME => Kind::Server(&request_field_hold::Spec),
        response_field_hold::NAME => Kind::ResponseFieldHold,
        conn_surge_request::NAME => Kind::Server(&conn_surge_request::Spec),
        conn_surge_response_nocopy::NAME => Kind::Server(&conn_surge_response_nocopy::Spec),
        conn_surge_response_copy::NAME => Kind::Server(&conn_surge_response_copy::Spec),
        idle_connections::NAME => Kind::Server(&idle_connections::Spec),
        oversized_request::NAME => Kind::Server(&oversized_request::Spec),
        duplicate_clients::NAME => Kind::DuplicateClients,
        sonic_string_hold::NAME => Kind::Server(&sonic_string_hold::Spec),
        steady::NAME => Kind::Server(&steady::Spec),
        bounded_cache::NAME => Kind::Server(&bounded_cache::Spec),
        warmup::NAME => Kind::Server(&warmup::Spec),
        burst::NAME => Kind::Server(&burst::Spec),
        other => return Err(crate::catalogue::find(other).expect_err("every catalogue name is dispatched")),
    })
}

fn server_spec(info: &Info, what: &'static str) -> Result<&'static dyn ServerSpec, ScenarioError> {
    match kind(info)? {
        Kind::Server(spec) => Ok(spec),
        _ => Err(ScenarioError::WrongSide { scenario: info.name, side: Side::Client, what }),
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

/// Checks parameters for [`Params::parse`].
pub(crate) fn check(info: &Info, p: &Params) -> Result<(), ScenarioError> {
    match kind(info)? {
        Kind::Server(spec) => spec.check(p),
        Kind::ResponseFieldHold => response_field_hold::settings(p).map(drop),
        Kind::DuplicateClients => duplicate_clients::settings(p).map(drop),
    }
}

/// The server settings and handler of a server scenario, on `pool` (see
/// [`ServerScenario`] for the one exception).
///
/// ```
/// let info = scenarios::find("conn-surge-request").unwrap();
/// let params = scenarios::Params::defaults(info).unwrap();
/// let pool = rpc::Pool::new(rpc::PoolConfig::default());
/// let s = scenarios::server(info, scenarios::Variant::Leak, &params, pool).unwrap();
/// assert_eq!(s.config.barriers.mode(), rpc::BarrierMode::Legacy);
/// ```
pub fn server(info: &Info, variant: Variant, params: &Params, pool: Pool) -> Result<ServerScenario, ScenarioError> {
    server_spec(info, "server()")?.server(variant, params, pool)
}

/// The load the peer of a server scenario sends.
///
/// ```
/// let info = scenarios::find("conn-surge-request").unwrap();
/// let params = scenarios::Params::defaults(info).unwrap();
/// let shape = scenarios::load_shape(info, scenarios::Variant::Leak, &params).unwrap();
/// assert!(shape.surge.is_some());
/// ```
pub fn load_shape(info: &Info, variant: Variant, params: &Params) -> Result<LoadShape, ScenarioError> {
    server_spec(info, "load_shape()")?.load(variant, params)
}

/// The pool policy a scenario wants: `PoolConfig::default()` (Netpoll's
/// generous caching) except where the scenario caps the cache: the fix of
/// `oversized-request`, and the connection-surge scenarios (`pool_cache`).
/// Build the pool given to [`server`] or [`run_client`] with it; [`server`]
/// swaps in a pool of its own when the given one caches more.
pub fn pool_config(info: &Info, variant: Variant, params: &Params) -> Result<PoolConfig, ScenarioError> {
    match kind(info)? {
        Kind::Server(spec) => spec.pool_config(variant, params),
        _ => Ok(PoolConfig::default()),
    }
}

/// Runs a client scenario until `stop` completes: the process under test
/// calls the plain Echo server at `peer`, counting answered calls in
/// `calls`. Fails only when no call at all succeeded.
pub async fn run_client(
    info: &Info,
    variant: Variant,
    params: &Params,
    peer: SocketAddr,
    pool: Pool,
    calls: Arc<AtomicU64>,
    stop: impl Future<Output = ()>,
) -> Result<(), ScenarioError> {
    match kind(info)? {
        Kind::ResponseFieldHold => {
            let s = response_field_hold::settings(params)?;
            response_field_hold::run(&s, variant, peer, pool, calls, stop).await
        }
        Kind::DuplicateClients => {
            let s = duplicate_clients::settings(params)?;
            duplicate_clients::run(&s, variant, peer, pool, calls, stop).await
        }
        Kind::Server(_) => {
            Err(ScenarioError::WrongSide { scenario: info.name, side: Side::Server, what: "run_client()" })
        }
    }
}
