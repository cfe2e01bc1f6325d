//! Integration tests of the `rpc` crate: one binary, one module per area.
//! (The allocation-count test is a binary of its own: it needs its own
//! global allocator.)

mod adversarial;
mod server;
mod support;
