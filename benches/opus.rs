//! Encode and decode time of one 20 ms 48 kHz stereo frame of the test signal
//! (440 Hz left, 660 Hz right) at 128 kbit/s.
//!
//! ```text
//! cargo bench --bench opus                                  # mixcast's codec only
//! cargo bench --bench opus --features codec-eval,libopus    # every candidate, side by side
//! ```
//!
//! `mixcast` is `media::opus` (whatever codec this build selected); the others are the
//! crates compared in docs/codec.md, configured alike (examples/codec_eval/candidates.rs).

#[path = "../examples/codec_eval/candidates.rs"]
mod candidates;
#[path = "../examples/codec_eval/signal.rs"]
mod signal;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mixcast::media::{opus, Frame, FRAME_LEN};
use std::hint::black_box;

const BITRATE: u32 = 128_000;

/// Two seconds of the test signal, sounding and silent parts, as frames.
fn frames() -> Vec<Frame> {
    signal::tone(2)
        .chunks_exact(FRAME_LEN)
        .map(|c| {
            let mut f = [0f32; FRAME_LEN];
            f.copy_from_slice(c);
            f
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let frames = frames();
    let mut enc_group = c.benchmark_group("encode_20ms_stereo");
    enc_group.throughput(Throughput::Elements(1));

    // mixcast's own wrapper.
    // Cannot fail: 128 kbit/s stereo is a valid configuration of every backend.
    let mut enc = opus::Encoder::new(BITRATE).expect("encoder");
    let mut buf = [0u8; opus::MAX_PACKET];
    let mut i = 0;
    enc_group.bench_function(BenchmarkId::from_parameter("mixcast"), |b| {
        b.iter(|| {
            i = (i + 1) % frames.len();
            black_box(enc.encode(black_box(&frames[i]), &mut buf).expect("encode"))
        })
    });
    let mut packets = Vec::with_capacity(frames.len());
    let mut enc = opus::Encoder::new(BITRATE).expect("encoder");
    for f in &frames {
        let n = enc.encode(f, &mut buf).expect("encode");
        packets.push(buf[..n].to_vec());
    }

    for cand in candidates::all() {
        let mut enc = (cand.encoder)(BITRATE).expect("encoder");
        let mut i = 0;
        enc_group.bench_function(BenchmarkId::from_parameter(cand.name), |b| {
            b.iter(|| {
                i = (i + 1) % frames.len();
                black_box(enc.encode(black_box(&frames[i]), &mut buf).expect("encode"))
            })
        });
    }
    enc_group.finish();

    // Every decoder decodes the same packets: those of mixcast's encoder.
    let mut dec_group = c.benchmark_group("decode_20ms_stereo");
    dec_group.throughput(Throughput::Elements(1));
    let mut dec = opus::Decoder::new().expect("decoder");
    let mut out = [0f32; FRAME_LEN];
    let mut i = 0;
    dec_group.bench_function(BenchmarkId::from_parameter("mixcast"), |b| {
        b.iter(|| {
            i = (i + 1) % packets.len();
            black_box(
                dec.decode(black_box(&packets[i]), &mut out)
                    .expect("decode"),
            )
        })
    });
    for cand in candidates::all() {
        let mut dec = (cand.decoder)().expect("decoder");
        let mut i = 0;
        dec_group.bench_function(BenchmarkId::from_parameter(cand.name), |b| {
            b.iter(|| {
                i = (i + 1) % packets.len();
                black_box(
                    dec.decode(black_box(&packets[i]), &mut out)
                        .expect("decode"),
                )
            })
        });
    }
    dec_group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
