//! A streaming stereo sample-rate converter: Kaiser-windowed sinc, polyphase.
//!
//! Output sample `n` sits at input time `n * M / L` where `L / M` is the rate ratio in
//! lowest terms, so the position is tracked exactly in integers and never drifts. When `L`
//! is small (every common rate: 8, 11.025, 16, 22.05, 32, 44.1, 88.2, 96 kHz → 48 kHz has
//! `L ≤ 640`) each output uses a precomputed filter row for its exact phase; for odd rates
//! with a huge `L` the filter is interpolated between 1024 precomputed phases.
//!
//! The filter has 96 taps at the lower of the two rates (more when downsampling), a Kaiser
//! window with β = 8.6 (about -86 dB stop band) and its -6 dB point at 94 % of the lower
//! Nyquist frequency: flat to about 19.5 kHz for 44.1 kHz input.
//!
//! It allocates only while its internal buffers grow to the size of the largest input
//! chunk; it is meant for a decoder thread, not for the TX thread.

/// Taps on each side of the centre, counted at the lower of the two rates.
const HALF_TAPS: usize = 48;
/// Kaiser window β: trades stop-band depth against transition width.
const KAISER_BETA: f64 = 8.6;
/// Cut-off (-6 dB) as a fraction of the lower rate's Nyquist frequency.
const ROLLOFF: f64 = 0.94;
/// Largest number of exact phases before we switch to interpolated phases.
const MAX_EXACT_PHASES: u64 = 1024;
/// Number of phases tabulated (plus one) when interpolating between phases.
const INTERP_PHASES: usize = 1024;

/// Converts interleaved stereo from one rate to another, chunk by chunk, keeping the
/// filter's history between chunks so the output is continuous.
#[derive(Debug, Clone)]
pub struct Resampler {
    in_rate: u32,
    out_rate: u32,
    /// Upsampling factor L (output rate / gcd).
    l: u64,
    /// Downsampling factor M (input rate / gcd).
    m: u64,
    /// Taps per phase (2 × half).
    taps: usize,
    half: usize,
    /// Filter rows, `taps` coefficients each.
    table: Vec<f32>,
    /// Whether row `rem` is the exact phase `rem / L`; otherwise rows are `INTERP_PHASES`
    /// evenly spaced phases plus one.
    exact: bool,
    /// Pending input per channel, starting `half - 1` samples before the current position.
    hist: [Vec<f32>; 2],
    /// Index in `hist` of the input sample at or just before the next output's time.
    pos: usize,
    /// Fractional part of the next output's time, in units of 1/L.
    rem: u64,
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Modified Bessel function of the first kind, order 0 (power series).
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let q = x * x / 4.0;
    for k in 1..64 {
        term *= q / (k * k) as f64;
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    sum
}

impl Resampler {
    /// A converter from `in_rate` to `out_rate` Hz (both non-zero; a zero rate is treated
    /// as equal to the other, i.e. no conversion).
    pub fn new(in_rate: u32, out_rate: u32) -> Self {
        let (in_rate, out_rate) = match (in_rate, out_rate) {
            (0, o) => (o.max(1), o.max(1)),
            (i, 0) => (i, i),
            r => r,
        };
        let g = gcd(in_rate as u64, out_rate as u64);
        let (l, m) = (out_rate as u64 / g, in_rate as u64 / g);
        let ratio = l as f64 / m as f64;
        // Cut-off relative to the input's Nyquist frequency, and the filter's half length
        // in input samples (longer when downsampling, where the cut-off is lower).
        let cutoff = ratio.min(1.0) * ROLLOFF;
        let half = if ratio < 1.0 {
            (HALF_TAPS as f64 / ratio).ceil() as usize
        } else {
            HALF_TAPS
        };
        let taps = 2 * half;
        let exact = l <= MAX_EXACT_PHASES;
        let rows = if exact { l as usize } else { INTERP_PHASES + 1 };
        let i0_beta = bessel_i0(KAISER_BETA);
        let mut table = Vec::with_capacity(rows * taps);
        for row in 0..rows {
            let frac = if exact {
                row as f64 / l as f64
            } else {
                row as f64 / INTERP_PHASES as f64
            };
            let start = table.len();
            for k in 0..taps {
                // Distance (input samples) from the output's time to tap k's sample.
                let d = k as f64 - half as f64 + 1.0 - frac;
                let x = d / half as f64;
                let w = if x.abs() >= 1.0 {
                    0.0
                } else {
                    bessel_i0(KAISER_BETA * (1.0 - x * x).sqrt()) / i0_beta
                };
                let arg = std::f64::consts::PI * cutoff * d;
                let sinc = if arg.abs() < 1e-12 {
                    1.0
                } else {
                    arg.sin() / arg
                };
                table.push((cutoff * sinc * w) as f32);
            }
            // Unity gain at DC for every phase: no ripple between phases.
            let sum: f32 = table[start..].iter().sum();
            if sum.abs() > 1e-9 {
                table[start..].iter_mut().for_each(|c| *c /= sum);
            }
        }
        let mut r = Resampler {
            in_rate,
            out_rate,
            l,
            m,
            taps,
            half,
            table,
            exact,
            hist: [Vec::new(), Vec::new()],
            pos: 0,
            rem: 0,
        };
        r.reset();
        r
    }

