//! The RX thread's routing table under a sequence of registrations, removals and
//! datagrams (raw, or STUN checks naming a registered ufrag, signed with the right or a
//! wrong password, from a handful of source addresses).
//!
//! Invariants, against a model: a datagram goes only to a registered session; an address
//! is learned only from a check whose integrity verified, so media from an address goes
//! only to a session that address sent a verified check for; a verified check always
//! reaches its session; a forged one from an address not learned for that session is
//! `Unauthenticated` and learns nothing.
#![no_main]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use mixcast::net::demux::{Demux, Route, Routed};
use mixcast::net::stun;
use mixcast_fuzz::{stun_message, username_attr, Choices, PASSWORDS};

fuzz_target!(|data: &[u8]| {
    let mut c = Choices::new(data);
    let mut demux = Demux::default();
    // Model: ufrag -> (route, password index); key -> its ufrags; address -> keys it may
    // have been learned for.
    let mut ufrags: HashMap<String, (Route, usize)> = HashMap::new();
    let mut sessions: HashMap<u64, Vec<String>> = HashMap::new();
    let mut learned: HashMap<SocketAddr, HashSet<u64>> = HashMap::new();
    let mut serial = 0u32;
    let mut ops = 0;
    while !c.is_empty() && ops < 512 {
        ops += 1;
        let op = c.u8();
        let source = SocketAddr::from(([127, 0, 0, 1], 40_000 + u16::from(c.u8() % 24)));
        match op % 8 {
            0 => {
                let key = u64::from(c.u8() % 6);
                let pwd = usize::from(c.u8()) % PASSWORDS.len();
                serial += 1;
                // Ufrags are unique per registration, as the server's random ones are.
                let ufrag = format!("u{serial}");
                let route = Route {
                    key,
                    owner: usize::from(op >> 4),
                };
                // A key keeps one owner, as in the server.
                let route = sessions
                    .get(&key)
                    .and_then(|us| us.first())
                    .map(|u| ufrags[u].0)
                    .unwrap_or(route);
                demux.register(ufrag.clone(), PASSWORDS[pwd], route);
                ufrags.insert(ufrag.clone(), (route, pwd));
                sessions.entry(key).or_default().push(ufrag);
            }
            1 => {
                let key = u64::from(c.u8() % 6);
                demux.unregister(key);
                for u in sessions.remove(&key).unwrap_or_default() {
                    ufrags.remove(&u);
                }
                for keys in learned.values_mut() {
                    keys.remove(&key);
                }
                assert_eq!(demux.len(), sessions.len());
            }
            2 | 3 => {
                // A check naming a registered ufrag (or an unknown one), signed or forged.
                let pick = usize::from(c.u16());
                let mut names: Vec<&String> = ufrags.keys().collect();
                names.sort();
                let name = names
                    .get(pick % names.len().max(1))
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "nobody".into());
                let right = ufrags.get(&name).map(|&(_, p)| p);
                let signer = if op & 0x10 == 0 {
                    right.map(|p| PASSWORDS[p])
                } else {
                    Some("guessed-password")
                };
                let extra = if op & 0x40 != 0 { c.chunk() } else { &[] };
                let mut attrs = username_attr(format!("{name}:peer").as_bytes());
                attrs.extend_from_slice(extra);
                let m = stun_message([0, 1], [9; 12], &attrs, signer, op & 0x20 != 0);
                let routed = demux.route(source, &m);
                if let Some(p) = right {
                    if signer == Some(PASSWORDS[p]) && extra.is_empty() {
                        let key = stun::IntegrityKey::new(PASSWORDS[p]);
                        assert!(
                            stun::integrity_verifies(&m, &key),
                            "a signed check does not verify"
                        );
                    }
                }
                expect(routed, &m, source, &ufrags, &sessions, &mut learned);
            }
            _ => {
                // Anything else: media, DTLS, garbage, unsigned STUN.
                let payload = c.chunk();
                let routed = demux.route(source, payload);
                expect(routed, payload, source, &ufrags, &sessions, &mut learned);
            }
        }
    }
});

/// Checks what the demux decided for `data` from `source` against the model, and learns
/// what it may have learned.
fn expect(
    routed: Routed,
    data: &[u8],
    source: SocketAddr,
    ufrags: &HashMap<String, (Route, usize)>,
    sessions: &HashMap<u64, Vec<String>>,
    learned: &mut HashMap<SocketAddr, HashSet<u64>>,
) {
    if let Routed::To(r) | Routed::Unauthenticated(r) = routed {
        assert!(
            sessions.contains_key(&r.key),
            "routed to a session that is gone: {r:?}"
        );
    }
    let known = |key: u64| learned.get(&source).is_some_and(|k| k.contains(&key));
    match stun::local_ufrag(data).and_then(|u| ufrags.get(u)) {
        Some(&(route, p)) => {
            let verifies = stun::integrity_verifies(data, &stun::IntegrityKey::new(PASSWORDS[p]));
            if verifies {
                assert_eq!(routed, Routed::To(route), "a verified check was not routed");
            } else if known(route.key) {
                // Learned (or refused at the address cap): either way, to this session.
                assert!(matches!(routed, Routed::To(r) | Routed::Unauthenticated(r) if r == route));
            } else {
                assert_eq!(
                    routed,
                    Routed::Unauthenticated(route),
                    "an unverified check from a new address was routed"
                );
            }
            if verifies {
                learned.entry(source).or_default().insert(route.key);
            }
        }
        None => {
            if let Routed::To(r) = routed {
                assert!(
                    known(r.key),
                    "a datagram went to a session its address never authenticated for"
                );
            } else {
                assert_eq!(routed, Routed::Unknown);
            }
        }
    }
}
