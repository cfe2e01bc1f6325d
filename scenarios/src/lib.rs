//! The scenarios of leaklab: one module per memory leak that the Memory Leak
//! Self-Check Guide documents for pooled-buffer RPC frameworks, and per
//! healthy control, each with a `leak` and a `fix` variant.
//!
//! A scenario is data and code, never a command line, a file or a profile:
//!
//! - its [`Info`] in the [`catalogue`]: name, [`Side`], the verdict kind a
//!   diagnosis must give ([`Info::expected_kind`]), what it reproduces, what
//!   the heap and pool profiles show, the fix, and its [`Param`]s;
//! - [`Params`]: `--set key=value` pairs checked against those parameters;
//! - a **server** scenario gives the process under test its
//!   [`ServerScenario`] ([`server`]: an `rpc::ServerConfig` and a
//!   [`ScenarioHandler`]) and its peer a [`LoadShape`] ([`load_shape`]: steady
//!   calls, [`Surge`]s, [`Idle`] connections, [`Oversized`] calls, a
//!   [`Burst`]);
//! - a **client** scenario is a caller of a plain Echo server
//!   ([`run_client`]).
//!
//! The `leak` variant reproduces the mechanism of the Go original (Kitex and
//! Netpoll); the `fix` variant applies the guide's remedy, nothing else.
//! Controls (`steady`, `bounded-cache`, `warmup`, `burst`) have one
//! behaviour and accept either variant.
//!
//! ```
//! use scenarios::{catalogue, find, load_shape, server, Params, Side, Variant};
//!
//! assert_eq!(catalogue().len(), 13);
//! let info = find("request-field-hold").unwrap();
//! assert_eq!((info.side, info.expected_kind(Variant::Leak)), (Side::Server, "request-field-held"));
//! assert_eq!(info.expected_kind(Variant::Fix), "none");
//!
//! let params = Params::parse(info, &[("rps".into(), "100".into())]).unwrap();
//! let pool = rpc::Pool::new(rpc::PoolConfig::default());
//! let scenario = server(info, Variant::Leak, &params, pool).unwrap();
//! let shape = load_shape(info, Variant::Leak, &params).unwrap();
//! assert_eq!((shape.rps, shape.payload), (100, 16 << 10));
//! // The harness runs `rpc::Server::new(scenario.config, scenario.handler)`
//! // and loads it with `shape`.
//! # let _ = scenario;
//! ```

mod caller;
mod catalogue;
mod controls;
mod error;
mod handler;
mod leaks;
mod params;
mod registry;
mod shape;

pub use caller::client_cached_entries;
pub use catalogue::{catalogue, find, Info, Param, Side, Variant, VERDICT_KINDS};
pub use error::ScenarioError;
pub use handler::{ScenarioHandler, ServerScenario};
pub use params::Params;
pub use registry::{load_shape, pool_config, run_client, server};
pub use shape::{Burst, Idle, LoadShape, Oversized, Surge, OVERSIZED_REPLY};