    /// The input rate (Hz).
    pub fn in_rate(&self) -> u32 {
        self.in_rate
    }

    /// The output rate (Hz).
    pub fn out_rate(&self) -> u32 {
        self.out_rate
    }

    /// Forgets the history (as if newly created).
    pub fn reset(&mut self) {
        for h in &mut self.hist {
            h.clear();
            h.resize(self.half - 1, 0.0);
        }
        self.pos = self.half - 1;
        self.rem = 0;
    }

    /// Converts `input` (interleaved stereo; a trailing odd sample is ignored) and appends
    /// the converted interleaved stereo to `out`. Output lags input by the filter's half
    /// length: the last ~`half` input samples are held until more input arrives.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        if self.l == 1 && self.m == 1 {
            out.extend_from_slice(&input[..input.len() & !1]);
            return;
        }
        for pair in input.chunks_exact(2) {
            self.hist[0].push(pair[0]);
            self.hist[1].push(pair[1]);
        }
        let len = self.hist[0].len();
        out.reserve(((len as u64 * self.l / self.m) as usize + 2) * 2);
        let taps = self.taps;
        while self.pos + self.half < len {
            let start = self.pos + 1 - self.half;
            let left = &self.hist[0][start..start + taps];
            let right = &self.hist[1][start..start + taps];
            let (l, r) = if self.exact {
                let row = self.rem as usize;
                let c = &self.table[row * taps..(row + 1) * taps];
                (dot(c, left), dot(c, right))
            } else {
                let p = self.rem as f64 * INTERP_PHASES as f64 / self.l as f64;
                let i = (p.floor() as usize).min(INTERP_PHASES - 1);
                let t = (p - i as f64) as f32;
                let c0 = &self.table[i * taps..(i + 1) * taps];
                let c1 = &self.table[(i + 1) * taps..(i + 2) * taps];
                let (l0, r0) = (dot(c0, left), dot(c0, right));
                let (l1, r1) = (dot(c1, left), dot(c1, right));
                (l0 + (l1 - l0) * t, r0 + (r1 - r0) * t)
            };
            out.push(l);
            out.push(r);
            self.rem += self.m;
            self.pos += (self.rem / self.l) as usize;
            self.rem %= self.l;
        }
        // Drop input no future output needs.
        let consumed = (self.pos + 1 - self.half).min(len);
        for h in &mut self.hist {
            h.drain(..consumed);
        }
        self.pos -= consumed;
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Four partial sums let the compiler vectorise without reassociating floats itself.
    let mut acc = [0.0f32; 4];
    let (ca, ra) = a.split_at(a.len() & !3);
    let (cb, rb) = b.split_at(b.len() & !3);
    for (x, y) in ca.chunks_exact(4).zip(cb.chunks_exact(4)) {
        for j in 0..4 {
            acc[j] += x[j] * y[j];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc[0] + acc[1] + acc[2] + acc[3] + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::analysis::{deinterleave, dominant_frequency, rms, Spectrum};

    fn stereo_sine(fl: f64, fr: f64, amp: f64, rate: u32, secs: f64) -> Vec<f32> {
        let n = (rate as f64 * secs) as usize;
        let mut v = Vec::with_capacity(2 * n);
        for i in 0..n {
            let t = i as f64 / rate as f64;
            v.push((amp * (2.0 * std::f64::consts::PI * fl * t).sin()) as f32);
            v.push((amp * (2.0 * std::f64::consts::PI * fr * t).sin()) as f32);
        }
        v
    }

    /// Resamples in uneven chunks, as a decoder would hand them over.
    fn run(r: &mut Resampler, input: &[f32]) -> Vec<f32> {
        let mut out = Vec::new();
        let mut rest = input;
        let mut chunk = 2 * 577;
        while !rest.is_empty() {
            let n = chunk.min(rest.len());
            r.process(&rest[..n], &mut out);
            rest = &rest[n..];
            chunk = if chunk == 2 * 577 { 2 * 1152 } else { 2 * 577 };
        }
        out
    }

    #[test]
    fn common_rates_keep_frequency_level_and_length() {
        for &rate in &[
            8_000u32, 11_025, 22_050, 32_000, 44_100, 88_200, 96_000, 44_056,
        ] {
            let input = stereo_sine(440.0, 1000.0, 0.5, rate, 0.5);
            let mut r = Resampler::new(rate, 48_000);
            let out = run(&mut r, &input);
            let frames = out.len() / 2;
            // Short only by the filter's held-back half length.
            let held = HALF_TAPS * 48_000 / rate.min(48_000) as usize + 5;
            assert!(
                frames <= 24_001 && frames + held >= 24_000,
                "{rate}: {frames} frames"
            );
            let (l, rr) = deinterleave(&out);
            let (l, rr) = (&l[2000..frames - 2000], &rr[2000..frames - 2000]);
            let fl = dominant_frequency(l, 48_000);
            let fr = dominant_frequency(rr, 48_000);
            assert!((fl - 440.0).abs() < 1.0, "{rate}: left {fl}");
            assert!((fr - 1000.0).abs() < 1.0, "{rate}: right {fr}");
            let want = 0.5 / 2f32.sqrt();
            assert!((rms(l) - want).abs() < 0.005, "{rate}: level {}", rms(l));
            // Clean: nearly all energy at the tone (little aliasing or imaging).
            let purity = Spectrum::new(l, 48_000).band_fraction(440.0, 30.0);
            assert!(purity > 0.9999, "{rate}: purity {purity}");
        }
    }

    #[test]
    fn high_tone_near_band_edge_is_clean() {
        // 18 kHz at 44.1 kHz: its image at 26.1 kHz would alias to 21.9 kHz at 48 kHz.
        let input = stereo_sine(18_000.0, 18_000.0, 0.5, 44_100, 0.5);
        let out = run(&mut Resampler::new(44_100, 48_000), &input);
        let (l, _) = deinterleave(&out);
        let l = &l[1000..l.len() - 1000];
        let s = Spectrum::new(l, 48_000);
        assert!((s.dominant_frequency() - 18_000.0).abs() < 2.0);
        assert!(s.band_fraction(21_900.0, 200.0) < 1e-6);
        assert!((rms(l) - 0.5 / 2f32.sqrt()).abs() < 0.01, "{}", rms(l));
    }

    #[test]
    fn downsampling_removes_content_above_new_nyquist() {
        // 30 kHz at 96 kHz would alias to 18 kHz at 48 kHz without filtering.
        let input = stereo_sine(30_000.0, 1_000.0, 0.5, 96_000, 0.5);
        let out = run(&mut Resampler::new(96_000, 48_000), &input);
        let (l, r) = deinterleave(&out);
        assert!(rms(&l[1000..l.len() - 1000]) < 1e-3, "{}", rms(&l));
        assert!((rms(&r[1000..r.len() - 1000]) - 0.5 / 2f32.sqrt()).abs() < 0.005);
    }

    #[test]
    fn same_rate_is_passthrough() {
        let input = stereo_sine(440.0, 660.0, 0.5, 48_000, 0.1);
        let mut out = Vec::new();
        Resampler::new(48_000, 48_000).process(&input, &mut out);
        assert_eq!(out, input);
    }

    #[test]
    fn continuous_across_chunks() {
        // Chunked output equals one-shot output.
        let input = stereo_sine(440.0, 660.0, 0.5, 44_100, 0.3);
        let mut one = Vec::new();
        Resampler::new(44_100, 48_000).process(&input, &mut one);
        let chunked = run(&mut Resampler::new(44_100, 48_000), &input);
        assert_eq!(one.len(), chunked.len());
        for (a, b) in one.iter().zip(&chunked) {
            assert!((a - b).abs() < 1e-6);
        }
    }
}
