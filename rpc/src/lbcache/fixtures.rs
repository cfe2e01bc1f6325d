//! Fixtures shared by the balancer cache's unit tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::{Balancer, BalancerFactory, Instance, Loadbalancer, Options, StaticResolver, WeightedRoundRobin};

pub(super) fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

pub(super) fn instances(weights: &[u32]) -> Vec<Instance> {
    weights.iter().enumerate().map(|(i, &w)| Instance::new(addr(9000 + i as u16), w)).collect()
}

pub(super) fn resolver(name: &str, weights: &[u32]) -> Arc<StaticResolver> {
    Arc::new(StaticResolver::new(name).with_target("echo", instances(weights)))
}

pub(super) fn shared(resolver: &Arc<StaticResolver>) -> Arc<BalancerFactory> {
    BalancerFactory::get_or_create(resolver.clone(), Arc::new(WeightedRoundRobin), Options::default())
}

/// A policy that is not shareable, as a user's custom one.
#[derive(Debug)]
pub(super) struct First;
impl Loadbalancer for First {
    fn name(&self) -> &str {
        "first"
    }
    fn pick(&self, balancer: &Balancer) -> Option<Instance> {
        balancer.instances().first().cloned()
    }
}

pub(super) async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
