//! `rondo healthcheck`: a liveness probe for Docker's `HEALTHCHECK` in an image with no shell.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// Whether something accepts TCP connections on `127.0.0.1:port` within `timeout`.
pub fn listener_accepts(port: u16, timeout: Duration) -> Result<(), String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, timeout)
        .map(drop)
        .map_err(|e| format!("nothing accepts connections on {addr}: {e}"))
}
