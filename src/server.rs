//! Starting and stopping a whole server: HTTP signalling, the UDP loop, the TX thread.
//! STUB shape; the lead fills it in.

use crate::config::Config;
use std::net::SocketAddr;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A socket could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The configuration is invalid.
    #[error("config: {0}")]
    Config(String),
}

/// A running server. Its threads and runtime stop on `shutdown` (or drop).
pub struct Server {}

impl Server {
    /// Starts everything and returns once the sockets are bound.
    pub fn start(config: Config) -> Result<Server, StartError> {
        let _ = config;
        unimplemented!()
    }
    /// Where HTTP listens.
    pub fn http_addr(&self) -> SocketAddr {
        unimplemented!()
    }
    /// The UDP port's address.
    pub fn udp_addr(&self) -> SocketAddr {
        unimplemented!()
    }
    /// Live WebRTC sessions (viewers and publishers).
    pub fn live_sessions(&self) -> usize {
        unimplemented!()
    }
    /// Stops accepting, closes sessions, joins the threads.
    pub fn shutdown(self) {}
}
