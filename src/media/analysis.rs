//! Signal checks used by tests, examples and the load tool. STUB: to be replaced.

/// The frequency (Hz) of the strongest component of `samples` (one channel at `rate` Hz).
pub fn dominant_frequency(samples: &[f32], rate: u32) -> f32 {
    let _ = (samples, rate);
    unimplemented!()
}

/// Root-mean-square level of `samples`.
pub fn rms(samples: &[f32]) -> f32 {
    let _ = samples;
    unimplemented!()
}

/// Splits interleaved stereo into (left, right).
pub fn deinterleave(stereo: &[f32]) -> (Vec<f32>, Vec<f32>) {
    (
        stereo.iter().step_by(2).copied().collect(),
        stereo.iter().skip(1).step_by(2).copied().collect(),
    )
}
