//! Goodbyes: closing a peer's `Rtc` so that the peer is told, on the wire, that the
//! session is over — an RTCP BYE and then a DTLS close_notify — for a DELETE
//! ([`Egress::remove_viewer`]) and for every peer at shutdown ([`Egress::close_all`]).
//!
//! Without them a peer learns only from silence: a browser stays "connected" until its
//! consent checks fail (about 5 s), then "failed" some 20 s later.

use str0m::media::Mid;
use str0m::Output;
use str0m::Rtc;

use super::viewer::Role;
use super::Egress;
use crate::engine::EndReason;
use crate::engine::PeerKey;
use crate::engine::Transmitter;

/// Most outputs read from one closing `Rtc`: closing queues a handful (a BYE per SSRC
/// report list, one close_notify); the bound only guards against a loop.
const MAX_GOODBYE_OUTPUTS: usize = 64;

/// What [`Egress::close_all`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Goodbyes {
    /// Viewers sent a BYE and a close_notify.
    pub viewers: usize,
    /// Publishers sent a BYE and a close_notify.
    pub publishers: usize,
    /// Peers that had nothing to say goodbye on (not connected yet: no DTLS, no pair).
    pub unconnected: usize,
    /// Peers ended without goodbye because the caller's time ran out.
    pub skipped: usize,
}

impl Egress {
    /// Ends every peer (shutdown), saying goodbye to each while `keep_going()` is true
    /// (the caller's time budget: the engine reads no clock); the rest end silently.
    /// Datagrams go to `tx`, which the caller flushes.
    pub fn close_all(
        &mut self,
        tx: &mut impl Transmitter,
        mut keep_going: impl FnMut() -> bool,
    ) -> Goodbyes {
        let mut done = Goodbyes::default();
        while let Some(v) = self.viewers.last() {
            let key = v.key;
            if !keep_going() {
                done.skipped += 1;
                self.end(key, EndReason::Closed);
                continue;
            }
            let publisher = matches!(v.role, Role::Publisher(_));
            match (self.say_goodbye(key, tx), publisher) {
                (0, _) => done.unconnected += 1,
                (_, false) => done.viewers += 1,
                (_, true) => done.publishers += 1,
            }
            self.end(key, EndReason::Closed);
        }
        done
    }

    /// Closes peer `key`'s `Rtc` and sends what closing produces: the BYE first and the
    /// close_notify last, so that a peer which stops listening at close_notify (str0m
    /// does) has read the BYE. Returns how many datagrams went out (0: the peer had no
    /// ICE pair or DTLS yet, or is unknown). The peer stays in the engine: the caller
    /// ends it.
    pub(super) fn say_goodbye(&mut self, key: PeerKey, tx: &mut impl Transmitter) -> usize {
        let Some(&idx) = self.index.get(&key) else {
            return 0;
        };
        let v = &mut self.viewers[idx];
        if let Role::Publisher(p) = &v.role {
            declare_goodbye_ssrc(&mut v.rtc, p.audio.or(p.video));
        }
        if let Err(e) = v.rtc.close() {
            // Closing DTLS that never started fails: there is no one to tell.
            tracing::debug!(key, "no goodbye: {e}");
            v.rtc.disconnect();
            return 0;
        }
        let mut rtcp = Vec::new();
        let mut last = Vec::new();
        for _ in 0..MAX_GOODBYE_OUTPUTS {
            match v.rtc.poll_output() {
                Ok(Output::Transmit(t)) => {
                    // RFC 7983: 128..=191 is RTP/RTCP (here only RTCP: str0m sends no
                    // RTP while closing), 20..=63 DTLS.
                    if t.contents.first().is_some_and(|b| (128..=191).contains(b)) {
                        rtcp.push(t);
                    } else {
                        last.push(t);
                    }
                }
                Ok(Output::Event(_)) => {}
                Ok(Output::Timeout(_)) => break,
                Err(e) => {
                    tracing::debug!(key, "goodbye cut short: {e}");
                    break;
                }
            }
        }
        v.rtc.disconnect();
        let sent = rtcp.len() + last.len();
        for t in rtcp.iter().chain(&last) {
            self.metrics.transmit(t.contents.len());
            tx.send(t.source, t.destination, &t.contents);
        }
        tracing::debug!(key, bye = rtcp.len(), dtls = last.len(), "goodbye sent");
        sent
    }
}

/// str0m's BYE names the SSRCs we send on; a publisher's session has none (we only
/// receive), so it would get no BYE. One declared on its m-line just before closing gives
/// it one: a receiver leaving a session says BYE too (RFC 3550 §6.6). Nothing is ever
/// sent on that SSRC but the BYE.
fn declare_goodbye_ssrc(rtc: &mut Rtc, mid: Option<Mid>) {
    let Some(mid) = mid else { return };
    if rtc.media(mid).is_none() {
        return;
    }
    let mut api = rtc.direct_api();
    let ssrc = api.new_ssrc();
    api.declare_stream_tx(ssrc, None, mid, None);
}
