//! Checks on what a WHEP viewer heard of a published tone: the steady, audible stretch of
//! the decoded mix, and per channel its dominant frequency, how much of it is that tone,
//! and how little of the other channel's tone leaked in.
//!
//! Owns no state; never asserts on a signal it could not find (it says why instead).

// Each test binary that includes this module uses a different part of it.
#![allow(dead_code)]

use mixcast::media::analysis::{deinterleave, rms, Spectrum};
use mixcast::media::{FRAME_SAMPLES, SAMPLE_RATE};

/// Frames quieter than this (RMS over both channels) count as silence.
const AUDIBLE_RMS: f32 = 0.02;
/// Width of the band around a tone's frequency that holds its energy (Hann main lobe and
/// Opus's coding noise near the tone).
const BAND_HZ: f32 = 60.0;

/// The longest run of consecutive audible 20 ms frames in interleaved stereo `pcm`,
/// without its first and last frame (fade-in and fade-out of the publisher).
pub fn audible_run(pcm: &[f32]) -> &[f32] {
    let frames: Vec<bool> = pcm
        .chunks_exact(FRAME_SAMPLES)
        .map(|f| rms(f) > AUDIBLE_RMS)
        .collect();
    let (mut best_start, mut best_len) = (0, 0);
    let mut start = 0;
    for (i, &loud) in frames.iter().enumerate() {
        if !loud {
            start = i + 1;
        } else if i + 1 - start > best_len {
            best_start = start;
            best_len = i + 1 - start;
        }
    }
    if best_len < 3 {
        return &[];
    }
    &pcm[(best_start + 1) * FRAME_SAMPLES..(best_start + best_len - 1) * FRAME_SAMPLES]
}

/// What one channel of the audible stretch holds.
#[derive(Debug, Clone, Copy)]
pub struct ChannelReport {
    /// The strongest frequency, Hz.
    pub dominant_hz: f32,
    /// Share of the channel's energy near its own tone.
    pub own_fraction: f32,
    /// Share of the channel's energy near the other channel's tone.
    pub other_fraction: f32,
    /// RMS level.
    pub rms: f32,
}

fn channel(samples: &[f32], own_hz: f32, other_hz: f32) -> ChannelReport {
    let spectrum = Spectrum::new(samples, SAMPLE_RATE);
    ChannelReport {
        dominant_hz: spectrum.dominant_frequency(),
        own_fraction: spectrum.band_fraction(own_hz, BAND_HZ),
        other_fraction: spectrum.band_fraction(other_hz, BAND_HZ),
        rms: rms(samples),
    }
}

/// Checks that `pcm` (interleaved stereo from a viewer) holds at least `min_seconds` of
/// steady tone with `left_hz` on the left and `right_hz` on the right, each channel at
/// least 90% its own tone and under 1% the other's. Equal frequencies check a mono tone
/// on both channels. Returns the two channels' reports, or a description of what is wrong.
pub fn check_stereo_tone(
    pcm: &[f32],
    left_hz: f32,
    right_hz: f32,
    min_seconds: f32,
) -> Result<(ChannelReport, ChannelReport), String> {
    let run = audible_run(pcm);
    let seconds = run.len() as f32 / 2.0 / SAMPLE_RATE as f32;
    let total = pcm.len() as f32 / 2.0 / SAMPLE_RATE as f32;
    if seconds < min_seconds {
        return Err(format!(
            "only {seconds:.2} s of continuous audible audio in {total:.2} s decoded, \
             expected at least {min_seconds} s"
        ));
    }
    let (l, r) = deinterleave(run);
    let left = channel(&l, left_hz, right_hz);
    let right = channel(&r, right_hz, left_hz);
    let mut problems = Vec::new();
    for (name, report, own, other) in [
        ("left", &left, left_hz, right_hz),
        ("right", &right, right_hz, left_hz),
    ] {
        if (report.dominant_hz - own).abs() > 5.0 {
            problems.push(format!(
                "{name}: dominant {:.1} Hz, expected {own} Hz",
                report.dominant_hz
            ));
        }
        if report.own_fraction < 0.9 {
            problems.push(format!(
                "{name}: only {:.1}% of the energy near {own} Hz",
                100.0 * report.own_fraction
            ));
        }
        if own != other && report.other_fraction > 0.01 {
            problems.push(format!(
                "{name}: {:.2}% of the energy near the other channel's {other} Hz: channels leak",
                100.0 * report.other_fraction
            ));
        }
    }
    if problems.is_empty() {
        Ok((left, right))
    } else {
        Err(format!(
            "{} (in {seconds:.2} s of audible audio; left {left:?}, right {right:?})",
            problems.join("; ")
        ))
    }
}

/// A stereo tone for the checks' own test: `seconds` of `left_hz` / `right_hz` at `amp`.
pub fn synth(left_hz: f32, right_hz: f32, amp: f32, seconds: f32) -> Vec<f32> {
    let n = (seconds * SAMPLE_RATE as f32) as usize;
    let w = |hz: f32, i: usize| {
        amp * (2.0 * std::f32::consts::PI * hz * i as f32 / SAMPLE_RATE as f32).sin()
    };
    (0..n)
        .flat_map(|i| [w(left_hz, i), w(right_hz, i)])
        .collect()
}
