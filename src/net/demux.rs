//! Which session a datagram belongs to, in O(1): by our ICE ufrag on first contact (the
//! USERNAME of the peer's STUN request), then by source address.
//!
//! An address is learned only from a request whose MESSAGE-INTEGRITY verifies with the
//! session's ICE password, which the demux is given at registration. The ufrag is in the
//! SDP answer and in every check, so anyone who sees one can name it; the password they
//! cannot forge. Learning from unverified requests let 16 forged checks from 16 ports fill
//! a session's address slots before its client's first check (issue 14, item 1). Of the two
//! fixes (verify here, or let verified addresses evict unverified ones later) verifying here
//! is the simpler and the cheaper: no feedback from the owner threads, and a forged request
//! costs one HMAC on this thread instead of a trip through an owner's ring and str0m. The
//! fast path is unchanged: STUN from an address already learned for that session, and all
//! media, is routed by lookups alone (str0m checks those requests' integrity itself).

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

/// A registered ufrag: where its requests go and the password they must be keyed with.
struct Ufrag {
    route: Route,
    key: stun::IntegrityKey,
}

#[derive(Default)]
struct Entry {
    ufrags: Vec<String>,
    addrs: Vec<SocketAddr>,
}

/// What [`Demux::route`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    /// Deliver to this session.
    To(Route),
    /// A STUN request naming this session's ufrag from an address it has not learned,
    /// whose MESSAGE-INTEGRITY does not verify: dropped, and nothing learned.
    Unauthenticated(Route),
    /// No session knows it.
    Unknown,
}

impl Routed {
    /// The session to deliver to, if any.
    pub fn route(self) -> Option<Route> {
        match self {
            Routed::To(r) => Some(r),
            _ => None,
        }
    }
}

/// The routing table. Owned by the RX thread alone.
#[derive(Default)]
pub struct Demux {
    by_ufrag: HashMap<String, Ufrag>,
    by_addr: HashMap<SocketAddr, Route>,
    entries: HashMap<PeerKey, Entry>,
}

/// Most source addresses remembered per session (a peer has a handful of candidates).
const MAX_ADDRS_PER_SESSION: usize = 16;

