//! Audio: the codec, the inputs of a mix, the mixer itself and the spin-timed TX thread.
//!
//! Everything here works on one frame format: 20 ms of 48 kHz stereo, interleaved `f32`
//! in -1.0..=1.0 (`[L0, R0, L1, R1, ...]`).

pub mod analysis;
pub mod jitter;
pub mod mix_encoder;
pub mod mix_minus;
pub mod mixer;
pub mod opus;
pub mod publisher;
pub mod sources;
pub mod tx;

/// The sample rate of every mix and of the Opus stream we send.
pub const SAMPLE_RATE: u32 = 48_000;
/// Channels of every mix (stereo).
pub const CHANNELS: usize = 2;
/// Samples per channel in one 20 ms frame.
pub const FRAME_SAMPLES: usize = 960;
/// Interleaved samples in one frame.
pub const FRAME_LEN: usize = FRAME_SAMPLES * CHANNELS;
/// The frame period of the mixer and of the TX thread.
pub const FRAME_DURATION: std::time::Duration = std::time::Duration::from_millis(20);

/// One 20 ms frame of interleaved stereo.
pub type Frame = [f32; FRAME_LEN];
