//! The integration tests of `diagnosis`: one binary, one module per
//! subject; `support` builds profiles and run directories for any test.

mod engine;
mod fuzz;
mod input;
mod profile;
mod support;
