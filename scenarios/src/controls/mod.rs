//! The healthy controls: memory that rises and stays flat, or returns, and
//! must be diagnosed `none`.

pub(crate) mod bounded_cache;
pub(crate) mod burst;
pub(crate) mod steady;
pub(crate) mod warmup;
