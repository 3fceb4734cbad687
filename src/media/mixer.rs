//! Pure mixing: one stream's inputs summed with per-input gain, then a limiter.
//!
//! Called from the TX thread once per tick: [`Mixer::mix`] never blocks and never allocates
//! (adding inputs may allocate; do it rarely). It never reads the clock: time is the frame
//! count.
//!
//! The limiter, in two stages, keeps any number of loud inputs inside -1..=1 without
//! wrapping or hard clipping, and leaves signals below its threshold bit-exact:
//! 1. a stereo-linked peak envelope (instant rise, held [`HOLD_MS`], then released with a
//!    [`RELEASE_MS`] time constant) sets a gain of `THRESHOLD / envelope` when the envelope is
//!    above [`THRESHOLD`]; the gain moves down with a [`ATTACK_MS`] time constant, so it is
//!    smooth but lets the first milliseconds of a sudden peak through;
//! 2. those overshoots meet a soft knee: identity up to [`KNEE`], then a tanh curve that
//!    approaches ±1 and never reaches it, with a continuous slope (no corner to buzz).

use super::sources::Source;
use super::{Frame, FRAME_LEN, SAMPLE_RATE};

/// Level (linear, 0.891 = -1 dBFS) above which the limiter's gain stage acts.
pub const THRESHOLD: f32 = 0.891;
/// Level where the soft knee starts (just above the threshold: a limited signal stays in the
/// linear part).
pub const KNEE: f32 = 0.9;
/// Time constant with which the limiter's gain falls (fast, but not a step).
pub const ATTACK_MS: f32 = 0.5;
/// How long a peak holds the envelope before it starts to release (longer than one period
/// of the lowest bass, so a bass note does not modulate its own gain).
pub const HOLD_MS: f32 = 25.0;
/// Time constant of the envelope's release once the hold has run out.
pub const RELEASE_MS: f32 = 150.0;
/// The largest gain an input may have (+24 dB).
pub const MAX_GAIN: f32 = 16.0;

/// Identifies an input of one [`Mixer`] (returned by [`Mixer::add`]). Never reused by that
/// mixer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InputId(u64);

struct Input {
    id: InputId,
    source: Box<dyn Source>,
    gain: f32,
    /// Kept when the input is tapped ([`Mixer::tap`]): its last frame as mixed (gain
    /// applied), and that frame's peak.
    tap: Option<(Box<Frame>, f32)>,
}

/// One stream's mix.
pub struct Mixer {
    inputs: Vec<Input>,
    next_id: u64,
    /// One input's frame, reused every call.
    scratch: Box<Frame>,
    /// The last frame's sum before the limiter, kept while an input is tapped (mix-minus
    /// subtracts a tapped input from it).
    sum: Box<Frame>,
    taps: usize,
    limiter: Limiter,
}

fn sanitize_gain(gain: f32) -> f32 {
    if gain.is_finite() {
        gain.clamp(0.0, MAX_GAIN)
    } else {
        0.0
    }
}

impl Mixer {
    /// An empty mix (silence).
    pub fn new() -> Self {
        Mixer {
            inputs: Vec::with_capacity(8),
            next_id: 0,
            scratch: Box::new([0.0; FRAME_LEN]),
            sum: Box::new([0.0; FRAME_LEN]),
            taps: 0,
            limiter: Limiter::new(),
        }
    }

    /// Adds an input with a linear gain (clamped to 0..=[`MAX_GAIN`]; NaN counts as 0).
    /// Returns its id, for [`set_gain`](Self::set_gain) and [`remove`](Self::remove).
    pub fn add(&mut self, source: Box<dyn Source>, gain: f32) -> InputId {
        let id = InputId(self.next_id);
        self.next_id += 1;
        self.inputs.push(Input {
            id,
            source,
            gain: sanitize_gain(gain),
            tap: None,
        });
        id
    }

    /// Keeps input `id`'s contribution to each frame from now on (allocates one frame), so
    /// that [`MinusMix`] can mix everything but it. False if there is no such input.
    pub fn tap(&mut self, id: InputId) -> bool {
        match self.inputs.iter_mut().find(|i| i.id == id) {
            Some(input) => {
                if input.tap.is_none() {
                    input.tap = Some((Box::new([0.0; FRAME_LEN]), 0.0));
                    self.taps += 1;
                }
                true
            }
            None => false,
        }
    }

