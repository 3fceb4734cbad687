//! Datagrams from a connected WHIP publisher's address, as the engine receives them
//! (`Egress::handle_receive`): str0m's SRTP, RTP and RTCP parsing, then ours (the
//! publisher's feed, jitter buffer, Opus decoder and the mix, run by the 20 ms tick).
//!
//! Each input first connects a real str0m client (ICE, DTLS with our stack, SRTP). Then
//! each record of
//! the input is one datagram: either RTP the fuzzer wrote (header bits, payload type,
//! sequence number, timestamp, SSRC, CSRCs, extensions, payload), encrypted with the
//! client's SRTP keys so that it reaches the parsers behind SRTP, or raw bytes (garbage,
//! or RTP, RTCP, DTLS or STUN lookalikes) that fail SRTP or DTLS.
//!
//! Invariants: no panic; raw datagrams (which anyone can send with the publisher's source
//! address) never end the session.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use mixcast::engine::offer::Role;
use mixcast_fuzz::{Choices, Pair, CLIENT, KEY, SERVER};

fuzz_target!(|data: &[u8]| {
    let mut c = Choices::new(data);
    let start = Instant::now();
    let mut pair = Pair::new(Role::Publisher, start);
    assert!(pair.connect(), "the client did not connect");
    // No real audio first: the server knows the client's SSRC from its offer, and the first
    // RTP it sees on it is the fuzzer's, so that SRTP's rollover counter starts from the
    // fuzzer's sequence numbers (a jump of more than 2^15 from a real packet's would be
    // taken as a rollover, and the packet would fail to decrypt).
    let (ssrc, pt) = pair.audio_ssrc_and_pt().expect("the client's audio stream");
    let keys = pair.client_srtp.clone();
    let Some(srtp) = keys.get() else {
        panic!("no SRTP keys after connecting");
    };
    let mut seq = 1000u16;
    let mut records = 0;
    let mut raw_only = true;
    while !c.is_empty() && records < 64 {
        records += 1;
        let kind = c.u8();
        let datagram = if kind & 1 == 0 {
            raw_only = false;
            // Plain RTP from the fuzzer, then SRTP as the client would send it.
            let b0 = 0x80 | (c.u8() & 0x3f); // version 2; padding, extension, CSRC count
            let b1 = if kind & 2 == 0 {
                pt | (c.u8() & 0x80)
            } else {
                c.u8()
            };
            seq = if kind & 4 == 0 {
                seq.wrapping_add(1)
            } else {
                c.u16()
            };
            let ts = u32::from(seq).wrapping_mul(960) ^ if kind & 8 == 0 { 0 } else { c.u32() };
            let s = if kind & 16 == 0 { ssrc } else { c.u32() };
            let mut p = vec![b0, b1];
            p.extend_from_slice(&seq.to_be_bytes());
            p.extend_from_slice(&ts.to_be_bytes());
            p.extend_from_slice(&s.to_be_bytes());
            let cc = usize::from(b0 & 0x0f);
            p.extend_from_slice(c.bytes(4 * cc));
            let mut header_len = 12 + 4 * cc;
            if b0 & 0x10 != 0 {
                // The extension header (profile, length in words), then its words.
                let profile = if kind & 32 == 0 { 0xbede } else { c.u16() };
                let words = usize::from(c.u8() % 8);
                p.extend_from_slice(&profile.to_be_bytes());
                p.extend_from_slice(&(words as u16).to_be_bytes());
                p.extend_from_slice(c.bytes(4 * words));
                header_len += 4 + 4 * words;
            }
            p.extend_from_slice(c.chunk());
            let len = p.len();
            p.resize(len + 16, 0);
            match srtp.protect(&mut p, len, header_len, 0) {
                Some(n) => {
                    p.truncate(n);
                    p
                }
                None => {
                    p.truncate(len);
                    p
                }
            }
        } else {
            c.chunk().to_vec()
        };
        pair.egress
            .handle_receive(pair.now, KEY, CLIENT, SERVER, &datagram, &mut pair.wire);
        let ms = u64::from(kind >> 6) * 10;
        pair.run_until(pair.now + Duration::from_millis(ms));
    }
    pair.run_until(pair.now + Duration::from_millis(200));
    let ended = pair.egress.take_ended();
    if raw_only {
        assert!(
            ended.is_empty(),
            "datagrams without the session's keys ended it: {ended:?}"
        );
    }
});
