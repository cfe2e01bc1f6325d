//! Load on an Echo server: a checked connection ([`conn`]), the paced
//! sender every load uses ([`paced`]), the open-loop generator of
//! `leaklab load` ([`open_loop`]) and the scenario load shapes of
//! `leaklab peer` ([`shape`]).

pub mod conn;
pub mod open_loop;
pub mod paced;
pub mod shape;
