//! Free loopback ports for the processes a test starts.

use std::net::TcpListener;

/// A port that was free a moment ago on 127.0.0.1. The OS hands out ephemeral ports in sequence,
/// so a race with another test is unlikely; a clash shows up as an Envoy bind error in its log.
pub fn free_port() -> std::io::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}
