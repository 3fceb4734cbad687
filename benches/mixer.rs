//! Cost of one mixer tick (8 inputs) and of resampling a second of 44.1 kHz audio.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use mixcast::media::mixer::Mixer;
use mixcast::media::sources::resample::Resampler;
use mixcast::media::sources::ToneSource;
use mixcast::media::FRAME_LEN;

fn mix_eight_tones(c: &mut Criterion) {
    let mut mixer = Mixer::new();
    for i in 0..8 {
        mixer.add(Box::new(ToneSource::sine(440 + 10 * i, 660, 0.5)), 1.0);
    }
    let mut out = [0.0; FRAME_LEN];
    c.bench_function("mix 8 inputs, limiting (one 20 ms frame)", |b| {
        b.iter(|| {
            mixer.mix(&mut out);
            black_box(&out);
        })
    });
}

fn resample_one_second(c: &mut Criterion) {
    let input: Vec<f32> = (0..44_100 * 2)
        .map(|i| ((i / 2) as f32 * 0.0627).sin() * 0.5)
        .collect();
    let mut resampler = Resampler::new(44_100, 48_000);
    let mut out = Vec::with_capacity(100_000);
    c.bench_function("resample 1 s of 44.1 kHz stereo to 48 kHz", |b| {
        b.iter(|| {
            out.clear();
            resampler.process(black_box(&input), &mut out);
            black_box(&out);
        })
    });
}

criterion_group!(benches, mix_eight_tones, resample_one_second);
criterion_main!(benches);
