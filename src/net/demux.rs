//! Which session a datagram belongs to, in O(1): by our ICE ufrag on first contact (the
//! USERNAME of the peer's STUN request), then by source address.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::stun;
use crate::engine::PeerKey;

/// Where a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The session.
    pub key: PeerKey,
    /// The index of the thread that owns it.
    pub owner: usize,
}

#[derive(Default)]
struct Entry {
    ufrags: Vec<String>,
    addrs: Vec<SocketAddr>,
}

/// The routing table. Owned by the RX thread alone.
#[derive(Default)]
pub struct Demux {
    by_ufrag: HashMap<String, Route>,
    by_addr: HashMap<SocketAddr, Route>,
    entries: HashMap<PeerKey, Entry>,
}

/// Most source addresses remembered per session (a peer has a handful of candidates).
const MAX_ADDRS_PER_SESSION: usize = 16;

impl Demux {
    /// Routes STUN requests for `ufrag` to `route`.
    pub fn register(&mut self, ufrag: String, route: Route) {
        self.entries
            .entry(route.key)
            .or_default()
            .ufrags
            .push(ufrag.clone());
        self.by_ufrag.insert(ufrag, route);
    }

    /// Forgets a session.
    pub fn unregister(&mut self, key: PeerKey) {
        if let Some(e) = self.entries.remove(&key) {
            for u in e.ufrags {
                self.by_ufrag.remove(&u);
            }
            for a in e.addrs {
                if self.by_addr.get(&a).map(|r| r.key) == Some(key) {
                    self.by_addr.remove(&a);
                }
            }
        }
    }

    /// Sessions known.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no session is known.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The route of a datagram from `source`, learning the address when a STUN request
    /// names one of our ufrags.
    pub fn route(&mut self, source: SocketAddr, data: &[u8]) -> Option<Route> {
        if let Some(ufrag) = stun::local_ufrag(data) {
            if let Some(&route) = self.by_ufrag.get(ufrag) {
                self.learn(source, route);
                return Some(route);
            }
        }
        self.by_addr.get(&source).copied()
    }

    fn learn(&mut self, source: SocketAddr, route: Route) {
        if self.by_addr.get(&source) == Some(&route) {
            return;
        }
        let Some(e) = self.entries.get_mut(&route.key) else {
            return;
        };
        if e.addrs.len() >= MAX_ADDRS_PER_SESSION {
            return;
        }
        e.addrs.push(source);
        if let Some(old) = self.by_addr.insert(source, route) {
            // The address moved to a new session (a client reused its port).
            if let Some(oe) = self.entries.get_mut(&old.key) {
                oe.addrs.retain(|a| *a != source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stun_with_user(user: &str) -> Vec<u8> {
        let u = user.as_bytes();
        let padded = u.len().div_ceil(4) * 4;
        let mut m = vec![0, 1];
        m.extend_from_slice(&((4 + padded) as u16).to_be_bytes());
        m.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
        m.extend_from_slice(&[0; 12]);
        m.extend_from_slice(&[0, 6]);
        m.extend_from_slice(&(u.len() as u16).to_be_bytes());
        m.extend_from_slice(u);
        m.resize(20 + 4 + padded, 0);
        m
    }

    #[test]
    fn learns_address_from_stun_then_routes_media() {
        let mut d = Demux::default();
        let r = Route { key: 7, owner: 0 };
        d.register("abcd".into(), r);
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert_eq!(d.route(peer, &[0x80, 0, 0, 0]), None, "media before STUN is unknown");
        assert_eq!(d.route(peer, &stun_with_user("abcd:xyz")), Some(r));
        assert_eq!(d.route(peer, &[0x80, 0, 0, 0]), Some(r));
        assert_eq!(d.route(peer, &stun_with_user("zzzz:xyz")), Some(r), "by address");
        d.unregister(7);
        assert_eq!(d.route(peer, &[0x80, 0, 0, 0]), None);
        assert!(d.is_empty());
    }

    #[test]
    fn address_reused_by_new_session() {
        let mut d = Demux::default();
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        d.register("a".into(), Route { key: 1, owner: 0 });
        d.register("b".into(), Route { key: 2, owner: 0 });
        d.route(peer, &stun_with_user("a:x"));
        d.route(peer, &stun_with_user("b:x"));
        d.unregister(1);
        assert_eq!(d.route(peer, &[0x80]), Some(Route { key: 2, owner: 0 }));
    }
}
