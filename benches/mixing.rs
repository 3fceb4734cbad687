//! Cost of one stream's mix per 20 ms tick with 1, 4, 16 and 64 WHIP publishers.
//!
//! Each publisher is a real `PublisherInput` (ring, jitter buffer, Opus decode) fed one real
//! 128 kbit/s stereo Opus packet per tick, and all of them are mixed by the real `Mixer`
//! (sum and limiter) into one frame. One iteration is one tick: push a packet into every
//! feed (the receiving thread's small copy), then mix. Criterion's throughput is in
//! publishers, so the time per publisher per tick is one over the elements per second.
//!
//! Time is virtual: the inputs are ticked at `t0 + k × 20 ms + 1 ms` with packets that
//! arrived at `t0 + k × 20 ms`, so the jitter buffer sees a steady sender however fast the
//! bench runs.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mixcast::media::mixer::Mixer;
use mixcast::media::opus::{Encoder, MAX_PACKET};
use mixcast::media::publisher::{publisher_channel, PublisherFeed, PublisherInput};
use mixcast::media::sources::{Source, ToneSource};
use mixcast::media::{Frame, FRAME_DURATION, FRAME_LEN};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Publisher counts to measure.
const COUNTS: [u32; 4] = [1, 4, 16, 64];
/// Distinct signals (so the publishers are not all decoding the very same packets).
const SIGNALS: u32 = 4;
/// Each signal is one second of packets, looped.
const PACKETS_PER_SIGNAL: usize = 50;

/// One second of a stereo sine (`hz` left, `hz` × 1.5 right) as 128 kbit/s Opus packets.
fn packets(hz: u32) -> Vec<Vec<u8>> {
    let mut enc = Encoder::new(0).expect("encoder");
    let mut tone = ToneSource::sine(hz, hz * 3 / 2, 0.1);
    let mut frame = [0f32; FRAME_LEN];
    let mut packet = [0u8; MAX_PACKET];
    (0..PACKETS_PER_SIGNAL)
        .map(|_| {
            tone.fill(&mut frame);
            let len = enc.encode(&frame, &mut packet).expect("encode");
            packet[..len].to_vec()
        })
        .collect()
}

/// A publisher input ticked at the bench's virtual time rather than the wall clock.
struct VirtualTime {
    input: PublisherInput,
    t0: Instant,
    tick: Arc<AtomicU32>,
}

impl Source for VirtualTime {
    fn fill(&mut self, out: &mut Frame) {
        let k = self.tick.load(Ordering::Relaxed);
        self.input
            .fill_at(out, self.t0 + FRAME_DURATION * k + Duration::from_millis(1));
    }

    fn describe(&self) -> String {
        self.input.describe()
    }
}

fn mixing(c: &mut Criterion) {
    let signals: Vec<Vec<Vec<u8>>> = (0..SIGNALS).map(|i| packets(300 + 170 * i)).collect();
    let mut group = c.benchmark_group("mix of WHIP publishers (one 20 ms tick)");
    for n in COUNTS {
        let t0 = Instant::now();
        let tick = Arc::new(AtomicU32::new(0));
        let mut mixer = Mixer::new();
        let mut feeds: Vec<PublisherFeed> = Vec::new();
        for _ in 0..n {
            let (feed, input) = publisher_channel().expect("decoder");
            feeds.push(feed);
            let source = VirtualTime {
                input,
                t0,
                tick: tick.clone(),
            };
            mixer.add(Box::new(source), 1.0);
        }
        let mut out = [0f32; FRAME_LEN];
        let mut k: u32 = 0;
        group.throughput(Throughput::Elements(u64::from(n)));
        group.bench_function(
            BenchmarkId::from_parameter(format!("{n} publishers")),
            |b| {
                b.iter(|| {
                    let arrival = t0 + FRAME_DURATION * k;
                    let packet = k as usize % PACKETS_PER_SIGNAL;
                    for (i, feed) in feeds.iter_mut().enumerate() {
                        let p = &signals[i % signals.len()][packet];
                        feed.push(k as u16, 960u32.wrapping_mul(k), p, arrival);
                    }
                    tick.store(k, Ordering::Relaxed);
                    mixer.mix(&mut out);
                    black_box(&out);
                    k += 1;
                })
            },
        );
        // The bench measured decoding, not an input that starved or refused its packets.
        let s = feeds[0].monitor().stats();
        assert!(s.played > 0 && s.decode_errors == 0 && s.lost == 0, "{s:?}");
    }
    group.finish();
}

criterion_group!(benches, mixing);
criterion_main!(benches);
