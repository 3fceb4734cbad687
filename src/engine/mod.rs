//! Peer ownership and the sans-IO drive loop.
//!
//! [`offer`] turns an SDP offer into a ready `Rtc` and its answer (what signalling calls);
//! [`egress`] owns the viewers and publishers of one TX thread and drives their `Rtc`s. Nothing here reads
//! the clock or touches a socket: time comes in as `now`, datagrams come in as bytes and go
//! out through a [`Transmitter`], so tests run minutes of media in milliseconds.

pub mod egress;
pub mod offer;
pub mod offer_checks;
pub mod restart;
pub mod sync;
pub mod unbundled;

use std::net::SocketAddr;

/// Identifies one WebRTC session (viewer or publisher) across threads. Assigned by
/// signalling from a counter, never reused within a process.
pub type PeerKey = u64;

/// Where an engine's datagrams go: a socket in the server, a queue in tests.
pub trait Transmitter {
    /// Sends `data` from our `source` address to `destination`.
    fn send(&mut self, source: SocketAddr, destination: SocketAddr, data: &[u8]);
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The client sent DELETE (or the server is shutting down).
    Closed,
    /// The peer closed the connection (DTLS close) without a DELETE.
    PeerClosed,
    /// ICE failed or consent was lost.
    IceFailed,
    /// DTLS or SRTP failed, or str0m reported a fatal error.
    Failed,
    /// A publisher sent no media for [`egress::MEDIA_TIMEOUT`].
    Idle,
    /// The viewer's stream was removed (an on-demand stream whose publishers all left).
    StreamEnded,
}

impl EndReason {
    /// A label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Closed => "closed",
            EndReason::PeerClosed => "peer_closed",
            EndReason::IceFailed => "ice_failed",
            EndReason::Failed => "failed",
            EndReason::Idle => "idle",
            EndReason::StreamEnded => "stream_ended",
        }
    }
}
