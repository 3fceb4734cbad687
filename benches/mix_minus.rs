//! CPU per 20 ms tick of one stream with 1, 4, 16 and 64 talkers and 1,000 listen-only
//! viewers, side by side in one run: the talkers all speaking (each its own mix-minus and
//! Opus encode), all silent (each sent the shared frame), and no talkers at all.
//!
//! One iteration is one tick as the mixing TX thread does it (`Egress::encode` and the
//! direct fan-out, without the sockets): the stream's inputs summed, the talkers'
//! decisions, the limiter, the talkers' mix-minus mixes and encodes, the shared encode,
//! then for every viewer and talker its RTP header and SRTP (AES-GCM) into a datagram
//! buffer. The stream has a steady program input (a tone) besides the talkers, so its
//! shared mix is always encoded; the talkers are tones of their own (the publishers'
//! jitter buffers and decoders are measured by `benches/mixing.rs`).
//!
//! `cargo bench --bench mix_minus`.

use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mixcast::media::mix_encoder::MixEncoder;
use mixcast::media::mix_minus::{Pick, Talkers};
use mixcast::media::mixer::{InputId, Mixer};
use mixcast::media::opus::Encoder;
use mixcast::media::sources::{Source, ToneSource};
use mixcast::media::{Frame, FRAME_LEN};
use mixcast::net::srtp::{write_rtp_header, SrtpSender, RTP_HEADER_LEN, TAG_LEN};

/// Talker counts to measure.
const TALKERS: [usize; 4] = [1, 4, 16, 64];
/// Listen-only viewers of the stream.
const VIEWERS: usize = 1_000;

/// A talker's voice: a tone, or silence.
struct Voice {
    tone: ToneSource,
    speaking: bool,
}

impl Source for Voice {
    fn fill(&mut self, out: &mut Frame) {
        self.tone.fill(out);
        if !self.speaking {
            out.fill(0.0);
        }
    }
    fn describe(&self) -> String {
        "voice".into()
    }
}

/// One stream and its peers, as the mixing thread holds them.
struct Stream {
    mixer: Mixer,
    encoder: MixEncoder,
    talkers: Talkers,
    inputs: Vec<InputId>,
    pcm: Box<Frame>,
    /// One SRTP context per peer (viewers, then talkers), and each one's next sequence.
    peers: Vec<(SrtpSender, u16, Option<InputId>)>,
    buf: Vec<u8>,
    time: u32,
}

impl Stream {
    fn new(talkers: usize, speaking: bool) -> Stream {
        let mut mixer = Mixer::new();
        mixer.add(Box::new(ToneSource::sine(220, 330, 0.1)), 1.0);
        let mut list = Talkers::new(0);
        let mut inputs = Vec::new();
        for i in 0..talkers {
            let hz = 300 + 25 * i as u32;
            let voice = Voice {
                tone: ToneSource::sine(hz, hz + 10, 0.02),
                speaking,
            };
            let id = mixer.add(Box::new(voice), 1.0);
            list.add(&mut mixer, id).expect("talker encoder");
            inputs.push(id);
        }
        let key = |i: usize| {
            let mut k = [7u8; 16];
            k[..8].copy_from_slice(&(i as u64).to_be_bytes());
            SrtpSender::from_master(&k, &[3u8; 12]).expect("srtp")
        };
        let mut peers: Vec<_> = (0..VIEWERS).map(|i| (key(i), 0u16, None)).collect();
        peers.extend(
            inputs
                .iter()
                .enumerate()
                .map(|(i, &id)| (key(VIEWERS + i), 0, Some(id))),
        );
        Stream {
            mixer,
            encoder: MixEncoder::new(Encoder::new(0).expect("encoder")),
            talkers: list,
            inputs,
            pcm: Box::new([0.0; FRAME_LEN]),
            peers,
            buf: vec![0; 1500],
            time: 0,
        }
    }

    /// One tick; returns the bytes sent (so that nothing is optimised away).
    fn tick(&mut self, now: Instant) -> usize {
        self.mixer.sum_at(&mut self.pcm, now);
        self.talkers.decide(&self.mixer);
        self.mixer.limit(&mut self.pcm);
        self.talkers.encode(&self.mixer, &self.pcm);
        let (shared, _) = self.encoder.encode(&mut self.pcm).expect("encode");
        let mut sent = 0;
        for (srtp, seq, minus) in &mut self.peers {
            let frame: &Arc<[u8]> = match minus.map(|id| self.talkers.pick(id)) {
                Some(Pick::Own(f)) => f,
                Some(Pick::Nothing) => continue,
                _ => &shared,
            };
            let len = RTP_HEADER_LEN + frame.len();
            write_rtp_header(&mut self.buf, false, 111, *seq, self.time, 1234);
            self.buf[RTP_HEADER_LEN..len].copy_from_slice(frame);
            sent += srtp
                .protect(&mut self.buf, len, RTP_HEADER_LEN, 0)
                .unwrap_or(0);
            *seq = seq.wrapping_add(1);
        }
        debug_assert!(self.buf.len() >= 1500 - TAG_LEN);
        self.time = self.time.wrapping_add(960);
        sent
    }
}

fn ticks(c: &mut Criterion) {
    let mut group = c.benchmark_group("tick_1000_viewers");
    let now = Instant::now();
    let mut baseline = Stream::new(0, false);
    group.bench_function(BenchmarkId::new("no_talkers", 0), |b| {
        b.iter(|| baseline.tick(now))
    });
    for n in TALKERS {
        for (name, speaking) in [("talkers_silent", false), ("talkers_speaking", true)] {
            let mut s = Stream::new(n, speaking);
            // Past the hangover: silent talkers are on the shared frame.
            for _ in 0..20 {
                s.tick(now);
            }
            assert_eq!(s.inputs.len(), n);
            group.bench_function(BenchmarkId::new(name, n), |b| b.iter(|| s.tick(now)));
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = ticks
}
criterion_main!(benches);
