//! Free loopback ports for peers that must be told a port up front (they
//! cannot report one the kernel chose). The port is released before the
//! peer binds it, so another process could take it in between; tests
//! accept that small race.

use std::net::{TcpListener, UdpSocket};

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp_port() -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|error| panic!("{error}"));
    socket
        .local_addr()
        .unwrap_or_else(|error| panic!("{error}"))
        .port()
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_tcp_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|error| panic!("{error}"));
    listener
        .local_addr()
        .unwrap_or_else(|error| panic!("{error}"))
        .port()
}
