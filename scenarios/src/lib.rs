//! The scenarios of leaklab: one module per memory leak that the Memory Leak
//! Self-Check Guide documents for pooled-buffer RPC frameworks, and per
//! healthy control, each with a `leak` and a `fix` variant.
//!
//! A scenario is data and code, never a command line, a file or a profile:
//!
//! - its [`Info`] in the [`catalogue`]: name, [`Side`], the verdict kind a
//!   diagnosis must give ([`Info::expected_kind`]), what it reproduces, what
//!   the heap and pool profiles show, the fix, and its [`Param`]s, each
//!   declared with its default, its [`Check`], its help and the range
//!   exercises draw it from ([`Vary`]);
//! - [`Params`]: `--set key=value` pairs checked against those parameters,
//!   then by the scenario as a whole; `payload`, `rps` and `conns`, which
//!   every scenario has, are read once;
//! - a **server** scenario gives the process under test its
//!   [`ServerScenario`] ([`server`]: an `rpc::ServerConfig` and a
//!   [`ScenarioHandler`]) and its peer a [`LoadShape`] ([`load_shape`]: steady
//!   calls, [`Surge`]s, [`Idle`] connections, [`Oversized`] calls, a
//!   [`Burst`]);
//! - a **client** scenario is a caller of a plain Echo server
//!   ([`run_client`]);
//! - the [`modifiers`] every scenario accepts besides its own parameters
//!   (`onset`, `leak_rate`, `background`, `mix`), read with
//!   [`Params::modifiers`]; [`mechanisms`] lists the leak mechanisms a run
//!   contains, for labels;
//! - an [`Exercise`] is a scenario, variant and parameters drawn at random
//!   ([`draw_exercise`], [`draw_params`]) from a seeded generator.
//!
//! The `leak` variant reproduces the mechanism of the Go original (Kitex and
//! Netpoll); the `fix` variant applies the guide's remedy, nothing else.
//! Controls (`steady`, `bounded-cache`, `warmup`, `burst`) have one
//! behaviour and accept either variant.
//!
//! # Adding a scenario
//!
//! One new file and one line. In `leaks/NAME.rs` (or `controls/NAME.rs`,
//! declared in its `mod.rs`): a unit type implementing the crate's
//! `Scenario` trait (its checks across parameters, and its role: `Serves`
//! for a server with its peer's load, `Calls` for a client), and a
//! `const INFO: Info` with its texts, its parameters (`payload`, `rps`,
//! `conns`, then its own as `Param`s with a `Check` and the range an
//! exercise may draw, a `Vary`) and `scenario: &TheType`. Then add `NAME::INFO` to the list in `registry.rs`. Nothing
//! dispatches on the name: an `Info` carries its scenario.
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
mod draw;
mod error;
mod handler;
mod kept;
mod leaks;
mod modifiers;
mod noise;
mod params;
mod registry;
mod scenario;
mod shape;
mod side;

pub use caller::client_cached_entries;
pub use catalogue::{catalogue, find};
pub use draw::{draw_exercise, draw_params, Exercise, Level};
pub use error::ScenarioError;
pub use handler::{ScenarioHandler, ServerScenario};
pub use modifiers::{calls_a_peer, mechanisms, mix_candidates, mixed_client, Mechanism, Modifiers};
pub use noise::{
    Background, BURST_CONNS, BURST_EVERY, BURST_LENGTH, BURST_RPS, CACHE_CAPACITY, CACHE_ENTRY, CACHE_PER_SECOND,
    CHURN_BYTES,
};
pub use params::{modifiers, Check, Param, Params, Vary};
pub use registry::{load_shape, pool_config, run_client, server};
pub use scenario::{HeldField, Info, Variant, VERDICT_KINDS};
pub use shape::{Burst, Idle, LoadShape, Oversized, Surge, OVERSIZED_REPLY};
pub use side::Side;
