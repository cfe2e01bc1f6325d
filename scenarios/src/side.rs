//! Which side of an RPC the process under test is.

use std::fmt;

/// Which side of an RPC the process under test is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The process under test serves; the peer sends the load.
    Server,
    /// The process under test calls a plain Echo server (the peer).
    Client,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Server => "server",
            Side::Client => "client",
        })
    }
}
