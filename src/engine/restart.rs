//! ICE restart on a running session (PATCH with new credentials): moving the media to the
//! peer's new ICE generation.
//!
//! Why this exists: str0m 0.25's direct API can only swap the ICE credentials. As the
//! controlled agent it then keeps sending on the old nominated pair, because it switches
//! only to a nominated pair of *higher* priority, and a browser's new generation is paired
//! with the same priorities (host to host) or lower (peer-reflexive). Found with Chromium's
//! `pc.restartIce()`: its new pair was selected on its side, yet every packet still went to
//! its old port, which only worked because Chromium kept that port open.
//!
//! So once the peer's first check with the new credentials arrives from a new address (str0m
//! has a pair of the new generation then), the old pair's remote candidate is invalidated;
//! str0m keeps sending to the old address until the new pair is nominated, so media does not
//! pause. The old candidate is found by the old pair's destination as a host or a
//! peer-reflexive candidate; an old server-reflexive or relayed one is not retired (its
//! pair then keeps the media while it lives, as before).

use std::net::SocketAddr;

use str0m::{Candidate, Rtc};

use crate::net::stun;

/// A restart in progress for one session.
#[derive(Debug)]
pub struct Restart {
    /// Our new ufrag: the peer's checks of the new generation name it.
    ufrag: String,
    /// The old pair's remote address.
    old: SocketAddr,
    /// The new generation's path (our address, the peer's), once its first check came.
    new_path: Option<(SocketAddr, SocketAddr)>,
}

impl Restart {
    /// A restart to new local credentials `ufrag` of a session whose media goes over
    /// `media_path` (None: nothing to move yet, so nothing to do).
    pub fn new(ufrag: String, media_path: Option<(SocketAddr, SocketAddr)>) -> Option<Restart> {
        let (_, old) = media_path?;
        Some(Restart {
            ufrag,
            old,
            new_path: None,
        })
    }

    /// Looks at a datagram str0m was just given. True when it is the peer's first check of
    /// the new generation from a new address: retire the old pair now ([`Restart::retire`]).
    pub fn first_new_check(
        &mut self,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) -> bool {
        if self.new_path.is_some()
            || source == self.old
            || !stun::is_binding_request(data)
            || stun::local_ufrag(data) != Some(self.ufrag.as_str())
        {
            return false;
        }
        self.new_path = Some((destination, source));
        true
    }

    /// Invalidates the old pair's remote candidate in `rtc`. Returns whether str0m knew it.
    pub fn retire(&self, rtc: &mut Rtc) -> bool {
        let mut api = rtc.direct_api();
        let mut found = false;
        for c in candidates_at(self.old) {
            found |= api.invalidate_candidate(&c);
        }
        found
    }

    /// Where the media goes once str0m reports the ICE connection up again after the
    /// retirement (None before the new generation's first check).
    pub fn new_path(&self) -> Option<(SocketAddr, SocketAddr)> {
        self.new_path
    }
}

/// The remote candidates str0m may hold for `addr`: signalled as host, or learned from the
/// peer's checks (peer-reflexive; str0m matches on address, base, kind and protocol).
fn candidates_at(addr: SocketAddr) -> Vec<Candidate> {
    let mut out = Vec::new();
    if let Ok(c) = Candidate::host(addr, "udp") {
        out.push(c);
    }
    let prflx = format!(
        "candidate:1 1 udp 1 {} {} typ prflx",
        addr.ip(),
        addr.port()
    );
    if let Ok(c) = Candidate::from_sdp_string(&prflx) {
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding_request(username: &str) -> Vec<u8> {
        let u = username.as_bytes();
        let padded = u.len().div_ceil(4) * 4;
        let mut m = vec![0, 1];
        m.extend_from_slice(&((4 + padded) as u16).to_be_bytes());
        m.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&[0x00, 0x06]);
        m.extend_from_slice(&(u.len() as u16).to_be_bytes());
        m.extend_from_slice(u);
        m.resize(20 + 4 + padded, 0);
        m
    }

    #[test]
    fn only_a_new_ufrag_check_from_a_new_address_retires() {
        let ours: SocketAddr = "127.0.0.1:8189".parse().unwrap();
        let old: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let new: SocketAddr = "127.0.0.1:40001".parse().unwrap();
        assert!(Restart::new("NEW".into(), None).is_none());
        let mut r = Restart::new("NEW".into(), Some((ours, old))).unwrap();
        assert!(!r.first_new_check(new, ours, &binding_request("OLD:peer")));
        assert!(!r.first_new_check(old, ours, &binding_request("NEW:peer")));
        assert!(!r.first_new_check(new, ours, &[0x80; 40]));
        assert!(r.new_path().is_none());
        assert!(r.first_new_check(new, ours, &binding_request("NEW:peer")));
        assert_eq!(r.new_path(), Some((ours, new)));
        assert!(!r.first_new_check(new, ours, &binding_request("NEW:peer")));
    }

    #[test]
    fn the_old_address_parses_as_host_and_prflx() {
        assert_eq!(candidates_at("127.0.0.1:40000".parse().unwrap()).len(), 2);
    }
}