    /// Stops keeping input `id`'s contribution.
    pub fn untap(&mut self, id: InputId) {
        if let Some(input) = self.inputs.iter_mut().find(|i| i.id == id) {
            if input.tap.take().is_some() {
                self.taps -= 1;
            }
        }
    }

    /// The peak of tapped input `id`'s last frame as mixed (gain applied); `None` when the
    /// input is gone or not tapped.
    pub fn tapped_peak(&self, id: InputId) -> Option<f32> {
        self.inputs
            .iter()
            .find(|i| i.id == id)
            .and_then(|i| i.tap.as_ref())
            .map(|t| t.1)
    }

    /// Changes an input's gain (clamped like in [`add`](Self::add)). False if there is no
    /// such input.
    pub fn set_gain(&mut self, id: InputId, gain: f32) -> bool {
        match self.inputs.iter_mut().find(|i| i.id == id) {
            Some(input) => {
                input.gain = sanitize_gain(gain);
                true
            }
            None => false,
        }
    }

    /// An input's gain, if it exists.
    pub fn gain(&self, id: InputId) -> Option<f32> {
        self.inputs.iter().find(|i| i.id == id).map(|i| i.gain)
    }

    /// Removes an input and hands it back (so the caller may drop it off the TX thread).
    pub fn remove(&mut self, id: InputId) -> Option<Box<dyn Source>> {
        let pos = self.inputs.iter().position(|i| i.id == id)?;
        let input = self.inputs.remove(pos);
        if input.tap.is_some() {
            self.taps -= 1;
        }
        Some(input.source)
    }

    /// The inputs' ids, in the order they were added.
    pub fn ids(&self) -> impl Iterator<Item = InputId> + '_ {
        self.inputs.iter().map(|i| i.id)
    }

    /// An input's source, e.g. for its description or underrun count.
    pub fn source(&self, id: InputId) -> Option<&dyn Source> {
        self.inputs
            .iter()
            .find(|i| i.id == id)
            .map(|i| i.source.as_ref())
    }

    /// Number of inputs.
    pub fn len(&self) -> usize {
        self.inputs.len()
    }

    /// True when there is no input (the mix is silence).
    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty()
    }

    /// The limiter's current gain reduction (1.0 = none), for meters.
    pub fn limiter_gain(&self) -> f32 {
        self.limiter.gain
    }

    /// Mixes the next frame into `out`: pulls one frame from every input (even muted ones,
    /// so they stay in time), sums them with their gains, then limits.
    pub fn mix(&mut self, out: &mut Frame) {
        self.mix_at(out, std::time::Instant::now());
    }

    /// [`mix`](Self::mix) at tick time `now` (passed to each source's
    /// [`Source::fill_at`]). Inputs that report [`Source::is_finished`] afterwards are
    /// dropped from the mix; their last frame (a fade-out) has been mixed.
    pub fn mix_at(&mut self, out: &mut Frame, now: std::time::Instant) {
        self.sum_at(out, now);
        self.limit(out);
    }

    /// The first half of [`mix_at`](Self::mix_at): the inputs' sum, before the limiter, into
    /// `out` (kept for [`MinusMix`] while an input is tapped).
    pub fn sum_at(&mut self, out: &mut Frame, now: std::time::Instant) {
        out.fill(0.0);
        let mut finished = false;
        for input in &mut self.inputs {
            input.source.fill_at(&mut self.scratch, now);
            finished |= input.source.is_finished();
            if let Some((tap, peak)) = &mut input.tap {
                tap.fill(0.0);
                *peak = 0.0;
            }
            if input.gain == 0.0 {
                continue;
            }
            let g = input.gain;
            match &mut input.tap {
                None => {
                    for (o, &x) in out.iter_mut().zip(self.scratch.iter()) {
                        // A source's NaN or infinity must not poison the whole mix.
                        if x.is_finite() {
                            *o += g * x;
                        }
                    }
                }
                Some((tap, peak)) => {
                    let mut p = 0.0f32;
                    for ((o, t), &x) in out.iter_mut().zip(tap.iter_mut()).zip(self.scratch.iter())
                    {
                        if x.is_finite() {
                            *t = g * x;
                            *o += *t;
                            p = p.max(t.abs());
                        }
                    }
                    *peak = p;
                }
            }
        }
        if finished {
            let before = self.inputs.len();
            self.inputs.retain(|i| !i.source.is_finished());
            if before != self.inputs.len() {
                self.taps = self.inputs.iter().filter(|i| i.tap.is_some()).count();
            }
        }
        if self.taps > 0 {
            self.sum.copy_from_slice(out);
        }
    }

    /// The second half of [`mix_at`](Self::mix_at): the limiter, on the sum in `out`.
    pub fn limit(&mut self, out: &mut Frame) {
        self.limiter.process(out);
    }
}

