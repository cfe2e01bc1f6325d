//! The crate's one error type.

use crate::side::Side;

/// Why a scenario cannot be found, configured or run.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// No scenario has this name.
    #[error("unknown scenario {name:?}; the scenarios are: {known}")]
    UnknownScenario {
        /// The name asked for.
        name: String,
        /// Every known name, comma-separated.
        known: String,
    },
    /// Not `leak` or `fix`.
    #[error("unknown variant {0:?}: expected leak or fix")]
    UnknownVariant(String),
    /// A `--set` key the scenario does not have.
    #[error("scenario {scenario} has no parameter {key:?}; its parameters are: {valid}")]
    UnknownParam {
        /// The scenario.
        scenario: &'static str,
        /// The key given.
        key: String,
        /// Every parameter it has, comma-separated.
        valid: String,
    },
    /// A value that does not parse, or does not make sense with the others.
    #[error("{scenario}: bad value {value:?} for {key}: {reason}")]
    BadValue {
        /// The scenario.
        scenario: &'static str,
        /// The parameter.
        key: &'static str,
        /// The value given (or defaulted).
        value: String,
        /// What is wrong, and what would be right.
        reason: String,
    },
    /// A server function called on a client scenario, or the reverse.
    #[error("{scenario} is a {side} scenario: {what} is not for it")]
    WrongSide {
        /// The scenario.
        scenario: &'static str,
        /// Its side.
        side: Side,
        /// The function called.
        what: &'static str,
    },
    /// A client scenario's calls all failed.
    #[error("{scenario}: no call to the peer succeeded: {source}")]
    Client {
        /// The scenario.
        scenario: &'static str,
        /// The first failure.
        #[source]
        source: rpc::ClientError,
    },
}
