//! The built-in test signal (440 Hz left, 660 Hz right, 0.25, gated 800 ms on / 200 ms
//! off with 5 ms fades) and a small FFT analysis, for the codec comparison.

#![allow(dead_code)]

use rustfft::{num_complex::Complex32, FftPlanner};
use std::f32::consts::PI;

/// Sample rate of the test signal.
pub const RATE: usize = 48_000;

/// `seconds` of the test signal, interleaved stereo.
pub fn tone(seconds: usize) -> Vec<f32> {
    let n = seconds * RATE;
    let mut out = Vec::with_capacity(n * 2);
    for i in 0..n {
        let t = i as f32 / RATE as f32;
        let in_cycle = (i % RATE) as f32 / RATE as f32;
        let gate = if in_cycle >= 0.8 {
            0.0
        } else {
            (in_cycle / 0.005).min((0.8 - in_cycle) / 0.005).min(1.0)
        };
        out.push(0.25 * gate * (2.0 * PI * 440.0 * t).sin());
        out.push(0.25 * gate * (2.0 * PI * 660.0 * t).sin());
    }
    out
}

/// Power spectrum (Hann window) of one channel of interleaved stereo `pcm[from..to]`
/// (indices in samples per channel).
fn spectrum(pcm: &[f32], channel: usize, from: usize, to: usize) -> Vec<f32> {
    let n = to - from;
    let mut buf: Vec<Complex32> = (0..n)
        .map(|i| {
            let w = 0.5 - 0.5 * (2.0 * PI * i as f32 / n as f32).cos();
            Complex32::new(pcm[(from + i) * 2 + channel] * w, 0.0)
        })
        .collect();
    FftPlanner::new().plan_fft_forward(n).process(&mut buf);
    buf[..n / 2].iter().map(|c| c.norm_sqr()).collect()
}

/// What one channel of a window holds.
#[derive(Debug, Clone, Copy)]
pub struct ChannelReport {
    /// The dominant frequency (Hz), parabolic-interpolated.
    pub freq: f32,
    /// Power near `own` Hz over power near `other` Hz, in dB.
    pub separation_db: f32,
    /// RMS of the window.
    pub rms: f32,
}

/// Analyses channel `channel` of `pcm[from..to]`: dominant frequency and the power at
/// `own` Hz against the power at `other` Hz.
pub fn analyse(
    pcm: &[f32],
    channel: usize,
    from: usize,
    to: usize,
    own: f32,
    other: f32,
) -> ChannelReport {
    let n = to - from;
    let spec = spectrum(pcm, channel, from, to);
    let hz_per_bin = RATE as f32 / n as f32;
    let peak = (1..spec.len() - 1)
        .max_by(|&a, &b| spec[a].total_cmp(&spec[b]))
        .unwrap_or(1);
    let (l, c, r) = (
        spec[peak - 1].sqrt(),
        spec[peak].sqrt(),
        spec[peak + 1].sqrt(),
    );
    let denom = l - 2.0 * c + r;
    let delta = if denom.abs() > f32::EPSILON {
        0.5 * (l - r) / denom
    } else {
        0.0
    };
    let freq = (peak as f32 + delta) * hz_per_bin;
    let band = |hz: f32| -> f32 {
        let centre = (hz / hz_per_bin).round() as usize;
        spec[centre.saturating_sub(3)..=(centre + 3).min(spec.len() - 1)]
            .iter()
            .sum::<f32>()
    };
    let separation_db = 10.0 * ((band(own) + 1e-20) / (band(other) + 1e-20)).log10();
    let rms = ((from..to)
        .map(|i| pcm[i * 2 + channel].powi(2))
        .sum::<f32>()
        / n as f32)
        .sqrt();
    ChannelReport {
        freq,
        separation_db,
        rms,
    }
}

/// RMS of one channel over `pcm[from..to]` (samples per channel).
pub fn rms(pcm: &[f32], channel: usize, from: usize, to: usize) -> f32 {
    let n = (to - from) as f32;
    ((from..to)
        .map(|i| pcm[i * 2 + channel].powi(2))
        .sum::<f32>()
        / n)
        .sqrt()
}

/// `seconds` of a denser, music-like stereo signal: a different chord on each side
/// (six harmonics per note, slow tremolo) over quiet noise. For the quality figure only.
pub fn chords(seconds: usize) -> Vec<f32> {
    let left = [220.0f32, 261.63, 329.63];
    let right = [196.0f32, 246.94, 293.66, 392.0];
    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut noise = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let note = |f: f32, t: f32| -> f32 {
        (1..=6)
            .map(|h| (2.0 * PI * f * h as f32 * t).sin() / h as f32)
            .sum::<f32>()
    };
    let n = seconds * RATE;
    let mut out = Vec::with_capacity(n * 2);
    for i in 0..n {
        let t = i as f32 / RATE as f32;
        let trem = 0.8 + 0.2 * (2.0 * PI * 3.0 * t).sin();
        let l: f32 = left.iter().map(|&f| note(f, t)).sum::<f32>() * 0.07 * trem;
        let r: f32 = right.iter().map(|&f| note(f, t)).sum::<f32>() * 0.06 * trem;
        out.push(l + 0.01 * noise());
        out.push(r + 0.01 * noise());
    }
    out
}
