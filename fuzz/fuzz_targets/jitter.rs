//! A publisher's jitter buffer under any sequence of packets (sequence numbers and
//! timestamps jumping, wrapping, repeating; payloads of any length) and pops, on a clock
//! that moves forward by the fuzzer's steps.
//!
//! Invariants, against a model: only accepted packets come out, each at most once, byte
//! for byte; between resyncs in increasing order of their (unwrapped) sequence numbers;
//! a packet offered for FEC is one that is waiting; never more out than went in; the
//! counters agree with what was seen; at most `CAPACITY` packets held.
#![no_main]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use mixcast::media::jitter::{JitterBuffer, Pop, Pushed, CAPACITY, MAX_PAYLOAD};
use mixcast_fuzz::Choices;

/// The model's record of one accepted packet.
struct Sent {
    ext: u64,
    payload: Vec<u8>,
    played: bool,
    /// Accepted in this resync generation.
    generation: u32,
}

fuzz_target!(|data: &[u8]| {
    let mut c = Choices::new(data);
    let mut jb = JitterBuffer::new();
    let t0 = Instant::now();
    let mut now = t0;
    let mut seq = c.u16();
    let mut ts = c.u32();
    // RFC 3550 A.1 style unwrapping against the highest sequence number accepted.
    let mut highest: Option<u64> = None;
    let mut sent: HashMap<u32, Sent> = HashMap::new();
    let mut id = 0u32;
    let mut generation = 0u32;
    let mut last_played: Option<u64> = None;
    let (mut accepted, mut played) = (0u64, 0u64);
    let mut ops = 0;
    while !c.is_empty() && ops < 4000 {
        ops += 1;
        let op = c.u8();
        match op >> 6 {
            0 | 1 => {
                // A packet: the sequence and timestamp move by the fuzzer's steps,
                // usually by one frame.
                let (ds, dt) = if op & 0x20 == 0 {
                    (1u16, 960u32)
                } else {
                    (c.u16(), c.u32())
                };
                seq = seq.wrapping_add(ds);
                ts = ts.wrapping_add(dt);
                now += Duration::from_micros(u64::from(c.u8()) * 500);
                let len = match op & 0x1f {
                    0 => 0,
                    1 => MAX_PAYLOAD + 1 + usize::from(c.u8()),
                    n => 4 + usize::from(n) * 7,
                };
                id += 1;
                let mut payload = id.to_be_bytes().to_vec();
                payload.resize(len, op);
                payload.truncate(len);
                let pushed = jb.push(seq, ts, &payload, now);
                if len == 0 || len > MAX_PAYLOAD {
                    assert_eq!(pushed, Pushed::Invalid);
                    continue;
                }
                let ext = match highest {
                    None => (1u64 << 32) + u64::from(seq),
                    Some(h) => {
                        h.saturating_add_signed(i64::from(seq.wrapping_sub(h as u16) as i16))
                    }
                };
                match pushed {
                    Pushed::Stored | Pushed::Resynced => {
                        if pushed == Pushed::Resynced || highest.is_none() {
                            generation += 1;
                            last_played = None;
                            highest = Some(ext);
                            for s in sent.values_mut() {
                                s.played |= s.generation != generation; // flushed
                            }
                        } else {
                            highest = highest.map(|h| h.max(ext));
                        }
                        accepted += 1;
                        sent.insert(
                            id,
                            Sent {
                                ext,
                                payload,
                                played: false,
                                generation,
                            },
                        );
                    }
                    Pushed::Invalid => panic!("a valid payload was refused as invalid"),
                    Pushed::Duplicate | Pushed::Late | Pushed::Suspect => {}
                }
            }
            _ => {
                now += Duration::from_millis(u64::from(op & 0x3f));
                if op & 0x40 == 0 {
                    jb.set_quiet(op & 1 == 0);
                }
                let popped: Vec<Vec<u8>> = match jb.pop(now) {
                    Pop::Packet(p) | Pop::Stretch(p) => vec![p.to_vec()],
                    Pop::Merge { first, second } => vec![first.to_vec(), second.to_vec()],
                    Pop::Lost {
                        fec_from_next: Some(p),
                    } => {
                        let s = lookup(&sent, p);
                        assert!(!s.played, "FEC offered from a packet already played");
                        assert_eq!(s.generation, generation);
                        vec![]
                    }
                    Pop::Lost {
                        fec_from_next: None,
                    }
                    | Pop::Empty => vec![],
                };
                for p in popped {
                    let key = u32::from_be_bytes(p[..4].try_into().unwrap());
                    let s = sent
                        .get_mut(&key)
                        .expect("a packet that was never accepted");
                    assert_eq!(s.payload, p, "a payload changed in the buffer");
                    assert!(!s.played, "a packet came out twice");
                    assert_eq!(s.generation, generation, "a packet from before a resync");
                    if let Some(last) = last_played {
                        assert!(s.ext > last, "out of order: {} after {last}", s.ext);
                    }
                    last_played = Some(s.ext);
                    s.played = true;
                    played += 1;
                }
            }
        }
        assert!(played <= accepted, "more out than in");
        assert!(jb.buffered() <= CAPACITY);
        let stats = jb.stats();
        assert_eq!(stats.received, accepted);
        assert_eq!(stats.played, played);
    }
});

fn lookup<'a>(sent: &'a HashMap<u32, Sent>, p: &[u8]) -> &'a Sent {
    assert!(p.len() >= 4);
    let key = u32::from_be_bytes(p[..4].try_into().unwrap());
    let s = sent.get(&key).expect("FEC from a packet never accepted");
    assert_eq!(s.payload, p);
    s
}
