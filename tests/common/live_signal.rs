//! The check on what a third-party WHEP viewer decoded of the default stream `live`: the
//! built-in test signal, 440 Hz on the left and 660 Hz on the right, beeping (800 ms on,
//! 200 ms off).
//!
//! Owns no state. Unlike `tone::check_stereo_tone` (a steady tone) it analyses the whole
//! beeping signal: the gaps move no energy away from the two tones.

// Each test binary that includes this module uses a different part of it.
#![allow(dead_code)]

use mixcast::media::analysis::{deinterleave, rms, Spectrum};
use mixcast::media::{FRAME_SAMPLES, SAMPLE_RATE};

/// The test signal's left and right frequencies.
pub const LEFT_HZ: f32 = 440.0;
pub const RIGHT_HZ: f32 = 660.0;
/// Band around each tone holding its energy (the beep's gating spreads it by a few Hz).
const BAND_HZ: f32 = 60.0;

/// Checks interleaved stereo `pcm` (48 kHz) holds at least `min_seconds` of the `live`
/// signal: per channel the dominant frequency within 5 Hz of its tone, at least 80% of
/// the energy near it, under 1% near the other channel's, and the beep's gaps (10 to 30%
/// of 20 ms frames quiet). The first 100 ms (decoder start-up) are left out. Returns a
/// one-line description of what was found, or of what is wrong.
pub fn check(pcm: &[f32], min_seconds: f32) -> Result<String, String> {
    check_with_gaps(pcm, min_seconds, 0.1..0.3)
}

/// [`check`] with the share of quiet 20 ms frames allowed in `quiet_share`: through a
/// lossy path a player that does not conceal (aiortc) drops lost frames from its output
/// and drifts across the beep's gaps, so fewer of its frames are quiet.
pub fn check_with_gaps(
    pcm: &[f32],
    min_seconds: f32,
    quiet_share: std::ops::Range<f32>,
) -> Result<String, String> {
    let skip = 2 * (SAMPLE_RATE / 10) as usize;
    let pcm = pcm.get(skip..).unwrap_or_default();
    let seconds = pcm.len() as f32 / 2.0 / SAMPLE_RATE as f32;
    if seconds < min_seconds {
        return Err(format!(
            "{seconds:.2} s of audio decoded, expected at least {min_seconds} s"
        ));
    }
    let (left, right) = deinterleave(pcm);
    let mut problems = Vec::new();
    let mut found = Vec::new();
    for (name, samples, own, other) in [
        ("left", &left, LEFT_HZ, RIGHT_HZ),
        ("right", &right, RIGHT_HZ, LEFT_HZ),
    ] {
        let spectrum = Spectrum::new(samples, SAMPLE_RATE);
        let dominant = spectrum.dominant_frequency();
        let own_fraction = spectrum.band_fraction(own, BAND_HZ);
        let other_fraction = spectrum.band_fraction(other, BAND_HZ);
        let frames: Vec<f32> = samples.chunks_exact(FRAME_SAMPLES).map(rms).collect();
        let quiet = frames.iter().filter(|&&r| r < 0.01).count() as f32 / frames.len() as f32;
        found.push(format!(
            "{name} {dominant:.1} Hz ({:.1}% of energy, {:.0}% quiet frames)",
            100.0 * own_fraction,
            100.0 * quiet
        ));
        if (dominant - own).abs() > 5.0 {
            problems.push(format!(
                "{name}: dominant {dominant:.1} Hz, expected {own} Hz"
            ));
        }
        if own_fraction < 0.8 {
            problems.push(format!(
                "{name}: only {:.1}% of the energy near {own} Hz",
                100.0 * own_fraction
            ));
        }
        if other_fraction > 0.01 {
            problems.push(format!(
                "{name}: {:.2}% of the energy near {other} Hz: channels leak or are swapped",
                100.0 * other_fraction
            ));
        }
        if !quiet_share.contains(&quiet) {
            problems.push(format!(
                "{name}: {:.0}% of 20 ms frames quiet, expected {:.0}% to {:.0}% (the beep)",
                100.0 * quiet,
                100.0 * quiet_share.start,
                100.0 * quiet_share.end
            ));
        }
    }
    let found = format!("{}, {seconds:.1} s", found.join(", "));
    if problems.is_empty() {
        Ok(found)
    } else {
        Err(format!("{} (found {found})", problems.join("; ")))
    }
}
