//! Handing the TX thread's datagrams to the kernel: the one place that knows how.
//!
//! Each sender is an engine [`Transmitter`] (what `Egress` writes to) that may hold
//! datagrams back until [`Outbox::flush`]. Never blocks: a datagram the kernel will not
//! take now is dropped and counted, since RTP tolerates loss and a late packet is useless.

use std::net::{SocketAddr, UdpSocket};

use crate::engine::Transmitter;

/// A [`Transmitter`] that may hold datagrams back until [`Outbox::flush`]. The TX thread
/// flushes after each batch of work (commands, received datagrams, timeouts, a tick).
pub trait Outbox: Transmitter {
    /// Hands everything held back to the kernel.
    fn flush(&mut self);
}

/// The naive fan-out, kept as the baseline: one `send_to` system call per datagram, as
/// soon as str0m hands it over (what str0m's chat example does).
pub struct NaiveSender {
    socket: UdpSocket,
}

impl NaiveSender {
    /// Sends on `socket`.
    pub fn new(socket: UdpSocket) -> NaiveSender {
        NaiveSender { socket }
    }
}

impl Transmitter for NaiveSender {
    fn send(&mut self, _source: SocketAddr, destination: SocketAddr, data: &[u8]) {
        // A failed send (peer gone, buffer full) loses one packet; RTP tolerates that.
        if let Err(e) = self.socket.send_to(data, destination) {
            tracing::trace!(%destination, "send: {e}");
        }
    }
}

impl Outbox for NaiveSender {
    fn flush(&mut self) {}
}
