//! The calling loop of the client scenarios, and the business cache the
//! caller keeps.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use rpc::lbcache::{Instance, StaticResolver};
use rpc::Binary;
use rpc::{Client, ClientConfig, ClientError, Pool};
use tokio::sync::watch;
use tokio::task::JoinSet;

use std::collections::HashMap;

use crate::error::ScenarioError;
use crate::kept::{Lru, COPIES_KEPT};

/// One call, boxed so that callers of different scenarios share the loop.
pub(crate) type CallFuture = Pin<Box<dyn Future<Output = Result<(), ClientError>> + Send>>;

/// Ids unique in the process, so that the caches of different runs never
/// overwrite each other's entries.
static NEXT_ID: AtomicI64 = AtomicI64::new(1);

pub(crate) fn next_id() -> i64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// The caller's business cache, `cache.Store(resp.Id, resp.Msg[:1])`: a
/// package-level map, as in the guide's Go code, so it outlives the calls.
pub(crate) static RESPONSE_CACHE: LazyLock<Mutex<HashMap<i64, Binary>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// Where the calls that copy keep their copies: the last [`COPIES_KEPT`].
pub(crate) static RESPONSE_COPIES: LazyLock<Mutex<Lru<Binary>>> = LazyLock::new(|| Mutex::new(Lru::new(COPIES_KEPT)));

/// Entries in the client scenarios' response cache (process-wide).
pub fn client_cached_entries() -> usize {
    RESPONSE_CACHE.lock().unwrap_or_else(|e| e.into_inner()).len()
        + RESPONSE_COPIES.lock().unwrap_or_else(|e| e.into_inner()).len()
}

/// What a client scenario's callers do: `call`, again and again; `client`,
/// if any, is closed when the calls stop.
pub(crate) struct Caller {
    /// One call of the scenario's business code.
    pub call: Arc<dyn Fn(i64) -> CallFuture + Send + Sync>,
    /// The client shared by every call, closed at the end.
    pub client: Option<Client>,
}

impl Caller {
    /// Runs the calls ([`drive`]) until `stop`, then closes the client.
    pub(crate) async fn run(
        self,
        scenario: &'static str,
        conns: usize,
        rps: u64,
        calls: Arc<AtomicU64>,
        stop: impl Future<Output = ()>,
    ) -> Result<(), ScenarioError> {
        let result = drive(scenario, conns, rps, calls, stop, self.call).await;
        if let Some(client) = self.client {
            client.close();
        }
        result
    }
}

/// Runs `conns` callers, `rps` calls per second in all (each caller one call
/// at a time; 0: back to back), until `stop`; counts successes in `calls`.
/// In-flight calls get a short grace after `stop`, then are dropped.
pub(crate) async fn drive(
    scenario: &'static str,
    conns: usize,
    rps: u64,
    calls: Arc<AtomicU64>,
    stop: impl Future<Output = ()>,
    call: Arc<dyn Fn(i64) -> CallFuture + Send + Sync>,
) -> Result<(), ScenarioError> {
    let conns = conns.max(1);
    let period = (rps > 0).then(|| Duration::from_secs_f64(conns as f64 / rps as f64));
    let (stop_tx, stop_rx) = watch::channel(false);
    let failures = Arc::new(Failures::default());
    let mut callers = JoinSet::new();
    for i in 0..conns {
        let (call, calls, failures, mut stop_rx) = (call.clone(), calls.clone(), failures.clone(), stop_rx.clone());
        callers.spawn(async move {
            let start =
                tokio::time::Instant::now() + period.map_or(Duration::ZERO, |p| p.mul_f64(i as f64 / conns as f64));
            let mut ticks = period.map(|p| {
                let mut t = tokio::time::interval_at(start, p);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });
            loop {
                if let Some(t) = ticks.as_mut() {
                    tokio::select! {
                        _ = t.tick() => {}
                        _ = stop_rx.changed() => return,
                    }
                }
                if *stop_rx.borrow() {
                    return;
                }
                match call(next_id()).await {
                    Ok(()) => {
                        calls.fetch_add(1, Ordering::Relaxed);
                        failures.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        failures.note(scenario, e);
                        // Do not spin on a peer that is down.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        });
    }
    stop.await;
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(Duration::from_secs(2), async { while callers.join_next().await.is_some() {} });
    if drained.await.is_err() {
        callers.shutdown().await;
    }
    let first = failures.first.lock().unwrap_or_else(|e| e.into_inner()).take();
    match first {
        Some(source) if failures.ok.load(Ordering::Relaxed) == 0 => Err(ScenarioError::Client { scenario, source }),
        _ => Ok(()),
    }
}

#[derive(Default)]
struct Failures {
    ok: AtomicU64,
    errors: AtomicU64,
    first: Mutex<Option<ClientError>>,
}

impl Failures {
    fn note(&self, scenario: &'static str, e: ClientError) {
        let n = self.errors.fetch_add(1, Ordering::Relaxed);
        if n.is_multiple_of(1000) {
            tracing::warn!(scenario, failed = n + 1, error = %e, "call to the peer failed");
        }
        let mut first = self.first.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(e);
        }
    }
}

/// The target name a client scenario's resolver knows its peer by.
pub(crate) const TARGET: &str = "echo";

/// The client settings of a client scenario calling `instances` (its peer
/// among them) with `conns` callers. The resolver has a name of its own per
/// scenario and peer: balancer factories are process-global and keyed by it.
pub(crate) fn client_config(
    scenario: &str,
    peer: std::net::SocketAddr,
    instances: Vec<Instance>,
    pool: Pool,
    conns: usize,
) -> ClientConfig {
    let resolver = StaticResolver::new(format!("leaklab-{scenario}-{peer}")).with_target(TARGET, instances);
    let mut config = ClientConfig::new(TARGET, Arc::new(resolver));
    config.pool = pool;
    config.max_idle_per_addr = conns.max(1);
    config
}
