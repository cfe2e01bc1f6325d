//! Integration tests of the scenario catalogue and the run harness.
//!
//! They drive the real `leaklab` binary: `leaklab run` starts the process
//! under test and its peer as child processes on loopback TCP, scrapes
//! profiles and metrics into a run folder, and stops its children. The
//! tests read what the run wrote (heap and pool profiles with
//! `diagnosis::HeapSnapshot`, `metrics.jsonl`) and what stays in `/proc`.
//!
//! `report` makes its run folders itself and runs only `leaklab report`.
//!
//! Runs are made one at a time (see [`support::exclusive`]) so that the
//! memory of one run is not disturbed by another on the same machine.

mod admin;
mod catalogue;
mod children;
mod compare;
mod fix_settles;
mod leak_sites;
mod quiz;
mod report;
mod support;
