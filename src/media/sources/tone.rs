//! The built-in test signal and plain sine tones, synthesised sample-exactly from a shared
//! one-second sine table.
//!
//! `fill` never allocates and never blocks: it is two table look-ups and a multiply per
//! sample. Frequencies are whole hertz, so one second holds a whole number of cycles and the
//! phase, computed from the sample index within the second, never drifts.

use super::Source;
use crate::media::{Frame, FRAME_SAMPLES, SAMPLE_RATE};
use std::sync::OnceLock;

/// Left-channel frequency of the test signal.
pub const TONE_LEFT_HZ: u32 = 440;
/// Right-channel frequency of the test signal.
pub const TONE_RIGHT_HZ: u32 = 660;
/// Peak amplitude of each channel of the test signal.
pub const TONE_AMPLITUDE: f32 = 0.25;
/// Samples per gating cycle (1 s).
const CYCLE: u32 = SAMPLE_RATE;
/// Samples per cycle during which the test signal sounds (800 ms).
pub const TONE_ON_SAMPLES: u32 = SAMPLE_RATE / 1000 * 800;
/// Length of each linear fade of the gate (5 ms).
pub const TONE_FADE_SAMPLES: u32 = SAMPLE_RATE / 1000 * 5;

/// `sin(2π k / SAMPLE_RATE)` for k in 0..SAMPLE_RATE, built on first use.
fn sine_table() -> &'static [f32] {
    static TABLE: OnceLock<Box<[f32]>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0..SAMPLE_RATE)
            .map(|k| (2.0 * std::f64::consts::PI * k as f64 / SAMPLE_RATE as f64).sin() as f32)
            .collect()
    })
}

/// The gate's gain at sample `n` (0..CYCLE) of the cycle: linear fade in over the first
/// 5 ms, full until 5 ms before 800 ms, linear fade out, then silence.
fn gate(n: u32) -> f32 {
    if n < TONE_FADE_SAMPLES {
        n as f32 / TONE_FADE_SAMPLES as f32
    } else if n < TONE_ON_SAMPLES - TONE_FADE_SAMPLES {
        1.0
    } else if n < TONE_ON_SAMPLES {
        (TONE_ON_SAMPLES - n) as f32 / TONE_FADE_SAMPLES as f32
    } else {
        0.0
    }
}

/// A stereo sine source: one whole-hertz frequency per channel, optionally gated like the
/// test signal ("beep beep": 800 ms on, 200 ms off).
#[derive(Debug, Clone)]
pub struct ToneSource {
    left_hz: u32,
    right_hz: u32,
    amplitude: f32,
    gated: bool,
    /// Sample index within the current one-second cycle.
    pos: u32,
    /// Table indices of the next sample per channel: `pos * hz mod SAMPLE_RATE`, kept
    /// incrementally (exact integers, so no drift).
    phase: [u32; 2],
    table: &'static [f32],
}

impl ToneSource {
    /// The built-in test signal: 440 Hz left, 660 Hz right, amplitude 0.25, sounding for the
    /// first 800 ms of every second with 5 ms linear fades.
    pub fn new() -> Self {
        ToneSource {
            left_hz: TONE_LEFT_HZ,
            right_hz: TONE_RIGHT_HZ,
            amplitude: TONE_AMPLITUDE,
            gated: true,
            pos: 0,
            phase: [0, 0],
            table: sine_table(),
        }
    }

    /// A continuous (ungated) sine per channel. Frequencies above Nyquist (24 kHz) alias as
    /// sampling would; a non-finite amplitude gives silence.
    pub fn sine(left_hz: u32, right_hz: u32, amplitude: f32) -> Self {
        ToneSource {
            left_hz: left_hz % SAMPLE_RATE,
            right_hz: right_hz % SAMPLE_RATE,
            amplitude: if amplitude.is_finite() {
                amplitude
            } else {
                0.0
            },
            gated: false,
            pos: 0,
            phase: [0, 0],
            table: sine_table(),
        }
    }
}

impl Default for ToneSource {
    fn default() -> Self {
        Self::new()
    }
}