impl Demux {
    /// Routes STUN requests for `ufrag` to `route`; a new source address is learned only
    /// from a request keyed with `pwd` (our ICE password for that ufrag).
    pub fn register(&mut self, ufrag: String, pwd: &str, route: Route) {
        self.entries
            .entry(route.key)
            .or_default()
            .ufrags
            .push(ufrag.clone());
        let key = stun::IntegrityKey::new(pwd);
        self.by_ufrag.insert(ufrag, Ufrag { route, key });
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
    /// names one of our ufrags and its integrity verifies.
    pub fn route(&mut self, source: SocketAddr, data: &[u8]) -> Routed {
        if let Some(ufrag) = stun::local_ufrag(data) {
            if let Some(u) = self.by_ufrag.get(ufrag) {
                let route = u.route;
                if self.by_addr.get(&source) == Some(&route) {
                    return Routed::To(route); // known: str0m checks it
                }
                if !stun::integrity_verifies(data, &u.key) {
                    return Routed::Unauthenticated(route);
                }
                self.learn(source, route);
                return Routed::To(route);
            }
        }
        match self.by_addr.get(&source) {
            Some(&route) => Routed::To(route),
            None => Routed::Unknown,
        }
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

    const PWD: &str = "the-session-password-01234";

    /// A Binding request with USERNAME `user`, then MESSAGE-INTEGRITY keyed by `pwd`.
    fn check(user: &str, pwd: &str) -> Vec<u8> {
        use aws_lc_rs::hmac;
        let u = user.as_bytes();
        let padded = u.len().div_ceil(4) * 4;
        let mut m = vec![0, 1, 0, 0, 0x21, 0x12, 0xA4, 0x42];
        m.extend_from_slice(&[5; 12]);
        m.extend_from_slice(&[0, 6]);
        m.extend_from_slice(&(u.len() as u16).to_be_bytes());
        m.extend_from_slice(u);
        m.resize(20 + 4 + padded, 0);
        let at = m.len();
        let len = (at + 24 - 20) as u16;
        m[2..4].copy_from_slice(&len.to_be_bytes());
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, pwd.as_bytes());
        let tag = hmac::sign(&key, &m);
        m.extend_from_slice(&[0, 8, 0, 20]);
        m.extend_from_slice(tag.as_ref());
        m
    }

    fn at(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn the_check_helper_signs_as_str0m_verifies() {
        let key = stun::IntegrityKey::new(PWD);
        assert!(stun::integrity_verifies(&check("a:b", PWD), &key));
        assert!(!stun::integrity_verifies(&check("a:b", "other"), &key));
    }

    #[test]
    fn learns_address_from_stun_then_routes_media() {
        let mut d = Demux::default();
        let r = Route { key: 7, owner: 0 };
        d.register("abcd".into(), PWD, r);
        let peer = at(5000);
        assert_eq!(
            d.route(peer, &[0x80, 0, 0, 0]),
            Routed::Unknown,
            "media before STUN is unknown"
        );
        assert_eq!(d.route(peer, &check("abcd:xyz", PWD)), Routed::To(r));
        assert_eq!(d.route(peer, &[0x80, 0, 0, 0]), Routed::To(r));
        assert_eq!(
            d.route(peer, &check("zzzz:xyz", "whatever")),
            Routed::To(r),
            "by address"
        );
        d.unregister(7);
        assert_eq!(d.route(peer, &[0x80, 0, 0, 0]), Routed::Unknown);
        assert!(d.is_empty());
    }

    #[test]
    fn address_reused_by_new_session() {
        let mut d = Demux::default();
        let peer = at(5000);
        d.register("a".into(), PWD, Route { key: 1, owner: 0 });
        d.register("b".into(), "pwd-b", Route { key: 2, owner: 0 });
        d.route(peer, &check("a:x", PWD));
        d.route(peer, &check("b:x", "pwd-b"));
        d.unregister(1);
        assert_eq!(
            d.route(peer, &[0x80]),
            Routed::To(Route { key: 2, owner: 0 })
        );
    }

    /// Issue 14, item 1: forged checks naming a session's ufrag from many ports, before
    /// its client's first check, neither learn an address nor keep the client out.
    #[test]
    fn forged_checks_learn_nothing() {
        let mut d = Demux::default();
        let r = Route { key: 3, owner: 1 };
        d.register("victim".into(), PWD, r);
        for port in 0..(MAX_ADDRS_PER_SESSION as u16 * 3) {
            let forged = check("victim:attacker", "guessed-password");
            assert_eq!(
                d.route(at(20_000 + port), &forged),
                Routed::Unauthenticated(r)
            );
            // A check with no MESSAGE-INTEGRITY at all is no better.
            let mut bare = check("victim:attacker", PWD);
            bare.truncate(bare.len() - 24);
            let len = (bare.len() - 20) as u16;
            bare[2..4].copy_from_slice(&len.to_be_bytes());
            assert_eq!(
                d.route(at(20_000 + port), &bare),
                Routed::Unauthenticated(r)
            );
            // Media from those ports goes nowhere.
            assert_eq!(d.route(at(20_000 + port), &[0x80, 0]), Routed::Unknown);
        }
        assert!(d.entries[&3].addrs.is_empty());
        // The real client's first check is learned; its media follows.
        let client = at(40_000);
        assert_eq!(d.route(client, &check("victim:real", PWD)), Routed::To(r));
        assert_eq!(d.route(client, &[22, 254, 253]), Routed::To(r));
        // A forged check from the client's own (learned) address goes to str0m, which
        // refuses it: the demux cannot be made to forget the client.
        let forged = check("victim:attacker", "guessed-password");
        assert_eq!(d.route(client, &forged), Routed::To(r));
        // Another session's forged check cannot steal the client's address either.
        d.register("other".into(), "pwd-other", Route { key: 4, owner: 0 });
        assert_eq!(
            d.route(client, &check("other:x", "wrong")),
            Routed::Unauthenticated(Route { key: 4, owner: 0 })
        );
        assert_eq!(d.route(client, &[0x80, 0]), Routed::To(r));
    }

    #[test]
    fn ice_restart_ufrag_has_its_own_password() {
        let mut d = Demux::default();
        let r = Route { key: 9, owner: 0 };
        d.register("gen1".into(), PWD, r);
        d.register("gen2".into(), "restarted-password", r);
        assert_eq!(
            d.route(at(6000), &check("gen2:x", PWD)),
            Routed::Unauthenticated(r)
        );
        assert_eq!(
            d.route(at(6000), &check("gen2:x", "restarted-password")),
            Routed::To(r)
        );
        assert_eq!(d.route(at(6001), &check("gen1:x", PWD)), Routed::To(r));
    }

    #[test]
    fn at_most_max_addresses_are_learned() {
        let mut d = Demux::default();
        let r = Route { key: 1, owner: 0 };
        d.register("u".into(), PWD, r);
        for port in 0..MAX_ADDRS_PER_SESSION as u16 + 4 {
            d.route(at(7000 + port), &check("u:x", PWD));
        }
        assert_eq!(d.entries[&1].addrs.len(), MAX_ADDRS_PER_SESSION);
    }
}
