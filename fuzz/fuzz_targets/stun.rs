//! STUN as the UDP loop sees it: recognising a message, reading our ufrag from its
//! USERNAME, checking MESSAGE-INTEGRITY, and mending a Binding request that lacks PRIORITY
//! (FFmpeg's). Half the inputs are raw datagrams; the other half are requests signed with
//! a known password around the fuzzer's attributes, so that the mending path is reached.
//!
//! Invariants: a mended request is the input plus one PRIORITY, still a Binding request
//! with the same ufrag, and verifies with the password; only a request that verified is
//! ever mended (never turns a failing packet into a passing one); a mended request is not
//! mended again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mixcast::net::stun;
use mixcast_fuzz::{stun_message, Choices, PASSWORDS};

fuzz_target!(|data: &[u8]| {
    let mut c = Choices::new(data);
    let mode = c.u8();
    let pwd = PASSWORDS[usize::from(mode >> 4) % PASSWORDS.len()];
    let packet: Vec<u8> = if mode & 1 == 0 {
        c.rest().to_vec()
    } else {
        let typ = if mode & 2 == 0 {
            [0x00, 0x01]
        } else {
            [c.u8() & 0x3f, c.u8()]
        };
        let mut tid = [0u8; 12];
        tid.copy_from_slice(&{
            let mut t = c.bytes(12).to_vec();
            t.resize(12, 0);
            t
        });
        let signer = if mode & 4 == 0 { Some(pwd) } else { None };
        stun_message(typ, tid, c.rest(), signer, mode & 8 != 0)
    };
    check(&packet, pwd);
});

fn check(packet: &[u8], pwd: &str) {
    let is_stun = stun::is_stun(packet);
    let is_request = stun::is_binding_request(packet);
    assert!(!is_request || is_stun);
    if let Some(ufrag) = stun::local_ufrag(packet) {
        assert!(is_stun);
        assert!(!ufrag.contains(':'));
        let range = packet.as_ptr_range();
        assert!(range.contains(&ufrag.as_ptr()) || ufrag.is_empty());
    }
    let key = stun::IntegrityKey::new(pwd);
    let verifies = stun::integrity_verifies(packet, &key);
    assert!(!verifies || is_stun);

    let mut out = vec![0u8; packet.len() + stun::PRIORITY_GROWTH];
    let Some(n) = stun::add_missing_priority(packet, pwd, &mut out) else {
        // A short buffer is refused, never overrun.
        let mut short = vec![0u8; packet.len() + stun::PRIORITY_GROWTH - 1];
        assert!(stun::add_missing_priority(packet, pwd, &mut short).is_none());
        return;
    };
    let mended = &out[..n];
    assert!(verifies, "a request that did not verify was mended");
    assert_eq!(n, packet.len() + stun::PRIORITY_GROWTH);
    assert!(stun::is_binding_request(mended));
    assert_eq!(stun::local_ufrag(mended), stun::local_ufrag(packet));
    assert!(
        stun::integrity_verifies(mended, &key),
        "the mended request does not verify"
    );
    let len = u16::from_be_bytes([mended[2], mended[3]]) as usize;
    assert_eq!(len + 20, n, "the STUN length does not match the datagram");
    let mut again = vec![0u8; n + stun::PRIORITY_GROWTH];
    assert!(
        stun::add_missing_priority(mended, pwd, &mut again).is_none(),
        "a request with PRIORITY was mended again"
    );
    // With any other password it neither verifies nor is mended.
    for other in PASSWORDS.iter().filter(|p| **p != pwd) {
        if !stun::integrity_verifies(packet, &stun::IntegrityKey::new(other)) {
            assert!(stun::add_missing_priority(packet, other, &mut again).is_none());
        }
    }
}
