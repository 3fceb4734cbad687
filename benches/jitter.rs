//! Cost of one publisher input per 20 ms tick (ring, jitter buffer, Opus decode) and of the
//! jitter buffer alone (one push and one pop).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use mixcast::media::jitter::JitterBuffer;
use mixcast::media::opus::{Encoder, MAX_PACKET};
use mixcast::media::publisher::publisher_channel;
use mixcast::media::{FRAME_DURATION, FRAME_LEN, FRAME_SAMPLES};
use std::time::Instant;

/// One second of a 1 kHz stereo tone as 128 kbit/s Opus packets.
fn packets() -> Vec<Vec<u8>> {
    let mut enc = Encoder::new(0).expect("encoder");
    let mut packet = [0u8; MAX_PACKET];
    let mut frame = [0f32; FRAME_LEN];
    (0..50)
        .map(|f| {
            for i in 0..FRAME_SAMPLES {
                let n = (f * FRAME_SAMPLES + i) as f32;
                let s = 0.5 * (2.0 * std::f32::consts::PI * 1000.0 * n / 48_000.0).sin();
                frame[2 * i] = s;
                frame[2 * i + 1] = s;
            }
            let len = enc.encode(&frame, &mut packet).expect("encode");
            packet[..len].to_vec()
        })
        .collect()
}

fn publisher_tick(c: &mut Criterion) {
    let packets = packets();
    let (mut feed, mut input) = publisher_channel().expect("decoder");
    let t0 = Instant::now();
    let mut out = [0f32; FRAME_LEN];
    let mut k: u32 = 0;
    c.bench_function("publisher input: push one packet, fill one frame", |b| {
        b.iter(|| {
            let at = t0 + FRAME_DURATION * k;
            let p = &packets[k as usize % packets.len()];
            feed.push(k as u16, 960u32.wrapping_mul(k), p, at);
            input.fill_at(&mut out, at + FRAME_DURATION / 20);
            black_box(&out);
            k += 1;
        })
    });
}

fn jitter_push_pop(c: &mut Criterion) {
    let payload = [0xfcu8; 320];
    let mut jb = JitterBuffer::new();
    let t0 = Instant::now();
    let mut k: u32 = 0;
    c.bench_function("jitter buffer: one push, one pop", |b| {
        b.iter(|| {
            let at = t0 + FRAME_DURATION * k;
            jb.push(k as u16, 960u32.wrapping_mul(k), &payload, at);
            black_box(jb.pop(at + FRAME_DURATION / 20));
            k += 1;
        })
    });
}

criterion_group!(benches, publisher_tick, jitter_push_pop);
criterion_main!(benches);