impl Source for ToneSource {
    fn fill(&mut self, out: &mut Frame) {
        let step = [self.left_hz, self.right_hz];
        for frame in out.chunks_exact_mut(2) {
            let g = if self.gated { gate(self.pos) } else { 1.0 } * self.amplitude;
            for c in 0..2 {
                // phase < CYCLE = table length, and step < CYCLE: one subtraction wraps.
                frame[c] = g * self.table[self.phase[c] as usize];
                self.phase[c] += step[c];
                if self.phase[c] >= CYCLE {
                    self.phase[c] -= CYCLE;
                }
            }
            self.pos += 1;
            if self.pos == CYCLE {
                self.pos = 0;
            }
        }
        debug_assert_eq!(out.len() / 2, FRAME_SAMPLES);
    }

    fn describe(&self) -> String {
        if self.gated {
            format!("tone {}/{} Hz (beeping)", self.left_hz, self.right_hz)
        } else {
            format!("sine {}/{} Hz", self.left_hz, self.right_hz)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::analysis::{deinterleave, dominant_frequency, peak, rms};
    use crate::media::FRAME_LEN;

    fn render(src: &mut dyn Source, frames: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(frames * FRAME_LEN);
        let mut f = [0.0; FRAME_LEN];
        for _ in 0..frames {
            src.fill(&mut f);
            out.extend_from_slice(&f);
        }
        out
    }

    #[test]
    fn test_signal_frequencies_per_channel() {
        // 2 s, so both the sounding parts and the gaps are in it.
        let (l, r) = deinterleave(&render(&mut ToneSource::new(), 100));
        let fl = dominant_frequency(&l, SAMPLE_RATE);
        let fr = dominant_frequency(&r, SAMPLE_RATE);
        assert!((fl - 440.0).abs() < 2.0, "left {fl}");
        assert!((fr - 660.0).abs() < 2.0, "right {fr}");
        // The sounding part of the first second is a steady 0.25 sine.
        let on = &l[1000..38_000];
        assert!((peak(on) - 0.25).abs() < 1e-3);
        assert!((rms(on) - 0.25 / 2f32.sqrt()).abs() < 1e-3);
    }

    #[test]
    fn gap_is_silent_and_cycle_repeats() {
        let s = render(&mut ToneSource::new(), 100);
        let (l, r) = deinterleave(&s);
        for second in 0..2 {
            let base = second * SAMPLE_RATE as usize;
            let gap = base + TONE_ON_SAMPLES as usize..base + SAMPLE_RATE as usize;
            assert_eq!(peak(&l[gap.clone()]), 0.0, "gap {second} left");
            assert_eq!(peak(&r[gap]), 0.0, "gap {second} right");
            // Sounding between the fades.
            let on = base + 240..base + 38_160;
            assert!(peak(&l[on.clone()]) > 0.24 && peak(&r[on]) > 0.24);
        }
        // Second 2 equals second 1 exactly (phase continuous, no drift).
        assert_eq!(&s[..96_000], &s[96_000..]);
    }

    #[test]
    fn fades_are_linear_and_short() {
        let s = render(&mut ToneSource::new(), 50);
        let (l, _) = deinterleave(&s);
        // The envelope never exceeds the gate's ramp during the fades.
        for (n, &x) in l.iter().enumerate().take(240) {
            assert!(x.abs() <= 0.25 * n as f32 / 240.0 + 1e-6, "fade in at {n}");
        }
        for (n, &x) in l.iter().enumerate().take(38_400).skip(38_160) {
            let g = (38_400 - n) as f32 / 240.0;
            assert!(x.abs() <= 0.25 * g + 1e-6, "fade out at {n}");
        }
        // No step larger than a full-level 660 Hz sine can make between samples.
        let max_step = 0.25 * 2.0 * std::f32::consts::PI * 660.0 / 48_000.0 * 1.05;
        for w in s.chunks_exact(2).collect::<Vec<_>>().windows(2) {
            assert!((w[1][0] - w[0][0]).abs() <= max_step);
            assert!((w[1][1] - w[0][1]).abs() <= max_step);
        }
    }

    #[test]
    fn sine_is_continuous_and_ungated() {
        let mut src = ToneSource::sine(1000, 250, 0.5);
        let (l, r) = deinterleave(&render(&mut src, 75));
        assert!((dominant_frequency(&l, SAMPLE_RATE) - 1000.0).abs() < 2.0);
        assert!((dominant_frequency(&r, SAMPLE_RATE) - 250.0).abs() < 2.0);
        assert!((rms(&l[45_000..]) - 0.5 / 2f32.sqrt()).abs() < 1e-3);
    }
}