/// One input's mix-minus: everything in a [`Mixer`] but that (tapped) input, with the same
/// gains and a limiter of its own (which starts from the full mix's limiter state, see
/// [`MinusMix::follow`]). Never allocates, never reads the clock.
#[derive(Debug, Clone)]
pub struct MinusMix {
    limiter: Limiter,
}

impl MinusMix {
    /// A mix-minus with a fresh limiter.
    pub fn new() -> MinusMix {
        MinusMix {
            limiter: Limiter::new(),
        }
    }

    /// Takes over the full mix's limiter state: called just before the mixer's
    /// [`Mixer::limit`] of a frame, so this limiter goes on from where the full mix's was
    /// after the previous frame (the two mixes were the same while the input was silent).
    pub fn follow(&mut self, mixer: &Mixer) {
        self.limiter = mixer.limiter.clone();
    }

    /// The mixer's last frame without tapped input `id`, limited, into `out`. Without such
    /// a tap (the input is gone), the whole sum.
    pub fn mix(&mut self, mixer: &Mixer, id: InputId, out: &mut Frame) {
        out.copy_from_slice(&mixer.sum[..]);
        let tap = mixer
            .inputs
            .iter()
            .find(|i| i.id == id)
            .and_then(|i| i.tap.as_ref());
        if let Some((tap, _)) = tap {
            for (o, t) in out.iter_mut().zip(tap.iter()) {
                *o -= t;
            }
        }
        self.limiter.process(out);
    }
}

impl Default for MinusMix {
    fn default() -> Self {
        Self::new()
    }
}

impl Default for Mixer {
    fn default() -> Self {
        Self::new()
    }
}

/// The limiter's state (see the module doc).
#[derive(Debug, Clone)]
struct Limiter {
    /// Peak envelope (max of |L|, |R|), held then released.
    envelope: f32,
    /// Samples left before the envelope may release.
    hold_left: u32,
    /// Current gain.
    gain: f32,
    hold: u32,
    release_coef: f32,
    attack_coef: f32,
}

/// The per-sample coefficient of a one-pole smoother with time constant `ms`.
fn coef(ms: f32) -> f32 {
    (-1.0 / (ms * 0.001 * SAMPLE_RATE as f32)).exp()
}

impl Limiter {
    fn new() -> Self {
        Limiter {
            envelope: 0.0,
            hold_left: 0,
            gain: 1.0,
            hold: (HOLD_MS * 0.001 * SAMPLE_RATE as f32) as u32,
            release_coef: coef(RELEASE_MS),
            attack_coef: coef(ATTACK_MS),
        }
    }

    fn process(&mut self, frame: &mut Frame) {
        for pair in frame.chunks_exact_mut(2) {
            let level = pair[0].abs().max(pair[1].abs());
            if level >= self.envelope {
                self.envelope = level;
                self.hold_left = self.hold;
            } else if self.hold_left > 0 {
                self.hold_left -= 1;
            } else {
                self.envelope = level + (self.envelope - level) * self.release_coef;
            }
            let target = if self.envelope > THRESHOLD {
                THRESHOLD / self.envelope
            } else {
                1.0
            };
            self.gain = if target < self.gain {
                target + (self.gain - target) * self.attack_coef
            } else {
                // The envelope's release already makes the rise smooth.
                target
            };
            pair[0] = soft_knee(pair[0] * self.gain);
            pair[1] = soft_knee(pair[1] * self.gain);
        }
    }
}

