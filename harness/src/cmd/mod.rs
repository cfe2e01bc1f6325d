//! One module per subcommand: its flags (a clap `Args` type) and its entry
//! point, named after the command. `cli` dispatches to them; nothing
//! outside `cli` and `cmd` calls into them.

pub mod args;
pub mod compare;
pub mod diagnose;
pub mod explain;
pub mod export;
pub mod list;
pub mod load;
pub mod matrix;
pub mod peer;
pub mod quiz;
pub mod report;
pub mod run;
pub mod serve;
pub mod sweep;
