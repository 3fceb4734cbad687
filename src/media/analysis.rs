//! Signal checks used by tests, examples and the load tool: dominant frequency, level, and
//! how much of a signal's energy lies near a given frequency.
//!
//! These are measurement helpers, not part of the audio path: they allocate and plan an FFT
//! per call, so they must never be called from the TX thread.

use rustfft::{num_complex::Complex, FftPlanner};

/// The magnitude spectrum of one channel, Hann-windowed and zero-padded to a power of two
/// (at least twice the input length, so peaks fall between fewer bins).
///
/// Build it once and ask several questions of it (dominant frequency, energy in bands).
#[derive(Debug, Clone)]
pub struct Spectrum {
    /// Power (|X|²) per bin, bins 0..=fft_len/2.
    power: Vec<f64>,
    /// Hz per bin.
    bin_hz: f64,
    /// RMS of the unwindowed input, to turn energy fractions into levels.
    rms: f32,
    /// Bins below this hold the window's main lobe around DC: ignored.
    first_bin: usize,
}

impl Spectrum {
    /// Analyses `samples` (one channel at `rate` Hz). An empty input gives an empty spectrum
    /// (every question answers 0).
    pub fn new(samples: &[f32], rate: u32) -> Self {
        let n = samples.len();
        if n < 2 || rate == 0 {
            return Spectrum {
                power: Vec::new(),
                bin_hz: 0.0,
                rms: rms(samples),
                first_bin: 0,
            };
        }
        let fft_len = (2 * n).next_power_of_two();
        let mut buf: Vec<Complex<f64>> = Vec::with_capacity(fft_len);
        // Periodic Hann window over the real samples; the rest is zero padding.
        let denom = (n - 1) as f64;
        buf.extend(samples.iter().enumerate().map(|(i, &x)| {
            let w = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / denom).cos();
            let x = if x.is_finite() { x as f64 } else { 0.0 };
            Complex::new(x * w, 0.0)
        }));
        buf.resize(fft_len, Complex::new(0.0, 0.0));
        FftPlanner::<f64>::new()
            .plan_fft_forward(fft_len)
            .process(&mut buf);
        let power = buf[..=fft_len / 2].iter().map(|c| c.norm_sqr()).collect();
        Spectrum {
            power,
            bin_hz: rate as f64 / fft_len as f64,
            rms: rms(samples),
            // The Hann main lobe spans ±2 unpadded bins.
            first_bin: (2 * fft_len).div_ceil(n) + 1,
        }
    }

    /// The frequency (Hz) of the strongest component, refined between bins by fitting a
    /// parabola to the log magnitude of the peak and its neighbours (very accurate for a
    /// Hann window). DC (0 Hz) is ignored. 0.0 for silence or an empty input.
    pub fn dominant_frequency(&self) -> f32 {
        // Skip DC's main lobe, where an offset would otherwise win over a quiet tone.
        let first = self.first_bin;
        if self.power.len() <= first + 1 {
            return 0.0;
        }
        let (peak, &peak_power) = self.power[first..]
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, p)| (i + first, p))
            .unwrap_or((0, &0.0)); // non-empty slice: checked above
        if peak_power <= 1e-20 {
            return 0.0;
        }
        let mut offset = 0.0;
        if peak + 1 < self.power.len() {
            // ln of power is twice ln of magnitude: the vertex's position is the same.
            let a = self.power[peak - 1].max(1e-30).ln();
            let b = peak_power.ln();
            let c = self.power[peak + 1].max(1e-30).ln();
            let d = a - 2.0 * b + c;
            if d < 0.0 {
                offset = (0.5 * (a - c) / d).clamp(-0.5, 0.5);
            }
        }
        ((peak as f64 + offset) * self.bin_hz) as f32
    }

    /// The fraction (0..=1) of the signal's energy that lies within `width` Hz centred on
    /// `freq` (DC and the few bins next to it are excluded from the total). A pure tone at `freq` gives ~1.0, a tone
    /// elsewhere ~0.0. `width` should span at least 4 bins (`4 * rate / samples.len()` Hz)
    /// to hold the Hann window's main lobe.
    pub fn band_fraction(&self, freq: f32, width: f32) -> f32 {
        if self.power.len() <= self.first_bin || self.bin_hz <= 0.0 {
            return 0.0;
        }
        let total: f64 = self.power[self.first_bin..].iter().sum();
        if total <= 0.0 {
            return 0.0;
        }
        let lo = ((freq - width / 2.0).max(0.0) as f64 / self.bin_hz).ceil() as usize;
        let hi = ((freq + width / 2.0).max(0.0) as f64 / self.bin_hz).floor() as usize;
        let lo = lo.max(self.first_bin);
        let hi = hi.min(self.power.len() - 1);
        if lo > hi {
            return 0.0;
        }
        let band: f64 = self.power[lo..=hi].iter().sum();
        (band / total).clamp(0.0, 1.0) as f32
    }

    /// The RMS level of the part of the signal within `width` Hz around `freq` (Parseval:
    /// the input's RMS times the square root of the band's energy fraction). A sine of
    /// amplitude `a` at `freq` gives about `a / √2`.
    pub fn band_rms(&self, freq: f32, width: f32) -> f32 {
        self.rms * self.band_fraction(freq, width).sqrt()
    }
}

