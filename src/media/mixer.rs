//! Pure mixing: sums inputs with per-input gain, then a limiter. STUB: to be replaced.

use super::sources::Source;
use super::Frame;

/// One stream's mix.
pub struct Mixer {}

impl Mixer {
    /// An empty mix (silence).
    pub fn new() -> Self {
        Mixer {}
    }
    /// Adds an input with a linear gain.
    pub fn add(&mut self, source: Box<dyn Source>, gain: f32) {
        let _ = (source, gain);
        unimplemented!()
    }
    /// Mixes the next frame into `out`.
    pub fn mix(&mut self, out: &mut Frame) {
        let _ = out;
        unimplemented!()
    }
}

impl Default for Mixer {
    fn default() -> Self {
        Self::new()
    }
}
