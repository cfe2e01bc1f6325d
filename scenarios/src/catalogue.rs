//! The one list of scenarios.

use crate::controls::{bounded_cache, burst, steady, warmup};
use crate::error::ScenarioError;
use crate::leaks::{
    conn_surge_request, conn_surge_response_copy, conn_surge_response_nocopy, duplicate_clients, idle_connections,
    oversized_request, request_field_hold, response_field_hold, sonic_string_hold,
};
use crate::scenario::Info;

/// Every scenario, leaks first, then the controls: adding one is a line here.
static CATALOGUE: [Info; 13] = [
    request_field_hold::INFO,
    response_field_hold::INFO,
    conn_surge_request::INFO,
    conn_surge_response_nocopy::INFO,
    conn_surge_response_copy::INFO,
    idle_connections::INFO,
    oversized_request::INFO,
    duplicate_clients::INFO,
    sonic_string_hold::INFO,
    steady::INFO,
    bounded_cache::INFO,
    warmup::INFO,
    burst::INFO,
];

/// Every scenario, leaks first, then the controls.
pub fn catalogue() -> &'static [Info] {
    &CATALOGUE
}

/// The scenario called `name`; the error lists the known names.
pub fn find(name: &str) -> Result<&'static Info, ScenarioError> {
    CATALOGUE.iter().find(|i| i.name == name).ok_or_else(|| ScenarioError::UnknownScenario {
        name: name.to_owned(),
        known: CATALOGUE.iter().map(|i| i.name).collect::<Vec<_>>().join(", "),
    })
}
