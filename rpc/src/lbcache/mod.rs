//! The balancer cache: Kitex's `pkg/loadbalance/lbcache`, with the hooks
//! that make duplicate clients leak.
//!
//! A [`BalancerFactory`] combines a [`Resolver`] (service discovery) with a
//! [`Loadbalancer`] (the picking policy) and caches one [`Balancer`] per
//! target: the resolved instance list and the picker's state. Factories are
//! **process-global**, kept in a registry keyed by resolver name, balancer
//! name, refresh interval and expire interval ([`FactoryKey`]), so every
//! client with the same settings shares one factory. Each factory runs one
//! ticker task that re-resolves its cached targets every `refresh_interval`
//! and evicts targets that nobody picked from for an `expire_interval`.
//!
//! Every client registers its hooks on the shared factory
//! ([`BalancerFactory::register_hooks`]) and removes them when it is closed
//! ([`HookHandle::remove`]). On every refresh of a target, every registered
//! hook formats a copy of the new instance list into its client's own
//! [`EventQueue`] (a ring of [`EVENT_QUEUE_CAPACITY`] events).
//!
//! ```
//! use std::sync::Arc;
//! use rpc::lbcache::{BalancerFactory, EventQueue, Instance, Options, StaticResolver, WeightedRoundRobin};
//!
//! let resolver = Arc::new(
//!     StaticResolver::new("doc-example")
//!         .with_target("echo", vec![Instance::new("127.0.0.1:8888".parse().unwrap(), 10)]),
//! );
//! let factory = BalancerFactory::get_or_create(resolver, Arc::new(WeightedRoundRobin), Options::default());
//!
//! // What a client does when it is created ...
//! let queue = Arc::new(EventQueue::new());
//! let hooks = factory.register_hooks(queue.clone());
//! // ... on each call ...
//! let balancer = factory.get("echo").unwrap();
//! assert_eq!(balancer.pick().unwrap().addr.port(), 8888);
//! // ... what the shared ticker does every 5 s ...
//! factory.refresh_now();
//! assert_eq!(queue.len(), 1);
//! assert!(queue.dump()[0].detail.starts_with("rebalance: doc-example:echo"));
//! // ... and what `Client::close()` does.
//! hooks.remove();
//! factory.refresh_now();
//! assert_eq!(queue.len(), 1);
//! ```
//!
//! # The duplicate-clients leak
//!
//! The guide's "High Memory Usage of lbcache": a client is meant to be
//! created once and reused. A program that creates a new client per call
//! (and never closes it) registers one more hook on the shared factory each
//! time. A [`HookHandle`] dropped without [`HookHandle::remove`] leaves its
//! hook registered **forever**: the factory lives in the global registry, the
//! hook keeps the client's [`EventQueue`] alive, and each refresh formats one
//! more copy of the instance list per leaked client.
//!
//! ```text
//!   registry ──► BalancerFactory{resolver|balancer|{5s 15s}}
//!                  ├─ balancers: "echo" ─► [instances, picker state]
//!                  └─ hooks: #0 ─► EventQueue (client 0, up to 200 events)
//!                            #1 ─► EventQueue (client 1, up to 200 events)
//!                            ...   one per client ever created and not closed
//! ```
//!
//! A heap profile of the leak reads, from the root:
//! `lbcache::factory::run_ticker` → [`BalancerFactory::refresh`] →
//! `BalancerFactory::rebalance` → [`EventQueue::on_rebalance`] →
//! [`format_instances`]. [`registry_stats`] shows the hooks piling up.
//!
//! A factory whose balancer is not [`Loadbalancer::shareable`] (a custom
//! one) is not put in the registry: each client gets its own factory, whose
//! ticker task holds it and never stops, as Kitex's `watcher` goroutine
//! never does. Creating such clients repeatedly leaks factories and tasks.
//!
//! # Differences from Kitex
//!
//! - Kitex calls the rebalance hooks only when the resolver reports a
//!   change; here every refresh does, so that the leak shows at a steady
//!   rate with a static resolver.
//! - Kitex has one shared refresh ticker per refresh interval and a
//!   separate expiry watcher per factory; here one task per factory does
//!   both. Expiry is Kitex's mark-and-sweep: a sweep marks each balancer,
//!   [`Balancer::pick`] (or [`BalancerFactory::get`]) clears the mark, and a
//!   balancer still marked at the next sweep is evicted.
//!
//! # Modules
//!
//! - `resolver`: [`Instance`], [`Resolver`], [`StaticResolver`], [`LbError`].
//! - `balancer`: the [`Loadbalancer`] policies and the per-target
//!   [`Balancer`].
//! - `hooks`: a client's [`EventQueue`], [`format_instances`], and the
//!   factory's hook table.
//! - `options`: [`Options`] and [`FactoryKey`].
//! - `factory`: [`BalancerFactory`], its ticker task, [`HookHandle`].
//! - `registry`: the process-global `REGISTRY` of shared factories,
//!   [`BalancerFactory::get_or_create`], [`registry_stats`],
//!   [`registry_dump`].
//! - `counters`: the process-wide counters behind [`registry_stats`].

mod balancer;
mod counters;
mod factory;
mod hooks;
mod options;
mod registry;
mod resolver;
mod sync;

#[cfg(test)]
mod fixtures;

pub use balancer::{Balancer, Loadbalancer, WeightedRandom, WeightedRoundRobin};
pub use factory::{BalancerFactory, FactoryStats, HookHandle};
pub use hooks::{format_instances, Event, EventQueue, EVENT_QUEUE_CAPACITY};
pub use options::{FactoryKey, Options, DEFAULT_EXPIRE_INTERVAL, DEFAULT_REFRESH_INTERVAL};
pub use registry::{registry_dump, registry_stats, LbStats};
pub use resolver::{Instance, LbError, Resolver, StaticResolver};
