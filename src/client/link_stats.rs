//! What a running client knows about its link right now, shared between the thread that
//! drives the `Rtc` and the one that prints progress: counters and the latest RTT and loss.
//!
//! Plain atomics, written by one thread and read by another; nothing here blocks or
//! allocates, so the sending thread never waits for the reader.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use str0m::Event;

/// "Not known yet" for the optional values.
const UNKNOWN: u64 = u64::MAX;

/// Where a figure came from, for the progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// RTCP receiver reports (RTT from LSR/DLSR; cumulative loss).
    Reports,
    /// Transport-wide congestion control feedback (loss over the last second).
    Feedback,
    /// ICE consent checks of the selected pair (RTT only).
    Ice,
}

impl Basis {
    /// A short label.
    pub fn as_str(self) -> &'static str {
        match self {
            Basis::Reports => "RR",
            Basis::Feedback => "TWCC",
            Basis::Ice => "ICE",
        }
    }

    fn code(self) -> u64 {
        self as u64
    }

    fn from_code(c: u64) -> Basis {
        match c {
            0 => Basis::Reports,
            1 => Basis::Feedback,
            _ => Basis::Ice,
        }
    }
}

/// Live counters of one client, across reconnects (the counters keep adding up).
#[derive(Debug)]
pub struct LinkStats {
    packets: AtomicU64,
    bytes: AtomicU64,
    /// Round trip in microseconds, and its [`Basis`] code.
    rtt_micros: AtomicU64,
    rtt_basis: AtomicU64,
    /// The peer's loss fraction in parts per million, and its [`Basis`] code.
    loss_ppm: AtomicU64,
    loss_basis: AtomicU64,
    /// Packets the peer's receiver reports count lost (cumulative, this session).
    lost: AtomicU64,
    /// Whether a receiver report came (then it is preferred for RTT and loss).
    reports_seen: AtomicBool,
}

impl Default for LinkStats {
    fn default() -> Self {
        LinkStats {
            packets: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            rtt_micros: AtomicU64::new(UNKNOWN),
            rtt_basis: AtomicU64::new(Basis::Ice.code()),
            loss_ppm: AtomicU64::new(UNKNOWN),
            loss_basis: AtomicU64::new(Basis::Feedback.code()),
            lost: AtomicU64::new(0),
            reports_seen: AtomicBool::new(false),
        }
    }
}

impl LinkStats {
    /// Counts one packet of `bytes` payload bytes.
    pub fn count(&self, bytes: usize) {
        self.packets.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Packets counted so far.
    pub fn packets(&self) -> u64 {
        self.packets.load(Ordering::Relaxed)
    }

    /// Payload bytes counted so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The latest round-trip time and what measured it, if anything did.
    pub fn rtt(&self) -> Option<(Duration, Basis)> {
        match self.rtt_micros.load(Ordering::Relaxed) {
            UNKNOWN => None,
            us => Some((
                Duration::from_micros(us),
                Basis::from_code(self.rtt_basis.load(Ordering::Relaxed)),
            )),
        }
    }

    /// The latest loss fraction (0 to 1) and what it is based on, if the peer said.
    pub fn loss(&self) -> Option<(f32, Basis)> {
        match self.loss_ppm.load(Ordering::Relaxed) {
            UNKNOWN => None,
            ppm => Some((
                ppm as f32 / 1e6,
                Basis::from_code(self.loss_basis.load(Ordering::Relaxed)),
            )),
        }
    }

    /// Packets the peer's receiver reports count lost in the current session.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    fn set_rtt(&self, rtt: Duration, basis: Basis) {
        let us = u64::try_from(rtt.as_micros()).unwrap_or(UNKNOWN - 1);
        self.rtt_micros.store(us, Ordering::Relaxed);
        self.rtt_basis.store(basis.code(), Ordering::Relaxed);
    }

    fn set_loss(&self, fraction: f64, basis: Basis) {
        let ppm = (fraction.clamp(0.0, 1.0) * 1e6) as u64;
        self.loss_ppm.store(ppm, Ordering::Relaxed);
        self.loss_basis.store(basis.code(), Ordering::Relaxed);
    }

    /// Takes what a str0m stats event says. Receiver reports of our outgoing media
    /// (`MediaEgressStats`) win when the peer sends them; else the loss comes from the
    /// peer's congestion-control feedback and the RTT from the ICE consent checks
    /// (`PeerStats`). (str0m's `PeerStats::rtt` is the feedback's, which includes how long
    /// the peer holds its feedback: not a network round trip.)
    pub fn on_event(&self, event: &Event) {
        tracing::trace!(?event, "stats");
        match event {
            Event::MediaEgressStats(s) => {
                if let Some(rtt) = s.rtt {
                    self.reports_seen.store(true, Ordering::Relaxed);
                    self.set_rtt(rtt, Basis::Reports);
                }
                // The session's loss so far, from the latest report's cumulative count
                // (str0m's own `loss` needs two reports within one stats interval).
                if let Some(remote) = &s.remote {
                    self.reports_seen.store(true, Ordering::Relaxed);
                    let fraction = remote.packets_lost as f64 / s.packets.max(1) as f64;
                    self.set_loss(fraction, Basis::Reports);
                    self.lost.store(remote.packets_lost, Ordering::Relaxed);
                }
            }
            Event::PeerStats(s) if !self.reports_seen.load(Ordering::Relaxed) => {
                let pair = s.selected_candidate_pair.as_ref();
                if let Some(rtt) = pair.and_then(|p| p.current_round_trip_time) {
                    self.set_rtt(rtt, Basis::Ice);
                }
                if let Some(loss) = s.egress_loss_fraction {
                    self.set_loss(f64::from(loss), Basis::Feedback);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_until_set() {
        let s = LinkStats::default();
        assert_eq!((s.rtt(), s.loss()), (None, None));
        s.count(100);
        s.count(50);
        assert_eq!((s.packets(), s.bytes()), (2, 150));
        s.set_rtt(Duration::from_micros(1500), Basis::Ice);
        assert_eq!(s.rtt(), Some((Duration::from_micros(1500), Basis::Ice)));
        s.set_loss(0.25, Basis::Reports);
        assert_eq!(s.loss(), Some((0.25, Basis::Reports)));
    }
}