/// Identity up to [`KNEE`], then a tanh curve with slope 1 at the knee that tends to ±1.
fn soft_knee(x: f32) -> f32 {
    let a = x.abs();
    if a <= KNEE {
        return x;
    }
    let room = 1.0 - KNEE;
    let y = KNEE + room * ((a - KNEE) / room).tanh();
    // tanh rounds to 1.0 for large inputs; stay strictly inside the range anyway.
    y.min(1.0).copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::analysis::{deinterleave, dominant_frequency, peak, rms, Spectrum};
    use crate::media::sources::{SilenceSource, ToneSource};

    fn run(mixer: &mut Mixer, frames: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(frames * FRAME_LEN);
        let mut f = [0.0; FRAME_LEN];
        for _ in 0..frames {
            mixer.mix(&mut f);
            out.extend_from_slice(&f);
        }
        out
    }

    #[test]
    fn quiet_tone_passes_unchanged() {
        let mut mixer = Mixer::new();
        mixer.add(Box::new(ToneSource::new()), 1.0);
        let mixed = run(&mut mixer, 100);
        let mut reference = ToneSource::new();
        let mut f = [0.0; FRAME_LEN];
        for chunk in mixed.chunks_exact(FRAME_LEN) {
            reference.fill(&mut f);
            assert_eq!(chunk, &f[..]);
        }
        let (l, r) = deinterleave(&mixed);
        assert!((dominant_frequency(&l, SAMPLE_RATE) - 440.0).abs() < 2.0);
        assert!((dominant_frequency(&r, SAMPLE_RATE) - 660.0).abs() < 2.0);
        assert_eq!(mixer.limiter_gain(), 1.0);
    }

    #[test]
    fn near_threshold_sine_keeps_its_level() {
        // 0.85 peak: below the threshold, untouched.
        let mut mixer = Mixer::new();
        mixer.add(Box::new(ToneSource::sine(1000, 1000, 0.85)), 1.0);
        let (l, _) = deinterleave(&run(&mut mixer, 50));
        assert!((peak(&l) - 0.85).abs() < 1e-3);
        assert!((rms(&l) - 0.85 / 2f32.sqrt()).abs() < 1e-3);
    }

    #[test]
    fn gains_apply() {
        let mut mixer = Mixer::new();
        let a = mixer.add(Box::new(ToneSource::sine(440, 440, 0.2)), 0.5);
        let b = mixer.add(Box::new(ToneSource::sine(1000, 1000, 0.2)), 2.0);
        assert_eq!(mixer.gain(a), Some(0.5));
        let (l, _) = deinterleave(&run(&mut mixer, 50));
        let s = Spectrum::new(&l, SAMPLE_RATE);
        // Amplitudes 0.1 and 0.4.
        assert!((s.band_rms(440.0, 20.0) - 0.1 / 2f32.sqrt()).abs() < 0.003);
        assert!((s.band_rms(1000.0, 20.0) - 0.4 / 2f32.sqrt()).abs() < 0.005);
        assert!((s.dominant_frequency() - 1000.0).abs() < 2.0);

        // Swap the balance at run time.
        assert!(mixer.set_gain(a, 2.0));
        assert!(mixer.set_gain(b, 0.25));
        let (l, _) = deinterleave(&run(&mut mixer, 50));
        let s = Spectrum::new(&l, SAMPLE_RATE);
        assert!((s.band_rms(440.0, 20.0) - 0.4 / 2f32.sqrt()).abs() < 0.005);
        assert!((s.band_rms(1000.0, 20.0) - 0.05 / 2f32.sqrt()).abs() < 0.003);

        // Zero, negative and NaN gains mute.
        for g in [0.0, -1.0, f32::NAN] {
            mixer.set_gain(a, g);
            mixer.set_gain(b, g);
            let out = run(&mut mixer, 2);
            assert_eq!(peak(&out), 0.0, "gain {g}");
        }
    }

    #[test]
    fn remove_inputs_by_id() {
        let mut mixer = Mixer::new();
        let a = mixer.add(Box::new(ToneSource::sine(440, 440, 0.2)), 1.0);
        let b = mixer.add(Box::new(ToneSource::sine(1000, 1000, 0.2)), 1.0);
        let c = mixer.add(Box::new(SilenceSource), 1.0);
        assert_eq!(mixer.ids().collect::<Vec<_>>(), vec![a, b, c]);
        assert!(mixer.remove(a).is_some());
        assert!(mixer.remove(a).is_none());
        assert!(!mixer.set_gain(a, 1.0));
        assert_eq!(mixer.len(), 2);
        let (l, _) = deinterleave(&run(&mut mixer, 25));
        let s = Spectrum::new(&l, SAMPLE_RATE);
        assert!((s.dominant_frequency() - 1000.0).abs() < 2.0);
        assert!(s.band_fraction(440.0, 20.0) < 1e-4);
        mixer.remove(b);
        mixer.remove(c);
        assert!(mixer.is_empty());
        assert_eq!(peak(&run(&mut mixer, 2)), 0.0);
        // Ids are not reused.
        let d = mixer.add(Box::new(SilenceSource), 1.0);
        assert!(d != a && d != b && d != c);
    }

    #[test]
    fn eight_full_scale_inputs_stay_in_range_without_hard_clipping() {
        let mut mixer = Mixer::new();
        for i in 0..8 {
            // In phase on the left (sum peaks at 8), spread on the right.
            mixer.add(Box::new(ToneSource::sine(440, 300 + 50 * i, 1.0)), 1.0);
        }
        let out = run(&mut mixer, 100);
        assert!(out.iter().all(|x| (-1.0..=1.0).contains(x)));
        // The limiter never steepens the signal: no step bigger than the summed input's.
        let (l, r) = deinterleave(&out);
        let max_step = 8.0 * 2.0 * std::f32::consts::PI * 440.0 / 48_000.0;
        for w in l.windows(2) {
            assert!(
                (w[1] - w[0]).abs() <= max_step,
                "step {}",
                (w[1] - w[0]).abs()
            );
        }
        // Only the first few milliseconds (before the gain has come down) reach the knee.
        let over_knee = l.iter().position(|x| x.abs() > KNEE);
        let last_over_knee = l.iter().rposition(|x| x.abs() > KNEE);
        assert!(
            over_knee.is_some() && last_over_knee < Some(240),
            "{last_over_knee:?}"
        );
        // Once settled, the left channel is a clean 440 Hz at about the threshold.
        let settled = &l[24_000..];
        let s = Spectrum::new(settled, SAMPLE_RATE);
        assert!((s.dominant_frequency() - 440.0).abs() < 2.0);
        assert!(
            s.band_fraction(440.0, 40.0) > 0.999,
            "{}",
            s.band_fraction(440.0, 40.0)
        );
        assert!(
            (peak(settled) - THRESHOLD).abs() < 0.02,
            "{}",
            peak(settled)
        );
        assert!(peak(&r) <= 1.0);
        assert!(mixer.limiter_gain() < 0.2);
    }

    #[test]
    fn limiter_recovers_after_a_loud_burst() {
        let mut mixer = Mixer::new();
        let loud = mixer.add(Box::new(ToneSource::sine(440, 440, 1.0)), 4.0);
        run(&mut mixer, 10);
        mixer.remove(loud);
        mixer.add(Box::new(ToneSource::sine(660, 660, 0.25)), 1.0);
        let (l, _) = deinterleave(&run(&mut mixer, 100));
        // After hold + several release time constants the quiet tone is back at full level.
        let tail = &l[l.len() - 24_000..];
        assert!((peak(tail) - 0.25).abs() < 0.005, "{}", peak(tail));
    }

    #[test]
    fn nan_from_a_source_is_dropped() {
        struct Bad;
        impl Source for Bad {
            fn fill(&mut self, out: &mut Frame) {
                out.fill(f32::NAN);
            }
            fn describe(&self) -> String {
                "bad".into()
            }
        }
        let mut mixer = Mixer::new();
        mixer.add(Box::new(Bad), 1.0);
        mixer.add(Box::new(ToneSource::sine(440, 440, 0.25)), 1.0);
        let out = run(&mut mixer, 10);
        assert!(out.iter().all(|x| x.is_finite()));
        assert!((peak(&out) - 0.25).abs() < 1e-3);
    }

    #[test]
    fn soft_knee_is_smooth_and_bounded() {
        assert_eq!(soft_knee(0.5), 0.5);
        assert_eq!(soft_knee(-KNEE), -KNEE);
        assert!(soft_knee(100.0) <= 1.0 && soft_knee(-100.0) >= -1.0);
        // Monotonic, slope continuous at the knee.
        let mut prev = soft_knee(0.0);
        for i in 1..2000 {
            let y = soft_knee(i as f32 * 0.001);
            assert!(y >= prev);
            prev = y;
        }
        let slope = (soft_knee(KNEE + 1e-3) - soft_knee(KNEE)) / 1e-3;
        assert!((slope - 1.0).abs() < 0.02, "{slope}");
    }
}