/// The frequency (Hz) of the strongest component of `samples` (one channel at `rate` Hz).
/// Uses a Hann-windowed FFT with interpolation between bins: half a second of a clean tone
/// is located within a fraction of a hertz. 0.0 for silence or an empty input.
pub fn dominant_frequency(samples: &[f32], rate: u32) -> f32 {
    Spectrum::new(samples, rate).dominant_frequency()
}

/// The fraction (0..=1) of the energy of `samples` (one channel at `rate` Hz) that lies
/// within `width` Hz centred on `freq`. For "are both 440 Hz and 1000 Hz present?" ask
/// for each and require a good share (say > 0.2) of each; see [`Spectrum::band_fraction`].
pub fn band_energy(samples: &[f32], rate: u32, freq: f32, width: f32) -> f32 {
    Spectrum::new(samples, rate).band_fraction(freq, width)
}

/// Root-mean-square level of `samples` (0.0 for an empty slice).
pub fn rms(samples: &[f32]) -> f32 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|&x| (x as f64) * (x as f64)).sum();
    (sum / samples.len() as f64).sqrt() as f32
}

/// The largest absolute sample value of `samples` (0.0 for an empty slice).
pub fn peak(samples: &[f32]) -> f32 {
    samples.iter().fold(0.0f32, |m, &x| m.max(x.abs()))
}

/// Splits interleaved stereo into (left, right).
pub fn deinterleave(stereo: &[f32]) -> (Vec<f32>, Vec<f32>) {
    (
        stereo.iter().step_by(2).copied().collect(),
        stereo.iter().skip(1).step_by(2).copied().collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f32, amp: f32, rate: u32, secs: f32) -> Vec<f32> {
        let n = (rate as f32 * secs) as usize;
        (0..n)
            .map(|i| amp * (2.0 * std::f32::consts::PI * freq * i as f32 / rate as f32).sin())
            .collect()
    }

    #[test]
    fn finds_tones_within_two_hertz() {
        for &secs in &[0.5f32, 1.0, 2.0] {
            for &f in &[440.0f32, 660.0, 1000.0, 1234.5, 97.0] {
                let got = dominant_frequency(&sine(f, 0.25, 48_000, secs), 48_000);
                assert!((got - f).abs() < 2.0, "{f} Hz over {secs} s: got {got}");
            }
        }
        // Another rate, and a tone sitting between bins.
        let got = dominant_frequency(&sine(441.3, 0.5, 44_100, 0.5), 44_100);
        assert!((got - 441.3).abs() < 0.5, "got {got}");
    }

    #[test]
    fn distinguishes_440_from_660() {
        let l = dominant_frequency(&sine(440.0, 0.25, 48_000, 0.5), 48_000);
        let r = dominant_frequency(&sine(660.0, 0.25, 48_000, 0.5), 48_000);
        assert!(
            (l - 440.0).abs() < 2.0 && (r - 660.0).abs() < 2.0,
            "{l} {r}"
        );
    }

    #[test]
    fn stronger_of_two_tones_wins_and_both_show_in_bands() {
        let a = sine(440.0, 0.3, 48_000, 1.0);
        let b = sine(1000.0, 0.2, 48_000, 1.0);
        let mix: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        let s = Spectrum::new(&mix, 48_000);
        assert!((s.dominant_frequency() - 440.0).abs() < 2.0);
        let f440 = s.band_fraction(440.0, 20.0);
        let f1000 = s.band_fraction(1000.0, 20.0);
        // Energies 0.09 : 0.04 → 69 % and 31 %.
        assert!((f440 - 0.69).abs() < 0.03, "{f440}");
        assert!((f1000 - 0.31).abs() < 0.03, "{f1000}");
        assert!(s.band_fraction(700.0, 20.0) < 0.001);
        assert!((s.band_rms(440.0, 20.0) - 0.3 / 2f32.sqrt()).abs() < 0.01);
        assert!((band_energy(&b, 48_000, 1000.0, 20.0) - 1.0).abs() < 0.01);
    }

    #[test]
    fn silence_and_empty_give_zero() {
        assert_eq!(dominant_frequency(&[], 48_000), 0.0);
        assert_eq!(dominant_frequency(&[0.0; 4800], 48_000), 0.0);
        assert_eq!(band_energy(&[0.0; 4800], 48_000, 440.0, 20.0), 0.0);
        assert_eq!(rms(&[]), 0.0);
        assert_eq!(peak(&[]), 0.0);
    }

    #[test]
    fn dc_offset_does_not_hide_a_tone() {
        let s: Vec<f32> = sine(440.0, 0.1, 48_000, 0.5)
            .iter()
            .map(|x| x + 0.5)
            .collect();
        assert!((dominant_frequency(&s, 48_000) - 440.0).abs() < 2.0);
    }

    #[test]
    fn rms_of_sine_and_square() {
        let s = sine(440.0, 0.5, 48_000, 1.0);
        assert!((rms(&s) - 0.5 / 2f32.sqrt()).abs() < 1e-3);
        assert!((rms(&[0.5, -0.5, 0.5, -0.5]) - 0.5).abs() < 1e-6);
        assert!((peak(&[0.1, -0.7, 0.3]) - 0.7).abs() < 1e-6);
    }

    #[test]
    fn deinterleave_splits_channels() {
        let (l, r) = deinterleave(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(l, vec![1.0, 3.0, 5.0]);
        assert_eq!(r, vec![2.0, 4.0, 6.0]);
    }
}
